//! Restore drills: proof that a backup restores, kept in the repository.
//!
//! A drill restores a [`Selection`] into a scratch directory with
//! [`Target::Dir`]'s layout (each source at `<scratch>` + its absolute
//! original path), runs `integrity_check` on every restored database and
//! checks every restored file against its manifest, then starts a copy of
//! the service on the scratch copy and runs the operator's smoke checks
//! (`sql`, `http`, `command`), stops the service whatever happened, removes
//! the scratch copy unless asked to keep it, and stores one [`DrillRecord`]
//! under `drills/<time>-<hash>` (docs/FORMAT.md, "Drill records"): seed
//! 003's drill log, kept where the backups are.
//!
//! A failed check is an outcome, not an error: [`run`] returns a report
//! whose [`Outcome`] says so, and the record is written all the same. Only
//! what stops a drill before anything is restored (a scratch directory in
//! the way, no snapshot) and a restore that failed for a reason that may
//! pass on its own (a store that did not answer) are errors.
//!
//! Records are written without the writer lock, as operations log records
//! are: named by time and content, written once by one `Storage::write`,
//! never replaced and referred to by nothing, so two hosts drilling at once
//! cannot disturb each other, and a drill never waits for a backup.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::commands::restore::{RestoreOptions, Selection, Target};
use crate::error::{Error, ErrorCode, IoContext, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::keys;
use crate::repo::manifest::{Entry, EntryKind, Source};

/// The record's `format` field; any other value is refused.
pub const RECORD_FORMAT: u32 = 1;
/// Records are small JSON, compressed like manifests.
const LEVEL: i32 = 3;
/// A check's time limit when the configuration gives none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service gets to stop (after `stop`, then after SIGTERM)
/// before the next, harder step.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits look at the clock, the interrupt flag and children.
const POLL: Duration = Duration::from_millis(25);
/// A check's `detail` is one line, at most this long.
const DETAIL_MAX: usize = 400;
/// Where, inside the scratch directory, the service's and the commands'
/// output is written (kept with `--keep`).
pub const LOG_DIR: &str = ".lifeboat-drill";
/// The variable naming the scratch directory to the service and commands.
pub const DIR_VAR: &str = "LIFEBOAT_DRILL_DIR";

/// What one smoke check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Run `query` on a restored database (a source's name, or a
    /// database's original absolute path) and compare the first column of
    /// its first row, as text, with `expect`; without `expect` the query
    /// must return a row.
    Sql {
        /// Source name, or original absolute path, of the database.
        database: String,
        /// The query.
        query: String,
        /// The first column of the first row, as text (`NULL` for null,
        /// hex for a blob).
        expect: Option<String>,
    },
    /// `GET url` must answer `expect_status` (redirects are not
    /// followed). Refused connections and 502/503/504 are retried until the
    /// timeout: the service may still be starting.
    Http {
        /// The URL, usually the drill copy of the service on loopback.
        url: String,
        /// The status wanted, e.g. 200.
        expect_status: u16,
    },
    /// `sh -c command` must exit 0.
    Command {
        /// The shell command.
        command: String,
    },
}

/// One configured smoke check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// How the record names it.
    pub name: String,
    /// What it does.
    pub kind: CheckKind,
    /// How long it may take.
    pub timeout: Duration,
}

/// The copy of the service the checks talk to: started on the scratch copy
/// before the smoke checks and stopped after them, whatever happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `sh -c start`, in its own process group, in the scratch directory,
    /// with [`DIR_VAR`] set; it keeps running (it is the service).
    pub start: String,
    /// `sh -c stop` to stop it; then (or without one) SIGTERM to its process
    /// group, then SIGKILL.
    pub stop: Option<String>,
    /// How long each stopping step may take.
    pub stop_timeout: Duration,
}

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The scratch directory: created if missing, else it must be empty.
    pub scratch: PathBuf,
    /// Keep the scratch copy afterwards (its path is in the report).
    pub keep: bool,
    /// The smoke checks, in order.
    pub checks: Vec<Check>,
    /// The service to start for them, if any.
    pub service: Option<Service>,
    /// What was asked for, as the record shows it (`latest`, an id, `at
    /// <time>`).
    pub point: String,
    /// Paths the scratch directory must not lie inside, besides the
    /// selection's own sources: the configuration's sources, a local
    /// repository.
    pub protected: Vec<PathBuf>,
    /// Refuse databases whose schema version is above this.
    pub max_schema_version: Option<i64>,
    /// Free text for the record's notes.
    pub notes: Vec<String>,
    /// Who runs it, as the record says.
    pub user: String,
    /// Set (from a signal handler, say) to stop the drill at its next step:
    /// the service is stopped, the scratch removed and the record written as
    /// [`Outcome::Interrupted`]. A restore in progress finishes first.
    pub interrupt: Arc<AtomicBool>,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// Stopped by [`DrillOptions::interrupt`] before every check ran.
    Interrupted,
}

/// What a check result checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckClass {
    /// The restore itself.
    Restore,
    /// `PRAGMA integrity_check` on one restored database.
    Integrity,
    /// One restored source's files against its manifest.
    Files,
    /// Starting the copy of the service.
    Service,
    /// A configured `sql` check.
    Sql,
    /// A configured `http` check.
    Http,
    /// A configured `command` check.
    Command,
}

/// One line of the drill log's "Validation".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// What it is called (a configured check's name, `integrity app.db`).
    pub name: String,
    /// What kind of check.
    pub kind: CheckClass,
    /// Pass or fail.
    pub passed: bool,
    /// One line: what was seen.
    pub detail: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// One source the drill restored, and from which point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrilledSource {
    /// The source's name.
    pub name: String,
    /// `sqlite`, `directory` or `file`.
    pub kind: String,
    /// The snapshot (or replication base) it came from, hex.
    pub snapshot: String,
    /// When that snapshot was taken (RFC 3339 as stored).
    #[serde(with = "crate::rfc3339")]
    pub snapshot_time: jiff::Timestamp,
    /// For a replicated database replayed past its base: the commit it
    /// landed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<u64>,
    /// When the restored state is as of (RFC 3339 as stored).
    #[serde(with = "crate::rfc3339")]
    pub as_of: jiff::Timestamp,
}

/// One drill, as stored (compact JSON inside the envelope): seed 003's
/// restore drill log (date, environment, backup source, restore target,
/// validation, notes) plus what a machine needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRecord {
    /// Always [`RECORD_FORMAT`] in a record this Lifeboat writes or accepts.
    pub format: u32,
    /// RFC 3339, UTC: when the drill ended.
    pub time: String,
    /// Host the drill ran on.
    pub host: String,
    /// Who ran it.
    pub user: String,
    /// Version of the Lifeboat that ran it.
    pub lifeboat_version: String,
    /// What was asked for: `latest`, a snapshot id, `at <time>`.
    pub point: String,
    /// Pass, fail or interrupted.
    pub result: Outcome,
    /// Every source restored, with its point.
    pub sources: Vec<DrilledSource>,
    /// Where it was restored (the scratch directory).
    pub scratch: String,
    /// Whether the scratch copy was kept.
    pub kept: bool,
    /// Every check, in the order run: the restore, integrity and files per
    /// source, the service's start, then the configured checks.
    pub checks: Vec<CheckResult>,
    /// From the start of the drill to its record.
    pub duration_ms: u64,
    /// Anything unexpected, one line each.
    pub notes: Vec<String>,
}

impl DrillRecord {
    /// The stored form, compact JSON (before the envelope); the key is
    /// derived from these bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    /// `format` is checked first, so a newer record is refused as such
    /// rather than as a damaged one.
    pub fn from_json(json: &[u8], what: &str) -> Result<DrillRecord> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let bad = |e: serde_json::Error| Error::bad_data(what, format!("drill record: {e}"));
        let f: Format = serde_json::from_slice(json).map_err(bad)?;
        if f.format != RECORD_FORMAT {
            return Err(
                Error::config(what, format!("drill record format {} is not supported", f.format))
                    .fix("upgrade Lifeboat"),
            );
        }
        serde_json::from_slice(json).map_err(bad)
    }

    /// `time` parsed; `None` when it is not RFC 3339.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }

    /// Checks that passed, and all checks.
    pub fn passed_of(&self) -> (usize, usize) {
        (self.checks.iter().filter(|c| c.passed).count(), self.checks.len())
    }
}

/// What [`run`] did: the record, and where it is stored.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The record, as stored.
    #[serde(flatten)]
    pub record: DrillRecord,
    /// Its key, `drills/<time>-<hash>`; `None` when it could not be written.
    pub key: Option<String>,
    /// Why it could not be written, one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
}

/// The default scratch directory of one drill: `<cache>/lifeboat/drill/
/// <time>-<unique>` (the per-user cache, as `HostDirs::cache`).
pub fn default_scratch(cache: &Path) -> PathBuf {
    default_scratch_in(&default_scratch_parent(cache))
}

/// Where default scratch directories go: `<cache>/lifeboat/drill`.
pub fn default_scratch_parent(cache: &Path) -> PathBuf {
    cache.join("lifeboat/drill")
}

/// A new scratch directory's name in `parent`: `<time>-<unique>`.
pub fn default_scratch_in(parent: &Path) -> PathBuf {
    parent.join(format!(
        "{}-{}",
        crate::fsutil::compact_timestamp(jiff::Timestamp::now()),
        crate::fsutil::unique_suffix()
    ))
}

/// The scratch directory, made ready; removes only what the drill put
/// there. Held under an `flock` for the drill's life, so [`sweep_stale`]
/// can tell the copy of a killed drill from one at work.
struct Scratch {
    path: PathBuf,
    created: bool,
    _lock: fs::File,
}

/// Marks a scratch copy kept on purpose (`--keep`): never swept.
const KEPT_MARKER: &str = "kept";

/// Remove the scratch copies that drills killed before they could clean up
/// (SIGKILL, a crash) left in `parent`, the default scratch parent: every
/// directory whose lock nobody holds and that was not kept on purpose.
/// Returns what was removed.
pub fn sweep_stale(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.join(LOG_DIR).join(KEPT_MARKER).exists() {
            continue;
        }
        let Ok(dir) = open_dir(&path) else { continue };
        if !try_lock(&dir) {
            continue; // a drill at work
        }
        make_writable(&path);
        match crate::fsutil::remove_file_or_tree(&path) {
            Ok(()) => {
                tracing::info!(event = "drill.stale_scratch_removed", path = %path.display());
                removed.push(path);
            }
            Err(err) => tracing::warn!(event = "drill.scratch_not_removed", path = %path.display(), error = %err),
        }
    }
    removed
}

/// A directory opened for its lock: never follows a link.
fn open_dir(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn try_lock(f: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Scratch {
    /// Refusals first (inside a protected path: 64; not empty: 73), then
    /// created owner-only when missing.
    fn prepare(dir: &Path, protected: &[PathBuf]) -> Result<Scratch> {
        let path = crate::fsutil::absolute_normalized(dir);
        for p in protected {
            let p = crate::fsutil::absolute_normalized(p);
            if path.starts_with(&p) {
                return Err(Error::usage(format!(
                    "scratch directory {} lies inside {}, which the drill must not touch",
                    path.display(),
                    p.display()
                ))
                .fix("choose a scratch directory outside every source and the repository (--scratch DIR)")
                .code(ErrorCode::DrillScratchOverlaps));
            }
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let mut entries = fs::read_dir(&path).at(&path)?;
                if entries.next().is_some() {
                    return Err(Error::cant_create(path.display(), "the scratch directory is not empty")
                        .fix("give an empty or new directory with --scratch, or leave --scratch out")
                        .code(ErrorCode::DrillScratchNotEmpty));
                }
                let lock = locked(&path)?;
                Ok(Scratch {
                    path,
                    created: false,
                    _lock: lock,
                })
            }
            Ok(_) => Err(Error::cant_create(path.display(), "is not a directory")
                .fix("give an empty or new directory with --scratch, or leave --scratch out")
                .code(ErrorCode::DrillScratchNotEmpty)),
            Err(_) => {
                crate::fsutil::create_private_dir_all(&path).at(&path)?;
                let lock = locked(&path)?;
                Ok(Scratch {
                    path,
                    created: true,
                    _lock: lock,
                })
            }
        }
    }

    /// Mark the copy as kept on purpose, so no later drill sweeps it.
    fn mark_kept(&self) {
        let dir = self.path.join(LOG_DIR);
        let _ = crate::fsutil::create_private_dir_all(&dir).and_then(|()| fs::write(dir.join(KEPT_MARKER), b""));
    }

    /// Remove everything the drill put there (and the directory, if the
    /// drill made it). Restored directories may be read-only: made writable
    /// first.
    fn remove(&self) -> std::io::Result<()> {
        make_writable(&self.path);
        if self.created {
            return crate::fsutil::remove_file_or_tree(&self.path);
        }
        for e in fs::read_dir(&self.path)? {
            crate::fsutil::remove_file_or_tree(&e?.path())?;
        }
        Ok(())
    }
}

/// `path`, a directory, locked for this drill.
fn locked(path: &Path) -> Result<fs::File> {
    let f = open_dir(path).at(path)?;
    if !try_lock(&f) {
        return Err(
            Error::busy(path.display(), "another drill is using this scratch directory")
                .fix("give another --scratch, or wait for it"),
        );
    }
    Ok(f)
}

/// Every directory under `dir` (links not followed) made owner-writable.
fn make_writable(dir: &Path) {
    let Ok(m) = fs::symlink_metadata(dir) else { return };
    if !m.is_dir() {
        return;
    }
    let mode = m.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            make_writable(&e.path());
        }
    }
}

/// Restore `selection` into `opts.scratch`, check it, run the smoke
/// checks against it and record the drill in `repo` (see the module
/// documentation). Errors only before anything is restored, and for a
/// restore that failed for a reason that may pass (`Error::temporary`).
pub fn run(
    repo: &Repository,
    selection: &Selection,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let started = Instant::now();
    let mut protected = opts.protected.clone();
    protected.extend(selection.picks.iter().map(|p| PathBuf::from(p.source.path())));
    let scratch = Scratch::prepare(&opts.scratch, &protected)?;
    let mut drill = Drill {
        opts,
        scratch: &scratch,
        checks: Vec::new(),
        notes: opts.notes.clone(),
        sources: Vec::new(),
        service: None,
    };
    if let Err(e) = drill.restore_and_check(repo, selection, progress) {
        // Only a temporary failure comes here: nothing was proven either
        // way, so no record; the scratch copy goes.
        let _ = scratch.remove();
        return Err(e);
    }
    drill.stop_service();
    let interrupted = opts.interrupt.load(Ordering::SeqCst);
    if interrupted {
        drill.notes.push("interrupted before every check ran".into());
    }
    let kept = opts.keep;
    if kept {
        scratch.mark_kept();
    }
    if !kept && let Err(e) = scratch.remove() {
        tracing::warn!(event = "drill.scratch_not_removed", path = %scratch.path.display(), error = %e);
        drill.notes.push(one_line(&format!(
            "scratch {} not removed: {e}",
            scratch.path.display()
        )));
    }
    let result = if interrupted {
        Outcome::Interrupted
    } else if drill.checks.iter().all(|c| c.passed) {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    let record = DrillRecord {
        format: RECORD_FORMAT,
        time: jiff::Timestamp::now().to_string(),
        host: crate::fsutil::hostname(),
        user: opts.user.clone(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        point: opts.point.clone(),
        result,
        sources: drill.sources,
        scratch: scratch.path.display().to_string(),
        kept,
        checks: drill.checks,
        duration_ms: started.elapsed().as_millis() as u64,
        notes: drill.notes,
    };
    let (key, record_error) = match append(repo, &record) {
        Ok(k) => {
            tracing::info!(event = "drill.recorded", key = %k, result = ?record.result);
            (Some(k), None)
        }
        Err(e) => {
            tracing::warn!(event = "drill.record_failed", error = %e, "the drill's record was not written");
            (None, Some(one_line(&e.to_string())))
        }
    };
    Ok(DrillReport {
        record,
        key,
        record_error,
    })
}

/// One drill under way.
struct Drill<'a> {
    opts: &'a DrillOptions,
    scratch: &'a Scratch,
    checks: Vec<CheckResult>,
    notes: Vec<String>,
    sources: Vec<DrilledSource>,
    service: Option<Running>,
}

impl Drill<'_> {
    fn interrupted(&self) -> bool {
        self.opts.interrupt.load(Ordering::SeqCst)
    }

    fn push(&mut self, name: String, kind: CheckClass, passed: bool, detail: String, took: Instant) {
        let detail = one_line(&detail);
        // Info, not a warning: the report (and its record) carries every
        // failure; a log line would say it twice.
        tracing::info!(event = "drill.check", check = %name, passed, "{detail}");
        self.checks.push(CheckResult {
            name,
            kind,
            passed,
            detail,
            duration_ms: took.elapsed().as_millis() as u64,
        });
    }

    /// Every step in order; stops early when interrupted or when the
    /// restore failed. `Err` only for a temporary restore failure.
    fn restore_and_check(&mut self, repo: &Repository, selection: &Selection, progress: &dyn Progress) -> Result<()> {
        if self.interrupted() {
            return Ok(());
        }
        let t = Instant::now();
        let restore_opts = RestoreOptions {
            target: Target::Dir(self.scratch.path.clone()),
            force: false,
            max_schema_version: self.opts.max_schema_version,
            keep: Vec::new(),
            skip_integrity_check: false,
        };
        let report = match crate::commands::restore::restore(repo, selection, &restore_opts, progress) {
            Ok(r) => r,
            Err(e) if e.temporary => return Err(e),
            Err(e) => {
                let detail = format!("{e} (event={}, exit {})", e.code, e.kind.exit_code());
                self.push("restore".into(), CheckClass::Restore, false, detail, t);
                return Ok(());
            }
        };
        let total: u64 = report.restored.iter().map(|r| r.bytes).sum();
        self.push(
            "restore".into(),
            CheckClass::Restore,
            true,
            format!(
                "{} source(s), {total} bytes into {}",
                report.restored.len(),
                self.scratch.path.display()
            ),
            t,
        );
        let mut databases: Vec<(String, PathBuf)> = Vec::new();
        for r in &report.restored {
            let Some(pick) = selection.picks.iter().find(|p| p.source.name() == r.name) else {
                continue;
            };
            self.sources.push(DrilledSource {
                name: r.name.clone(),
                kind: r.kind.to_string(),
                snapshot: r.snapshot.clone(),
                snapshot_time: r.snapshot_time,
                txid: r.point.as_ref().map(|p| p.txid),
                as_of: r.point.as_ref().map_or(r.snapshot_time, |p| p.time),
            });
            let dest = PathBuf::from(&r.path);
            if matches!(pick.source, Source::Sqlite(_)) {
                databases.push((r.name.clone(), dest.clone()));
            }
            self.verify_source(&pick.source, &dest, r.point.as_ref(), &mut databases);
        }
        if self.interrupted() {
            return Ok(());
        }
        // Without smoke checks a service would only be started to be
        // stopped: nothing to learn from it.
        if let Some(service) = self.opts.service.clone().filter(|_| !self.opts.checks.is_empty()) {
            self.start_service(&service);
        }
        for (i, check) in self.opts.checks.iter().enumerate() {
            if self.interrupted() {
                return Ok(());
            }
            let t = Instant::now();
            let (class, passed, detail) = match &check.kind {
                CheckKind::Sql {
                    database,
                    query,
                    expect,
                } => {
                    let (p, d) = self.sql(database, query, expect.as_deref(), check.timeout, &databases);
                    (CheckClass::Sql, p, d)
                }
                CheckKind::Http { url, expect_status } => {
                    let (p, d) = self.http(url, *expect_status, check.timeout);
                    (CheckClass::Http, p, d)
                }
                CheckKind::Command { command } => {
                    let (p, d) = self.command(i, command, check.timeout);
                    (CheckClass::Command, p, d)
                }
            };
            self.push(check.name.clone(), class, passed, detail, t);
        }
        Ok(())
    }

    /// `integrity_check` on every database of `source` and its files against
    /// the manifest, on the copy in place (not the staged one restore
    /// checked): what the service will read.
    fn verify_source(
        &mut self,
        source: &Source,
        dest: &Path,
        replayed: Option<&crate::pitr::Landed>,
        databases: &mut Vec<(String, PathBuf)>,
    ) {
        let name = source.name().to_string();
        match source {
            Source::Sqlite(db) => {
                self.integrity(&name, dest);
                let t = Instant::now();
                let (passed, detail) = match replayed {
                    // The manifest's hash is the base's; every commit
                    // applied was checked against its segment.
                    Some(p) if p.commits_applied > 0 => (
                        true,
                        format!(
                            "replayed to txid {} past its base (txid {}): checked against the stored segments, not the base's hash",
                            p.txid, p.base_txid
                        ),
                    ),
                    _ => match check_file(dest, db.size, Some(&db.blake3)) {
                        None => (true, format!("{} bytes, BLAKE3 matches the manifest", db.size)),
                        Some(problem) => (false, problem),
                    },
                };
                self.push(format!("files {name}"), CheckClass::Files, passed, detail, t);
            }
            Source::Directory(d) => {
                for e in d.entries.iter().filter(|e| e.database.is_some()) {
                    let path = entry_path(dest, e);
                    let label = format!("{name}/{}", e.path);
                    self.integrity(&label, &path);
                    databases.push((label, path));
                }
                self.check_entries(&name, dest, &d.entries);
            }
            Source::File(f) => self.check_entries(&name, dest, std::slice::from_ref(&f.entry)),
        }
    }

    fn integrity(&mut self, name: &str, path: &Path) {
        let t = Instant::now();
        let (passed, detail) = match crate::sqlite::integrity_check(path) {
            Ok(()) => (true, "ok".to_string()),
            Err(e) => (false, e.to_string()),
        };
        self.push(format!("integrity {name}"), CheckClass::Integrity, passed, detail, t);
    }

    fn check_entries(&mut self, name: &str, dest: &Path, entries: &[Entry]) {
        let t = Instant::now();
        let mut problems = Vec::new();
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in entries {
            let path = entry_path(dest, e);
            let problem = match e.kind {
                EntryKind::Dir => match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => None,
                    Ok(_) => Some("is not a directory".to_string()),
                    Err(err) => Some(err.to_string()),
                },
                EntryKind::Symlink => match fs::read_link(&path) {
                    Ok(target) if Some(target.to_string_lossy().as_ref()) == e.target.as_deref() => None,
                    Ok(target) => Some(format!("links to {}, not {:?}", target.display(), e.target)),
                    Err(err) => Some(err.to_string()),
                },
                EntryKind::File => {
                    files += 1;
                    bytes += e.size;
                    check_file(&path, e.size, e.blake3.as_ref())
                }
            };
            if let Some(p) = problem {
                problems.push(format!("{}: {p}", path.display()));
            }
        }
        let (passed, detail) = match problems.len() {
            0 => (
                true,
                format!(
                    "{} entries ({files} files, {bytes} bytes) match the manifest",
                    entries.len()
                ),
            ),
            n => (
                false,
                format!(
                    "{n} of {} entries differ from the manifest: {}",
                    entries.len(),
                    problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                ),
            ),
        };
        self.push(format!("files {name}"), CheckClass::Files, passed, detail, t);
    }

    /// Start the service; its output goes to `<scratch>/.lifeboat-drill/service.log`.
    fn start_service(&mut self, service: &Service) {
        let t = Instant::now();
        let log = self.log_path("service");
        match spawn_shell(&service.start, &self.scratch.path, log.as_deref()) {
            Ok(child) => {
                let detail = format!("started `{}` (pid {})", service.start, child.id());
                self.service = Some(Running {
                    child,
                    spec: service.clone(),
                    log,
                    reaped: false,
                });
                self.push("start service".into(), CheckClass::Service, true, detail, t);
            }
            Err(e) => self.push(
                "start service".into(),
                CheckClass::Service,
                false,
                format!("`{}` did not start: {e}", service.start),
                t,
            ),
        }
    }

    /// Stop the service, if one runs: `stop`, then SIGTERM, then SIGKILL
    /// to its process group, each given `stop_timeout`.
    fn stop_service(&mut self) {
        let Some(mut running) = self.service.take() else { return };
        let spec = running.spec.clone();
        let mut stopped = running.exited();
        if let Some(status) = stopped {
            self.notes.push(format!(
                "the service had already exited ({}) when the checks ended",
                describe(status)
            ));
        }
        if stopped.is_none()
            && let Some(stop) = &spec.stop
        {
            let log = self.log_path("stop");
            match spawn_shell(stop, &self.scratch.path, log.as_deref()) {
                Ok(mut c) => {
                    let deadline = Instant::now() + spec.stop_timeout;
                    if wait_child(&mut c, deadline, None).is_none() {
                        kill_group(&c, libc::SIGKILL);
                        self.notes.push(format!(
                            "`{stop}` did not finish within {:?}; killed",
                            spec.stop_timeout
                        ));
                    }
                    reap(&mut c);
                }
                Err(e) => self.notes.push(format!("`{stop}` did not start: {e}")),
            }
            stopped = wait_child(&mut running.child, Instant::now() + spec.stop_timeout, None);
        }
        if stopped.is_none() {
            kill_group(&running.child, libc::SIGTERM);
            stopped = wait_child(&mut running.child, Instant::now() + spec.stop_timeout, None);
        }
        if stopped.is_none() {
            self.notes.push(format!(
                "the service did not stop within {:?} of SIGTERM; killed",
                spec.stop_timeout
            ));
        }
        // What it left running in its group goes too (its leader, unreaped,
        // keeps the group's id from being reused until then).
        kill_group(&running.child, libc::SIGKILL);
        reap(&mut running.child);
        running.reaped = true;
        // What the service said is what explains a failed check.
        if self.checks.iter().any(|c| !c.passed)
            && let Some(tail) = running.log.as_deref().map(tail_of).filter(|t| !t.is_empty())
        {
            self.notes.push(format!("service output ends: {tail}"));
        }
        tracing::info!(event = "drill.service_stopped", pid = running.child.id());
    }

    /// `<scratch>/.lifeboat-drill/<name>.log`, `None` when it cannot be made
    /// (output then goes nowhere; the check itself still runs).
    fn log_path(&self, name: &str) -> Option<PathBuf> {
        let dir = self.scratch.path.join(LOG_DIR);
        crate::fsutil::create_private_dir_all(&dir).ok()?;
        Some(dir.join(format!("{name}.log")))
    }

    fn sql(
        &self,
        database: &str,
        query: &str,
        expect: Option<&str>,
        timeout: Duration,
        databases: &[(String, PathBuf)],
    ) -> (bool, String) {
        let path = match databases.iter().find(|(n, _)| n == database) {
            Some((_, p)) => p.clone(),
            None if database.starts_with('/') => self
                .scratch
                .path
                .join(Path::new(database).strip_prefix("/").unwrap_or(Path::new(database))),
            None => {
                let names: Vec<&str> = databases.iter().map(|(n, _)| n.as_str()).collect();
                return (
                    false,
                    format!(
                        "no restored database named `{database}` (restored: {})",
                        names.join(", ")
                    ),
                );
            }
        };
        match run_sql(&path, query, timeout, &self.opts.interrupt) {
            Ok(None) => (false, format!("`{query}` returned no row")),
            Ok(Some(got)) => match expect {
                None => (true, format!("`{query}` returned `{got}`")),
                Some(want) if want == got => (true, format!("`{query}` returned `{got}`")),
                Some(want) => (false, format!("`{query}` returned `{got}`, expected `{want}`")),
            },
            Err(e) => (false, format!("`{query}` on {}: {e}", path.display())),
        }
    }

    fn http(&mut self, url: &str, expect: u16, timeout: Duration) -> (bool, String) {
        // reqwest is built without a default TLS provider (as for S3).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
        {
            Ok(c) => c,
            Err(e) => return (false, format!("GET {url}: {e}")),
        };
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        loop {
            if self.interrupted() {
                return (false, format!("GET {url}: interrupted ({last})"));
            }
            if let Some(s) = self.service.as_mut().and_then(|r| r.exited()) {
                return (
                    false,
                    format!(
                        "GET {url}: the service exited ({}) before answering ({last})",
                        describe(s)
                    ),
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (false, format!("GET {url}: {last} within {timeout:?}"));
            }
            match client.get(url).timeout(left).send() {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == expect {
                        return (true, format!("GET {url}: {status}"));
                    }
                    // A service still warming up answers 502-504; anything
                    // else is its answer.
                    if !matches!(status, 502..=504) {
                        return (false, format!("GET {url}: {status}, expected {expect}"));
                    }
                    last = format!("{status}, expected {expect}");
                }
                Err(e) if e.is_connect() => last = format!("no answer ({})", error_chain(&e)),
                Err(e) => return (false, format!("GET {url}: {}", error_chain(&e))),
            }
            std::thread::sleep(POLL * 4);
        }
    }

    fn command(&self, index: usize, command: &str, timeout: Duration) -> (bool, String) {
        let log = self.log_path(&format!("check-{}", index + 1));
        let mut child = match spawn_shell(command, &self.scratch.path, log.as_deref()) {
            Ok(c) => c,
            Err(e) => return (false, format!("`{command}` did not start: {e}")),
        };
        let status = wait_child(&mut child, Instant::now() + timeout, Some(&self.opts.interrupt));
        kill_group(&child, libc::SIGKILL);
        reap(&mut child);
        let tail = log.as_deref().map(tail_of).unwrap_or_default();
        let output = if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        };
        match status {
            Some(0) => (true, format!("`{command}` exited 0")),
            Some(s) => (false, format!("`{command}` {}{output}", describe(s))),
            None if self.interrupted() => (false, format!("`{command}` interrupted{output}")),
            None => (
                false,
                format!("`{command}` did not finish within {timeout:?}; killed{output}"),
            ),
        }
    }
}

/// A started service.
struct Running {
    child: Child,
    spec: Service,
    log: Option<PathBuf>,
    /// Once reaped its id may name another process: never signalled again.
    reaped: bool,
}

impl Running {
    /// Its wait status if its leader has exited (left unreaped).
    fn exited(&mut self) -> Option<i32> {
        exited_unreaped(&self.child)
    }
}

impl Drop for Running {
    /// A drill that ends any other way (a panic) still leaves nothing
    /// running.
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(&self.child, libc::SIGKILL);
            reap(&mut self.child);
        }
    }
}

/// `sh -c script` in `dir`, in a process group of its own (so the whole
/// service can be signalled, and a terminal's ^C reaches only Lifeboat,
/// which stops it in order), with [`DIR_VAR`] set, stdin from /dev/null
/// and output appended to `log`. It receives SIGTERM if Lifeboat dies.
fn spawn_shell(script: &str, dir: &Path, log: Option<&Path>) -> std::io::Result<Child> {
    let out = match log {
        Some(p) => Stdio::from(fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => Stdio::null(),
    };
    let err = match log {
        Some(p) => Stdio::from(fs::OpenOptions::new().append(true).open(p)?),
        None => Stdio::null(),
    };
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    c.spawn()
}

/// The wait status of `child` if it has exited, without reaping it: while
/// it is a zombie its pid, the process group's id, cannot be reused, so
/// signalling the group stays safe.
fn exited_unreaped(child: &Child) -> Option<i32> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid and si_status are valid after a WEXITED report.
    if rc != 0 || unsafe { info.si_pid() } == 0 {
        return None;
    }
    let status = unsafe { info.si_status() };
    Some(match info.si_code {
        libc::CLD_EXITED => status,
        _ => -status,
    })
}

/// Wait for `child` to exit until `deadline` (or `interrupt`), without
/// reaping it; its exit code (minus the signal's number when a signal
/// ended it).
fn wait_child(child: &mut Child, deadline: Instant, interrupt: Option<&AtomicBool>) -> Option<i32> {
    loop {
        if let Some(s) = exited_unreaped(child) {
            return Some(s);
        }
        if Instant::now() >= deadline || interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn kill_group(child: &Child, sig: libc::c_int) {
    // SAFETY: the group is the child's own (process_group(0)), and the
    // child is not reaped yet, so its id names no other group.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, sig);
    }
}

fn reap(child: &mut Child) {
    let _ = child.wait();
}

fn describe(status: i32) -> String {
    if status < 0 {
        format!("ended by signal {}", -status)
    } else {
        format!("exited {status}")
    }
}

/// The end of a log, one line: what a failed command said last.
fn tail_of(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(DETAIL_MAX as u64 / 2)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    // Cut mid-log: start at the first whole word.
    let text = match (len > DETAIL_MAX as u64 / 2, text.find(char::is_whitespace)) {
        (true, Some(i)) => &text[i..],
        _ => &text[..],
    };
    one_line(text.trim())
}

/// Whitespace runs (newlines too) as one space, cut at [`DETAIL_MAX`].
fn one_line(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > DETAIL_MAX {
        let mut cut = DETAIL_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn entry_path(root: &Path, e: &Entry) -> PathBuf {
    if e.path.is_empty() {
        root.to_path_buf()
    } else {
        root.join(&e.path)
    }
}

/// `None` when `path` is a regular file of `size` bytes whose BLAKE3 is
/// `hash`; else what differs.
fn check_file(path: &Path, size: u64, hash: Option<&crate::id::Id>) -> Option<String> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if !m.is_file() {
        return Some("is not a regular file".into());
    }
    if m.len() != size {
        return Some(format!("{} bytes, the manifest says {size}", m.len()));
    }
    let hash = hash?;
    let mut hasher = blake3::Hasher::new();
    let read = fs::File::open(path).and_then(|mut f| hasher.update_reader(&mut f).map(|_| ()));
    if let Err(e) = read {
        return Some(e.to_string());
    }
    let got = crate::id::Id(*hasher.finalize().as_bytes());
    (got != *hash).then(|| format!("BLAKE3 {} differs from the manifest's {}", got.short(), hash.short()))
}

/// The first column of the first row of `query` as text; `None` for no
/// row. Interrupted at `timeout` (and when `interrupt` is set); waits for
/// a lock the service holds up to the same time.
fn run_sql(path: &Path, query: &str, timeout: Duration, interrupt: &Arc<AtomicBool>) -> Result<Option<String>> {
    use crate::error::SqlContext;
    use rusqlite::{OpenFlags, types::ValueRef};
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).at_db(path)?;
    conn.busy_timeout(timeout).at_db(path)?;
    let handle = conn.get_interrupt_handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let interrupt = interrupt.clone();
    let deadline = Instant::now() + timeout;
    let watchdog = std::thread::spawn(move || {
        loop {
            match done_rx.recv_timeout(POLL) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if Instant::now() >= deadline || interrupt.load(Ordering::SeqCst) {
                handle.interrupt();
                return;
            }
        }
    });
    let result = (|| {
        let mut stmt = conn.prepare(query)?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let text = match row.get_ref(0)? {
            ValueRef::Null => "NULL".to_string(),
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(f) => f.to_string(),
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            ValueRef::Blob(b) => hex::encode(b),
        };
        Ok(Some(text))
    })();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    result.map_err(|e: rusqlite::Error| {
        if Instant::now() >= deadline {
            Error::busy(path.display(), format!("did not finish within {timeout:?}"))
        } else {
            Error::sqlite(path, e)
        }
    })
}

/// Store `record`; returns its key.
pub fn append(repo: &Repository, record: &DrillRecord) -> Result<String> {
    let time = record
        .timestamp()
        .ok_or_else(|| Error::usage(format!("drill record time `{}` is not RFC 3339", record.time)))?;
    let json = record.to_json();
    let nanos = u64::try_from(time.as_nanosecond().max(0)).unwrap_or(u64::MAX);
    let key = keys::drill(nanos, &json);
    repo.write_drill_record(&key, &codec::encode(&json, LEVEL))?;
    Ok(key)
}

/// Every drill record at or after `since` (all without it), oldest first,
/// each checked against its key. Records before `since` are not
/// downloaded; a record that cannot be read is an error naming its key.
pub fn list<S>(repo: &Repository<S>, since: Option<jiff::Timestamp>) -> Result<Vec<(String, DrillRecord)>> {
    let from = since.map_or(0, |t| u64::try_from(t.as_nanosecond().max(0)).unwrap_or(u64::MAX));
    let mut keys: Vec<(u64, String)> = repo
        .list_objects(keys::Kind::Drill)?
        .into_iter()
        .filter_map(|(key, _)| Some((keys::parse_drill(&key)?.0, key)))
        .filter(|(t, _)| *t >= from)
        .collect();
    keys.sort();
    read_records(repo, keys.into_iter().map(|(_, k)| k).collect())
}

/// The newest drill record, if any: one listing and one read (what `status`
/// shows).
pub fn latest<S>(repo: &Repository<S>) -> Result<Option<(String, DrillRecord)>> {
    let newest = repo
        .list_objects(keys::Kind::Drill)?
        .into_iter()
        .filter_map(|(key, _)| Some((keys::parse_drill(&key)?.0, key)))
        .max();
    Ok(match newest {
        Some((_, key)) => read_records(repo, vec![key])?.pop(),
        None => None,
    })
}

fn read_records<S>(repo: &Repository<S>, wanted: Vec<String>) -> Result<Vec<(String, DrillRecord)>> {
    let mut out = Vec::with_capacity(wanted.len());
    repo.read_objects(wanted.into_iter().map(|k| ((), k)).collect(), |(), key, raw| {
        let what = repo.object_name(&key);
        let json = codec::decode(&raw?, &what)?;
        let (nanos, hash) = keys::parse_drill(&key).expect("listed keys parse");
        if !keys::record_matches(hash, &json) {
            return Err(Error::damaged(&what, "drill record does not match its name"));
        }
        let record = DrillRecord::from_json(&json, &what)?;
        let at = record
            .timestamp()
            .map(|t| u64::try_from(t.as_nanosecond().max(0)).unwrap_or(u64::MAX));
        if at != Some(nanos) {
            return Err(Error::damaged(&what, "drill record time does not match its name"));
        }
        out.push((key, record));
        Ok(())
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoLocation;

    fn record(time: &str) -> DrillRecord {
        DrillRecord {
            format: RECORD_FORMAT,
            time: time.into(),
            host: "h".into(),
            user: "u".into(),
            lifeboat_version: "0".into(),
            point: "latest".into(),
            result: Outcome::Fail,
            sources: vec![],
            scratch: "/tmp/x".into(),
            kept: false,
            checks: vec![CheckResult {
                name: "up".into(),
                kind: CheckClass::Http,
                passed: false,
                detail: "GET /up: 404, expected 200".into(),
                duration_ms: 3,
            }],
            duration_ms: 10,
            notes: vec![],
        }
    }

    #[test]
    fn records_round_trip_and_are_checked_against_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let loc = RepoLocation::local(dir.path().join("repo"));
        Repository::init(&loc).unwrap();
        let repo = Repository::open(&loc).unwrap().indexed().unwrap();
        let late = append(&repo, &record("2026-01-02T00:00:01Z")).unwrap();
        let early = append(&repo, &record("2026-01-02T00:00:00Z")).unwrap();
        assert!(early.starts_with("drills/01767312000000000000-"), "{early}");
        let all = list(&repo, None).unwrap();
        assert_eq!(all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [&early, &late]);
        assert_eq!(all[0].1, record("2026-01-02T00:00:00Z"));
        assert_eq!(latest(&repo).unwrap().unwrap().0, late);
        let since = list(&repo, Some("2026-01-02T00:00:00.5Z".parse().unwrap())).unwrap();
        assert_eq!(since.len(), 1);

        // Changed behind its name: refused, naming the key.
        let json = record("2026-01-02T00:00:00Z").to_json();
        let mut other = record("2026-01-02T00:00:00Z");
        other.result = Outcome::Pass;
        assert_ne!(json, other.to_json());
        fs::write(dir.path().join("repo").join(&early), codec::encode(&other.to_json(), 3)).unwrap();
        let e = list(&repo, None).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
        assert!(e.subject.ends_with(&early), "{e}");
    }

    #[test]
    fn a_newer_format_is_a_config_error() {
        let mut v = serde_json::to_value(record("2026-01-01T00:00:00Z")).unwrap();
        v["format"] = 2.into();
        let e = DrillRecord::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Config);
        let mut v = serde_json::to_value(record("2026-01-01T00:00:00Z")).unwrap();
        v["surprise"] = 1.into();
        let e = DrillRecord::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
    }

    #[test]
    fn scratch_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("srv");
        fs::create_dir_all(src.join("data")).unwrap();
        let e = Scratch::prepare(&src.join("data/drill"), std::slice::from_ref(&src))
            .err()
            .unwrap();
        assert_eq!(e.code, ErrorCode::DrillScratchOverlaps);
        assert!(!src.join("data/drill").exists());
        fs::create_dir_all(dir.path().join("full")).unwrap();
        fs::write(dir.path().join("full/x"), "x").unwrap();
        let e = Scratch::prepare(&dir.path().join("full"), &[]).err().unwrap();
        assert_eq!(e.code, ErrorCode::DrillScratchNotEmpty);
        assert!(dir.path().join("full/x").exists());

        // An empty one is used and emptied, not removed; a new one removed.
        fs::create_dir_all(dir.path().join("empty")).unwrap();
        let s = Scratch::prepare(&dir.path().join("empty"), &[]).unwrap();
        fs::create_dir_all(s.path.join("a/b")).unwrap();
        fs::set_permissions(s.path.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        s.remove().unwrap();
        assert!(dir.path().join("empty").is_dir());
        assert_eq!(fs::read_dir(dir.path().join("empty")).unwrap().count(), 0);
        let s = Scratch::prepare(&dir.path().join("new/deeper"), &[]).unwrap();
        assert!(s.created);
        s.remove().unwrap();
        assert!(!dir.path().join("new/deeper").exists());
    }

    #[test]
    fn files_are_checked_against_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello").unwrap();
        let id = crate::id::Id(*blake3::hash(b"hello").as_bytes());
        assert_eq!(check_file(&p, 5, Some(&id)), None);
        let other = crate::id::Id(*blake3::hash(b"hellO").as_bytes());
        assert!(check_file(&p, 5, Some(&other)).unwrap().contains("differs"));
        assert!(check_file(&p, 6, Some(&id)).unwrap().contains("5 bytes"));
        assert!(check_file(dir.path(), 5, None).is_some());
        assert!(check_file(&dir.path().join("gone"), 5, None).is_some());
    }

    #[test]
    fn a_query_past_its_timeout_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")
            .unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let got = run_sql(&db, "SELECT x FROM t", Duration::from_secs(30), &flag).unwrap();
        assert_eq!(got.as_deref(), Some("7"));
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
        let e = run_sql(&db, endless, Duration::from_millis(200), &flag).unwrap_err();
        assert!(e.problem.contains("did not finish"), "{e}");
        // The drill's interrupt stops it too.
        flag.store(true, Ordering::SeqCst);
        assert!(run_sql(&db, endless, Duration::from_secs(3600), &flag).is_err());
    }

    #[test]
    fn details_are_one_bounded_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        let long = "é".repeat(DETAIL_MAX);
        assert!(one_line(&long).len() <= DETAIL_MAX + '…'.len_utf8());
    }
}
