//! A read transaction's pages taken from the WAL itself, for a SQLite built
//! without `sqlite_dbpage` (compiled out by default; a crate that depends on
//! Lifeboat builds SQLite without the flag this workspace sets).
//!
//! The transaction is begun between two reads of the wal-index header, made
//! through the connection's own mapping of `-shm` (never a descriptor of our
//! own: closing one would drop every POSIX lock this process holds on the
//! file, SQLite's read marks included). When both reads agree, nothing was
//! committed meanwhile, so the header is the one the transaction took its
//! snapshot from: the snapshot is the database file overlaid with, for each
//! page, its newest frame at or below `max_frame` carrying the header's salts.
//!
//! Those frames stay put while the transaction is open: SQLite restarts the
//! log over them only when no reader holds a read mark above zero, and a
//! reader on read lock 0 began on a fully checkpointed log, whose every frame
//! is already in the database file, which then does not change until the
//! transaction ends (a checkpoint needs that lock exclusively). So a frame
//! found overwritten (other salts, another page) means the second case,
//! provided the log was restarted, which the index shows with other salts:
//! from then on every page is read from the database file. Frames missing
//! while the index still names the snapshot's generation happen only outside
//! SQLite's protocol (the `-wal` removed or replaced by its path, while
//! SQLite reads on through its open descriptor): the database file may then
//! hold pages newer than the snapshot, so that is an error, never a fallback.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::wal::{FRAME_HEADER_LEN, HEADER_LEN, IndexHeader};
use crate::error::{Error, ErrorCode, Result, SqlContext};

/// Attempts at beginning a transaction with no commit landing in between
/// before giving up (a commit lands within microseconds of a begin only on
/// a database written without pause).
const BEGIN_ATTEMPTS: u32 = 1000;

/// Whether the SQLite linked in has the `sqlite_dbpage` table.
pub fn dbpage_compiled_in() -> bool {
    // SAFETY: a NUL-terminated option name; the function only compares it.
    unsafe { rusqlite::ffi::sqlite3_compileoption_used(c"ENABLE_DBPAGE_VTAB".as_ptr()) == 1 }
}

/// The first 96 bytes of `-shm` as the connection's own mapping shows them,
/// or `None` when it has none yet.
fn index_header_bytes(conn: &Connection) -> Option<[u8; 96]> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: FILE_POINTER writes the main database's `sqlite3_file*` into
    // `file`; the handle is this connection's, used on this thread only.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return None;
    }
    // SAFETY: `file` is the open database file SQLite handed out above; its
    // methods outlive the connection. xShmMap with bExtend 0 maps region 0
    // of the wal-index exactly as SQLite's own WAL code does, through the
    // inode's shared mapping, and returns a null region if it is not there.
    unsafe {
        let methods = (*file).pMethods;
        if methods.is_null() || (*methods).iVersion < 2 {
            return None;
        }
        let map = (*methods).xShmMap?;
        let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
        // SQLITE_READONLY with a region: the backup user may not write the
        // `-shm`, so it is mapped read-only, and reading is all we do
        // (SQLite's own WAL code takes it as success too).
        let rc = map(file, 0, 32 * 1024, 0, &mut region);
        if (rc != ffi::SQLITE_OK && rc != ffi::SQLITE_READONLY) || region.is_null() {
            return None;
        }
        let mut raw = [0u8; 96];
        // Another process may be writing it: read it as SQLite does, byte
        // by byte from shared memory, then fence.
        for (i, b) in raw.iter_mut().enumerate() {
            *b = std::ptr::read_volatile(region.cast::<u8>().add(i));
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Some(raw)
    }
}

/// Begin a read transaction on `conn` (a WAL database) and return the
/// wal-index header its snapshot was taken from.
pub(super) fn begin_at_known_header(conn: &Connection, path: &Path) -> Result<IndexHeader> {
    for attempt in 0..BEGIN_ATTEMPTS {
        let before = index_header_bytes(conn);
        conn.execute_batch("BEGIN DEFERRED").at_db(path)?;
        // A deferred transaction takes its snapshot at the first read.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
            .at_db(path)?;
        #[cfg(test)]
        tests::AFTER_BEGIN.with(|hook| {
            if let Some(f) = hook.borrow_mut().as_mut() {
                f();
            }
        });
        let Some(after) = index_header_bytes(conn) else {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).at_db(path)?;
            conn.execute_batch("COMMIT").at_db(path)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(
                    Error::busy(path.display(), "the database left WAL mode as its capture began")
                        .temporary()
                        .fix("snapshot again"),
                );
            }
            // Inside a WAL transaction the index exists: not seeing it is
            // no race, and no retry would see it.
            return Err(unreadable_index(path));
        };
        if let Some(b) = before
            && b[..48] == after[..48]
            && let Some(header) = IndexHeader::parse(&after)
        {
            return Ok(header);
        }
        conn.execute_batch("COMMIT").at_db(path)?;
        if attempt >= 10 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Err(Error::busy(
        path.display(),
        "the database was written during every attempt to begin its capture",
    )
    .temporary()
    .fix("snapshot again; building SQLite with SQLITE_ENABLE_DBPAGE_VTAB avoids this wait"))
}

/// The wal-index of `db` cannot be mapped through its connection.
fn unreadable_index(db: &Path) -> Error {
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    Error::config(
        Path::new(&shm).display(),
        "SQLite cannot map the WAL index for this reader (the file is read-only to this user and no other process has the database open, or the VFS has no shared memory)",
    )
    .fix("run the backup as a user that can write the database's directory and its -shm file (usually the service's user), or build SQLite with SQLITE_ENABLE_DBPAGE_VTAB")
}

/// Whether the log has been restarted since the generation `salts` names,
/// as the index shows it now: the one way frames of a snapshot can vanish
/// under a read transaction, and then the database file holds the whole
/// snapshot. An error otherwise (see the module's comment).
fn check_restarted(conn: &Connection, db: &Path, wal_path: &Path, salts: (u32, u32)) -> Result<()> {
    for attempt in 0..BEGIN_ATTEMPTS {
        // A header caught mid-write has unequal copies: read it again.
        if let Some(now) = index_header_bytes(conn).as_ref().and_then(IndexHeader::parse) {
            if now.salts != salts {
                return Ok(());
            }
            return Err(Error::busy(
                wal_path.display(),
                "the log no longer holds the frames of the snapshot being captured, yet SQLite has not restarted it: the -wal file was removed or replaced while the database was open",
            )
            .temporary()
            .fix("snapshot again; never remove, move or replace a -wal file while its database is open")
            .code(ErrorCode::SnapshotWalReplaced));
        }
        if attempt >= 10 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Err(unreadable_index(db))
}

/// Where each page of a snapshot lies in the WAL.
pub struct LogFrames {
    db: PathBuf,
    wal_path: PathBuf,
    wal: Option<File>,
    page_size: u32,
    salts: (u32, u32),
    /// Page number to the frame (1-based) holding it in the snapshot.
    frames: HashMap<u32, u32>,
    /// The log was found restarted over the snapshot's frames: the database
    /// file holds the snapshot.
    pub(super) file_only: std::cell::Cell<bool>,
}

/// How [`LogFrames::read`] fared.
#[derive(Debug, PartialEq, Eq)]
pub enum FromLog {
    /// The page was read from its frame.
    Read,
    /// The page has no frame in the snapshot: the database file holds it.
    NotInLog,
    /// Its frame was overwritten while being read, and so was `out`, by a
    /// restart of the log (checked against the index): the database file
    /// holds the page (see the module's comment).
    Overwritten,
}

impl LogFrames {
    /// Index the frames of `header`'s snapshot in the log beside `db`;
    /// `conn` holds the read transaction begun at `header`.
    pub fn scan(conn: &Connection, db: &Path, header: &IndexHeader, page_size: u32) -> Result<LogFrames> {
        let mut wal_path = db.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal_path = PathBuf::from(wal_path);
        let mut frames = HashMap::new();
        let mut file_only = false;
        let wal = match File::open(&wal_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&wal_path, e)),
        };
        if header.max_frame > 0 {
            match &wal {
                None => file_only = true,
                Some(f) => {
                    let frame_len = FRAME_HEADER_LEN + page_size as u64;
                    let mut fh = [0u8; FRAME_HEADER_LEN as usize];
                    for frame in 1..=header.max_frame {
                        let at = HEADER_LEN + (frame as u64 - 1) * frame_len;
                        let whole = f.read_exact_at(&mut fh, at).is_ok();
                        let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
                        if !whole || (be(8), be(12)) != header.salts || be(0) == 0 {
                            file_only = true;
                            break;
                        }
                        frames.insert(be(0), frame);
                    }
                }
            }
        }
        if file_only {
            check_restarted(conn, db, &wal_path, header.salts)?;
            frames.clear();
        }
        Ok(LogFrames {
            db: db.to_path_buf(),
            wal_path,
            wal,
            page_size,
            salts: header.salts,
            frames,
            file_only: std::cell::Cell::new(file_only),
        })
    }

    /// Read page `pgno` of the snapshot into `out` if the log holds it;
    /// `conn` holds the read transaction given to [`LogFrames::scan`].
    /// `out` is left alone unless the answer is `Read` or `Overwritten`.
    pub fn read(&self, conn: &Connection, pgno: u32, out: &mut [u8]) -> Result<FromLog> {
        if self.file_only.get() {
            return Ok(FromLog::NotInLog);
        }
        let (Some(frame), Some(wal)) = (self.frames.get(&pgno), &self.wal) else {
            return Ok(FromLog::NotInLog);
        };
        let frame_len = FRAME_HEADER_LEN + self.page_size as u64;
        let at = HEADER_LEN + (*frame as u64 - 1) * frame_len;
        let mut fh = [0u8; FRAME_HEADER_LEN as usize];
        let ours = |fh: &[u8; FRAME_HEADER_LEN as usize]| {
            let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
            be(0) == pgno && (be(8), be(12)) == self.salts
        };
        // A log cut short (truncated by a checkpoint) reads as overwritten.
        let read_at = |buf: &mut [u8], at: u64| match wal.read_exact_at(buf, at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io(&self.wal_path, e)),
        };
        let before = read_at(&mut fh, at)? && ours(&fh);
        let page = read_at(out, at + FRAME_HEADER_LEN)?;
        // Again after the page: SQLite writes a frame's header before its
        // page, so a header still ours means the page read was too.
        if before && page && read_at(&mut fh, at)? && ours(&fh) {
            return Ok(FromLog::Read);
        }
        check_restarted(conn, &self.db, &self.wal_path, self.salts)?;
        self.file_only.set(true);
        tracing::debug!(event = "snapshot.log_restarted", path = %self.wal_path.display(), frame);
        Ok(FromLog::Overwritten)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::RefCell;

    thread_local! {
        /// Run between a transaction's first read and the second header
        /// read, where a commit must make the attempt start over: no test
        /// can time a commit from another thread into that window.
        pub(in crate::sqlite) static AFTER_BEGIN: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }
}
