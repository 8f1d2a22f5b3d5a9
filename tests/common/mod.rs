//! Shared helpers for the integration tests: a scratch environment that runs
//! the real `lifeboat` binary with every path (repository, HOME, XDG dirs,
//! working directory) inside a temporary directory; SQLite fixtures; tree
//! descriptions for "byte-identical" and "untouched" comparisons; and child
//! processes made by re-executing the test binary itself.

#![allow(dead_code)]

pub mod faultproxy;
pub mod s3;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// Tests of one binary run one at a time. Lifeboat refuses to restore or
/// reset a database that any process holds open, and it looks in /proc: a
/// child that another test thread has forked but not yet exec'd holds copies
/// of every descriptor this process has open at that moment (close-on-exec
/// acts only at exec), so a fixture database being written by one test could
/// look "in use" to another test's `lifeboat`. Holding this for the whole test
/// removes that race; the suite is fast enough to run serially.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch world for one test. Nothing it runs can reach the real home.
///
/// The repository is local unless `LIFEBOAT_TEST_BACKEND=s3`; then it is a
/// fresh prefix of a bucket on a real S3 server (s3s-fs, checking
/// signatures) that this test process starts. s3s-fs keeps each object as a
/// plain file under its data directory, so `repo` is the repository's
/// objects on disk either way, and tests may look at or damage them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The repository's objects on disk (a local repository, or the bucket
    /// prefix inside the S3 server's data directory).
    pub repo: PathBuf,
    /// What `--repo` gets: the path, or the `s3://` URL.
    pub repo_arg: String,
    /// The S3 server, when the repository lives on one.
    pub s3: Option<&'static s3::Server>,
    pub xdg_cache: PathBuf,
    pub cwd: PathBuf,
    pub home: PathBuf,
    pub xdg_config: PathBuf,
    pub xdg_state: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Out {
    /// Panic (showing everything) unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// The whole stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` stdout is not one JSON value ({e}):\n{}", self.what, self.stdout))
    }
}

impl Env {
    /// A scratch environment with an initialised repository (at `<tmp>/repo`,
    /// or a fresh bucket prefix on the S3 server).
    pub fn new() -> Env {
        let e = Env::bare();
        e.ok(["init"]);
        e
    }

    /// A scratch environment without a repository.
    pub fn bare() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let mk = |name: &str| {
            let p = root.join(name);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        };
        let cwd = mk("cwd");
        let home = mk("home");
        let xdg_config = mk("xdg-config");
        let xdg_state = mk("xdg-state");
        let xdg_cache = mk("xdg-cache");
        let (repo, repo_arg, s3) = if s3::enabled() {
            let server = s3::Server::shared();
            let prefix = format!("t-{}", root.file_name().unwrap().to_string_lossy());
            (server.prefix_dir(&prefix), server.url(&prefix), Some(server))
        } else {
            let repo = root.join("repo");
            let arg = repo.to_str().expect("utf-8 temp path").to_string();
            (repo, arg, None)
        };
        Env {
            dir,
            root,
            repo,
            repo_arg,
            s3,
            xdg_cache,
            cwd,
            home,
            xdg_config,
            xdg_state,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The binary with a sealed environment and no `--repo`.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.xdg_config)
            .env("XDG_STATE_HOME", &self.xdg_state)
            .env("XDG_CACHE_HOME", &self.xdg_cache)
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_CONFIG_FILE", self.root.join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.root.join("no-aws-credentials"))
            // Fail fast in tests when the server is really gone.
            .env("LIFEBOAT_RETRY_SECONDS", "20")
            .env_remove("LIFEBOAT_REPO")
            .env_remove("LIFEBOAT_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    /// Where this host's writer stages packs: `<repo>/tmp` locally, the
    /// per-host working directory for an S3 repository.
    pub fn staging_dir(&self) -> PathBuf {
        match self.s3 {
            None => self.repo.join("tmp"),
            Some(_) => self.s3_local_dir().join("staging"),
        }
    }

    /// The writer lock file.
    pub fn lock_file(&self) -> PathBuf {
        match self.s3 {
            None => self.repo.join("lock"),
            Some(_) => self.s3_local_dir().join("lock"),
        }
    }

    /// `$XDG_CACHE_HOME/lifeboat/s3/<hash>` of this environment (one per
    /// repository; the hash is over endpoint, bucket and prefix).
    fn s3_local_dir(&self) -> PathBuf {
        let base = self.xdg_cache.join("lifeboat/s3");
        let dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            dirs.len() <= 1,
            "one S3 working directory expected under {}",
            base.display()
        );
        dirs.into_iter().next().unwrap_or_else(|| base.join("not-created-yet"))
    }

    /// Run with `--repo <the repository>` first.
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command();
        c.arg("--repo").arg(&self.repo_arg);
        c.args(args);
        run_command(c)
    }

    /// Run exactly these arguments (no `--repo`).
    pub fn run_bare<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command();
        c.args(args);
        run_command(c)
    }

    pub fn ok<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).expect_code(0)
    }

    /// Take a snapshot of `paths` and return its id (the last stdout line).
    pub fn snapshot(&self, paths: &[&Path]) -> String {
        let mut args: Vec<&OsStr> = vec![OsStr::new("snapshot")];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        let out = self.ok(args);
        let id = out.stdout.lines().last().unwrap_or_default().trim().to_string();
        assert_eq!(
            id.len(),
            64,
            "snapshot id should be 64 hex digits, stdout was:\n{}",
            out.stdout
        );
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "snapshot id {id}");
        id
    }

    /// `list --json --all` (bases included) as an array.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.ok(["--json", "list", "--all"]);
        out.json()
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("list --json is not an array: {}", out.stdout))
    }

    /// `show --json ID` manifest.
    pub fn manifest(&self, id: &str) -> serde_json::Value {
        let out = self.ok(["--json", "show", id]);
        out.json()["manifest"].clone()
    }
}

pub fn run_command(mut c: Command) -> Out {
    let what = format!("{c:?}");
    let o = c.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

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

// ------------------------------------------------------------ file trees

/// One path of a tree as compared: type, permission bits, owner, mtime and
/// content (BLAKE3 for files, the target for symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub content: String,
}

pub fn node(p: &Path) -> Node {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let ft = m.file_type();
    let (kind, content) = if ft.is_symlink() {
        (
            "symlink",
            std::fs::read_link(p).expect("readlink").display().to_string(),
        )
    } else if ft.is_dir() {
        ("dir", String::new())
    } else {
        ("file", blake3_file(p))
    };
    Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        content,
    }
}

/// Every path under `root` (itself as ""), never following symlinks.
pub fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    if std::fs::symlink_metadata(root).is_err() {
        return out;
    }
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let p = e.path();
            let n = node(&p);
            let is_dir = n.kind == "dir";
            out.insert(r.clone(), n);
            if is_dir {
                walk(&p, &r, out);
            }
        }
    }
    let n = node(root);
    let is_dir = n.kind == "dir";
    out.insert(String::new(), n);
    if is_dir {
        walk(root, "", &mut out);
    }
    out
}

/// Sum of the sizes of every file under `dir` (apparent sizes).
pub fn tree_bytes(dir: &Path) -> u64 {
    describe_sizes(dir)
}

fn describe_sizes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let m = std::fs::symlink_metadata(e.path()).expect("stat");
        if m.is_dir() {
            total += describe_sizes(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

/// Files directly in `dir` whose names start with `prefix`.
pub fn entries_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Files (recursively) under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    describe(dir)
        .into_iter()
        .filter(|(_, n)| n.kind != "dir")
        .map(|(k, _)| k)
        .collect()
}

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

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    assert_eq!(rc, 0, "gethostname");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

// ------------------------------------------------------------ S3 always

impl Env {
    /// Like [`Env::new`], but the repository is on the S3 server whatever
    /// `LIFEBOAT_TEST_BACKEND` says.
    pub fn new_s3() -> Env {
        let e = Env::bare_s3();
        e.ok(["init"]);
        e
    }

    /// Like [`Env::bare`], but the repository (a fresh bucket prefix) is on
    /// the S3 server whatever `LIFEBOAT_TEST_BACKEND` says.
    pub fn bare_s3() -> Env {
        let mut e = Env::bare();
        if e.s3.is_none() {
            let server = s3::Server::shared();
            let prefix = format!("t-{}", e.root.file_name().unwrap().to_string_lossy());
            e.repo = server.prefix_dir(&prefix);
            e.repo_arg = server.url(&prefix);
            e.s3 = Some(server);
        }
        e
    }

    /// The bucket prefix of an S3 repository.
    pub fn s3_prefix(&self) -> String {
        let server = self.s3.expect("an S3 repository");
        self.repo
            .strip_prefix(server.data.join(s3::BUCKET))
            .expect("the repository is a prefix of the test bucket")
            .to_string_lossy()
            .into_owned()
    }
}

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

/// Copy a directory tree (files and directories only), e.g. a repository.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// `describe` without the operations log (`log/`): a refused or failed
/// command appends a record there by design, and changes nothing else.
pub fn describe_without_log(root: &Path) -> BTreeMap<String, Node> {
    let mut d = describe(root);
    d.retain(|k, _| k != "log" && !k.starts_with("log/"));
    d
}

/// With `LIFEBOAT_TEST_KEEP=DIR`, a failing test's scratch directory (logs,
/// databases, a local repository) is copied to `DIR/<test>` for a look.
pub struct KeepOnFailure<'a>(pub &'a Env, pub &'static str);

impl Drop for KeepOnFailure<'_> {
    fn drop(&mut self) {
        let Some(dir) = std::env::var_os("LIFEBOAT_TEST_KEEP") else {
            return;
        };
        if !std::thread::panicking() {
            return;
        }
        let to = PathBuf::from(dir).join(self.1);
        let _ = std::fs::create_dir_all(&to);
        let _ = Command::new("cp").arg("-a").arg(&self.0.root).arg(&to).status();
        if self.0.is_s3() {
            let _ = Command::new("cp")
                .arg("-a")
                .arg(&self.0.repo)
                .arg(to.join("s3-repo"))
                .status();
        }
        eprintln!("kept {} in {}", self.0.root.display(), to.display());
    }
}

// ------------------------------------------------------------ crash points

/// Run `args` against the repository with the crash switch set to step `n`
/// (src/crashpoint.rs): `None` when the run was killed there, else how it
/// exited.
pub fn run_crashing_at(env: &Env, args: &[&str], n: u64) -> Option<Out> {
    use std::os::unix::process::ExitStatusExt;
    let mut c = env.command();
    c.env("LIFEBOAT_CRASH_AT", n.to_string());
    c.arg("--repo").arg(&env.repo_arg).args(args);
    let what = format!("{c:?}");
    let o = c.output().unwrap();
    if o.status.signal() == Some(libc::SIGKILL) {
        return None;
    }
    Some(Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    })
}

/// Kill `args` at its first write step, then its second, and so on until a
/// run gets through; after each kill, `check`. Returns how many runs were
/// interrupted, and the run that got through.
pub fn kill_at_every_step(env: &Env, args: &[&str], mut check: impl FnMut(u64)) -> (u64, Out) {
    for n in 1..=500 {
        match run_crashing_at(env, args, n) {
            None => check(n),
            Some(out) => return (n - 1, out),
        }
    }
    panic!("`{args:?}` was still being killed after 500 steps");
}

/// Run `args` against the repository, killing the process (and failing the
/// test) if it has not ended after `secs`: the cases below used to hang.
pub fn run_bounded(env: &Env, repo: &str, args: &[&str], secs: u64) -> Out {
    run_bounded_command(env.command(), repo, args, secs)
}

/// [`run_bounded`] with a command already set up (its environment).
pub fn run_bounded_command(mut c: Command, repo: &str, args: &[&str], secs: u64) -> Out {
    c.arg("--repo").arg(repo).args(args);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let what = format!("{c:?}");
    let mut child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "`{what}` hung for {secs} s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    }
}

/// xorshift64*: a reproducible generator for tests (seeded, no dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Run `args` with the failure switch set to step `n` (an EIO there,
/// src/crashpoint.rs), bounded to a minute: `None` when the run never
/// reached step `n` (it has fewer), else how it ended. A run that reached
/// it must end 0 (a best-effort step: a cache copy, a clean-up) or 74.
pub fn run_failing_at(env: &Env, args: &[&str], n: u64) -> Option<Out> {
    let mut c = env.command();
    c.env("LIFEBOAT_FAIL_AT", n.to_string());
    c.env_remove("LIFEBOAT_CRASH_AT");
    let out = run_bounded_command(c, &env.repo_arg, args, 60);
    if !out.stderr.contains(&format!("failure point {n} ")) {
        assert_eq!(out.code, 0, "a run that never reached step {n} failed:\n{out:?}");
        return None;
    }
    assert!(
        out.code == 0 || out.code == 74,
        "an I/O error at step {n} must end the run with 74 (or be survived):\n{out:?}"
    );
    if out.code == 74 {
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("lifeboat: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line:\n{}", out.stderr);
    }
    Some(out)
}

/// Fail `args` with EIO at its first write step, then its second, and so
/// on until a run no longer reaches the step; after each, `check(n, out)`.
/// Returns how many runs failed (exit 74).
pub fn fail_at_every_step(env: &Env, args: &[&str], mut check: impl FnMut(u64, &Out)) -> u64 {
    let mut failed = 0;
    for n in 1..=500 {
        match run_failing_at(env, args, n) {
            None => return failed,
            Some(out) => {
                if out.code == 74 {
                    failed += 1;
                }
                check(n, &out);
            }
        }
    }
    panic!("`{args:?}` still reached step 500");
}

/// Where `restore --to DIR` puts a source captured at `original`: under DIR
/// at its absolute path.
pub fn under(dir: &Path, original: &Path) -> PathBuf {
    let abs = std::path::absolute(original).expect("absolute path");
    dir.join(abs.strip_prefix("/").expect("absolute"))
}
