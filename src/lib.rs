//! Lifeboat: backups of a self-hosted service's state (live SQLite
//! databases, directories, files) into a deduplicated, compressed
//! repository, with continuous replication of every commit and restores
//! that never make things worse. See docs/ARCHITECTURE.md for the map of
//! modules and docs/FORMAT.md for the repository, byte by byte.
//!
//! A Rust service embeds it through the items re-exported here: open or
//! create a [`Repository`] at a [`RepoLocation`], [`snapshot::take`] its
//! sources, run [`replicate::run`] on a thread of its own, and
//! [`restore::restore`] a [`Selection`]. `examples/embed.rs` is a whole
//! service doing all four.
//!
//! ```
//! use lifeboat::{Repository, RepoLocation, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
//!
//! # fn main() -> lifeboat::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let db = dir.path().join("app.db");
//! rusqlite::Connection::open(&db)
//!     .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);"))
//!     .unwrap();
//!
//! let repo = Repository::init(&RepoLocation::local(dir.path().join("backups")))?;
//! let sources = [SourceSpec {
//!     name: "app.db".into(),
//!     path: db,
//!     kind: SourceKind::Sqlite { schema_query: "PRAGMA user_version".into() },
//! }];
//! let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
//! // Locked (this host's writer lock) until `repo` is dropped.
//! let repo = repo.locked("my-service")?;
//! let (id, manifest) = lifeboat::snapshot::take(&repo, &sources, &options, &lifeboat::progress::Silent)?;
//! assert_eq!(manifest.sources.len(), 1);
//! println!("snapshot {}", id.short());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod codec;
pub mod commands;
pub mod crashpoint;
pub mod duration;
pub mod error;
pub(crate) mod files;
pub mod fsutil;
pub mod id;
pub mod oplog;
pub mod pitr;
pub mod progress;
pub mod repo;
pub mod retention;
pub(crate) mod rfc3339;
pub mod sqlite;
pub mod storage;
pub(crate) mod treehash;
pub(crate) mod workers;

pub use commands::{drill, forget, prune, repair, replicate, reset, restore, snapshot, stats, status, verify};
pub use error::{Error, ErrorCode, ErrorKind, Result};
pub use fsutil::HostDirs;
pub use repo::manifest::SnapshotKind;
pub use repo::{LockedRepository, Opened, RepoLocation, Repository};
pub use restore::{RestoreOptions, RestoreReport, Selection, Target};
pub use snapshot::{SnapshotOptions, SourceKind, SourceSpec};
pub use verify::DataCheck;
