//! Index files map every blob to its pack, offset and length, so restore reads
//! exactly the bytes it needs and never scans packs.
//!
//! File layout (after the envelope; docs/FORMAT.md, "Index file"):
//! `"LBIX" version:u8 pack_count:u32le` then per pack
//! `pack_id[32] pack_size:u64le blob_count:u32le entry*` with each entry as in
//! the pack header.

use std::collections::HashMap;

use super::pack::{BlobEntry, BlobType, ENTRY_LEN, newer_blob_type};
use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"LBIX";
const VERSION: u8 = 1;

/// One pack as an index file describes it.
#[derive(Debug, Clone)]
pub struct IndexedPack {
    /// The pack id.
    pub id: Id,
    /// The pack file's size.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<BlobEntry>,
}

/// The contents of one `index/<id>` object.
#[derive(Debug, Clone, Default)]
pub struct IndexFile {
    /// The packs it lists.
    pub packs: Vec<IndexedPack>,
}

impl IndexFile {
    /// The index file as stored, before the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(9 + self.packs.len() * 44 + blobs * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                b.write_to(&mut out);
            }
        }
        out
    }

    /// Parse an index file; `what` names it in errors.
    pub fn from_bytes(b: &[u8], what: &str) -> Result<IndexFile> {
        let bad = |m: &str| Error::damaged(what, format!("index: {m}"));
        if b.len() < 9 || &b[..4] != MAGIC {
            return Err(bad("missing LBIX magic"));
        }
        if b[4] != VERSION {
            return Err(Error::config(what, format!("index version {} is not supported", b[4])).fix("upgrade Lifeboat"));
        }
        let count = u32::from_le_bytes(b[5..9].try_into().unwrap()) as usize;
        let mut pos = 9;
        let mut packs = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            if b.len() < pos + 44 {
                return Err(bad("truncated pack record"));
            }
            let id = Id(b[pos..pos + 32].try_into().unwrap());
            let size = u64::from_le_bytes(b[pos + 32..pos + 40].try_into().unwrap());
            let n = u32::from_le_bytes(b[pos + 40..pos + 44].try_into().unwrap()) as usize;
            pos += 44;
            let end = pos
                .checked_add(n * ENTRY_LEN)
                .filter(|&e| e <= b.len())
                .ok_or_else(|| bad("truncated blob list"))?;
            let blobs = b[pos..end]
                .chunks_exact(ENTRY_LEN)
                .map(|c| BlobEntry::read_from(c).ok_or_else(|| newer_blob_type(what, c[0])))
                .collect::<Result<Vec<_>>>()?;
            pos = end;
            packs.push(IndexedPack { id, size, blobs });
        }
        if pos != b.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(IndexFile { packs })
    }
}

/// Where a blob can be read from: its frame in a pack, and its range in the
/// decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack, as a position in [`Index::packs`].
    pub pack: u32,
    /// The blob's type as first stored.
    pub kind: BlobType,
    /// Offset of the frame in the pack.
    pub offset: u32,
    /// Stored length of the frame.
    pub length: u32,
    /// Offset of the blob in the decoded frame.
    pub blob_offset: u32,
    /// Length of the blob.
    pub raw_length: u32,
}

/// Every blob in the repository, as one id-sorted vector: 56 bytes a blob, so
/// a 1 GiB database's 262,144 pages cost 14.7 MiB, with no hash-table slack.
///
/// Packs that a prune marked for deletion (repo/mark.rs) are held too, so a
/// snapshot that still needs them reads them, but flagged: writers never
/// reuse their blobs ([`Index::get_live`]).
#[derive(Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    marked: Vec<bool>,
    pack_pos: HashMap<Id, u32>,
    blobs: Vec<(Id, Location)>,
    /// `buckets[k]..buckets[k + 1]` is where ids whose leading
    /// `bucket_bits` bits are `k` sit in `blobs`. Ids are BLAKE3 hashes, so
    /// about two land in each bucket: a lookup touches one or two cache
    /// lines instead of the eighteen of a binary search over 262,144 blobs,
    /// which made checking a 1 GiB parent snapshot's pages cost 0.25 s.
    buckets: Vec<u32>,
    bucket_bits: u32,
    sorted: bool,
}

impl Index {
    /// Add one index file's entries; call [`Index::seal`] after the last.
    pub fn add_file(&mut self, file: &IndexFile) {
        self.add(file, false);
    }

    /// Add the packs of a mark. A pack an index file also lists (indexed
    /// again after it was marked) stays live.
    pub fn add_marked(&mut self, file: &IndexFile) {
        self.add(file, true);
    }

    fn add(&mut self, file: &IndexFile, marked: bool) {
        for p in &file.packs {
            let pack = self.add_pack(p.id, p.size, marked);
            self.blobs.extend(p.blobs.iter().map(|b| {
                (
                    b.id,
                    Location {
                        pack,
                        kind: b.kind,
                        offset: b.offset,
                        length: b.length,
                        blob_offset: b.blob_offset,
                        raw_length: b.raw_length,
                    },
                )
            }));
        }
        self.sorted = false;
    }

    /// Sort for lookups; a blob stored twice keeps its first location in a
    /// live pack, else its first in a marked one.
    pub fn seal(&mut self) {
        let marked = &self.marked;
        // Pack numbers follow insertion order, so with them in the key an
        // unstable sort orders exactly as a stable one.
        let key = |a: &(Id, Location)| (a.0, marked[a.1.pack as usize], a.1.pack, a.1.offset, a.1.blob_offset);
        // Ids are uniform hashes: partitioned into the lookup buckets first,
        // ~2 blobs a bucket are left to sort. Linear, where a comparison
        // sort of a 1 GiB database's 262,144 blobs took 40 ms of every
        // command's start; in place, because a scattered copy of the blobs
        // (56 bytes each) cost the incremental snapshot 14 MiB of peak RSS.
        let bits = Self::bits_for(self.blobs.len());
        let starts = Self::bucket_starts(&self.blobs, bits);
        let buckets = starts.len() - 1;
        if buckets < 2 || self.blobs.len() < 64 * 1024 {
            Self::place_and_sort(&mut self.blobs, &starts, 0, bits, key);
        } else {
            // Halves by the leading bit, split with two cursors walking
            // inwards (sequential, unlike the swaps within a half), then
            // each half on its own thread: this runs before any snapshot
            // worker has work.
            let half = buckets / 2;
            let (mut lo, mut hi) = (0, self.blobs.len());
            while lo < hi {
                if (Self::bucket_of(&self.blobs[lo].0, bits) as usize) < half {
                    lo += 1;
                } else if Self::bucket_of(&self.blobs[hi - 1].0, bits) as usize >= half {
                    hi -= 1;
                } else {
                    self.blobs.swap(lo, hi - 1);
                }
            }
            let (left, right) = self.blobs.split_at_mut(starts[half] as usize);
            std::thread::scope(|scope| {
                scope.spawn(|| Self::place_and_sort(right, &starts[half..], half, bits, key));
                Self::place_and_sort(left, &starts[..=half], 0, bits, key);
            });
        }
        self.blobs.dedup_by(|a, b| a.0 == b.0);
        self.blobs.shrink_to_fit();
        // Duplicates gone, the count may call for fewer buckets.
        self.bucket_bits = Self::bits_for(self.blobs.len());
        self.buckets = Self::bucket_starts(&self.blobs, self.bucket_bits);
        self.sorted = true;
    }

    /// Put each of `blobs` into its bucket and sort every bucket by `key`.
    /// `starts` are the starts (absolute, as from `bucket_starts`) of a run
    /// of consecutive buckets from `first_bucket`, then the run's end;
    /// `blobs` holds exactly that run's blobs, in any order.
    fn place_and_sort<K: Ord>(
        blobs: &mut [(Id, Location)],
        starts: &[u32],
        first_bucket: usize,
        bits: u32,
        key: impl Fn(&(Id, Location)) -> K,
    ) {
        let base = starts[0] as usize;
        let mut next: Vec<usize> = starts.iter().map(|&s| s as usize - base).collect();
        for bucket in 0..starts.len() - 1 {
            let end = starts[bucket + 1] as usize - base;
            // Swap each misplaced blob straight to its own bucket's next
            // free slot; every swap settles one blob for good.
            while next[bucket] < end {
                let here = next[bucket];
                let home = Self::bucket_of(&blobs[here].0, bits) as usize - first_bucket;
                if home == bucket {
                    next[bucket] += 1;
                } else {
                    blobs.swap(here, next[home]);
                    next[home] += 1;
                }
            }
        }
        for w in starts.windows(2) {
            blobs[w[0] as usize - base..w[1] as usize - base].sort_unstable_by_key(&key);
        }
    }

    /// Lookup buckets for `n` blobs: ~2 blobs a bucket, 4 bytes each, so 2
    /// bytes a blob beside its 56.
    fn bits_for(n: usize) -> u32 {
        (n / 2).max(1).ilog2().min(24)
    }

    /// Where each bucket starts once `blobs` are in bucket order (they need
    /// not be yet), then `blobs.len()`: a count per bucket, summed.
    fn bucket_starts(blobs: &[(Id, Location)], bits: u32) -> Vec<u32> {
        let mut starts = vec![0u32; (1 << bits) + 1];
        for (id, _) in blobs {
            starts[Self::bucket_of(id, bits) as usize + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        starts
    }

    fn bucket_of(id: &Id, bits: u32) -> u64 {
        let lead = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        u64::from(lead) >> (32 - bits)
    }

    fn add_pack(&mut self, id: Id, size: u64, marked: bool) -> u32 {
        if let Some(&p) = self.pack_pos.get(&id) {
            self.marked[p as usize] &= marked;
            return p;
        }
        let p = self.packs.len() as u32;
        self.packs.push((id, size));
        self.marked.push(marked);
        self.pack_pos.insert(id, p);
        p
    }

    /// Where blob `id` can be read, marked packs included.
    pub fn get(&self, id: &Id) -> Option<Location> {
        debug_assert!(self.sorted || self.blobs.is_empty(), "index used before seal()");
        if self.buckets.is_empty() {
            return None;
        }
        self.find(self.bucket_range(id), id)
    }

    /// Where `id` would sit in `blobs`: its bucket (index sealed, not empty).
    fn bucket_range(&self, id: &Id) -> (u32, u32) {
        let k = Self::bucket_of(id, self.bucket_bits) as usize;
        (self.buckets[k], self.buckets[k + 1])
    }

    fn find(&self, (start, end): (u32, u32), id: &Id) -> Option<Location> {
        let range = &self.blobs[start as usize..end as usize];
        range.binary_search_by(|(k, _)| k.cmp(id)).ok().map(|i| range[i].1)
    }

    /// Where a writer may reuse `id` from: only a pack no prune has marked.
    pub fn get_live(&self, id: &Id) -> Option<Location> {
        self.get(id).filter(|l| !self.marked[l.pack as usize])
    }

    /// Whether every one of `ids` has a live copy ([`Index::get_live`]).
    /// Looked up in groups, each step done for the whole group before the
    /// next, so the group's cache misses (a bucket, then its blobs) overlap
    /// instead of following one another: a 1 GiB parent's 262,144 pages are
    /// checked before any snapshot worker starts.
    pub fn all_live(&self, ids: &[Id]) -> bool {
        const GROUP: usize = 16;
        if self.buckets.is_empty() {
            return ids.is_empty();
        }
        for group in ids.chunks(GROUP) {
            let mut ranges = [(0u32, 0u32); GROUP];
            for (range, id) in ranges.iter_mut().zip(group) {
                *range = self.bucket_range(id);
            }
            let mut first = [false; GROUP];
            for ((hit, &(start, end)), id) in first.iter_mut().zip(&ranges).zip(group) {
                // Most buckets hold one or two blobs: the first is the likely
                // answer and is the load worth starting early.
                *hit = start < end && self.blobs[start as usize].0 == *id;
            }
            for ((hit, &range), id) in first.iter().zip(&ranges).zip(group) {
                let found = if *hit {
                    Some(self.blobs[range.0 as usize].1)
                } else {
                    self.find(range, id)
                };
                if found.is_none_or(|l| self.marked[l.pack as usize]) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether blob `id` can be read, marked packs included.
    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// Treat a pack as marked from now on (its blobs are about to be copied
    /// elsewhere, so they must not count as stored).
    pub fn set_marked(&mut self, pack: u32) {
        self.marked[pack as usize] = true;
    }

    /// Whether a prune marked pack `pack` (readable, never reused).
    pub fn is_marked(&self, pack: u32) -> bool {
        self.marked[pack as usize]
    }

    /// The blob at a position in [`Index::iter`] order (what
    /// `references::BlobPositions` gives).
    pub fn at(&self, position: usize) -> (&Id, &Location) {
        let (id, loc) = &self.blobs[position];
        (id, loc)
    }

    /// The position of pack `id` in [`Index::packs`].
    pub fn pack_position(&self, id: &Id) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }

    /// The id and size of the pack at position `pack`.
    pub fn pack(&self, pack: u32) -> (Id, u64) {
        self.packs[pack as usize]
    }

    /// Every pack, with its size.
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    /// How many blobs it holds.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Every blob and where it is, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Location)> {
        self.blobs.iter().map(|(id, loc)| (id, loc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, offset: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobType::Page,
            id: Id::of(&[i]),
            offset,
            length: 10,
            blob_offset: 0,
            raw_length: 4096,
        }
    }

    #[test]
    fn file_round_trip_and_lookup() {
        let f = IndexFile {
            packs: vec![
                IndexedPack {
                    id: Id::of(b"p1"),
                    size: 100,
                    blobs: vec![entry(1, 0), entry(2, 10)],
                },
                IndexedPack {
                    id: Id::of(b"p2"),
                    size: 50,
                    blobs: vec![entry(3, 0), entry(1, 20)],
                },
            ],
        };
        let bytes = f.to_bytes();
        let back = IndexFile::from_bytes(&bytes, "i").unwrap();
        assert_eq!(back.packs.len(), 2);
        assert_eq!(back.packs[1].blobs, f.packs[1].blobs);
        assert!(IndexFile::from_bytes(&bytes[..bytes.len() - 1], "i").is_err());

        let mut idx = Index::default();
        idx.add_file(&back);
        idx.seal();
        assert_eq!(idx.blob_count(), 3, "a blob in two packs is indexed once");
        let l = idx.get(&Id::of(&[2])).unwrap();
        assert_eq!((idx.pack(l.pack).0, l.offset), (Id::of(b"p1"), 10));
        assert!(idx.get(&Id::of(&[9])).is_none());
    }

    #[test]
    fn lookup_finds_every_blob_and_nothing_else_at_any_size() {
        for n in [0usize, 1, 2, 3, 7, 100, 5000, 200_000] {
            let mut ids: Vec<Id> = (0..n as u32).map(|i| Id::of(&i.to_le_bytes())).collect();
            // The first and last buckets' edges.
            if n > 2 {
                ids[0] = Id([0; 32]);
                ids[1] = Id([0xff; 32]);
            }
            let file = IndexFile {
                packs: vec![IndexedPack {
                    id: Id::of(b"p"),
                    size: 1,
                    blobs: ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| BlobEntry {
                            id: *id,
                            offset: i as u32,
                            ..entry(0, 0)
                        })
                        .collect(),
                }],
            };
            let mut idx = Index::default();
            idx.add_file(&file);
            idx.seal();
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(idx.get(id).map(|l| l.offset), Some(i as u32), "n={n} blob {i}");
            }
            assert!(idx.all_live(&ids), "n={n}");
            // One missing id anywhere in a group fails the whole check.
            for at in [0, n / 2, n] {
                let mut with_missing = ids.clone();
                with_missing.insert(at, Id::of(b"never stored"));
                assert!(!idx.all_live(&with_missing), "n={n} missing at {at}");
            }
            // A blob stored twice resolves to its first copy in a live pack.
            if n > 3 {
                let again = |pack: &[u8], offset: u32| IndexFile {
                    packs: vec![IndexedPack {
                        id: Id::of(pack),
                        size: 1,
                        blobs: vec![BlobEntry {
                            id: ids[3],
                            offset,
                            ..entry(0, 0)
                        }],
                    }],
                };
                let mut idx = Index::default();
                idx.add_marked(&again(b"marked", 7));
                idx.add_file(&file);
                idx.add_file(&again(b"later", 9));
                idx.seal();
                assert_eq!(idx.get(&ids[3]).map(|l| l.offset), Some(3), "n={n}");
                assert_eq!(idx.blob_count(), n, "n={n}");
                let mut idx = Index::default();
                idx.add_marked(&again(b"marked", 7));
                idx.seal();
                assert_eq!(idx.get_live(&ids[3]), None, "n={n}: only in a marked pack");
                assert!(!idx.all_live(&[ids[3]]), "n={n}: only in a marked pack");
                assert_eq!(idx.get(&ids[3]).map(|l| l.offset), Some(7), "n={n}");
            }
            for i in 0..200u32 {
                assert!(idx.get(&Id::of(&(1_000_000 + i).to_le_bytes())).is_none(), "n={n}");
            }
        }
    }
}
