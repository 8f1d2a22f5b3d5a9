//! Point-in-time restore: the newest base at or before the target, then the
//! WAL segments after it, commit by commit, up to the target. Segments are
//! fetched in parallel and applied in order; each is checked by its hash,
//! and the chain must be contiguous: a missing range is reported, never
//! skipped over. The result then goes through restore's usual checks
//! (`PRAGMA integrity_check`, staging, never clobbering).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, ErrorCode, IoContext, Result};
use crate::repo::manifest::{ReplicationPoint, Source};
use crate::repo::segment::Segment;
use crate::repo::{Repository, SnapshotRef};

/// Which state of a replicated database a point-in-time restore gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The state after the newest commit the repository holds.
    Newest,
    /// The state right after this commit.
    Txid(u64),
    /// The state as of this instant: every commit seen at or before it.
    Time(jiff::Timestamp),
}

/// Where a restore landed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Landed {
    /// The last commit applied (the base's own txid when none was).
    pub txid: u64,
    /// When that commit was seen (the base's time, if no commit was applied).
    #[serde(with = "crate::rfc3339")]
    pub time: jiff::Timestamp,
    /// Txid of the base the replay started from.
    pub base_txid: u64,
    /// WAL segments read and applied.
    pub segments: usize,
    /// Commits applied on the base.
    pub commits_applied: u64,
}

/// A base and the segments to apply on it.
#[derive(Debug)]
pub struct Replay {
    /// The database's source name.
    pub name: String,
    /// The state asked for.
    pub target: Target,
    /// The base's stream and txid: where the replay starts.
    pub base_point: ReplicationPoint,
    base_time: jiff::Timestamp,
    /// (first, last, key), contiguous from the base.
    segments: Vec<(u64, u64, String)>,
    /// A later point exists after a gap: the chain cannot reach past its
    /// end. (first missing txid, the later base's txid, its time)
    gap_after: Option<(u64, u64, jiff::Timestamp)>,
    /// When the chain reaches every commit before that gap: until when the
    /// replicator is known to have watched with nothing more committed.
    watched_until_ns: Option<i64>,
    /// Where [`Replay::apply`] stopped; `None` until it has run.
    pub landed: Mutex<Option<Landed>>,
}

fn replication_of(s: &SnapshotRef, name: Option<&str>) -> Option<(String, ReplicationPoint)> {
    s.manifest.sources.iter().find_map(|src| match src {
        Source::Sqlite(d) if name.is_none_or(|n| n == d.name) => d.replication.clone().map(|r| (d.name.clone(), r)),
        _ => None,
    })
}

/// Choose the base and segments for `target`. `name` picks the database
/// when the repository replicates more than one.
pub fn plan(repo: &Repository, name: Option<&str>, target: Target) -> Result<(SnapshotRef, Replay)> {
    plan_among(repo, &repo.snapshots()?, name, target)
}

/// `plan` among snapshots already listed.
pub fn plan_among<S>(
    repo: &Repository<S>,
    snaps: &[SnapshotRef],
    name: Option<&str>,
    target: Target,
) -> Result<(SnapshotRef, Replay)> {
    let (name, stream, mut bases) = stream_bases(repo, snaps, name)?;
    let chosen = match target {
        Target::Newest => Some(bases.len() - 1),
        Target::Txid(n) => bases.iter().rposition(|(_, _, r)| r.txid <= n),
        Target::Time(t) => bases.iter().rposition(|(s, _, _)| s.manifest.time <= t),
    };
    let Some(i) = chosen else {
        let first = &bases[0];
        return Err(Error::no_input(
            &name,
            format!(
                "the target is before the oldest base (txid {}, {})",
                first.2.txid, first.0.manifest.time
            ),
        )
        .fix("choose a later --at / --txid; `lifeboat list` shows the bases")
        .code(ErrorCode::RestoreBeforeHistory));
    };
    let next_base = bases.get(i + 1).map(|(s, _, r)| (r.txid, r.after_gap, s.manifest.time));
    let next_watched = bases.get(i + 1).and_then(|(_, _, r)| r.watched_until_ns);
    let (snap, _, point) = bases.swap_remove(i);
    let snap = snap.clone();
    let (segments, next) = chain(repo, &stream, point.txid)?;
    // A later base that the chain does not reach, or that follows a loss of
    // continuity, marks a gap: commits between the chain's end and that
    // base are not in the repository (and some may not be numbered at all).
    let gap_after = next_base
        .filter(|(b, after_gap, _)| *b > next || (*after_gap && *b == next))
        .map(|(b, _, time)| (next, b, time));
    // Only a chain that reaches the gap's base shipped everything the
    // replicator had read: then its watch stands for the stretch after it.
    let watched_until_ns = match &gap_after {
        Some((from, b, _)) if b == from => next_watched,
        _ => None,
    };
    let base_time = snap.manifest.time;
    refuse_past_reach(&name, target, next, &gap_after)?;
    let replay = Replay {
        name,
        target,
        base_point: point,
        base_time,
        segments,
        gap_after,
        watched_until_ns,
        landed: Mutex::new(None),
    };
    Ok((snap, replay))
}

/// A base: its snapshot, the database's name and its replication point.
type Base<'s> = (&'s SnapshotRef, String, ReplicationPoint);

/// A segment: its first and last txid, and its key.
type SegmentKey = (u64, u64, String);

/// A replicated database's bases, as (snapshot, database name, point):
/// `name`'s, or the only replicated database's. Only its current stream's
/// (a stream per host and path; the newest base says which is current),
/// oldest first. Returns the name, the stream and the bases.
fn stream_bases<'s, S>(
    repo: &Repository<S>,
    snaps: &'s [SnapshotRef],
    name: Option<&str>,
) -> Result<(String, String, Vec<Base<'s>>)> {
    let mut bases: Vec<Base> = snaps
        .iter()
        .filter_map(|s| replication_of(s, name).map(|(n, r)| (s, n, r)))
        .collect();
    let mut names: Vec<&str> = bases.iter().map(|(_, n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let names: Vec<String> = names.into_iter().map(String::from).collect();
    if bases.is_empty() {
        return Err(Error::no_input(
            repo.location(),
            match name {
                Some(n) => format!("no replicated database named {n}"),
                None => "no replicated database (no base from `lifeboat replicate`)".into(),
            },
        )
        .fix("run `lifeboat replicate` first, or restore a snapshot by id")
        .code(ErrorCode::RestoreNoReplica));
    }
    if names.len() > 1 {
        return Err(Error::usage(format!(
            "the repository replicates several databases: {}",
            names.join(", ")
        ))
        .fix("pick one with --only NAME"));
    }
    let name = names[0].clone();
    bases.sort_by_key(|(s, _, r)| (r.txid, s.manifest.time));
    let stream = bases.last().expect("not empty").2.stream.clone();
    bases.retain(|(_, _, r)| r.stream == stream);
    Ok((name, stream, bases))
}

/// The stream's segments that follow on from the base at `base_txid`
/// without a hole, and the first txid after them.
fn chain<S>(repo: &Repository<S>, stream: &str, base_txid: u64) -> Result<(Vec<SegmentKey>, u64)> {
    let mut keys: Vec<SegmentKey> = repo.segments(stream)?;
    keys.sort();
    let mut segments = Vec::new();
    let mut next = base_txid + 1;
    for (f, l, k) in keys {
        if f == next {
            segments.push((f, l, k));
            next = l + 1;
        }
    }
    Ok((segments, next))
}

/// A txid past what the chain reaches is refused: inside a gap it is
/// damage, beyond the newest commit it is not in the repository.
fn refuse_past_reach(
    name: &str,
    target: Target,
    next: u64,
    gap_after: &Option<(u64, u64, jiff::Timestamp)>,
) -> Result<()> {
    if let Target::Txid(n) = target
        && n >= next
    {
        let reach = next - 1;
        return Err(match *gap_after {
            Some((from, to, ref to_time)) if n >= from => Error::damaged(
                name,
                format!(
                    "commits {from} to {} are missing from the stream (a gap, until the base of {to_time}); txid {n} cannot be restored",
                    to - 1
                ),
            )
            .fix(format!("restore txid {} (before the gap) or {to} or later", from - 1))
            .code(ErrorCode::RestoreGap),
            _ => Error::no_input(
                name,
                format!("txid {n} is not in the repository; the newest is {reach}"),
            )
            .fix(format!("restore --txid {reach} or earlier"))
            .code(ErrorCode::RestoreAfterHistory),
        });
    }
    Ok(())
}

/// How wide a commit's interval (`SegmentCommit::not_before_ns` to
/// `time_ns`) may be and still count as exact. While the replicator watches,
/// intervals are its poll (milliseconds; `poll_interval` at most); wider
/// ones mean it was not watching: stopped, killed, or paused.
pub const UNCERTAIN_NS: i64 = 1_000_000_000;

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{ns} ns"))
}

impl Replay {
    /// The time of the newest commit the chain reaches (the base's, when no
    /// segment follows it): how recent the newest state it can give is.
    /// Reads the last segment.
    pub fn reach<S>(&self, repo: &Repository<S>) -> Result<jiff::Timestamp> {
        let Some((_, _, key)) = self.segments.last() else {
            return Ok(self.base_time);
        };
        let seg = repo.read_segment(key)?;
        let ns = seg.commits.last().map(|c| c.time_ns).unwrap_or(0);
        Ok(jiff::Timestamp::from_nanosecond(ns as i128)
            .unwrap_or(self.base_time)
            .max(self.base_time))
    }

    /// The newest commit the chain reaches without a hole: the last
    /// segment's last txid, or the base's own when no segment follows it.
    /// Unlike [`Replay::reach`] it reads nothing.
    pub fn reach_txid(&self) -> u64 {
        self.segments.last().map_or(self.base_point.txid, |s| s.1)
    }

    /// `t` falls inside the interval of `rest[0]`, a commit the replicator
    /// did not see being made: refuse, naming the interval and the exact
    /// points on either side of it. `landed` is where the replay stands
    /// (the commit before it).
    fn uncertain(&self, t: i64, landed: &Landed, rest: &[crate::repo::segment::SegmentCommit]) -> Error {
        let first = rest[0];
        // Every commit found in the same look shares the interval.
        let last = rest
            .iter()
            .take_while(|c| (c.not_before_ns, c.time_ns) == (first.not_before_ns, first.time_ns))
            .last()
            .copied()
            .unwrap_or(first);
        let commits = if last.txid == first.txid {
            format!("commit {}", first.txid)
        } else {
            format!("commits {} to {}", first.txid, last.txid)
        };
        Error::damaged(
            &self.name,
            format!(
                "{commits} were made at some moment between {} and {}, while the replicator was not watching the log; the state at {} is not known",
                rfc3339(first.not_before_ns),
                rfc3339(first.time_ns),
                rfc3339(t)
            ),
        )
        .fix(format!(
            "restore --txid {} (as of {}, before them) or --txid {} (as of {}, after them)",
            landed.txid, landed.time, last.txid, rfc3339(last.time_ns)
        ))
        .code(ErrorCode::RestoreUncertain)
    }

    /// Apply the segments to `file` (the base, written in full); returns the
    /// database's final size in bytes.
    pub fn apply(&self, repo: &Repository, file: &File, path: &Path, page_size: u32, base_size: u64) -> Result<u64> {
        let ps = page_size as u64;
        let mut size = base_size;
        let mut landed = Landed {
            txid: self.base_point.txid,
            time: self.base_time,
            base_txid: self.base_point.txid,
            segments: 0,
            commits_applied: 0,
        };
        let mut reached_target = false;
        let wanted: Vec<&(u64, u64, String)> = self
            .segments
            .iter()
            .take_while(|(f, _, _)| match self.target {
                Target::Txid(n) => *f <= n,
                Target::Time(_) | Target::Newest => true,
            })
            .collect();
        let window = repo.transfers().clamp(2, 16);
        'chunks: for chunk in wanted.chunks(window) {
            let keys: Vec<(usize, String)> = chunk.iter().enumerate().map(|(i, (_, _, k))| (i, k.clone())).collect();
            let mut fetched: Vec<Option<Vec<u8>>> = vec![None; chunk.len()];
            repo.read_objects(keys, |i, _, data| {
                fetched[i] = Some(data?);
                Ok(())
            })?;
            for (raw, (first, last, key)) in fetched.into_iter().zip(chunk) {
                let what = repo.object_name(key);
                let seg = Segment::decode(&raw.expect("every key fetched"), &what)?;
                if (seg.first_txid, seg.last_txid) != (*first, *last) || seg.page_size != page_size {
                    return Err(Error::damaged(
                        &what,
                        "segment does not match its name or the base's page size",
                    ));
                }
                reached_target = self.apply_segment(&seg, file, path, ps, &mut landed, &mut size)?;
                if reached_target {
                    break 'chunks;
                }
            }
        }
        if !reached_target {
            self.refuse_in_gap(&landed)?;
        }
        file.set_len(size).at(path)?;
        tracing::info!(
            event = "restore.replayed",
            txid = landed.txid,
            commits = landed.commits_applied,
            segments = landed.segments
        );
        *self.landed.lock().expect("landed") = Some(landed);
        Ok(size)
    }

    /// Apply one segment's commits up to the target: the last image of
    /// each page among them, written in page order. `landed` and `size`
    /// follow the last commit applied. Whether the target was reached.
    fn apply_segment(
        &self,
        seg: &Segment,
        file: &File,
        path: &Path,
        ps: u64,
        landed: &mut Landed,
        size: &mut u64,
    ) -> Result<bool> {
        let mut reached_target = false;
        // The last image of each page among the commits to apply.
        let mut latest: HashMap<u32, usize> = HashMap::new();
        let mut image = 0usize;
        let mut applied_any = false;
        for (k, c) in seg.commits.iter().enumerate() {
            let stop = match self.target {
                Target::Newest => false,
                Target::Txid(n) => c.txid > n,
                Target::Time(t) => {
                    let t = t.as_nanosecond() as i64;
                    if c.not_before_ns < t && t < c.time_ns && c.time_ns - c.not_before_ns > UNCERTAIN_NS {
                        return Err(self.uncertain(t, landed, &seg.commits[k..]));
                    }
                    c.time_ns > t
                }
            };
            if stop {
                reached_target = true;
                break;
            }
            for k in 0..c.pages as usize {
                latest.insert(seg.pgnos[image + k], image + k);
            }
            image += c.pages as usize;
            *size = c.db_pages as u64 * ps;
            landed.txid = c.txid;
            landed.time = jiff::Timestamp::from_nanosecond(c.time_ns as i128).unwrap_or(landed.time);
            landed.commits_applied += 1;
            applied_any = true;
        }
        let mut order: Vec<(u32, usize)> = latest.into_iter().collect();
        order.sort_unstable();
        for (pgno, i) in order {
            file.write_all_at(seg.image(i), (pgno as u64 - 1) * ps).at(path)?;
        }
        if applied_any {
            landed.segments += 1;
        }
        Ok(reached_target)
    }

    /// A time inside a gap the replicator did not watch is refused: the
    /// state there is not known.
    fn refuse_in_gap(&self, landed: &Landed) -> Result<()> {
        let watched = |t: jiff::Timestamp| self.watched_until_ns.is_some_and(|w| t.as_nanosecond() as i64 <= w);
        if let (Target::Time(t), Some((from, to, to_time))) = (self.target, &self.gap_after)
            && !watched(t)
        {
            // Known up to the last commit, or as long as the replicator
            // watched after it.
            let known = self
                .watched_until_ns
                .map(rfc3339)
                .unwrap_or_else(|| landed.time.to_string());
            return Err(Error::damaged(
                &self.name,
                format!(
                    "the state is known until {known} (txid {}, the last commit before a gap) and again from {to_time} (the base at txid {to}, after continuity was lost); the state at {t} is not known",
                    from - 1
                ),
            )
            .fix(format!(
                "restore --at {known} (txid {}) or --at {to_time} (txid {to}) or later",
                from - 1
            ))
            .code(ErrorCode::RestoreGap));
        }
        Ok(())
    }
}
