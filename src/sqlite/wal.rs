//! Reading SQLite's write-ahead log (sqlite.org/fileformat2.html#walformat):
//! which pages have frames in the current generation (so a capture knows
//! which pages to take through SQLite), and the committed transactions after
//! a position, checked frame by frame against the salts and the checksum
//! chain exactly as SQLite's own recovery checks them (for replication).

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Bytes of the WAL header.
pub const HEADER_LEN: u64 = 32;
/// Bytes of each frame's header; the page image follows it.
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// The 32-byte WAL header (all fields big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// `0x377f0682` (checksums little-endian) or `0x377f0683` (big-endian).
    pub magic: u32,
    /// File format version, always 3007000.
    pub version: u32,
    /// Bytes per page as stored; read it through [`WalHeader::page_size`].
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub checkpoint_seq: u32,
    /// First salt: changes with every restart of the log, so together with
    /// `salt2` it names the generation.
    pub salt1: u32,
    /// Second salt (random at each restart).
    pub salt2: u32,
    /// First word of the header's checksum, the seed of the frames' chain.
    pub checksum1: u32,
    /// Second word of the header's checksum.
    pub checksum2: u32,
}

impl WalHeader {
    /// Decode the header; `None` unless the magic, the version (3007000) and the
    /// page size are valid. The checksum is not checked here
    /// ([`WalHeader::checksum_ok`]).
    pub fn parse(b: &[u8; 32]) -> Option<WalHeader> {
        let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let h = WalHeader {
            magic: be(0),
            version: be(4),
            page_size: be(8),
            checkpoint_seq: be(12),
            salt1: be(16),
            salt2: be(20),
            checksum1: be(24),
            checksum2: be(28),
        };
        // The WAL header's field is 32 bits wide and holds 65536 as is (the
        // "1 means 65536" encoding belongs to the database header's 16-bit
        // field); 1 is accepted too, defensively.
        let ps_ok = h.page_size == 1 || (h.page_size.is_power_of_two() && (512..=65536).contains(&h.page_size));
        ((h.magic == MAGIC_LE || h.magic == MAGIC_BE) && h.version == 3_007_000 && ps_ok).then_some(h)
    }

    /// Bytes per page (a stored 1 read as 65536).
    pub fn page_size(&self) -> u32 {
        if self.page_size == 1 { 65536 } else { self.page_size }
    }
}

/// Page numbers of every frame carrying the current header's salts, valid or
/// not, committed or not. Over-inclusion is harmless to a caller that reads
/// those pages through SQLite; what matters is that no page with a frame in
/// the reader's snapshot is missed. `None` when there is no WAL or it is too
/// short to hold a header (so it holds no frame); an error when a header is
/// there but not understood, so the caller never mistakes it for empty.
pub fn pages_with_frames(wal_path: &Path, page_size: u32) -> Result<Option<HashSet<u32>>> {
    let file = match File::open(wal_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(wal_path, e)),
    };
    let len = file.metadata().at(wal_path)?.len();
    let mut hb = [0u8; 32];
    if len < HEADER_LEN || file.read_exact_at(&mut hb, 0).is_err() {
        return Ok(None);
    }
    let Some(header) = WalHeader::parse(&hb) else {
        return Err(Error::bad_data(wal_path.display(), "WAL header not recognised"));
    };
    if header.page_size() != page_size {
        return Err(Error::bad_data(
            wal_path.display(),
            "WAL page size differs from the database's",
        ));
    }
    let frame_len = FRAME_HEADER_LEN + page_size as u64;
    let mut pages = HashSet::new();
    let mut fh = [0u8; FRAME_HEADER_LEN as usize];
    let mut off = HEADER_LEN;
    while off + frame_len <= len {
        file.read_exact_at(&mut fh, off).at(wal_path)?;
        let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
        if be(8) == header.salt1 && be(12) == header.salt2 && be(0) != 0 {
            pages.insert(be(0));
        }
        off += frame_len;
    }
    Ok(Some(pages))
}

/// SQLite's WAL checksum (fileformat2 §4.4): 32-bit words in the byte order
/// the magic names, summed in pairs, chained from `seed`.
pub fn checksum(big_endian: bool, data: &[u8], seed: (u32, u32)) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for w in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (
                u32::from_be_bytes(w[0..4].try_into().unwrap()),
                u32::from_be_bytes(w[4..8].try_into().unwrap()),
            )
        } else {
            (
                u32::from_le_bytes(w[0..4].try_into().unwrap()),
                u32::from_le_bytes(w[4..8].try_into().unwrap()),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

impl WalHeader {
    /// Whether checksums are computed over big-endian words.
    pub fn big_endian(&self) -> bool {
        self.magic & 1 == 1
    }

    /// The header's own checksum (over its first 24 bytes) is right.
    pub fn checksum_ok(&self, raw: &[u8; 32]) -> bool {
        checksum(self.big_endian(), &raw[..24], (0, 0)) == (self.checksum1, self.checksum2)
    }

    /// Read and check the header of the WAL at `path`: `None` when the file
    /// is absent or shorter than a header, or its header is not (yet) valid
    /// (SQLite treats such a WAL as empty).
    pub fn read(path: &Path) -> Result<Option<WalHeader>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut raw = [0u8; 32];
        match file.read_exact_at(&mut raw, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        }
        Ok(WalHeader::parse(&raw).filter(|h| h.checksum_ok(&raw)))
    }

    /// `(salt1, salt2)`: the generation this header begins.
    pub fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }
}

/// A place in one WAL generation: just after frame `frame` (0 = right after
/// the header), with the running checksum there. Identifies the generation
/// by its salts, which SQLite changes whenever it restarts the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalPosition {
    /// First salt of the generation.
    pub salt1: u32,
    /// Second salt of the generation.
    pub salt2: u32,
    /// Frames of the generation before this position (0 = just after the header).
    pub frame: u32,
    /// First word of the running checksum after frame `frame`.
    pub cksum1: u32,
    /// Second word of the running checksum.
    pub cksum2: u32,
}

impl WalPosition {
    /// The start of the generation `header` begins.
    pub fn start_of(header: &WalHeader) -> WalPosition {
        WalPosition {
            salt1: header.salt1,
            salt2: header.salt2,
            frame: 0,
            cksum1: header.checksum1,
            cksum2: header.checksum2,
        }
    }

    /// The start of a generation whose header is not written yet (the
    /// wal-index already holds its salts after a reset): its checksum seed
    /// comes from the header once it appears.
    pub fn before_generation(salts: (u32, u32)) -> WalPosition {
        WalPosition {
            salt1: salts.0,
            salt2: salts.1,
            frame: 0,
            cksum1: 0,
            cksum2: 0,
        }
    }

    /// As the five words a segment records (`wal_end`), and back.
    pub fn to_words(self) -> [u32; 5] {
        [self.salt1, self.salt2, self.frame, self.cksum1, self.cksum2]
    }

    /// The inverse of [`WalPosition::to_words`].
    pub fn from_words(w: [u32; 5]) -> WalPosition {
        WalPosition {
            salt1: w[0],
            salt2: w[1],
            frame: w[2],
            cksum1: w[3],
            cksum2: w[4],
        }
    }

    /// Whether this position lies in the generation `header` begins (same salts).
    pub fn same_generation(&self, header: &WalHeader) -> bool {
        (self.salt1, self.salt2) == header.salts()
    }
}

/// One committed transaction read from the WAL: the database size after it
/// and the pages it wrote (the last frame of each page wins), their contents
/// in `WalCommits::data` at `index * page_size`.
#[derive(Debug, Clone)]
pub struct WalCommit {
    /// Pages in the database after this commit (its commit frame's size field).
    pub db_pages: u32,
    /// Page numbers (1-based) written by the commit, each once; their
    /// images follow the previous commits' in `WalCommits::data`.
    pub pages: Vec<u32>,
}

/// Commits read from a WAL, and where reading stopped.
#[derive(Debug, Default)]
pub struct WalCommits {
    /// Complete transactions, oldest first.
    pub commits: Vec<WalCommit>,
    /// Page images of every commit, back to back.
    pub data: Vec<u8>,
    /// Reading stopped at a transaction larger than the limit given; it is
    /// not in `commits`.
    pub too_large: bool,
    /// Reading stopped because the next transaction would take `data` past
    /// the limit given: seal what is held, then read on.
    pub full: bool,
}

/// Frames read per `pread`, at most.
const READ_FRAMES: u64 = 64;
/// Frames read per `pread` by a thread that has not yet found more.
const START_FRAMES: u64 = 4;

/// Read every complete, checksummed commit after `from` in the WAL at
/// `path`, exactly as SQLite's recovery would accept them: frames must carry
/// `from`'s salts and extend its checksum chain; reading stops at the first
/// frame that does not (a frame being written, a stale one from an earlier
/// generation, the end of the file) and frames after the last commit frame
/// are left for a later call. `max_bytes` bounds `out.data` as a whole
/// (what it already held included): reading stops at the commit boundary
/// where the next transaction would not fit (then `full` is set), or at a
/// single transaction larger than that (then `too_large` is set). Returns
/// the position after the last commit read.
pub fn read_commits(
    file: &File,
    path: &Path,
    big_endian: bool,
    page_size: u32,
    from: WalPosition,
    max_bytes: usize,
    out: &mut WalCommits,
) -> Result<WalPosition> {
    let ps = page_size as usize;
    let frame_len = FRAME_HEADER_LEN as usize + ps;
    let mut pos = from;
    // The transaction being read: its frames' pages in `data` from `first`.
    let mut txn_pages: Vec<u32> = Vec::new();
    let mut txn_index: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let txn_first = |out: &WalCommits| out.data.len() / ps;
    let mut first = txn_first(out);
    let mut cksum = (from.cksum1, from.cksum2);
    let mut frame = from.frame;
    thread_local! {
        /// Frames as read, kept between calls: a follower looks every
        /// millisecond or few, and zeroing a fresh 256 KiB buffer each time
        /// was 5% of its CPU at a busy service's pace. Put back on success
        /// only; after an error the next call starts a new one.
        static FRAMES: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = FRAMES.take();
    // Only the `got` bytes just read are looked at: what the buffer held
    // from an earlier call never is. It starts at a few frames and grows
    // only when a read fills it: a replicator following a hundred quiet
    // databases held 256 KiB for each (a quarter of its memory) to read a
    // frame or two a second.
    let fits = buf.len() / frame_len;
    if fits < START_FRAMES as usize || !buf.len().is_multiple_of(frame_len) {
        buf.resize(START_FRAMES as usize * frame_len, 0);
    }
    'outer: loop {
        let offset = HEADER_LEN + frame as u64 * frame_len as u64;
        let got = crate::fsutil::read_full_at(file, &mut buf, offset).at(path)?;
        let frames = got / frame_len;
        if frames == 0 {
            break;
        }
        let filled = frames == buf.len() / frame_len;
        for f in buf[..frames * frame_len].chunks_exact(frame_len) {
            let be = |o: usize| u32::from_be_bytes(f[o..o + 4].try_into().unwrap());
            let (pgno, commit, s1, s2) = (be(0), be(4), be(8), be(12));
            if (s1, s2) != (pos.salt1, pos.salt2) || pgno == 0 {
                break 'outer;
            }
            let c = checksum(big_endian, &f[..8], cksum);
            let c = checksum(big_endian, &f[FRAME_HEADER_LEN as usize..], c);
            if c != (be(16), be(20)) {
                break 'outer;
            }
            cksum = c;
            frame += 1;
            // Within a transaction a page written twice keeps its last image.
            let page = &f[FRAME_HEADER_LEN as usize..];
            match txn_index.get(&pgno).copied() {
                Some(i) => {
                    let at = (first + i) * ps;
                    out.data[at..at + ps].copy_from_slice(page);
                }
                None => {
                    if (txn_pages.len() + 1) * ps > max_bytes {
                        out.too_large = true;
                        break 'outer;
                    }
                    if out.data.len() + ps > max_bytes {
                        out.full = true;
                        break 'outer;
                    }
                    txn_index.insert(pgno, txn_pages.len());
                    txn_pages.push(pgno);
                    out.data.extend_from_slice(page);
                }
            }
            if commit != 0 {
                out.commits.push(WalCommit {
                    db_pages: commit,
                    pages: std::mem::take(&mut txn_pages),
                });
                txn_index.clear();
                first = txn_first(out);
                pos = WalPosition {
                    salt1: pos.salt1,
                    salt2: pos.salt2,
                    frame,
                    cksum1: cksum.0,
                    cksum2: cksum.1,
                };
                if out.data.len() >= max_bytes {
                    out.full = true;
                    break 'outer;
                }
            }
        }
        if !filled {
            break;
        }
        if buf.len() < READ_FRAMES as usize * frame_len {
            let more = (buf.len() / frame_len * 4).min(READ_FRAMES as usize);
            buf.resize(more * frame_len, 0);
        }
    }
    // Frames of an unfinished transaction are not ours to keep.
    out.data.truncate(first * ps);
    FRAMES.set(buf);
    Ok(pos)
}

/// Whether frame `frame` (1-based) of the WAL carries `pos`'s salts and the
/// checksum `pos` records: the position is still there to continue from.
pub fn position_holds(file: &File, pos: &WalPosition, page_size: u32) -> Result<bool> {
    if pos.frame == 0 {
        return Ok(true);
    }
    let frame_len = FRAME_HEADER_LEN + page_size as u64;
    let mut fh = [0u8; FRAME_HEADER_LEN as usize];
    let at = HEADER_LEN + (pos.frame as u64 - 1) * frame_len;
    match file.read_exact_at(&mut fh, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(Error::io(Path::new("WAL"), e)),
    }
    let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
    Ok((be(8), be(12), be(16), be(20)) == (pos.salt1, pos.salt2, pos.cksum1, pos.cksum2))
}

/// What the first frame slot after `pos` holds, once the log has moved to a
/// new generation: tells whether the old generation could have had frames
/// past `pos` that are now gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAfter {
    /// Nothing, a frame of another generation, or a damaged one: the frame
    /// was never written in `pos`'s generation, or is still readable.
    Free,
    /// A frame of the new generation with salts `new`: the old generation's
    /// frame there, if it had one, was overwritten.
    Overwritten,
}

/// What the frame slot right after `pos` holds, given the salts of the
/// generation that replaced `pos`'s; an I/O error is
/// [`ErrorKind::Io`](crate::ErrorKind::Io) (a short read is
/// [`SlotAfter::Free`]).
pub fn slot_after(file: &File, pos: &WalPosition, page_size: u32, new_salts: (u32, u32)) -> Result<SlotAfter> {
    let frame_len = FRAME_HEADER_LEN + page_size as u64;
    let mut fh = [0u8; FRAME_HEADER_LEN as usize];
    let at = HEADER_LEN + pos.frame as u64 * frame_len;
    match file.read_exact_at(&mut fh, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(SlotAfter::Free),
        Err(e) => return Err(Error::io(Path::new("WAL"), e)),
    }
    let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
    Ok(if (be(8), be(12)) == new_salts {
        SlotAfter::Overwritten
    } else {
        SlotAfter::Free
    })
}

/// The wal-index header SQLite keeps at the start of `-shm` (wal.c,
/// `WalIndexHdr`, native byte order): where the log's committed content ends.
/// Read only while holding the database's write lock, when it cannot change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Frames of the log holding committed content (`mxFrame`).
    pub max_frame: u32,
    /// Pages in the database after the last commit (`nPage`).
    pub db_pages: u32,
    /// The running checksum after frame `max_frame` (`aFrameCksum`).
    pub frame_cksum: (u32, u32),
    /// As stored in the WAL header (big-endian there).
    pub salts: (u32, u32),
}

impl IndexHeader {
    /// Read through `shm`, a descriptor of the `-shm` file that the caller
    /// keeps open: SQLite's WAL locks are POSIX locks on that file, and
    /// closing any descriptor of it would silently drop every one of them
    /// this process holds (its read marks, its write lock).
    pub fn read(shm: &File, shm_path: &Path) -> Result<Option<IndexHeader>> {
        let mut raw = [0u8; 96];
        match shm.read_exact_at(&mut raw, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io(shm_path, e)),
        }
        Ok(IndexHeader::parse(&raw))
    }

    /// The header from the first 96 bytes of `-shm`; `None` while it is
    /// being written or was never initialised.
    pub fn parse(raw: &[u8; 96]) -> Option<IndexHeader> {
        // Two copies; SQLite writes them in turn and trusts them only equal.
        if raw[..48] != raw[48..] || raw[12] == 0 {
            return None;
        }
        let ne = |o: usize| u32::from_ne_bytes(raw[o..o + 4].try_into().unwrap());
        let be = |o: usize| u32::from_be_bytes(raw[o..o + 4].try_into().unwrap());
        Some(IndexHeader {
            max_frame: ne(16),
            db_pages: ne(20),
            frame_cksum: (ne(24), ne(28)),
            salts: (be(32), be(36)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_bytes` bounds what `out` holds in all: with commits already
    /// pending, reading stops before a transaction that would not fit (full,
    /// not too large: it fits alone) and says so; only a transaction larger
    /// than the bound by itself is too large.
    #[test]
    fn read_commits_bounds_the_whole_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x BLOB);")
            .unwrap();
        for _ in 0..20 {
            c.execute("INSERT INTO t VALUES (zeroblob(100))", []).unwrap();
        }
        // One transaction touching many pages.
        c.execute_batch("BEGIN; INSERT INTO t SELECT zeroblob(3000) FROM t; COMMIT;")
            .unwrap();
        let wal = dir.path().join("t.db-wal");
        let header = WalHeader::read(&wal).unwrap().unwrap();
        let file = File::open(&wal).unwrap();
        let ps = 4096usize;
        let read = |max: usize, out: &mut WalCommits| {
            read_from(&file, &wal, &header, WalPosition::start_of(&header), max, out)
        };
        let mut all = WalCommits::default();
        let end = read(usize::MAX, &mut all);
        assert!(!all.full && !all.too_large);
        let big = all.commits.last().unwrap().pages.len();
        assert!(big > 10, "the last transaction touches {big} pages");
        let small: usize = all.commits[..all.commits.len() - 1].iter().map(|c| c.pages.len()).sum();

        // Room for everything before the big transaction and for it alone,
        // but not for both: full, the big one left for later.
        let cap = (small.max(big) + 2) * ps;
        assert!(cap < (small + big) * ps);
        let mut out = WalCommits::default();
        let pos = read(cap, &mut out);
        assert!(
            out.full && !out.too_large,
            "full {} too_large {}",
            out.full,
            out.too_large
        );
        assert_eq!(out.commits.len(), all.commits.len() - 1);
        assert_eq!(out.data.len(), small * ps, "no page of the unread transaction kept");
        // Sealed (emptied), it reads the rest from where it stopped.
        let mut next = WalCommits::default();
        assert_eq!(read_from(&file, &wal, &header, pos, cap, &mut next), end);
        assert_eq!(next.commits.len(), 1);

        // A bound smaller than the big transaction alone: too large.
        let mut tiny = WalCommits::default();
        let _ = read_from(&file, &wal, &header, pos, (big - 1) * ps, &mut tiny);
        assert!(tiny.too_large && tiny.commits.is_empty());
    }

    fn read_from(
        file: &File,
        wal: &Path,
        header: &WalHeader,
        from: WalPosition,
        max: usize,
        out: &mut WalCommits,
    ) -> WalPosition {
        read_commits(file, wal, header.big_endian(), 4096, from, max, out).unwrap()
    }

    #[test]
    fn finds_pages_written_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let wal = dir.path().join("t.db-wal");
        let pages = pages_with_frames(&wal, 4096).unwrap().expect("a WAL");
        assert!(pages.contains(&1) && pages.contains(&2), "{pages:?}");
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        assert_eq!(
            pages_with_frames(&wal, 4096).unwrap(),
            None,
            "a truncated WAL has no header"
        );
        assert!(pages_with_frames(&dir.path().join("none-wal"), 4096).unwrap().is_none());
    }
}
