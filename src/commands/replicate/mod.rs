//! Continuous replication: every committed transaction of a live database,
//! shipped to one or more repositories within `sync_interval`, as WAL
//! segments on top of page-level bases (docs/FORMAT.md, "WAL streams").
//!
//! - `follower`: reads the WAL, holds it against checkpoints, runs them.
//! - `spool`: local state and segments not yet on every replica.
//! - `sealer`: a thread turning read commits into spooled segments.
//! - `shipper`: one thread per replica uploading from the spool.
//! - `target`: a replica repository, shared by every database of the process.
//!
//! This module ties them together: transaction ids and commit times,
//! sealing segments, and taking bases when a stream starts, when a replica
//! needs one, or when continuity is lost.

pub(crate) mod fold;
pub(crate) mod follower;
pub(crate) mod sealer;
pub(crate) mod shipper;
pub(crate) mod spool;
pub mod target;
pub(crate) mod wake;

pub use follower::check_supported;
pub use wake::wake_all;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::commands::snapshot::{SnapshotOptions, SourceKind, SourceSpec};
use crate::error::{Error, ErrorCode, Result};
use crate::repo::manifest::ReplicationPoint;
use crate::sqlite::wal::WalCommits;
use follower::{Follower, Polled};
use sealer::{Batch, Sealer};
use shipper::Replica;
use spool::{ReplicaState, STATE_VERSION, Spool};
pub use target::Target;

/// What to replicate.
#[derive(Debug, Clone)]
pub struct DbSpec {
    /// The source name recorded in bases and notices.
    pub name: String,
    /// The database file; a symlink is followed, and the stream is named after
    /// the real path.
    pub path: PathBuf,
    /// SQL giving the schema version recorded in each base (as
    /// [`SourceKind::Sqlite`]).
    pub schema_query: String,
}

/// How long a base waits for a database whose file vanished (a replacement
/// in progress) before replicate stops with `replicate.db_missing`.
const DB_MISSING_PATIENCE: Duration = Duration::from_secs(30);

/// How [`run`] replicates; [`Options::default`] suits most services.
#[derive(Debug, Clone)]
pub struct Options {
    /// A commit is in every reachable replica within this.
    pub sync_interval: Duration,
    /// How often the log is looked at.
    pub poll_interval: Duration,
    /// PASSIVE checkpoint at least this often while the log has frames.
    pub checkpoint_interval: Duration,
    /// The service's `wal_autocheckpoint`: a tenth short of this many
    /// frames, checkpoint and let the log restart (see `restart_due`).
    pub restart_frames: u32,
    /// Past this many frames, TRUNCATE.
    pub truncate_frames: u32,
    /// Longest TRUNCATE may keep writers waiting.
    pub truncate_busy: Duration,
    /// Largest segment, in page bytes; a transaction larger than this is
    /// taken as a new base instead.
    pub segment_bytes: usize,
    /// Where positions and unshipped segments are kept, one directory per
    /// stream inside; required (the binary's default is
    /// [`HostDirs::replication_state_dir`](crate::fsutil::HostDirs::replication_state_dir)).
    pub state_dir: PathBuf,
    /// zstd level for segments (their images are mostly XOR deltas, and
    /// folds recompress what lasts).
    pub level: i32,
    /// How long a stopping replicator keeps uploading what is spooled.
    pub drain: Duration,
    /// How often a new base is folded from the segments, so restores
    /// replay at most this much history.
    pub snapshot_interval: Duration,
    /// Told of what an operator may have to act on, as it happens.
    pub notify: Notify,
}

/// What an operator may want to know of a database as it happens (each is
/// also logged under the same event name): `replicate --json` prints one
/// JSON line for each.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event")]
pub enum Notice {
    /// The database is followed from `txid`; without `resumed`, its first
    /// base follows.
    #[serde(rename = "replicate.following")]
    Following {
        /// The database's source name.
        db: String,
        /// The database file's real path.
        path: String,
        /// The stream id ([`stream_id`]).
        stream: String,
        /// The newest transaction id given out so far.
        txid: u64,
        /// Whether it continues the stream a previous run left.
        resumed: bool,
    },
    /// A replica holds a base of the database: restorable from here on.
    #[serde(rename = "replicate.base")]
    Base {
        /// The database's source name.
        db: String,
        /// The replica, as the operator wrote its location.
        replica: String,
        /// The base's snapshot id, 64 hex digits.
        snapshot: String,
        /// The last commit the base holds.
        txid: u64,
        /// Whether commits before it may be missing (continuity was lost).
        after_gap: bool,
        /// Milliseconds the base took.
        ms: u64,
    },
    /// A base could not be stored in a replica; it is tried again later (a
    /// configuration error stops the replicator instead).
    #[serde(rename = "replicate.base_failed")]
    BaseFailed {
        /// The database's source name.
        db: String,
        /// The replica, as the operator wrote its location.
        replica: String,
        /// The error, on one line.
        error: String,
        /// Seconds until the next try (doubling with each failure).
        retry_in_s: u64,
    },
    /// Commits after `after_txid` may be missing until the next base.
    #[serde(rename = "replicate.gap")]
    Gap {
        /// The database's source name.
        db: String,
        /// Why continuity was lost, for the operator.
        reason: String,
        /// The last transaction id known to be complete.
        after_txid: u64,
    },
    /// A periodic base was folded from the segments into a replica, bounding
    /// what a point-in-time restore replays.
    #[serde(rename = "replicate.folded")]
    Folded {
        /// The database's source name.
        db: String,
        /// The replica, as the operator wrote its location.
        replica: String,
        /// The folded base's snapshot id, 64 hex digits.
        snapshot: String,
        /// The last commit the folded base holds.
        txid: u64,
    },
    /// The database's totals for this run, once it has stopped.
    #[serde(rename = "replicate.db_stopped")]
    Stopped {
        /// The database's source name.
        db: String,
        /// The newest transaction id given out.
        txid: u64,
        /// Commits read this run.
        commits: u64,
        /// Bases stored this run (counted once per replica).
        bases: u64,
        /// Times continuity was lost this run.
        gaps: u64,
        /// Replicas left without every commit.
        unshipped: Vec<Unshipped>,
    },
}

/// A replica a stopping replicator could not bring up to date.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unshipped {
    /// The replica, as the operator wrote its location.
    pub replica: String,
    /// Its first missing transaction id.
    pub from_txid: u64,
}

/// Where notices go; nowhere by default.
#[derive(Clone, Default)]
pub struct Notify(Option<Arc<dyn Fn(Notice) + Send + Sync>>);

impl Notify {
    /// Send every notice to `f`, called on the replicator's own threads; it
    /// should return quickly.
    pub fn new(f: impl Fn(Notice) + Send + Sync + 'static) -> Notify {
        Notify(Some(Arc::new(f)))
    }

    /// Tell the notice to the function given, if any: for a caller that
    /// wraps one `Notify` in another.
    pub fn send(&self, n: Notice) {
        if let Some(f) = &self.0 {
            f(n);
        }
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Notify(..)" } else { "Notify(none)" })
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
            checkpoint_interval: Duration::from_secs(60),
            restart_frames: 1000,
            truncate_frames: 100_000,
            truncate_busy: Duration::from_millis(20),
            segment_bytes: 8 << 20,
            state_dir: PathBuf::new(),
            level: 1,
            drain: Duration::from_secs(30),
            snapshot_interval: Duration::from_secs(3600),
            notify: Notify::default(),
        }
    }
}

pub use crate::sqlite::lean_page_cache;

/// A database's stream id: 16 hex digits of BLAKE3(host "\n" canonical path),
/// so the same database on two hosts never shares a stream.
pub fn stream_id(canonical: &std::path::Path) -> String {
    let key = format!("{}\n{}", crate::fsutil::hostname(), canonical.display());
    hex::encode(&blake3::hash(key.as_bytes()).as_bytes()[..8])
}

/// Commits read but not yet sealed into a segment.
#[derive(Default)]
struct Pending {
    wal: WalCommits,
    /// One for each commit in `wal.commits`.
    stamps: Vec<sealer::Stamp>,
    /// When the oldest of them was seen.
    since: Option<Instant>,
}

/// How fast the log grows, so the follower looks again before it passes
/// the length at which it is let go to restart. A busy service writes a
/// thousand frames in ten milliseconds, one poll interval: looked at only
/// that often, the log was let go at 1,400 frames instead of 900, and past
/// 1,000 every commit of the service tried a checkpoint that could not
/// finish.
#[derive(Default)]
struct Pace {
    last: Option<(Instant, u64)>,
    /// Frames per second, smoothed.
    rate: f64,
}

impl Pace {
    fn read(&mut self, frames_read: u64) {
        let now = Instant::now();
        if let Some((then, frames)) = self.last {
            let dt = now.duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let r = frames_read.saturating_sub(frames) as f64 / dt;
                self.rate = if r > self.rate { r } else { 0.8 * self.rate + 0.2 * r };
            }
        }
        self.last = Some((now, frames_read));
    }

    /// Frames expected in `d` at the current rate.
    fn frames_in(&self, d: Duration) -> u32 {
        (self.rate * d.as_secs_f64()).min(u32::MAX as f64) as u32
    }

    /// Sleep long enough for half the frames left before the release point
    /// to arrive at the current rate; at most `poll`, at least 0.2 ms.
    fn nap(&self, poll: Duration, frames_left: Option<u32>) -> Duration {
        match frames_left {
            Some(left) if self.rate > 0.0 => {
                let secs = (left as f64 / 2.0 / self.rate).min(poll.as_secs_f64());
                Duration::from_secs_f64(secs).max(Duration::from_micros(200)).min(poll)
            }
            _ => poll,
        }
    }
}

/// How a base relates to the commits before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BaseKind {
    /// Exactly after the last commit shipped.
    Exact,
    /// After commits that were not shipped one by one (a transaction too
    /// large for a segment), none lost.
    Coarse,
    /// After a loss of continuity: commits in between are unknown.
    Gap,
}

struct Stream {
    db: DbSpec,
    opts: Options,
    follower: Follower,
    stream: String,
    spool: Arc<Spool>,
    replicas: Vec<Replica>,
    /// The last transaction id given out.
    txid: u64,
    /// When the last look at the log began that read everything committed
    /// (or the base was pinned): commits read later were made after it.
    last_look_ns: i64,
    pending: Pending,
    /// Shared with the sealer, which records every segment in it; the
    /// follower touches it only after `Sealer::flush`.
    fold: Arc<Mutex<fold::Fold>>,
    sealer: Sealer,
    /// Seals made in a row to make room before letting the log restart. A
    /// writer as fast as the seal refills the buffer each time, so after a
    /// few the log is let go whatever the buffer holds.
    seals_for_restart: u8,
    base_job: Option<BaseJob>,
    /// Wakes the idle follower when the log is written (see `wake`).
    watch: Option<wake::Watch>,
    /// This run's counts, for its `Stopped` notice.
    commits: u64,
    bases: u64,
    gaps: u64,
}

/// Per target replica: the base's snapshot id.
type BaseOutcomes = Vec<(usize, Result<crate::id::Id>)>;

/// A base being captured on its own thread.
struct BaseJob {
    handle: std::thread::JoinHandle<BaseOutcomes>,
    point: ReplicationPoint,
    started: Instant,
}

/// How often an idle replicator records that it is watching (see
/// `Spool::save_seen`): a run killed while idle leaves what it missed dated
/// to within this.
const HEARTBEAT: Duration = Duration::from_secs(1);

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Ask every [`run`] watching `stop` to ship what it read and return: sets
/// the flag and ends the waits of followers idle on a quiet log (they
/// otherwise sleep until their log is written, up to half a minute).
pub fn request_stop(stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    wake::wake_all();
}

/// Replicate `db` to `replicas` until `stop` is set, then ship what was
/// read and return. Stop it with [`request_stop`]: a follower idle on a
/// quiet log notices a bare `stop.store(true)` only at its next look.
///
/// Every commit becomes a restore point: here the database right after the
/// second of three commits made while it ran.
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// use lifeboat::replicate::{self, DbSpec, Notice, Notify, Options};
/// use lifeboat::{Repository, RepoLocation, RestoreOptions, Selection, Target};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let db = dir.path().join("app.db");
/// let service = rusqlite::Connection::open(&db).unwrap();
/// service.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x);").unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// Repository::init(&location)?;
///
/// let (base_sender, bases) = std::sync::mpsc::channel();
/// let options = Options {
///     state_dir: dir.path().join("replication-state"),
///     notify: Notify::new(move |notice| {
///         if let Notice::Base { txid, .. } = notice {
///             let _ = base_sender.send(txid);
///         }
///     }),
///     ..Options::default()
/// };
/// let spec = DbSpec { name: "app.db".into(), path: db.clone(), schema_query: "PRAGMA user_version".into() };
/// let replicas = [replicate::Target::open(&location)?];
/// let stop = AtomicBool::new(false);
/// let base_txid = std::thread::scope(|scope| {
///     let replicator = scope.spawn(|| replicate::run(spec, &replicas, options, &stop));
///     // Restorable from the first base on; then one commit per row.
///     let base_txid = bases.recv().expect("a base, or run failed");
///     for x in 1..=3 {
///         service.execute("INSERT INTO t VALUES (?1)", [x]).unwrap();
///     }
///     // Everything committed before the stop is shipped before `run` returns.
///     replicate::request_stop(&stop);
///     replicator.join().unwrap().map(|()| base_txid)
/// })?;
///
/// let repo = Repository::open(&location)?.indexed()?;
/// let out = dir.path().join("second-commit.db");
/// let selection = Selection::at_txid(&repo, &[], base_txid + 2)?;
/// let options = RestoreOptions { target: Target::File(out.clone()), force: false, max_schema_version: None, keep: vec![], skip_integrity_check: false };
/// lifeboat::restore::restore(&repo, &selection, &options, &lifeboat::progress::Silent)?;
/// let rows: i64 = rusqlite::Connection::open(&out).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
/// assert_eq!(rows, 2);
/// # Ok(())
/// # }
/// ```
pub fn run(db: DbSpec, replicas: &[Arc<Target>], opts: Options, stop: &AtomicBool) -> Result<()> {
    if opts.state_dir.as_os_str().is_empty() {
        return Err(Error::config(db.path.display(), "no replication state directory")
            .fix("set replicate::Options::state_dir (lifeboat::HostDirs::from_env().replication_state_dir() is the binary's)"));
    }
    let follower = Follower::open(&db.path, &db.schema_query)?;
    let stream = stream_id(&follower.path);
    let spool = Arc::new(Spool::open(&opts.state_dir.join(&stream))?);
    let state = spool.load_state()?;
    let (txid, resume, last_look_ns) = resume_point(&spool, state.as_ref(), &stream)?;

    let mut opened = Vec::new();
    let mut highest = txid;
    for t in replicas {
        let last = t.last_txid(&stream)?;
        highest = highest.max(last);
        opened.push((Arc::clone(t), last));
    }
    let fold = Arc::new(Mutex::new(fold::Fold::open(&spool.dir)?));
    let mut starting = Vec::new();
    for (t, last) in opened {
        let r = Replica::start(t, stream.clone(), Arc::clone(&spool), last + 1);
        starting.push((r, last));
    }
    let wakers: Vec<_> = starting.iter().map(|(r, _)| r.waker()).collect();
    let sealer = Sealer::start(sealer::Setup {
        spool: Arc::clone(&spool),
        fold: Arc::clone(&fold),
        level: opts.level,
        spooled: Box::new(move || wakers.iter().for_each(|w| w())),
    });
    let mut s = Stream {
        follower,
        stream: stream.clone(),
        spool: Arc::clone(&spool),
        replicas: Vec::new(),
        txid,
        last_look_ns,
        pending: Pending::default(),
        fold,
        sealer,
        seals_for_restart: 0,
        base_job: None,
        watch: None,
        commits: 0,
        bases: 0,
        gaps: 0,
        db,
        opts,
    };
    let continuing = s.resume_or_not(starting, highest, resume)?;
    tracing::info!(event = "replicate.started", db = %s.follower.path.display(), stream = %stream, txid = s.txid, resumed = continuing);
    s.opts.notify.send(Notice::Following {
        db: s.db.name.clone(),
        path: s.follower.path.display().to_string(),
        stream: stream.clone(),
        txid: s.txid,
        resumed: continuing,
    });
    if !continuing {
        let kind = if s.txid == 0 { BaseKind::Coarse } else { BaseKind::Gap };
        s.base(&s.all_replicas(), kind)?;
    }
    let mut result = s.follow(stop);
    // Asleep or not, the process no longer records for this stream.
    s.spool.quiet(&s.stream, None);
    if result.is_ok() {
        // Everything committed before the stop is read and shipped (what
        // `--exec` promises after the service exits).
        result = s.catch_up();
    }
    s.ship_and_stop(result)
}

impl Stream {
    /// Resume reading where the saved state says, unless a replica is ahead
    /// of it; each replica the stream can continue for gets segments, the
    /// others need a base. Whether reading continues.
    fn resume_or_not(&mut self, starting: Vec<(Replica, u64)>, highest: u64, resume: Option<Resume>) -> Result<bool> {
        let mut continuing = false;
        if highest > self.txid {
            // A replica holds commits this host does not know of (its state was
            // lost or is stale): never give out those ids again.
            tracing::warn!(event = "replicate.state_behind", local = self.txid, replica = highest);
            self.txid = highest;
        } else if let Some((pos, ident, ps)) = resume {
            continuing = self.follower.resume(pos, ident, ps)?;
        }
        for (r, last) in starting {
            let next = last + 1;
            let can_stream =
                continuing && next <= self.txid + 1 && (next == self.txid + 1 || self.spool.get(next).is_some());
            if !can_stream {
                r.with(|p| p.needs_base = true);
            }
            self.replicas.push(r);
        }
        Ok(continuing)
    }
}

/// A log position to resume reading from, with the database's identity
/// (device, inode) and page size.
type Resume = (crate::sqlite::wal::WalPosition, (u64, u64), u32);

/// Where a resumed stream stands: the saved state, or a segment spooled
/// after it was saved. Returns the last txid given out, the log position to
/// resume reading from (with the database's identity and page size), and
/// when the log was last known to be watched.
fn resume_point(spool: &Spool, state: Option<&ReplicaState>, stream: &str) -> Result<(u64, Option<Resume>, i64)> {
    let mut txid = state.map(|s| s.txid).unwrap_or(0);
    let mut resume = state
        .filter(|s| s.stream == stream)
        .and_then(|s| s.pos.map(|p| (p, (s.dev, s.ino), s.page_size)));
    // Commits found in the log now were made after the last moment a run
    // is known to have watched it: its clean stop, or its last commit.
    let mut last_look_ns = state
        .filter(|s| s.stream == stream)
        .map(|s| s.seen_ns)
        .unwrap_or(0)
        .max(spool.load_seen(stream));
    if let Some(seg) = spool.newest()? {
        last_look_ns = last_look_ns.max(seg.commits.last().map(|c| c.time_ns).unwrap_or(0));
        if seg.last_txid > txid {
            txid = seg.last_txid;
            let end = crate::sqlite::wal::WalPosition::from_words(seg.wal_end);
            resume = resume.map(|(_, ident, ps)| (end, ident, ps));
        }
    }
    Ok((txid, resume, last_look_ns))
}

impl Stream {
    /// After the follow loop: everything read is sealed and shipped if it
    /// can be, the state saved, each replica drained, and the stop
    /// announced. The follow loop's outcome comes first.
    fn ship_and_stop(&mut self, result: Result<()>) -> Result<()> {
        // Whatever happened, what was read is shipped if it can be.
        let sealed = self.seal().and_then(|()| self.sealer.flush());
        let saved = if result.is_ok() && sealed.is_ok() {
            // Everything is read and spooled: the next run knows the log was
            // watched until now, and dates what it finds from here.
            self.save_state()
        } else {
            Ok(())
        };
        let based = self.finish_base(true);
        let drain = self.opts.drain;
        let mut unshipped = Vec::new();
        for r in self.replicas.drain(..) {
            let name = r.name.clone();
            let next = r.drain(drain);
            if next <= self.txid {
                tracing::warn!(event = "replicate.unshipped", db = %self.db.name, replica = %name, from_txid = next, to_txid = self.txid);
                unshipped.push(Unshipped {
                    replica: name,
                    from_txid: next,
                });
            }
        }
        self.opts.notify.send(Notice::Stopped {
            db: self.db.name.clone(),
            txid: self.txid,
            commits: self.commits,
            bases: self.bases,
            gaps: self.gaps,
            unshipped,
        });
        result.and(sealed).and(based).and(saved)
    }
}

impl Stream {
    fn follow(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut pace = Pace::default();
        let mut heartbeat = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let before = self.pending.wal.commits.len();
            // Read before the look: no event since means nothing was written
            // after it began (see `wake::sync`).
            let events_before = self.watch.as_ref().map(wake::Watch::count);
            if !self.read_on(before, &mut pace)? {
                continue;
            }
            if self.pending.wal.too_large {
                self.base(&self.all_replicas(), BaseKind::Coarse)?;
                continue;
            }
            self.beat_if_idle(&mut heartbeat)?;
            if self.follower.hold_while_idle(Duration::from_millis(20))? {
                tracing::debug!(event = "replicate.hold_idle", db = %self.follower.path.display());
            }
            if self.around_restart(&pace)? {
                continue;
            }
            self.seal_if_due()?;
            self.bases_and_folds()?;
            if self.sleep_while_quiet(before, events_before, &mut heartbeat) {
                continue;
            }
            std::thread::sleep(self.nap(&pace));
        }
        Ok(())
    }

    /// One look at the log; false when continuity was lost (a base was
    /// taken for it) and the follower must look again.
    fn read_on(&mut self, before: usize, pace: &mut Pace) -> Result<bool> {
        let polled = self.look()?;
        pace.read(self.follower.frames_read);
        match polled {
            Polled::Ok => {
                if self.pending.wal.commits.len() > before {
                    // Make sure a read mark holds the log, so the
                    // service's own checkpoints cannot restart it while
                    // we are not looking (an anchor begun on a fully
                    // checkpointed log holds nothing; see `advance`).
                    self.follower.advance()?;
                }
            }
            Polled::Lost(reason) => {
                // The base seals what was read before the loss first.
                self.lost(reason)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn beat_if_idle(&mut self, heartbeat: &mut Instant) -> Result<()> {
        if self.pending.wal.commits.is_empty() && heartbeat.elapsed() >= HEARTBEAT {
            // Idle, everything read is sealed: a run killed from here on
            // dates what the next finds from this moment, not from its
            // last commit.
            *heartbeat = Instant::now();
            self.sealer.flush()?;
            self.spool.save_seen(&self.stream, self.last_look_ns);
        }
        Ok(())
    }

    /// While the log waits to restart, only reading matters; near the
    /// point where the service's checkpoint will restart it, the anchor is
    /// let go. True when the follower must look again at once.
    fn around_restart(&mut self, pace: &Pace) -> Result<bool> {
        if let Some(waited) = self.follower.awaiting_restart() {
            // The log is unguarded until the service restarts it: only
            // reading matters now. A service held from restarting by a
            // reader of its own keeps writing; after a while the usual
            // work resumes, looking often.
            if waited < Duration::from_millis(200) {
                // Handing a batch to the sealer takes microseconds (unless
                // it is still sealing the last): do not let the wait
                // delay commits past `sync_interval`, and never leave a
                // full buffer, which stops reading and leaves the new
                // generation unanchored.
                if self.pending.wal.full || self.due() {
                    self.seal()?;
                }
                std::thread::sleep(Duration::from_millis(1));
                return Ok(true);
            }
        } else if self.follower.restart_due(
            self.opts.restart_frames,
            pace.frames_in(self.follower.release_checkpoint_time()),
        ) {
            if self.pending.wal.data.len() > self.opts.segment_bytes / 2 && self.seals_for_restart < 4 {
                // Seal while the anchor still holds the log. Let go with
                // a buffer this full, and the commits the service makes
                // before it restarts may not fit: reading stops, the new
                // generation is not anchored, and a busy service fills
                // and restarts it again (a gap, and a new base). Then
                // read once more before letting go.
                self.seal()?;
                self.seals_for_restart += 1;
                return Ok(true);
            }
            // Just read to the end: let the log restart.
            self.seals_for_restart = 0;
            self.follower.release_for_restart(self.opts.restart_frames)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Seal the pending commits when due, then move the anchor and
    /// checkpoint.
    fn seal_if_due(&mut self) -> Result<()> {
        if self.due() {
            self.seal()?;
            self.follower.advance()?;
            if let Polled::Lost(reason) = self.follower.checkpoint(
                self.opts.checkpoint_interval,
                self.opts.truncate_frames,
                self.opts.truncate_busy,
            )? {
                self.lost(reason)?;
            }
        }
        Ok(())
    }

    /// A fold base when due, a finished base job collected, a base for the
    /// replicas waiting for one, and the spool trimmed.
    fn bases_and_folds(&mut self) -> Result<()> {
        let fold_due = {
            let f = self.fold.lock().expect("fold");
            f.has_work() && f.since.elapsed() >= self.opts.snapshot_interval
        };
        if fold_due {
            self.fold_base()?;
        }
        self.finish_base(false)?;
        let waiting: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| {
                self.replicas[i].peek(|p| {
                    p.needs_base && p.inflight.is_none() && p.base_retry_at.is_none_or(|t| t <= Instant::now())
                })
            })
            .collect();
        if !waiting.is_empty() && self.base_job.is_none() {
            self.base(&waiting, BaseKind::Exact)?;
        }
        self.trim_spool();
        Ok(())
    }

    /// True when the follower should look again without a nap.
    fn sleep_while_quiet(&mut self, before: usize, events_before: Option<u64>, heartbeat: &mut Instant) -> bool {
        // Nothing new at this look: sleep until the log is written or
        // the pending commits are due, not a poll interval. Looking every
        // 10 ms cost a hundred databases a third of a core while idle,
        // and as much again while each waited a second to seal one commit.
        // A log that grew is looked at again after the usual nap.
        let quiet = self.pending.wal.commits.len() == before
            && !self.pending.wal.full
            && self.base_job.is_none()
            && self.follower.awaiting_restart().is_none();
        if quiet {
            match &self.watch {
                Some(w) => {
                    // With everything read spooled, the process's
                    // heartbeat records for this stream while it sleeps,
                    // and it sleeps until something happens: a hundred
                    // idle followers each looking even once a second
                    // cost 1.5 % of a core.
                    let leave_beat = self.pending.wal.commits.is_empty()
                        && events_before.is_some()
                        && wake::can_sync()
                        && self.sealer.flush().is_ok();
                    let most = if leave_beat { wake::QUIET_LOOK } else { wake::IDLE_LOOK };
                    let timeout = [self.until_due(), self.until_work()]
                        .into_iter()
                        .flatten()
                        .fold(most, Duration::min);
                    if let (true, Some(at)) = (leave_beat, events_before) {
                        self.spool.quiet(&self.stream, Some((w.events(), at)));
                    }
                    let same = w.wait(timeout);
                    if leave_beat {
                        self.spool.quiet(&self.stream, None);
                        // Its own heartbeat is due again from now.
                        *heartbeat = Instant::now();
                    }
                    if same {
                        return true;
                    }
                    // The log was moved or removed: a replacement under
                    // way (a restore moves the sidecars aside first).
                    // Looked at after the usual nap, not in its middle,
                    // where the database would look merely truncated.
                    self.watch = None;
                }
                // Looked at once more after the watch is in place, so
                // a write just before it is not left for IDLE_LOOK.
                None => self.watch = wake::Watch::new(&self.follower.path, self.follower.wal_path()),
            }
        }
        false
    }

    /// How long to wait before the next look.
    fn nap(&self, pace: &Pace) -> Duration {
        match self.follower.awaiting_restart() {
            Some(_) => self.opts.poll_interval.min(Duration::from_millis(1)),
            None => pace.nap(
                self.opts.poll_interval,
                self.follower.frames_to_release(
                    self.opts.restart_frames,
                    pace.frames_in(self.follower.release_checkpoint_time()),
                ),
            ),
        }
    }

    /// Read to the end of the log as it stands now, sealing segments as
    /// they fill. Stops at a transaction too large for a segment (the caller
    /// takes a base for it) and at a loss of continuity, which it reports.
    fn catch_up(&mut self) -> Result<()> {
        loop {
            let polled = self.look()?;
            if let Polled::Lost(reason) = polled {
                self.report_gap(reason);
                return Ok(());
            }
            if self.pending.wal.too_large || !self.pending.wal.full {
                return Ok(());
            }
            self.seal()?;
        }
    }

    fn report_gap(&mut self, reason: &str) {
        tracing::warn!(event = "replicate.gap", db = %self.follower.path.display(), reason, after_txid = self.txid);
        self.gaps += 1;
        self.opts.notify.send(Notice::Gap {
            db: self.db.name.clone(),
            reason: reason.to_string(),
            after_txid: self.txid,
        });
    }

    /// Continuity is lost: report it and take a base for every replica.
    fn lost(&mut self, reason: &str) -> Result<()> {
        self.report_gap(reason);
        self.base(&self.all_replicas(), BaseKind::Gap)
    }

    fn all_replicas(&self) -> Vec<usize> {
        (0..self.replicas.len()).collect()
    }

    /// Read what was committed since the last look, and stamp it.
    fn look(&mut self) -> Result<Polled> {
        let started = now_ns();
        let polled = self.follower.poll(&mut self.pending.wal, self.opts.segment_bytes)?;
        self.stamp();
        if polled == Polled::Ok && !self.pending.wal.full && !self.pending.wal.too_large {
            // Read to the end: whatever is found from now on was committed
            // after this look began.
            self.last_look_ns = started;
        }
        Ok(polled)
    }

    /// Give new commits their ids and the interval they were made in: after
    /// the last look that read everything, at or before now.
    fn stamp(&mut self) {
        let now = now_ns();
        while self.pending.stamps.len() < self.pending.wal.commits.len() {
            self.txid += 1;
            self.commits += 1;
            self.pending.stamps.push(sealer::Stamp {
                txid: self.txid,
                time_ns: now,
                not_before_ns: self.last_look_ns.min(now),
            });
            self.pending.since.get_or_insert_with(Instant::now);
        }
    }

    /// Seal now, so the oldest pending commit is in the replicas within
    /// `sync_interval` (leaving room for the upload itself), or when the
    /// segment is full.
    fn due(&self) -> bool {
        self.until_due().is_some_and(|d| d.is_zero() || self.pending.wal.full)
    }

    /// How long until work other than sealing is due while nothing is
    /// written: a fold, or a base to try again.
    fn until_work(&self) -> Option<Duration> {
        let now = Instant::now();
        let fold = {
            let f = self.fold.lock().expect("fold");
            f.has_work()
                .then(|| self.opts.snapshot_interval.saturating_sub(f.since.elapsed()))
        };
        let retry = self
            .replicas
            .iter()
            .filter_map(|r| r.peek(|p| p.needs_base.then_some(p.base_retry_at).flatten()))
            .map(|t| t.saturating_duration_since(now))
            .min();
        // Never zero: what is due now was done just before.
        [fold, retry]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.max(Duration::from_millis(10)))
    }

    /// How long until [`Stream::due`] holds, if commits are pending.
    fn until_due(&self) -> Option<Duration> {
        let since = self.pending.since?;
        let upload = self
            .replicas
            .iter()
            .map(|r| r.peek(|p| p.last_upload_ms))
            .max()
            .unwrap_or(0);
        // Room for seeing the commit late (one poll), sealing, uploading and
        // being scheduled late on a busy machine: measured lag p99 sat at
        // 1.01 s with 20 ms of slack.
        let headroom = (self.opts.poll_interval + self.sealer.last_seal() + Duration::from_millis(2 * upload + 50))
            .min(self.opts.sync_interval / 2);
        Some(self.opts.sync_interval.saturating_sub(headroom + since.elapsed()))
    }

    /// Hand the pending commits to the sealer, which spools them as one
    /// segment; reading goes on into the other buffer at once.
    fn seal(&mut self) -> Result<()> {
        self.stamp();
        if self.pending.wal.commits.is_empty() {
            self.pending.since = None;
            return self.sealer.check();
        }
        let pos = self.follower.pos.expect("commits were read from a position");
        let wal = std::mem::take(&mut self.pending.wal);
        let stamps = std::mem::take(&mut self.pending.stamps);
        self.pending.since = None;
        let batch = Batch {
            wal,
            stamps,
            pos,
            page_size: self.follower.page_size,
        };
        // The page buffer back from an earlier seal keeps its capacity.
        self.pending.wal.data = self.sealer.submit(batch)?;
        Ok(())
    }

    /// Everything read so far is spooled.
    fn seal_and_wait(&mut self) -> Result<()> {
        self.seal()?;
        self.sealer.flush()
    }

    /// Save where the stream stands now (after a base; between bases the
    /// spool's newest segment says it), once every segment before is spooled.
    fn save_state(&self) -> Result<()> {
        self.sealer.flush()?;
        let (dev, ino) = self.follower.ident();
        self.spool.save_state(&ReplicaState {
            version: STATE_VERSION,
            stream: self.stream.clone(),
            db: self.follower.path.display().to_string(),
            txid: self.txid,
            pos: self.follower.pos,
            page_size: self.follower.page_size,
            dev,
            ino,
            seen_ns: self.last_look_ns,
        })
    }

    /// Take a base for the replicas at `targets`: pinned to a WAL position,
    /// captured page by page (only pages the replica lacks are stored).
    fn base(&mut self, targets: &[usize], kind: BaseKind) -> Result<()> {
        // One capture at a time.
        self.finish_base(true)?;
        // The log may be another file now (the database replaced): watched
        // again once idle.
        self.watch = None;
        let started = Instant::now();
        // Catch up outside the lock, so little is left to read inside it.
        if kind == BaseKind::Exact {
            self.catch_up()?;
        }
        let read = kind == BaseKind::Exact && !self.pending.wal.too_large;
        let pin_started = now_ns();
        // Until here every commit read is shipped or about to be: if
        // continuity is lost, the state is known up to this moment.
        let watched = self.last_look_ns;
        let (db, exact) = self.pin(read)?;
        // What was read while pinning was committed before the pin; what
        // comes after it, after the pin began.
        self.stamp();
        self.last_look_ns = pin_started;
        // Every segment before the base is spooled and recorded before the
        // fold starts over from it.
        self.seal_and_wait()?;
        let kind = match (kind, exact) {
            (BaseKind::Exact, true) => BaseKind::Exact,
            (BaseKind::Exact, false) => BaseKind::Gap,
            (k, _) => k,
        };
        if kind != BaseKind::Exact || self.txid == 0 {
            self.txid += 1;
        }
        let point = ReplicationPoint {
            stream: self.stream.clone(),
            txid: self.txid,
            after_gap: kind == BaseKind::Gap,
            watched_until_ns: (kind == BaseKind::Gap && watched > 0).then_some(watched),
        };
        let time = jiff::Timestamp::now();
        // Every replica that is not taking this base must get it too when
        // continuity broke, or its stream would have a hole.
        let targets: Vec<usize> = if kind == BaseKind::Exact {
            targets.to_vec()
        } else {
            self.all_replicas()
        };
        if targets.len() == self.replicas.len() {
            // Segments sealed from here on are recorded on top of this base.
            self.fold
                .lock()
                .expect("fold")
                .reset(point.txid, db.page_size, db.page_count)?;
        }
        for &i in &targets {
            self.replicas[i].with(|p| {
                p.needs_base = true;
                p.inflight = Some(point.txid);
            });
        }
        // The capture runs beside the follower, which keeps reading the log
        // (and holding it) meanwhile: a base of a large database takes
        // seconds, and a log left unwatched that long under heavy writes
        // could restart twice.
        let handle = self.start_capture(&targets, &point, time, db);
        self.base_job = Some(BaseJob { handle, point, started });
        self.save_state()
    }

    /// Pin the database for a base (with `read`, the commits before the
    /// pin are read into the pending buffer), retrying while the service
    /// holds its write lock and waiting a while for a database file that
    /// is being replaced. The capture's read transaction, and whether the
    /// base stands exactly at the last commit read.
    fn pin(&mut self, read: bool) -> Result<(crate::sqlite::capture::OpenDatabase, bool)> {
        let mut attempt = 0;
        let mut missing_since: Option<Instant> = None;
        loop {
            match self
                .follower
                .pin(read.then_some(&mut self.pending.wal), Duration::from_secs(2))
            {
                Ok(p) => return Ok(p),
                // A database replaced by hand (moved aside, then another
                // moved in) may be missing for a while.
                Err(e)
                    if e.code == ErrorCode::ReplicateDbMissing
                        && missing_since.is_none_or(|t| t.elapsed() < DB_MISSING_PATIENCE) =>
                {
                    if missing_since.is_none() {
                        missing_since = Some(Instant::now());
                        tracing::warn!(event = "replicate.db_missing", db = %self.follower.path.display(), "waiting for the database file to come back");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.temporary && attempt < 20 => {
                    // The service held its write lock, or the log moved
                    // while we looked: try again shortly.
                    attempt += 1;
                    tracing::info!(event = "replicate.pin_retry", error = %e, attempt);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Capture the base for the replicas at `targets` on its own thread,
    /// one replica after another; `time` is the base's recorded time.
    fn start_capture(
        &self,
        targets: &[usize],
        point: &ReplicationPoint,
        time: jiff::Timestamp,
        db: crate::sqlite::capture::OpenDatabase,
    ) -> std::thread::JoinHandle<BaseOutcomes> {
        let spec = SourceSpec {
            name: self.db.name.clone(),
            path: self.db.path.clone(),
            kind: SourceKind::Sqlite {
                schema_query: self.db.schema_query.clone(),
            },
        };
        let snap_opts = SnapshotOptions {
            kind: crate::repo::manifest::SnapshotKind::Base,
            tags: vec!["replicate".into()],
            replication: Some(point.clone()),
            time: Some(time),
        };
        let writes: Vec<(usize, Arc<Target>)> = targets
            .iter()
            .map(|&i| (i, Arc::clone(&self.replicas[i].target)))
            .collect();
        std::thread::Builder::new()
            .name("base".into())
            .spawn(move || {
                let mut out = Vec::new();
                for (i, target) in writes {
                    // Behind this process's other bases and folds for the
                    // same repository, never refused by them.
                    let outcome = target.write(|repo| {
                        crate::commands::snapshot::take_opened(
                            repo,
                            std::slice::from_ref(&spec),
                            &snap_opts,
                            &crate::progress::Silent,
                            &[&db],
                        )
                        .map(|(id, _)| id)
                    });
                    out.push((i, outcome));
                }
                // Ends the capture's read transaction.
                let _ = db.finish();
                out
            })
            .expect("spawn base thread")
    }

    /// Wait for the base being captured, if any (`block`), or only collect
    /// it if it has finished, and apply its outcome to the replicas.
    fn finish_base(&mut self, block: bool) -> Result<()> {
        if !block && !self.base_job.as_ref().is_some_and(|j| j.handle.is_finished()) {
            return Ok(());
        }
        let Some(job) = self.base_job.take() else {
            return Ok(());
        };
        let results = job.handle.join().expect("base thread");
        let txid = job.point.txid;
        let mut fatal = None;
        for (i, outcome) in results {
            let r = &self.replicas[i];
            match outcome {
                Ok(id) => {
                    let ms = job.started.elapsed().as_millis() as u64;
                    tracing::info!(event = "replicate.base", db = %self.db.name, replica = %r.name, snapshot = %id.short(), txid, after_gap = job.point.after_gap, ms);
                    self.bases += 1;
                    self.opts.notify.send(Notice::Base {
                        db: self.db.name.clone(),
                        replica: r.name.clone(),
                        snapshot: id.hex(),
                        txid,
                        after_gap: job.point.after_gap,
                        ms,
                    });
                    r.with(|p| {
                        p.base = txid;
                        if p.next <= txid && self.spool.get(p.next).is_none() {
                            p.next = txid + 1;
                        }
                        p.needs_base = false;
                        p.inflight = None;
                        p.base_failures = 0;
                        p.base_retry_at = None;
                    });
                }
                Err(e) => {
                    let wait = r.with(|p| {
                        p.needs_base = true;
                        p.inflight = None;
                        p.base_failures += 1;
                        let wait = Duration::from_secs(5u64 << p.base_failures.min(6));
                        p.base_retry_at = Some(Instant::now() + wait);
                        wait
                    });
                    tracing::warn!(event = "replicate.base_failed", db = %self.db.name, replica = %r.name, error = %e, retry_in_s = wait.as_secs());
                    self.opts.notify.send(Notice::BaseFailed {
                        db: self.db.name.clone(),
                        replica: r.name.clone(),
                        error: e.to_string(),
                        retry_in_s: wait.as_secs(),
                    });
                    if e.kind == crate::error::ErrorKind::Config {
                        fatal.get_or_insert(e);
                    }
                }
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A periodic base, folded from what the segments since the last one
    /// wrote; when that record is incomplete (after a restart), pinned and
    /// read from the database instead.
    fn fold_base(&mut self) -> Result<()> {
        self.finish_base(true)?;
        self.seal_and_wait()?;
        let fold = Arc::clone(&self.fold);
        let mut fold = fold.lock().expect("fold");
        if !fold.is_complete() {
            drop(fold);
            return self.base(&self.all_replicas(), BaseKind::Exact);
        }
        let mut folded = 0;
        for r in &self.replicas {
            if r.with(|p| p.needs_base) {
                continue;
            }
            let started = Instant::now();
            let outcome = r
                .target
                .write(|repo| fold.write_base(repo, &self.stream, self.opts.level));
            match outcome {
                Ok(Some(id)) => {
                    folded += 1;
                    let txid = fold.last_txid;
                    tracing::info!(event = "replicate.folded", db = %self.db.name, replica = %r.name, snapshot = %id.short(), txid, ms = started.elapsed().as_millis() as u64);
                    self.opts.notify.send(Notice::Folded {
                        db: self.db.name.clone(),
                        replica: r.name.clone(),
                        snapshot: id.hex(),
                        txid,
                    });
                }
                Ok(None) => {
                    tracing::info!(event = "replicate.fold_skipped", replica = %r.name, reason = "no base to fold onto")
                }
                Err(e) => tracing::warn!(event = "replicate.fold_failed", replica = %r.name, error = %e),
            }
        }
        if folded == self.replicas.len() {
            // Every replica has the new base: record on top of it.
            fold.rebase()?;
        } else {
            // Some did not: keep folding against the old base (the record
            // keeps growing from it), and try again next interval.
            fold.since = Instant::now();
        }
        Ok(())
    }

    /// Forget spooled segments every streaming replica has uploaded.
    fn trim_spool(&self) {
        let below = self
            .replicas
            .iter()
            .filter_map(|r| {
                r.peek(|p| match (p.needs_base, p.inflight) {
                    (false, _) => Some(p.next),
                    (true, Some(t)) => Some(t + 1),
                    (true, None) => None,
                })
            })
            .min()
            .unwrap_or(self.txid + 1);
        self.spool.trim(below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_sleeps_half_the_time_to_the_release_point_within_bounds() {
        let poll = Duration::from_millis(10);
        let mut p = Pace::default();
        assert_eq!(p.nap(poll, Some(100)), poll, "no rate yet");
        p.rate = 100_000.0; // frames per second
        assert_eq!(p.nap(poll, Some(400)), Duration::from_millis(2));
        assert_eq!(p.nap(poll, Some(0)), Duration::from_micros(200));
        assert_eq!(p.nap(poll, Some(1_000_000)), poll);
        assert_eq!(p.nap(poll, None), poll, "let go: the caller decides");
        assert_eq!(p.frames_in(Duration::from_millis(3)), 300);
        // A rate decayed towards zero must not overflow the conversion.
        p.rate = 1e-300;
        assert_eq!(p.nap(poll, Some(u32::MAX)), poll);
        assert_eq!(p.frames_in(Duration::from_secs(1)), 0);
        p.rate = f64::MAX;
        assert_eq!(p.frames_in(Duration::from_secs(1)), u32::MAX);
    }

    #[test]
    fn pace_follows_a_rise_at_once_and_a_fall_slowly() {
        let mut p = Pace {
            last: Some((Instant::now() - Duration::from_secs(1), 0)),
            rate: 0.0,
        };
        p.read(1000);
        assert!((900.0..1100.0).contains(&p.rate), "{}", p.rate);
        let fast = p.rate;
        p.last = Some((Instant::now() - Duration::from_secs(1), 1000));
        p.read(1000); // nothing in a second
        assert!(p.rate > fast * 0.7 && p.rate < fast, "{}", p.rate);
    }
}
