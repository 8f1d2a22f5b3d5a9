//! The running agent's live state, as `lifeboat status` shows it: one
//! serde struct, written whole to `<state dir>/agent-status.json` (crash-safe)
//! at every change. Kept in a file of its own so `status` can share the type.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside the agent's state directory.
pub const STATUS_FILE: &str = "agent-status.json";

/// `agent-status.json`'s `format`.
pub const STATUS_FORMAT: u32 = 1;

/// Everything the agent knows about itself right now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// The agent's process id; a reader checks it still runs before trusting
    /// the rest (a killed agent leaves its last status behind).
    pub pid: u32,
    /// RFC 3339, when the agent started.
    pub started: String,
    /// RFC 3339, when this status was written.
    pub updated: String,
    /// The configuration file it runs.
    pub config: PathBuf,
    /// The time zone schedules are read in.
    pub timezone: String,
    /// True when the config has no `[[job]]` and the seeds' schedule runs.
    pub default_schedule: bool,
    /// `running`; `stopping` after SIGTERM, `stopped` when it has exited.
    pub state: String,
    /// Every job, in the config's order.
    pub jobs: Vec<JobStatus>,
    /// The replicator child.
    pub replication: ReplicationStatus,
}

/// One job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    pub run: String,
    /// `idle`, `running` or `retry_wait`.
    pub state: String,
    /// The running child's pid.
    pub pid: Option<u32>,
    /// RFC 3339 start and end of the last run.
    pub last_start: Option<String>,
    pub last_end: Option<String>,
    /// Its exit code (128 + signal when killed).
    pub last_exit_code: Option<i32>,
    /// RFC 3339, the next start (jitter included).
    pub next_run: Option<String>,
}

/// The replicator child and what it last said about each database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    /// Whether a replicator child is running now.
    pub running: bool,
    pub pid: Option<u32>,
    /// How often it was started again after it ended.
    pub restarts: u32,
    /// The databases it follows (their `[[sqlite]]` names).
    pub databases: Vec<DatabaseStatus>,
}

/// One replicated database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseStatus {
    pub name: String,
    /// The newest transaction id the replicator reported (on following, on
    /// each base and fold).
    pub txid: Option<u64>,
    /// Its last event (`replicate.following`, `replicate.base`, …).
    pub last_event: Option<String>,
    /// RFC 3339, when that event came.
    pub last_event_at: Option<String>,
    /// Gaps reported since the agent started.
    pub gaps: u32,
}

impl AgentStatus {
    /// Where the status of an agent keeping its state in `dir` is.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATUS_FILE)
    }

    /// Write it whole, crash-safe; a failure is a warning (the status is an
    /// aid, never a reason to stop backing up).
    pub fn write(&self, dir: &Path) {
        let json = serde_json::to_vec_pretty(self).expect("status serializes");
        if let Err(e) = lifeboat::fsutil::write_atomic(&AgentStatus::path(dir), &json) {
            tracing::warn!(event = "agent.status_write_failed", error = %e, "cannot write the agent status");
        }
    }
}
