//! Checkpoints run by a process that is not the database's writer: a
//! read-write connection that never writes, takes the write lock only to
//! keep writers out for a moment, and never checkpoints on its own (not
//! automatically, not when closed), so every checkpoint is one asked for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result, SqlContext};

/// How long the connection waits for locks unless told otherwise.
const DEFAULT_BUSY: Duration = Duration::from_secs(5);

/// The connection checkpoints and the write lock go through.
pub struct Checkpointer {
    path: PathBuf,
    connection: Connection,
}

impl Checkpointer {
    /// A read-write connection to `path` that checkpoints only when asked.
    pub fn open(path: &Path) -> Result<Checkpointer> {
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .at_db(path)?;
        c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .at_db(path)?;
        c.execute_batch("PRAGMA wal_autocheckpoint=0").at_db(path)?;
        super::anchor::lean(&c, path)?;
        Ok(Checkpointer {
            path: path.to_path_buf(),
            connection: c,
        })
    }

    /// Copy into the database file the frames no reader still needs, without
    /// waiting for anyone or blocking anyone.
    pub fn passive(&self) -> Result<()> {
        self.connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .at_db(&self.path)
    }

    /// Copy every frame and truncate the log to zero bytes, keeping writers
    /// out for at most `busy`. `false` when readers or writers were in the
    /// way (or it failed): nothing to undo, try again later.
    pub fn truncate(&self, busy: Duration) -> Result<bool> {
        self.connection.busy_timeout(busy).at_db(&self.path)?;
        let r = self
            .connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        self.connection.busy_timeout(DEFAULT_BUSY).at_db(&self.path)?;
        Ok(matches!(r, Ok(0)))
    }

    /// A number that changes whenever another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        self.connection
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .at_db(&self.path)
    }

    /// Take the database's write lock (`BEGIN IMMEDIATE`; nothing is ever
    /// written), waiting up to `busy`: no commit lands until
    /// [`Checkpointer::unlock_writers`]. Failing to get it is temporary.
    pub fn lock_writers(&self, busy: Duration) -> Result<()> {
        self.connection.busy_timeout(busy).at_db(&self.path)?;
        self.connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| Error::sqlite(&self.path, e).temporary())
    }

    /// Let writers in again.
    pub fn unlock_writers(&self) -> Result<()> {
        let _ = self.connection.execute_batch("ROLLBACK");
        self.connection.busy_timeout(DEFAULT_BUSY).at_db(&self.path)
    }
}
