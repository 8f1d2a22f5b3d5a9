//! `forget`: decide which snapshots to keep (restic's rules, `retention`),
//! which WAL history to keep (`keep_wal`), and remove the rest: manifests
//! and segments. Data only the removed snapshots used is left for `prune`.
//!
//! Replication bases are snapshots too, grouped per stream, with rules of
//! their own: the newest base of a stream is always kept (the replicator
//! folds onto it), and with a WAL window (24 h unless told otherwise) every
//! base inside it and the newest base before it are kept, so any point in
//! the window restores. Segments
//! that no kept base leads to, or that lie wholly before the window's first
//! base, are deleted: outside the window the restore points are the bases.
//!
//! The rules come in sets ([`RuleSets`]: per tag, per kind, and the rest),
//! and exactly one set judges each snapshot (`rules.rs` gives the order).
//! A [`SnapshotFilter`] narrows what forget considers at all: a snapshot
//! outside it is neither judged nor removed, and a stream none of whose
//! bases it passes keeps every segment.

mod rules;

pub use rules::{RuleSet, RuleSets};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::keys;
use crate::repo::manifest::Source;
use crate::repo::{Repository, SnapshotFilter, SnapshotRef};
use crate::retention::Candidate;

/// How far back every commit stays restorable when no window is given: a
/// day, the window the services' own guides keep (seeds 002 and 004).
/// Without it, `forget --keep-last 1` would drop all point-in-time history
/// older than the newest base.
pub const DEFAULT_KEEP_WAL: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The WAL history window (`--keep-wal`): inside it every commit restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalWindow {
    /// Every commit of the last this long (from now) restores.
    Within(jiff::SignedDuration),
    /// Every commit after the oldest kept base, however old.
    Unlimited,
}

impl std::fmt::Display for WalWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalWindow::Within(d) => f.write_str(&human(*d)),
            WalWindow::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for WalWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The reason of a snapshot no rule set covers: it is kept.
pub const NOT_COVERED: &str = "no rule set covers it";

/// What [`plan`] keeps.
pub struct ForgetOptions {
    /// Snapshot rules: one set judges each snapshot, applied per group
    /// (host and sources; per stream for replication bases) to the group's
    /// snapshots that set judges.
    pub rules: RuleSets,
    /// Which snapshots forget considers at all; the others stay untouched.
    pub filter: SnapshotFilter,
    /// WAL history window (`--keep-wal`); [`DEFAULT_KEEP_WAL`] when `None`
    /// and there are snapshot rules. With neither, forget refuses.
    pub keep_wal: Option<WalWindow>,
    /// Calendar buckets are counted in this zone.
    pub tz: jiff::tz::TimeZone,
    /// The present, from which `keep_wal` is measured back.
    pub now: jiff::Timestamp,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The snapshot's manifest id.
    pub id: Id,
    /// The snapshot's recorded time, RFC 3339.
    pub time: String,
    /// Host that took it.
    pub host: String,
    /// Full, partial or replication base.
    pub kind: crate::repo::manifest::SnapshotKind,
    /// Its tags.
    pub tags: Vec<String>,
    /// Host and sources (and the stream for bases): what retention counts
    /// together.
    pub group: String,
    /// Whether it stays; `false` means [`apply`] deletes its manifest.
    pub keep: bool,
    /// The name of the rule set that judged it ([`RuleSet::name`]);
    /// `None` when no set covers it (it is then kept, unless it is a
    /// replication base, which the WAL rules decide).
    pub rule_set: Option<String>,
    /// Every rule that kept it; empty when removed.
    pub reasons: Vec<String>,
    /// The settings that kept it, as `[retention]` spells them
    /// (`keep_daily`, `keep_wal` for the WAL rules), each once.
    pub rules: Vec<String>,
}

/// What [`plan`] deletes of one replication stream's WAL segments.
#[derive(Debug, Clone, Serialize)]
pub struct StreamPlan {
    /// The stream's name (as in `wal/<stream>/`).
    pub stream: String,
    /// Segments the stream holds now.
    pub segments: usize,
    /// Stored bytes of those segments.
    pub bytes: u64,
    /// Segments ending at or before this txid are deleted.
    pub cutoff_txid: u64,
    /// Segments to delete.
    pub delete_segments: usize,
    /// Stored bytes of the segments to delete.
    pub delete_bytes: u64,
    /// Their repository keys; not serialized.
    #[serde(skip)]
    pub delete_keys: Vec<String>,
}

/// Everything `forget` would remove, decided without deleting anything
/// (`--dry-run` prints it; [`apply`] carries it out).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetPlan {
    /// One per snapshot the filter passes, kept or not, in listing order.
    pub verdicts: Vec<Verdict>,
    /// Snapshots outside the filter: neither judged nor removed.
    pub untouched: usize,
    /// One per replication stream.
    pub wal: Vec<StreamPlan>,
    /// The window applied, and whether it was the default.
    pub wal_window: WalWindow,
    /// `true` when no window was given and [`DEFAULT_KEEP_WAL`] applied.
    pub wal_window_default: bool,
}

impl ForgetPlan {
    /// The verdicts of the snapshots to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| !v.keep)
    }
}

fn stream_of(s: &SnapshotRef) -> Option<(String, u64)> {
    if s.manifest.kind != crate::repo::manifest::SnapshotKind::Base {
        return None;
    }
    s.manifest.sources.iter().find_map(|src| match src {
        Source::Sqlite(d) => d.replication.as_ref().map(|r| (r.stream.clone(), r.txid)),
        _ => None,
    })
}

fn group_key(s: &SnapshotRef) -> String {
    let mut paths: Vec<&str> = s.manifest.sources.iter().map(|x| x.path()).collect();
    paths.sort_unstable();
    match stream_of(s) {
        Some((stream, _)) => format!("{} base:{} {}", s.manifest.host, stream, paths.join(",")),
        None => format!("{} {}", s.manifest.host, paths.join(",")),
    }
}

/// Decide what to keep, reading only manifests and the segment listing.
/// Fails with [`ErrorKind::Usage`](crate::ErrorKind::Usage) when no rule is
/// given or when the rules would remove every snapshot of a group. Needs no
/// lock: it changes nothing.
///
/// ```
/// use lifeboat::forget::{ForgetOptions, RuleSets, apply, plan};
/// use lifeboat::retention::{Count, Policy};
/// use lifeboat::{Repository, RepoLocation, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("server.toml"), "listen = 8443\n").unwrap();
/// let repo = Repository::init(&RepoLocation::local(dir.path().join("backups")))?.locked("my-service")?;
/// let source = SourceSpec { name: "server.toml".into(), path: dir.path().join("server.toml"), kind: SourceKind::File };
/// for day in ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"] {
///     let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: Some(day.parse().unwrap()) };
///     lifeboat::snapshot::take(&repo, &[source.clone()], &options, &lifeboat::progress::Silent)?;
/// }
///
/// // `forget --keep-last 2`: decide first (what `--dry-run` shows), then apply.
/// let options = ForgetOptions {
///     rules: RuleSets::single("command line", Policy { last: Some(Count::N(2)), ..Policy::default() }),
///     filter: Default::default(),
///     keep_wal: None,
///     tz: jiff::tz::TimeZone::UTC,
///     now: jiff::Timestamp::now(),
/// };
/// let decided = plan(&repo, &options)?;
/// let removed: Vec<&str> = decided.removed().map(|v| v.time.as_str()).collect();
/// assert_eq!(removed, ["2026-01-01T00:00:00Z"]);
/// let report = apply(&repo, &decided)?;
/// assert_eq!((report.removed_snapshots, report.kept_snapshots), (1, 2));
/// assert_eq!(repo.snapshots()?.len(), 2);
/// # Ok(())
/// # }
/// ```
///
/// The data only the removed snapshots used stays until
/// [`prune`](crate::commands::prune::prune) deletes it.
pub fn plan<S>(repo: &Repository<S>, opts: &ForgetOptions) -> Result<ForgetPlan> {
    if opts.rules.is_empty() && opts.keep_wal.is_none() {
        return Err(Error::usage("no retention rule given: forget would remove nothing")
            .fix("give rules such as --keep-daily 7 --keep-weekly 4 --keep-wal 24h, or a [retention] section"));
    }
    let (snaps, untouched): (Vec<SnapshotRef>, Vec<SnapshotRef>) = repo
        .snapshots_whole()?
        .into_iter()
        .partition(|s| opts.filter.matches(&s.manifest));
    let times = snapshot_times(&snaps)?;
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in snaps.iter().enumerate() {
        groups.entry(group_key(s)).or_default().push(i);
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; snaps.len()];
    let wal_window = opts.keep_wal.unwrap_or(WalWindow::Within(DEFAULT_KEEP_WAL));
    let window = match wal_window {
        WalWindow::Within(w) => Some(w),
        WalWindow::Unlimited => None,
    };
    let window_start = window.map(|w| opts.now - w);
    let judge = Judge {
        snaps: &snaps,
        times: &times,
        opts,
        window,
        window_start,
    };
    for (group, members) in &groups {
        judge.group(group, members, &mut verdicts)?;
    }
    let verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|v| v.expect("every snapshot is in a group"))
        .collect();
    let wal = plan_wal(repo, &snaps, &times, &verdicts, &untouched, window_start)?;
    Ok(ForgetPlan {
        verdicts,
        untouched: untouched.len(),
        wal,
        wal_window,
        wal_window_default: opts.keep_wal.is_none(),
    })
}

/// Each snapshot's time.
fn snapshot_times(snaps: &[SnapshotRef]) -> Result<Vec<jiff::Timestamp>> {
    Ok(snaps.iter().map(|s| s.manifest.time).collect())
}

/// What every group's verdicts are decided from.
struct Judge<'a> {
    snaps: &'a [SnapshotRef],
    times: &'a [jiff::Timestamp],
    opts: &'a ForgetOptions,
    /// The WAL window, unless unlimited, and its start.
    window: Option<jiff::SignedDuration>,
    window_start: Option<jiff::Timestamp>,
}

impl Judge<'_> {
    /// The verdicts of one group's snapshots (`members`, indexes into
    /// `snaps`): each rule set's reasons, the set applied to the members it
    /// judges, and for a stream's bases the WAL rules'. Refuses a set that
    /// would keep none of the group's snapshots it judges.
    fn group(&self, group: &str, members: &[usize], verdicts: &mut [Option<Verdict>]) -> Result<()> {
        let bases = members.iter().any(|&i| stream_of(&self.snaps[i]).is_some());
        // Each member's set, and the reasons that set gives it: a set counts
        // (keep_last, keep_daily ...) only among the snapshots it judges.
        let chosen: Vec<Option<&RuleSet>> = members
            .iter()
            .map(|&i| {
                let m = &self.snaps[i].manifest;
                self.opts.rules.choose(m.kind, &m.tags)
            })
            .collect();
        let mut by_set: Vec<Vec<String>> = vec![Vec::new(); members.len()];
        let mut settings: Vec<Vec<String>> = vec![Vec::new(); members.len()];
        let mut done = vec![false; members.len()];
        for k in 0..members.len() {
            let Some(set) = chosen[k] else { continue };
            if done[k] {
                continue;
            }
            let judged: Vec<usize> = (k..members.len())
                .filter(|&j| chosen[j].is_some_and(|c| std::ptr::eq(c, set)))
                .collect();
            let candidates: Vec<Candidate> = judged
                .iter()
                .map(|&j| Candidate {
                    time: self.times[members[j]],
                    tags: &self.snaps[members[j]].manifest.tags,
                })
                .collect();
            let decisions = crate::retention::apply_at(&set.policy, &candidates, &self.opts.tz, self.opts.now);
            // (A stream's newest base is always kept, so its group never empties.)
            if !bases && !decisions.iter().any(|d| d.keep) {
                // restic refuses too: a rule that keeps nothing of a group is
                // almost always a mistake (a misspelt tag, say).
                return Err(Error::usage(format!(
                    "the {} rules ({}) would remove every snapshot they judge of group `{group}`",
                    set.name, set.policy
                ))
                .fix("add a rule that keeps at least one of them, e.g. --keep-last 1 (keep_last = 1 in a config)"));
            }
            for (&j, d) in judged.iter().zip(decisions) {
                by_set[j] = d.reasons.iter().map(|r| r.to_string()).collect();
                for key in d.reasons.iter().filter_map(|r| r.setting()) {
                    if !settings[j].iter().any(|k| k == key) {
                        settings[j].push(key.to_string());
                    }
                }
                done[j] = true;
            }
        }
        // WAL rules, for a stream's bases.
        let head = members
            .iter()
            .copied()
            .max_by_key(|&i| stream_of(&self.snaps[i]).map(|(_, t)| t));
        let anchor = self.window_start.and_then(|start| {
            members
                .iter()
                .copied()
                .filter(|&i| self.times[i] < start)
                .max_by_key(|&i| stream_of(&self.snaps[i]).map(|(_, t)| t))
        });
        for (k, &i) in members.iter().enumerate() {
            let s = &self.snaps[i];
            let mut reasons: Vec<String> = match chosen[k] {
                Some(_) => std::mem::take(&mut by_set[k]),
                // No set covers it: kept, never deleted by omission; only
                // the WAL rules decide about bases.
                None if !bases => vec![NOT_COVERED.into()],
                None => Vec::new(),
            };
            let mut rules = std::mem::take(&mut settings[k]);
            let set_reasons = reasons.len();
            if bases {
                if Some(i) == head {
                    reasons.push("newest base of its stream".into());
                }
                if let (Some(start), Some(w)) = (self.window_start, self.window)
                    && self.times[i] >= start
                {
                    reasons.push(format!("within WAL window {}", human(w)));
                }
                if Some(i) == anchor {
                    reasons.push("WAL window's starting base".into());
                }
            }
            if reasons.len() > set_reasons {
                rules.push("keep_wal".into());
            }
            verdicts[i] = Some(Verdict {
                id: s.id,
                time: s.manifest.time.to_string(),
                host: s.manifest.host.clone(),
                kind: s.manifest.kind,
                tags: s.manifest.tags.clone(),
                group: group.to_string(),
                keep: !reasons.is_empty(),
                rule_set: chosen[k].map(|set| set.name.clone()),
                reasons,
                rules,
            });
        }
        Ok(())
    }
}

/// Per stream: the segments no kept base leads to, or wholly before the
/// base that starts the WAL window. The bases outside the filter
/// (`untouched`) count as kept; a stream with no base inside it is left
/// alone.
fn plan_wal<S>(
    repo: &Repository<S>,
    snaps: &[SnapshotRef],
    times: &[jiff::Timestamp],
    verdicts: &[Verdict],
    untouched: &[SnapshotRef],
    window_start: Option<jiff::Timestamp>,
) -> Result<Vec<StreamPlan>> {
    let mut segments: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
    for (key, size) in repo.list_objects(keys::Kind::Segment)? {
        let Some(stream) = keys::segment_stream(&key) else {
            continue;
        };
        if let Some((_, last)) = keys::parse_segment(&key) {
            segments
                .entry(stream.to_string())
                .or_default()
                .push((key.clone(), last, size));
        }
    }
    let mut out = Vec::new();
    for (stream, segs) in segments {
        let of_stream = |s: &SnapshotRef| stream_of(s).filter(|(st, _)| *st == stream).map(|(_, txid)| txid);
        if !snaps.iter().any(|s| of_stream(s).is_some()) {
            // The filter passed none of its bases: forget does not consider it.
            continue;
        }
        // An untouched base whose time does not parse still protects the
        // segments after it; it just cannot start the window.
        let kept: Vec<(u64, Option<jiff::Timestamp>)> = snaps
            .iter()
            .zip(times)
            .zip(verdicts)
            .filter(|(_, v)| v.keep)
            .filter_map(|((s, &at), _)| of_stream(s).map(|txid| (txid, Some(at))))
            .chain(
                untouched
                    .iter()
                    .filter_map(|s| of_stream(s).map(|txid| (txid, Some(s.manifest.time)))),
            )
            .collect();
        let Some(oldest) = kept.iter().map(|(t, _)| *t).min() else {
            // No base at all: a stream still taking its first one, or one
            // this version cannot place. Leave it.
            continue;
        };
        let anchor = window_start.and_then(|start| {
            kept.iter()
                .filter(|(_, at)| at.is_some_and(|at| at < start))
                .map(|(t, _)| *t)
                .max()
        });
        let cutoff = anchor.unwrap_or(oldest).max(oldest);
        let mut plan = StreamPlan {
            stream: stream.clone(),
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.2).sum(),
            cutoff_txid: cutoff,
            delete_segments: 0,
            delete_bytes: 0,
            delete_keys: Vec::new(),
        };
        for (key, last, size) in segs {
            if last <= cutoff {
                plan.delete_segments += 1;
                plan.delete_bytes += size;
                plan.delete_keys.push(key);
            }
        }
        out.push(plan);
    }
    Ok(out)
}

/// What [`apply`] removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ForgetReport {
    /// Manifests deleted.
    pub removed_snapshots: usize,
    /// Snapshots left.
    pub kept_snapshots: usize,
    /// WAL segments deleted.
    pub deleted_segments: usize,
    /// Stored bytes of those segments.
    pub deleted_segment_bytes: u64,
}

/// Remove what `plan` decided: manifests first (a restore that listed one
/// just before finds it gone and says so), then segments.
pub fn apply<S>(repo: &Repository<S>, plan: &ForgetPlan) -> Result<ForgetReport> {
    let mut report = ForgetReport {
        kept_snapshots: plan.verdicts.iter().filter(|v| v.keep).count(),
        ..Default::default()
    };
    for v in plan.removed() {
        repo.delete_object(&keys::snapshot(&v.id))?;
        report.removed_snapshots += 1;
        tracing::info!(event = "forget.removed", snapshot = %v.id.short(), time = %v.time);
    }
    for s in &plan.wal {
        for key in &s.delete_keys {
            repo.delete_object(key)?;
        }
        report.deleted_segments += s.delete_segments;
        report.deleted_segment_bytes += s.delete_bytes;
        if s.delete_segments > 0 {
            tracing::info!(event = "forget.wal_deleted", stream = %s.stream, segments = s.delete_segments, cutoff_txid = s.cutoff_txid);
        }
    }
    Ok(report)
}

fn human(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    match secs {
        // A day reads as 24h, the way operators write the window.
        s if s % 86400 == 0 && s > 86400 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
