//! Following one live database's WAL: every committed transaction, in
//! order, checked against SQLite's salts and checksum chain, and never a
//! frame lost to a checkpoint.
//!
//! How frames are held: SQLite overwrites WAL frames only when a writer
//! restarts the log, and it cannot restart while any reader holds a read
//! mark (a read transaction that uses the WAL). So the follower always keeps
//! a read transaction open (the *anchor*) and moves it forward, on a second
//! connection begun before the first ends, only after what it has read is
//! safely spooled. The one moment it lets go entirely is its own checkpoint,
//! after reading to the end; if the log then restarts, the old generation's
//! tail is still in the file beyond the new generation's frames, and is read
//! from there. When that cannot be shown complete, the follower says so
//! (`Lost`) and the caller takes a new verified base. It never guesses.
//!
//! A base is pinned to an exact WAL position by taking the database's write
//! lock (`BEGIN IMMEDIATE`, held for milliseconds, never writing), reading
//! where the log ends from the wal-index, and opening the capture's read
//! transaction before letting go.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, ErrorKind, IoContext, Result};
use crate::sqlite::anchor::{self, Anchor};
use crate::sqlite::capture::{self, OpenDatabase};
use crate::sqlite::checkpoint::Checkpointer;
use crate::sqlite::wal::{self, IndexHeader, SlotAfter, WalCommits, WalHeader, WalPosition};

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Zero or more new commits were appended.
    Ok,
    /// Continuity cannot be proven from here on; a new base is needed.
    Lost(&'static str),
}

/// A live database followed through its WAL: holds the log against
/// checkpoints (with read transactions of its own), reads each commit, and
/// runs the checkpoints itself. One per database per host, enforced by an
/// `flock` on the database file.
pub struct Follower {
    /// The database's real path (symlinks resolved).
    pub path: PathBuf,
    wal_path: PathBuf,
    shm_path: PathBuf,
    /// Device and inode of the database file when opened.
    ident: (u64, u64),
    /// Bytes per page when opened.
    pub page_size: u32,
    big_endian: bool,
    /// The read transaction that holds the log.
    anchor: Anchor,
    /// The anchor was begun while an earlier one held the log, after
    /// reading commits past it: SQLite then gives it a read mark past zero
    /// (zero is for a fully checkpointed log, and the earlier mark kept it
    /// from becoming one), and a mark past zero holds the log for as long
    /// as it is kept. Such an anchor is left where it is.
    settled: bool,
    /// Takes the write lock to pin a base and runs our checkpoints.
    checkpointer: Checkpointer,
    /// Where reading stands; `None` until a base is pinned.
    pub pos: Option<WalPosition>,
    /// Size of the WAL file at the last read, to tell a truncated log.
    wal_len_seen: u64,
    last_checkpoint: Instant,
    /// Frame count of the current generation at which to try restarting
    /// the log next (raised after an attempt the service's readers foiled).
    restart_at: u32,
    /// Since when the anchor is let go for a restart, and `frames_read`
    /// then.
    awaiting: Option<(Instant, u64)>,
    /// The current generation is known to end at this position should the
    /// log restart while the anchor is held (see `hold_while_idle`).
    complete_at: Option<WalPosition>,
    schema_query: String,
    /// Kept open for the process's life: holds the replicator's exclusive
    /// flock, and closing a descriptor of the database would drop SQLite's
    /// POSIX locks in this process.
    db_file: std::sync::Arc<File>,
    /// The `-shm` file, opened once and never closed while SQLite's locks
    /// on it matter (see `IndexHeader::read`).
    shm_file: Option<std::sync::Arc<File>>,
    /// Descriptors of files replaced underneath (`reopen`), kept open: the
    /// new database's `-shm` may be the same file, and closing ours would
    /// drop the new connections' locks on it.
    retired: Vec<std::sync::Arc<File>>,
    /// Frames read since opened, across generations: how fast the log
    /// grows, to look again in time to let it restart (see `frames_to_release`).
    pub frames_read: u64,
    /// See `release_checkpoint_time`.
    release_ckpt: Duration,
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

fn ident_of(path: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).at(path)?;
    Ok((m.dev(), m.ino()))
}

/// Refuse what replication cannot follow safely, with the reason. Only for
/// a process without connections to the database (it opens and closes it).
pub fn check_supported(path: &Path) -> Result<()> {
    if !crate::sqlite::has_header(path)? {
        return Err(not_sqlite(path));
    }
    if let Some(fs) = crate::fsutil::unreliable_filesystem(path) {
        return Err(unsupported(path, fs));
    }
    Ok(())
}

fn not_sqlite(path: &Path) -> Error {
    Error::bad_data(path.display(), "not a SQLite database (header check failed)")
        .fix("point replicate at the database file itself")
        .code(ErrorCode::ReplicateNotSqlite)
}

fn unsupported(path: &Path, fs: &str) -> Error {
    Error::config(
        path.display(),
        format!("the database is on {fs}, where SQLite's WAL shared memory and fsync cannot be trusted"),
    )
    .fix("move the database to a local disk filesystem (ext4, xfs, btrfs, zfs), or use `lifeboat snapshot` on a schedule instead")
    .code(ErrorCode::ReplicateUnsupportedFilesystem)
}

impl Follower {
    /// Start following `path`. Fails with [`ErrorKind::Config`] when the
    /// database is not in WAL mode or lies on a filesystem where SQLite's
    /// shared memory cannot be trusted, [`ErrorKind::BadData`] when it is
    /// not SQLite, and [`ErrorKind::Busy`] when another replicator follows
    /// it.
    pub fn open(path: &Path, schema_query: &str) -> Result<Follower> {
        if let Some(fs) = crate::fsutil::unreliable_filesystem(path) {
            return Err(unsupported(path, fs));
        }
        let path = std::fs::canonicalize(path).at(path)?;
        let db_file = File::open(&path).at(&path)?;
        if !crate::sqlite::file_has_header(&db_file, &path)? {
            return Err(not_sqlite(&path));
        }
        // flock and SQLite's fcntl locks are independent on local filesystems.
        // SAFETY: a valid open descriptor; flock has no memory effects.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&db_file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::busy(
                path.display(),
                "another `lifeboat replicate` is already replicating this database",
            )
            .fix("stop the other replicator first (one per database; it can ship to several replicas)")
            .code(ErrorCode::ReplicateBusy));
        }
        let (mode, page_size) = anchor::journal_mode_and_page_size(&path)?;
        if mode != "wal" {
            return Err(Error::config(
                path.display(),
                format!("journal_mode is {mode}; replication follows the write-ahead log and needs WAL mode"),
            )
            .fix("switch the database to WAL once (`sqlite3 DB 'PRAGMA journal_mode=WAL'`, with the service stopped), or use `lifeboat snapshot` instead")
            .code(ErrorCode::ReplicateNotWal));
        }
        let checkpointer = Checkpointer::open(&path)?;
        let wal_path = sidecar(&path, "-wal");
        let big_endian = WalHeader::read(&wal_path)?
            .map(|h| h.big_endian())
            .unwrap_or(cfg!(target_endian = "big"));
        let mut f = Follower {
            ident: {
                let m = db_file.metadata().at(&path)?;
                (m.dev(), m.ino())
            },
            wal_path,
            shm_path: sidecar(&path, "-shm"),
            page_size,
            big_endian,
            anchor: Anchor::open(&path)?,
            settled: false,
            checkpointer,
            pos: None,
            wal_len_seen: 0,
            last_checkpoint: Instant::now(),
            restart_at: 0,
            awaiting: None,
            complete_at: None,
            schema_query: schema_query.to_string(),
            db_file: std::sync::Arc::new(db_file),
            shm_file: None,
            retired: Vec::new(),
            frames_read: 0,
            release_ckpt: Duration::ZERO,
            path,
        };
        f.anchor()?;
        Ok(f)
    }

    /// Move the anchor forward to the log's newest frames (while let go for
    /// a restart, only once the log has grown past `restart_at` without
    /// restarting).
    ///
    /// A settled anchor stays: moving it would let the service's checkpoint
    /// (which a log past its `wal_autocheckpoint` size runs on every commit)
    /// copy the frames up to the new mark and fsync, inside the service's
    /// commits, once per poll. Kept early in the log, its checkpoints find
    /// nothing to copy, and the frames are copied once, by our own
    /// checkpoint when the log is let go to restart.
    pub fn advance(&mut self) -> Result<()> {
        if self.awaiting.is_some() {
            if self.wal_frames() < self.restart_at {
                return Ok(());
            }
        } else if self.settled {
            return Ok(());
        }
        let held = self.anchor.is_held();
        self.anchor()?;
        self.settled = held;
        Ok(())
    }

    /// Hold the log at its newest end, never letting go meanwhile (see
    /// [`Anchor::hold_newest`]).
    pub fn anchor(&mut self) -> Result<()> {
        self.anchor.hold_newest()?;
        self.settled = false;
        self.awaiting = None;
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        self.complete_at = None;
        if self.anchor.is_held() {
            self.anchor.release()?;
            self.settled = false;
        }
        Ok(())
    }

    /// The log was let go to restart, but nothing was committed for `quiet`
    /// and it did not restart: the service is idle. Hold the log again
    /// rather than leave it unguarded for however long the service stays
    /// idle (a burst after it could restart and overwrite the log before
    /// the next look). Returns whether it did.
    ///
    /// Why the service can still restart the log once: our checkpoint has
    /// copied every frame, and a read transaction begun on a fully copied
    /// log takes SQLite's read lock 0, which does not stop a writer from
    /// restarting the log but stops every checkpoint from copying (wal.c:
    /// `walTryBeginRead`, `walCheckpoint`, `walRestartLog`). A restart
    /// needs every frame copied, so while the anchor is held the log
    /// restarts at most once, and only at the end it had when the anchor
    /// began; with that end being where reading stands, no frame can be
    /// missed, even if the new generation overwrites the old before we look.
    /// (Had a checkpoint not copied every frame, the anchor takes a read
    /// mark instead, and the log cannot restart at all while it is held.)
    pub fn hold_while_idle(&mut self, quiet: Duration) -> Result<bool> {
        let Some((since, frames)) = self.awaiting else {
            return Ok(false);
        };
        if since.elapsed() < quiet || self.frames_read != frames {
            return Ok(false);
        }
        self.anchor()?;
        let index = IndexHeader::read(&*self.shm_file()?, &self.shm_path)?;
        if let (Some(ix), Some(pos)) = (index, self.pos)
            && pos.frame > 0
            && ix.salts == (pos.salt1, pos.salt2)
            && ix.max_frame == pos.frame
        {
            self.complete_at = Some(pos);
        }
        Ok(true)
    }

    /// The database file at the path is no longer the one opened (restored
    /// or replaced underneath).
    pub fn replaced(&self) -> bool {
        ident_of(&self.path).map(|i| i != self.ident).unwrap_or(true)
    }

    /// Pin a base: under the write lock, find where the log ends and open
    /// the capture's read transaction there. With `read` given and reading
    /// in step, the commits up to that end are read into it first, so the
    /// base lands exactly after the last of them (`true`); otherwise reading
    /// jumps to the end and the base stands for whatever came before
    /// (`false`). The follower continues from the pinned position.
    pub fn pin(&mut self, read: Option<&mut WalCommits>, busy: Duration) -> Result<(OpenDatabase, bool)> {
        if self.replaced() {
            self.reopen()?;
        }
        self.checkpointer
            .lock_writers(busy)
            .map_err(|e| e.code_keeping_kind(ErrorCode::ReplicatePinBusy))?;
        let pinned = (|| -> Result<(OpenDatabase, WalPosition, bool)> {
            let mut exact = false;
            if let Some(out) = read
                && self.pos.is_some()
            {
                exact = self.poll(out, usize::MAX)? == Polled::Ok && !out.too_large;
            }
            let index = IndexHeader::read(&*self.shm_file()?, &self.shm_path)?;
            let header = WalHeader::read(&self.wal_path)?;
            let end = match (index, header) {
                (Some(ix), _) if ix.max_frame == 0 => WalPosition::before_generation(ix.salts),
                (Some(ix), Some(h)) if h.salts() == ix.salts => WalPosition {
                    salt1: ix.salts.0,
                    salt2: ix.salts.1,
                    frame: ix.max_frame,
                    cksum1: ix.frame_cksum.0,
                    cksum2: ix.frame_cksum.1,
                },
                _ => {
                    return Err(Error::bad_data(
                        self.path.display(),
                        "the WAL and its index disagree while the write lock is held",
                    )
                    .temporary());
                }
            };
            if end.frame > 0 {
                let file = File::open(&self.wal_path).at(&self.wal_path)?;
                if !wal::position_holds(&file, &end, self.page_size)? {
                    return Err(
                        Error::bad_data(self.path.display(), "the WAL's last frame does not match its index")
                            .temporary(),
                    );
                }
            }
            // Reading stands exactly at the end (an empty log matches any
            // start of the pinned generation).
            exact = exact
                && self.pos.is_some_and(|p| {
                    (p.salt1, p.salt2, p.frame) == (end.salt1, end.salt2, end.frame)
                        && (end.frame == 0 || (p.cksum1, p.cksum2) == (end.cksum1, end.cksum2))
                });
            let pending = capture::open_with(&self.path, &self.schema_query, Some(self.db_file.clone()))?;
            let db = capture::begin_all(vec![pending])?.pop().expect("one database");
            Ok((db, end, exact))
        })();
        self.checkpointer.unlock_writers()?;
        let (db, end, exact) = pinned?;
        if !exact {
            self.pos = Some(end);
        }
        self.page_size = db.page_size;
        self.wal_len_seen = std::fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        self.anchor()?;
        tracing::info!(event = "replicate.pinned", db = %self.path.display(), frame = end.frame, exact);
        Ok((db, exact))
    }

    /// The `-shm` file, opened on first use (after SQLite created it) and
    /// kept open from then on.
    fn shm_file(&mut self) -> Result<std::sync::Arc<File>> {
        if self.shm_file.is_none() {
            let f = crate::sqlite::open_for_reading(&self.shm_path).at(&self.shm_path)?;
            self.shm_file = Some(f);
        }
        Ok(self.shm_file.clone().expect("set above"))
    }

    /// Open everything again on the file now at the path.
    fn reopen(&mut self) -> Result<()> {
        // Replacing a database is two renames (the old one aside, the new
        // one in: `restore --force` does that); between them the path is
        // empty. The base knows this event and waits for the new file.
        let gone = || {
            Error::no_input(
                self.path.display(),
                "the database file is gone (moved or deleted while replicated)",
            )
            .fix("put the database back; stop replicate first if it was removed on purpose")
            .code(ErrorCode::ReplicateDbMissing)
        };
        if !self.path.exists() {
            return Err(gone());
        }
        let fresh = match Follower::open(&self.path, &self.schema_query) {
            Err(e) if e.kind == ErrorKind::NoInput && !self.path.exists() => return Err(gone()),
            other => other?,
        };
        let pos = self.pos;
        let mut retired = std::mem::take(&mut self.retired);
        retired.extend(self.shm_file.take());
        retired.push(self.db_file.clone());
        *self = fresh;
        self.pos = pos;
        self.retired = retired;
        Ok(())
    }

    /// Continue from a position saved by an earlier run, if the log still
    /// holds it; otherwise stay without a position (a base is needed).
    pub fn resume(&mut self, pos: WalPosition, ident: (u64, u64), page_size: u32) -> Result<bool> {
        if ident != self.ident || page_size != self.page_size {
            return Ok(false);
        }
        // Nobody held the log while we were away: the service may have
        // committed past `pos`, checkpointed those commits into the database
        // and restarted, truncated or deleted the log (its last connection's
        // close does). Then they are in no log we can read, and only a base
        // catches them. Continue only where the log still holds every frame
        // after `pos`.
        match WalHeader::read(&self.wal_path)? {
            None => return Ok(false),
            Some(h) if pos.same_generation(&h) => {
                if pos.frame > 0 {
                    let file = File::open(&self.wal_path).at(&self.wal_path)?;
                    if !wal::position_holds(&file, &pos, self.page_size)? {
                        return Ok(false);
                    }
                }
            }
            // Pinned at an empty log: `poll` knows which generation may
            // follow it.
            Some(_) if pos.frame == 0 => {}
            Some(_) => return Ok(false),
        }
        self.wal_len_seen = 0;
        self.pos = Some(pos);
        Ok(true)
    }

    /// The database file's device and inode when opened: a different pair at the
    /// path means the file was replaced.
    pub fn ident(&self) -> (u64, u64) {
        self.ident
    }

    /// Read what was committed since the last call into `out` (holding at
    /// most `max_bytes` of pages in all, see `wal::read_commits`).
    pub fn poll(&mut self, out: &mut WalCommits, max_bytes: usize) -> Result<Polled> {
        let Some(mut pos) = self.pos else {
            return Ok(Polled::Lost("no base yet"));
        };
        if self.replaced() {
            return Ok(Polled::Lost("the database file was replaced"));
        }
        let Some(header) = WalHeader::read(&self.wal_path)? else {
            // No log, or one being created: nothing committed since.
            if pos.frame > 0 && std::fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0) < self.wal_len_seen {
                return Ok(Polled::Lost("the WAL was truncated or removed by another process"));
            }
            return Ok(Polled::Ok);
        };
        if header.page_size() != self.page_size {
            return Ok(Polled::Lost("the page size changed"));
        }
        let file = File::open(&self.wal_path).at(&self.wal_path)?;
        let len = file.metadata().at(&self.wal_path)?.len();
        if !pos.same_generation(&header) {
            let next = header.salt1 == pos.salt1.wrapping_add(1);
            let stale = header.salt1.wrapping_add(1) == pos.salt1 && pos.frame == 0;
            if stale {
                return Ok(Polled::Ok); // the pinned generation has not begun
            }
            // A log file's first generation (checkpoint sequence 0) after a
            // pin on an empty log: nothing can have come before it, since
            // the file cannot be deleted while we hold the database open.
            let first_of_file = pos.frame == 0 && header.checkpoint_seq == 0;
            if first_of_file {
                pos = WalPosition::start_of(&header);
                self.big_endian = header.big_endian();
                self.pos = Some(pos);
            } else if !next {
                return Ok(Polled::Lost("the WAL restarted more than once between reads"));
            }
        }
        if !pos.same_generation(&header) {
            // Restarted while an anchor taken at this very end was held:
            // nothing can follow it (see `hold_while_idle`).
            let known_complete = self.complete_at == Some(pos);
            if !known_complete {
                // The old generation's frames after `pos` survive beyond the
                // new generation's end: read them first.
                pos = self.consume_commits(&file, pos, max_bytes, out)?;
                self.pos = Some(pos);
                if out.too_large || out.full {
                    return Ok(Polled::Ok); // come back for the rest
                }
                let frame_len = wal::FRAME_HEADER_LEN + self.page_size as u64;
                let slot_end = wal::HEADER_LEN + (pos.frame as u64 + 1) * frame_len;
                let ended = wal::position_holds(&file, &pos, self.page_size)?
                    && if len >= slot_end {
                        wal::slot_after(&file, &pos, self.page_size, header.salts())? == SlotAfter::Free
                    } else {
                        len >= self.wal_len_seen
                    };
                if !ended {
                    return Ok(Polled::Lost("the WAL restarted before its last frames were read"));
                }
            }
            self.complete_at = None;
            tracing::info!(event = "replicate.wal_restarted", db = %self.path.display(), old_frames = pos.frame);
            pos = WalPosition::start_of(&header);
            self.big_endian = header.big_endian();
            self.pos = Some(pos);
            // Hold the new generation before the service can fill and
            // restart it again.
            self.restart_at = 0;
            self.anchor()?;
        } else if pos.frame == 0 && (pos.cksum1, pos.cksum2) == (0, 0) {
            pos = WalPosition::start_of(&header);
        } else if len < self.wal_len_seen && !wal::position_holds(&file, &pos, self.page_size)? {
            return Ok(Polled::Lost("the WAL was truncated underneath"));
        }
        let after = self.consume_commits(&file, pos, max_bytes, out)?;
        if after != pos {
            self.complete_at = None;
        }
        self.pos = Some(after);
        self.wal_len_seen = len;
        Ok(Polled::Ok)
    }

    /// `wal::read_commits` in this log, from `pos`.
    fn read_commits(
        &self,
        file: &File,
        pos: WalPosition,
        max_bytes: usize,
        out: &mut WalCommits,
    ) -> Result<WalPosition> {
        wal::read_commits(
            file,
            &self.wal_path,
            self.big_endian,
            self.page_size,
            pos,
            max_bytes,
            out,
        )
    }

    /// `read_commits`, counting the frames consumed (see `frames_read`).
    fn consume_commits(
        &mut self,
        file: &File,
        pos: WalPosition,
        max_bytes: usize,
        out: &mut WalCommits,
    ) -> Result<WalPosition> {
        let after = self.read_commits(file, pos, max_bytes, out)?;
        self.frames_read += after.frame.saturating_sub(pos.frame) as u64;
        Ok(after)
    }

    /// Whether a commit follows the position in the same generation (read,
    /// not consumed).
    fn has_unread(&self) -> Result<bool> {
        let (Some(pos), Some(header)) = (self.pos, WalHeader::read(&self.wal_path)?) else {
            return Ok(false);
        };
        if !pos.same_generation(&header) {
            return Ok(true);
        }
        let pos = if pos.frame == 0 {
            WalPosition::start_of(&header)
        } else {
            pos
        };
        let file = File::open(&self.wal_path).at(&self.wal_path)?;
        let mut scratch = WalCommits::default();
        let ps = self.page_size as usize;
        self.read_commits(&file, pos, ps, &mut scratch)?;
        Ok(!scratch.commits.is_empty() || scratch.too_large)
    }

    /// Whether the log is long enough to let go for a restart (see
    /// `release_for_restart`); `lead` frames are expected to arrive while
    /// our checkpoint runs.
    pub fn restart_due(&self, restart_frames: u32, lead: u32) -> bool {
        self.frames_to_release(restart_frames, lead) == Some(0)
    }

    /// How many more frames until the log is let go to restart; `None`
    /// while it is let go.
    ///
    /// From `restart_frames` on (the service's `wal_autocheckpoint`, 1000
    /// by default) the service tries a checkpoint on every commit, and
    /// while we hold the log, or run our own checkpoint, each try fails
    /// after a lock call or several: more work per commit for a busy
    /// writer, and a longer log for its checkpoint to copy. So the log is
    /// let go a tenth short of it, and earlier by the `lead` frames the
    /// service writes while our checkpoint runs (never before half way):
    /// the service's first try then finds most frames copied, completes,
    /// and its next commit restarts the log.
    pub fn frames_to_release(&self, restart_frames: u32, lead: u32) -> Option<u32> {
        if self.awaiting.is_some() {
            return None;
        }
        let release_at = (restart_frames - restart_frames / 10)
            .saturating_sub(lead)
            .max(restart_frames / 2)
            .max(self.restart_at);
        Some(release_at.saturating_sub(self.wal_frames()))
    }

    /// How long our checkpoint at a release takes, smoothed.
    pub fn release_checkpoint_time(&self) -> Duration {
        self.release_ckpt
    }

    /// Frames in the current generation up to where reading stands.
    pub fn wal_frames(&self) -> u32 {
        self.pos.map(|p| p.frame).unwrap_or(0)
    }

    /// Let the log restart, once it is `restart_frames` long and we have
    /// just read to its end. While anchored the log cannot restart (and a
    /// service whose checkpoints cannot finish retries one on every
    /// commit), so the anchor is let go and a PASSIVE checkpoint run; the
    /// service's next commit starts a new generation. The caller must look
    /// again within a millisecond or two, doing nothing else, until the new
    /// generation appears: `poll` then reads the old generation's tail from
    /// beyond the new frames and anchors in the new one at once, before a
    /// busy service could fill and restart it again.
    pub fn release_for_restart(&mut self, restart_frames: u32) -> Result<()> {
        let started = Instant::now();
        let frames = self.wal_frames();
        // If it does not restart (a reader of the service holds the log), it
        // is anchored again once it has grown as much again.
        self.restart_at = frames.saturating_add(restart_frames);
        self.release()?;
        self.awaiting = Some((Instant::now(), self.frames_read));
        let r = self.checkpointer.passive();
        self.last_checkpoint = Instant::now();
        r?;
        let took = started.elapsed();
        self.release_ckpt = (self.release_ckpt * 7 + took * 3) / 10;
        tracing::debug!(event = "replicate.checkpoint", db = %self.path.display(), mode = "passive_restart", frames, us = took.as_micros() as u64);
        Ok(())
    }

    /// The log this follower reads.
    pub fn wal_path(&self) -> &Path {
        &self.wal_path
    }

    /// How long the anchor has been let go for a restart, if it is.
    pub fn awaiting_restart(&self) -> Option<Duration> {
        self.awaiting.map(|(t, _)| t.elapsed())
    }

    /// Checkpoint after everything read has been spooled: PASSIVE while
    /// anchored every `interval` (backfills up to our mark, never blocks
    /// anyone); past `truncate_frames` (the log could not restart, say for a
    /// long reader of the service), TRUNCATE, which blocks writers for at
    /// most `truncate_busy`. Returns `Lost` when a commit may have slipped
    /// past unread during a TRUNCATE.
    pub fn checkpoint(&mut self, interval: Duration, truncate_frames: u32, truncate_busy: Duration) -> Result<Polled> {
        let frames = self.wal_frames();
        let started = Instant::now();
        let mode;
        let mut outcome = Polled::Ok;
        if frames >= truncate_frames {
            mode = "truncate";
            // A commit by anyone between the version check and the
            // truncation would be checkpointed and cut away unread.
            let before = self.checkpointer.data_version()?;
            if self.has_unread()? {
                return Ok(Polled::Ok); // not at the end after all; after the next seal
            }
            self.release()?;
            let truncated = self.checkpointer.truncate(truncate_busy)?;
            let after = self.checkpointer.data_version()?;
            self.anchor()?;
            match truncated {
                true if after == before => {
                    self.pos = None;
                    self.wal_len_seen = 0;
                    // The next writer starts a fresh generation; its salts are
                    // in the wal-index already.
                    if let Some(ix) = IndexHeader::read(&*self.shm_file()?, &self.shm_path)? {
                        self.pos = Some(WalPosition::before_generation(ix.salts));
                    }
                    if self.pos.is_none() {
                        outcome = Polled::Lost("the WAL index could not be read after a TRUNCATE checkpoint");
                    }
                }
                true => outcome = Polled::Lost("a commit landed during the TRUNCATE checkpoint"),
                false => {} // busy: readers or writers in the way; PASSIVE next time
            }
        } else if frames > 0 && self.last_checkpoint.elapsed() >= interval {
            mode = "passive";
            // A settled anchor may sit far back (see `advance`): move it to
            // the end first, so the checkpoint copies what was read.
            self.anchor()?;
            self.checkpointer.passive()?;
        } else {
            return Ok(Polled::Ok);
        }
        self.last_checkpoint = Instant::now();
        tracing::info!(event = "replicate.checkpoint", db = %self.path.display(), mode, frames, ms = started.elapsed().as_millis() as u64);
        Ok(outcome)
    }
}
