//! The library's one error type. Every error carries what an operator needs
//! for a one-line message: the file or object concerned, what is wrong, and the
//! fix; and an [`ErrorCode`] naming the failure, whose [`ErrorKind`] the CLI
//! maps to a sysexits code in exactly one place (`cli::exit`).

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

/// A failure, as the operator reads it: `subject: problem; fix`.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    /// The class of failure; decides the exit code. The code's kind, except
    /// where a site had to keep another ([`Error::code_keeping_kind`]).
    pub kind: ErrorKind,
    /// File, directory or repository object the error is about.
    pub subject: String,
    /// What is wrong, in one line.
    pub problem: String,
    /// What the operator should do; empty when there is nothing useful to say.
    pub fix: String,
    /// What failed, as a stable name: `code.event()` is the event for logs
    /// and `--json`, e.g. `repo.in_use`.
    pub code: ErrorCode,
    /// A failure that may pass if the same request is made again (a 5xx, a
    /// throttle, a dropped connection): retry wrappers look only at this.
    pub temporary: bool,
    /// The underlying failure, if another library reported it.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ErrorKind {
    /// The exit code (sysexits.h) the binary ends with for this kind, which
    /// the operations log also records; one table for both.
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 64,
            ErrorKind::BadData => 65,
            ErrorKind::NoInput => 66,
            ErrorKind::CantCreate => 73,
            ErrorKind::Io => 74,
            ErrorKind::Busy => 75,
            ErrorKind::Config => 78,
        }
    }
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

/// The library's `Result`, failing with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` about `subject`, with the kind's default code
    /// until [`Error::code`] names a specific one.
    pub fn new(kind: ErrorKind, subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Error {
            kind,
            subject: subject.to_string(),
            problem: problem.into(),
            fix: String::new(),
            code: ErrorCode::of_kind(kind),
            temporary: false,
            source: None,
        }
    }
    /// The command line asked for something that cannot be done.
    pub fn usage(problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, "", problem)
    }
    /// `subject` is corrupt or not what it claims to be.
    pub fn bad_data(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadData, subject, problem)
    }
    /// A stored object (pack, index, manifest, page map, segment, mark)
    /// that is not what it should be, with the fix every such error shares.
    pub fn damaged(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::bad_data(subject, problem).fix(DAMAGED_FIX)
    }
    /// `subject`, a required input, does not exist.
    pub fn no_input(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoInput, subject, problem)
    }
    /// `subject`, an output, cannot be created or would clobber something.
    pub fn cant_create(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::CantCreate, subject, problem)
    }
    /// `subject` is held by someone else; retrying later may work.
    pub fn busy(subject: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, subject, problem)
    }
    /// `subject` holds a configuration or version the operator must change.
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
    /// A SQLite failure on the database at `path`, classed by SQLite's
    /// error code (busy, corrupt, cannot open, else I/O).
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
    /// Tell the operator what to do about it.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
    /// Name the failure; the kind, and so the exit code, becomes the code's.
    /// The error was built with that kind already (checked in debug builds),
    /// so a call site reads true.
    pub fn code(mut self, code: ErrorCode) -> Self {
        debug_assert_eq!(self.kind, code.kind(), "{code} built as another kind");
        self.kind = code.kind();
        self.code = code;
        self
    }
    /// Name the failure but keep the kind the error was built with: only
    /// where one event covers failures of different classes and the exit
    /// code must say which (an `--only` name missing from the chosen
    /// snapshot rather than the repository; a pin failing for a reason
    /// other than the write lock; a restored database whose check could not
    /// run, still reported as damage).
    pub fn code_keeping_kind(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }
    /// Mark the failure as one that may pass if the request is made again.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    /// An I/O failure becomes an [`Error`] about `path` ([`Error::io`]).
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Attach a path to a `rusqlite::Result`.
pub trait SqlContext<T> {
    /// A SQLite failure becomes an [`Error`] about the database at `path`
    /// ([`Error::sqlite`]).
    fn at_db(self, path: &Path) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn at_db(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::sqlite(path, e))
    }
}
