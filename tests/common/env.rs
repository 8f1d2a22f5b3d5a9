//! The scratch world a test runs the real binary in: `Env` (every path
//! inside a temporary directory, the repository local or on the S3 server),
//! a command's `Out`, and keeping a failed test's scene.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

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
