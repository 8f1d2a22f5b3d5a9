//! forget and prune: decisions explained and applied, space freed only after
//! the grace period, a marked pack that a snapshot turns out to need taken
//! back, and SIGKILL at any moment of a prune losing nothing.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, create_db, open, s};

/// Change `n` rows of the fixture table, so the next snapshot adds pages.
fn churn(db: &Path, n: i64, seed: i64) {
    let c = open(db);
    c.execute(
        "UPDATE t SET pad = hex(randomblob(length(pad) / 2)) WHERE id % ?1 = ?2",
        [n, seed % n],
    )
    .unwrap();
}

/// A repository with `count` snapshots of one database, one a day at noon
/// UTC starting 2026-10-01, each after a change; returns ids, oldest first.
fn history(env: &Env, db: &Path, count: usize) -> Vec<String> {
    create_db(db, 4000, 400, true);
    let mut ids = Vec::new();
    for day in 0..count {
        churn(db, 7, day as i64);
        let time = jiff::civil::date(2026, 10, 1)
            .at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .checked_add(jiff::Span::new().days(day as i64))
            .unwrap()
            .timestamp()
            .to_string();
        let out = env.ok(["snapshot", s(db), "--time", &time]);
        ids.push(out.stdout.trim().to_string());
    }
    ids
}

fn pack_count(env: &Env) -> usize {
    common::files_under(&env.repo.join("data")).len()
}

fn marks(env: &Env) -> usize {
    common::files_under(&env.repo.join("marks")).len()
}

/// Restore every listed snapshot and check the database inside it.
fn every_snapshot_restores(env: &Env) -> usize {
    let list = env.list();
    for (i, snap) in list.iter().enumerate() {
        let id = snap["id"].as_str().unwrap();
        let out = env.path(&format!("restored-{i}-{}.db", &id[..8]));
        let _ = std::fs::remove_file(&out);
        env.ok(["restore", id, "-o", s(&out)]);
        assert_eq!(common::integrity(&out), "ok", "snapshot {id} restores intact");
        std::fs::remove_file(&out).unwrap();
    }
    list.len()
}

#[test]
fn forget_dry_run_explains_every_decision_and_changes_nothing() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    let ids = history(&env, &db, 10);
    // The lock file records its last holder; everything else must stay.
    let state = || {
        let mut d = common::describe(&env.repo);
        d.remove("lock");
        d
    };
    let before = state();
    let out = env.ok([
        "--json",
        "forget",
        "--keep-last",
        "2",
        "--keep-weekly",
        "2",
        "--keep-tag",
        "none-has-it",
        "--dry-run",
    ]);
    assert!(state() == before, "a dry run leaves the repository as it was");
    let v = out.json();
    let verdicts = v["snapshots"].as_array().unwrap();
    assert_eq!(verdicts.len(), 10);
    // 2026-10-01 is a Thursday: days 0..=3 (Oct 1–4) are ISO week 40,
    // days 4..=9 (Oct 5–10) week 41. Newest two by position; newest of each
    // of the two most recent weeks: Oct 10 (day 9) and Oct 4 (day 3).
    let expected: Vec<(usize, Vec<&str>)> = vec![(3, vec!["weekly"]), (8, vec!["last"]), (9, vec!["last", "weekly"])];
    for (i, verdict) in verdicts.iter().enumerate() {
        assert_eq!(verdict["id"].as_str().unwrap(), ids[i], "verdicts come in list order");
        let reasons: Vec<String> = verdict["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        match expected.iter().find(|(day, _)| *day == i) {
            Some((_, words)) => {
                assert_eq!(verdict["keep"], true, "day {i} kept: {reasons:?}");
                assert_eq!(reasons.len(), words.len(), "day {i}: {reasons:?}");
                for w in words {
                    assert!(reasons.iter().any(|r| r.contains(w)), "day {i}: {reasons:?} names {w}");
                }
            }
            None => {
                assert_eq!(verdict["keep"], false, "day {i} removed: {reasons:?}");
                assert!(reasons.is_empty());
            }
        }
    }
    assert_eq!(v["removed"], 7);

    // No rule at all is a usage error, and changes nothing.
    env.run(["forget"]).expect_code(64);
    assert_eq!(env.list().len(), 10);
    // Nor does a rule set that would empty a group (a misspelt tag, say),
    // or prune settings it cannot use.
    let out = env.run(["forget", "--keep-tag", "relaese"]).expect_code(64);
    assert!(out.stderr.contains("would remove every snapshot"), "{}", out.stderr);
    env.run(["forget", "--keep-last", "1", "--prune", "--repack-unused", "0"])
        .expect_code(64);
    env.run(["prune", "--repack-unused", "101"]).expect_code(64);
    // A bad flag is a usage error; the same value in the config file is a
    // configuration error, naming the setting.
    env.run(["prune", "--grace", "soon"]).expect_code(64);
    env.run(["forget", "--keep-last", "1", "--keep-wal", "soon"])
        .expect_code(64);
    env.run(["forget", "--keep-within", "soon"]).expect_code(64);
    let cfg = env.path("bad-retention.toml");
    std::fs::write(
        &cfg,
        "[retention]\ngrace = \"soon\"\nkeep_wal = \"soon\"\nkeep_within = \"soon\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = env.run(["--config", cfg, "prune"]).expect_code(78);
    assert!(out.stderr.contains("[retention] grace"), "{}", out.stderr);
    let out = env.run(["--config", cfg, "forget", "--keep-last", "1"]).expect_code(78);
    assert!(out.stderr.contains("[retention] keep_wal"), "{}", out.stderr);
    let out = env.run(["--config", cfg, "forget", "--keep-wal", "1h"]).expect_code(78);
    assert!(out.stderr.contains("[retention] keep_within"), "{}", out.stderr);
    // (Each refusal appends its record to the operations log, by design.)
    let without_log = |d: std::collections::BTreeMap<String, common::Node>| {
        d.into_iter()
            .filter(|(k, _)| k != "log" && !k.starts_with("log/"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(
        without_log(state()) == without_log(before),
        "refusals leave the repository as it was"
    );
    assert_eq!(env.list().len(), 10);
}

#[test]
fn prune_frees_space_only_after_the_grace_period_and_keeps_every_kept_snapshot() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    history(&env, &db, 12);
    let packs_before = pack_count(&env);
    let bytes_before = common::tree_bytes(&env.repo.join("data"));

    let forgot = env
        .ok([
            "--json",
            "forget",
            "--keep-last",
            "3",
            "--prune",
            "--repack-unused",
            "30",
        ])
        .json();
    assert_eq!(forgot["removed"], 9);
    let p = &forgot["prune"];
    assert!(p["marked_packs"].as_u64().unwrap() > 0, "unused packs are marked: {p}");
    assert_eq!(p["deleted_packs"], 0, "nothing is deleted before the grace period: {p}");
    assert_eq!(marks(&env), 1);
    // Marked packs left the index but are still in the store.
    assert!(pack_count(&env) >= packs_before);
    assert_eq!(every_snapshot_restores(&env), 3);
    env.ok(["verify", "--read-data"]);

    // A second prune inside the grace period deletes nothing either.
    let again = env.ok(["--json", "prune"]).json();
    assert_eq!(again["deleted_packs"], 0);
    assert!(again["waiting_packs"].as_u64().unwrap() > 0, "{again}");

    // Past it (0s: nothing else writes here), the marked packs go.
    let swept = env.ok(["--json", "prune", "--grace", "0s"]).json();
    assert_eq!(swept["deleted_packs"], p["marked_packs"], "{swept}");
    assert_eq!(swept["recovered_packs"], 0);
    assert_eq!(marks(&env), 0, "a swept mark is deleted");
    let bytes_after = common::tree_bytes(&env.repo.join("data"));
    assert!(
        bytes_after < bytes_before,
        "space came back: {bytes_before} -> {bytes_after}"
    );
    env.ok(["verify", "--read-data"]);
    assert_eq!(every_snapshot_restores(&env), 3);

    // The next snapshot builds on what is left.
    churn(&db, 5, 1);
    let id = env.snapshot(&[&db]);
    let out = env.path("latest.db");
    env.ok(["restore", &id, "-o", s(&out)]);
    assert_eq!(common::blake3_file(&out), common::blake3_file(&db));
    // A prune with nothing to do changes nothing.
    let idle = env.ok(["--json", "prune", "--grace", "0s"]).json();
    assert_eq!(
        (idle["marked_packs"].as_u64(), idle["deleted_packs"].as_u64()),
        (Some(0), Some(0))
    );
}

/// A writer that loaded the index before a prune marked a pack may publish
/// a snapshot using it afterwards. Modelled by putting back a manifest the
/// prune saw forgotten: the sweep must index the pack again, not delete it.
#[test]
fn a_marked_pack_a_snapshot_needs_is_indexed_again_not_deleted() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    let ids = history(&env, &db, 4);
    let victim = &ids[0];
    let manifest_path = env.repo.join("snapshots").join(victim);
    let manifest = std::fs::read(&manifest_path).unwrap();
    env.ok(["forget", "--keep-last", "1", "--prune"]);
    assert!(marks(&env) == 1, "the forgotten snapshots' packs are marked");
    // The late writer publishes.
    std::fs::write(&manifest_path, &manifest).unwrap();
    assert_eq!(env.list().len(), 2);
    // Readable while marked: the reader falls back on the mark's records.
    let out = env.path("victim.db");
    env.ok(["restore", victim, "-o", s(&out)]);
    std::fs::remove_file(&out).unwrap();

    let swept = env.ok(["--json", "prune", "--grace", "0s"]).json();
    assert!(swept["recovered_packs"].as_u64().unwrap() > 0, "{swept}");
    env.ok(["verify", "--read-data"]);
    env.ok(["restore", victim, "-o", s(&out)]);
    assert_eq!(common::integrity(&out), "ok");
    assert_eq!(every_snapshot_restores(&env), 2);
}

#[test]
fn sigkill_during_prune_loses_nothing_still_referenced() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    history(&env, &db, 16);
    env.ok(["forget", "--keep-last", "6"]);
    let kept: Vec<String> = env
        .list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let hashes: Vec<String> = kept
        .iter()
        .map(|id| env.manifest(id)["sources"][0]["blake3"].as_str().unwrap().to_string())
        .collect();

    // How long an uninterrupted prune (both phases) takes here, so the kills
    // land throughout one; what is asserted does not depend on it.
    let full = {
        let scratch = Env::bare();
        common::copy_tree(&env.repo, &scratch.repo);
        let mut c = scratch.command();
        c.arg("--repo").arg(&scratch.repo_arg);
        let t0 = Instant::now();
        for _ in 0..2 {
            common::run_command({
                let mut c = scratch.command();
                c.args([
                    "--repo",
                    &scratch.repo_arg,
                    "prune",
                    "--grace",
                    "0s",
                    "--repack-unused",
                    "20",
                ]);
                c
            })
            .expect_code(0);
        }
        t0.elapsed()
    };
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut finished = 0;
    for i in 0..14u64 {
        let delay = full.mul_f64(((jitter >> (i % 20)) % 1000) as f64 / 1000.0 * 0.8) + Duration::from_millis(i * 3);
        let mut c = env.command();
        c.args([
            "--repo",
            &env.repo_arg,
            "prune",
            "--grace",
            "0s",
            "--repack-unused",
            "20",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            finished += 1;
        }
        // After every kill: the repository checks out and every kept
        // snapshot restores to exactly what was captured.
        env.ok(["verify", "--read-data"]);
        for (id, hash) in kept.iter().zip(&hashes) {
            let out = env.path("check.db");
            let _ = std::fs::remove_file(&out);
            env.ok(["restore", id, "-o", s(&out)]);
            assert_eq!(&common::blake3_file(&out), hash, "kill {i} after {delay:?}: {id}");
        }
        // Snapshots keep working in between.
        if i % 4 == 3 {
            churn(&db, 9, i as i64);
            env.snapshot(&[&db]);
        }
    }
    eprintln!("{finished} of 14 prunes finished before their kill (uninterrupted: {full:?})");
    // Finishing cleanly afterwards leaves no mark and no unreferenced pack.
    env.ok(["prune", "--grace", "0s"]);
    let last = env.ok(["--json", "prune", "--grace", "0s"]).json();
    assert_eq!(last["marked_packs"], 0, "{last}");
    assert_eq!(marks(&env), 0);
    env.ok(["verify", "--read-data"]);
    assert!(every_snapshot_restores(&env) >= kept.len());
}

/// Pages an older map of a delta chain lists but a newer map replaced are
/// garbage once the snapshots that used them are forgotten. After they are
/// deleted, the chain still resolves for every kept snapshot, so prune must
/// keep working (it once refused such a repository as damaged).
#[test]
fn pages_replaced_within_a_kept_chain_are_freed_and_prune_keeps_working() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("small.db");
    create_db(&db, 240, 400, true);
    env.snapshot(&[&db]); // a full map
    for q in 0..3 {
        let c = open(&db);
        c.execute("UPDATE t SET pad = hex(randomblob(200)) WHERE (id - 1) / 60 = ?1", [q])
            .unwrap();
        drop(c);
        env.snapshot(&[&db]); // deltas on top of it
    }
    let latest = env.list().last().unwrap()["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        env.ok([
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0s",
            "--repack-unused",
            "1",
        ]);
    }
    let r = env.ok(["--json", "prune", "--grace", "0s"]).json();
    assert_eq!(r["snapshots"], 1, "{r}");
    env.ok(["verify", "--read-data"]);
    let out = env.path("latest.db");
    env.ok(["restore", &latest, "-o", s(&out)]);
    assert_eq!(common::blake3_file(&out), common::blake3_file(&db));
}

/// A repository with garbage to mark, repack and sweep, and marks a
/// previous prune left: `days` snapshots, the last `keep_first` kept and
/// pruned, one more after a change (`seed`), the last `keep_last` kept.
/// Returns the kept snapshots with their databases' BLAKE3, and a copy of
/// the repository to start each run from.
fn garbage_to_prune(
    env: &Env,
    days: usize,
    keep_first: usize,
    seed: i64,
    keep_last: usize,
) -> (Vec<(String, String)>, std::path::PathBuf) {
    let db = env.path("app.db");
    history(env, &db, days);
    env.ok(["forget", "--keep-last", &keep_first.to_string()]);
    // One prune to leave marks behind, so the run under test also sweeps.
    env.ok(["prune", "--grace", "0s", "--repack-unused", "20"]);
    churn(&db, 5, seed);
    env.snapshot(&[&db]);
    env.ok(["forget", "--keep-last", &keep_last.to_string()]);
    let kept = env
        .list()
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().to_string();
            let hash = env.manifest(&id)["sources"][0]["blake3"].as_str().unwrap().to_string();
            (id, hash)
        })
        .collect();
    let template = env.path("repo-template");
    common::copy_tree(&env.repo, &template);
    (kept, template)
}

/// After a prune was interrupted (`what`): the repository verifies, every
/// kept snapshot restores exactly, two clean prunes finish the work; then
/// the repository is put back to `template` for the next run.
fn after_an_interrupted_prune(env: &Env, kept: &[(String, String)], template: &Path, what: &str) {
    env.ok(["verify", "--read-data"]);
    for (id, hash) in kept {
        let out = env.path("check.db");
        let _ = std::fs::remove_file(&out);
        env.ok(["restore", id, "-o", s(&out)]);
        assert_eq!(&common::blake3_file(&out), hash, "{what}: {id}");
    }
    // Run again, it finishes what the interrupted one began.
    env.ok(["prune", "--grace", "0s"]);
    env.ok(["prune", "--grace", "0s"]);
    assert_eq!(marks(env), 0, "{what}: marks left after two clean prunes");
    env.ok(["verify", "--read-data"]);
    std::fs::remove_dir_all(&env.repo).unwrap();
    common::copy_tree(template, &env.repo);
}

#[test]
fn prune_killed_at_every_step_loses_nothing_and_finishes_when_run_again() {
    // Killed at each of its write steps in turn (src/crashpoint.rs), from
    // the same starting point each time, so every step meets garbage to
    // mark, repack and sweep (a loop of timed kills found none after its
    // first passes).
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // the template is copied as files; the S3 kill loop is sigkill_during_prune's
    }
    let (kept, template) = garbage_to_prune(&env, 10, 4, 99, 3);
    let args = ["prune", "--grace", "0s", "--repack-unused", "20"];
    let (interrupted, out) = common::kill_at_every_step(&env, &args, |n| {
        after_an_interrupted_prune(&env, &kept, &template, &format!("killed at step {n}"));
    });
    assert_eq!(out.code, 0, "{out:?}");
    assert!(interrupted >= 5, "only {interrupted} runs were interrupted");
    eprintln!("prune: killed at each of its {interrupted} write steps");
}

#[test]
fn an_io_error_at_any_step_of_prune_ends_it_with_74_and_loses_nothing() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // the template is copied as files
    }
    let (kept, template) = garbage_to_prune(&env, 8, 3, 77, 2);
    let args = ["prune", "--grace", "0s", "--repack-unused", "20"];
    let failed = common::fail_at_every_step(&env, &args, |n, _| {
        after_an_interrupted_prune(&env, &kept, &template, &format!("failed at step {n}"));
    });
    assert!(failed >= 5, "only {failed} runs failed");
    eprintln!("prune: an EIO at each of {failed} steps ended it with 74");
}
