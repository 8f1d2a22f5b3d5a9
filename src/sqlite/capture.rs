//! Online capture of live databases. Each database gets its own read-only
//! connection; read transactions on all of them are opened back to back, so
//! a multi-database snapshot sees each at (nearly) the same instant. In WAL
//! mode a reader never blocks writers; pages come from `sqlite_dbpage`, which
//! returns each page as of the reader's snapshot (WAL frames included) without
//! copying the database first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result, SqlContext};

/// One database with a read transaction open on it.
pub struct OpenDatabase {
    pub path: PathBuf,
    conn: Connection,
    pub page_size: u32,
    pub page_count: u32,
    pub journal_mode: String,
    pub sqlite_version: String,
    pub schema_version: Option<i64>,
    pub schema_query: String,
}

pub const DEFAULT_SCHEMA_QUERY: &str = "PRAGMA user_version";

/// Open `path` for capture without touching it: read-only, no checkpoint on
/// close, a busy timeout for the brief moments WAL recovery holds locks.
pub fn open(path: &Path) -> Result<Connection> {
    if !super::has_header(path)? {
        return Err(Error::bad_data(path.display(), "not a SQLite database (header check failed)")
            .fix("point the [[sqlite]] source at the database file itself")
            .event("snapshot.not_sqlite"));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).at_db(path)?;
    conn.busy_timeout(Duration::from_secs(10)).at_db(path)?;
    Ok(conn)
}

/// Begin read transactions on every database as close together as possible.
pub fn begin_all(dbs: Vec<(PathBuf, Connection, String)>) -> Result<Vec<OpenDatabase>> {
    let mut open = Vec::with_capacity(dbs.len());
    // First the transactions, all together; the metadata queries come after.
    for (path, conn, query) in dbs {
        conn.execute_batch("BEGIN DEFERRED").at_db(&path)?;
        // A deferred transaction takes its snapshot at the first read.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).at_db(&path)?;
        open.push((path, conn, query));
    }
    open.into_iter()
        .map(|(path, conn, schema_query)| {
            let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).at_db(&path)?;
            let page_count: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).at_db(&path)?;
            let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).at_db(&path)?;
            let sqlite_version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0)).at_db(&path)?;
            let schema_version = conn
                .query_row(&schema_query, [], |r| r.get::<_, Option<rusqlite::types::Value>>(0))
                .map_err(|e| {
                    Error::sqlite(&path, e)
                        .fix(format!("check the schema_version query `{schema_query}` in the configuration"))
                })?
                .and_then(|v| match v {
                    rusqlite::types::Value::Integer(i) => Some(i),
                    rusqlite::types::Value::Text(t) => t.trim().parse().ok(),
                    _ => None,
                });
            Ok(OpenDatabase { path, conn, page_size, page_count, journal_mode, sqlite_version, schema_version, schema_query })
        })
        .collect()
}

impl OpenDatabase {
    /// Visit every page in order, inside the open read transaction.
    pub fn for_each_page(&self, mut visit: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        let mut stmt = self.conn.prepare("SELECT pgno, data FROM sqlite_dbpage('main')").map_err(|e| {
            if e.to_string().contains("sqlite_dbpage") {
                Error::config(self.path.display(), "this Lifeboat binary was built without SQLite's sqlite_dbpage table")
                    .fix("build Lifeboat from its source tree (its .cargo/config.toml sets LIBSQLITE3_FLAGS)")
                    .event("snapshot.no_dbpage")
            } else {
                Error::sqlite(&self.path, e)
            }
        })?;
        let mut rows = stmt.query([]).at_db(&self.path)?;
        let mut expect = 1u32;
        while let Some(row) = rows.next().at_db(&self.path)? {
            let pgno: u32 = row.get(0).at_db(&self.path)?;
            let data = row.get_ref(1).at_db(&self.path)?.as_blob().map_err(|e| Error::sqlite(&self.path, e.into()))?;
            if pgno != expect || data.len() != self.page_size as usize {
                return Err(Error::bad_data(self.path.display(), format!("page {pgno} read out of order or short")));
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

    /// End the read transaction; the database is then free to checkpoint past us.
    pub fn finish(self) -> Result<()> {
        self.conn.execute_batch("COMMIT").at_db(&self.path)
    }
}
