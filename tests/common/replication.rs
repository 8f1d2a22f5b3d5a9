//! Replication helpers: the replica writer, its rows, and the events a
//! replicator logs.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

// ------------------------------------------------------ replication helpers

/// Nanoseconds since the Unix epoch, from the same clock Lifeboat stamps
/// commits with.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

/// The schema the replication tests write: `ts` is the wall-clock time (ns
/// since the epoch) taken inside the write transaction just before COMMIT.
pub const REPLICA_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, pad TEXT NOT NULL)";

/// An empty WAL database with [`REPLICA_SCHEMA`], closed on return.
pub fn create_replica_db(path: &Path) {
    let c = open(path);
    let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    c.execute_batch(REPLICA_SCHEMA).expect("create table");
    c.close().map_err(|(_, e)| e).expect("close db");
}

/// Commit the next row of `t` (id max+1) in its own transaction, recording
/// the time just before COMMIT. Returns the id.
pub fn commit_row(c: &Connection) -> i64 {
    c.execute_batch("BEGIN IMMEDIATE").expect("begin");
    let id: i64 = c
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM t", [], |r| r.get(0))
        .expect("next id");
    c.execute(
        "INSERT INTO t(id, ts, pad) VALUES (?1, ?2, hex(randomblob(100)))",
        rusqlite::params![id, now_ns()],
    )
    .expect("insert");
    c.execute_batch("COMMIT").expect("commit");
    id
}

pub const RW_DB: &str = "LIFEBOAT_TEST_RW_DB";
/// Stop once the row with this id is committed...
pub const RW_ROWS: &str = "LIFEBOAT_TEST_RW_ROWS";
/// ...and exit with this status.
pub const RW_EXIT: &str = "LIFEBOAT_TEST_RW_EXIT";
/// Pause between commits, in microseconds.
pub const RW_PAUSE_US: &str = "LIFEBOAT_TEST_RW_PAUSE_US";
/// Before the first commit, wait until a `state.json` exists in a directory
/// below this one (a replicator's state: its first base is taken).
pub const RW_WAIT_STATE: &str = "LIFEBOAT_TEST_RW_WAIT_STATE";

/// Body of the `replica_writer_child` test: nothing unless
/// `LIFEBOAT_TEST_RW_DB` is set; then commit rows of [`REPLICA_SCHEMA`] one
/// per transaction (WAL, synchronous=NORMAL) with a pause between commits,
/// until killed, until its parent goes away, or until row `RW_ROWS` is
/// committed (then exit with `RW_EXIT`).
pub fn replica_writer_child_main() {
    let Some(db) = std::env::var_os(RW_DB) else {
        return;
    };
    let num = |k: &str| std::env::var(k).ok().map(|v| v.parse::<i64>().expect("numeric env"));
    let rows = num(RW_ROWS);
    let exit = num(RW_EXIT).unwrap_or(0) as i32;
    let pause = Duration::from_micros(num(RW_PAUSE_US).unwrap_or(2000) as u64);
    let parent = std::os::unix::process::parent_id();
    if let Some(dir) = std::env::var_os(RW_WAIT_STATE) {
        let dir = PathBuf::from(dir);
        wait_until("the replicator's first base", 60, || {
            std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().any(|e| e.path().join("state.json").is_file()))
                .unwrap_or(false)
        });
    }
    let c = open(Path::new(&db));
    let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    c.execute_batch("PRAGMA synchronous=NORMAL").expect("synchronous");
    loop {
        let id = commit_row(&c);
        if rows.is_some_and(|n| id >= n) {
            drop(c);
            std::process::exit(exit);
        }
        std::thread::sleep(pause);
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

/// One line of Lifeboat's `-v` log:
/// `2026-11-22T23:07:15.075828Z  INFO event="replicate.started" db=... txid=0`.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub time: jiff::Timestamp,
    pub level: String,
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl LogEvent {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A numeric field; panics (showing the event) when it is absent.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("event has no numeric {key}: {self:?}"))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    pub fn time_ns(&self) -> i64 {
        self.time.as_nanosecond() as i64
    }
}

/// Every event line of a log (other lines are skipped).
pub fn parse_events(text: &str) -> Vec<LogEvent> {
    text.lines().filter_map(parse_event).collect()
}

fn parse_event(line: &str) -> Option<LogEvent> {
    let mut rest = line.trim_start();
    let (ts, tail) = rest.split_once(' ')?;
    let time: jiff::Timestamp = ts.parse().ok()?;
    rest = tail.trim_start();
    let (level, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = BTreeMap::new();
    let mut chars = tail.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut token = String::new();
        let mut value: Option<String> = None;
        while let Some(&ch) = chars.peek() {
            if ch == ' ' {
                break;
            }
            chars.next();
            if ch == '=' && value.is_none() {
                let mut v = String::new();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(ch) = chars.next() {
                        match ch {
                            '\\' => v.extend(chars.next()),
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                } else {
                    while let Some(&ch) = chars.peek() {
                        if ch == ' ' {
                            break;
                        }
                        v.push(ch);
                        chars.next();
                    }
                }
                value = Some(v);
                break;
            }
            token.push(ch);
        }
        if let Some(v) = value {
            fields.insert(token, v);
        }
    }
    let name = fields.remove("event")?;
    Some(LogEvent {
        time,
        level: level.trim().to_string(),
        name,
        fields,
    })
}

/// What a SQLite database holds, as SQLite reads it (through the WAL):
/// page size and count, the rows of `t`, and a hash over the schema and
/// every row of every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub page_size: i64,
    pub page_count: i64,
    pub rows: i64,
    pub max_id: i64,
    pub hash: String,
}

pub fn content(path: &Path) -> Content {
    let c = open(path);
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page_size");
    let page_count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count");
    let mut h = blake3::Hasher::new();
    let tables: Vec<(String, String, String)> = {
        let mut st = c
            .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
            .expect("schema");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("schema rows")
            .collect::<Result<_, _>>()
            .expect("schema rows")
    };
    for (kind, name, sql) in &tables {
        h.update(format!("{kind}\0{name}\0{sql}\0").as_bytes());
        if kind != "table" || name.starts_with("sqlite_") {
            continue;
        }
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .expect("select");
        let n = st.column_count();
        let mut rows = st.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for i in 0..n {
                h.update(format!("{:?}\0", row.get_ref(i).expect("value")).as_bytes());
            }
            h.update(b"\n");
        }
    }
    let (rows, max_id) = c
        .query_row("SELECT count(*), coalesce(max(id), 0) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap_or((-1, -1));
    Content {
        page_size,
        page_count,
        rows,
        max_id,
        hash: h.finalize().to_hex().to_string(),
    }
}

/// Rows `(id, ts, pad)` of table `t`, by id.
pub fn replica_rows(path: &Path) -> Vec<(i64, i64, String)> {
    let c = open(path);
    let mut st = c.prepare("SELECT id, ts, pad FROM t ORDER BY id").expect("select");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}
