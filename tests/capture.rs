//! Capture correctness where nothing downstream could notice a mistake:
//! committed pages that exist only in the WAL of a connection that is still
//! open (no checkpoint has copied them into the database file). A capture
//! that misses them restores an older database that still passes
//! integrity_check, so each test compares content with the live view.

mod common;

use common::*;
use rusqlite::Connection;

/// Everything in `t`, as one string.
fn content(c: &Connection) -> String {
    c.query_row("SELECT count(*) || ':' || coalesce(group_concat(id || '=' || v, ','), '') FROM (SELECT id, v FROM t ORDER BY id)", [], |r| {
        r.get(0)
    })
    .unwrap()
}

fn wal_resident_round_trip(page_size: u32, via_symlink: bool) {
    let _g = serial();
    let env = Env::new();
    let dir = env.path("real");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("a.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 600)
         INSERT INTO t SELECT i, printf('%.300c', char(65 + i % 26)) FROM n;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    // Committed, but only in the WAL: this connection stays open, so nothing
    // checkpoints these pages into the database file before the snapshot.
    c.execute_batch(
        "UPDATE t SET v = 'changed-' || id WHERE id % 3 = 0;
         WITH RECURSIVE n(i) AS (SELECT 601 UNION ALL SELECT i+1 FROM n WHERE i < 800)
         INSERT INTO t SELECT i, printf('%.300c', 'z') FROM n;",
    )
    .unwrap();
    let wal = dir.join("a.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the changes must sit in the WAL"
    );
    let expected = content(&c);

    let source = if via_symlink {
        let link = env.path("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        link
    } else {
        db.clone()
    };
    let id = env.snapshot(&[&source]);
    let out = env.path("restored.db");
    env.ok(["restore", &id, "-o", s(&out)]);

    let r = Connection::open(&out).unwrap();
    let ps: u32 = r.query_row("PRAGMA page_size", [], |row| row.get(0)).unwrap();
    assert_eq!(ps, page_size);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(
        content(&r),
        expected,
        "restored content differs from the live database (page size {page_size})"
    );
    // The manifest's whole-file hash is the hash of the restored file.
    let m = env.manifest(&id);
    assert_eq!(m["sources"][0]["blake3"].as_str().unwrap(), blake3_file(&out));
    drop(c);
}

#[test]
fn wal_only_pages_are_captured_4096() {
    wal_resident_round_trip(4096, false);
}

#[test]
fn wal_only_pages_are_captured_65536() {
    wal_resident_round_trip(65536, false);
}

#[test]
fn wal_only_pages_are_captured_1024() {
    wal_resident_round_trip(1024, false);
}

#[test]
fn wal_only_pages_are_captured_512_without_chaining_values() {
    wal_resident_round_trip(512, false);
}

#[test]
fn wal_only_pages_are_captured_through_a_symlink() {
    wal_resident_round_trip(4096, true);
}

/// The same after a second snapshot builds on the first (delta page map,
/// chaining values carried over from the parent).
#[test]
fn incremental_capture_of_wal_only_changes() {
    let _g = serial();
    let env = Env::new();
    let db = env.path("b.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, printf('%.200c', 'a') FROM n;",
    )
    .unwrap();
    env.snapshot(&[&db]);
    c.execute_batch("UPDATE t SET v = 'second-' || id WHERE id % 97 = 0;")
        .unwrap();
    let expected = content(&c);
    let id = env.snapshot(&[&db]);
    let m = env.manifest(&id);
    let out = env.path("restored.db");
    env.ok(["restore", &id, "-o", s(&out)]);
    let r = Connection::open(&out).unwrap();
    assert_eq!(content(&r), expected);
    assert_eq!(m["sources"][0]["blake3"].as_str().unwrap(), blake3_file(&out));
    drop(c);
}
