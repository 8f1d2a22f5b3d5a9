//! Accumulates new blobs into packs and, at the end, one index file for them.
//! Order of durability: each pack is fsynced and renamed into place before the
//! index naming it is written; the caller writes the manifest only after
//! `finish` returns.

use std::collections::HashSet;

use super::Repository;
use super::index::{IndexFile, IndexedPack};
use super::pack::{BlobType, PackWriter, pack_key};
use crate::error::Result;
use crate::id::Id;

#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub new_blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
}

pub struct BlobWriter<'r> {
    repo: &'r Repository,
    current: Option<PackWriter>,
    /// 128-bit id prefixes stored by this run: half the memory of full ids,
    /// and a false match needs a 2^-128 coincidence.
    written: HashSet<u128>,
    index: IndexFile,
    pub stats: WriteStats,
}

impl<'r> BlobWriter<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        BlobWriter {
            repo,
            current: None,
            written: HashSet::new(),
            index: IndexFile::default(),
            stats: WriteStats::default(),
        }
    }

    /// Whether the repository or this run already stores `id`.
    pub fn has(&self, id: &Id) -> bool {
        self.repo.has_blob(id) || self.written.contains(&prefix(id))
    }

    /// Add an enveloped blob unless it is already stored.
    pub fn add(&mut self, kind: BlobType, id: Id, encoded: &[u8], raw_len: usize) -> Result<()> {
        self.add_parts(kind, id, &[encoded], raw_len)
    }

    /// Add `data` uncompressed (raw envelope), for blobs that do not compress,
    /// such as page maps full of random ids; avoids a compressed copy.
    pub fn add_raw(&mut self, kind: BlobType, id: Id, data: &[u8]) -> Result<()> {
        self.add_parts(kind, id, &[&[crate::codec::TAG_RAW], data], data.len())
    }

    fn add_parts(&mut self, kind: BlobType, id: Id, parts: &[&[u8]], raw_len: usize) -> Result<()> {
        if self.has(&id) {
            return Ok(());
        }
        if self.current.is_none() {
            self.current = Some(PackWriter::create(self.repo.staging_dir())?);
        }
        let pack = self.current.as_mut().expect("just created");
        pack.add(kind, id, parts, raw_len)?;
        self.written.insert(prefix(&id));
        self.stats.new_blobs += 1;
        self.stats.raw_bytes += raw_len as u64;
        self.stats.stored_bytes += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        if pack.size() >= self.repo.config.pack_size {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        let Some(pack) = self.current.take() else { return Ok(()) };
        if pack.is_empty() {
            pack.abandon();
            return Ok(());
        }
        let done = pack.finish()?;
        self.repo.storage.put_file(&pack_key(&done.id), &done.path)?;
        tracing::debug!(event = "pack.written", pack = %done.id.short(), bytes = done.size, blobs = done.entries.len());
        self.stats.packs += 1;
        self.index.packs.push(IndexedPack {
            id: done.id,
            size: done.size,
            blobs: done.entries,
        });
        Ok(())
    }

    /// Seal the open pack and write the index for everything added.
    pub fn finish(mut self) -> Result<WriteStats> {
        self.seal()?;
        if !self.index.packs.is_empty() {
            self.repo.write_index(&self.index)?;
        }
        Ok(self.stats)
    }
}

fn prefix(id: &Id) -> u128 {
    u128::from_le_bytes(id.0[..16].try_into().expect("16 bytes"))
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.current.take() {
            p.abandon();
        }
    }
}
