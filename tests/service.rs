//! Whole-service restores (issue 20): databases found inside directory
//! sources are databases, a restore of one source never moves another's
//! files, and a file that keeps changing while read makes the snapshot
//! incomplete, loudly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Env, create_db, s, under};

/// Child process: holds a database open (inert unless re-executed).
#[test]
fn holder_child() {
    common::holder_child_main();
}

/// Finding 2: a live WAL database inside a `[[directory]]` source was
/// copied as raw files, and under a busy writer the restored copy opened
/// with its restored `-wal` was "database disk image is malformed". Now it
/// is captured page by page inside a read transaction; its `-wal`/`-shm`
/// are not stored; every restore passes integrity_check.
#[test]
fn a_database_inside_a_directory_is_captured_online_under_a_busy_writer() {
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    let db = svc.join("tenants/t1.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 4000, 300, true);
    std::fs::write(svc.join("notes.txt"), "hello").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let c = common::open(&db);
            c.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Rewrites spread over the file: the log fills, checkpoints
                // move pages into the database while it is being copied.
                c.execute(
                    "UPDATE t SET pad = hex(randomblob(150)) WHERE id % 97 = ?1",
                    [(n % 97) as i64],
                )
                .unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    for round in 0..4 {
        let id = env.snapshot(&[&svc]);
        let m = env.manifest(&id);
        let entries = m["sources"][0]["entries"].as_array().unwrap();
        let entry = entries.iter().find(|e| e["path"] == "tenants/t1.db").unwrap();
        assert!(
            entry["database"]["pagemap"].is_string(),
            "captured as a database: {entry}"
        );
        assert!(
            !entries
                .iter()
                .any(|e| e["path"].as_str().unwrap().starts_with("tenants/t1.db-")),
            "no raw -wal/-shm stored: {entries:?}"
        );
        let drill = env.path(&format!("drill-{round}"));
        env.ok(["restore", &id, "--to", s(&drill)]);
        let restored = under(&drill, &db);
        assert!(
            !common::sidecars(&restored).iter().any(|p| p.exists()),
            "no sidecar restored"
        );
        assert_eq!(common::integrity(&restored), "ok", "round {round}");
        assert_eq!(common::row_stats(&restored).0, 4000, "round {round}: every row");
        assert_eq!(std::fs::read(under(&drill, &svc).join("notes.txt")).unwrap(), b"hello");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "the writer wrote");
    // verify reads it like any database.
    env.ok(["verify", "--read-data"]);
}

/// Finding 3: `restore --only <directory> --force` moved a separately
/// configured `[[sqlite]]` database inside that directory (and its
/// `-wal`/`-shm`) into the pre-restore folder, so the next snapshot failed
/// with 66. The database now stays where it is, the same file, even while
/// a process holds it open; the rest of the directory is restored.
#[test]
fn restoring_a_directory_leaves_a_database_configured_inside_it_in_place() {
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    let db = svc.join("state.db");
    std::fs::create_dir_all(svc.join("uploads")).unwrap();
    create_db(&db, 100, 50, true);
    std::fs::write(svc.join("uploads/a.txt"), "as snapshotted").unwrap();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        "[[sqlite]]\npath = \"svc/state.db\"\n\n[[directory]]\npath = \"svc\"\n",
    )
    .unwrap();
    let id = env
        .ok(["--config", s(&cfg), "snapshot"])
        .stdout
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    // Captured once: as the database source, not also inside the directory.
    let m = env.manifest(&id);
    let dir_entries = m["sources"][1]["entries"].as_array().unwrap();
    assert!(
        !dir_entries
            .iter()
            .any(|e| e["path"].as_str().unwrap().starts_with("state.db")),
        "{dir_entries:?}"
    );
    // The service goes on: the database changes, a file is damaged.
    std::fs::write(svc.join("uploads/a.txt"), "damaged").unwrap();
    let ready = env.path("holder.ready");
    let mut holder = common::spawn_self("holder_child", &[(common::HOLD_DB, &db), (common::HOLD_READY, &ready)]);
    common::wait_until("the holder to open the database", 60, || ready.exists());
    let ino = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let (db_ino, wal_ino) = (ino(&db), ino(&svc.join("state.db-wal")));

    env.ok(["--config", s(&cfg), "restore", &id, "--only", "svc", "--force"]);
    assert_eq!(std::fs::read(svc.join("uploads/a.txt")).unwrap(), b"as snapshotted");
    assert_eq!(
        (ino(&db), ino(&svc.join("state.db-wal"))),
        (db_ino, wal_ino),
        "the same files, never moved"
    );
    assert!(holder.still_running());
    drop(holder);
    assert_eq!(common::integrity(&db), "ok");
    assert_eq!(
        common::row_stats(&db).0,
        101,
        "the held process's commit is still there"
    );
    // The old directory is kept beside it, without the database.
    let aside = common::entries_starting(svc.parent().unwrap(), ".lifeboat-pre-restore-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    let old = aside[0].join("svc");
    assert!(
        !old.join("state.db").exists(),
        "the database is not in the aside folder"
    );
    assert!(!old.join("state.db-wal").exists());
    assert_eq!(std::fs::read(old.join("uploads/a.txt")).unwrap(), b"damaged");
    // The next snapshot finds everything where the config says.
    env.ok(["--config", s(&cfg), "snapshot"]);
}

/// A file that changes while it is read, on both attempts, makes the
/// snapshot incomplete: published, marked in its manifest, `list` and
/// `show`, and `snapshot` exits 75 with a warning `-q` does not hide.
#[test]
fn a_file_changing_while_read_makes_the_snapshot_incomplete_and_says_so() {
    let _serial = common::serial();
    let env = Env::new();
    let dir = env.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let busy = dir.join("busy.log");
    std::fs::write(&busy, vec![b'x'; 64 << 20]).unwrap();
    std::fs::write(dir.join("quiet.txt"), "still").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (busy, stop) = (busy.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_at(b"y", (i * 4096) % (64 << 20)).unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = env.run(["-q", "snapshot", s(&dir)]).expect_code(75);
    stop.store(true, Ordering::Relaxed);
    toucher.join().unwrap();
    assert!(
        out.stderr.contains("snapshot.incomplete"),
        "-q does not hide it:\n{}",
        out.stderr
    );
    let id = out.stdout.trim().lines().last().unwrap().to_string();
    let m = env.manifest(&id);
    assert_eq!(m["incomplete"], serde_json::json!(["data/busy.log"]), "{m}");
    let listed = env.list();
    assert_eq!(listed[0]["incomplete"], true);
    assert!(env.ok(["list"]).stdout.contains("INCOMPLETE"));
    assert!(env.ok(["show", &id]).stdout.contains("INCOMPLETE"));
    // A quiet directory gives a complete snapshot again.
    env.ok(["snapshot", s(&dir)]);
}

/// `--include` restores one tenant's instance inside a directory source,
/// in place, replacing that subtree only; other tenants and the other
/// sources are untouched; a pattern matching nothing is a usage error.
#[test]
fn include_restores_one_tenant_and_nothing_beside_it() {
    let _serial = common::serial();
    let env = Env::new();
    let tenants = env.path("srv/tenants");
    for t in ["41", "42"] {
        std::fs::create_dir_all(tenants.join(t).join("data")).unwrap();
        std::fs::write(tenants.join(t).join("config.toml"), format!("tenant = {t}\n")).unwrap();
        create_db(&tenants.join(t).join("data/app.db"), 30, 20, true);
    }
    let other = env.path("srv/state.db");
    create_db(&other, 10, 10, true);
    let id = env.snapshot(&[&tenants, &other]);
    // Both tenants change after the snapshot; tenant 42 is then restored.
    for t in ["41", "42"] {
        std::fs::write(tenants.join(t).join("config.toml"), "changed\n").unwrap();
        std::fs::write(tenants.join(t).join("new.txt"), "new\n").unwrap();
    }
    let other_before = common::node(&other);
    env.run(["restore", &id, "--include", "nosuch/*"]).expect_code(64);
    env.ok(["restore", &id, "--include", "42", "--force"]);
    assert_eq!(std::fs::read(tenants.join("42/config.toml")).unwrap(), b"tenant = 42\n");
    assert!(!tenants.join("42/new.txt").exists(), "the subtree is the snapshot's");
    assert_eq!(common::integrity(&tenants.join("42/data/app.db")), "ok");
    assert_eq!(std::fs::read(tenants.join("41/config.toml")).unwrap(), b"changed\n");
    assert!(tenants.join("41/new.txt").exists(), "tenant 41 untouched");
    assert_eq!(common::node(&other), other_before, "the other source untouched");
    // The replaced subtree is kept beside it.
    let aside = common::entries_starting(&tenants, ".lifeboat-pre-restore-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(aside[0].join("42/new.txt")).unwrap(), b"new\n");
    // Into a drill directory: only the tenant, at its own path.
    let drill = env.path("drill");
    env.ok(["restore", &id, "--include", "42/config.toml", "--to", s(&drill)]);
    assert_eq!(
        std::fs::read(under(&drill, &tenants.join("42/config.toml"))).unwrap(),
        b"tenant = 42\n"
    );
    assert!(!under(&drill, &tenants.join("41")).exists());
    assert!(!under(&drill, &other).exists());
}

/// A restore that fails after a directory was swapped (here: at each of its
/// steps in turn, the later ones touching another source) undoes the swap
/// without losing the database carried over into the new directory: the
/// old directory's names of it are removed only once the commit stands.
#[test]
fn a_failed_restore_never_loses_the_database_carried_over() {
    let _serial = common::serial();
    let env = Env::new();
    let svc = env.path("svc");
    let db = svc.join("state.db");
    std::fs::create_dir_all(svc.join("uploads")).unwrap();
    create_db(&db, 50, 20, true);
    std::fs::write(svc.join("uploads/a.txt"), "as snapshotted").unwrap();
    std::fs::write(env.path("other.conf"), "x = 1\n").unwrap();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        "[[sqlite]]\npath = \"svc/state.db\"\n\n[[directory]]\npath = \"svc\"\n\n[[file]]\npath = \"other.conf\"\n",
    )
    .unwrap();
    let out = env.ok(["--config", s(&cfg), "snapshot"]);
    let id = out.stdout.trim().lines().last().unwrap().to_string();
    // The live database moves on after the snapshot.
    let c = common::open(&db);
    c.execute_batch("INSERT INTO t(id, v) SELECT id + 50, v FROM t WHERE id <= 10")
        .unwrap();
    drop(c);
    let failed = common::fail_at_every_step(
        &env,
        &[
            "--config",
            s(&cfg),
            "restore",
            &id,
            "--only",
            "svc",
            "--only",
            "other.conf",
            "--force",
        ],
        |n, out| {
            assert!(
                out.code == 0 || out.code == 74,
                "step {n}: exit {}: {}",
                out.code,
                out.stderr
            );
            assert_eq!(common::integrity(&db), "ok", "step {n}");
            assert_eq!(
                common::row_stats(&db).0,
                60,
                "step {n}: the live database, whole, in place"
            );
        },
    );
    assert!(failed >= 3, "failures injected after the swap too ({failed})");
}

/// A source renamed in the configuration is one file under two names in
/// the repository: `restore` brings it back once, from the newest point,
/// and keeps the file it replaces.
#[test]
fn a_renamed_source_is_restored_once() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 20, 10, true);
    let cfg = env.path("lifeboat.toml");
    std::fs::write(&cfg, "[[sqlite]]\npath = \"svc/app.db\"\n").unwrap();
    env.ok(["--config", s(&cfg), "snapshot"]);
    std::fs::write(&cfg, "[[sqlite]]\npath = \"svc/app.db\"\nname = \"app\"\n").unwrap();
    let c = common::open(&db);
    c.execute_batch("DELETE FROM t WHERE id > 15").unwrap();
    drop(c);
    env.ok(["--config", s(&cfg), "snapshot"]);
    let before = common::blake3_file(&db);
    for config in [vec!["--config", s(&cfg)], vec![]] {
        let mut args = config.clone();
        args.extend(["--json", "restore", "--force"]);
        let v = env.ok(&args).json();
        assert_eq!(v["restored"].as_array().unwrap().len(), 1, "{config:?}: {v}");
        assert_eq!(common::row_stats(&db).0, 15, "{config:?}: the newest point");
    }
    let aside = common::entries_starting(db.parent().unwrap(), ".lifeboat-pre-restore-");
    assert!(
        aside.iter().any(|a| common::blake3_file(&a.join("app.db")) == before),
        "the replaced database is kept: {aside:?}"
    );
}
