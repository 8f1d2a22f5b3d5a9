//! Where `lifeboat status` asks the running agent what it knows and the
//! repository does not: its jobs and their next runs, and each replicator's
//! live position. Both sides use this module.
//!
//! Protocol: a Unix stream socket, `<state dir>/agent.sock`. The client
//! sends one line, `status\n`; the agent answers one JSON object, its status
//! (`format` 1, read as [`AgentStatus`]) followed by `\n`, and closes the
//! connection. Anything
//! else gets `{"error": "..."}`. The socket is created with the process
//! umask inside the state directory, whose permissions decide who may ask.
//!
//! The agent calls [`serve_status`] once, after it is ready, with a closure
//! returning its live state; the server answers on its own thread until the
//! returned [`StatusServer`] is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use lifeboat::fsutil::HostDirs;
use lifeboat::{Error, ErrorCode, Result};

/// The status format an [`AgentStatus`] carries (its `format`).
pub const PROTOCOL: u32 = 1;

/// The one request.
const REQUEST: &str = "status";

/// Longest reply a client accepts: a status is a few KiB.
const MAX_REPLY: u64 = 4 << 20;

/// How long the server waits for a request line, so a client that connects
/// and says nothing cannot hold the answering thread.
#[cfg_attr(not(test), allow(dead_code))] // the agent's side; it serves once `lifeboat agent` calls `serve_status`
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `status` waits for the agent before reading the repository.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket's file name inside the agent's state directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// The agent's live state as `status` reads it: the agent's own status
/// (`agent-status.json`'s schema, format 1), every field defaulted and
/// unknown ones ignored, so neighbouring versions still understand each
/// other and the agent can serve its own type unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentStatus {
    /// [`PROTOCOL`].
    pub format: u32,
    /// The agent's process id.
    pub pid: u32,
    /// When the agent started (RFC 3339).
    pub started: String,
    /// When the agent last changed this status (RFC 3339).
    pub updated: String,
    /// The configuration file it runs with.
    pub config: Option<String>,
    /// The time zone its schedules are read in.
    pub timezone: String,
    /// `running`, `stopping` after SIGTERM, `stopped` once it has exited.
    pub state: String,
    /// Every job, configured or default.
    pub jobs: Vec<JobState>,
    /// Its replicator.
    pub replication: ReplicationState,
}

/// One job as the agent runs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// The job's name.
    pub name: String,
    /// Its schedule as configured (`"0 3 * * *"`, `"15m"`).
    pub schedule: String,
    /// The lifeboat command line it runs.
    pub run: String,
    /// `idle`, `running` or `retry_wait`.
    pub state: String,
    /// When the last run started and ended (RFC 3339).
    pub last_start: Option<String>,
    /// When the last run ended (RFC 3339).
    pub last_end: Option<String>,
    /// The last run's exit code (0: success; 128 + signal when killed).
    pub last_exit_code: Option<i32>,
    /// When it runs next (RFC 3339).
    pub next_run: Option<String>,
}

/// The agent's replicator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationState {
    /// A replicator runs now.
    pub running: bool,
    /// How often it was started again after it ended.
    pub restarts: u32,
    /// The databases it follows.
    pub databases: Vec<DatabaseState>,
}

/// One replicated database as the replicator last reported it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseState {
    /// The `[[sqlite]]` source's name.
    pub name: String,
    /// The newest transaction the replicator reported.
    pub txid: Option<u64>,
    /// Its last event (`replicate.following`, `replicate.base`, ...).
    pub last_event: Option<String>,
    /// When that event came (RFC 3339).
    pub last_event_at: Option<String>,
    /// Gaps in the stream since the agent started.
    pub gaps: u32,
}

/// The socket `status` asks and the agent serves: `flag` (`--socket`),
/// else `<state_dir>/agent.sock` with the agent's configured state
/// directory, else in [`default_state_dir`].
pub fn socket_path(dirs: &HostDirs, state_dir: Option<&Path>, flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match state_dir {
        Some(d) => d.join(SOCKET_NAME),
        None => default_state_dir(dirs).join(SOCKET_NAME),
    }
}

/// The agent's state directory when its configuration names none:
/// `$XDG_STATE_HOME/lifeboat/agent` (`~/.local/state/lifeboat/agent`).
pub fn default_state_dir(dirs: &HostDirs) -> PathBuf {
    dirs.state.join("lifeboat").join("agent")
}

/// The status file the agent keeps beside its socket.
pub const STATUS_FILE: &str = "agent-status.json";

/// The status the agent last wrote beside `socket`, if its process still
/// runs and it says it is running: what `status` shows when the socket does
/// not answer. A killed agent leaves its last status behind; its pid, gone,
/// tells.
pub fn read_status_file(socket: &Path) -> Option<AgentStatus> {
    let file = socket.parent()?.join(STATUS_FILE);
    let st: AgentStatus = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let pid = libc::pid_t::try_from(st.pid).ok().filter(|p| *p > 0)?;
    // SAFETY: signal 0 only asks whether the process exists.
    let alive =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    (st.format == PROTOCOL && st.state == "running" && alive).then_some(st)
}

/// The answering side, running until dropped: then its thread ends and the
/// socket file is removed, if it is still the one it bound.
#[cfg_attr(not(test), allow(dead_code))] // the agent's side; it serves once `lifeboat agent` calls `serve_status`
pub struct StatusServer {
    path: PathBuf,
    inode: u64,
    stop: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees the flag and returns.
        // Through the descriptor, not the path: the file may have been
        // removed or replaced meanwhile. (On Linux a shut-down listening
        // socket fails `accept` at once.)
        // SAFETY: the descriptor is the listener's, open while `self.listener` lives.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Answer `status` on `path` from its own thread, with `provider()`'s state
/// at the moment of each request. A socket already there that answers is
/// another agent: refused as busy (75). One that refuses connections is
/// left by a process that died, and is replaced. The new socket is bound
/// under a temporary name and renamed into place, so a client never finds
/// a socket that does not answer yet.
#[cfg_attr(not(test), allow(dead_code))] // the agent's side; it serves once `lifeboat agent` calls `serve_status`
pub fn serve_status<T, F>(path: &Path, provider: F) -> Result<StatusServer>
where
    T: Serialize,
    F: Fn() -> T + Send + 'static,
{
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(Error::config(path.display(), "exists and is not a socket")
                .fix("move it away, or give the agent another state directory"));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Error::busy(path.display(), "another agent answers on this socket")
                .fix("stop the other agent (`systemctl stop lifeboat-agent`), or give this one another state directory")
                .code(ErrorCode::AgentSocketInUse));
        }
    }
    if let Some(dir) = path.parent() {
        lifeboat::fsutil::create_private_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let temp = lifeboat::fsutil::temp_sibling(path);
    let listener = UnixListener::bind(&temp).map_err(|e| Error::io(&temp, e).fix("check the state directory"))?;
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(path, e)
    })?;
    let inode = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?.ino();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let listener = Arc::new(listener);
    let accepting = listener.clone();
    let thread = std::thread::Builder::new()
        .name("status-socket".into())
        .spawn(move || {
            for conn in accepting.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &provider) {
                            tracing::debug!(event = "agent.status_request_failed", error = %e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(event = "agent.status_accept_failed", error = %e);
                        // Out of descriptors, say: no spinning while it lasts.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| Error::io(Path::new("status socket thread"), e))?;
    Ok(StatusServer {
        path: path.to_path_buf(),
        inode,
        stop,
        listener,
        thread: Some(thread),
    })
}

#[cfg_attr(not(test), allow(dead_code))] // the agent's side; it serves once `lifeboat agent` calls `serve_status`
fn answer<T: Serialize>(stream: UnixStream, provider: &dyn Fn() -> T) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(256)).read_line(&mut line)?;
    let reply = if line.trim_end() == REQUEST {
        serde_json::to_string(&provider()).map_err(std::io::Error::other)?
    } else {
        serde_json::json!({ "error": format!("unknown request {:?}; send \"status\\n\"", line.trim_end()) }).to_string()
    };
    let mut w = &stream;
    w.write_all(reply.as_bytes())?;
    w.write_all(b"\n")?;
    w.flush()
}

/// What asking the agent gave.
#[derive(Debug)]
pub enum Answer {
    /// The agent answered.
    Running(AgentStatus),
    /// No socket, or one nothing listens on (an agent that died): no agent.
    NotRunning,
    /// Something listens but gave no usable answer in time (`why`).
    Unanswered(String),
}

/// Ask the agent on `path`, waiting at most `timeout` for each step. Never
/// changes anything on disk: a stale socket is the agent's to replace.
pub fn query(path: &Path, timeout: Duration) -> Answer {
    use std::io::ErrorKind as K;
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), K::NotFound | K::ConnectionRefused) => return Answer::NotRunning,
        Err(e) => return Answer::Unanswered(format!("{}: {e}", path.display())),
    };
    let ask = || -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        (&stream).write_all(format!("{REQUEST}\n").as_bytes())?;
        let mut reply = Vec::new();
        (&stream).take(MAX_REPLY).read_to_end(&mut reply)?;
        Ok(reply)
    };
    let reply = match ask() {
        Ok(r) => r,
        Err(e) => return Answer::Unanswered(format!("{}: {e}", path.display())),
    };
    match serde_json::from_slice::<AgentStatus>(&reply) {
        Ok(st) if st.format == PROTOCOL => Answer::Running(st),
        Ok(st) => Answer::Unanswered(format!(
            "{}: the agent's status is format {}, this lifeboat reads {PROTOCOL}",
            path.display(),
            st.format
        )),
        Err(e) => Answer::Unanswered(format!("{}: not a status reply ({e})", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canned() -> AgentStatus {
        AgentStatus {
            format: PROTOCOL,
            pid: 4242,
            started: "2026-12-01T00:00:00Z".into(),
            jobs: vec![JobState {
                name: "nightly".into(),
                schedule: "0 3 * * *".into(),
                run: "snapshot --kind partial".into(),
                next_run: Some("2026-12-02T03:00:00Z".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_server_answers_and_its_socket_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/agent.sock");
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = calls.clone();
        let server = serve_status(&path, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            canned()
        })
        .unwrap();
        for _ in 0..2 {
            match query(&path, CLIENT_TIMEOUT) {
                Answer::Running(st) => {
                    assert_eq!((st.pid, st.format), (4242, PROTOCOL));
                    assert_eq!(st.jobs[0].next_run.as_deref(), Some("2026-12-02T03:00:00Z"));
                }
                other => panic!("{other:?}"),
            }
        }
        // The state is the provider's at each request, not cached.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A second agent on the same socket is refused while this one answers.
        let e = serve_status(&path, canned).err().expect("refused");
        assert_eq!(e.code, ErrorCode::AgentSocketInUse);
        drop(server);
        assert!(!path.exists(), "the socket is removed when the server stops");
        assert!(matches!(query(&path, CLIENT_TIMEOUT), Answer::NotRunning));
    }

    #[test]
    fn a_server_stops_even_when_its_socket_file_was_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = serve_status(&path, canned).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(server);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("dropping the server returns");
    }

    #[test]
    fn a_stale_socket_is_not_running_and_is_replaced_by_the_next_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // Bound and dropped: the file stays, nothing listens (an agent that
        // was killed).
        drop(UnixListener::bind(&path).unwrap());
        assert!(matches!(query(&path, CLIENT_TIMEOUT), Answer::NotRunning));
        assert!(path.exists(), "the client removes nothing");
        let _server = serve_status(&path, canned).unwrap();
        assert!(matches!(query(&path, CLIENT_TIMEOUT), Answer::Running(_)));
    }

    #[test]
    fn a_listener_that_never_answers_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _silent = UnixListener::bind(&path).unwrap();
        match query(&path, Duration::from_millis(200)) {
            Answer::Unanswered(why) => assert!(why.contains("agent.sock"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_request_gets_an_error_not_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _server = serve_status(&path, canned).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"shutdown\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(v["error"].as_str().unwrap().contains("shutdown"), "{v}");
        assert!(v.get("pid").is_none(), "{v}");
    }

    #[test]
    fn the_status_file_counts_only_while_its_agent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_NAME);
        assert!(read_status_file(&socket).is_none());
        let write = |pid: u32, state: &str| {
            let st = AgentStatus {
                pid,
                state: state.into(),
                ..canned()
            };
            std::fs::write(dir.path().join(STATUS_FILE), serde_json::to_vec(&st).unwrap()).unwrap();
        };
        write(std::process::id(), "running");
        assert_eq!(read_status_file(&socket).map(|s| s.pid), Some(std::process::id()));
        write(std::process::id(), "stopped");
        assert!(read_status_file(&socket).is_none());
        // A pid no process has (above the kernel's limit).
        write(i32::MAX as u32, "running");
        assert!(read_status_file(&socket).is_none());
    }

    #[test]
    fn a_file_in_the_way_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        std::fs::write(&path, "not a socket").unwrap();
        let e = serve_status(&path, canned).err().expect("refused");
        assert_eq!(e.kind, lifeboat::ErrorKind::Config);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
