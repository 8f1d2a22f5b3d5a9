//! SQLite fixtures: databases of known rows, integrity and content checks.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

// ---------------------------------------------------------------- SQLite

/// A database with `t(id INTEGER PRIMARY KEY, v TEXT, pad TEXT)` holding rows
/// 1..=rows, `v = 'row-<id>'` and `pad` `pad_bytes` bytes of random hex text
/// (compresses about 2:1). `wal` chooses WAL, else rollback (DELETE) mode.
/// The connection is closed on return, so the file alone holds everything.
pub fn create_db(path: &Path, rows: i64, pad_bytes: usize, wal: bool) {
    let c = Connection::open(path).expect("open db");
    let mode = if wal { "WAL" } else { "DELETE" };
    let _: String = c
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .expect("journal mode");
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, pad TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, 'row-' || i, hex(randomblob({half})) FROM n;",
        half = pad_bytes / 2
    ))
    .expect("fill db");
    c.close().map_err(|(_, e)| e).expect("close db");
}

pub fn open(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    c
}

pub fn integrity(path: &Path) -> String {
    let c = open(path);
    let rows: Vec<String> = {
        let mut st = c.prepare("PRAGMA integrity_check").expect("prepare");
        st.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    rows.join("\n")
}

/// (count, min id, max id, rows whose `v` is not `row-<id>`) of table `t`.
pub fn row_stats(path: &Path) -> (i64, i64, i64, i64) {
    let c = open(path);
    c.query_row(
        "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0),
                (SELECT count(*) FROM t WHERE v <> 'row-' || id) FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .expect("row stats")
}

pub fn blake3_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    blake3::hash(&data).to_hex().to_string()
}

pub fn sidecars(db: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal", ".lock"]
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}
