//! Sealing on its own thread: turning the commits the follower read into a
//! segment (XOR deltas, zstd, hash), spooling it durably, recording its
//! pages for the next fold and saving where the stream stands.
//!
//! Why a thread: a seal takes milliseconds (an 8 MiB segment to encode, then
//! a write, fsync and rename, then the state's own), and a busy service
//! fills its log that fast. While the follower sealed, nothing let the log
//! restart on time; the service's log grew to twice its checkpoint size,
//! its every commit past that size tried a checkpoint that could not finish,
//! and its own checkpoint then had twice the frames to copy and fsync
//! (measured: the log restarted at 1,700 frames, not 1,000, and the writer
//! ran 0.77-0.99x of its rate without replication). The follower now hands
//! the pages over and reads on into a second buffer.
//!
//! The spool's newest segment says where reading stood after it (see
//! `spool`); the follower saves the state itself only after a base, once
//! `flush` says every segment before it is spooled.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::repo::segment::{Segment, SegmentCommit};
use crate::sqlite::wal::{WalCommits, WalPosition};

use super::fold::Fold;
use super::spool::Spool;

/// A commit's id and the interval in which it was made.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// The commit's transaction id, counted by the replicator from 1.
    pub txid: u64,
    /// When the replicator read it (it was made at or before this).
    pub time_ns: i64,
    /// When the replicator last looked without finding it (it was made
    /// after this).
    pub not_before_ns: i64,
}

/// Commits read and stamped, handed over to be sealed.
pub struct Batch {
    /// The commits and their page images.
    pub wal: WalCommits,
    /// One for each commit in `wal.commits`.
    pub stamps: Vec<Stamp>,
    /// Where reading stood after the last of them.
    pub pos: WalPosition,
    /// Bytes per page of the database.
    pub page_size: u32,
}

#[derive(Default)]
struct Progress {
    /// Batches handed over and not yet sealed.
    in_flight: usize,
    /// The first failure; every later call reports it.
    error: Option<Error>,
    /// How long the last seal took.
    last: Duration,
}

struct Shared {
    progress: Mutex<Progress>,
    idle: Condvar,
}

/// The thread that encodes read commits into WAL segments, spools them, and
/// records their pages for the next fold. Its first failure is reported by
/// every later call.
pub struct Sealer {
    jobs: Option<SyncSender<Batch>>,
    /// Page buffers back from sealed batches, their capacity kept.
    spare: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the sealer thread needs besides the batches.
pub struct Setup {
    /// Where sealed segments go.
    pub spool: Arc<Spool>,
    /// The fold record each sealed segment's pages are added to.
    pub fold: Arc<Mutex<Fold>>,
    /// zstd level.
    pub level: i32,
    /// Called after each segment is spooled (wakes the replicas' threads).
    pub spooled: Box<dyn Fn() + Send>,
}

impl Sealer {
    /// At most one batch is sealed while the follower fills the next: a
    /// second hand-over waits for the first (two page buffers in all).
    pub fn start(setup: Setup) -> Sealer {
        let (jobs, rx) = sync_channel::<Batch>(0);
        let (give_back, spare) = sync_channel::<Vec<u8>>(2);
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            idle: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sealer".into())
                .spawn(move || seal_loop(setup, rx, give_back, &shared))
                .expect("spawn sealer thread")
        };
        Sealer {
            jobs: Some(jobs),
            spare,
            shared,
            thread: Some(thread),
        }
    }

    /// Hand a batch over; returns an empty page buffer to read on into.
    /// Waits while the previous batch is still being sealed.
    pub fn submit(&mut self, batch: Batch) -> Result<Vec<u8>> {
        self.check()?;
        self.shared.progress.lock().expect("sealer").in_flight += 1;
        let jobs = self.jobs.as_ref().expect("sealer running");
        if jobs.send(batch).is_err() {
            self.shared.progress.lock().expect("sealer").in_flight -= 1;
            self.check()?;
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                "replicate",
                "the sealer thread stopped",
            ));
        }
        Ok(self.spare.try_recv().unwrap_or_default())
    }

    /// Wait until every batch handed over is spooled; the first failure.
    pub fn flush(&self) -> Result<()> {
        let mut p = self.shared.progress.lock().expect("sealer");
        while p.in_flight > 0 && p.error.is_none() {
            p = self.shared.idle.wait(p).expect("sealer");
        }
        reported(&p)
    }

    /// The first failure of a seal, if any.
    pub fn check(&self) -> Result<()> {
        reported(&self.shared.progress.lock().expect("sealer"))
    }

    /// How long the last seal took (encode, spool, record).
    pub fn last_seal(&self) -> Duration {
        self.shared.progress.lock().expect("sealer").last
    }
}

/// The stored failure, as a new error each time it is asked for (the
/// original's source chain stays with the first).
fn reported(p: &Progress) -> Result<()> {
    match &p.error {
        Some(e) => {
            let mut again = Error::new(e.kind, &e.subject, e.problem.clone()).fix(e.fix.clone());
            again.code = e.code;
            again.temporary = e.temporary;
            Err(again)
        }
        None => Ok(()),
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn seal_loop(setup: Setup, jobs: Receiver<Batch>, give_back: SyncSender<Vec<u8>>, shared: &Shared) {
    let mut encoder = crate::codec::Encoder::new(setup.level);
    let (mut body, mut out) = (Vec::new(), Vec::new());
    while let Ok(batch) = jobs.recv() {
        let started = Instant::now();
        let failed = shared.progress.lock().expect("sealer").error.is_some();
        let outcome = if failed {
            // After a failure nothing more is spooled: the state must not
            // name commits after a segment that is missing.
            Ok(None)
        } else {
            seal(&setup, batch, &mut encoder, &mut body, &mut out).map(Some)
        };
        let mut p = shared.progress.lock().expect("sealer");
        p.in_flight -= 1;
        p.last = started.elapsed();
        match outcome {
            Ok(Some(mut data)) => {
                data.clear();
                let _ = give_back.try_send(data);
            }
            Ok(None) => {}
            Err(e) => {
                p.error.get_or_insert(e);
            }
        }
        shared.idle.notify_all();
        drop(p);
        (setup.spooled)();
    }
}

/// One segment: encoded, spooled, recorded for the fold. Returns the
/// batch's page buffer.
fn seal(
    setup: &Setup,
    batch: Batch,
    encoder: &mut crate::codec::Encoder,
    body: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Vec<u8>> {
    let started = Instant::now();
    let Batch {
        wal,
        stamps,
        pos,
        page_size,
    } = batch;
    let mut commits = Vec::with_capacity(wal.commits.len());
    let mut pgnos = Vec::with_capacity(wal.data.len() / page_size as usize);
    for (c, stamp) in wal.commits.iter().zip(&stamps) {
        commits.push(SegmentCommit {
            txid: stamp.txid,
            time_ns: stamp.time_ns,
            not_before_ns: stamp.not_before_ns,
            db_pages: c.db_pages,
            pages: c.pages.len() as u32,
        });
        pgnos.extend_from_slice(&c.pages);
    }
    let seg = Segment {
        page_size,
        compacted: false,
        first_txid: stamps[0].txid,
        last_txid: stamps[stamps.len() - 1].txid,
        wal_end: pos.to_words(),
        commits,
        pgnos,
        data: wal.data,
    };
    seg.encode_with(encoder, body, out);
    setup.spool.put(seg.first_txid, seg.last_txid, out)?;
    setup.fold.lock().expect("fold").record(&seg)?;
    tracing::debug!(
        event = "replicate.sealed",
        us = started.elapsed().as_micros() as u64,
        first_txid = seg.first_txid,
        last_txid = seg.last_txid,
        commits = seg.commits.len(),
        bytes = out.len()
    );
    Ok(seg.data)
}
