//! Accumulates new blobs into packs, and packs into index files.
//! Order of durability: sealed packs wait in the staging directory with
//! writeback started; every `INDEX_EVERY` blobs (and at `finish`) they are
//! fsynced and renamed into place, and only then is the index file naming
//! them written. The caller writes the manifest only after `finish` returns.
//! Publishing in groups keeps fsync off the capture pipeline's critical path
//! and bounds the entries held in memory; the index files written along the
//! way let a later run reuse the packs of an interrupted one.

use std::collections::HashSet;

use super::Repository;
use super::index::{IndexFile, IndexedPack};
use super::pack::{BlobType, FinishedPack, Member, PackWriter, pack_key};
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
    /// Sealed packs not yet published.
    sealed: Vec<FinishedPack>,
    sealed_blobs: usize,
    pub stats: WriteStats,
}

/// Blobs per index file: bounds memory (~3.4 MiB of entries) and how much an
/// interrupted run leaves unindexed.
const INDEX_EVERY: usize = 65536;

impl<'r> BlobWriter<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        BlobWriter {
            repo,
            current: None,
            written: HashSet::new(),
            sealed: Vec::new(),
            sealed_blobs: 0,
            stats: WriteStats::default(),
        }
    }

    /// Whether the repository or this run already stores `id`.
    pub fn has(&self, id: &Id) -> bool {
        self.repo.has_blob(id) || self.written.contains(&prefix(id))
    }

    /// Add one enveloped blob as its own frame, unless it is already stored.
    pub fn add(&mut self, kind: BlobType, id: Id, encoded: &[u8], raw_len: usize) -> Result<()> {
        let member = Member {
            kind,
            id,
            blob_offset: 0,
            raw_length: raw_len as u32,
        };
        self.add_frame(&[encoded], &[member])
    }

    /// Add one blob of `raw_len` bytes, raw, written by `fill` straight into
    /// the pack (for large page maps, which are never held twice).
    pub fn add_raw_streamed(
        &mut self,
        kind: BlobType,
        id: Id,
        raw_len: usize,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        if self.has(&id) {
            return Ok(());
        }
        let member = Member {
            kind,
            id,
            blob_offset: 0,
            raw_length: raw_len as u32,
        };
        self.open_pack()?.add_streamed(&[member], &mut |w| {
            w.write_all(&[crate::codec::TAG_RAW])?;
            fill(w)
        })?;
        self.wrote(&[member], raw_len as u64 + 1)
    }

    /// Add a frame (its envelope given as `parts`) holding `members`. Members
    /// already stored are not indexed again; a frame with no new member is
    /// not written at all.
    pub fn add_frame(&mut self, parts: &[&[u8]], members: &[Member]) -> Result<()> {
        // Within the frame too: a page repeated in one batch (zeroed pages,
        // say) is indexed once.
        let mut fresh: Vec<Member> = Vec::with_capacity(members.len());
        for m in members {
            if !self.has(&m.id) && !fresh.iter().any(|f| f.id == m.id) {
                fresh.push(*m);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.open_pack()?.add(parts, &fresh)?;
        self.wrote(&fresh, parts.iter().map(|p| p.len() as u64).sum())
    }

    /// The pack being filled, started if there is none.
    fn open_pack(&mut self) -> Result<&mut PackWriter> {
        if self.current.is_none() {
            self.current = Some(PackWriter::create(self.repo.staging_dir())?);
        }
        Ok(self.current.as_mut().expect("just created"))
    }

    /// Account for a frame of `members` taking `stored` bytes, and seal the
    /// pack once it is full.
    fn wrote(&mut self, members: &[Member], stored: u64) -> Result<()> {
        for m in members {
            self.written.insert(prefix(&m.id));
            self.stats.raw_bytes += m.raw_length as u64;
        }
        self.stats.new_blobs += members.len() as u64;
        self.stats.stored_bytes += stored;
        if self
            .current
            .as_ref()
            .is_some_and(|p| p.size() >= self.repo.config.pack_size)
        {
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
        self.stats.packs += 1;
        self.sealed_blobs += done.entries.len();
        self.sealed.push(done);
        if self.sealed_blobs >= INDEX_EVERY {
            self.publish()?;
        }
        Ok(())
    }

    /// Make sealed packs durable and visible, then index them.
    fn publish(&mut self) -> Result<()> {
        if self.sealed.is_empty() {
            return Ok(());
        }
        let mut index = IndexFile::default();
        for done in self.sealed.drain(..) {
            self.repo.storage.put_file(&pack_key(&done.id), &done.path)?;
            tracing::debug!(event = "pack.written", pack = %done.id.short(), bytes = done.size, blobs = done.entries.len());
            index.packs.push(IndexedPack {
                id: done.id,
                size: done.size,
                blobs: done.entries,
            });
        }
        self.sealed_blobs = 0;
        self.repo.write_index(&index)?;
        Ok(())
    }

    /// Expect about `n` more blobs, so the set of written ids is sized once
    /// instead of doubling (and briefly holding both tables) as it grows.
    pub fn reserve(&mut self, n: usize) {
        self.written.reserve(n);
    }

    /// Seal the open pack, publish every pack and index them.
    pub fn finish(mut self) -> Result<WriteStats> {
        self.seal()?;
        self.publish()?;
        Ok(self.stats)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.current.take() {
            p.abandon();
        }
        for done in self.sealed.drain(..) {
            let _ = std::fs::remove_file(&done.path);
        }
    }
}

fn prefix(id: &Id) -> u128 {
    u128::from_le_bytes(id.0[..16].try_into().expect("16 bytes"))
}
