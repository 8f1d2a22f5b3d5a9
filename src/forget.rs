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

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::manifest::{Source, snapshot_key};
use crate::repo::segment::parse_key;
use crate::repo::{Repository, SnapshotRef};
use crate::retention::{Candidate, Policy};

/// How far back every commit stays restorable when no window is given: a
/// day, the window the services' own guides keep (seeds 002 and 004).
/// Without it, `forget --keep-last 1` would drop all point-in-time history
/// older than the newest base.
pub const DEFAULT_KEEP_WAL: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The WAL history window (`--keep-wal`): inside it every commit restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalWindow {
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

pub struct ForgetOptions {
    pub policy: Policy,
    /// WAL history window (`--keep-wal`); [`DEFAULT_KEEP_WAL`] when `None`
    /// and there are snapshot rules. With neither, forget refuses.
    pub keep_wal: Option<WalWindow>,
    /// Calendar buckets are counted in this zone.
    pub tz: jiff::tz::TimeZone,
    pub now: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub id: Id,
    pub time: String,
    pub host: String,
    pub kind: crate::repo::manifest::SnapshotKind,
    pub tags: Vec<String>,
    /// Host and sources (and the stream for bases): what retention counts
    /// together.
    pub group: String,
    pub keep: bool,
    /// Every rule that kept it; empty when removed.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamPlan {
    pub stream: String,
    pub segments: usize,
    pub bytes: u64,
    /// Segments ending at or before this txid are deleted.
    pub cutoff_txid: u64,
    pub delete_segments: usize,
    pub delete_bytes: u64,
    #[serde(skip)]
    pub delete_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetPlan {
    pub verdicts: Vec<Verdict>,
    pub wal: Vec<StreamPlan>,
    /// The window applied, and whether it was the default.
    pub wal_window: WalWindow,
    pub wal_window_default: bool,
}

impl ForgetPlan {
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

pub fn plan(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetPlan> {
    if opts.policy.is_empty() && opts.keep_wal.is_none() {
        return Err(Error::usage("no retention rule given: forget would remove nothing")
            .fix("give rules such as --keep-daily 7 --keep-weekly 4 --keep-wal 24h, or a [retention] section"));
    }
    let snaps = repo.snapshots_whole()?;
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
    let wal = plan_wal(repo, &snaps, &times, &verdicts, window_start)?;
    Ok(ForgetPlan {
        verdicts,
        wal,
        wal_window,
        wal_window_default: opts.keep_wal.is_none(),
    })
}

/// Each snapshot's time, refusing one that does not parse.
fn snapshot_times(snaps: &[SnapshotRef]) -> Result<Vec<jiff::Timestamp>> {
    snaps
        .iter()
        .map(|s| {
            s.manifest.timestamp().ok_or_else(|| {
                Error::bad_data(
                    format!("snapshot {}", s.id.short()),
                    format!("time `{}` is not RFC 3339", s.manifest.time),
                )
            })
        })
        .collect::<Result<_>>()
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
    /// `snaps`): the retention policy's reasons, and for a stream's bases
    /// the WAL rules'. Refuses rules that would keep none of a group.
    fn group(&self, group: &str, members: &[usize], verdicts: &mut [Option<Verdict>]) -> Result<()> {
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&i| Candidate {
                time: self.times[i],
                tags: &self.snaps[i].manifest.tags,
            })
            .collect();
        let decisions = if self.opts.policy.is_empty() {
            None
        } else {
            Some(crate::retention::apply_at(
                &self.opts.policy,
                &candidates,
                &self.opts.tz,
                self.opts.now,
            ))
        };
        let bases = members.iter().any(|&i| stream_of(&self.snaps[i]).is_some());
        // (A stream's newest base is always kept, so its group never empties.)
        if let Some(d) = &decisions
            && !bases
            && !d.iter().any(|d| d.keep)
        {
            // restic refuses too: a rule that keeps nothing of a group is
            // almost always a mistake (a misspelt tag, say).
            return Err(Error::usage(format!(
                "the rules ({}) would remove every snapshot of group `{group}`",
                self.opts.policy
            ))
            .fix("add a rule that keeps at least one of them, e.g. --keep-last 1"));
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
            let mut reasons: Vec<String> = match &decisions {
                Some(d) => d[k].reasons.iter().map(|r| r.to_string()).collect(),
                // No snapshot rule: only the WAL rules decide about bases.
                None if !bases => vec!["no snapshot rule".into()],
                None => Vec::new(),
            };
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
            verdicts[i] = Some(Verdict {
                id: s.id,
                time: s.manifest.time.clone(),
                host: s.manifest.host.clone(),
                kind: s.manifest.kind,
                tags: s.manifest.tags.clone(),
                group: group.to_string(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
        Ok(())
    }
}

/// Per stream: the segments no kept base leads to, or wholly before the
/// base that starts the WAL window.
fn plan_wal(
    repo: &Repository,
    snaps: &[SnapshotRef],
    times: &[jiff::Timestamp],
    verdicts: &[Verdict],
    window_start: Option<jiff::Timestamp>,
) -> Result<Vec<StreamPlan>> {
    let mut segments: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
    for (key, size) in repo.storage.list("wal")? {
        let mut parts = key.split('/');
        let (Some("wal"), Some(stream)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some((_, last)) = parse_key(&key) {
            segments
                .entry(stream.to_string())
                .or_default()
                .push((key.clone(), last, size));
        }
    }
    let mut out = Vec::new();
    for (stream, segs) in segments {
        let kept: Vec<(u64, jiff::Timestamp)> = snaps
            .iter()
            .zip(times)
            .zip(verdicts)
            .filter(|(_, v)| v.keep)
            .filter_map(|((s, &at), _)| match stream_of(s) {
                Some((st, txid)) if st == stream => Some((txid, at)),
                _ => None,
            })
            .collect();
        let Some(oldest) = kept.iter().map(|(t, _)| *t).min() else {
            // No base at all: a stream still taking its first one, or one
            // this version cannot place. Leave it.
            continue;
        };
        let anchor = window_start.and_then(|start| kept.iter().filter(|(_, at)| *at < start).map(|(t, _)| *t).max());
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

#[derive(Debug, Default, Clone, Serialize)]
pub struct ForgetReport {
    pub removed_snapshots: usize,
    pub kept_snapshots: usize,
    pub deleted_segments: usize,
    pub deleted_segment_bytes: u64,
}

/// Remove what `plan` decided: manifests first (a restore that listed one
/// just before finds it gone and says so), then segments.
pub fn apply(repo: &Repository, plan: &ForgetPlan) -> Result<ForgetReport> {
    let mut report = ForgetReport {
        kept_snapshots: plan.verdicts.iter().filter(|v| v.keep).count(),
        ..Default::default()
    };
    for v in plan.removed() {
        repo.storage.delete(&snapshot_key(&v.id))?;
        report.removed_snapshots += 1;
        tracing::info!(event = "forget.removed", snapshot = %v.id.short(), time = %v.time);
    }
    for s in &plan.wal {
        for key in &s.delete_keys {
            repo.storage.delete(key)?;
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
