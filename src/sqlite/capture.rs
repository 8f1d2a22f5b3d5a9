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
//!
//! A SQLite built without `sqlite_dbpage` (as a crate depending on Lifeboat
//! builds it) gets the WAL pages from the log itself instead
//! (`frames.rs`): each WAL database's transaction is begun at a known
//! wal-index header, and each page with a frame in that snapshot is read
//! from its frame.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::frames::{self, FromLog, LogFrames};
use super::wal::IndexHeader;
use crate::error::{Error, ErrorCode, IoContext, Result, SqlContext};

/// One database with a read transaction open on it.
pub struct OpenDatabase {
    /// The database file as named by the caller.
    pub path: PathBuf,
    conn: Connection,
    /// The database file and where the pages it does not hold come from,
    /// when direct reading is known to be safe.
    direct: Option<(Arc<File>, Overlay)>,
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

/// Where the pages of a snapshot that the database file may not hold come
/// from.
enum Overlay {
    /// Every page with a frame in the current WAL generation (a superset of
    /// the snapshot's), read through `sqlite_dbpage`, as are pages past the
    /// file's end.
    Dbpage(HashSet<u32>),
    /// The snapshot's frames, read from the log itself (no `sqlite_dbpage`).
    Log(LogFrames),
}

/// How pages are read, decided once for the SQLite linked in; the tests
/// try the log on a build that has `sqlite_dbpage` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSource {
    /// `sqlite_dbpage` for WAL pages.
    Dbpage,
    /// The WAL itself, at a known wal-index header.
    Log,
}

impl PageSource {
    /// `sqlite_dbpage` when SQLite has it, else the log.
    pub fn for_this_build() -> PageSource {
        if frames::dbpage_compiled_in() {
            PageSource::Dbpage
        } else {
            PageSource::Log
        }
    }
}

/// A database opened for capture, its transaction not yet begun.
pub struct Pending {
    path: PathBuf,
    /// Opened before the connection, so a file replaced in between is noticed.
    /// Shared and never closed (`sqlite::open_for_reading`): closing any
    /// descriptor of the database would drop every POSIX lock this process
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
        None => super::open_for_reading(&canonical).at(path)?,
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
    begin_all_reading(dbs, PageSource::for_this_build())
}

/// [`begin_all`], taking the pages the database file may not hold from
/// `source`.
pub fn begin_all_reading(dbs: Vec<Pending>, source: PageSource) -> Result<Vec<OpenDatabase>> {
    // WAL databases read through the log are asked their journal mode first,
    // outside the transaction, so a rollback-mode database is not given a
    // `-shm` by the header read.
    let wal_mode = |p: &Pending| -> Result<bool> {
        let mode: String = p
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .at_db(&p.path)?;
        Ok(mode.eq_ignore_ascii_case("wal"))
    };
    let mut headers = Vec::with_capacity(dbs.len());
    // First the transactions, all together; the metadata queries come after.
    for p in &dbs {
        if source == PageSource::Log && wal_mode(p)? {
            headers.push(Some(frames::begin_at_known_header(&p.conn, &p.path)?));
            continue;
        }
        p.conn.execute_batch("BEGIN DEFERRED").at_db(&p.path)?;
        // A deferred transaction takes its snapshot at the first read.
        p.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
            .at_db(&p.path)?;
        headers.push(None);
    }
    dbs.into_iter()
        .zip(headers)
        .map(
            |(
                Pending {
                    path,
                    file,
                    conn,
                    schema_query,
                },
                header,
            )| {
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
                let direct = direct_reading(&conn, &path, file, page_size, &journal_mode, source, header.as_ref())?;
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

/// The file and where to read the pages it may not hold, or `None` when
/// direct reading cannot be shown safe (then every page goes through
/// `sqlite_dbpage`).
fn direct_reading(
    conn: &Connection,
    path: &Path,
    file: Arc<File>,
    page_size: u32,
    journal_mode: &str,
    source: PageSource,
    header: Option<&IndexHeader>,
) -> Result<Option<(Arc<File>, Overlay)>> {
    // Same inode as the path SQLite opened: nothing was renamed over it.
    let same_file = match (file.metadata(), std::fs::metadata(path)) {
        (Ok(ours), Ok(now)) => (ours.dev(), ours.ino()) == (now.dev(), now.ino()),
        _ => false,
    };
    if !same_file {
        return Ok(None);
    }
    if let Some(header) = header
        && journal_mode == "wal"
    {
        return Ok(Some((
            file,
            Overlay::Log(LogFrames::scan(conn, path, header, page_size)?),
        )));
    }
    if source == PageSource::Log && journal_mode == "wal" {
        // Turned to WAL after it was asked: no header is known.
        return Ok(None);
    }
    let wal_pages = match journal_mode {
        "wal" => {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            match super::wal::pages_with_frames(Path::new(&wal), page_size) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    tracing::info!(event = "snapshot.direct_read_off", path = %path.display(), reason = %e);
                    return Ok(None);
                }
            }
        }
        "delete" | "truncate" | "persist" => HashSet::new(),
        // memory/off journals: leave it all to SQLite.
        _ => return Ok(None),
    };
    Ok(Some((file, Overlay::Dbpage(wal_pages))))
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
        let Some((file, overlay)) = &self.direct else {
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
        // Prepared only when a page needs it: a build without the table
        // reads through the log and never asks.
        let mut by_pgno = None;
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
                let past_end = at + ps > got;
                match overlay {
                    Overlay::Dbpage(wal_pages) if wal_pages.contains(&pgno) || past_end => {
                        if by_pgno.is_none() {
                            by_pgno = Some(
                                self.conn
                                    .prepare("SELECT data FROM sqlite_dbpage('main') WHERE pgno = ?1")
                                    .map_err(|e| self.dbpage_error(e))?,
                            );
                        }
                        let stmt = by_pgno.as_mut().expect("prepared above");
                        let page: Vec<u8> = stmt.query_row([pgno], |r| r.get(0)).at_db(&self.path)?;
                        if page.len() != ps {
                            return Err(Error::bad_data(self.path.display(), format!("page {pgno} read short")));
                        }
                        buf[at..at + ps].copy_from_slice(&page);
                    }
                    Overlay::Dbpage(_) => {}
                    Overlay::Log(log) => {
                        let from_file = match log.read(&self.conn, pgno, &mut buf[at..at + ps])? {
                            FromLog::Read => false,
                            FromLog::NotInLog => past_end,
                            FromLog::Overwritten => true,
                        };
                        let offset = (pgno as u64 - 1) * ps as u64;
                        if from_file
                            && (past_end
                                || crate::fsutil::read_full_at(file, &mut buf[at..at + ps], offset).at(&self.path)?
                                    < ps)
                        {
                            return Err(Error::bad_data(
                                self.path.display(),
                                format!("page {pgno} is in neither the database file nor its WAL"),
                            ));
                        }
                    }
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
            .fix("build with LIBSQLITE3_FLAGS=-DSQLITE_ENABLE_DBPAGE_VTAB (Lifeboat's .cargo/config.toml sets it); without it only WAL and rollback-journal databases read straight from their files can be captured")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        c
    }

    fn insert(c: &Connection, rows: i64) {
        c.execute(
            "INSERT INTO t(v) SELECT randomblob(700) FROM generate_series(1, ?1)",
            [rows],
        )
        .or_else(|_| {
            // generate_series is an extension; a recursive CTE is not.
            c.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO t(v) SELECT randomblob(700) FROM n",
                [rows],
            )
        })
        .unwrap();
    }

    fn begin(path: &Path, source: PageSource) -> OpenDatabase {
        let pending = open(path, DEFAULT_SCHEMA_QUERY).unwrap();
        begin_all_reading(vec![pending], source).unwrap().pop().unwrap()
    }

    fn pages(db: &OpenDatabase) -> Vec<u8> {
        let mut all = Vec::new();
        db.read_batches(
            16,
            || Ok(Vec::new()),
            |_, b| {
                all.extend_from_slice(&b);
                Ok(())
            },
        )
        .unwrap();
        all
    }

    /// The rows a captured image holds, and whether SQLite finds it whole.
    fn rows_of_image(dir: &Path, image: &[u8]) -> i64 {
        let copy = dir.join(format!("image-{}.db", crate::fsutil::unique_suffix()));
        std::fs::write(&copy, image).unwrap();
        crate::sqlite::integrity_check(&copy).unwrap();
        let c = Connection::open(&copy).unwrap();
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn pages_from_the_log_are_the_pages_sqlite_dbpage_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = service(&path);
        insert(&c, 200);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        // Changes in the log, some of them pages past the file's end.
        insert(&c, 300);
        c.execute("UPDATE t SET v = randomblob(700) WHERE id % 7 = 0", [])
            .unwrap();

        let via_log = begin(&path, PageSource::Log);
        assert!(matches!(via_log.direct, Some((_, Overlay::Log(_)))));
        let from_log = pages(&via_log);
        via_log.finish().unwrap();
        let via_dbpage = begin(&path, PageSource::Dbpage);
        let from_dbpage = pages(&via_dbpage);
        via_dbpage.finish().unwrap();
        assert_eq!(from_log.len(), from_dbpage.len());
        assert!(from_log == from_dbpage, "the two ways read different pages");
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() < from_log.len(), "pages past the file's end were read");
        assert_eq!(rows_of_image(dir.path(), &from_log), 500);
    }

    /// Commits and checkpoints after the transaction began change nothing
    /// it reads, whether it holds a read mark (frames in the log) or read
    /// lock 0 (a fully checkpointed log, then restarted and overwritten by
    /// the service).
    #[test]
    fn pages_from_the_log_stay_the_snapshot_while_the_service_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = service(&path);
        insert(&c, 100);
        let db = begin(&path, PageSource::Log);
        insert(&c, 400);
        c.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(PASSIVE);").unwrap();
        insert(&c, 50);
        assert_eq!(rows_of_image(dir.path(), &pages(&db)), 100);
        db.finish().unwrap();

        // Every frame checkpointed, the log kept: the capture is on read
        // lock 0, and the service may restart the log over its frames.
        c.execute_batch("PRAGMA wal_checkpoint(PASSIVE);").unwrap();
        let before: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        let db = begin(&path, PageSource::Log);
        match &db.direct {
            Some((_, Overlay::Log(log))) => assert!(!log.file_only.get(), "the frames were still there"),
            _ => panic!("not read through the log"),
        }
        insert(&c, 600);
        c.execute("UPDATE t SET v = randomblob(700)", []).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(PASSIVE);").unwrap();
        assert_eq!(rows_of_image(dir.path(), &pages(&db)), before);
        match &db.direct {
            Some((_, Overlay::Log(log))) => assert!(log.file_only.get(), "the restart was noticed"),
            _ => unreachable!(),
        }
        db.finish().unwrap();
    }

    /// A transaction begun at a known header and read through the log
    /// after later commits lengthened it (rewriting pages the snapshot has
    /// frames for) gives the pages `sqlite_dbpage` gives in that same
    /// transaction: frames past the header's `max_frame` are not its own.
    #[test]
    fn the_log_is_read_only_up_to_the_snapshots_last_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = service(&path);
        insert(&c, 200);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        insert(&c, 100);
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let header = frames::begin_at_known_header(&reader, &path).unwrap();
        c.execute("UPDATE t SET v = randomblob(700)", []).unwrap();
        insert(&c, 100);
        let ps: u32 = reader.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let log = LogFrames::scan(&reader, &path, &header, ps).unwrap();
        let wal_len = std::fs::metadata(dir.path().join("app.db-wal")).unwrap().len();
        assert!(
            wal_len > super::super::wal::HEADER_LEN + header.max_frame as u64 * (24 + ps as u64),
            "the later commits are in the log"
        );
        let file = std::fs::read(&path).unwrap();
        let mut stmt = reader.prepare("SELECT pgno, data FROM sqlite_dbpage('main')").unwrap();
        let mut rows = stmt.query([]).unwrap();
        let (mut from_log, mut pages) = (0, 0);
        while let Some(row) = rows.next().unwrap() {
            let pgno: u32 = row.get(0).unwrap();
            let want: Vec<u8> = row.get(1).unwrap();
            let mut page = vec![0u8; ps as usize];
            match log.read(&reader, pgno, &mut page).unwrap() {
                FromLog::Read => from_log += 1,
                FromLog::NotInLog => {
                    let at = (pgno as usize - 1) * ps as usize;
                    page.copy_from_slice(&file[at..at + ps as usize]);
                }
                FromLog::Overwritten => panic!("nothing restarted the log"),
            }
            assert!(page == want, "page {pgno} differs from sqlite_dbpage's");
            pages += 1;
        }
        assert!(
            from_log > 0 && pages > from_log,
            "{from_log} of {pages} pages from the log"
        );
    }

    /// A commit landing between BEGIN and the second header read makes the
    /// header read before BEGIN useless (the snapshot may be either side of
    /// the commit): the attempt is begun again, and the image is the
    /// transaction's.
    #[test]
    fn a_commit_while_beginning_begins_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = service(&path);
        insert(&c, 100);
        let calls = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let (seen, writer_path) = (calls.clone(), path.clone());
        frames::tests::AFTER_BEGIN.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                seen.set(seen.get() + 1);
                if seen.get() == 1 {
                    insert(&Connection::open(&writer_path).unwrap(), 300);
                }
            }))
        });
        let db = begin(&path, PageSource::Log);
        frames::tests::AFTER_BEGIN.with(|hook| hook.borrow_mut().take());
        assert_eq!(calls.get(), 2, "the attempt a commit landed in was begun again");
        let in_transaction: i64 = db.conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(in_transaction, 400);
        assert_eq!(rows_of_image(dir.path(), &pages(&db)), in_transaction);
        db.finish().unwrap();
        drop(c);
    }

    /// A WAL database with frames in its log (some pages only there), and
    /// a read-only connection with a transaction begun at a known header.
    fn begun_at_header(dir: &Path) -> (PathBuf, Connection, Connection, IndexHeader, u32) {
        let path = dir.join("app.db");
        let c = service(&path);
        insert(&c, 200);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        insert(&c, 100);
        c.execute("UPDATE t SET v = randomblob(700) WHERE id % 5 = 0", [])
            .unwrap();
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let header = frames::begin_at_known_header(&reader, &path).unwrap();
        let ps = reader.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (path, c, reader, header, ps)
    }

    /// Frames missing while the index still names the snapshot's
    /// generation: the `-wal` was removed or replaced by its path, and
    /// SQLite reads on through its descriptor. The database file may then
    /// hold pages newer than the snapshot, and lack commits only the log
    /// held, so the capture fails instead of reading it.
    #[test]
    fn a_wal_removed_or_replaced_under_the_capture_is_an_error() {
        for replaced in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (path, _service, reader, header, ps) = begun_at_header(dir.path());
            let wal = dir.path().join("app.db-wal");
            if replaced {
                let len = std::fs::metadata(&wal).unwrap().len();
                let other = dir.path().join("other-wal");
                std::fs::write(&other, vec![0u8; len as usize]).unwrap();
                std::fs::rename(&other, &wal).unwrap();
            } else {
                std::fs::remove_file(&wal).unwrap();
            }
            let Err(e) = LogFrames::scan(&reader, &path, &header, ps) else {
                panic!("a missing log was taken for a restarted one (replaced: {replaced})");
            };
            assert_eq!(e.code, ErrorCode::SnapshotWalReplaced, "{e:?}");
            assert!(e.temporary);
        }
    }

    /// A frame of the snapshot overwritten in place while the index still
    /// names its generation is not a restart either: an error, not a page
    /// read from the database file.
    #[test]
    fn a_frame_overwritten_without_a_restart_is_an_error() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, _service, reader, header, ps) = begun_at_header(dir.path());
        let log = LogFrames::scan(&reader, &path, &header, ps).unwrap();
        // The last frame is its page's newest, so the one read for it.
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("app.db-wal"))
            .unwrap();
        let at = super::super::wal::HEADER_LEN + (header.max_frame as u64 - 1) * (24 + ps as u64);
        let mut fh = [0u8; 24];
        wal.read_exact_at(&mut fh, at).unwrap();
        let pgno = u32::from_be_bytes(fh[..4].try_into().unwrap());
        wal.write_all_at(&[0u8; 24], at).unwrap();
        let mut page = vec![0u8; ps as usize];
        let e = log.read(&reader, pgno, &mut page).unwrap_err();
        assert_eq!(e.code, ErrorCode::SnapshotWalReplaced, "{e:?}");
    }

    const HOLD_DB: &str = "LIFEBOAT_UNIT_TEST_HOLD_DB";

    /// Not a test: the body of the child process of
    /// [`a_wal_index_read_only_to_the_reader_is_read`], run when
    /// `LIFEBOAT_UNIT_TEST_HOLD_DB` names a database. It keeps the database
    /// open, its `-shm` mapped read-write, until its parent is gone.
    #[test]
    fn holder_child() {
        let Some(db) = std::env::var_os(HOLD_DB) else {
            return;
        };
        let parent = std::os::unix::process::parent_id();
        let c = service(Path::new(&db));
        insert(&c, 50);
        // A read leaves a read mark at the log's end, which a reader that
        // cannot write the index needs.
        let _: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        let mut ready = db.clone();
        ready.push(".ready");
        std::fs::write(ready, b"").unwrap();
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A child process, killed when dropped.
    pub(super) struct Child(pub(super) std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Run the test `name` of this binary in a child process with `env`.
    pub(super) fn spawn_test(name: &str, env: (&str, &Path)) -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(env.0, env.1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A backup user who cannot write the `-shm` gets it mapped read-only
    /// (SQLITE_READONLY from xShmMap, with the region): that is enough to
    /// read the header, and must not read as "no mapping" (which ended in
    /// a temporary error after every attempt, retried for ever).
    #[test]
    fn a_wal_index_read_only_to_the_reader_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        // Another process has the database open, so the index is live; this
        // one opens it read-only (as without write permission: root ignores
        // file modes, `readonly_shm` does not).
        let _holder = Child(spawn_test("sqlite::capture::tests::holder_child", (HOLD_DB, &path)));
        let ready = dir.path().join("app.db.ready");
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "the holder never got ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        let uri = format!("file:{}?readonly_shm=1", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&uri, flags).unwrap();
        let header = frames::begin_at_known_header(&conn, &path).unwrap();
        assert!(header.max_frame > 0);
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 50);
        conn.execute_batch("COMMIT").unwrap();
    }

    const PROBE_DB: &str = "LIFEBOAT_UNIT_TEST_PROBE_DB";

    /// Not a test: the body of the child process of
    /// [`capture_leaves_the_processs_sqlite_locks_alone`], run when
    /// `LIFEBOAT_UNIT_TEST_PROBE_DB` names a file. Exits 0 when another
    /// process holds a lock where SQLite puts its SHARED lock on a database
    /// file, or its DMS lock on a `-shm`, 3 when nobody does.
    #[test]
    fn lock_probe_child() {
        use std::os::fd::AsRawFd;
        let Some(db) = std::env::var_os(PROBE_DB) else {
            return;
        };
        let shm = db.as_encoded_bytes().ends_with(b"-shm");
        let f = File::open(db).unwrap();
        // SAFETY: a zeroed flock is a valid value; F_GETLK fills it in.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as _;
        lock.l_whence = libc::SEEK_SET as _;
        // SQLite's unix VFS: PENDING_BYTE (1 GiB) + 2, 510 bytes; in the
        // -shm, the byte after the eight WAL locks at 120.
        (lock.l_start, lock.l_len) = if shm { (128, 1) } else { (0x4000_0002, 510) };
        // SAFETY: a valid descriptor and a valid flock to fill in.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut lock) }, 0);
        std::process::exit(if lock.l_type as i32 == libc::F_UNLCK { 3 } else { 0 });
    }

    /// Whether a process other than this one sees SQLite's SHARED lock on
    /// `db` (or its DMS lock, on a `-shm`).
    fn shared_lock_seen_from_outside(db: &Path) -> bool {
        let mut probe = spawn_test("sqlite::capture::tests::lock_probe_child", (PROBE_DB, db));
        match probe.wait().unwrap().code() {
            Some(0) => true,
            Some(3) => false,
            other => panic!("the lock probe failed: {other:?}"),
        }
    }

    /// A process embedding Lifeboat holds SQLite locks on its database; a
    /// capture (and the checks a directory snapshot makes) must not close a
    /// descriptor of the file, which would drop every one of them.
    #[test]
    fn capture_leaves_the_processs_sqlite_locks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = service(&path);
        insert(&c, 100);
        c.execute_batch("BEGIN; SELECT count(*) FROM t;").unwrap();
        assert!(shared_lock_seen_from_outside(&path), "the service holds SHARED");
        let mut shm = path.clone().into_os_string();
        shm.push("-shm");
        assert!(shared_lock_seen_from_outside(Path::new(&shm)), "the service holds DMS");
        for source in [PageSource::Log, PageSource::Dbpage] {
            let db = begin(&path, source);
            assert_eq!(rows_of_image(dir.path(), &pages(&db)), 100);
            db.finish().unwrap();
            assert!(
                shared_lock_seen_from_outside(&path),
                "a capture ({source:?}) dropped it"
            );
        }
        assert!(crate::sqlite::has_header(&path).unwrap());
        let chunker = crate::repo::config::Chunker {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        };
        crate::files::read_chunks(&path, chunker, &mut |_| Ok(())).unwrap();
        crate::files::read_chunks(Path::new(&shm), chunker, &mut |_| Ok(())).unwrap();
        assert!(shared_lock_seen_from_outside(&path), "reading it as a file dropped it");
        assert!(
            shared_lock_seen_from_outside(Path::new(&shm)),
            "reading the -shm dropped its lock"
        );
        c.execute_batch("COMMIT").unwrap();
    }
}
