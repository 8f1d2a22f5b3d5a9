//! WAL segments: the commits of one replicated database between two points,
//! `wal/<stream>/<first_txid>-<last_txid>` (docs/FORMAT.md, "WAL segment").
//! A segment holds, for every commit in order, its transaction id, wall-clock
//! time, database size and the page images it wrote, so a restore can stop
//! after any one of them. Compacted segments keep fewer, coarser points.
//!
//! Segments are named by position, not content: the replicator that owns a
//! stream is the only writer of its keys, and writes a given key only with
//! the same bytes (it uploads from its spool, never re-reads).
//!
//! Decoded layout (little-endian), inside a zstd envelope:
//! `"LBSG" version:u8 flags:u8 reserved:u16 page_size:u32 commits:u32
//!  pages:u32 first_txid:u64 last_txid:u64 wal_end:[u32;5]`
//! then `commits` × `(txid:u64 time_ns:i64 db_pages:u32 pages:u32)`,
//! `pages` × `pgno:u32`, `pages` × page image, and a BLAKE3 of all of it.

use crate::codec::{self, Encoder};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"LBSG";
/// Version 2 added each commit's `not_before_ns`; version 1 is still read.
const VERSION: u8 = 2;
/// Flag bit 0: commits were merged; each entry is the last commit of a span.
const FLAG_COMPACTED: u8 = 1;
/// Flag bit 1: an image of a page that appeared earlier in the segment is
/// stored XORed with that earlier image. Consecutive versions of a hot page
/// differ in a few bytes, so the stored image is nearly all zeros and
/// compresses at memory speed.
const FLAG_XOR: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 4 + 4 + 8 + 8 + 20;
const COMMIT_LEN: usize = 8 + 8 + 8 + 4 + 4;
const COMMIT_LEN_V1: usize = 8 + 8 + 4 + 4;

/// One commit (or, compacted, the last commit of a merged span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCommit {
    /// Transaction id of the commit.
    pub txid: u64,
    /// Wall-clock time the replicator saw the commit, ns since the epoch:
    /// the commit was made at or before it.
    pub time_ns: i64,
    /// And after this: when the replicator last looked at the log without
    /// finding it. A few milliseconds before `time_ns` while it watches; as
    /// far back as its previous run for commits made while it was not
    /// running (or before a SIGKILL, not yet shipped). A restore refuses a
    /// time inside a wide interval rather than guess which side it lies on.
    pub not_before_ns: i64,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    /// How many page images follow for it.
    pub pages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A WAL segment: consecutive commits of one replicated database's stream, with
/// their page images.
pub struct Segment {
    /// Page size of the database.
    pub page_size: u32,
    /// Whether commits were merged (each listing the last of its span), keeping
    /// only the last image of a page.
    pub compacted: bool,
    /// The first transaction it holds.
    pub first_txid: u64,
    /// The last transaction it holds.
    pub last_txid: u64,
    /// Where the replicator's WAL reading stood after `last_txid`: salt-1,
    /// salt-2, frame, checksum-1, checksum-2; all zero when not known. Lets a
    /// replicator that lost its local state resume without a new base.
    pub wal_end: [u32; 5],
    /// The commits, in order.
    pub commits: Vec<SegmentCommit>,
    /// Page number of every image, commit by commit.
    pub pgnos: Vec<u32>,
    /// Page images back to back.
    pub data: Vec<u8>,
}

impl Segment {
    /// Byte offset of the `i`-th page image in `data`.
    pub fn image(&self, i: usize) -> &[u8] {
        let ps = self.page_size as usize;
        &self.data[i * ps..(i + 1) * ps]
    }

    /// The segment as stored, compressed at `level`.
    pub fn encode(&self, level: i32) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_with(&mut Encoder::new(level), &mut Vec::new(), &mut out);
        out
    }

    /// [`Segment::encode`] into `out` (replacing what it held), with `b`
    /// for the uncompressed body. A replicator keeps all three from one
    /// segment to the next: at a busy service's pace (a segment every
    /// ~40 ms) fresh 8 MiB buffers and compression contexts cost it more
    /// in page faults than the XOR chain costs.
    pub fn encode_with(&self, enc: &mut Encoder, b: &mut Vec<u8>, out: &mut Vec<u8>) {
        b.clear();
        b.reserve(HEADER_LEN + self.commits.len() * COMMIT_LEN + self.data.len() + 64);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(FLAG_XOR | if self.compacted { FLAG_COMPACTED } else { 0 });
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.page_size.to_le_bytes());
        b.extend_from_slice(&(self.commits.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.pgnos.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.first_txid.to_le_bytes());
        b.extend_from_slice(&self.last_txid.to_le_bytes());
        for w in self.wal_end {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for c in &self.commits {
            b.extend_from_slice(&c.txid.to_le_bytes());
            b.extend_from_slice(&c.time_ns.to_le_bytes());
            b.extend_from_slice(&c.not_before_ns.to_le_bytes());
            b.extend_from_slice(&c.db_pages.to_le_bytes());
            b.extend_from_slice(&c.pages.to_le_bytes());
        }
        for p in &self.pgnos {
            b.extend_from_slice(&p.to_le_bytes());
        }
        xor_deltas_into(b, &self.data, &self.pgnos, self.page_size as usize);
        let hash = blake3::hash(b);
        b.extend_from_slice(hash.as_bytes());
        out.clear();
        enc.encode_into(b, out);
    }

    /// Decode and check everything a restore relies on: the hash, the
    /// commit order, page numbers within each commit's database size.
    pub fn decode(raw: &[u8], what: &str) -> Result<Segment> {
        let b = codec::decode(raw, what)?;
        let bad = |m: &str| Error::damaged(what, format!("WAL segment: {m}"));
        if b.len() < HEADER_LEN + 32 {
            return Err(bad("too short"));
        }
        let (body, hash) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != hash {
            return Err(bad("checksum mismatch (damaged)"));
        }
        if &body[..4] != MAGIC {
            return Err(bad("wrong magic"));
        }
        if !(1..=VERSION).contains(&body[4]) || body[5] & !(FLAG_COMPACTED | FLAG_XOR) != 0 {
            return Err(
                Error::config(what, format!("WAL segment version {} flags {:#x}", body[4], body[5]))
                    .fix("this segment was written by a newer Lifeboat; upgrade to read it"),
            );
        }
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        let page_size = u32_at(8);
        let n = u32_at(12) as usize;
        let m = u32_at(16) as usize;
        let (first_txid, last_txid) = (u64_at(20), u64_at(28));
        let mut wal_end = [0u32; 5];
        for (i, w) in wal_end.iter_mut().enumerate() {
            *w = u32_at(36 + 4 * i);
        }
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            return Err(bad("bad page size"));
        }
        let commit_len = if body[4] == 1 { COMMIT_LEN_V1 } else { COMMIT_LEN };
        let want = HEADER_LEN as u64 + n as u64 * commit_len as u64 + m as u64 * (4 + page_size as u64);
        if body.len() as u64 != want {
            return Err(bad("length does not match its counts"));
        }
        let mut at = HEADER_LEN;
        let mut commits = Vec::with_capacity(n);
        let mut total = 0u64;
        let mut prev: Option<u64> = None;
        for _ in 0..n {
            let i64_at = |o: usize| i64::from_le_bytes(body[o..o + 8].try_into().unwrap());
            let time_ns = i64_at(at + 8);
            // Version 1 stamped each commit with the time it was seen only.
            let (not_before_ns, sizes) = if commit_len == COMMIT_LEN_V1 {
                (time_ns, at + 16)
            } else {
                (i64_at(at + 16), at + 24)
            };
            let c = SegmentCommit {
                txid: u64_at(at),
                time_ns,
                not_before_ns,
                db_pages: u32_at(sizes),
                pages: u32_at(sizes + 4),
            };
            if prev.is_some_and(|p| c.txid <= p) || c.txid < first_txid || c.txid > last_txid || c.db_pages == 0 {
                return Err(bad("commits out of order or outside the segment's range"));
            }
            if c.not_before_ns > c.time_ns {
                return Err(bad("a commit's time interval ends before it begins"));
            }
            prev = Some(c.txid);
            total += c.pages as u64;
            commits.push(c);
            at += commit_len;
        }
        if total != m as u64 || prev != Some(last_txid) {
            return Err(bad("commit table does not match the pages or the range"));
        }
        let mut pgnos = Vec::with_capacity(m);
        let mut i = 0usize;
        for c in &commits {
            for _ in 0..c.pages {
                // Pages past the commit's database size are legal (a commit
                // that shrinks the file); restore drops them when it truncates.
                let p = u32_at(at + 4 * i);
                if p == 0 {
                    return Err(bad("page number 0"));
                }
                pgnos.push(p);
                i += 1;
            }
        }
        at += 4 * m;
        let mut data = body[at..].to_vec();
        if body[5] & FLAG_XOR != 0 {
            unxor_deltas(&mut data, &pgnos, page_size as usize);
        }
        Ok(Segment {
            page_size,
            compacted: body[5] & FLAG_COMPACTED != 0,
            first_txid,
            last_txid,
            wal_end,
            commits,
            pgnos,
            data,
        })
    }
}

/// Append each image XORed with the previous image of the same page (the
/// first image of a page as it is), copying and XORing one page at a time
/// while it is in cache.
fn xor_deltas_into(out: &mut Vec<u8>, images: &[u8], pgnos: &[u32], ps: usize) {
    let mut prev: std::collections::HashMap<u32, usize> = std::collections::HashMap::with_capacity(pgnos.len());
    for (i, p) in pgnos.iter().enumerate() {
        let at = out.len();
        out.extend_from_slice(&images[i * ps..(i + 1) * ps]);
        if let Some(j) = prev.insert(*p, i) {
            xor_into(&mut out[at..], &images[j * ps..(j + 1) * ps]);
        }
    }
}

/// Undo [`xor_deltas_into`] in place, front to back, so the previous image
/// of a page is already restored when it is needed.
fn unxor_deltas(images: &mut [u8], pgnos: &[u32], ps: usize) {
    let mut prev: std::collections::HashMap<u32, usize> = std::collections::HashMap::with_capacity(pgnos.len());
    for (i, p) in pgnos.iter().enumerate() {
        if let Some(j) = prev.insert(*p, i) {
            let (head, tail) = images.split_at_mut(i * ps);
            xor_into(&mut tail[..ps], &head[j * ps..(j + 1) * ps]);
        }
    }
}

/// `dst ^= src`, eight bytes at a time: the byte loop was not vectorized
/// and ran at 2.5 GB/s, slower than hashing the same segment.
fn xor_into(dst: &mut [u8], src: &[u8]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let x =
            u64::from_ne_bytes((&*d).try_into().expect("8 bytes")) ^ u64::from_ne_bytes(s.try_into().expect("8 bytes"));
        d.copy_from_slice(&x.to_ne_bytes());
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_written_many_times_round_trips() {
        let ps = 512usize;
        let pgnos = vec![3, 5, 3, 3, 5, 3];
        let images: Vec<u8> = (0..pgnos.len() * ps).map(|i| (i * 13 % 255) as u8).collect();
        let mut stored = Vec::new();
        xor_deltas_into(&mut stored, &images, &pgnos, ps);
        // Each later image is stored against the one before it, not
        // against what was stored for it.
        let third: Vec<u8> = (0..ps).map(|k| images[3 * ps + k] ^ images[2 * ps + k]).collect();
        assert_eq!(&stored[3 * ps..4 * ps], &third[..]);
        unxor_deltas(&mut stored, &pgnos, ps);
        assert_eq!(stored, images);
    }

    #[test]
    fn xor_into_matches_a_byte_by_byte_xor() {
        for len in [0usize, 1, 7, 8, 9, 64, 4096, 4099] {
            let a: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let b: Vec<u8> = (0..len).map(|i| (i * 17 % 253) as u8).collect();
            let mut got = a.clone();
            xor_into(&mut got, &b);
            let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| x ^ y).collect();
            assert_eq!(got, want, "len {len}");
        }
    }

    fn sample() -> Segment {
        let ps = 512usize;
        let mut data = Vec::new();
        for i in 0..3u8 {
            data.extend(std::iter::repeat_n(i, ps));
        }
        Segment {
            page_size: ps as u32,
            compacted: false,
            first_txid: 7,
            last_txid: 8,
            wal_end: [1, 2, 3, 4, 5],
            commits: vec![
                SegmentCommit {
                    txid: 7,
                    time_ns: 1_000,
                    not_before_ns: 900,
                    db_pages: 4,
                    pages: 2,
                },
                SegmentCommit {
                    txid: 8,
                    time_ns: 2_000,
                    not_before_ns: 1_000,
                    db_pages: 4,
                    pages: 1,
                },
            ],
            pgnos: vec![1, 4, 4],
            data,
        }
    }

    #[test]
    fn reads_version_1_segments_as_exact_times() {
        let s = sample();
        let v2 = codec::decode(&s.encode(3), "t").unwrap();
        // Version 1: the same, without each commit's not_before_ns.
        let mut v1 = v2[..HEADER_LEN].to_vec();
        v1[4] = 1;
        let table = HEADER_LEN..HEADER_LEN + s.commits.len() * COMMIT_LEN;
        for c in v2[table.clone()].chunks(COMMIT_LEN) {
            v1.extend_from_slice(&c[..16]);
            v1.extend_from_slice(&c[24..]);
        }
        v1.extend_from_slice(&v2[table.end..v2.len() - 32]);
        let hash = blake3::hash(&v1);
        v1.extend_from_slice(hash.as_bytes());
        let got = Segment::decode(&codec::encode(&v1, 3), "t").unwrap();
        assert_eq!(got.data, s.data);
        for (g, c) in got.commits.iter().zip(&s.commits) {
            assert_eq!((g.txid, g.time_ns, g.not_before_ns), (c.txid, c.time_ns, c.time_ns));
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let s = sample();
        let raw = s.encode(3);
        assert_eq!(Segment::decode(&raw, "t").unwrap(), s);
        // Flip a byte inside the decoded body: the hash must catch it.
        let mut body = codec::decode(&raw, "t").unwrap();
        // Page 4's second image is stored as its XOR with the first: zeros
        // except where they differ (every byte: 1 ^ 2).
        let stored = &body[body.len() - 32 - 512..body.len() - 32];
        assert!(
            stored.iter().all(|&b| b == 1 ^ 2),
            "second image of page 4 stored XORed"
        );
        body[HEADER_LEN + 3] ^= 1;
        let err = Segment::decode(&codec::encode_raw(&body), "t").unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
