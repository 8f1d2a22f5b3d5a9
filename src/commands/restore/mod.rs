//! Restores that cannot make things worse. The manifest's layout is checked
//! first (nothing it names may land outside the target). Everything is then
//! written into a private staging directory beside its destination
//! (`staging.rs`) and verified there (every blob's hash, every file's
//! BLAKE3, `PRAGMA integrity_check` on every database). Only then does each
//! staged copy take its destination's place (`swap.rs`: the path is never
//! missing, and what was there is kept in `.lifeboat-pre-restore-<time>`);
//! a failure at any point undoes what was done, so the target ends as it
//! began.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::codec::Decoder;
use crate::error::{Error, ErrorCode, IoContext, Result};
use crate::fsutil::{compact_timestamp, sync_dir};
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::keys;
use crate::repo::manifest::{Entry, EntryKind, Source, SqliteSource};
use crate::repo::{Repository, SnapshotRef};

mod blobs;
pub mod select;
pub mod staging;
mod swap;

pub use select::{Pick, Selection};

use staging::StagingDir;

/// Where a restore writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Back where each source was captured.
    Original,
    /// Each source at `<dir>` + its original absolute path, so a copy of
    /// the service can be started from `<dir>` as it is.
    Dir(PathBuf),
    /// One database as a plain SQLite file.
    File(PathBuf),
}

/// How a restore behaves; see [`restore`] for what it refuses.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Where the sources land.
    pub target: Target,
    /// Move what is in the way (a non-empty target, an existing file or one of a
    /// different type) into `.lifeboat-pre-restore-<time>/` instead of refusing
    /// with [`ErrorKind::CantCreate`](crate::ErrorKind::CantCreate). Never
    /// overrides the refusal of a file another process holds open.
    pub force: bool,
    /// Refuse databases whose schema version is above this.
    pub max_schema_version: Option<i64>,
    /// Paths of sources not being restored (the configuration's, say): a
    /// restore never moves or replaces them, not even inside a directory it
    /// replaces. The selection's own left-out sources are added.
    pub keep: Vec<PathBuf>,
    /// Skip `PRAGMA integrity_check` on restored databases: forensics only,
    /// to get the bytes out of a snapshot of a damaged database. Every byte
    /// is still checked against its hash.
    pub skip_integrity_check: bool,
}

/// One restored source, as reported (and serialized for `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The source's name in the manifest.
    pub name: String,
    /// Where it now is on disk.
    pub path: String,
    /// `sqlite`, `directory` or `file`.
    pub kind: &'static str,
    /// Bytes of content written: the database file, or the regular files' content.
    pub bytes: u64,
    /// The snapshot (or replication base) it came from, and its time.
    pub snapshot: String,
    /// When that snapshot was taken.
    #[serde(with = "crate::rfc3339")]
    pub snapshot_time: jiff::Timestamp,
    /// For a replicated database: the commit it landed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<crate::pitr::Landed>,
    /// How old the restored state is: now minus the time of the commit or
    /// snapshot it is as of.
    pub age_seconds: i64,
}

/// What [`restore`] did, once every source is in place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The snapshot, when everything came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Every source restored, in the order they were put in place.
    pub restored: Vec<Restored>,
    /// Where the files that were in the way now are, if any were.
    pub moved_aside: Vec<String>,
    /// When exactly one database was replayed: the commit it landed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<crate::pitr::Landed>,
}

struct Plan<'a> {
    pick: &'a Pick,
    source: &'a Source,
    dest: PathBuf,
    /// Directory that receives `.lifeboat-pre-restore-<time>`.
    root: PathBuf,
}

/// Restore `snap` whole: [`restore`] of [`Selection::of_snapshot`].
pub fn restore_snapshot(
    repo: &Repository,
    snap: &SnapshotRef,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    restore(repo, &Selection::of_snapshot(snap, &[])?, opts, progress)
}

/// Restore `selection`: everything staged and verified first (every hash,
/// `PRAGMA integrity_check`), then each staged copy swapped into place;
/// any failure undoes what was done.
///
/// ```
/// use lifeboat::{Repository, RepoLocation, RestoreOptions, Selection, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec, Target};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let db = dir.path().join("app.db");
/// rusqlite::Connection::open(&db)
///     .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);"))
///     .unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// let repo = Repository::init(&location)?.locked("my-service")?;
/// let source = SourceSpec { name: "app.db".into(), path: db, kind: SourceKind::Sqlite { schema_query: "PRAGMA user_version".into() } };
/// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
/// lifeboat::snapshot::take(&repo, &[source], &options, &lifeboat::progress::Silent)?;
///
/// // The service as of its newest point, as a plain SQLite file.
/// let repo = Repository::open(&location)?.indexed()?;
/// let out = dir.path().join("copy.db");
/// let report = lifeboat::restore::restore(
///     &repo,
///     &Selection::newest(&repo, &[], None)?,
///     &RestoreOptions { target: Target::File(out.clone()), force: false, max_schema_version: None, keep: vec![], skip_integrity_check: false },
///     &lifeboat::progress::Silent,
/// )?;
/// assert_eq!(report.restored.len(), 1);
/// let x: i64 = rusqlite::Connection::open(&out).unwrap().query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
/// assert_eq!(x, 42);
/// # Ok(())
/// # }
/// ```
pub fn restore(
    repo: &Repository,
    selection: &Selection,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let chosen: Vec<&Pick> = selection.picks.iter().collect();

    // Refusals first: nothing on disk changes before all of them pass.
    if let Some(max) = opts.max_schema_version {
        refuse_newer_schema(&chosen, max)?;
    }
    let mut plans = plan(&chosen, &opts.target)?;
    plans.sort_by_key(|p| p.dest.components().count());
    sweep_staging(&plans);
    let kept = kept_paths(selection, opts, &plans);
    preflight(&plans, &opts.target, opts.force, &kept)?;

    let stamp = compact_timestamp(jiff::Timestamp::now());
    // Dropped (and so removed) on every way out of this function.
    let mut staged: Vec<(StagingDir, PathBuf, &Plan)> = Vec::new();
    let mut created_dirs = Vec::new();
    let result = stage_all(repo, &plans, opts, progress, &mut staged, &mut created_dirs);
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            drop(staged);
            remove_created(&created_dirs);
            tracing::warn!(event = "restore.rolled_back", error = %e);
            return Err(e);
        }
    };

    // Commit, ancestors first: each staged copy takes its destination's
    // place (restore/swap.rs: the path is never missing, the old is kept in
    // the aside folder). A database's sidecars go aside first: a stale -wal
    // beside the new database would be replayed into it. A database kept
    // inside a restored directory is thus placed into the new directory, not
    // moved aside with the old one.
    let mut swaps = Swaps::default();
    let hold = staging::hold_off_signals();
    // Staging may have taken minutes: a service started meanwhile is
    // refused now, before anything moves.
    let commit = check_not_open(&plans, &kept).and_then(|()| {
        staged
            .iter()
            .try_for_each(|(dir, stage, p)| swaps.commit_one(dir, stage, p, &plans, &kept, &stamp))
    });
    let Swaps {
        undo,
        aside_dirs,
        carried_names,
    } = swaps;
    let aside_dirs: Vec<PathBuf> = aside_dirs.into_iter().map(|(_, a)| a).collect();
    if let Err(e) = commit {
        for step in undo.into_iter().rev() {
            step.undo();
        }
        drop(hold);
        drop(staged);
        // Only empty: anything still there could not be put back and must
        // stay where the operator can find it.
        for d in &aside_dirs {
            remove_empty_tree(d);
        }
        remove_created(&created_dirs);
        tracing::warn!(event = "restore.rolled_back", error = %e);
        return Err(e);
    }
    // Still the same file as the one carried (SQLite may have replaced a
    // `-wal` meanwhile): only then is it a second name.
    for (name, ino) in &carried_names {
        if fs::symlink_metadata(name).is_ok_and(|m| (m.dev(), m.ino()) == *ino) {
            let _ = fs::remove_file(name);
        }
    }
    drop(hold);
    drop(staged);
    staging::forget_created();
    for d in &aside_dirs {
        tracing::info!(event = "restore.moved_aside", dir = %d.display());
    }
    Ok(report(restored, &aside_dirs))
}

/// Refuse a database whose schema version is above what the service
/// supports.
fn refuse_newer_schema(chosen: &[&Pick], max: i64) -> Result<()> {
    for s in chosen {
        if let Source::Sqlite(db) = &s.source
            && let Some(v) = db.schema_version.filter(|v| *v > max)
        {
            return Err(Error::config(
                &db.name,
                format!("backup schema version {v} is newer than the maximum {max} this service supports"),
            )
            .fix("restore an older snapshot, or upgrade the service before restoring")
            .code(ErrorCode::RestoreSchemaVersionTooNew));
        }
    }
    Ok(())
}

/// Staging a killed restore left is neither in the way nor content.
fn sweep_staging(plans: &[Plan]) {
    let mut swept = std::collections::BTreeSet::new();
    for p in plans {
        let parent = staging_parent(p, plans);
        if swept.insert(parent.clone()) {
            staging::sweep(&parent);
        }
    }
}

/// What belongs to other sources, inside directories about to be
/// replaced in place: carried over into the new directory, never moved.
fn kept_paths(selection: &Selection, opts: &RestoreOptions, plans: &[Plan]) -> Vec<PathBuf> {
    match opts.target {
        Target::Original => opts
            .keep
            .iter()
            .chain(&selection.others)
            .map(|k| crate::fsutil::absolute_normalized(k))
            .filter(|k| !plans.iter().any(|p| k == &p.dest))
            .collect(),
        _ => Vec::new(),
    }
}

/// Stage every planned source beside its destination and verify it; each
/// staging directory joins `staged` as soon as it exists, so the caller
/// removes it on every way out.
fn stage_all<'p>(
    repo: &Repository,
    plans: &'p [Plan],
    opts: &RestoreOptions,
    progress: &dyn Progress,
    staged: &mut Vec<(StagingDir, PathBuf, &'p Plan<'p>)>,
    created_dirs: &mut Vec<PathBuf>,
) -> Result<Vec<Restored>> {
    let mut out = Vec::new();
    for p in plans {
        let parent = staging_parent(p, plans);
        create_dirs(&parent, created_dirs)?;
        let dir = StagingDir::create(&parent)?;
        let stage = dir.path().join(p.source.name());
        staged.push((dir, stage.clone(), p));
        out.push(stage_one(repo, p, &stage, opts, progress)?);
    }
    Ok(out)
}

/// Write and verify one source at `stage`.
fn stage_one(
    repo: &Repository,
    p: &Plan,
    stage: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Restored> {
    let bytes = match p.source {
        Source::Sqlite(db) => {
            let replay = p.pick.replay.as_deref();
            let once = || restore_database(repo, db, stage, progress, replay, opts.skip_integrity_check);
            match once() {
                // A page damaged in transit is not damage in the
                // repository: everything is read again, once.
                Err(e) if read_again(&e) => {
                    tracing::warn!(event = "repo.read_again", db = %db.name, error = %e, "restoring the database again before calling it damaged");
                    let _ = fs::remove_file(stage);
                    once()?
                }
                other => other?,
            }
        }
        Source::Directory(d) => restore_tree(repo, &d.entries, stage, progress, opts.skip_integrity_check)?,
        Source::File(f) => restore_tree(
            repo,
            std::slice::from_ref(&f.entry),
            stage,
            progress,
            opts.skip_integrity_check,
        )?,
    };
    let point = p
        .pick
        .replay
        .as_ref()
        .and_then(|r| r.landed.lock().expect("landed").clone());
    let as_of = point.as_ref().map_or(p.pick.snapshot_time, |l| l.time);
    let age_seconds = jiff::Timestamp::now().duration_since(as_of).as_secs();
    Ok(Restored {
        name: p.source.name().into(),
        path: p.dest.display().to_string(),
        kind: p.source.kind_name(),
        bytes,
        snapshot: p.pick.snapshot.hex(),
        snapshot_time: p.pick.snapshot_time,
        point,
        age_seconds,
    })
}

/// The commit's record: what to undo, the aside folder of each root, and
/// the second names of carried files, removed once the whole commit stands.
#[derive(Default)]
struct Swaps {
    undo: Vec<swap::Undo>,
    aside_dirs: Vec<(PathBuf, PathBuf)>, // (root, aside)
    carried_names: Vec<(PathBuf, (u64, u64))>,
}

impl Swaps {
    /// Where `path`, under the plan's root, goes aside; the root's aside
    /// folder is made on first use.
    fn aside_of(&mut self, p: &Plan, stamp: &str, path: &Path) -> Result<PathBuf> {
        let aside_dirs = &mut self.aside_dirs;
        let aside = match aside_dirs.iter().find(|(r, _)| r == &p.root) {
            Some((_, a)) => a.clone(),
            None => {
                let a = swap::fresh_aside_dir(&p.root, stamp);
                aside_dirs.push((p.root.clone(), a.clone()));
                a
            }
        };
        let rel = path
            .strip_prefix(&p.root)
            .unwrap_or(Path::new(path.file_name().unwrap_or_default()));
        let to = aside.join(rel);
        if let Some(d) = to.parent() {
            fs::create_dir_all(d).at(d)?;
        }
        Ok(to)
    }

    /// Put one staged copy in place: its sidecars aside, what it replaces
    /// aside, other sources' paths carried over, then the swap.
    fn commit_one(
        &mut self,
        dir: &StagingDir,
        stage: &Path,
        p: &Plan,
        plans: &[Plan],
        kept: &[PathBuf],
        stamp: &str,
    ) -> Result<()> {
        for path in in_the_way(p).into_iter().filter(|q| q != &p.dest) {
            if fs::symlink_metadata(&path).is_err() {
                continue;
            }
            let to = self.aside_of(p, stamp, &path)?;
            crate::crashpoint::step("restore: move a sidecar aside").at(&path)?;
            fs::rename(&path, &to).at(&path)?;
            self.undo.push(swap::Undo::Renamed { from: path.clone(), to });
        }
        let aside = if fs::symlink_metadata(&p.dest).is_ok() {
            self.aside_of(p, stamp, &p.dest)?
        } else {
            PathBuf::new()
        };
        let carried = match p.source {
            Source::Directory(_) if !aside.as_os_str().is_empty() => {
                carry_over(&p.dest, stage, &kept_inside(&p.dest, kept, plans), &mut self.undo)?
            }
            _ => Vec::new(),
        };
        swap::put_in_place(stage, &p.dest, &aside, dir.path(), &mut self.undo)?;
        // The old directory, now aside, still names the carried files
        // (second hard links of the live ones). Those names go only once
        // the whole commit stands: undoing a swap puts the old
        // directory back, and with it the only other name of each.
        self.carried_names
            .extend(carried.into_iter().map(|(rel, ino)| (aside.join(rel), ino)));
        sync_dir(p.dest.parent().unwrap_or(Path::new("/")))?;
        Ok(())
    }
}

/// The report of a restore that stands.
fn report(restored: Vec<Restored>, aside_dirs: &[PathBuf]) -> RestoreReport {
    let mut snapshots: Vec<&str> = restored.iter().map(|r| r.snapshot.as_str()).collect();
    snapshots.dedup();
    let mut points = restored.iter().filter_map(|r| r.point.clone());
    let point = match (points.next(), points.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    };
    RestoreReport {
        snapshot: (snapshots.len() == 1).then(|| snapshots[0].to_string()),
        moved_aside: aside_dirs.iter().map(|d| d.display().to_string()).collect(),
        point,
        restored,
    }
}

fn plan<'a>(chosen: &[&'a Pick], target: &Target) -> Result<Vec<Plan<'a>>> {
    let mut plans = Vec::new();
    match target {
        Target::File(out) => {
            let dbs: Vec<&&Pick> = chosen
                .iter()
                .filter(|p| matches!(p.source, Source::Sqlite(_)))
                .collect();
            if dbs.len() != 1 {
                let names: Vec<&str> = dbs.iter().map(|p| p.source.name()).collect();
                return Err(Error::usage(format!(
                    "-o restores exactly one database; this selection has {} ({})",
                    dbs.len(),
                    names.join(", ")
                ))
                .fix("pick one with --only NAME")
                .code(ErrorCode::RestoreWhichDatabase));
            }
            let out = std::path::absolute(out).at(out)?;
            let root = out.parent().unwrap_or(Path::new("/")).to_path_buf();
            plans.push(Plan {
                pick: dbs[0],
                source: &dbs[0].source,
                dest: out,
                root,
            });
        }
        Target::Dir(dir) => {
            // restic's layout: the source's own absolute path under DIR. The
            // aside folder, if anything is in the way, is DIR's.
            let dir = std::path::absolute(dir).at(dir)?;
            for p in chosen {
                let original = crate::fsutil::absolute_normalized(Path::new(p.source.path()));
                let rel = original.strip_prefix("/").unwrap_or(&original);
                plans.push(Plan {
                    pick: p,
                    source: &p.source,
                    dest: dir.join(rel),
                    root: dir.clone(),
                });
            }
        }
        Target::Original => {
            for p in chosen {
                let dest = crate::fsutil::absolute_normalized(Path::new(p.source.path()));
                let root = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
                plans.push(Plan {
                    pick: p,
                    source: &p.source,
                    dest,
                    root,
                });
            }
        }
    }
    Ok(plans)
}

/// Whether a failure says something read was damaged (and reading it again
/// might show it was only damaged on the way), not that it is missing.
fn read_again(e: &Error) -> bool {
    e.kind == crate::error::ErrorKind::BadData && e.code != ErrorCode::RepoPackMissing
}

/// What restoring `p` would replace: the destination and, for a database,
/// its sidecars (a stale `-wal` beside a restored database would be replayed).
fn in_the_way(p: &Plan) -> Vec<PathBuf> {
    let mut paths = vec![p.dest.clone()];
    if matches!(p.source, Source::Sqlite(_)) {
        paths.extend(crate::sqlite::sidecar_paths(&p.dest));
    }
    paths
}

/// Where to stage `p`: beside its destination, or beside the outermost other
/// destination containing it, which is itself replaced during the commit.
fn staging_parent(p: &Plan, plans: &[Plan]) -> PathBuf {
    let outer = plans
        .iter()
        .filter(|q| q.dest != p.dest && p.dest.starts_with(&q.dest))
        .min_by_key(|q| q.dest.components().count());
    outer.unwrap_or(p).dest.parent().unwrap_or(Path::new("/")).to_path_buf()
}

fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn non_empty(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Err(_) => false,
        Ok(m) if m.is_dir() => fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(true),
        Ok(_) => true,
    }
}

/// The kept paths strictly inside `dir` that no plan restores itself.
fn kept_inside(dir: &Path, kept: &[PathBuf], plans: &[Plan]) -> Vec<PathBuf> {
    kept.iter()
        .filter(|k| k.starts_with(dir) && k.as_path() != dir)
        .filter(|k| !plans.iter().any(|p| k.starts_with(&p.dest) && p.dest != dir))
        .cloned()
        .collect()
}

/// Put each kept file inside `dest` (and a database's `-wal`/`-shm`/
/// `-journal`) at the same place in `stage` by a second hard link, before
/// the two directories are exchanged: it never leaves its path, and a
/// process holding it open keeps writing to the same file. Whatever the
/// snapshot held there is dropped from the staged copy: it belongs to the
/// other source. A kept file reached through a link (stored physically
/// elsewhere) is left alone: the swap does not move it. Returns the files
/// linked, relative to `dest`, with their (device, inode).
fn carry_over(
    dest: &Path,
    stage: &Path,
    kept: &[PathBuf],
    undo: &mut Vec<swap::Undo>,
) -> Result<Vec<(PathBuf, (u64, u64))>> {
    let mut linked = Vec::new();
    for k in kept {
        let mut paths = vec![k.clone()];
        paths.extend(
            crate::sqlite::OWN_SIDECARS
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", k.display()))),
        );
        for path in paths {
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let rel = path.strip_prefix(dest).expect("inside").to_path_buf();
            if meta.is_dir() || !real_dirs_between(dest, &rel) {
                continue; // folders are refused before; linked ones stay put
            }
            let into = stage.join(&rel);
            // Never through a link the restored tree holds.
            let mut at = stage.to_path_buf();
            for c in rel.parent().into_iter().flat_map(|p| p.components()) {
                at.push(c);
                match fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(Error::cant_create(
                            at.display(),
                            format!("the restored tree has a link or file where {} lies", path.display()),
                        )
                        .fix("restore with --to DIR and move what is needed by hand")
                        .code(ErrorCode::RestoreCarryBlocked));
                    }
                    Err(_) => {
                        fs::DirBuilder::new().mode(0o700).create(&at).at(&at)?;
                        if let Ok(m) = fs::metadata(path.parent().expect("inside")) {
                            let _ = fs::set_permissions(&at, m.permissions());
                        }
                    }
                }
            }
            if fs::symlink_metadata(&into).is_ok() {
                crate::fsutil::remove_file_or_tree(&into).at(&into)?;
            }
            fs::hard_link(&path, &into).map_err(|e| {
                Error::io(&path, e)
                    .fix("another source inside the directory lies on another filesystem; restore with --to DIR")
            })?;
            undo.push(swap::Undo::Linked { link: into });
            linked.push((rel, (meta.dev(), meta.ino())));
        }
    }
    Ok(linked)
}

/// Whether every folder from `dest` down to `rel`'s parent is a real
/// folder, not a link.
fn real_dirs_between(dest: &Path, rel: &Path) -> bool {
    let mut at = dest.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        at.push(c);
        if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            return false;
        }
    }
    true
}

/// Whether `dir` holds anything but empty directories (a restore killed
/// before its commit leaves the directories it created on the way).
fn holds_anything(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir());
    };
    entries.flatten().any(|e| match e.file_type() {
        Ok(t) if t.is_dir() => holds_anything(&e.path()),
        _ => true,
    })
}

/// Refuse (75) any file in the way that another process holds open, even
/// with --force: a process writing into a file that is moved aside keeps
/// writing into the moved copy, and the service then runs on neither the
/// old state nor the restored one. What other sources hold inside a
/// directory stays where it is, open or not.
fn check_not_open(plans: &[Plan], kept: &[PathBuf]) -> Result<()> {
    let open = crate::fsutil::OpenFiles::scan();
    for p in plans {
        let carried: Vec<PathBuf> = kept_inside(&p.dest, kept, plans)
            .into_iter()
            .map(|k| fs::canonicalize(&k).unwrap_or(k))
            .collect();
        let stays = |h: &crate::fsutil::Holder| {
            carried.iter().any(|k| {
                h.path.starts_with(k)
                    || h.path.to_str().zip(k.to_str()).is_some_and(|(h, k)| {
                        h.strip_prefix(k)
                            .is_some_and(|s| crate::sqlite::OWN_SIDECARS.contains(&s))
                    })
            })
        };
        for path in in_the_way(p) {
            if let Some(h) = open.holding(&path).into_iter().find(|h| !stays(h)) {
                let (what, code) = match p.source {
                    Source::Sqlite(_) => ("database", ErrorCode::RestoreDatabaseInUse),
                    _ => ("file", ErrorCode::RestoreFileInUse),
                };
                return Err(Error::busy(
                    h.path.display(),
                    format!("{what} is open in another process (pid {}, {})", h.pid, h.command),
                )
                .fix("stop the service first (--force never moves a file a process holds open)")
                .code(code));
            }
        }
    }
    Ok(())
}

/// Refuse clobbering and live files before anything is written.
fn preflight(plans: &[Plan], target: &Target, force: bool, kept: &[PathBuf]) -> Result<()> {
    if let Target::Dir(dir) = target
        && holds_anything(dir)
        && !force
    {
        return Err(Error::cant_create(dir.display(), "target directory is not empty")
                .fix("restore into an empty directory, or add --force to move what is there into .lifeboat-pre-restore-<time>/")
                .code(ErrorCode::RestoreTargetNotEmpty));
    }
    check_not_open(plans, kept)?;
    if let Target::Dir(dir) = target {
        // A link inside the target (a container's root with `var/run ->
        // /run`) would carry the restore outside it.
        for p in plans {
            let rel = p.dest.strip_prefix(dir).unwrap_or(&p.dest);
            let mut at = dir.clone();
            for c in rel.parent().into_iter().flat_map(|r| r.components()) {
                at.push(c);
                if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(Error::cant_create(at.display(), "a link inside the target directory")
                        .fix("restore into a directory without links on the sources' paths")
                        .code(ErrorCode::RestoreTargetHasLink));
                }
            }
        }
    }
    for p in plans {
        // Another source's folder inside a directory replaced in place
        // would have to leave its path for a moment; refused up front.
        if matches!(p.source, Source::Directory(_))
            && let Some(k) = kept_inside(&p.dest, kept, plans).into_iter().find(|k| {
                fs::symlink_metadata(k).is_ok_and(|m| m.is_dir())
                    && real_dirs_between(&p.dest, k.strip_prefix(&p.dest).unwrap_or(k))
            })
        {
            return Err(Error::cant_create(
                k.display(),
                format!(
                    "another source's folder lies inside {}, which this restore replaces",
                    p.dest.display()
                ),
            )
            .fix("restore that source too (another --only), or restore this one with --to DIR or --include")
            .code(ErrorCode::RestoreNestedSource));
        }
    }
    for p in plans {
        let in_way = in_the_way(p);
        if !force && let Some(path) = in_way.iter().find(|q| non_empty(q) || fs::symlink_metadata(q).is_ok()) {
            return Err(Error::cant_create(path.display(), "already exists")
                    .fix("restore elsewhere with --to DIR or -o FILE, or add --force to move it into .lifeboat-pre-restore-<time>/")
                    .code(ErrorCode::RestoreTargetNotEmpty));
        }
        if let Ok(m) = fs::symlink_metadata(&p.dest) {
            let is_dir_src = matches!(p.source, Source::Directory(_));
            if m.is_dir() != is_dir_src && !force {
                return Err(
                    Error::cant_create(p.dest.display(), "exists with a different file type").fix("add --force"),
                );
            }
        }
    }
    Ok(())
}

fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        fs::create_dir(&d).map_err(|e| Error::io(&d, e).fix("check the target's parent is writable"))?;
        staging::note_created(&d);
        created.push(d);
    }
    Ok(())
}

fn remove_created(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
    staging::forget_created();
}

/// One page to restore: where its blob lives and which page it becomes.
/// Rows are sorted by (pack, offset), so pages sharing a blob are adjacent.
#[derive(Clone, Copy)]
struct Row {
    pack: u32,
    /// The frame holding the page, and the page's place in it.
    offset: u32,
    length: u32,
    blob_offset: u32,
    /// The page's blob id is `pages[pgno - 1]`: looked up rather than
    /// copied, rows stay 20 bytes (a GiB database has 262,144 of them).
    pgno: u32,
}

/// Largest span: adjacent blobs are read together up to this, and a span is
/// what a worker decodes at a time. Every reader holds one while it waits
/// for a worker, so this times the readers is most of the memory in flight.
const READ_SPAN: u64 = 512 << 10;

/// Spans of one pack are handed to the store together, up to this many
/// bytes from the first to the last, so a store that pays a round trip per
/// request streams them with one. Small enough that the last batches, read
/// when fewer readers are left, do not keep the others waiting long.
const READ_BATCH: u64 = 8 << 20;

/// Largest run of consecutive pages written with one pwrite.
const RUN_BYTES: usize = 1 << 20;

/// Reads covering `rows` (sorted by pack and offset): `(first row, end row,
/// start offset, end offset)`, each within one pack and at most `READ_SPAN`.
fn spans(rows: &[Row]) -> Vec<(usize, usize, u64, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let (pack, base) = (rows[i].pack, rows[i].offset as u64);
        let mut j = i;
        let mut end = base;
        // A frame is never split between spans, however large (a repacked
        // or incompressible frame can pass READ_SPAN): its rows would read
        // it again, once each, as overlapping ranges.
        while j < rows.len()
            && rows[j].pack == pack
            && (j == i
                || rows[j].offset == rows[j - 1].offset
                || rows[j].offset as u64 + rows[j].length as u64 - base <= READ_SPAN)
        {
            end = end.max(rows[j].offset as u64 + rows[j].length as u64);
            j += 1;
        }
        out.push((i, j, base, end));
        i = j;
    }
    out
}

/// `spans` grouped into batches: neighbouring spans of one pack, at most
/// `READ_BATCH` from the start of the first to the end of the last.
fn batches(spans: &[(usize, usize, u64, u64)], rows: &[Row]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let (pack, base) = (rows[spans[i].0].pack, spans[i].2);
        let mut j = i + 1;
        while j < spans.len() && rows[spans[j].0].pack == pack && spans[j].3 - base <= READ_BATCH {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// A span read from a pack: its bytes, their offset in the pack, the rows
/// they hold and the pack's key.
type Span<'a> = (Vec<u8>, u64, &'a [Row], String);

fn restore_database(
    repo: &Repository,
    db: &SqliteSource,
    stage: &Path,
    progress: &dyn Progress,
    replay: Option<&crate::pitr::Replay>,
    skip_integrity_check: bool,
) -> Result<u64> {
    let integrity = |stage: &Path| -> Result<()> {
        if skip_integrity_check {
            tracing::warn!(event = "restore.integrity_skipped", db = %db.name, "integrity_check skipped (--no-integrity-check): the database may be corrupt");
            return Ok(());
        }
        crate::sqlite::integrity_check(stage).map_err(|e| {
            Error::bad_data(format!("database {} of the snapshot", db.name), e.problem)
                .code_keeping_kind(e.code)
                .fix("the snapshot holds a damaged database: restore an older snapshot, or get its bytes out for forensics with --no-integrity-check")
        })
    };
    let (page_size, pages, rows) = page_rows(repo, db)?;
    let file = create_stage_file(db, stage)?;
    file.set_len(db.size).at(stage)?;
    progress.begin(&format!("restore {}", db.name), db.size);
    let sink = PageSink {
        file: &file,
        stage,
        pages: &pages,
        page_size: page_size as u64,
        progress,
    };
    write_pages(repo, &sink, &rows)?;
    progress.end();

    // Writeback starts only now, with every page in place, so the kernel's
    // delayed allocation lays the file out in one piece (flushing earlier
    // split it around the pages a delta restore fills in last). Then check
    // the file while the disk catches up: the
    // whole-file BLAKE3 and integrity_check run side by side from the page
    // cache, and the fsync that must precede the rename comes last.
    if let Some(replay) = replay {
        // Every base page was checked against its id as it was written; the
        // segments carry their own hashes. The whole-file check that matters
        // now is SQLite's.
        let size = replay.apply(repo, &file, stage, page_size, db.size)?;
        crate::fsutil::start_writeback(&file);
        integrity(stage)?;
        set_meta_file(stage, db.mode, db.uid, db.gid, None)?;
        file.sync_all().at(stage)?;
        return Ok(size);
    }
    crate::fsutil::start_writeback(&file);
    let (hashed, checked) = std::thread::scope(|scope| {
        let hash = scope.spawn(|| -> Result<Id> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(File::open(stage).at(stage)?).at(stage)?;
            Ok(Id(*hasher.finalize().as_bytes()))
        });
        let checked = integrity(stage);
        (hash.join().expect("hash thread"), checked)
    });
    if hashed? != db.blake3 {
        return Err(Error::damaged(
            stage.display(),
            format!("restored {} does not match the snapshot's BLAKE3", db.name),
        ));
    }
    checked?;
    set_meta_file(stage, db.mode, db.uid, db.gid, None)?;
    file.sync_all().at(stage)?;
    Ok(db.size)
}

/// The database's page size, its page ids, and a row per page saying where
/// its blob lies, sorted by (pack, offset) so a pack is read front to back.
fn page_rows(repo: &Repository, db: &SqliteSource) -> Result<(u32, Vec<Id>, Vec<Row>)> {
    let crate::repo::ResolvedPages { page_size, pages, .. } = repo.resolve_pagemap(&db.pagemap, false)?;
    if page_size != db.page_size || pages.len() as u32 != db.page_count {
        return Err(Error::damaged(
            &db.name,
            "page map disagrees with the manifest's page size or count",
        ));
    }
    let mut rows = Vec::with_capacity(pages.len());
    for (i, id) in pages.iter().enumerate() {
        let loc = repo.index().get(id).ok_or_else(|| {
            Error::damaged(
                &db.name,
                format!("page {} (blob {}) is missing from the repository", i + 1, id.short()),
            )
            .fix("run `lifeboat verify` to see which snapshots are damaged")
        })?;
        rows.push(Row {
            pack: loc.pack,
            offset: loc.offset,
            length: loc.length,
            blob_offset: loc.blob_offset,
            pgno: i as u32 + 1,
        });
    }
    rows.sort_unstable_by_key(|r| (r.pack, r.offset, r.pgno));
    Ok((page_size, pages, rows))
}

/// The staged database file, created afresh, never through a symlink, with
/// permissions no wider than its final ones.
fn create_stage_file(db: &SqliteSource, stage: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Read too: the point-in-time replay reads pages back.
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode((db.mode & 0o777) | 0o600)
        .open(stage)
        .at(stage)
}

/// Where the page writers put pages, and what each page must hash to.
struct PageSink<'a> {
    file: &'a File,
    stage: &'a Path,
    pages: &'a [Id],
    page_size: u64,
    progress: &'a dyn Progress,
}

/// Every page of `rows` into the sink's file: readers fetch spans, as many
/// at once as the store wants transfers, and hand each to the workers as
/// soon as it is in; the workers decode, check and write.
fn write_pages(repo: &Repository, sink: &PageSink, rows: &[Row]) -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    // Bounded: at most `workers` spans queued, so memory stays a few MiB.
    let (tx, rx) = sync_channel::<Span>(workers);
    let spans = spans(rows);
    let batches = batches(&spans, rows);
    // Readers take batches in turn, as many at once as the store wants
    // transfers: one for a local disk, several for an object store,
    // where latency dominates.
    let fetchers = repo.transfers().clamp(1, batches.len().max(1));
    let (written, fetched) = std::thread::scope(|scope| {
        // When the workers stop (a damaged page, say), the queue goes with
        // them and a reader's next send fails.
        let written = scope.spawn(|| {
            crate::workers::for_each(workers, rx, <(Decoder, Vec<u8>)>::default, |(dec, run), span| {
                sink.write_span(dec, run, span)
            })
        });
        let fetched = crate::workers::for_each(
            fetchers,
            &batches,
            || tx.clone(),
            |tx, batch| read_batch(repo, &spans[batch.clone()], rows, tx),
        );
        drop(tx);
        (written.join().expect("page writers"), fetched)
    });
    // A worker's failure is the root cause of a read that merely saw the
    // restore stop.
    written.and(fetched)
}

/// One batch of spans of a pack, read with one `read_ranges`; each span
/// goes to the workers as soon as it is in.
fn read_batch<'r>(
    repo: &Repository,
    batch: &[(usize, usize, u64, u64)],
    rows: &'r [Row],
    tx: &SyncSender<Span<'r>>,
) -> Result<()> {
    let key = keys::pack(&repo.index().pack(rows[batch[0].0].pack).0);
    let ranges: Vec<(u64, u64)> = batch.iter().map(|&(_, _, base, end)| (base, end - base)).collect();
    let mut queued = batch.iter();
    let read = repo.read_object_ranges(&key, &ranges, &mut |buf| {
        let &(i, j, base, _) = queued.next().expect("one buffer per range");
        // Stops the read; the workers' failure is the one reported.
        let stopped = || Error::damaged(&key, "restore stopped after an earlier failure");
        tx.send((buf, base, &rows[i..j], key.clone())).map_err(|_| stopped())
    });
    read.map_err(|e| blobs::missing_is_damage(e, &repo.object_name(&key)))
}

impl PageSink<'_> {
    /// Decode the frames of one span, check each page against its id and
    /// write the pages. Consecutive pages are gathered into one run and
    /// written with a single pwrite; `dec` and `run` are the worker's,
    /// reused.
    fn write_span(&self, dec: &mut Decoder, run: &mut Vec<u8>, (buf, base, rows, key): Span) -> Result<()> {
        let (pages, ps) = (self.pages, self.page_size);
        run.clear();
        let mut run_start = 0u32;
        let mut frame: Vec<u8> = Vec::new();
        let mut decoded_at = None;
        let mut verified_at = None;
        for r in rows {
            if decoded_at != Some(r.offset) {
                let start = (r.offset as u64 - base) as usize;
                frame = dec.decode(&buf[start..start + r.length as usize], &key)?;
                decoded_at = Some(r.offset);
            }
            let at = r.blob_offset as usize;
            let page = frame.get(at..at + ps as usize).ok_or_else(|| {
                Error::damaged(
                    &key,
                    format!(
                        "page blob {} lies outside its frame",
                        pages[r.pgno as usize - 1].short()
                    ),
                )
            })?;
            if verified_at != Some((r.offset, r.blob_offset)) {
                if Id::of(page) != pages[r.pgno as usize - 1] {
                    return Err(Error::damaged(
                        &key,
                        format!(
                            "page blob {} does not match its hash",
                            pages[r.pgno as usize - 1].short()
                        ),
                    ));
                }
                verified_at = Some((r.offset, r.blob_offset));
            }
            let contiguous = run_start as u64 + run.len() as u64 / ps == r.pgno as u64;
            if !contiguous || run.len() >= RUN_BYTES {
                self.flush(run, run_start)?;
                run_start = r.pgno;
            }
            run.extend_from_slice(page);
        }
        self.flush(run, run_start)
    }

    /// Write a run of consecutive pages starting at page `first`.
    fn flush(&self, run: &mut Vec<u8>, first: u32) -> Result<()> {
        if !run.is_empty() {
            self.file
                .write_all_at(run, (first as u64 - 1) * self.page_size)
                .at(self.stage)?;
            self.progress.advance(run.len() as u64);
            run.clear();
        }
        Ok(())
    }
}

/// Bytes of file content fetched at a time: the chunks of this many bytes
/// of small files are read together, and a larger file is written in runs
/// of chunks read together. Bounds the memory a tree restore holds.
const TREE_BATCH: u64 = 32 << 20;

/// Chunks of one large file read together.
const FILE_WINDOW: usize = 16;

/// Write a file or directory tree into `stage`; entry "" is `stage` itself.
fn restore_tree(
    repo: &Repository,
    entries: &[Entry],
    stage: &Path,
    progress: &dyn Progress,
    skip_integrity_check: bool,
) -> Result<u64> {
    let total: u64 = entries.iter().map(|e| e.size).sum();
    progress.begin("restore files", total);
    let mut bytes = 0;
    let path_of = |e: &Entry| {
        if e.path.is_empty() {
            stage.to_path_buf()
        } else {
            stage.join(&e.path)
        }
    };
    // The manifest's layout was checked before anything was written
    // (`Manifest::check_layout`): each entry lies beneath a directory this
    // restore created, so no path below passes through a symlink. Nothing is
    // ever opened through one either way: every entry is created new, never
    // following a link in its last component.
    let mut i = 0;
    while i < entries.len() {
        // A batch of entries whose small files' chunks are fetched together.
        let mut j = i;
        let mut batch_bytes = 0;
        while j < entries.len() && (j == i || batch_bytes + entries[j].size <= TREE_BATCH) {
            batch_bytes += entries[j].size;
            j += 1;
        }
        let small: Vec<Id> = entries[i..j]
            .iter()
            .filter(|e| e.kind == EntryKind::File && e.size <= TREE_BATCH && e.database.is_none())
            .flat_map(|e| e.chunks.iter().copied())
            .collect();
        // Errors keep their kind: damage is 65, a store that does not
        // answer 74 or 75.
        let fetched = blobs::fetch_checked(repo, &small)?;
        for e in &entries[i..j] {
            let path = path_of(e);
            match e.kind {
                // Owner-only until its metadata is set, last: nobody else
                // looks inside a half-restored tree.
                EntryKind::Dir => fs::DirBuilder::new().mode(0o700).create(&path).at(&path)?,
                EntryKind::Symlink => {
                    let target = e.target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(target, &path).at(&path)?;
                }
                // A database captured by pages comes back as a configured
                // one does: every page checked, then integrity_check.
                EntryKind::File if e.database.is_some() => {
                    let db = e
                        .database_source(&e.path, &path.display().to_string())
                        .ok_or_else(|| Error::damaged(&e.path, "database entry without a BLAKE3"))?;
                    bytes += restore_database(repo, &db, &path, progress, None, skip_integrity_check)?;
                }
                EntryKind::File => bytes += restore_file(repo, e, &path, &fetched, progress)?,
            }
        }
        i = j;
    }
    set_tree_meta(entries, stage)?;
    progress.end();
    Ok(bytes)
}

/// Write one regular file from its chunks (those of a small file come with
/// its batch, a large file's are fetched a window at a time) and check its
/// size and BLAKE3; returns its size.
fn restore_file(
    repo: &Repository,
    e: &Entry,
    path: &Path,
    fetched: &HashMap<Id, Vec<u8>>,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut f = create_new_file(path, e.mode)?;
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut write = |data: &[u8]| -> Result<()> {
        hasher.update(data);
        std::io::Write::write_all(&mut f, data).at(path)?;
        written += data.len() as u64;
        progress.advance(data.len() as u64);
        Ok(())
    };
    if e.size <= TREE_BATCH {
        for id in &e.chunks {
            write(fetched.get(id).expect("fetched with its batch"))?;
        }
    } else {
        for window in e.chunks.chunks(FILE_WINDOW) {
            let got = blobs::fetch_checked(repo, window)?;
            for id in window {
                write(got.get(id).expect("fetched with its window"))?;
            }
        }
    }
    f.sync_all().at(path)?;
    if written != e.size {
        return Err(Error::damaged(
            &e.path,
            format!("restored {written} bytes where the snapshot says {}", e.size),
        ));
    }
    if Some(Id(*hasher.finalize().as_bytes())) != e.blake3 {
        return Err(Error::damaged(
            &e.path,
            "restored content does not match the snapshot's BLAKE3",
        ));
    }
    Ok(e.size)
}

/// Metadata last, deepest first, so writing children does not disturb a
/// directory's restored mtime; then every directory is synced.
fn set_tree_meta(entries: &[Entry], stage: &Path) -> Result<()> {
    for e in entries.iter().rev() {
        let path = if e.path.is_empty() {
            stage.to_path_buf()
        } else {
            stage.join(&e.path)
        };
        if e.kind == EntryKind::Symlink {
            if crate::fsutil::is_root() {
                let _ = std::os::unix::fs::lchown(&path, Some(e.uid), Some(e.gid));
            }
            let t = filetime::FileTime::from_unix_time(
                e.mtime_ns.div_euclid(1_000_000_000),
                e.mtime_ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_symlink_file_times(&path, t, t).at(&path)?;
        } else {
            set_meta_file(&path, e.mode, e.uid, e.gid, Some(e.mtime_ns))?;
        }
    }
    for e in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        let path = if e.path.is_empty() {
            stage.to_path_buf()
        } else {
            stage.join(&e.path)
        };
        sync_dir(&path)?;
    }
    Ok(())
}

/// A file that did not exist, never reached through a symlink, created with
/// no more permission than it will end with: a secret restored from a 0600
/// file is never readable by others, not even while it is being written.
fn create_new_file(path: &Path, mode: u32) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode((mode & 0o777) | 0o600)
        .open(path)
        .at(path)
}

fn set_meta_file(path: &Path, mode: u32, uid: u32, gid: u32, mtime_ns: Option<i64>) -> Result<()> {
    if crate::fsutil::is_root() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).at(path)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)?;
    if let Some(ns) = mtime_ns {
        let t = filetime::FileTime::from_unix_time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
        filetime::set_file_times(path, t, t).at(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pack: u32, offset: u32, length: u32, blob_offset: u32, pgno: u32) -> Row {
        Row {
            pack,
            offset,
            length,
            blob_offset,
            pgno,
        }
    }

    #[test]
    fn a_frame_larger_than_a_span_is_read_once() {
        // One 800 KiB frame holding three pages (as prune's repack or an
        // incompressible database makes), then a small frame.
        let big = 800 << 10;
        let rows = vec![
            row(0, 0, 100, 0, 1),
            row(0, 100, big, 0, 2),
            row(0, 100, big, 4096, 3),
            row(0, 100, big, 8192, 4),
            row(0, 100 + big, 50, 0, 5),
        ];
        let got = spans(&rows);
        for w in got.windows(2) {
            assert!(w[0].3 <= w[1].2, "overlapping spans: {got:?}");
        }
        let covering: Vec<_> = got.iter().filter(|s| s.0 <= 1 && s.1 >= 4).collect();
        assert_eq!(covering.len(), 1, "the big frame's rows share one span: {got:?}");
    }
}
