//! The scheduler's memory across restarts, `<state dir>/schedule.json`:
//! per job, when it last fired and whether that run ended. What lets a run
//! missed while the agent was down, or cut short by its death, run once at
//! start. Written whole, crash-safe (temporary file, fsync, rename), at
//! every start and end of a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lifeboat::{Error, Result};

/// The file's `format`.
const FORMAT: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchedulerState {
    pub format: u32,
    /// By job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobState>,
}

/// One job's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// The schedule it was fired by: a changed schedule starts afresh
    /// rather than catching up on fires the old one had.
    pub schedule: String,
    /// The (nominal) time of the fire the last run belongs to.
    pub last_fire: Option<jiff::Timestamp>,
    /// When the last run started.
    pub started: Option<jiff::Timestamp>,
    /// When it ended; `None` after `started` means it never did (the
    /// agent died during it).
    pub finished: Option<jiff::Timestamp>,
    /// Its exit code.
    pub exit_code: Option<i32>,
}

impl JobState {
    /// Started and never seen to end: the agent was killed during it.
    pub fn interrupted(&self) -> bool {
        self.started.is_some() && self.finished.is_none()
    }
}

/// Where the state lives, and its one writer.
pub struct StateFile {
    path: PathBuf,
    pub state: SchedulerState,
}

impl StateFile {
    /// Read `<dir>/schedule.json`; a missing file is an empty state. A file
    /// that does not parse is set aside (its jobs then start afresh) rather
    /// than stopping the agent: it holds no backup, only timing.
    pub fn open(dir: &Path) -> Result<StateFile> {
        let path = dir.join("schedule.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SchedulerState>(&bytes) {
                Ok(s) if s.format == FORMAT => s,
                other => {
                    let aside = path.with_extension("json.unreadable");
                    tracing::warn!(
                        event = "agent.state_unreadable",
                        path = %path.display(),
                        problem = %other.err().map(|e| e.to_string()).unwrap_or_else(|| "unknown format".into()),
                        "the scheduler state does not read; set aside, every job starts afresh"
                    );
                    let _ = std::fs::rename(&path, aside);
                    SchedulerState::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SchedulerState::default(),
            Err(e) => return Err(Error::io(&path, e).fix("check the permissions of the agent's state directory")),
        };
        Ok(StateFile { path, state })
    }

    /// Write the state through (crash-safe).
    pub fn save(&mut self) -> Result<()> {
        self.state.format = FORMAT;
        let json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        lifeboat::fsutil::write_atomic(&self.path, &json)
    }

    /// The job's memory, made if new.
    pub fn job(&mut self, name: &str) -> &mut JobState {
        self.state.jobs.entry(name.to_string()).or_default()
    }
}
