//! Databases found inside directory sources. A live WAL database copied as
//! raw bytes beside its `-wal` restores as "database disk image is
//! malformed" when a writer was busy; so any file with the SQLite header is
//! captured as a configured database is (inside a read transaction, page by
//! page, deduplicated against its previous capture), and its `-wal`,
//! `-shm` and `-journal` are not copied at all (unless its capture fails and
//! it is stored as plain bytes: then they go with it).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::files::Walked;
use crate::id::Id;
use crate::repo::SnapshotRef;
use crate::repo::manifest::{EmbeddedDatabase, Entry, EntryKind, Source, SqliteSource};
use crate::sqlite::capture::{self, OpenDatabase};

/// The smallest file that can be a database with a table: one 512-byte page.
const SMALLEST_DATABASE: u64 = 512;

/// (device, inode) of each path that exists.
pub(super) fn inodes_of(paths: &[PathBuf]) -> HashSet<(u64, u64)> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// `walked`, each entry marked when it is a database; the files that are
/// another source's (`others`, by inode) dropped. A database's sidecars
/// stay in the list: they are stored only if its capture by pages fails
/// (then they belong with the raw bytes).
pub(super) fn find_databases(walked: Vec<Walked>, others: &HashSet<(u64, u64)>) -> Vec<(Walked, bool)> {
    let is_db = |w: &Walked| {
        w.entry.kind == EntryKind::File
            && w.entry.size >= SMALLEST_DATABASE
            && crate::sqlite::has_header(&w.abs).unwrap_or(false)
    };
    walked
        .into_iter()
        .filter(|w| {
            others.is_empty()
                || w.entry.kind != EntryKind::File
                || !std::fs::symlink_metadata(&w.abs).is_ok_and(|m| others.contains(&(m.dev(), m.ino())))
        })
        .map(|w| {
            let db = is_db(&w);
            (w, db)
        })
        .collect()
}

/// The database `path` is a sidecar of (`x.db` for `x.db-wal`), if any.
pub(super) fn sidecar_of(path: &str) -> Option<&str> {
    crate::sqlite::OWN_SIDECARS
        .iter()
        .find_map(|suffix| path.strip_suffix(suffix))
}

/// A read transaction on the database at `path`, or `None` (said through
/// `warn`) when it cannot be had: read-only, damaged, or a hot journal only
/// a writer may roll back. It is then stored as plain bytes, as any file.
pub(super) fn open(path: &Path, warn: &mut dyn FnMut(String)) -> Result<Option<OpenDatabase>> {
    let opened = capture::open(path, crate::sqlite::capture::DEFAULT_SCHEMA_QUERY)
        .and_then(|p| capture::begin_all(vec![p]))
        .map(|mut v| v.pop().expect("one database opened"));
    match opened {
        Ok(db) => Ok(Some(db)),
        Err(e) => {
            tracing::warn!(event = "snapshot.embedded_database_raw", path = %path.display(), error = %e);
            warn(format!(
                "{}: a SQLite database that cannot be read as one ({}); stored as plain bytes",
                path.display(),
                e.problem
            ));
            Ok(None)
        }
    }
}

/// The page map of the same database in the newest earlier snapshot, which
/// the new capture deduplicates against.
pub(super) fn previous_pagemap(previous: &[SnapshotRef], source: &str, rel: &str) -> Option<Id> {
    previous.iter().rev().find_map(|s| {
        s.manifest.sources.iter().find_map(|src| match src {
            Source::Directory(d) if d.name == source => d
                .entries
                .iter()
                .find(|e| e.path == rel)
                .and_then(|e| e.database.as_ref().map(|db| db.pagemap)),
            _ => None,
        })
    })
}

/// The directory entry of a captured database.
pub(super) fn entry(walked: Entry, captured: &SqliteSource) -> Entry {
    Entry {
        size: captured.size,
        blake3: Some(captured.blake3),
        chunks: Vec::new(),
        database: Some(EmbeddedDatabase {
            page_size: captured.page_size,
            page_count: captured.page_count,
            pagemap: captured.pagemap,
            sqlite_version: captured.sqlite_version.clone(),
            journal_mode: captured.journal_mode.clone(),
        }),
        ..walked
    }
}
