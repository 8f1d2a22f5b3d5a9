//! The library's one error type. Every variant carries what an operator needs
//! for a one-line message: the file or object concerned, what is wrong, and the
//! fix. The CLI maps [`ErrorKind`] to a sysexits code in exactly one place
//! (`cli::exit`).

use std::fmt;
use std::path::Path;

mod code;

pub use code::ErrorCode;

/// What class of failure this is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command line was wrong.
    Usage,
    /// Input data is corrupt or not what it claims to be.
    BadData,
    /// A required input (file, repository, snapshot) does not exist.
    NoInput,
    /// An output could not be created, or would clobber something.
    CantCreate,
    /// Reading or writing failed.
    Io,
    /// Someone else holds a resource; retrying later may work.
    Busy,
    /// Configuration or version mismatch.
    Config,
}

#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// File, directory or repository object the error is about.
    pub subject: String,
    pub problem: String,
    /// What the operator should do; empty when there is nothing useful to say.
    pub fix: String,
    /// Stable event name for logs and `--json`, e.g. `repo.in_use`.
    pub event: &'static str,
    /// A failure that may pass if the same request is made again (a 5xx, a
    /// throttle, a dropped connection): retry wrappers look only at this.
    pub temporary: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            write!(f, "{}", self.problem)?;
        } else {
            write!(f, "{}: {}", self.subject, self.problem)?;
        }
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// What to do about a damaged repository object.
pub const DAMAGED_FIX: &str = "the repository is damaged here: `lifeboat verify --read-data` lists the snapshots this affects; restore another snapshot";

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Error {
            kind,
            subject: subject.to_string(),
            problem: problem.into(),
            fix: String::new(),
            event: default_event(kind),
            temporary: false,
            source: None,
        }
    }
    pub fn usage(problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, "", problem)
    }
    pub fn bad_data(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadData, subject, problem)
    }
    /// A stored object (pack, index, manifest, page map, segment, mark)
    /// that is not what it should be, with the fix every such error shares.
    pub fn damaged(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::bad_data(subject, problem).fix(DAMAGED_FIX)
    }
    pub fn no_input(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoInput, subject, problem)
    }
    pub fn cant_create(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::CantCreate, subject, problem)
    }
    pub fn busy(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, subject, problem)
    }
    pub fn config(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, subject, problem)
    }
    /// An I/O failure on `path`; a missing file becomes [`ErrorKind::NoInput`].
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NoInput,
            _ => ErrorKind::Io,
        };
        let mut e = Self::new(kind, path.display(), err.to_string());
        e.source = Some(Box::new(err));
        e
    }
    pub fn sqlite(path: &Path, err: rusqlite::Error) -> Self {
        let kind = match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => ErrorKind::Busy,
            Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => ErrorKind::BadData,
            Some(rusqlite::ErrorCode::CannotOpen) => ErrorKind::NoInput,
            _ => ErrorKind::Io,
        };
        let mut e = Self::new(kind, path.display(), format!("SQLite: {err}"));
        e.source = Some(Box::new(err));
        e
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
    pub fn event(mut self, event: &'static str) -> Self {
        self.event = event;
        self
    }
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }
}

fn default_event(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Usage => "error.usage",
        ErrorKind::BadData => "error.bad_data",
        ErrorKind::NoInput => "error.no_input",
        ErrorKind::CantCreate => "error.cant_create",
        ErrorKind::Io => "error.io",
        ErrorKind::Busy => "error.busy",
        ErrorKind::Config => "error.config",
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Attach a path to a `rusqlite::Result`.
pub trait SqlContext<T> {
    fn at_db(self, path: &Path) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn at_db(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::sqlite(path, e))
    }
}
