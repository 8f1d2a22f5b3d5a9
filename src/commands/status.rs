//! `status`: how current the backups are, from the repository alone. Per
//! source its newest snapshot and, for a replicated database, the newest
//! commit the repository can restore; the repository's size from one
//! listing; the last restore drill. Cheap: the snapshot list, one listing and
//! one WAL segment per replicated database; no index, no pack.
//!
//! What a running agent knows and the repository does not (jobs, next runs,
//! the replicator's live position) is the binary's to add: it asks the agent
//! over its socket.

use serde::Serialize;

use crate::commands::snapshot::{SourceKind, SourceSpec};
use crate::commands::stats::Objects;
use crate::error::{ErrorKind, Result};
use crate::id::Id;
use crate::pitr;
use crate::repo::manifest::{SnapshotKind, Source};
use crate::repo::{Repository, SnapshotRef};

/// Everything [`collect`] reports (`lifeboat status --json`, `repository`
/// and `sources`).
#[derive(Debug, Clone, Serialize)]
pub struct RepoStatus {
    /// Where the repository is (a path, or the URL without secrets).
    pub location: String,
    /// Objects and bytes by kind, from one listing.
    pub objects: Objects,
    /// Snapshots listed, replication bases included.
    pub snapshots: u64,
    /// One per source: the configured ones in the configuration's order,
    /// else every source the repository holds, newest snapshot's order first.
    pub sources: Vec<SourceStatus>,
    /// The newest restore drill, when the repository holds any.
    pub last_drill: Option<DrillSummary>,
    /// When this was collected (RFC 3339); ages are counted to it.
    pub checked_at: String,
}

/// One source's newest restore points.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// `sqlite`, `directory` or `file`.
    pub kind: String,
    /// Its path, as configured or as last stored.
    pub path: Option<String>,
    /// The newest service snapshot holding it; `None`: never backed up.
    pub last_snapshot: Option<LastSnapshot>,
    /// The newest replicated commit, for a database `replicate` follows.
    pub replication: Option<ReplicationPosition>,
    /// The newer of the two (RFC 3339): how recent a restore can be.
    pub newest_point: Option<String>,
    /// Seconds from `newest_point` to `checked_at`.
    pub age_seconds: Option<i64>,
}

/// A snapshot, as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastSnapshot {
    /// The manifest id.
    pub id: Id,
    /// Full or partial.
    pub kind: SnapshotKind,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Seconds from `time` to `checked_at`.
    pub age_seconds: i64,
}

/// The newest point of a replicated database the repository holds.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationPosition {
    /// `wal/<stream>/`.
    pub stream: String,
    /// The newest commit reached from the newest base without a hole.
    pub txid: u64,
    /// When the replicator saw that commit (RFC 3339); `None` when the
    /// segment holding it cannot be read.
    pub time: Option<String>,
    /// Seconds from `time` to `checked_at`: how far the repository trails
    /// the database, if it was written since.
    pub lag_seconds: Option<i64>,
}

/// The newest restore drill's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    /// When the drill ran (RFC 3339).
    pub time: String,
    /// Every check passed.
    pub passed: bool,
    /// The checks that failed, by name.
    pub failed_checks: Vec<String>,
    /// Seconds from `time` to `checked_at`.
    pub age_seconds: i64,
}

/// The newest drill record in the repository, if any (one listing, one read).
fn last_drill<S>(repo: &Repository<S>, now: jiff::Timestamp) -> Result<Option<DrillSummary>> {
    Ok(crate::commands::drill::latest(repo)?.map(|(_, r)| DrillSummary {
        passed: r.result == crate::commands::drill::Outcome::Pass,
        failed_checks: r.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect(),
        age_seconds: r.timestamp().map_or(0, |t| age(t, now)),
        time: r.time,
    }))
}

/// The repository's status at `now`. `configured` are the configuration's
/// sources (their order and kinds); `None` reports every source the
/// repository holds.
///
/// ```
/// use lifeboat::{Repository, RepoLocation, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("server.toml"), "listen = 8443\n").unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// let repo = Repository::init(&location)?.locked("my-service")?;
/// let source = SourceSpec { name: "server.toml".into(), path: dir.path().join("server.toml"), kind: SourceKind::File };
/// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: Some("2026-01-01T00:00:00Z".parse().unwrap()) };
/// let (id, _) = lifeboat::snapshot::take(&repo, &[source], &options, &lifeboat::progress::Silent)?;
///
/// let now = "2026-01-01T03:00:00Z".parse().unwrap();
/// let st = lifeboat::status::collect(&Repository::open(&location)?, None, now)?;
/// assert_eq!(st.sources[0].last_snapshot.as_ref().unwrap().id, id);
/// assert_eq!(st.sources[0].age_seconds, Some(3 * 3600));
/// # Ok(())
/// # }
/// ```
pub fn collect<S>(repo: &Repository<S>, configured: Option<&[SourceSpec]>, now: jiff::Timestamp) -> Result<RepoStatus> {
    let objects = crate::commands::stats::count_objects(&repo.list_everything()?);
    let snaps = repo.snapshots()?;
    let wanted: Vec<(String, String, Option<String>)> = match configured {
        Some(specs) => specs
            .iter()
            .map(|s| {
                let kind = match s.kind {
                    SourceKind::Sqlite { .. } => "sqlite",
                    SourceKind::Directory { .. } => "directory",
                    SourceKind::File => "file",
                };
                (s.name.clone(), kind.to_string(), Some(s.path.display().to_string()))
            })
            .collect(),
        None => stored_sources(&snaps),
    };
    let sources = wanted
        .into_iter()
        .map(|(name, kind, path)| source_status(repo, &snaps, name, kind, path, now))
        .collect::<Result<Vec<_>>>()?;
    Ok(RepoStatus {
        location: repo.location(),
        objects,
        snapshots: snaps.len() as u64,
        sources,
        last_drill: last_drill(repo, now)?,
        checked_at: now.to_string(),
    })
}

/// Every source the snapshots hold, newest snapshot's order first, with its
/// newest kind and path.
fn stored_sources(snaps: &[SnapshotRef]) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    for s in snaps.iter().rev() {
        for src in &s.manifest.sources {
            if !out.iter().any(|(n, _, _)| n == src.name()) {
                out.push((src.name().into(), src.kind_name().into(), Some(src.path().into())));
            }
        }
    }
    out
}

fn age(t: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    now.duration_since(t).as_secs()
}

fn source_status<S>(
    repo: &Repository<S>,
    snaps: &[SnapshotRef],
    name: String,
    kind: String,
    path: Option<String>,
    now: jiff::Timestamp,
) -> Result<SourceStatus> {
    let last = snaps
        .iter()
        .rev()
        .filter(|s| crate::commands::restore::select::is_service_snapshot(s))
        .find(|s| s.manifest.sources.iter().any(|x| x.name() == name));
    let last_snapshot = last.map(|s| LastSnapshot {
        id: s.id,
        kind: s.manifest.kind,
        time: s.manifest.time.to_string(),
        age_seconds: age(s.manifest.time, now),
    });
    let replication = replication(repo, snaps, &name, now)?;
    let snapshot_time = last.map(|s| s.manifest.time);
    let replicated_time = replication
        .as_ref()
        .and_then(|r| r.time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let newest = snapshot_time.max(replicated_time);
    Ok(SourceStatus {
        name,
        kind,
        path,
        last_snapshot,
        replication,
        newest_point: newest.map(|t| t.to_string()),
        age_seconds: newest.map(|t| age(t, now)),
    })
}

/// Where replication of `name` reaches, as a restore would find it: the
/// newest base of its current stream and the segments that follow it
/// without a hole (`pitr::plan_among`, as `restore` plans the newest point).
fn replication<S>(
    repo: &Repository<S>,
    snaps: &[SnapshotRef],
    name: &str,
    now: jiff::Timestamp,
) -> Result<Option<ReplicationPosition>> {
    let replicated = snaps.iter().any(|s| {
        s.manifest.kind == SnapshotKind::Base
            && s.manifest
                .sources
                .iter()
                .any(|x| x.name() == name && matches!(x, Source::Sqlite(d) if d.replication.is_some()))
    });
    if !replicated {
        return Ok(None);
    }
    let (_, replay) = pitr::plan_among(repo, snaps, Some(name), pitr::Target::Newest)?;
    // A segment that cannot be read is verify's to report; status still
    // shows how far the chain reaches.
    let time = match replay.reach(repo) {
        Ok(t) => Some(t),
        Err(e) if matches!(e.kind, ErrorKind::BadData | ErrorKind::NoInput) => {
            tracing::warn!(event = "status.reach_unknown", db = %name, error = %e);
            None
        }
        Err(e) => return Err(e),
    };
    Ok(Some(ReplicationPosition {
        stream: replay.base_point.stream.clone(),
        txid: replay.reach_txid(),
        time: time.map(|t| t.to_string()),
        lag_seconds: time.map(|t| age(t, now)),
    }))
}

/// What an operator's monitoring should hear about: a source never backed
/// up, a source whose newest point is older than `max_age` (when given),
/// a failed last drill. One line each, naming the source.
pub fn problems(st: &RepoStatus, max_age: Option<std::time::Duration>) -> Vec<String> {
    let mut out = Vec::new();
    for s in &st.sources {
        match s.age_seconds {
            None => out.push(format!("{}: never backed up", s.name)),
            Some(a) if max_age.is_some_and(|m| a > m.as_secs() as i64) => out.push(format!(
                "{}: newest point is {a}s old ({}), more than the {}s allowed",
                s.name,
                s.newest_point.as_deref().unwrap_or("-"),
                max_age.expect("checked").as_secs()
            )),
            Some(_) => {}
        }
    }
    if let Some(d) = &st.last_drill
        && !d.passed
    {
        out.push(format!(
            "last drill ({}) failed: {}",
            d.time,
            if d.failed_checks.is_empty() {
                "see `lifeboat drill list`".to_string()
            } else {
                d.failed_checks.join(", ")
            }
        ));
    }
    out
}
