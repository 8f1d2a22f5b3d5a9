//! Reading SQLite's write-ahead log (sqlite.org/fileformat2.html#walformat).
//! For now: which pages have frames in the current WAL generation, so a
//! capture knows which pages it must take through SQLite rather than straight
//! from the database file.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

pub const HEADER_LEN: u64 = 32;
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// The 32-byte WAL header (all fields big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl WalHeader {
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

#[cfg(test)]
mod tests {
    use super::*;

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
