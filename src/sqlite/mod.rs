//! Everything that knows SQLite: recognising a database, opening it for an
//! online capture, reading its pages, and checking a restored copy.

pub(crate) mod anchor;
pub mod capture;
pub(crate) mod checkpoint;
pub(crate) mod frames;
pub(crate) mod wal;

pub use frames::dbpage_compiled_in;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, ErrorCode, IoContext, Result, SqlContext};

/// The first 16 bytes of every SQLite database file.
pub const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The file-name suffixes SQLite creates beside a database.
pub const SIDECARS: [&str; 4] = ["-wal", "-shm", "-journal", ".lock"];

/// The sidecars SQLite itself keeps (the first three of [`SIDECARS`]): part of
/// the database's state while it is open.
pub const OWN_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Whether the file's first 16 bytes are the SQLite header. Read through
/// [`open_for_reading`], so safe in a process with connections to it.
pub fn has_header(path: &Path) -> Result<bool> {
    let f = open_for_reading(path).at(path)?;
    file_has_header(&f, path)
}

/// Descriptors of files that may carry this process's SQLite locks, by
/// (device, inode), never closed. POSIX drops every lock a process holds on
/// a file when it closes any descriptor of it, so closing one would silently
/// end the SQLite transactions of whoever embeds Lifeboat (SQLite's unix VFS
/// keeps its own descriptors open while locks are held for this reason); a
/// library cannot know whether its embedder has a database open. One entry
/// per distinct file read: a database replaced under its path (a new inode)
/// adds one, and keeps the old file's space until the process exits.
static KEPT: std::sync::Mutex<BTreeMap<Inode, Arc<File>>> = std::sync::Mutex::new(BTreeMap::new());

/// (device, inode number): a file, whatever its names.
type Inode = (u64, u64);

/// A read-only descriptor of `path` for positioned reads (`read_at`: it may
/// be shared). A SQLite database (by its header) or a `-shm` is kept open
/// for the life of the process and handed out again to later callers (see
/// `KEPT`); any other file is the caller's alone.
pub fn open_for_reading(path: &Path) -> std::io::Result<Arc<File>> {
    // Held while opening: two threads must not both open a file that one
    // of them would then close.
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(m) = std::fs::metadata(path)
        && let Some(f) = kept.get(&(m.dev(), m.ino()))
    {
        return Ok(f.clone());
    }
    let f = File::open(path)?;
    let m = f.metadata()?;
    let key = (m.dev(), m.ino());
    if let Some(known) = kept.get(&key) {
        // Renamed onto the path between the two looks: ours is a descriptor
        // of a kept file, and must not be closed either.
        std::mem::forget(f);
        return Ok(known.clone());
    }
    let is_shm = path.as_os_str().as_bytes().ends_with(b"-shm");
    let keep = is_shm || (m.is_file() && file_has_header(&f, path).unwrap_or(false));
    let f = Arc::new(f);
    if keep {
        kept.insert(key, f.clone());
    }
    Ok(f)
}

/// [`has_header`] through a descriptor already open. A process with SQLite
/// connections on the database must check this way: closing any descriptor
/// of the file drops every POSIX lock the process holds on it, SQLite's too.
pub fn file_has_header(f: &std::fs::File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 16 {
        let n = f.read_at(&mut buf[got..], got as u64).at(path)?;
        if n == 0 {
            return Ok(false);
        }
        got += n;
    }
    Ok(&buf == HEADER)
}

/// Percent-encode what a SQLite URI filename cannot carry literally.
fn uri_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'?' | b'#' | b'%' | 0x80.. | 0..=0x20 => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// The paths of every [`SIDECARS`] name beside `db` (`app.db-wal`, …),
/// whether or not they exist.
pub fn sidecar_paths(db: &Path) -> Vec<std::path::PathBuf> {
    SIDECARS
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            p.into()
        })
        .collect()
}

/// Run `PRAGMA integrity_check` on a database file nobody else uses. It is
/// opened immutable: read-only, no locks, no `-wal`/`-shm` created, so the
/// file checked is exactly the file that will be renamed into place.
pub fn integrity_check(path: &Path) -> Result<()> {
    let uri = format!("file:{}?immutable=1", uri_escape(path));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags).at_db(path)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").at_db(path)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .at_db(path)?
        .collect::<rusqlite::Result<_>>()
        .at_db(path)?;
    drop(stmt);
    conn.close().map_err(|(_, e)| Error::sqlite(path, e))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        // One line: the first complaint that names a problem, and how many
        // more there are ("*** in database main ***" is a heading).
        let problems: Vec<&String> = rows.iter().filter(|r| !r.starts_with("***")).collect();
        let first = problems.first().map(|r| r.replace('\n', " ")).unwrap_or_default();
        let more = match problems.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Err(
            Error::bad_data(path.display(), format!("integrity_check failed: {first}{more}"))
                .code(ErrorCode::RestoreIntegrityFailed),
        )
    }
}

/// Keep SQLite from setting aside twenty pages for every connection it
/// opens (its page cache's first bulk allocation, made while the schema is
/// read, before the connection's own `cache_size` can say otherwise): a
/// follower holds a few connections, and for a hundred databases that was
/// a third of the replicator's memory. Pages are then allocated as they are
/// needed. Call it before the process opens its first connection; later it
/// changes nothing (SQLite refuses configuration once initialized).
pub fn lean_page_cache() -> bool {
    // SAFETY: SQLITE_CONFIG_PAGECACHE takes (void*, int, int); a null
    // buffer with zero pages only sets how many pages to allocate ahead.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_PAGECACHE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        )
    };
    rc == rusqlite::ffi::SQLITE_OK
}
