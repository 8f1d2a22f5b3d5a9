//! Holding a live database's WAL: a read transaction that uses the log
//! keeps SQLite from restarting it over frames not yet read. An [`Anchor`]
//! is two read-only connections, so it can move forward without ever
//! letting go: the next read transaction begins before the current one
//! ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, SqlContext};

/// A read transaction on the log, held by one of two connections at a time.
pub struct Anchor {
    path: PathBuf,
    connections: [Connection; 2],
    active: usize,
    held: bool,
}

impl Anchor {
    /// Two lean read-only connections to `path`, holding nothing yet.
    pub fn open(path: &Path) -> Result<Anchor> {
        Ok(Anchor {
            path: path.to_path_buf(),
            connections: [open_lean_reader(path)?, open_lean_reader(path)?],
            active: 0,
            held: false,
        })
    }

    /// Hold the log at its newest end: a read transaction begun on the idle
    /// connection (and made to read, so SQLite takes its read mark), then
    /// the one held so far ended. At every instant one of them holds it.
    pub fn hold_newest(&mut self) -> Result<()> {
        let next = 1 - self.active;
        let c = &self.connections[next];
        c.execute_batch("BEGIN DEFERRED").at_db(&self.path)?;
        c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
            .at_db(&self.path)?;
        if self.held {
            self.connections[self.active]
                .execute_batch("COMMIT")
                .at_db(&self.path)?;
        }
        self.active = next;
        self.held = true;
        Ok(())
    }

    /// Let go of the log: a checkpoint may then copy every frame and a
    /// writer restart it.
    pub fn release(&mut self) -> Result<()> {
        if self.held {
            self.connections[self.active]
                .execute_batch("COMMIT")
                .at_db(&self.path)?;
            self.held = false;
        }
        Ok(())
    }

    /// Whether a read transaction holds the log.
    pub fn is_held(&self) -> bool {
        self.held
    }
}

/// A read-only connection for holding read marks and asking small
/// questions (journal mode, page size): it reads a page or two.
pub fn open_lean_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).at_db(path)?;
    c.busy_timeout(Duration::from_secs(5)).at_db(path)?;
    lean(&c, path)?;
    Ok(c)
}

/// A follower's connections hold read marks and run checkpoints; they read
/// a page or two. SQLite's defaults (a 120 KiB lookaside arena, a page
/// cache that starts with 20 pages) cost each of them ~200 KiB, three per
/// database: a replicator of a hundred databases went over its memory
/// target by that alone.
pub(super) fn lean(c: &Connection, path: &Path) -> Result<()> {
    // SAFETY: a connection just opened, on this thread, with no lookaside
    // memory in use yet; the arguments are those the option documents.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            c.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        );
    }
    c.execute_batch("PRAGMA cache_size = 4").at_db(path)
}

/// The database's journal mode (lower case, as SQLite reports it) and page
/// size, asked on a connection of its own that is closed again.
pub fn journal_mode_and_page_size(path: &Path) -> Result<(String, u32)> {
    let probe = open_lean_reader(path)?;
    let mode: String = probe.query_row("PRAGMA journal_mode", [], |r| r.get(0)).at_db(path)?;
    let page_size: u32 = probe.query_row("PRAGMA page_size", [], |r| r.get(0)).at_db(path)?;
    Ok((mode, page_size))
}
