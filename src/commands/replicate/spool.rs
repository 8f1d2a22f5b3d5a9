//! The replicator's local state for one database, in
//! `$XDG_STATE_HOME/lifeboat/replicate/<stream>/`: `state.json` (the
//! database's identity, and where WAL reading stood at the last base) and
//! `spool/`, the encoded segments not yet uploaded to every replica, and
//! always the newest one. A segment is spooled (written, fsynced, renamed)
//! as soon as it is sealed, so a crash or an unreachable replica never loses
//! a commit and a restart re-uploads nothing already uploaded. Where reading
//! stood after the last commit is the newest of the two: the state, or the
//! newest segment's `wal_end` (a busy database seals tens of segments a
//! second, and saving the state after each cost a second file created,
//! fsynced and renamed every time).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::repo::keys;
use crate::repo::segment::Segment;
use crate::sqlite::wal::WalPosition;

use super::wake;

/// The version [`ReplicaState`] is written with; another is refused.
pub const STATE_VERSION: u32 = 1;

/// Where a database's stream stood, saved as `state.json` in its state
/// directory so a restart continues the stream instead of taking a new base.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaState {
    /// Always [`STATE_VERSION`].
    pub version: u32,
    /// The stream id.
    pub stream: String,
    /// The database's real path.
    pub db: String,
    /// The last transaction id given out (a commit, or a base after a gap).
    pub txid: u64,
    /// Where WAL reading stood after `txid`; absent after a gap.
    pub pos: Option<WalPosition>,
    /// Bytes per page of the database.
    pub page_size: u32,
    /// Device of the database file: a replaced file is a new stream position.
    pub dev: u64,
    /// Inode of the database file.
    pub ino: u64,
    /// Until when the replicator watched the log with everything it read
    /// shipped (ns since the epoch; 0 when not known): commits found after
    /// a restart were made after this.
    #[serde(default)]
    pub seen_ns: i64,
}

/// One stream's local state directory: `state.json` and the spooled
/// segments.
pub struct Spool {
    /// The stream's state directory.
    pub dir: PathBuf,
    /// Spooled segments by first txid: (last txid, file).
    entries: Mutex<BTreeMap<u64, (u64, PathBuf)>>,
    /// The heartbeat file shared by every stream of the state directory.
    board: Arc<Board>,
}

/// The idle heartbeat of every stream this process follows in one state
/// directory, in one file, `<state dir>/seen` (lines `<stream> <ns>`),
/// written at most once a second for all of them by one thread. One file
/// each, written every second by each follower, was a hundred writes and
/// wakes a second for a hundred idle databases. Streams publish their value
/// here, or say they sleep (`Spool::quiet`) and the thread records for them
/// (see `wake::sync`). Other processes' streams in the
/// same state directory keep their lines: the file is rewritten under an
/// `flock` on `seen.lock`, from what it held.
struct Board {
    path: PathBuf,
    lock: PathBuf,
    inner: Mutex<BoardInner>,
}

#[derive(Default)]
struct BoardInner {
    values: BTreeMap<String, i64>,
    /// Values changed since the file was written.
    dirty: bool,
    /// Streams asleep with everything read spooled since a look that began
    /// when their watch had seen this many events.
    quiet: HashMap<String, (wake::Events, u64)>,
    lock: Option<std::fs::File>,
}

/// How often the shared heartbeat file is written, at most.
const BOARD_EVERY: Duration = Duration::from_secs(1);

impl Board {
    fn of(state_dir: &Path) -> Arc<Board> {
        static BOARDS: OnceLock<Mutex<HashMap<PathBuf, Arc<Board>>>> = OnceLock::new();
        let mut boards = BOARDS.get_or_init(Default::default).lock().expect("boards");
        Arc::clone(boards.entry(state_dir.to_path_buf()).or_insert_with(|| {
            let board = Arc::new(Board {
                path: state_dir.join("seen"),
                lock: state_dir.join("seen.lock"),
                inner: Mutex::new(BoardInner::default()),
            });
            let b = Arc::clone(&board);
            // Lives as long as the process, like the board.
            let _ = std::thread::Builder::new()
                .name("heartbeat".into())
                .stack_size(64 << 10)
                .spawn(move || b.beat());
            board
        }))
    }

    fn publish(&self, stream: &str, ns: i64) {
        let mut b = self.inner.lock().expect("board");
        let v = b.values.entry(stream.to_string()).or_insert(0);
        if *v < ns {
            *v = ns;
            b.dirty = true;
        }
    }

    /// Once a second: record `now` for every quiet stream whose watch has
    /// seen no event since its last look began, once every write made
    /// before `now` is known to have been reported (`wake::sync`), and
    /// write the file if anything changed.
    fn beat(&self) {
        loop {
            std::thread::sleep(BOARD_EVERY);
            let quiet = !self.inner.lock().expect("board").quiet.is_empty();
            let now = jiff::Timestamp::now().as_nanosecond() as i64;
            let synced = quiet && wake::sync(Duration::from_millis(500));
            let mut b = self.inner.lock().expect("board");
            if synced {
                let still: Vec<String> = b
                    .quiet
                    .iter()
                    .filter(|(_, (events, at))| events.count() == *at)
                    .map(|(s, _)| s.clone())
                    .collect();
                for s in still {
                    let v = b.values.entry(s).or_insert(0);
                    if *v < now {
                        *v = now;
                        b.dirty = true;
                    }
                }
            }
            if b.dirty
                && let Err(e) = self.write(&mut b)
            {
                tracing::warn!(event = "replicate.seen_not_saved", error = %e);
            }
        }
    }

    /// Rewrite the file with this process's values over what it held.
    fn write(&self, b: &mut BoardInner) -> Result<()> {
        use std::os::unix::io::AsRawFd;
        if b.lock.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.lock)
                .at(&self.lock)?;
            b.lock = Some(f);
        }
        let fd = b.lock.as_ref().expect("opened above").as_raw_fd();
        // SAFETY: flock on a descriptor we own; released below or when the
        // descriptor closes.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(Error::io(&self.lock, std::io::Error::last_os_error()));
        }
        let mut all = read_board(&self.path);
        for (s, ns) in &b.values {
            let v = all.entry(s.clone()).or_insert(0);
            *v = (*v).max(*ns);
        }
        let text: String = all.iter().map(|(s, ns)| format!("{s} {ns}\n")).collect();
        // Not fsynced (see `Spool::save_seen`); renamed, so a reader never
        // sees half a file.
        let tmp = self.path.with_file_name(format!(".seen.{}", std::process::id()));
        let written = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .at(&self.path);
        // SAFETY: as above.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        written?;
        b.dirty = false;
        Ok(())
    }
}

/// The lines of a heartbeat file; an unreadable one reads as empty (every
/// value 0, the widest interval).
fn read_board(path: &Path) -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (s, ns) = l.split_once(' ')?;
            Some((s.to_string(), ns.trim().parse().ok()?))
        })
        .collect()
}

impl Spool {
    /// Open (creating, private to the user) `dir` and its `spool/`, listing the
    /// segments spooled there; leftovers of an interrupted write are removed.
    pub fn open(dir: &Path) -> Result<Spool> {
        let spool = dir.join("spool");
        fsutil::create_private_dir_all(&spool).map_err(|e| {
            Error::io(&spool, e).fix("check that the replication state directory is writable (or set XDG_STATE_HOME)")
        })?;
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(&spool).at(&spool)? {
            let e = e.at(&spool)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted spool write.
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if let Some((first, last)) = keys::parse_segment(&name) {
                entries.insert(first, (last, e.path()));
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            board: Board::of(dir.parent().unwrap_or(dir)),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Record that `stream`'s log was watched until `ns` with everything
    /// committed before it read and spooled. Not fsynced: after a crash an
    /// older value (a wider interval for what the next run finds) is the
    /// safe side, and an idle replicator records this every second.
    ///
    /// Published to the process's heartbeat file for the state directory
    /// (see `Board`), written for every stream at most about once a second:
    /// the file may lag a stream's newest value by that much, which only
    /// widens an interval.
    pub fn save_seen(&self, stream: &str, ns: i64) {
        self.board.publish(stream, ns)
    }

    /// `stream` sleeps, with everything it read spooled, since a look that
    /// began when its watch had seen `at` events (`None`: it is awake):
    /// the process's heartbeat records for it while it sleeps.
    pub fn quiet(&self, stream: &str, sleeping: Option<(wake::Events, u64)>) {
        let mut b = self.board.inner.lock().expect("board");
        match sleeping {
            Some(q) => b.quiet.insert(stream.to_string(), q),
            None => b.quiet.remove(stream),
        };
    }

    /// What [`Spool::save_seen`] last recorded for `stream`; 0 if nothing.
    /// Also reads the stream's own `seen` file, where earlier versions kept
    /// it.
    pub fn load_seen(&self, stream: &str) -> i64 {
        let own = std::fs::read_to_string(self.dir.join("seen")).unwrap_or_default();
        let own = match own.trim().split_once(' ') {
            Some((s, ns)) if s == stream => ns.trim().parse().unwrap_or(0),
            _ => 0,
        };
        let shared = read_board(&self.board.path).get(stream).copied().unwrap_or(0);
        own.max(shared)
    }

    /// The saved state, or `None` before the first save. Fails with
    /// [`ErrorKind::BadData`](crate::ErrorKind::BadData) when it does not parse and
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for another version.
    pub fn load_state(&self) -> Result<Option<ReplicaState>> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(b) => {
                let s: ReplicaState = serde_json::from_slice(&b).map_err(|e| {
                    Error::bad_data(p.display(), format!("replication state unreadable: {e}"))
                        .fix("remove the file; the next start takes a new base")
                })?;
                if s.version != STATE_VERSION {
                    return Err(
                        Error::config(p.display(), "replication state from another Lifeboat version")
                            .fix("remove the file; the next start takes a new base"),
                    );
                }
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Save the state atomically (temporary file, fsync, rename).
    pub fn save_state(&self, s: &ReplicaState) -> Result<()> {
        fsutil::write_atomic(&self.state_path(), &serde_json::to_vec(s).expect("state serializes"))
    }

    /// Durably spool an encoded segment.
    pub fn put(&self, first: u64, last: u64, bytes: &[u8]) -> Result<()> {
        let name = keys::segment_name(first, last);
        let path = self.dir.join("spool").join(name);
        fsutil::write_atomic(&path, bytes)?;
        self.entries.lock().expect("spool").insert(first, (last, path));
        Ok(())
    }

    /// The spooled segment starting at `first`: (last txid, file).
    pub fn get(&self, first: u64) -> Option<(u64, PathBuf)> {
        self.entries.lock().expect("spool").get(&first).cloned()
    }

    /// The first txid held, if any.
    #[cfg(test)]
    fn oldest(&self) -> Option<u64> {
        self.entries.lock().expect("spool").keys().next().copied()
    }

    /// The newest spooled segment, decoded (to resume after a crash between
    /// spooling it and saving the state).
    pub fn newest(&self) -> Result<Option<Segment>> {
        let last = self.entries.lock().expect("spool").values().next_back().cloned();
        let Some((_, path)) = last else { return Ok(None) };
        let raw = std::fs::read(&path).at(&path)?;
        Segment::decode(&raw, &path.display().to_string()).map(Some)
    }

    /// Drop segments every replica has (`below`: lowest txid still needed),
    /// but never the newest: it says where reading stood.
    pub fn trim(&self, below: u64) {
        let mut entries = self.entries.lock().expect("spool");
        let newest = entries.keys().next_back().copied();
        let done: Vec<u64> = entries
            .iter()
            .filter(|(first, (last, _))| *last < below && Some(**first) != newest)
            .map(|(f, _)| *f)
            .collect();
        for f in done {
            if let Some((_, p)) = entries.remove(&f) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_newest_segment_whatever_the_replicas_have() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for (first, last) in [(1, 10), (11, 20), (21, 30)] {
            spool.put(first, last, b"segment").unwrap();
        }
        spool.trim(21);
        assert!(spool.get(1).is_none() && spool.get(11).is_none());
        assert!(spool.get(21).is_some());
        spool.trim(u64::MAX);
        assert_eq!(spool.oldest(), Some(21), "the newest says where reading stood");
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(reopened.oldest(), Some(21));
        assert_eq!(reopened.get(21).map(|(last, _)| last), Some(30));
    }

    #[test]
    fn the_heartbeat_file_keeps_other_streams_and_reads_as_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let a = Spool::open(&dir.path().join("aaaa")).unwrap();
        // A line another process wrote, and an older per-stream file.
        std::fs::write(dir.path().join("seen"), "zzzz 7\naaaa 5\n").unwrap();
        std::fs::write(a.dir.join("seen"), format!("aaaa {:>20}\n", 9)).unwrap();
        assert_eq!(a.load_seen("aaaa"), 9, "the newer of the two");
        a.save_seen("aaaa", 12);
        let board = Board::of(dir.path());
        let mut b = board.inner.lock().unwrap();
        board.write(&mut b).unwrap();
        drop(b);
        let lines = read_board(&dir.path().join("seen"));
        assert_eq!(lines.get("zzzz"), Some(&7), "another process's line is kept");
        assert_eq!(a.load_seen("aaaa"), 12);
        assert_eq!(a.load_seen("bbbb"), 0);
    }

    #[test]
    fn the_heartbeat_records_for_a_sleeping_stream_only_while_its_log_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let wal = dir.path().join("app.db-wal");
        std::fs::write(&db, b"db").unwrap();
        std::fs::write(&wal, b"wal").unwrap();
        let Some(watch) = wake::Watch::new(&db, &wal) else {
            eprintln!("no inotify here: nothing to test");
            return;
        };
        if !wake::can_sync() {
            return;
        }
        let state = dir.path().join("state");
        let s = Spool::open(&state.join("ssss")).unwrap();
        let asleep = jiff::Timestamp::now().as_nanosecond() as i64;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while s.load_seen("ssss") < asleep {
            assert!(std::time::Instant::now() < deadline, "never recorded while asleep");
            // As a follower does after each look (another test's
            // `wake_all` may wake it meanwhile).
            s.quiet("ssss", Some((watch.events(), watch.count())));
            std::thread::sleep(Duration::from_millis(50));
        }
        s.quiet("ssss", Some((watch.events(), watch.count())));
        // Written to: no longer recorded past the write.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&wal)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        let written = jiff::Timestamp::now().as_nanosecond() as i64;
        std::thread::sleep(Duration::from_millis(2500));
        assert!(s.load_seen("ssss") <= written, "recorded past a write it did not read");
        s.quiet("ssss", None);
    }
}
