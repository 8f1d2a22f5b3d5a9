//! A replica repository as one replicator process shares it between every
//! database it ships: opened once (on a bucket, one HTTP client and runtime
//! rather than one per database and per base), written by one thread at a
//! time, its index kept between bases and brought up to date under the
//! lock instead of loaded again for each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, Result};
use crate::repo::manifest::Source;
use crate::repo::{LockedRepository, Opened, RepoLocation, Repository, SegmentStore};
use crate::storage::LockGuard;

/// How long a base waits for another process (a snapshot, a prune) holding
/// the repository's writer lock before it counts as failed and is tried
/// again later.
const LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// A replica repository, shared by every database one replicator process
/// ships to it.
pub struct Target {
    /// Where the repository is.
    pub location: RepoLocation,
    /// For messages: the location as the operator wrote it.
    pub name: String,
    /// Every upload of every database goes through this one handle.
    pub segments: SegmentStore,
    /// The repository as opened, for reads that need no index.
    opened: Repository<Opened>,
    /// The writers' view, indexed once a write has loaded it (`None`
    /// before, and after a refresh that failed: the next write loads all
    /// again); the mutex makes this process's bases and folds take turns
    /// before any of them asks for the writer lock.
    writer: Mutex<Option<Repository>>,
    /// The newest base of each stream when the replicator started, from one
    /// reading of the manifests for all its databases.
    bases_at_start: Mutex<Option<HashMap<String, u64>>>,
    /// Whether a wait for another process's lock has been logged and not yet
    /// ended: one line however many bases queue behind it.
    waiting: AtomicBool,
}

impl Target {
    /// Open an existing repository (the default one is created by the
    /// caller first, under the lock).
    pub fn open(location: &RepoLocation) -> Result<Arc<Target>> {
        let opened = Repository::open(location)?;
        Ok(Arc::new(Target {
            location: location.clone(),
            name: location.display(),
            segments: opened.segment_store(),
            opened,
            writer: Mutex::new(None),
            bases_at_start: Mutex::new(None),
            waiting: AtomicBool::new(false),
        }))
    }

    /// Run `f` as the repository's one writer: after this process's other
    /// writers, holding the writer lock, with the index up to date.
    pub fn write<T>(&self, f: impl FnOnce(&LockedRepository) -> Result<T>) -> Result<T> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let guard = self.lock(&self.opened)?;
        let repo = match writer.take() {
            Some(kept) => kept.into_locked(guard)?,
            None => self.opened.clone().into_locked(guard)?,
        };
        let done = f(&repo);
        *writer = Some(repo.unlocked());
        done
    }

    /// The writer lock, waiting up to [`LOCK_PATIENCE`] for another process
    /// (this one's threads queue in `write` and in the lock itself).
    fn lock(&self, repo: &Repository<Opened>) -> Result<Box<dyn LockGuard>> {
        let started = Instant::now();
        loop {
            match repo.lock("replicate") {
                Err(e) if e.kind == ErrorKind::Busy && started.elapsed() < LOCK_PATIENCE => {
                    if !self.waiting.swap(true, Ordering::SeqCst) {
                        tracing::info!(event = "replicate.lock_wait", replica = %self.name, error = %e, "waiting for the writer lock");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(g) => {
                    if self.waiting.swap(false, Ordering::SeqCst) {
                        tracing::info!(event = "replicate.lock_taken", replica = %self.name, waited_ms = started.elapsed().as_millis() as u64);
                    }
                    return Ok(g);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The newest transaction id this replica holds for `stream`: the end of
    /// its last segment or its newest base, 0 when it holds neither. One
    /// LIST for the stream; the manifests are read once for every stream.
    pub fn last_txid(&self, stream: &str) -> Result<u64> {
        let segs = self.segments.last_txid(stream)?;
        let mut bases = self.bases_at_start.lock().unwrap_or_else(|p| p.into_inner());
        if bases.is_none() {
            // Read as the replicator starts, before any of its own bases:
            // the streams are this host's, so nobody else adds to them.
            let _turn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut newest: HashMap<String, u64> = HashMap::new();
            for s in self.opened.snapshots()? {
                for src in s.manifest.sources {
                    if let Source::Sqlite(d) = src
                        && let Some(r) = d.replication
                    {
                        let t = newest.entry(r.stream).or_default();
                        *t = (*t).max(r.txid);
                    }
                }
            }
            *bases = Some(newest);
        }
        let base = bases.as_ref().and_then(|b| b.get(stream).copied()).unwrap_or(0);
        Ok(segs.max(base))
    }
}
