//! Every refusal of restore, reset, config and the repository lock, with its
//! exit code, and proof that the files concerned are untouched.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::{Env, create_db, describe, entries_starting, node, s};

/// Child process holding a database open (inert unless re-executed).
#[test]
fn holder_child() {
    common::holder_child_main();
}

/// `<env>/svc/state.db` (WAL, rows 1..=200, closed) and a snapshot of it.
fn db_and_snapshot(env: &Env) -> (PathBuf, String) {
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 200, 100, true);
    let id = env.snapshot(&[&db]);
    (db, id)
}

fn assert_refused(out: &common::Out, code: i32, event: &str) {
    assert_eq!(
        out.code, code,
        "`{}` exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
        out.what, out.code, out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains(&format!("event={event}")),
        "stderr names event {event}:\n{}",
        out.stderr
    );
}

#[test]
fn restore_into_non_empty_directory_is_refused_with_73() {
    let _serial = common::serial();
    let env = Env::new();
    let (_db, id) = db_and_snapshot(&env);
    let to = env.path("target");
    std::fs::create_dir_all(to.join("sub")).unwrap();
    std::fs::write(to.join("keep.txt"), "precious").unwrap();
    std::fs::write(to.join("sub/state.db"), "not the snapshot").unwrap();
    let before = describe(&to);
    let out = env.run(["restore", &id, "--to", s(&to)]);
    assert_refused(&out, 73, "restore.target_not_empty");
    assert_eq!(describe(&to), before, "a refused restore changes nothing");

    // An empty existing directory is fine.
    let empty = env.path("empty");
    std::fs::create_dir(&empty).unwrap();
    env.ok(["restore", &id, "--to", s(&empty)]);
    assert_eq!(common::row_stats(&common::under(&empty, &_db)), (200, 1, 200, 0));
}

#[test]
fn restore_onto_existing_file_is_refused_with_73_and_json_error() {
    let _serial = common::serial();
    let env = Env::new();
    let (db, id) = db_and_snapshot(&env);
    let dir = env.path("out");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("copy.db");
    std::fs::write(&target, "an existing file").unwrap();
    let before = describe(&dir);
    let out = env.run(["restore", &id, "-o", s(&target)]);
    assert_refused(&out, 73, "restore.target_not_empty");
    assert_eq!(describe(&dir), before);

    // A leftover sidecar alone is in the way too.
    let other = dir.join("other.db");
    std::fs::write(common::sidecars(&other)[0].clone(), "stale wal").unwrap();
    let before = describe(&dir);
    assert_refused(
        &env.run(["restore", &id, "-o", s(&other)]),
        73,
        "restore.target_not_empty",
    );
    assert_eq!(describe(&dir), before);

    // --json: exactly one JSON object on stdout carrying the exit code.
    let out = env.run(["--json", "restore", &id, "-o", s(&target)]);
    assert_eq!(out.code, 73);
    let v = out.json();
    assert_eq!(v["error"]["exit_code"], 73, "{v}");
    assert_eq!(v["error"]["event"], "restore.target_not_empty");
    assert_eq!(v["error"]["kind"], "cant_create");
    assert!(v["error"]["message"].as_str().unwrap().contains("copy.db"), "{v}");
    assert!(
        !out.stderr.contains("lifeboat: error"),
        "with --json the error is not also printed as text: {}",
        out.stderr
    );
    assert_eq!(describe(&dir), before);

    // A new name works, and the source is not disturbed.
    let fresh = dir.join("fresh.db");
    env.ok(["restore", &id, "-o", s(&fresh)]);
    assert_eq!(common::blake3_file(&fresh), common::blake3_file(&db));
}

#[test]
fn restore_over_database_open_in_another_process_is_refused_with_75_even_forced() {
    let _serial = common::serial();
    let env = Env::new();
    let (db, id) = db_and_snapshot(&env);
    let snap_hash = common::blake3_file(&db);
    let svc = db.parent().unwrap().to_path_buf();
    std::fs::write(svc.join("server.toml"), "listen = 1\n").unwrap();
    let ready = env.path("holder.ready");
    let holder = common::spawn_self("holder_child", &[(common::HOLD_DB, &db), (common::HOLD_READY, &ready)]);
    common::wait_until("the holder to open the database", 60, || ready.exists());
    let [wal, shm, ..] = <[PathBuf; 4]>::try_from(common::sidecars(&db)).unwrap();
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the holder's commit sits in the WAL"
    );
    assert!(shm.exists());
    let before = describe(&svc);

    let out = env.run(["restore", &id]);
    assert_refused(&out, 75, "restore.database_in_use");
    let pid = holder.child.id().to_string();
    assert!(
        out.stderr.contains(&pid),
        "the refusal names the holder's pid {pid}:\n{}",
        out.stderr
    );
    assert_eq!(describe(&svc), before, "a refused restore changes nothing");
    // The same through -o naming the live file.
    assert_refused(&env.run(["restore", &id, "-o", s(&db)]), 75, "restore.database_in_use");
    assert_eq!(describe(&svc), before);

    // Not even --force moves a file a process holds open: it would go on
    // writing into the moved copy.
    assert_refused(&env.run(["restore", &id, "--force"]), 75, "restore.database_in_use");
    assert_eq!(describe(&svc), before);
    // Once the service is stopped (killed: its -wal and -shm stay)...
    drop(holder);
    let out = env.ok(["restore", &id, "--force"]);
    let aside = entries_starting(&svc, ".lifeboat-pre-restore-");
    assert_eq!(aside.len(), 1, "one pre-restore directory: {aside:?}");
    let aside = &aside[0];
    assert!(
        out.stdout.contains(s(aside)),
        "the message says where the old files went:\n{}",
        out.stdout
    );
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(
            node(&aside.join(name)).content,
            before[name].content,
            "{name} moved aside unchanged"
        );
    }
    assert_eq!(common::blake3_file(&db), snap_hash, "the snapshot is back in place");
    assert!(
        !wal.exists() && !shm.exists(),
        "no stale -wal/-shm beside the restored database"
    );
    assert_eq!(
        node(&svc.join("server.toml")),
        before["server.toml"],
        "other files untouched"
    );
    assert_eq!(
        common::row_stats(&db),
        (200, 1, 200, 0),
        "the held process's later commit is not in the restored database"
    );
}

#[test]
fn force_moves_current_files_and_sidecars_aside_and_leaves_no_stale_sidecars() {
    let _serial = common::serial();
    let env = Env::new();
    let (db, id) = db_and_snapshot(&env);
    let snap_hash = common::blake3_file(&db);
    let to = env.path("target");
    // What is in the way: the files where --to puts the database (the
    // source's own path under the target).
    let at = common::under(&to, db.parent().unwrap());
    std::fs::create_dir_all(&at).unwrap();
    create_db(&at.join("state.db"), 50, 10, true);
    std::fs::write(at.join("state.db-wal"), vec![7u8; 5000]).unwrap();
    std::fs::write(at.join("state.db-shm"), vec![9u8; 32768]).unwrap();
    std::fs::write(at.join("state.db.lock"), "lock").unwrap();
    std::fs::write(at.join("notes.txt"), "unrelated").unwrap();
    let before = describe(&at);

    let out = env.ok(["restore", &id, "--to", s(&to), "--force"]);
    let aside = entries_starting(&to, ".lifeboat-pre-restore-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    let aside = &aside[0];
    assert!(
        out.stdout.contains(s(aside)),
        "message names {}:\n{}",
        aside.display(),
        out.stdout
    );
    let aside_at = aside.join(at.strip_prefix(&to).unwrap());
    for name in ["state.db", "state.db-wal", "state.db-shm", "state.db.lock"] {
        assert_eq!(
            node(&aside_at.join(name)).content,
            before[name].content,
            "{name} moved aside, never deleted"
        );
    }
    assert_eq!(common::blake3_file(&at.join("state.db")), snap_hash);
    for side in common::sidecars(&at.join("state.db")) {
        assert!(
            !side.exists(),
            "stale sidecar left beside the restored database: {}",
            side.display()
        );
    }
    assert_eq!(node(&at.join("notes.txt")), before["notes.txt"]);
    let mut names: Vec<String> = std::fs::read_dir(&at)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "state.db"], "only notes.txt and state.db");
    assert_eq!(common::integrity(&at.join("state.db")), "ok");
}

#[test]
fn schema_version_newer_than_allowed_is_refused_with_78() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 100, 10, true);
    common::open(&db).execute_batch("PRAGMA user_version = 5").unwrap();
    let id = env.snapshot(&[&db]);
    assert_eq!(env.manifest(&id)["sources"][0]["schema_version"], 5);

    let out_dir = env.path("out");
    let out = env.run(["restore", &id, "--to", s(&out_dir), "--max-schema-version", "4"]);
    assert_refused(&out, 78, "restore.schema_version_too_new");
    assert!(!out_dir.exists(), "nothing created by a refused restore");
    let file = env.path("one.db");
    assert_refused(
        &env.run(["restore", &id, "-o", s(&file), "--max-schema-version", "4"]),
        78,
        "restore.schema_version_too_new",
    );
    assert!(!file.exists());

    // The config's [restore] max_schema_version applies too; the flag overrides it.
    std::fs::write(env.cwd.join("lifeboat.toml"), "[restore]\nmax_schema_version = 4\n").unwrap();
    assert_refused(
        &env.run(["restore", &id, "--to", s(&out_dir)]),
        78,
        "restore.schema_version_too_new",
    );
    assert!(!out_dir.exists());
    env.ok(["restore", &id, "--to", s(&out_dir), "--max-schema-version", "5"]);
    assert_eq!(common::row_stats(&common::under(&out_dir, &db)), (100, 1, 100, 0));

    // A configured schema-version query (the seeds' schema_migrations table).
    let mig = env.path("svc2/state.db");
    std::fs::create_dir_all(mig.parent().unwrap()).unwrap();
    create_db(&mig, 10, 10, true);
    common::open(&mig)
        .execute_batch(
            "CREATE TABLE schema_migrations(version INTEGER); INSERT INTO schema_migrations VALUES (1), (2), (7);",
        )
        .unwrap();
    std::fs::write(
        env.cwd.join("lifeboat.toml"),
        format!(
            "[[sqlite]]\npath = \"{}\"\nname = \"portunus\"\nschema_version = \"SELECT max(version) FROM schema_migrations\"\n\n[restore]\nmax_schema_version = 6\n",
            s(&mig)
        ),
    )
    .unwrap();
    let id2 = env.ok(["snapshot"]).stdout.trim().to_string();
    let m = env.manifest(&id2);
    assert_eq!(m["sources"][0]["name"], "portunus");
    assert_eq!(m["sources"][0]["schema_version"], 7);
    let out2 = env.path("out2");
    let out = env.run(["restore", &id2, "--to", s(&out2)]);
    assert_refused(&out, 78, "restore.schema_version_too_new");
    assert!(out.stderr.contains("portunus"), "names the database: {}", out.stderr);
    assert!(!out2.exists());
}

/// A data dir like the seeds': state.db with sidecars, TLS material, server.toml.
fn service_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir_all(&d).unwrap();
    create_db(&d.join("state.db"), 20, 10, true);
    std::fs::write(d.join("state.db-wal"), vec![1u8; 4096]).unwrap();
    std::fs::write(d.join("state.db-shm"), vec![2u8; 32768]).unwrap();
    std::fs::write(d.join("state.db.lock"), "").unwrap();
    std::fs::write(d.join("server.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(d.join("server.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::write(d.join("server.toml"), "listen = \"0.0.0.0:7000\"\n").unwrap();
    std::fs::write(d.join("identity.json"), "{}").unwrap();
    d
}

const DB_FILES: [&str; 4] = ["state.db", "state.db-wal", "state.db-shm", "state.db.lock"];
const KEPT: [&str; 4] = ["server.crt", "server.key", "server.toml", "identity.json"];

#[test]
fn reset_without_confirm_is_a_dry_run() {
    let _serial = common::serial();
    let env = Env::bare();
    let d = service_dir(&env, "data");
    let before = describe(&d);
    let out = env.run_bare(["reset", "--data-dir", s(&d)]).expect_code(0);
    for f in DB_FILES {
        assert!(out.stdout.contains(s(&d.join(f))), "dry run lists {f}:\n{}", out.stdout);
    }
    for f in KEPT {
        assert!(
            !out.stdout.contains(s(&d.join(f))),
            "dry run does not list {f}:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("dry run"), "{}", out.stdout);
    assert_eq!(describe(&d), before, "a dry run changes nothing");

    let v = env
        .run_bare(["--json", "reset", "--data-dir", s(&d)])
        .expect_code(0)
        .json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["files"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(describe(&d), before);
}

#[test]
fn reset_confirm_removes_only_databases_and_sidecars() {
    let _serial = common::serial();
    let env = Env::bare();
    let d = service_dir(&env, "data");
    let before = describe(&d);
    let out = env.run_bare(["reset", "--data-dir", s(&d), "--confirm"]).expect_code(0);
    for f in DB_FILES {
        assert!(!d.join(f).exists(), "{f} removed");
    }
    for f in KEPT {
        assert_eq!(node(&d.join(f)), before[f], "{f} left alone");
    }
    // Moved aside, not destroyed.
    let aside = entries_starting(&d, ".lifeboat-reset-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(out.stdout.contains(s(&aside[0])), "{}", out.stdout);
    for f in DB_FILES {
        assert_eq!(
            node(&aside[0].join(f)).content,
            before[f].content,
            "{f} kept in {}",
            aside[0].display()
        );
    }
    // Running it again finds nothing to do.
    let out = env.run_bare(["reset", "--data-dir", s(&d), "--confirm"]).expect_code(0);
    assert!(out.stdout.contains("nothing to reset"), "{}", out.stdout);
}

#[test]
fn reset_with_config_removes_only_configured_databases() {
    let _serial = common::serial();
    let env = Env::bare();
    let d = env.path("data");
    std::fs::create_dir(&d).unwrap();
    create_db(&d.join("store"), 5, 10, true); // no database-like suffix: found only through the config
    std::fs::write(d.join("store-wal"), "wal").unwrap();
    create_db(&d.join("cache.db"), 5, 10, true); // not configured: stays
    std::fs::write(d.join("server.key"), "key").unwrap();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(&cfg, format!("[[sqlite]]\npath = \"{}\"\n", s(&d.join("store")))).unwrap();
    let before = describe(&d);
    env.run_bare(["--config", s(&cfg), "reset", "--data-dir", s(&d), "--confirm"])
        .expect_code(0);
    assert!(!d.join("store").exists() && !d.join("store-wal").exists());
    assert_eq!(node(&d.join("cache.db")), before["cache.db"]);
    assert_eq!(node(&d.join("server.key")), before["server.key"]);
}

#[test]
fn reset_with_config_naming_no_database_in_the_dir_removes_nothing() {
    let _serial = common::serial();
    let env = Env::bare();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    create_db(&elsewhere.join("state.db"), 5, 10, true);
    let d = service_dir(&env, "data");
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!("[[sqlite]]\npath = \"{}\"\n", s(&elsewhere.join("state.db"))),
    )
    .unwrap();
    let before = describe(&d);
    let elsewhere_before = describe(&elsewhere);
    let out = env
        .run_bare(["--config", s(&cfg), "reset", "--data-dir", s(&d), "--confirm"])
        .expect_code(0);
    assert!(out.stdout.contains("nothing to reset"), "{}", out.stdout);
    assert_eq!(
        describe(&d),
        before,
        "only configured databases are removed, and none is in this dir"
    );
    assert_eq!(describe(&elsewhere), elsewhere_before);
}

#[test]
fn reset_refuses_a_file_without_the_sqlite_header_with_65() {
    let _serial = common::serial();
    let env = Env::bare();
    // A candidate found by name.
    let d = service_dir(&env, "data");
    std::fs::write(d.join("notes.db"), "these are my notes, not a database").unwrap();
    let before = describe(&d);
    let out = env.run_bare(["reset", "--data-dir", s(&d), "--confirm"]);
    assert_refused(&out, 65, "reset.not_sqlite");
    assert!(out.stderr.contains("notes.db"), "{}", out.stderr);
    assert_eq!(describe(&d), before, "nothing removed, not even the real database");

    // A configured database (e.g. a typo'd path) that is not SQLite.
    let d2 = env.path("data2");
    std::fs::create_dir(&d2).unwrap();
    std::fs::write(d2.join("state.db"), "short").unwrap();
    std::fs::write(d2.join("state.db-wal"), "wal").unwrap();
    std::fs::write(d2.join("server.crt"), "crt").unwrap();
    let cfg = env.path("cfg.toml");
    std::fs::write(&cfg, format!("[[sqlite]]\npath = \"{}\"\n", s(&d2.join("state.db")))).unwrap();
    let before = describe(&d2);
    assert_refused(
        &env.run_bare(["--config", s(&cfg), "reset", "--data-dir", s(&d2), "--confirm"]),
        65,
        "reset.not_sqlite",
    );
    assert_eq!(describe(&d2), before);
    // The dry run refuses just the same.
    assert_refused(
        &env.run_bare(["--config", s(&cfg), "reset", "--data-dir", s(&d2)]),
        65,
        "reset.not_sqlite",
    );
    assert_eq!(describe(&d2), before);
}

#[test]
fn reset_on_an_empty_data_dir_is_a_no_op() {
    let _serial = common::serial();
    let env = Env::bare();
    let d = env.path("empty");
    std::fs::create_dir(&d).unwrap();
    let before = describe(&d);
    env.run_bare(["reset", "--data-dir", s(&d)]).expect_code(0);
    let out = env.run_bare(["reset", "--data-dir", s(&d), "--confirm"]).expect_code(0);
    assert!(out.stdout.contains("nothing to reset"), "{}", out.stdout);
    assert_eq!(describe(&d), before);
}

#[test]
fn unknown_config_key_is_an_error_78() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("x.db");
    create_db(&db, 5, 10, true);
    let repo_before = common::describe_without_log(&env.repo);
    // Discovered in the working directory.
    std::fs::write(
        env.cwd.join("lifeboat.toml"),
        format!(
            "[[sqlite]]\npath = \"{}\"\nschema_verison = \"PRAGMA user_version\"\n",
            s(&db)
        ),
    )
    .unwrap();
    let out = env.run(["snapshot"]);
    assert_refused(&out, 78, "config.invalid");
    assert!(
        out.stderr.contains("schema_verison"),
        "names the unknown key: {}",
        out.stderr
    );
    // On the line it is on (issue 20, finding 12: it said one too low).
    assert!(out.stderr.contains("line 3:"), "names line 3: {}", out.stderr);
    // Named with --config, a misspelt section.
    let cfg = env.path("other.toml");
    std::fs::write(&cfg, format!("[repositry]\nurl = \"{}\"\n", env.repo_arg)).unwrap();
    let out = env.run(["--config", s(&cfg), "snapshot", s(&db)]);
    assert_refused(&out, 78, "config.invalid");
    assert!(out.stderr.contains("repositry"), "{}", out.stderr);
    assert!(out.stderr.contains("line 1:"), "names line 1: {}", out.stderr);
    assert_eq!(common::describe_without_log(&env.repo), repo_before, "nothing written");
}

#[test]
fn missing_config_is_an_error_78_naming_every_searched_path() {
    let _serial = common::serial();
    let env = Env::new();
    let out = env.run(["snapshot"]);
    assert_refused(&out, 78, "config.not_found");
    for p in [
        "./lifeboat.toml".to_string(),
        format!("{}/lifeboat/lifeboat.toml", s(&env.xdg_config)),
        "/etc/lifeboat/lifeboat.toml".into(),
    ] {
        assert!(out.stderr.contains(&p), "the message names {p}:\n{}", out.stderr);
    }

    let named = env.path("nowhere/lifeboat.toml");
    let mut c = env.command();
    c.env("LIFEBOAT_CONFIG", &named)
        .env_remove("XDG_CONFIG_HOME")
        .args(["--repo", &env.repo_arg, "snapshot"]);
    let out = common::run_command(c);
    assert_refused(&out, 78, "config.not_found");
    for p in [
        s(&named).to_string(),
        "./lifeboat.toml".into(),
        format!("{}/.config/lifeboat/lifeboat.toml", s(&env.home)),
        "/etc/lifeboat/lifeboat.toml".into(),
    ] {
        assert!(out.stderr.contains(&p), "the message names {p}:\n{}", out.stderr);
    }

    let out = env.run(["--json", "snapshot"]);
    assert_eq!(out.code, 78);
    let v = out.json();
    assert_eq!(v["error"]["exit_code"], 78);
    assert_eq!(v["error"]["event"], "config.not_found");
    assert!(env.list().is_empty());
}

fn write_holder(lock: &mut std::fs::File, host: &str, pid: u32) {
    let holder = serde_json::json!({"host": host, "pid": pid, "command": "snapshot", "since": "2026-01-01T00:00:00Z"});
    lock.set_len(0).unwrap();
    lock.write_all(holder.to_string().as_bytes()).unwrap();
    lock.sync_all().unwrap();
}

/// Child process holding the repository lock (inert unless re-executed).
#[test]
fn lock_child() {
    common::lock_child_main();
}

#[test]
fn second_writer_is_refused_with_75_while_the_repository_lock_is_held() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("x.db");
    create_db(&db, 50, 10, true);
    let ready = env.path("lock.ready");
    // The lock lifeboat takes: `<repo>/lock` locally, a file in this host's
    // working directory for an S3 repository (created by `init`).
    let lock_file = env.lock_file();
    assert!(
        lock_file.parent().unwrap().is_dir(),
        "the lock's directory exists after init: {}",
        lock_file.display()
    );
    let holder = common::spawn_self(
        "lock_child",
        &[(common::LOCK_FILE, &lock_file), (common::LOCK_READY, &ready)],
    );
    common::wait_until("the lock holder", 60, || ready.exists());
    let pid = holder.child.id();
    // The repository's objects, this host's staging area and the lock file
    // (all inside the repository for a local one).
    let state = || {
        (
            common::describe_without_log(&env.repo),
            describe(&env.staging_dir()),
            node(&lock_file),
        )
    };
    let before = state();
    assert!(!before.1.is_empty(), "the staging directory exists");

    let out = env.run(["snapshot", s(&db)]);
    assert_refused(&out, 75, "repo.in_use");
    assert!(
        out.stderr.contains(&format!("pid {pid}")),
        "names the holder's pid {pid}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&common::hostname()),
        "names the holder's host: {}",
        out.stderr
    );
    let out = env.run(["--json", "snapshot", s(&db)]);
    assert_eq!(out.code, 75);
    let v = out.json();
    assert_eq!(v["error"]["exit_code"], 75);
    assert_eq!(v["error"]["event"], "repo.in_use");
    assert_eq!(state(), before, "the refused writer changed nothing");
    // Readers are not writers: list still works while the lock is held.
    assert!(env.list().is_empty());

    // The holder dies (SIGKILL) without unlocking: its lock is taken over.
    drop(holder);
    env.snapshot(&[&db]);
    assert_eq!(env.list().len(), 1);
}

#[test]
fn lock_left_by_a_dead_process_is_taken_over() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("x.db");
    create_db(&db, 50, 10, true);
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    // `<repo>/lock` locally; in this host's working directory for S3.
    let lock_file = env.lock_file();
    assert!(
        lock_file.parent().unwrap().is_dir(),
        "the lock's directory exists after init: {}",
        lock_file.display()
    );
    let mut lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&lock_file)
        .unwrap();
    write_holder(&mut lock, &common::hostname(), pid);
    drop(lock);
    // And a half-written pack of the dead writer in the staging area.
    let tmp = env.staging_dir();
    assert!(tmp.is_dir(), "init creates the staging area {}", tmp.display());
    std::fs::write(tmp.join("pack-dead"), vec![0u8; 1000]).unwrap();
    env.snapshot(&[&db]);
    assert!(tmp.is_dir(), "the staging area is still there");
    assert!(
        common::files_under(&tmp).is_empty(),
        "the dead writer's staging files are cleaned up"
    );
    // The new writer took this very lock and recorded itself as the holder.
    let holder: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock_file).unwrap()).unwrap();
    assert_ne!(
        holder["since"],
        "2026-01-01T00:00:00Z",
        "the dead writer's record in {} was replaced: {holder}",
        lock_file.display()
    );
    env.ok(["verify", "--read-data"]);
}

#[test]
fn relative_config_paths_are_recorded_absolute_and_resolved() {
    // Issue 20, finding 10: `../svc/state.db` from a config in `cfg/` was
    // recorded as `<root>/cfg/../svc/state.db`.
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 10, 10, true);
    let cfg = env.path("cfg/lifeboat.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\n[[sqlite]]\npath = \"../svc/state.db\"\n",
            env.repo_arg
        ),
    )
    .unwrap();
    let out = env.run_bare(["--config", s(&cfg), "snapshot"]).expect_code(0);
    let id = out.stdout.lines().last().unwrap().trim().to_string();
    let recorded = env.manifest(&id)["sources"][0]["path"].as_str().unwrap().to_string();
    assert_eq!(recorded, s(&db), "recorded resolved");
}

#[test]
fn a_config_holding_credentials_that_others_can_read_is_warned_about() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\n[repository.s3]\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            env.repo_arg,
            common::s3::ACCESS_KEY,
            common::s3::SECRET_KEY
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run_bare(["--config", s(&cfg), "list"]).expect_code(0);
    assert!(out.stderr.contains("config.secrets_readable"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(common::s3::SECRET_KEY),
        "the secret is never shown"
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run_bare(["--config", s(&cfg), "list"]).expect_code(0);
    assert!(!out.stderr.contains("config.secrets_readable"), "{}", out.stderr);
}

#[test]
fn lifeboats_own_aside_and_staging_folders_are_never_captured() {
    // Issue 20, finding 9.
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    for d in [
        ".lifeboat-pre-restore-20261207T101500Z",
        ".lifeboat-reset-20261207T101500Z",
        ".lifeboat-restore-123-abc-0.tmp",
        "uploads",
    ] {
        std::fs::create_dir_all(svc.join(d)).unwrap();
        std::fs::write(svc.join(d).join("f.txt"), d).unwrap();
    }
    let id = env.snapshot(&[&svc]);
    let paths: Vec<String> = env.manifest(&id)["sources"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["", "uploads", "uploads/f.txt"], "only the service's own files");
}

#[test]
fn reset_previews_an_open_database_and_refuses_only_with_confirm() {
    // Issue 20, finding 11: the dry run refused (75) while the database was
    // open, so a reset could not be previewed before stopping the service.
    let _serial = common::serial();
    let env = Env::new();
    let d = env.path("data");
    std::fs::create_dir_all(&d).unwrap();
    let db = d.join("app.db");
    create_db(&db, 10, 10, true);
    let ready = env.path("holder.ready");
    let mut holder = common::spawn_self("holder_child", &[(common::HOLD_DB, &db), (common::HOLD_READY, &ready)]);
    common::wait_until("the holder to open the database", 60, || ready.exists());
    let before = describe(&d);
    let out = env.run_bare(["reset", "--data-dir", s(&d)]).expect_code(0);
    assert!(
        out.stdout.contains("would remove") && out.stdout.contains("open now"),
        "{}",
        out.stdout
    );
    assert_refused(
        &env.run_bare(["reset", "--data-dir", s(&d), "--confirm"]),
        75,
        "reset.database_in_use",
    );
    assert_eq!(describe(&d), before, "nothing changed");
    assert!(holder.still_running());
}

#[test]
fn configuration_mistakes_are_78_not_64_or_74() {
    // Issue 20, finding 11: duplicate source names in the config exited 64
    // and a bad schema_version query 74.
    let _serial = common::serial();
    let env = Env::new();
    let a = env.path("a/data");
    let b = env.path("b/data");
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
    }
    let cfg = env.path("dup.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\n[[directory]]\npath = \"{}\"\n[[directory]]\npath = \"{}\"\n",
            env.repo_arg,
            s(&a),
            s(&b)
        ),
    )
    .unwrap();
    let repo_before = common::describe_without_log(&env.repo);
    assert_refused(
        &env.run_bare(["--config", s(&cfg), "snapshot"]),
        78,
        "config.duplicate_name",
    );
    assert_eq!(common::describe_without_log(&env.repo), repo_before, "nothing written");
    let db = env.path("app.db");
    create_db(&db, 10, 10, true);
    let cfg = env.path("query.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\n[[sqlite]]\npath = \"{}\"\nschema_version = \"SELECT max(version) FROM schema_migrations\"\n",
            env.repo_arg,
            s(&db)
        ),
    )
    .unwrap();
    assert_refused(
        &env.run_bare(["--config", s(&cfg), "snapshot"]),
        78,
        "snapshot.bad_schema_query",
    );
    assert!(env.list().is_empty(), "no snapshot published");
    assert!(common::files_under(&env.repo.join("data")).is_empty(), "no pack stored");
}

/// Issue 20, finding 4: the "open elsewhere" check covered only `[[sqlite]]`
/// sources; `--force` over a directory moved aside a database a writer held
/// open, and the writer kept writing into the moved copy.
#[test]
fn force_over_a_directory_holding_an_open_file_is_refused_with_75() {
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    let db = svc.join("tenants/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 50, 100, true);
    std::fs::write(svc.join("server.toml"), "listen = 1\n").unwrap();
    let id = env.snapshot(&[&svc]);
    let ready = env.path("holder.ready");
    let holder = common::spawn_self("holder_child", &[(common::HOLD_DB, &db), (common::HOLD_READY, &ready)]);
    common::wait_until("the holder to open the database", 60, || ready.exists());
    let before = describe(&svc);
    for args in [
        vec!["restore", &id, "--force"],
        vec!["restore", &id, "--only", "svc", "--force"],
    ] {
        let out = env.run(&args);
        assert_refused(&out, 75, "restore.file_in_use");
        let pid = holder.child.id().to_string();
        assert!(
            out.stderr.contains(&pid),
            "names the holder's pid {pid}:\n{}",
            out.stderr
        );
        assert_eq!(describe(&svc), before, "a refused restore changes nothing");
        assert!(entries_starting(&env.path(""), ".lifeboat-pre-restore-").is_empty());
    }
    drop(holder);
    env.ok(["restore", &id, "--force"]);
    assert_eq!(common::integrity(&db), "ok");
}

/// The open-file check matches the file, not only its name: a process
/// holding a file of the directory through another name (a hard link here;
/// a container's own mount namespace or a bind mount alike) is found.
#[test]
fn a_file_held_open_under_another_name_is_found() {
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("data.bin"), "data").unwrap();
    let id = env.snapshot(&[&svc]);
    let alias = env.path("alias.bin");
    std::fs::hard_link(svc.join("data.bin"), &alias).unwrap();
    let holder = common::ChildGuard {
        child: std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::fs::File::open(&alias).unwrap())
            .spawn()
            .unwrap(),
    };
    let before = describe(&svc);
    let out = env.run(["restore", &id, "--force"]);
    assert_refused(&out, 75, "restore.file_in_use");
    assert!(out.stderr.contains(&holder.child.id().to_string()), "{}", out.stderr);
    assert_eq!(describe(&svc), before);
    drop(holder);
    env.ok(["restore", &id, "--force"]);
}

/// `--to DIR --force` never writes through a link inside DIR.
#[test]
fn a_link_inside_the_target_directory_is_refused() {
    let _serial = common::serial();
    let env = Env::new();
    let (db, id) = db_and_snapshot(&env);
    let drill = env.path("drill");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // The database's folder under the target is a link to elsewhere.
    let at = common::under(&drill, db.parent().unwrap());
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &at).unwrap();
    let out = env.run(["restore", &id, "--to", s(&drill), "--force"]);
    assert_refused(&out, 73, "restore.target_has_link");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
}
