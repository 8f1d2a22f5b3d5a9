//! Which blobs the snapshots reference: every chunk of their files, and for
//! each database the page maps of its chain and every page of the resolved
//! list. `prune` (what may go) and `stats` (what each snapshot costs) walk
//! the same references through [`Walker`].
//!
//! Blobs are named by their position in the index's id order (a `u32`), so
//! callers keep dense per-blob tables instead of sets of ids. A thousand
//! snapshots of a 1 GiB database reference 262,144 pages each, nearly all
//! shared, so the walk is built for that:
//!
//! - Page lists are resolved as positions (4 bytes a page instead of 32) and
//!   kept in a small cache keyed by page map id: walking snapshots oldest
//!   first, each delta map's parent is the map just resolved, so a chain is
//!   read once, not once per snapshot.
//! - An id's position is found through a table of 16-byte id prefixes with a
//!   directory of their leading bits (one slot and one or two prefixes read,
//!   instead of a binary search over the whole index, which was most of the
//!   run).
//! - On an object store the small (delta) maps of the snapshots ahead are
//!   read several at a time.
//!
//! A page an older map of a chain lists but a newer map replaced may be long
//! deleted; only the resolved list must be complete. An id the index lacks
//! is visited as [`MISSING`]; what that means is the caller's to decide.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::index::Index;
use super::manifest::Source;
use super::pagemap::{MAX_DEPTH, PageMap, Pages};
use super::{Repository, SnapshotRef};
use crate::error::{Error, Result};
use crate::id::Id;

/// The position of a blob the index does not have.
pub const MISSING: u32 = u32::MAX;

/// Resolved page lists kept at once, and the pages they may hold together
/// (4 bytes each: 4 Mi pages is 16 MiB, eight 512 MiB databases). Walking
/// oldest first needs one list per database captured side by side.
const CACHE_MAPS: usize = 8;
const CACHE_PAGES: usize = 4 << 20;
/// Page maps read ahead at once (raw bytes), how many, and the largest read
/// ahead (a 1 GiB database's full map is 16 MiB; a delta of a few hundred
/// pages, kilobytes).
const PREFETCH_BYTES: u64 = 16 << 20;
const PREFETCH_MAPS: usize = 256;
const PREFETCH_LARGEST: u32 = 1 << 20;

/// Finds a blob's position in the index's id order.
pub struct BlobPositions {
    /// The first sixteen bytes of each id, in the index's order (which is
    /// the ids' byte order): a blob is recognised by them, as an id the
    /// index lacks shares them with an indexed one once in 2^128.
    heads: Vec<u128>,
    /// `dir[b]`: the first position whose head starts with the `bits`-bit
    /// prefix `b`. Ids are uniform, so with about one prefix per blob a
    /// lookup reads one slot and one or two heads.
    dir: Vec<u32>,
    bits: u32,
    /// Ids whose head another id shares, with their positions.
    clashes: HashMap<Id, u32>,
}

fn head(id: &Id) -> u128 {
    u128::from_be_bytes(id.0[..16].try_into().expect("16 bytes"))
}

impl BlobPositions {
    /// The positions of `index`'s blobs; refuses an index with more blobs than
    /// positions can count.
    pub fn new(index: &Index) -> Result<BlobPositions> {
        let n = index.blob_count();
        if u32::try_from(n).is_err() {
            return Err(Error::damaged("index", "too many blobs to count"));
        }
        let bits = n.next_power_of_two().trailing_zeros().clamp(1, 28);
        let mut t = BlobPositions {
            heads: Vec::with_capacity(n),
            dir: Vec::with_capacity((1 << bits) + 1),
            bits,
            clashes: HashMap::new(),
        };
        let mut prev: Option<&Id> = None;
        for (pos, (id, _)) in index.iter().enumerate() {
            let h = head(id);
            if let Some(p) = prev {
                if head(p) > h {
                    return Err(Error::damaged("index", "not sorted by id"));
                }
                if head(p) == h {
                    t.clashes.insert(*p, pos as u32 - 1);
                    t.clashes.insert(*id, pos as u32);
                }
            }
            prev = Some(id);
            while t.dir.len() as u128 <= t.prefix(h) {
                t.dir.push(pos as u32);
            }
            t.heads.push(h);
        }
        t.dir.resize((1 << bits) + 1, n as u32);
        Ok(t)
    }

    fn prefix(&self, h: u128) -> u128 {
        h >> (128 - self.bits)
    }

    /// The blob's position, or [`MISSING`] when the index does not have it.
    pub fn position(&self, id: &Id) -> u32 {
        let h = head(id);
        let b = self.prefix(h) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        let Ok(i) = self.heads[lo..hi].binary_search(&h) else {
            return MISSING;
        };
        let p = lo + i;
        let clash = |q: usize| self.heads.get(q) == Some(&h);
        if (p > 0 && clash(p - 1)) || clash(p + 1) {
            return self.clashes.get(id).copied().unwrap_or(MISSING);
        }
        p as u32
    }
}

/// A page map resolved to blob positions.
struct Resolved {
    /// Every page, page 1 first.
    pages: Vec<u32>,
    /// The page map blobs of the chain, the full map first.
    maps: Vec<u32>,
}

/// Walks the references of a list of snapshots, oldest first.
pub struct Walker<'r> {
    repo: &'r Repository,
    blobs: BlobPositions,
    /// Most recently used last.
    cache: VecDeque<(Id, Arc<Resolved>)>,
    /// Maps read ahead, taken when resolved.
    fetched: HashMap<Id, Result<PageMap>>,
    /// Snapshots whose maps were read ahead (or need not be).
    fetched_to: usize,
}

impl<'r> Walker<'r> {
    /// For `repo` with its index loaded.
    pub fn new(repo: &'r Repository) -> Result<Walker<'r>> {
        Ok(Walker {
            repo,
            blobs: BlobPositions::new(&repo.index)?,
            cache: VecDeque::new(),
            fetched: HashMap::new(),
            fetched_to: 0,
        })
    }

    /// Call `visit` with the position of every blob `snaps[s]` references
    /// (some more than once). Call it for `s` = 0, 1, 2… in turn: maps of
    /// the snapshots ahead are read together. A page map that cannot be read
    /// (or a chain too long) goes to `unreadable` with its source's name;
    /// the walk goes on if that returns `Ok`.
    pub fn visit(
        &mut self,
        snaps: &[SnapshotRef],
        s: usize,
        visit: &mut dyn FnMut(u32),
        unreadable: &mut dyn FnMut(&str, Error) -> Result<()>,
    ) -> Result<()> {
        if s >= self.fetched_to {
            self.fetched_to = s + self.prefetch(&snaps[s..]);
        }
        for db in snaps[s].manifest.databases() {
            match self.resolve(db.pagemap, 0) {
                Ok(list) => list.maps.iter().chain(&list.pages).for_each(|&p| visit(p)),
                Err(e) => unreadable(&db.name, e)?,
            }
        }
        for src in &snaps[s].manifest.sources {
            match src {
                Source::Sqlite(_) => {}
                Source::Directory(d) => {
                    for c in d.entries.iter().flat_map(|e| &e.chunks) {
                        visit(self.blobs.position(c));
                    }
                }
                Source::File(f) => {
                    for c in &f.entry.chunks {
                        visit(self.blobs.position(c));
                    }
                }
            }
        }
        Ok(())
    }

    /// On an object store each page map is a round trip (a thousand
    /// snapshots took half a minute one by one over loopback), so the
    /// snapshots ahead have their small maps read several at a time, up to
    /// `PREFETCH_BYTES`. Large (full) maps are few and cost bandwidth, not
    /// round trips: they are read when needed, one at a time, since the
    /// HTTP client holds about twice a body while it reads it. Returns how
    /// many snapshots that covers.
    fn prefetch(&mut self, ahead: &[SnapshotRef]) -> usize {
        let transfers = self.repo.transfers();
        if transfers <= 1 {
            return ahead.len();
        }
        let (mut want, mut bytes, mut covered) = (Vec::<Id>::new(), 0u64, 0);
        for snap in ahead {
            let mut add = Vec::new();
            for db in snap.manifest.databases() {
                if let Some(loc) = self.repo.index.get(&db.pagemap)
                    && loc.raw_length <= PREFETCH_LARGEST
                    && !self.cache.iter().any(|(k, _)| *k == db.pagemap)
                    && !want.contains(&db.pagemap)
                    && !add.iter().any(|(id, _)| *id == db.pagemap)
                {
                    add.push((db.pagemap, loc.raw_length as u64));
                }
            }
            let size: u64 = add.iter().map(|(_, n)| n).sum();
            if covered > 0 && (bytes + size > PREFETCH_BYTES || want.len() + add.len() > PREFETCH_MAPS) {
                break;
            }
            want.extend(add.into_iter().map(|(id, _)| id));
            bytes += size;
            covered += 1;
        }
        // Whatever the last batch read and nobody took is not needed.
        self.fetched.clear();
        let fetched = std::sync::Mutex::new(HashMap::new());
        let prefetched = crate::workers::for_each(
            transfers.min(want.len()),
            &want,
            || (),
            |_, id| {
                let map = self.repo.read_pagemap(id, false);
                fetched.lock().expect("prefetch").insert(*id, map);
                Ok::<(), std::convert::Infallible>(())
            },
        );
        let Ok(()) = prefetched;
        self.fetched = fetched.into_inner().expect("prefetch");
        covered
    }

    fn resolve(&mut self, id: Id, depth: u32) -> Result<Arc<Resolved>> {
        if let Some(i) = self.cache.iter().position(|(k, _)| *k == id) {
            let hit = self.cache.remove(i).expect("found above");
            let list = hit.1.clone();
            self.cache.push_back(hit);
            return Ok(list);
        }
        if depth > MAX_DEPTH {
            return Err(Error::damaged(
                format!("page map {}", id.short()),
                "parent chain is too long or cyclic",
            ));
        }
        let map = match self.fetched.remove(&id) {
            Some(map) => map?,
            None => self.repo.read_pagemap(&id, false)?,
        };
        let me = self.blobs.position(&id);
        let list = match map.pages {
            Pages::Full { ids, .. } => Resolved {
                pages: ids.iter().map(|p| self.blobs.position(p)).collect(),
                maps: vec![me],
            },
            Pages::Delta(changes) => {
                let parent = self.resolve(map.parent, depth + 1)?;
                // Sized exactly: a database that grew by one page would
                // otherwise double the list's allocation.
                let n = map.page_count as usize;
                let mut pages = Vec::with_capacity(n);
                pages.extend_from_slice(&parent.pages[..n.min(parent.pages.len())]);
                pages.resize(n, MISSING);
                for c in &changes {
                    pages[c.pgno as usize - 1] = self.blobs.position(&c.id);
                }
                let mut maps = parent.maps.clone();
                maps.push(me);
                Resolved { pages, maps }
            }
        };
        let list = Arc::new(list);
        self.cache.push_back((id, list.clone()));
        let held = |c: &VecDeque<(Id, Arc<Resolved>)>| c.iter().map(|(_, p)| p.pages.len()).sum::<usize>();
        while self.cache.len() > 1 && (self.cache.len() > CACHE_MAPS || held(&self.cache) > CACHE_PAGES) {
            self.cache.pop_front();
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::index::{IndexFile, IndexedPack};
    use crate::repo::pack::{BlobEntry, BlobType};

    fn entry(id: Id, offset: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobType::Page,
            id,
            offset,
            length: 10,
            blob_offset: 0,
            raw_length: 5,
        }
    }

    fn index_of(ids: &[Id]) -> Index {
        let mut index = Index::default();
        index.add_file(&IndexFile {
            packs: vec![IndexedPack {
                id: Id::of(b"pack"),
                size: 10 * ids.len() as u64,
                blobs: ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| entry(*id, 10 * i as u32))
                    .collect(),
            }],
        });
        index.seal();
        index
    }

    #[test]
    fn positions_follow_the_index_order() {
        let ids: Vec<Id> = (0..200u8).map(|i| Id::of(&[i])).collect();
        let index = index_of(&ids);
        let t = BlobPositions::new(&index).unwrap();
        assert_eq!(t.position(&Id::of(b"absent")), MISSING);
        for (pos, (id, _)) in index.iter().enumerate() {
            assert_eq!(t.position(id), pos as u32);
        }
    }

    #[test]
    fn ids_sharing_a_head_are_told_apart() {
        let mut a = Id::of(b"a");
        let mut b = a;
        b.0[31] ^= 1;
        let mut c = a;
        c.0[20] ^= 1;
        a.0[0] = 0x80;
        b.0[0] = 0x80;
        c.0[0] = 0x80;
        let index = index_of(&[a, b]);
        let t = BlobPositions::new(&index).unwrap();
        let (pa, pb) = (t.position(&a), t.position(&b));
        assert_ne!(pa, pb);
        assert_eq!(pa.min(pb), 0);
        assert_eq!(pa.max(pb), 1);
        assert_eq!(t.position(&c), MISSING, "same head, not indexed");
    }
}
