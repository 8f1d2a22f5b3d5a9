//! Which point each source comes back from. A restore point means one thing
//! whatever way it is asked for: the service as the operator last had it.
//!
//! - `restore ID`: exactly that snapshot.
//! - `restore` / `restore latest`: each directory and file source from the
//!   newest snapshot holding it (a partial snapshot does not hold what only
//!   full ones capture), each database at its newest shipped commit when
//!   replication reaches past its newest snapshot.
//! - `restore --at T`: the same, as of `T`.
//! - `restore --txid N`: one replicated database right after commit N.
//!
//! Replication bases are internal restore points of their stream, not
//! service snapshots: they are only ever chosen through their stream.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, ErrorCode, Result};
use crate::id::Id;
use crate::pitr::{self, Replay};
use crate::repo::manifest::{DirectorySource, Entry, EntryKind, FileSource, Source};
use crate::repo::{Repository, SnapshotRef};

/// A snapshot `lifeboat snapshot` took (not a replication base).
pub fn is_service_snapshot(s: &SnapshotRef) -> bool {
    s.manifest.kind != crate::repo::manifest::SnapshotKind::Base
}

/// One source and the point it is restored from.
#[derive(Debug)]
pub struct Pick {
    /// The source as stored in that snapshot's manifest (narrowed to the
    /// `--include` matches when asked).
    pub source: Source,
    /// The snapshot (or base) the source's bytes come from.
    pub snapshot: Id,
    /// When that snapshot was taken.
    pub snapshot_time: jiff::Timestamp,
    /// Commits to replay on the base, for a replicated database.
    pub replay: Option<Arc<Replay>>,
}

/// What one restore brings back.
#[derive(Debug, Default)]
pub struct Selection {
    /// One per source brought back.
    pub picks: Vec<Pick>,
    /// Paths of the sources left out (`--only`): a restore never moves or
    /// replaces what belongs to them, even inside a directory it replaces.
    pub others: Vec<std::path::PathBuf>,
}

fn pick_of(snap: &SnapshotRef, source: &Source) -> Pick {
    Pick {
        source: source.clone(),
        snapshot: snap.id,
        snapshot_time: snap.manifest.time,
        replay: None,
    }
}

fn unknown_names(only: &[String], known: &[String], what: &str) -> Result<()> {
    if let Some(missing) = only.iter().find(|n| !known.contains(n)) {
        return Err(
            Error::usage(format!("--only {missing}: {what} has no source of that name"))
                .fix(format!("choose from: {}", known.join(", ")))
                .code(ErrorCode::RestoreNoSuchSource),
        );
    }
    Ok(())
}

/// Every source name `snaps` hold, the newest snapshot's order first.
fn stored_names(snaps: &[SnapshotRef]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in snaps.iter().rev() {
        for src in &s.manifest.sources {
            if !names.iter().any(|n| n == src.name()) {
                names.push(src.name().to_string());
            }
        }
    }
    names
}

/// The moment a snapshot's content is as of: a service snapshot's read
/// transactions begin when it starts (its recorded time is its end); a
/// base is stamped at its pin.
fn state_time(s: &SnapshotRef) -> Option<jiff::Timestamp> {
    let t = s.manifest.time;
    if !is_service_snapshot(s) {
        return Some(t);
    }
    let took = jiff::SignedDuration::from_millis(s.manifest.summary.duration_ms as i64);
    t.checked_sub(took).ok()
}

impl Selection {
    /// Exactly the snapshot `snap` (its sources named in `only`, or all).
    pub fn of_snapshot(snap: &SnapshotRef, only: &[String]) -> Result<Selection> {
        let m = &snap.manifest;
        m.check_layout(&format!("snapshot {}", snap.id.short()))?;
        for name in only {
            if !m.sources.iter().any(|s| s.name() == name) {
                let names: Vec<&str> = m.sources.iter().map(|s| s.name()).collect();
                return Err(
                    Error::no_input(name, format!("snapshot {} has no source of that name", snap.id.short()))
                        .fix(format!("choose from: {}", names.join(", ")))
                        .code_keeping_kind(ErrorCode::RestoreNoSuchSource),
                );
            }
        }
        let chosen = |s: &&Source| only.is_empty() || only.iter().any(|n| n == s.name());
        let picks = m.sources.iter().filter(chosen).map(|s| pick_of(snap, s)).collect();
        let others = m
            .sources
            .iter()
            .filter(|s| !chosen(s))
            .map(|s| s.path().into())
            .collect();
        Ok(Selection { picks, others })
    }

    /// The service as of its newest point (`at` = None) or as of `at`.
    /// The service is what its newest full snapshot and every snapshot and
    /// replication base since hold.
    ///
    /// ```
    /// use lifeboat::{Repository, RepoLocation, Selection, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
    ///
    /// # fn main() -> lifeboat::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("server.toml"), "listen = 8443\n").unwrap();
    /// let location = RepoLocation::local(dir.path().join("backups"));
    /// let repo = Repository::init(&location)?.locked("my-service")?;
    /// let source = SourceSpec { name: "server.toml".into(), path: dir.path().join("server.toml"), kind: SourceKind::File };
    /// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
    /// let (id, _) = lifeboat::snapshot::take(&repo, &[source], &options, &lifeboat::progress::Silent)?;
    ///
    /// let selection = Selection::newest(&Repository::open(&location)?.indexed()?, &[], None)?;
    /// assert_eq!(selection.picks.len(), 1);
    /// assert_eq!(selection.picks[0].snapshot, id);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// As of a time: each source comes back as the newest snapshot (or
    /// replicated commit) at or before `at` holds it, here the first of two.
    ///
    /// ```
    /// use lifeboat::{Repository, RepoLocation, RestoreOptions, Selection, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec, Target};
    ///
    /// # fn main() -> lifeboat::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("server.toml");
    /// let location = RepoLocation::local(dir.path().join("backups"));
    /// let repo = Repository::init(&location)?.locked("my-service")?;
    /// let source = SourceSpec { name: "server.toml".into(), path: file.clone(), kind: SourceKind::File };
    /// for (content, time) in [("listen = 80\n", "2026-01-01T00:00:00Z"), ("listen = 8443\n", "2026-02-01T00:00:00Z")] {
    ///     std::fs::write(&file, content).unwrap();
    ///     let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: Some(time.parse().unwrap()) };
    ///     lifeboat::snapshot::take(&repo, &[source.clone()], &options, &lifeboat::progress::Silent)?;
    /// }
    ///
    /// let repo = Repository::open(&location)?.indexed()?;
    /// let at: jiff::Timestamp = "2026-01-15T00:00:00Z".parse().unwrap();
    /// let selection = Selection::newest(&repo, &[], Some(at))?;
    /// assert_eq!(selection.picks[0].snapshot_time.to_string(), "2026-01-01T00:00:00Z");
    ///
    /// // Into an empty directory: each source at `<dir>` + its absolute path.
    /// let out = dir.path().join("drill");
    /// let options = RestoreOptions { target: Target::Dir(out.clone()), force: false, max_schema_version: None, keep: vec![], skip_integrity_check: false };
    /// lifeboat::restore::restore(&repo, &selection, &options, &lifeboat::progress::Silent)?;
    /// let restored = out.join(std::path::absolute(&file).unwrap().strip_prefix("/").unwrap());
    /// assert_eq!(std::fs::read_to_string(restored).unwrap(), "listen = 80\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn newest(repo: &Repository, only: &[String], at: Option<jiff::Timestamp>) -> Result<Selection> {
        Selection::newest_of(repo, only, at, None)
    }

    /// [`Selection::newest`] of the sources named in `service` (the
    /// configuration's), when given.
    pub fn newest_of(
        repo: &Repository,
        only: &[String],
        at: Option<jiff::Timestamp>,
        service: Option<&[String]>,
    ) -> Result<Selection> {
        let snaps = repo.snapshots()?;
        if snaps.is_empty() {
            return Err(Error::no_input(repo.location(), "the repository holds no snapshot yet")
                .fix("take one with `lifeboat snapshot`, or start `lifeboat replicate`")
                .code(ErrorCode::RestoreNoSnapshot));
        }
        // Every name stored, the newest snapshot's order first...
        let stored = stored_names(&snaps);
        unknown_names(only, &stored, "the repository")?;
        let names = service_names(&snaps, &stored, only, service);
        let mut picks = Vec::new();
        let others = stored
            .iter()
            .filter(|n| !names.contains(n))
            .filter_map(|n| {
                snaps
                    .iter()
                    .rev()
                    .find_map(|s| s.manifest.sources.iter().find(|x| x.name() == n))
                    .map(|x| x.path().into())
            })
            .collect();
        let mut checked = HashSet::new();
        for name in &names {
            if let Some(pick) = pick_newest(repo, &snaps, name, at, only, &mut checked)? {
                picks.push(pick);
            }
        }
        let picks = one_per_path(picks);
        if picks.is_empty() {
            let when = at.map(|t| format!(" at or before {t}")).unwrap_or_default();
            return Err(Error::no_input(
                repo.location(),
                format!(
                    "no snapshot{when} holds {}",
                    if only.is_empty() {
                        "anything".to_string()
                    } else {
                        only.join(", ")
                    }
                ),
            )
            .fix("choose a later --at; `lifeboat list --all` shows every point")
            .code(ErrorCode::RestoreBeforeHistory));
        }
        Ok(Selection { picks, others })
    }
}

/// The names the service is made of: those asked for in `only`, else the
/// configuration's sources, else what the newest full snapshot and
/// everything since hold (a source renamed or dropped long ago does not
/// come back). In `stored` order.
fn service_names(snaps: &[SnapshotRef], stored: &[String], only: &[String], service: Option<&[String]>) -> Vec<String> {
    let since = snaps
        .iter()
        .filter(|s| s.manifest.kind == crate::repo::manifest::SnapshotKind::Full)
        .map(|s| s.manifest.time)
        .next_back();
    let current = |n: &String| match service {
        Some(names) => names.contains(n),
        None => snaps
            .iter()
            .any(|s| since.is_none_or(|t| s.manifest.time >= t) && s.manifest.sources.iter().any(|x| x.name() == n)),
    };
    stored
        .iter()
        .filter(|n| only.contains(n) || (only.is_empty() && current(n)))
        .cloned()
        .collect()
}

/// Where source `name` comes back from: the newest service snapshot
/// holding it (at or before `at`), or its replication stream when that
/// reaches further. None when nothing holds it and the whole service is
/// restored.
fn pick_newest(
    repo: &Repository,
    snaps: &[SnapshotRef],
    name: &str,
    at: Option<jiff::Timestamp>,
    only: &[String],
    checked: &mut HashSet<Id>,
) -> Result<Option<Pick>> {
    let in_time = |s: &&SnapshotRef| at.is_none_or(|t| state_time(s).is_some_and(|st| st <= t));
    let snapshot = snaps
        .iter()
        .filter(in_time)
        .filter(|s| is_service_snapshot(s))
        .rev()
        .find_map(|s| s.manifest.sources.iter().find(|x| x.name() == name).map(|x| (s, x)));
    let replay = replay_for(repo, snaps, name, at, only, snapshot)?;
    let pick = match (replay, snapshot) {
        (Some((base, replay)), _) => {
            if checked.insert(base.id) {
                base.manifest.check_layout(&format!("snapshot {}", base.id.short()))?;
            }
            let source = base
                .manifest
                .sources
                .iter()
                .find(|x| x.name() == name)
                .expect("a base holds its database");
            Pick {
                replay: Some(Arc::new(replay)),
                ..pick_of(&base, source)
            }
        }
        (None, Some((snap, source))) => {
            if checked.insert(snap.id) {
                snap.manifest.check_layout(&format!("snapshot {}", snap.id.short()))?;
            }
            pick_of(snap, source)
        }
        (None, None) if only.is_empty() => return Ok(None),
        (None, None) => {
            let when = at.map(|t| format!(" at or before {t}")).unwrap_or_default();
            return Err(Error::no_input(name, format!("no snapshot{when} holds this source"))
                .fix("choose a later --at; `lifeboat list --all` shows every point")
                .code(ErrorCode::RestoreBeforeHistory));
        }
    };
    Ok(Some(pick))
}

/// The stream's base and replay for `name` when the database is replicated
/// and its stream reaches past `snapshot` (the newest snapshot holding it).
fn replay_for(
    repo: &Repository,
    snaps: &[SnapshotRef],
    name: &str,
    at: Option<jiff::Timestamp>,
    only: &[String],
    snapshot: Option<(&SnapshotRef, &Source)>,
) -> Result<Option<(SnapshotRef, Replay)>> {
    let target = at.map(pitr::Target::Time).unwrap_or(pitr::Target::Newest);
    let replicated = snaps.iter().any(|s| {
        !is_service_snapshot(s)
            && s.manifest
                .sources
                .iter()
                .any(|x| x.name() == name && matches!(x, Source::Sqlite(d) if d.replication.is_some()))
    });
    let may_replay = replicated && snapshot.is_none_or(|(_, src)| matches!(src, Source::Sqlite(_)));
    Ok(if may_replay {
        match pitr::plan_among(repo, snaps, Some(name), target) {
            Ok((base, replay)) => {
                // A last segment that cannot be read is the
                // restore's to report, if it needs it at all.
                let reach = replay.reach(repo).unwrap_or_else(|e| {
                    tracing::warn!(event = "restore.reach_unknown", db = %name, error = %e);
                    jiff::Timestamp::MAX
                });
                let point = at.map_or(reach, |t| reach.min(t));
                let newer = snapshot.is_none_or(|(s, _)| state_time(s).is_none_or(|st| point >= st));
                newer.then_some((base, replay))
            }
            // `T` before the stream's first base: only a snapshot
            // can give it (or, for the whole service, nothing).
            Err(e) if e.code == ErrorCode::RestoreBeforeHistory && (snapshot.is_some() || only.is_empty()) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    })
}

/// One source per path: the same file under two names (a source renamed
/// in the configuration) is restored once, from the newest.
fn one_per_path(picks: Vec<Pick>) -> Vec<Pick> {
    let mut by_path: Vec<Pick> = Vec::new();
    for p in picks {
        let path = crate::fsutil::absolute_normalized(std::path::Path::new(p.source.path()));
        let newer = |q: &Pick| p.snapshot_time > q.snapshot_time;
        match by_path
            .iter()
            .position(|q| crate::fsutil::absolute_normalized(std::path::Path::new(q.source.path())) == path)
        {
            Some(i) if newer(&by_path[i]) => by_path[i] = p,
            Some(_) => {}
            None => by_path.push(p),
        }
    }
    by_path
}

impl Selection {
    /// One replicated database right after commit `txid`.
    pub fn at_txid(repo: &Repository, only: &[String], txid: u64) -> Result<Selection> {
        if only.len() > 1 {
            return Err(Error::usage("--txid restores one database").fix("give one --only NAME"));
        }
        // A name no snapshot holds is a mistake, not "no replica yet" (which
        // --if-replica-exists would take for nothing to do).
        let snaps = repo.snapshots()?;
        if !snaps.is_empty() {
            unknown_names(only, &stored_names(&snaps), "the repository")?;
        }
        let (base, replay) =
            pitr::plan_among(repo, &snaps, only.first().map(String::as_str), pitr::Target::Txid(txid))?;
        base.manifest.check_layout(&format!("snapshot {}", base.id.short()))?;
        let source = base
            .manifest
            .sources
            .iter()
            .find(|x| x.name() == replay.name)
            .expect("a base holds its database");
        Ok(Selection {
            picks: vec![Pick {
                replay: Some(Arc::new(replay)),
                ..pick_of(&base, source)
            }],
            others: Vec::new(),
        })
    }
}

impl Selection {
    /// ```
    /// use lifeboat::{Repository, RepoLocation, Selection, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
    ///
    /// # fn main() -> lifeboat::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let tenants = dir.path().join("tenants");
    /// for t in ["41", "42"] {
    ///     std::fs::create_dir_all(tenants.join(t)).unwrap();
    ///     std::fs::write(tenants.join(t).join("config.toml"), t).unwrap();
    /// }
    /// let location = RepoLocation::local(dir.path().join("backups"));
    /// let repo = Repository::init(&location)?.locked("my-service")?;
    /// let source = SourceSpec { name: "tenants".into(), path: tenants, kind: SourceKind::Directory { exclude: vec![] } };
    /// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
    /// lifeboat::snapshot::take(&repo, &[source], &options, &lifeboat::progress::Silent)?;
    ///
    /// // One tenant's folder, as a source of its own.
    /// let all = Selection::newest(&Repository::open(&location)?.indexed()?, &[], None)?;
    /// let one = all.narrow(&["42".into()], &[])?;
    /// assert_eq!(one.picks.len(), 1);
    /// assert!(one.picks[0].source.path().ends_with("/tenants/42"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Keep, of the directory sources, only the entries matching one of
    /// `patterns` (globs over paths inside the source, `tenants/42` or
    /// `tenants/*/config.toml`), with everything beneath a matching folder.
    /// Each topmost match becomes a source of its own, so an in-place
    /// restore replaces that subtree and nothing beside it. Other sources
    /// are left out unless named with `--only` (`named`).
    pub fn narrow(self, patterns: &[String], named: &[String]) -> Result<Selection> {
        if patterns.is_empty() {
            return Ok(self);
        }
        let globs = crate::files::build_excludes(patterns, "--include")
            .map_err(|e| Error::usage(e.problem).fix("write a glob such as tenants/42 or tenants/*/config.toml"))?;
        let mut picks = Vec::new();
        let mut others = self.others;
        let mut any_match = false;
        for pick in self.picks {
            let Source::Directory(d) = &pick.source else {
                if named.iter().any(|n| n == pick.source.name()) {
                    picks.push(pick);
                } else {
                    others.push(pick.source.path().into());
                }
                continue;
            };
            let mut matched: Vec<&str> = Vec::new();
            for e in d.entries.iter().filter(|e| !e.path.is_empty()) {
                let under_match = matched.iter().any(|m| e.path.starts_with(&format!("{m}/")));
                if !under_match && globs.is_match(&e.path) {
                    matched.push(&e.path);
                }
            }
            if matched.is_empty() {
                others.push(d.path.clone().into());
            }
            any_match |= !matched.is_empty();
            for top in matched {
                let reroot = |e: &Entry| -> Option<Entry> {
                    let rel = if e.path == top {
                        String::new()
                    } else {
                        e.path.strip_prefix(&format!("{top}/"))?.to_string()
                    };
                    Some(Entry { path: rel, ..e.clone() })
                };
                let entries: Vec<Entry> = d.entries.iter().filter_map(reroot).collect();
                let name = top.rsplit('/').next().unwrap_or(top).to_string();
                let path = format!("{}/{top}", d.path);
                // A database found inside the directory comes back as one:
                // its stale -wal/-shm are in the way too.
                let database = entries[0].database_source(&name, &path);
                let source = match (entries[0].kind, database) {
                    (_, Some(db)) => Source::Sqlite(db),
                    (EntryKind::Dir, _) => Source::Directory(DirectorySource {
                        name,
                        path,
                        exclude: d.exclude.clone(),
                        entries,
                    }),
                    (_, None) => Source::File(FileSource {
                        name,
                        path,
                        entry: entries.into_iter().next().expect("the match itself"),
                    }),
                };
                picks.push(Pick {
                    source,
                    snapshot: pick.snapshot,
                    snapshot_time: pick.snapshot_time,
                    replay: None,
                });
            }
        }
        if !any_match {
            return Err(Error::usage(format!(
                "--include {} matches nothing in the directories restored",
                patterns.join(", ")
            ))
            .fix("patterns are paths inside a directory source, e.g. tenants/42; `lifeboat show ID` lists them")
            .code(ErrorCode::RestoreIncludeMatchesNothing));
        }
        Ok(Selection { picks, others })
    }
}
