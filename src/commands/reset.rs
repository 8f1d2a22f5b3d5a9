//! `reset`: clear a service's SQLite state so it starts fresh, and nothing
//! else. Databases and their sidecars are moved into
//! `<data-dir>/.lifeboat-reset-<time>/` rather than deleted, so even a
//! confirmed reset keeps a way back.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorCode, IoContext, Result};
use crate::fsutil::{compact_timestamp, sync_dir};

/// What [`reset`] moved aside (or, in a dry run, would move).
#[derive(Debug, serde::Serialize)]
pub struct ResetReport {
    /// The service's data directory, as given.
    pub data_dir: String,
    /// `true` unless `confirm` was given: nothing was moved.
    pub dry_run: bool,
    /// Files removed (or, in a dry run, that would be).
    pub files: Vec<String>,
    /// Where they went.
    pub moved_to: Option<String>,
    /// Databases a process holds open (`pid command`), which a reset
    /// with `--confirm` refuses; a dry run reports them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<String>,
}

/// File names a database is commonly given, for data dirs with no config.
const DB_SUFFIXES: [&str; 4] = [".db", ".sqlite", ".sqlite3", ".db3"];

/// `databases`: the configured database paths (only those inside `data_dir`
/// are touched); `None` when there is no configuration, and then every
/// top-level file in `data_dir` named like a database is a candidate.
pub fn reset(data_dir: &Path, databases: Option<&[PathBuf]>, confirm: bool) -> Result<ResetReport> {
    let meta = fs::metadata(data_dir).map_err(|e| Error::io(data_dir, e).fix("check --data-dir"))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("{} is not a directory", data_dir.display()))
            .fix("--data-dir takes the service's data directory"));
    }
    let candidates = candidates(data_dir, databases)?;
    let (mut files, in_use) = check_candidates(&candidates, confirm)?;
    let mut report = ResetReport {
        data_dir: data_dir.display().to_string(),
        dry_run: !confirm,
        files: files.iter().map(|p| p.display().to_string()).collect(),
        moved_to: None,
        in_use,
    };
    if !confirm || files.is_empty() {
        return Ok(report);
    }
    let aside = move_aside(data_dir, &mut files)?;
    report.moved_to = Some(aside.display().to_string());
    Ok(report)
}

/// The configured databases inside `data_dir`, or without a configuration
/// every top-level file there named like a database.
fn candidates(data_dir: &Path, databases: Option<&[PathBuf]>) -> Result<Vec<PathBuf>> {
    Ok(if let Some(databases) = databases {
        databases.iter().filter(|p| p.starts_with(data_dir)).cloned().collect()
    } else {
        let mut v: Vec<PathBuf> = fs::read_dir(data_dir)
            .at(data_dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .map(|n| DB_SUFFIXES.iter().any(|s| n.to_string_lossy().ends_with(s)))
                        .unwrap_or(false)
            })
            .collect();
        v.sort();
        v
    })
}

/// Every candidate checked before any is touched: each must be a SQLite
/// database, and with `confirm` none may be open in another process. The
/// files to move (databases and their sidecars), and the databases in use.
fn check_candidates(candidates: &[PathBuf], confirm: bool) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut files = Vec::new();
    let mut in_use = Vec::new();
    for db in candidates {
        let exists = db.exists();
        if exists && !crate::sqlite::has_header(db)? {
            return Err(Error::bad_data(
                db.display(),
                "not a SQLite database (first 16 bytes are not the SQLite header); nothing was removed",
            )
            .fix("check --data-dir points at the service's data directory")
            .code(ErrorCode::ResetNotSqlite));
        }
        if exists {
            // Pulling a database from under a running service corrupts it.
            // A dry run only says so: it changes nothing, and previewing a
            // reset is what one does before stopping the service.
            if let Some((pid, comm)) = crate::fsutil::processes_holding(db).first() {
                if confirm {
                    return Err(Error::busy(
                        db.display(),
                        format!("database is open in another process (pid {pid}, {comm}); nothing was removed"),
                    )
                    .fix("stop the service first")
                    .code(ErrorCode::ResetDatabaseInUse));
                }
                in_use.push(format!("{} (pid {pid}, {comm})", db.display()));
            }
            files.push(db.clone());
        }
        files.extend(crate::sqlite::sidecar_paths(db).into_iter().filter(|p| p.exists()));
    }
    Ok((files, in_use))
}

/// Move `files` into a fresh `.lifeboat-reset-<time>/` in `data_dir`,
/// sidecars first; returns that folder.
fn move_aside(data_dir: &Path, files: &mut [PathBuf]) -> Result<PathBuf> {
    let aside = data_dir.join(format!(".lifeboat-reset-{}", compact_timestamp(jiff::Timestamp::now())));
    fs::create_dir_all(&aside).at(&aside)?;
    // Sidecars before their database: interrupted in between, the data dir
    // may hold a database without its -wal (an older state, kept whole
    // aside), never a -wal without its database, which SQLite would replay
    // into whatever database is created there next.
    let sidecars: std::collections::HashSet<PathBuf> =
        files.iter().flat_map(|d| crate::sqlite::sidecar_paths(d)).collect();
    files.sort_by_key(|f| !sidecars.contains(f));
    for f in files.iter() {
        let rel = f.strip_prefix(data_dir).expect("under data dir");
        let to = aside.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        crate::crashpoint::step("reset: move aside").at(f)?;
        fs::rename(f, &to).at(f)?;
        tracing::info!(event = "reset.moved", from = %f.display(), to = %to.display());
    }
    sync_dir(data_dir)?;
    Ok(aside)
}
