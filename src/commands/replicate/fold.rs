//! Folding: a new base made from the last one plus the pages the commits
//! since then wrote, without reading the live database again. While it
//! seals segments the replicator keeps the newest image of every page they
//! touched in a local sparse file (`fold.pages`, at most the database's
//! size); a fold stores those pages the replica lacks and a page map
//! against the previous base, so a point-in-time restore never replays
//! more than one fold interval of segments.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::codec::Encoder;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::repo::manifest::{MANIFEST_FORMAT, Manifest, ReplicationPoint, Source, SqliteSource, Summary};
use crate::repo::pack::BlobType;
use crate::repo::pagemap::{Change, PageList, PageMap};
use crate::repo::segment::Segment;
use crate::repo::writer::BlobWriter;
use crate::repo::{LockedRepository, Repository};

/// The page images written since the last base, kept in a local sparse file
/// (`fold.pages` in the stream's state directory), and what a folded base
/// needs to be written from them.
pub struct Fold {
    path: PathBuf,
    file: File,
    page_size: u32,
    dirty: BTreeSet<u32>,
    db_pages: u32,
    /// The base the pages are relative to; 0 when the record is incomplete
    /// (after a restart), and a fold must read the database instead.
    pub base_txid: u64,
    /// The last commit recorded.
    pub last_txid: u64,
    last_time_ns: i64,
    /// When the record started over (the last base or fold): how old the history
    /// a restore would replay is.
    pub since: Instant,
}

impl Fold {
    /// Create (or empty) `dir/fold.pages`, mode 0600; the record starts
    /// incomplete until [`Fold::reset`]. Fails with an I/O error when `dir` is
    /// not writable.
    pub fn open(dir: &Path) -> Result<Fold> {
        let path = dir.join("fold.pages");
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .at(&path)?
        };
        Ok(Fold {
            path,
            file,
            page_size: 0,
            dirty: BTreeSet::new(),
            db_pages: 0,
            base_txid: 0,
            last_txid: 0,
            last_time_ns: 0,
            since: Instant::now(),
        })
    }

    /// Start over from a base at `txid`.
    pub fn reset(&mut self, txid: u64, page_size: u32, db_pages: u32) -> Result<()> {
        self.file.set_len(0).at(&self.path)?;
        self.dirty.clear();
        self.page_size = page_size;
        self.db_pages = db_pages;
        self.base_txid = txid;
        self.last_txid = txid;
        self.since = Instant::now();
        Ok(())
    }

    /// Start over on top of a fold just written at `last_txid`.
    pub fn rebase(&mut self) -> Result<()> {
        let (ps, pages) = (self.page_size, self.db_pages);
        self.reset(self.last_txid, ps, pages)
    }

    /// Whether there is anything to fold, and the record of it is complete.
    pub fn has_work(&self) -> bool {
        self.last_txid > self.base_txid
    }

    /// Whether a fold can be written from the record alone: it started from a
    /// base of this run, and the page size carries chaining values.
    pub fn is_complete(&self) -> bool {
        self.base_txid > 0 && crate::treehash::supported(self.page_size)
    }

    /// Keep the newest image of each page a sealed segment wrote.
    pub fn record(&mut self, seg: &Segment) -> Result<()> {
        if self.base_txid == 0 || seg.page_size != self.page_size || seg.first_txid != self.last_txid + 1 {
            self.base_txid = 0;
            return Ok(());
        }
        let mut latest: HashMap<u32, usize> = HashMap::new();
        let mut image = 0usize;
        for c in &seg.commits {
            for k in 0..c.pages as usize {
                latest.insert(seg.pgnos[image + k], image + k);
            }
            image += c.pages as usize;
            self.db_pages = c.db_pages;
            self.last_time_ns = c.time_ns;
        }
        let ps = self.page_size as u64;
        for (pgno, i) in latest {
            self.file
                .write_all_at(seg.image(i), (pgno as u64 - 1) * ps)
                .at(&self.path)?;
            self.dirty.insert(pgno);
        }
        self.last_txid = seg.last_txid;
        Ok(())
    }

    /// Write the folded base into `repo` (locked by the caller) on top of
    /// its base at `base_txid` of `stream`. `Ok(None)` when the repository
    /// does not hold that base (a replica that joined later).
    pub fn write_base(&self, repo: &LockedRepository, stream: &str, level: i32) -> Result<Option<Id>> {
        let started = Instant::now();
        let Some(parent) = self.base_source(repo, stream)? else {
            return Ok(None);
        };
        let ps = self.page_size;
        let resolved = repo.resolve_pagemap(&parent.pagemap, true)?;
        if resolved.page_size != ps || resolved.cvs.len() != resolved.pages.len() {
            return Ok(None);
        }
        if !resolved.is_live(repo) {
            // A prune marked part of the base (it was forgotten): the pages
            // must not be reused, and the record alone cannot replace them.
            tracing::warn!(event = "replicate.fold_base_forgotten", txid = self.base_txid);
            return Ok(None);
        }
        let mut list = PageList {
            ids: resolved.pages,
            cvs: resolved.cvs,
        };
        let mut writer = BlobWriter::new(repo);
        let (changes, page1) = self.store_dirty_pages(&mut writer, level, &list)?;
        let parent_list_len = list.ids.len() as u32;
        list.apply_changes(self.db_pages, &changes);
        if list.ids.iter().any(|id| id.is_zero()) {
            return Err(Error::bad_data(
                &parent.name,
                format!("fold: pages beyond the base's {parent_list_len} are missing from the record"),
            ));
        }
        let blake3 = crate::treehash::file_hash(&list.cvs, list.ids[0]);
        let map = PageMap::from_changes(ps, parent.pagemap, resolved.depth, list, changes);
        let mut hasher = blake3::Hasher::new();
        map.write_to(&mut hasher).at(&self.path)?;
        let map_id = Id(*hasher.finalize().as_bytes());
        writer.add_raw_streamed(BlobType::PageMap, map_id, map.encoded_len(), &mut |w| map.write_to(w))?;
        drop(map);
        let stats = writer.finish()?;
        // `PRAGMA user_version` lives in page 1's header; another query would
        // need the database itself.
        let schema_version = if parent.schema_query == crate::sqlite::capture::DEFAULT_SCHEMA_QUERY {
            match &page1 {
                Some(p) => Some(i32::from_be_bytes(p[60..64].try_into().expect("4 bytes")) as i64),
                None => parent.schema_version,
            }
        } else {
            None
        };
        let time =
            jiff::Timestamp::from_nanosecond(self.last_time_ns as i128).unwrap_or_else(|_| jiff::Timestamp::now());
        let size = self.db_pages as u64 * ps as u64;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            time,
            host: crate::fsutil::hostname(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            kind: crate::repo::manifest::SnapshotKind::Base,
            tags: vec!["replicate".into(), "folded".into()],
            sources: vec![Source::Sqlite(SqliteSource {
                page_count: self.db_pages,
                size,
                blake3,
                pagemap: map_id,
                schema_version,
                replication: Some(ReplicationPoint {
                    stream: stream.to_string(),
                    txid: self.last_txid,
                    after_gap: false,
                    watched_until_ns: None,
                }),
                ..parent
            })],
            summary: Summary {
                logical_bytes: size,
                files: 1,
                new_blobs: stats.new_blobs,
                added_raw_bytes: stats.raw_bytes,
                added_stored_bytes: stats.stored_bytes,
                duration_ms: started.elapsed().as_millis() as u64,
                warnings: Vec::new(),
            },
            incomplete: Vec::new(),
        };
        repo.write_manifest(&manifest).map(Some)
    }

    /// The base this fold was started on (`base_txid` of `stream`), as the
    /// repository holds it; None when it does not.
    fn base_source(&self, repo: &Repository, stream: &str) -> Result<Option<SqliteSource>> {
        Ok(repo.snapshots()?.into_iter().rev().find_map(|s| {
            s.manifest.sources.into_iter().find_map(|src| match src {
                Source::Sqlite(d)
                    if d.replication
                        .as_ref()
                        .is_some_and(|r| r.stream == stream && r.txid == self.base_txid) =>
                {
                    Some(d)
                }
                _ => None,
            })
        }))
    }

    /// Store the pages the fold wrote that differ from the base's `list`,
    /// and return them as changes, with page 1's content when the fold
    /// wrote it (its header holds `user_version`).
    fn store_dirty_pages(
        &self,
        writer: &mut BlobWriter,
        level: i32,
        list: &PageList,
    ) -> Result<(Vec<Change>, Option<Vec<u8>>)> {
        let mut enc = Encoder::new(level);
        let mut changes = Vec::new();
        let ps = self.page_size;
        let mut page = vec![0u8; ps as usize];
        let mut page1: Option<Vec<u8>> = None;
        for &pgno in self.dirty.range(1..=self.db_pages) {
            self.file
                .read_exact_at(&mut page, (pgno as u64 - 1) * ps as u64)
                .at(&self.path)?;
            let id = Id::of(&page);
            if pgno == 1 {
                page1 = Some(page.clone());
            }
            if list.ids.get(pgno as usize - 1) == Some(&id) {
                continue;
            }
            if !writer.has(&id) {
                writer.add(BlobType::Page, id, &enc.encode(&page), page.len())?;
            }
            changes.push(Change {
                pgno,
                id,
                cv: crate::treehash::page_cv(&page, pgno),
            });
        }
        Ok((changes, page1))
    }
}
