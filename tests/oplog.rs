//! The operations log: every command that changes the repository, and every
//! restore, verify and reset, leaves one record in `log/`, success or
//! failure; listings leave none; `log` lists and filters them, `log prune`
//! bounds them, and secrets never reach them.

mod common;

use common::{Env, create_db, s};
use serde_json::Value;

/// `log --json` (with extra arguments) as an array.
fn records(env: &Env, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--json", "log"];
    args.extend_from_slice(extra);
    let out = env.ok(args);
    out.json()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("log --json is not an array: {}", out.stdout))
}

/// The record objects in the repository, `log/<name>`.
fn record_files(env: &Env) -> Vec<String> {
    let dir = env.repo.join("log");
    if !dir.exists() {
        return Vec::new();
    }
    common::files_under(&dir)
}

fn commands(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["command"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn init_snapshot_and_a_failed_snapshot_each_leave_a_record() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 500, 200, true);
    env.snapshot(&[&db]);
    let missing = env.path("missing.db");
    let out = env.run(["snapshot", s(&missing)]).expect_code(66);
    assert!(!out.stderr.contains("oplog."), "no warning: {}", out.stderr);

    let recs = records(&env, &[]);
    assert_eq!(commands(&recs), ["init", "snapshot", "snapshot"], "{recs:#?}");
    let (init, snap, failed) = (&recs[0], &recs[1], &recs[2]);
    for r in &recs {
        assert_eq!(r["format"], 1);
        assert_eq!(r["host"], common::hostname().as_str());
        assert!(!r["user"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["time"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{r}");
        assert!(r["duration_ms"].is_u64(), "{r}");
        let req = r["requests"].as_object().unwrap();
        let keys: Vec<&str> = req.keys().map(String::as_str).collect();
        assert_eq!(keys, ["delete", "get", "head", "list", "put"], "{r}");
    }
    assert_eq!(init["result"], "ok");
    assert_eq!(init["exit_code"], 0);
    assert!(init.get("error").is_none(), "no error when ok: {init}");
    assert_eq!(snap["result"], "ok");
    assert_eq!(snap["exit_code"], 0);
    assert_eq!(snap["args"][0], "--repo");
    assert_eq!(snap["args"][2], "snapshot");
    assert!(
        snap["bytes_written"].as_u64().unwrap() > 10_000,
        "the snapshot stored the database: {snap}"
    );
    assert_eq!(failed["result"], "error");
    assert_eq!(failed["exit_code"], 66);
    assert_eq!(failed["event"], "error.no_input");
    assert!(failed["error"].as_str().unwrap().contains("does not exist"), "{failed}");
    assert_eq!(failed["bytes_written"], 0, "{failed}");
    if env.is_s3() {
        assert!(
            snap["requests"]["put"].as_u64().unwrap() >= 3,
            "packs, index, manifest: {snap}"
        );
        assert!(init["requests"]["put"].as_u64().unwrap() >= 1, "{init}");
    } else {
        assert_eq!(snap["requests"]["put"], 0, "a directory sends no requests: {snap}");
    }

    // On disk: log/<20-digit ns>-<16 hex of BLAKE3(JSON)>, an envelope
    // around the compact JSON that `log --json` shows (plus its key).
    let files = record_files(&env);
    assert_eq!(files.len(), 3, "{files:?}");
    for (name, r) in files.iter().zip(&recs) {
        assert_eq!(r["key"], format!("log/{name}").as_str());
        let (ns, hash) = name.split_once('-').unwrap();
        assert_eq!(ns.len(), 20, "{name}");
        assert!(ns.bytes().all(|b| b.is_ascii_digit()), "{name}");
        let json = lifeboat::codec::decode(&std::fs::read(env.repo.join("log").join(name)).unwrap(), name).unwrap();
        assert_eq!(&blake3::hash(&json).to_hex()[..16], hash, "{name}");
        let stored: Value = serde_json::from_slice(&json).unwrap();
        let mut shown = r.clone();
        shown.as_object_mut().unwrap().remove("key");
        assert_eq!(stored, shown);
        let t: jiff::Timestamp = stored["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            t.as_nanosecond(),
            ns.parse::<i128>().unwrap(),
            "the key holds the record's time"
        );
    }

    // The human listing: one line per record, the failure's message on its line.
    let out = env.ok(["log"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header and three records:\n{}", out.stdout);
    assert!(
        lines[3].contains("snapshot") && lines[3].contains("error 66"),
        "{}",
        out.stdout
    );
    assert!(lines[3].contains("does not exist"), "{}", out.stdout);
}

#[test]
fn listings_and_dry_runs_leave_no_record() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 100, 50, true);
    env.snapshot(&[&db]);
    let before = record_files(&env);
    assert_eq!(before.len(), 2);
    env.list();
    env.ok(["show", "latest"]);
    env.ok(["stats"]);
    std::fs::create_dir_all(env.path("svc-data")).unwrap();
    env.ok(["reset", "--data-dir", s(&env.path("svc-data"))]);
    env.ok(["log"]);
    env.ok(["log", "--since", "1h"]);
    env.ok(["log", "prune", "--before", "2000-01-01", "--dry-run"]);
    env.run(["show", "nonexistent"]).expect_code(66);
    assert_eq!(record_files(&env), before, "nothing appended");
}

#[test]
fn restores_verifies_and_resets_each_leave_a_record() {
    // Issue 20, finding 13: restore, verify and reset were not in the
    // operations log, so nobody could tell afterwards what was restored
    // where, or when the repository was last checked.
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("data/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 100, 50, true);
    let id = env.snapshot(&[&db]);
    env.ok(["verify", "--read-data"]);
    env.ok(["restore", &id, "-o", s(&env.path("out.db"))]);
    env.run(["restore", "nonexistent", "-o", s(&env.path("never.db"))])
        .expect_code(66);
    env.ok(["reset", "--data-dir", s(&env.path("data")), "--confirm"]);
    let recs = records(&env, &[]);
    assert_eq!(
        commands(&recs),
        ["init", "snapshot", "verify", "restore", "restore", "reset"],
        "{recs:?}"
    );
    assert_eq!(
        recs[4]["exit_code"], 66,
        "a failed restore is recorded as one: {}",
        recs[4]
    );
}

#[test]
fn since_filters_by_time() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 50, 20, true);
    env.snapshot(&[&db]);
    env.snapshot(&[&db]);
    let all = records(&env, &[]);
    assert_eq!(all.len(), 3);
    let second = all[1]["time"].as_str().unwrap();
    let from_second = records(&env, &["--since", second]);
    assert_eq!(from_second, all[1..], "--since includes records at exactly that time");
    assert_eq!(records(&env, &["--since", "1h"]), all);
    assert_eq!(records(&env, &["--since", "1d12h"]), all);
    assert!(records(&env, &["--since", "2999-01-01"]).is_empty());
    let out = env.run(["log", "--since", "yesterday"]).expect_code(64);
    assert!(out.stderr.contains("--since"), "{}", out.stderr);
    // An empty result is not an error.
    let out = env.ok(["log", "--since", "2999-01-01T00:00:00Z"]);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("no operations logged"), "{}", out.stderr);
}

#[test]
fn prune_deletes_exactly_the_older_records_and_dry_run_nothing() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 50, 20, true);
    env.snapshot(&[&db]);
    env.snapshot(&[&db]);
    let all = records(&env, &[]);
    assert_eq!(all.len(), 3);
    let third = all[2]["time"].as_str().unwrap().to_string();
    let older: Vec<&str> = all[..2].iter().map(|r| r["key"].as_str().unwrap()).collect();

    let out = env.ok(["--json", "log", "prune", "--before", &third, "--dry-run"]);
    let v = out.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["count"], 2);
    assert_eq!(v["records"], serde_json::json!(older));
    assert!(v["requests"].is_object(), "{v}");
    let out = env.ok(["log", "prune", "--before", &third, "--dry-run"]);
    assert!(out.stdout.contains("would delete 2"), "{}", out.stdout);
    for k in &older {
        assert!(out.stdout.contains(k), "--dry-run names {k}:\n{}", out.stdout);
    }
    assert_eq!(records(&env, &[]), all, "a dry run deletes nothing");

    let out = env.ok(["--json", "log", "prune", "--before", &third]);
    assert_eq!(out.json()["count"], 2);
    assert_eq!(out.json()["dry_run"], false);
    let left = records(&env, &[]);
    assert_eq!(left[0], all[2], "the record at --before stays");
    // `log prune` itself is recorded, with what it deleted.
    assert_eq!(commands(&left), ["snapshot", "log prune"]);
    assert_eq!(left[1]["objects_deleted"], 2);
    assert_eq!(left[1]["result"], "ok");
    if env.is_s3() {
        assert_eq!(left[1]["requests"]["delete"], 2, "{}", left[1]);
    }

    // A duration ago: everything but records from the last minute.
    let out = env.ok(["log", "prune", "--before", "1m"]);
    assert!(out.stdout.contains("deleted 0 "), "{}", out.stdout);
    env.run(["log", "prune"]).expect_code(64);
    env.run(["log", "prune", "--before", "soon"]).expect_code(64);
}

#[test]
fn secrets_in_arguments_are_redacted() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 20, 20, true);
    env.ok(["snapshot", "--tag", "api_token=hunter2", "--tag", "nightly", s(&db)]);
    let missing = "https://me:sesame@example.invalid/x?password=opensesame&region=r";
    env.run(["snapshot", "--tag", "x", missing]).expect_code(66);
    let recs = records(&env, &[]);
    assert_eq!(recs.len(), 3);
    let args: Vec<String> = recs[1]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(args.contains(&"api_token=***".to_string()), "{args:?}");
    assert!(args.contains(&"nightly".to_string()), "{args:?}");
    assert!(args.contains(&s(&db).to_string()), "paths are kept: {args:?}");
    let failed = recs[2]["args"].to_string();
    assert!(failed.contains("me:***@example.invalid"), "{failed}");
    assert!(failed.contains("password=***&region=r"), "{failed}");
    for name in record_files(&env) {
        let raw = lifeboat::codec::decode(&std::fs::read(env.repo.join("log").join(&name)).unwrap(), &name).unwrap();
        let text = String::from_utf8(raw).unwrap();
        for secret in ["hunter2", "sesame"] {
            assert!(!text.contains(secret), "{secret} stored in {name}: {text}");
        }
    }
}

#[test]
fn no_repository_no_record_and_a_failed_append_is_only_a_warning() {
    let _serial = common::serial();
    let env = Env::bare();
    let db = env.path("app.db");
    create_db(&db, 20, 20, true);
    // Nothing to append to: the command's own error, nothing else.
    let out = env.run(["snapshot", s(&db)]).expect_code(66);
    assert!(out.stderr.contains("repo.not_found"), "{}", out.stderr);
    assert!(!out.stderr.contains("oplog"), "{}", out.stderr);
    assert!(!env.repo.exists() || record_files(&env).is_empty());
    if !env.is_s3() {
        // init refused in a non-empty directory writes nothing there.
        std::fs::create_dir_all(&env.repo).unwrap();
        std::fs::write(env.repo.join("precious"), "x").unwrap();
        env.run(["init"]).expect_code(73);
        assert_eq!(common::files_under(&env.repo), ["precious"]);
        std::fs::remove_file(env.repo.join("precious")).unwrap();
    }
    env.ok(["init"]);
    assert_eq!(record_files(&env).len(), 1);

    if env.is_s3() {
        return; // the server, not this test, decides how a PUT fails
    }
    // `log` is a file: the record cannot be written, the snapshot still
    // succeeds, with a warning.
    std::fs::remove_dir_all(env.repo.join("log")).unwrap();
    std::fs::write(env.repo.join("log"), "not a directory").unwrap();
    let out = env.run(["snapshot", s(&db)]).expect_code(0);
    assert!(out.stderr.contains("oplog.append_failed"), "{}", out.stderr);
    let out = env.run(["snapshot", s(&env.path("missing"))]).expect_code(66);
    assert!(out.stderr.contains("oplog.append_failed"), "{}", out.stderr);
}

#[test]
fn records_are_cached_on_a_bucket() {
    let _serial = common::serial();
    let env = Env::new();
    if !env.is_s3() {
        return;
    }
    let db = env.path("app.db");
    create_db(&db, 20, 20, true);
    env.snapshot(&[&db]);
    // The writer kept a copy of each record it wrote: listing them reads
    // only `config` from the bucket.
    let out = env.ok(["-v", "log"]);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("storage.requests"))
        .unwrap_or_else(|| panic!("-v logs requests:\n{}", out.stderr));
    assert!(line.contains(" get=1 "), "{line}");
}

#[test]
fn replicate_records_go_to_its_replicas() {
    let _serial = common::serial();
    let env = Env::new();
    let replica = env.path("replica");
    env.run_bare(["--repo", s(&replica), "init"]).expect_code(0);
    let db = env.path("rollback.db");
    create_db(&db, 20, 20, false);
    let out = env
        .run([
            "replicate",
            "--replica",
            s(&replica),
            "--sync-interval",
            "100ms",
            s(&db),
        ])
        .expect_code(78);
    assert!(out.stderr.contains("replicate.not_wal"), "{}", out.stderr);
    let in_replica = env
        .run_bare(["--json", "--repo", s(&replica), "log"])
        .expect_code(0)
        .json();
    let in_replica = in_replica.as_array().unwrap();
    assert_eq!(commands(in_replica), ["init", "replicate"], "{in_replica:#?}");
    assert_eq!(in_replica[1]["exit_code"], 78);
    assert_eq!(in_replica[1]["event"], "replicate.not_wal");
    assert_eq!(commands(&records(&env, &[])), ["init"], "--repo was not a replica");
}
