//! Online capture of live databases. Each database gets its own read-only
//! connection; read transactions on all of them are opened back to back, so
//! a multi-database snapshot sees each at (nearly) the same instant. In WAL
//! mode a reader never blocks writers.
//!
//! Pages are read in the reader's snapshot two ways. `sqlite_dbpage` returns
//! any page as the transaction sees it, WAL included, but costs ~2 s of CPU
//! per GiB. So pages are read straight from the database file in large
//! chunks, and only pages that have a frame in the current WAL generation are
//! taken through `sqlite_dbpage`. This is sound because, while our read
//! transaction is open, SQLite never writes a page of our snapshot into the
//! database file: a checkpoint backfills only frames at or below the oldest
//! reader's mark (and those pages are in the WAL, so we do not read them
//! from the file), and it cannot backfill at all past a reader that reads
//! only the database file (read-lock 0). In rollback-journal mode our shared
//! lock keeps writers out of the file entirely.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, ErrorCode, IoContext, Result, SqlContext};

/// One database with a read transaction open on it.
pub struct OpenDatabase {
    /// The database file as named by the caller.
    pub path: PathBuf,
    conn: Connection,
    /// The database file and the pages to take through SQLite instead, when
    /// direct reading is known to be safe.
    direct: Option<(Arc<File>, HashSet<u32>)>,
    /// Bytes per page (512 to 65536), as of the read transaction.
    pub page_size: u32,
    /// Pages in the database as of the read transaction.
    pub page_count: u32,
    /// `PRAGMA journal_mode`, lower case (`wal`, `delete`, …).
    pub journal_mode: String,
    /// `sqlite_version()` of the linked SQLite, recorded in the manifest.
    pub sqlite_version: String,
    /// What `schema_query` returned, when it was an integer (or text holding
    /// one); `None` for NULL or anything else.
    pub schema_version: Option<i64>,
    /// The query that gave `schema_version`.
    pub schema_query: String,
}

/// The schema-version query used when the configuration names none.
pub const DEFAULT_SCHEMA_QUERY: &str = "PRAGMA user_version";

/// A database opened for capture, its transaction not yet begun.
pub struct Pending {
    path: PathBuf,
    /// Opened before the connection, so a file replaced in between is noticed.
    /// Shared, so a long-running process can keep the descriptor open: closing
    /// any descriptor of the database would drop every POSIX lock this process
    /// holds on it, SQLite's included.
    file: Arc<File>,
    conn: Connection,
    schema_query: String,
}

/// Open `path` for capture without touching it: read-only, so closing never
/// checkpoints; a busy timeout for the brief moments WAL recovery holds locks.
pub fn open(path: &Path, schema_query: &str) -> Result<Pending> {
    open_with(path, schema_query, None)
}

/// [`open`], reading through `file` (the caller's descriptor of the
/// database, kept open by the caller) when given.
pub fn open_with(path: &Path, schema_query: &str, file: Option<Arc<File>>) -> Result<Pending> {
    // SQLite follows symlinks and keeps the WAL beside the real file; so must
    // we, or a WAL full of committed pages would go unseen.
    let canonical = std::fs::canonicalize(path).at(path)?;
    let file = match file {
        Some(f) => f,
        None => Arc::new(File::open(&canonical).at(path)?),
    };
    if !super::file_has_header(&file, path)? {
        return Err(
            Error::bad_data(path.display(), "not a SQLite database (header check failed)")
                .fix("point the [[sqlite]] source at the database file itself")
                .code(ErrorCode::SnapshotNotSqlite),
        );
    }
    let path = &canonical;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).at_db(path)?;
    conn.busy_timeout(Duration::from_secs(10)).at_db(path)?;
    Ok(Pending {
        path: path.to_path_buf(),
        file,
        conn,
        schema_query: schema_query.to_string(),
    })
}

/// Begin read transactions on every database as close together as possible.
pub fn begin_all(dbs: Vec<Pending>) -> Result<Vec<OpenDatabase>> {
    // First the transactions, all together; the metadata queries come after.
    for p in &dbs {
        p.conn.execute_batch("BEGIN DEFERRED").at_db(&p.path)?;
        // A deferred transaction takes its snapshot at the first read.
        p.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
            .at_db(&p.path)?;
    }
    dbs.into_iter()
        .map(
            |Pending {
                 path,
                 file,
                 conn,
                 schema_query,
             }| {
                let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).at_db(&path)?;
                let page_count: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).at_db(&path)?;
                let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).at_db(&path)?;
                check_structure(&path, &file, page_size, page_count, &journal_mode)?;
                let sqlite_version: String = conn
                    .query_row("SELECT sqlite_version()", [], |r| r.get(0))
                    .at_db(&path)?;
                let schema_version = conn
                    .query_row(&schema_query, [], |r| r.get::<_, Option<rusqlite::types::Value>>(0))
                    .map_err(|e| {
                        // The configuration is wrong, not the database: 78.
                        Error::config(
                            path.display(),
                            format!("the schema_version query `{schema_query}` failed: {e}"),
                        )
                        .fix("fix the schema_version query in the configuration (it must return one integer)")
                        .code(ErrorCode::SnapshotBadSchemaQuery)
                    })?
                    .and_then(|v| match v {
                        rusqlite::types::Value::Integer(i) => Some(i),
                        rusqlite::types::Value::Text(t) => t.trim().parse().ok(),
                        _ => None,
                    });
                let direct = direct_reading(&path, file, page_size, &journal_mode);
                Ok(OpenDatabase {
                    path,
                    conn,
                    direct,
                    page_size,
                    page_count,
                    journal_mode,
                    sqlite_version,
                    schema_version,
                    schema_query,
                })
            },
        )
        .collect()
}

/// Refuse a database file that cannot be whole, before a byte is stored: a
/// snapshot of it would verify and never restore. Cheap (one `fstat`), so
/// it runs on every capture; `integrity_check` on restore sees the rest.
fn check_structure(path: &Path, file: &File, page_size: u32, page_count: u32, journal_mode: &str) -> Result<()> {
    let len = file.metadata().at(path)?.len();
    let ps = page_size as u64;
    let damaged = |problem: String| {
        Error::bad_data(path.display(), problem)
            .fix("the database file is damaged: repair it (`sqlite3 DB .recover`) or restore it, then snapshot again")
            .code(ErrorCode::SnapshotDatabaseDamaged)
    };
    if len % ps != 0 {
        return Err(damaged(format!(
            "truncated mid-page: {len} bytes is not a whole number of {page_size}-byte pages"
        )));
    }
    // In WAL mode pages past the file's end may live in the log; in rollback
    // mode, under our shared lock, every page SQLite counts is in the file.
    if !journal_mode.eq_ignore_ascii_case("wal") && page_count as u64 * ps > len {
        return Err(damaged(format!(
            "truncated: SQLite counts {page_count} pages, the file holds {}",
            len / ps
        )));
    }
    Ok(())
}

/// The file and the set of pages to read through SQLite, or `None` when
/// direct reading cannot be shown safe (then every page goes through SQLite).
fn direct_reading(
    path: &Path,
    file: Arc<File>,
    page_size: u32,
    journal_mode: &str,
) -> Option<(Arc<File>, HashSet<u32>)> {
    // Same inode as the path SQLite opened: nothing was renamed over it.
    let ours = file.metadata().ok()?;
    let now = std::fs::metadata(path).ok()?;
    if (ours.dev(), ours.ino()) != (now.dev(), now.ino()) {
        return None;
    }
    let wal_pages = match journal_mode {
        "wal" => {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            match super::wal::pages_with_frames(Path::new(&wal), page_size) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    tracing::info!(event = "snapshot.direct_read_off", path = %path.display(), reason = %e);
                    return None;
                }
            }
        }
        "delete" | "truncate" | "persist" => HashSet::new(),
        // memory/off journals: leave it all to SQLite.
        _ => return None,
    };
    Some((file, wal_pages))
}

impl OpenDatabase {
    /// Read every page in order, inside the open read transaction, in
    /// batches of `batch_pages`: each batch is read into a buffer from
    /// `buffer` (reused, so no allocation per batch) and handed to `emit`
    /// with its first page number.
    pub fn read_batches(
        &self,
        batch_pages: u32,
        mut buffer: impl FnMut() -> Result<Vec<u8>>,
        mut emit: impl FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let ps = self.page_size as usize;
        let Some((file, wal_pages)) = &self.direct else {
            let mut first = 1u32;
            let mut buf = buffer()?;
            buf.clear();
            self.for_each_page_via_sqlite(|pgno, page| {
                buf.extend_from_slice(page);
                if buf.len() == batch_pages as usize * ps {
                    let next = buffer()?;
                    emit(first, std::mem::replace(&mut buf, next))?;
                    buf.clear();
                    first = pgno + 1;
                }
                Ok(())
            })?;
            return if buf.is_empty() { Ok(()) } else { emit(first, buf) };
        };
        let mut by_pgno = self
            .conn
            .prepare("SELECT data FROM sqlite_dbpage('main') WHERE pgno = ?1")
            .map_err(|e| self.dbpage_error(e))?;
        let mut first = 1u32;
        while first <= self.page_count {
            let n = batch_pages.min(self.page_count - first + 1);
            let want = n as usize * ps;
            let mut buf = buffer()?;
            // Buffers come back full-sized from earlier batches: resizing
            // only zero-fills the first time.
            buf.resize(want, 0);
            // Pages past the file's end live only in the WAL; read what exists.
            let got = crate::fsutil::read_full_at(file, &mut buf, (first as u64 - 1) * ps as u64).at(&self.path)?;
            for i in 0..n {
                let pgno = first + i;
                let at = i as usize * ps;
                if wal_pages.contains(&pgno) || at + ps > got {
                    let page: Vec<u8> = by_pgno.query_row([pgno], |r| r.get(0)).at_db(&self.path)?;
                    if page.len() != ps {
                        return Err(Error::bad_data(self.path.display(), format!("page {pgno} read short")));
                    }
                    buf[at..at + ps].copy_from_slice(&page);
                }
            }
            emit(first, buf)?;
            first += n;
        }
        Ok(())
    }

    fn for_each_page_via_sqlite(&self, mut visit: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT pgno, data FROM sqlite_dbpage('main')")
            .map_err(|e| self.dbpage_error(e))?;
        let mut rows = stmt.query([]).at_db(&self.path)?;
        let mut expect = 1u32;
        while let Some(row) = rows.next().at_db(&self.path)? {
            let pgno: u32 = row.get(0).at_db(&self.path)?;
            let data = row
                .get_ref(1)
                .at_db(&self.path)?
                .as_blob()
                .map_err(|e| Error::sqlite(&self.path, e.into()))?;
            if pgno != expect || data.len() != self.page_size as usize {
                return Err(Error::bad_data(
                    self.path.display(),
                    format!("page {pgno} read out of order or short"),
                ));
            }
            visit(pgno, data)?;
            expect += 1;
        }
        if expect - 1 != self.page_count {
            return Err(Error::bad_data(
                self.path.display(),
                format!("read {} pages, expected {}", expect - 1, self.page_count),
            ));
        }
        Ok(())
    }

    fn dbpage_error(&self, e: rusqlite::Error) -> Error {
        if e.to_string().contains("sqlite_dbpage") {
            Error::config(
                self.path.display(),
                "this Lifeboat binary was built without SQLite's sqlite_dbpage table",
            )
            .fix("build with LIBSQLITE3_FLAGS=-DSQLITE_ENABLE_DBPAGE_VTAB (Lifeboat's .cargo/config.toml sets it; an embedding crate sets it in its own)")
            .code(ErrorCode::SnapshotNoDbpage)
        } else {
            Error::sqlite(&self.path, e)
        }
    }

    /// End the read transaction; the database is then free to checkpoint past us.
    pub fn finish(self) -> Result<()> {
        self.conn.execute_batch("COMMIT").at_db(&self.path)
    }
}
