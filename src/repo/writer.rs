//! Accumulates new blobs into packs, and packs into index files.
//! Order of durability: a sealed pack is handed at once to background
//! transfer threads (`Storage::transfers` of them), which make it durable in
//! the store (fsync and rename locally; upload and confirm remotely) while
//! capture goes on. Every `INDEX_EVERY` blobs (and at `finish`) the writer
//! waits for those transfers and only then writes the index file naming the
//! packs. The caller writes the manifest only after `finish` returns.
//!
//! Before a pack is handed over, its index entries are saved beside it in the
//! staging directory (`<pack>.pending`): if the process dies after the pack
//! reached the store but before its index did, the next writer on this host
//! indexes it (`Repository::recover_interrupted`) instead of uploading the
//! same data again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::LockedRepository;
use super::index::{IndexFile, IndexedPack};
use super::keys;
use super::pack::{BlobType, FinishedPack, Member, PackWriter};
use crate::error::{IoContext, Result};
use crate::id::Id;
use crate::storage::Store;

#[derive(Debug, Default, Clone, Copy)]
/// What a `BlobWriter` stored.
pub struct WriteStats {
    /// Blobs stored that the repository did not have.
    pub new_blobs: u64,
    /// Their size before compression.
    pub raw_bytes: u64,
    /// Their size as stored.
    pub stored_bytes: u64,
    /// Packs sealed.
    pub packs: u64,
}

/// Stores new blobs in packs and publishes them in index files (see the module
/// comment).
pub struct BlobWriter<'r> {
    repo: &'r LockedRepository,
    current: Option<PackWriter>,
    /// 128-bit id prefixes stored by this run: half the memory of full ids,
    /// and a false match needs a 2^-128 coincidence.
    written: HashSet<u128>,
    /// Sealed packs not yet published.
    sealed: Vec<FinishedPack>,
    sealed_blobs: usize,
    transfers: Transfers,
    /// What it stored so far.
    pub stats: WriteStats,
}

/// File extension of the saved index entries of a pack in flight.
pub const PENDING_EXT: &str = "pending";

/// Blobs per index file: bounds memory (~3.4 MiB of entries) and how much an
/// interrupted run leaves unindexed.
const INDEX_EVERY: usize = 65536;

impl<'r> BlobWriter<'r> {
    /// A writer into `repo`, staging packs in its staging directory; transfers
    /// start with the first sealed pack.
    pub fn new(repo: &'r LockedRepository) -> Self {
        BlobWriter {
            repo,
            current: None,
            written: HashSet::new(),
            sealed: Vec::new(),
            sealed_blobs: 0,
            transfers: Transfers::new(repo.storage.clone()),
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
        let pending = IndexFile {
            packs: vec![IndexedPack {
                id: done.id,
                size: done.size,
                blobs: done.entries.clone(),
            }],
        };
        let pending_path = pending_path(&done.path);
        crate::fsutil::create_private_file(&pending_path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &pending.to_bytes()))
            .at(&pending_path)?;
        self.transfers.submit(keys::pack(&done.id), done.path.clone())?;
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
        self.transfers.wait_all()?;
        let mut index = IndexFile::default();
        let mut pendings = Vec::new();
        for done in self.sealed.drain(..) {
            tracing::debug!(event = "pack.written", pack = %done.id.short(), bytes = done.size, blobs = done.entries.len());
            pendings.push(pending_path(&done.path));
            index.packs.push(IndexedPack {
                id: done.id,
                size: done.size,
                blobs: done.entries,
            });
        }
        self.sealed_blobs = 0;
        self.repo.write_index(&index)?;
        for p in pendings {
            let _ = std::fs::remove_file(p);
        }
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
        // Transfers still running finish (or fail) before the files go.
        self.transfers.shut_down();
        for done in self.sealed.drain(..) {
            // A pack still staged never reached the store; one that did
            // keeps its `.pending` entries so the next writer indexes it.
            if done.path.exists() {
                let _ = std::fs::remove_file(&done.path);
                let _ = std::fs::remove_file(pending_path(&done.path));
            }
        }
    }
}

fn pending_path(pack: &std::path::Path) -> PathBuf {
    pack.with_extension(PENDING_EXT)
}

/// Background threads moving sealed packs into the store, started on first
/// use. At most `2 × transfers` packs wait in staging at once.
struct Transfers {
    storage: Store,
    tx: Option<SyncSender<(String, PathBuf)>>,
    done: Option<Receiver<Result<()>>>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl Transfers {
    fn new(storage: Store) -> Transfers {
        Transfers {
            storage,
            tx: None,
            done: None,
            workers: Vec::new(),
            in_flight: 0,
        }
    }

    fn submit(&mut self, key: String, path: PathBuf) -> Result<()> {
        // Fail fast: a transfer that already failed ends the run now.
        while let Some(result) = self.done.as_ref().and_then(|d| d.try_recv().ok()) {
            self.in_flight -= 1;
            result?;
        }
        if self.tx.is_none() {
            let n = self.storage.transfers().max(1);
            let (tx, rx) = sync_channel::<(String, PathBuf)>(n);
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for _ in 0..n {
                let (rx, done_tx, storage) = (rx.clone(), done_tx.clone(), self.storage.clone());
                self.workers.push(std::thread::spawn(move || {
                    loop {
                        let job = rx.lock().expect("transfer queue").recv();
                        let Ok((key, path)) = job else { return };
                        if done_tx.send(storage.put_file(&key, &path)).is_err() {
                            return;
                        }
                    }
                }));
            }
            self.tx = Some(tx);
            self.done = Some(done_rx);
        }
        self.in_flight += 1;
        self.tx
            .as_ref()
            .expect("started")
            .send((key, path))
            .expect("transfer threads live");
        Ok(())
    }

    /// Wait for every submitted transfer; the first failure is returned.
    fn wait_all(&mut self) -> Result<()> {
        let mut first = None;
        while self.in_flight > 0 {
            let result = self
                .done
                .as_ref()
                .expect("started")
                .recv()
                .expect("transfer threads live");
            self.in_flight -= 1;
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn shut_down(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn prefix(id: &Id) -> u128 {
    u128::from_le_bytes(id.0[..16].try_into().expect("16 bytes"))
}
