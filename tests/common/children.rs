//! Child processes made by re-executing the test binary (writers, holders
//! of a database or of the repository lock), and signals to them.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

// ---------------------------------------------------------- child processes

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test never leaves it running.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Re-execute this test binary running only the test `name`, with `envs`.
pub fn spawn_self(name: &str, envs: &[(&str, &Path)]) -> ChildGuard {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = Command::new(exe);
    c.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        c.env(k, v);
    }
    ChildGuard {
        child: c.spawn().expect("spawn child test process"),
    }
}

/// Poll `f` every 10 ms until it is true; panic after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("timed out after {secs}s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Write `text` to `path` so readers never see a torn value.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write progress");
    std::fs::rename(&tmp, path).expect("rename progress");
}

pub const WRITER_DB: &str = "LIFEBOAT_TEST_WRITER_DB";
pub const WRITER_PROGRESS: &str = "LIFEBOAT_TEST_WRITER_PROGRESS";
pub const HOLD_DB: &str = "LIFEBOAT_TEST_HOLD_DB";
pub const HOLD_READY: &str = "LIFEBOAT_TEST_HOLD_READY";

/// Body of the `writer_child` test: nothing unless `LIFEBOAT_TEST_WRITER_DB`
/// is set; then commit rows max+1, max+2, ... one per transaction, recording
/// after each commit the last committed id in `LIFEBOAT_TEST_WRITER_PROGRESS`.
/// Runs until killed (or until its parent goes away).
pub fn writer_child_main() {
    let Some(db) = std::env::var_os(WRITER_DB) else {
        return;
    };
    let progress = PathBuf::from(std::env::var_os(WRITER_PROGRESS).expect("progress file env"));
    let parent = std::os::unix::process::parent_id();
    let c = open(Path::new(&db));
    let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    let mut next: i64 = c
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM t", [], |r| r.get(0))
        .expect("max id");
    let mut stmt = c
        .prepare("INSERT INTO t(id, v, pad) VALUES (?1, 'row-' || ?1, hex(randomblob(64)))")
        .expect("prepare insert");
    loop {
        stmt.execute([next])
            .expect("insert (autocommit: one row per transaction)");
        write_atomic(&progress, &next.to_string());
        next += 1;
        if next % 64 == 0 && std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

/// The last id the writer child has reported committed, if any.
pub fn read_progress(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok())
}

/// Body of the `holder_child` test: nothing unless `LIFEBOAT_TEST_HOLD_DB` is
/// set; then open that WAL database, commit one row (so `-wal` and `-shm`
/// exist and hold data), signal readiness by creating
/// `LIFEBOAT_TEST_HOLD_READY`, and keep the connection open until killed.
pub fn holder_child_main() {
    let Some(db) = std::env::var_os(HOLD_DB) else {
        return;
    };
    let ready = PathBuf::from(std::env::var_os(HOLD_READY).expect("ready file env"));
    let parent = std::os::unix::process::parent_id();
    let c = open(Path::new(&db));
    let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    c.execute("INSERT INTO t(id, v) VALUES ((SELECT max(id) + 1 FROM t), 'held')", [])
        .expect("insert");
    write_atomic(&ready, "ready");
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

pub const LOCK_FILE: &str = "LIFEBOAT_TEST_LOCK_FILE";
pub const LOCK_READY: &str = "LIFEBOAT_TEST_LOCK_READY";

/// Body of the `lock_child` test: nothing unless `LIFEBOAT_TEST_LOCK_FILE` is
/// set (to [`Env::lock_file`], which is outside the repository for S3); then
/// take the repository's writer lock (a `flock` on that file) the way
/// Lifeboat does, record itself as the holder, signal readiness and hold
/// it until killed. A separate process, so no descriptor of the lock can leak
/// into processes the test harness spawns meanwhile.
pub fn lock_child_main() {
    let Some(lock) = std::env::var_os(LOCK_FILE) else {
        return;
    };
    let ready = PathBuf::from(std::env::var_os(LOCK_READY).expect("ready file env"));
    let parent = std::os::unix::process::parent_id();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .expect("open lock");
    f.try_lock().expect("take the repository lock");
    let holder = serde_json::json!({"host": hostname(), "pid": std::process::id(), "command": "test-lock-holder", "since": "2026-01-01T00:00:00Z"});
    f.set_len(0).expect("truncate lock");
    std::io::Write::write_all(&mut f, holder.to_string().as_bytes()).expect("write holder");
    write_atomic(&ready, "ready");
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

/// Send `sig` to a child process.
pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill with a pid we own and a valid signal number.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Wait up to `secs` for a child to exit; its exit code (128 + signal when
/// killed by one).
pub fn wait_exit(child: &mut Child, secs: u64) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("child {} still running after {secs}s", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
