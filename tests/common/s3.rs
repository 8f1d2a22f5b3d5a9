//! A real S3 server for the tests: s3s-fs (installed by scripts/test),
//! started once per test process on a free loopback port with signature
//! checking on, and killed when the process exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "lifeboat-test-key";
pub const SECRET_KEY: &str = "lifeboat-test-secret-0123456789";
pub const BUCKET: &str = "lifeboat-test";

/// True when `LIFEBOAT_TEST_BACKEND=s3`: every Env then uses the S3 server.
pub fn enabled() -> bool {
    std::env::var("LIFEBOAT_TEST_BACKEND").is_ok_and(|v| v == "s3")
}

pub struct Server {
    pub endpoint: String,
    pub port: u16,
    /// s3s-fs's data directory: one subdirectory per bucket.
    pub data: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl Server {
    /// The process-wide server, started on first use.
    pub fn shared() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| {
            // PR_SET_PDEATHSIG fires when the *thread* that forked exits, so
            // the server is started from a thread that never does.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                tx.send(Server::start()).unwrap();
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("s3s-fs started")
        })
    }

    fn start() -> Server {
        let bin = find_binary();
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-s3-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().canonicalize().unwrap().join("data");
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ));
        // The server dies with the test process, however that ends.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            data,
            _dir: dir,
            _child: child,
        }
    }

    /// `s3://BUCKET/PREFIX?endpoint=…`
    pub fn url(&self, prefix: &str) -> String {
        self.url_via(prefix, &self.endpoint)
    }

    /// The same repository reached through another endpoint (a proxy).
    pub fn url_via(&self, prefix: &str, endpoint: &str) -> String {
        format!("s3://{BUCKET}/{prefix}?endpoint={endpoint}&region=us-east-1")
    }

    /// Where the objects under `prefix` live on disk.
    pub fn prefix_dir(&self, prefix: &str) -> PathBuf {
        self.data.join(BUCKET).join(prefix)
    }

    /// Create another bucket (a directory to s3s-fs).
    pub fn create_bucket(&self, name: &str) -> PathBuf {
        let p = self.data.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return PathBuf::from(p);
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect::<Vec<_>>())
        .unwrap_or_default();
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/s3s-fs"));
    candidates
        .into_iter()
        .chain(home_bin)
        .find(|p| p.is_file())
        .expect("s3s-fs is not installed: run ./scripts/test, which installs it (cargo install --locked s3s-fs@0.14.1 --features binary)")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
