//! Marks: `marks/<id>`, the first phase of deleting packs (docs/FORMAT.md,
//! "Deletion"). A mark records packs that `prune` found unreferenced, with
//! their index records, and when it found them. Marked packs leave the index
//! files at once, so no writer that starts afterwards reuses their blobs; they
//! are deleted only by a later prune, once the mark is older than the grace
//! period and they are still unreferenced. A pack that a snapshot turned out
//! to need is indexed again from the record kept here.
//!
//! Layout, inside the envelope: `"LBMK" version:u8 reserved[3] time_ns:i64le`
//! then an index file's bytes (`"LBIX" …`) listing the marked packs; a pack
//! listed with no blob entries was found in `data/` but in no index file.

use super::index::IndexFile;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"LBMK";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Default)]
/// A mark: packs a prune found unused, to be deleted once the mark is older
/// than the grace period.
pub struct Mark {
    /// When the marking prune listed the snapshots it decided from
    /// (wall clock of its host).
    pub time: jiff::Timestamp,
    /// The packs marked, with their index records (so they stay readable
    /// meanwhile).
    pub packs: IndexFile,
}

impl Mark {
    /// The mark as stored, before the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(self.time.as_nanosecond() as i64).to_le_bytes());
        out.extend_from_slice(&self.packs.to_bytes());
        out
    }

    /// Parse a stored mark; `what` names it in errors.
    pub fn from_bytes(b: &[u8], what: &str) -> Result<Mark> {
        if b.len() < HEADER_LEN || &b[..4] != MAGIC {
            return Err(Error::damaged(what, "mark: missing LBMK magic"));
        }
        if b[4] != VERSION {
            return Err(Error::config(what, format!("mark version {} is not supported", b[4])).fix("upgrade Lifeboat"));
        }
        let ns = i64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        let time = jiff::Timestamp::from_nanosecond(ns as i128)
            .map_err(|_| Error::damaged(what, "mark: time out of range"))?;
        Ok(Mark {
            time,
            packs: IndexFile::from_bytes(&b[HEADER_LEN..], what)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::repo::index::IndexedPack;

    #[test]
    fn round_trip() {
        let m = Mark {
            time: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            packs: IndexFile {
                packs: vec![IndexedPack {
                    id: Id::of(b"p"),
                    size: 42,
                    blobs: Vec::new(),
                }],
            },
        };
        let back = Mark::from_bytes(&m.to_bytes(), "m").unwrap();
        assert_eq!(back.time, m.time);
        assert_eq!(back.packs.packs[0].id, Id::of(b"p"));
        assert!(Mark::from_bytes(&m.to_bytes()[..10], "m").is_err());
        let mut future = m.to_bytes();
        future[4] = 2;
        assert_eq!(
            Mark::from_bytes(&future, "m").unwrap_err().kind,
            crate::error::ErrorKind::Config
        );
    }
}
