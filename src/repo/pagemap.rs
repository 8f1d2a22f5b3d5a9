//! A database's page list: for every page number, the id of the page blob,
//! and (for pages of 1 KiB or more) the page's BLAKE3 chaining value at its
//! position, from which the whole file's hash is assembled (`treehash`).
//!
//! A full map lists every page in page order. A delta map lists only the pages
//! that differ from its parent map, so a snapshot after 10,000 changed pages
//! stores ~680 KB of map instead of 64 bytes for every page of the database.
//! Chains are bounded (`MAX_DEPTH`) so restore never walks far.
//!
//! Blob layout (after the envelope; docs/FORMAT.md, "Page map"):
//! `"LBPM" version:u8 flags:u8 reserved:u16 page_size:u32le page_count:u32le
//!  depth:u32le parent[32] entry_count:u32le` then, for a full map,
//! `blob_id[32] (cv[32])?` per page; for a delta (flags bit 0),
//! `(pgno:u32le blob_id[32] (cv[32])?)*`; `cv` present when flags bit 1 is set.

use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"LBPM";
const VERSION: u8 = 1;
const FLAG_DELTA: u8 = 1;
const FLAG_CVS: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 4 + 4 + 32 + 4;

/// A delta chain longer than this is cut by writing a full map.
pub const MAX_DEPTH: u32 = 16;

/// One page that differs from the parent map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Page number, from 1.
    pub pgno: u32,
    /// The page's blob id.
    pub id: Id,
    /// Chaining value; `Id::ZERO` in maps without them.
    pub cv: Id,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// The pages a map lists: all of them, or what changed since its parent.
pub enum Pages {
    /// Every page's blob id, page 1 first, and (if the map has them) every
    /// page's chaining value; `cvs` is empty otherwise.
    Full {
        /// Every page's blob id.
        ids: Vec<Id>,
        /// Every page's chaining value, or none.
        cvs: Vec<Id>,
    },
    /// Changed pages only, sorted by page number.
    Delta(Vec<Change>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A database's page list as stored: full, or a delta on a parent map.
pub struct PageMap {
    /// Page size of the database.
    pub page_size: u32,
    /// Pages in the database.
    pub page_count: u32,
    /// 0 for a full map; parent's depth + 1 for a delta.
    pub depth: u32,
    /// `Id::ZERO` for a full map.
    pub parent: Id,
    /// Whether entries carry chaining values.
    pub has_cvs: bool,
    /// The pages listed.
    pub pages: Pages,
}

/// A page list with its chaining values (empty when not kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageList {
    /// Every page's blob id, page 1 first.
    pub ids: Vec<Id>,
    /// Every page's chaining value, or none.
    pub cvs: Vec<Id>,
}

impl PageList {
    /// Resize to `page_count` and apply `changes`; chaining values are kept
    /// only if the list has them for every page.
    pub fn apply_changes(&mut self, page_count: u32, changes: &[Change]) {
        let has_cvs = self.cvs.len() == self.ids.len();
        // Exact growth: a database that grew by one page would otherwise
        // double both lists (32 bytes a page each), 16 MiB more peak RSS for
        // a 1 GiB database.
        let new_len = page_count as usize;
        self.ids.reserve_exact(new_len.saturating_sub(self.ids.len()));
        self.ids.resize(new_len, Id::ZERO);
        if has_cvs {
            self.cvs.reserve_exact(new_len.saturating_sub(self.cvs.len()));
            self.cvs.resize(new_len, Id::ZERO);
        }
        for c in changes {
            self.ids[c.pgno as usize - 1] = c.id;
            if has_cvs {
                self.cvs[c.pgno as usize - 1] = c.cv;
            }
        }
    }
}

impl PageMap {
    /// A full map of `list`, keeping chaining values only when every page has
    /// one and the page size allows them.
    pub fn full(page_size: u32, mut list: PageList) -> PageMap {
        let has_cvs = list.cvs.len() == list.ids.len() && crate::treehash::supported(page_size);
        if !has_cvs {
            list.cvs.clear();
        }
        PageMap {
            page_size,
            page_count: list.ids.len() as u32,
            depth: 0,
            parent: Id::ZERO,
            has_cvs,
            pages: Pages::Full {
                ids: list.ids,
                cvs: list.cvs,
            },
        }
    }

    /// The cheaper of a delta against the parent (the sorted `changes`) and a
    /// full map of `list`, the parent's list with those changes applied.
    pub fn from_changes(
        page_size: u32,
        parent_id: Id,
        parent_depth: u32,
        list: PageList,
        changes: Vec<Change>,
    ) -> PageMap {
        let page_count = list.ids.len() as u32;
        if parent_depth + 1 > MAX_DEPTH || changes.len() * 2 > page_count as usize {
            return PageMap::full(page_size, list);
        }
        let has_cvs = list.cvs.len() == list.ids.len() && crate::treehash::supported(page_size);
        PageMap {
            page_size,
            page_count,
            depth: parent_depth + 1,
            parent: parent_id,
            has_cvs,
            pages: Pages::Delta(changes),
        }
    }

    /// Whether it is a delta on a parent map.
    pub fn is_delta(&self) -> bool {
        matches!(self.pages, Pages::Delta(_))
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        let cv = if self.has_cvs { 32 } else { 0 };
        HEADER_LEN
            + match &self.pages {
                Pages::Full { ids, .. } => ids.len() * (32 + cv),
                Pages::Delta(e) => e.len() * (36 + cv),
            }
    }

    /// The map as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Stream the encoding, so a large map is never held twice in memory.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let count = match &self.pages {
            Pages::Full { ids, .. } => ids.len(),
            Pages::Delta(e) => e.len(),
        };
        let flags = if self.is_delta() { FLAG_DELTA } else { 0 } | if self.has_cvs { FLAG_CVS } else { 0 };
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        buf.push(flags);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&self.page_size.to_le_bytes());
        buf.extend_from_slice(&self.page_count.to_le_bytes());
        buf.extend_from_slice(&self.depth.to_le_bytes());
        buf.extend_from_slice(&self.parent.0);
        buf.extend_from_slice(&(count as u32).to_le_bytes());
        let mut flush = |buf: &mut Vec<u8>, force: bool| -> std::io::Result<()> {
            if force || buf.len() >= 60 * 1024 {
                out.write_all(buf)?;
                buf.clear();
            }
            Ok(())
        };
        match &self.pages {
            Pages::Full { ids, cvs } => {
                for (i, id) in ids.iter().enumerate() {
                    buf.extend_from_slice(&id.0);
                    if self.has_cvs {
                        buf.extend_from_slice(&cvs[i].0);
                    }
                    flush(&mut buf, false)?;
                }
            }
            Pages::Delta(e) => {
                for c in e {
                    buf.extend_from_slice(&c.pgno.to_le_bytes());
                    buf.extend_from_slice(&c.id.0);
                    if self.has_cvs {
                        buf.extend_from_slice(&c.cv.0);
                    }
                    flush(&mut buf, false)?;
                }
            }
        }
        flush(&mut buf, true)
    }

    /// Parse a stored map with its chaining values; `what` names it in errors.
    pub fn from_bytes(b: &[u8], what: &str) -> Result<PageMap> {
        PageMap::parse(b, what, true)
    }

    /// Parse, dropping chaining values (restore and verify need only ids;
    /// for a 1 GiB database that spares 8 MiB). The map then reports none.
    pub fn from_bytes_without_cvs(b: &[u8], what: &str) -> Result<PageMap> {
        PageMap::parse(b, what, false)
    }

    fn parse(b: &[u8], what: &str, keep_cvs: bool) -> Result<PageMap> {
        let bad = |m: &str| Error::damaged(what, format!("page map: {m}"));
        if b.len() < HEADER_LEN || &b[..4] != MAGIC {
            return Err(bad("missing LBPM magic"));
        }
        if b[4] != VERSION {
            return Err(
                Error::config(what, format!("page map version {} is not supported", b[4])).fix("upgrade Lifeboat"),
            );
        }
        if b[5] & !(FLAG_DELTA | FLAG_CVS) != 0 {
            return Err(
                Error::config(what, format!("page map flags {:#x} are not supported", b[5])).fix("upgrade Lifeboat"),
            );
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let delta = b[5] & FLAG_DELTA != 0;
        let has_cvs = b[5] & FLAG_CVS != 0;
        let page_size = u32_at(8);
        let page_count = u32_at(12);
        let depth = u32_at(16);
        let parent = Id(b[20..52].try_into().unwrap());
        let n = u32_at(52) as usize;
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            return Err(bad("invalid page size"));
        }
        if has_cvs && !crate::treehash::supported(page_size) {
            return Err(bad("chaining values with pages under 1 KiB"));
        }
        if delta == parent.is_zero() || delta == (depth == 0) {
            return Err(bad("delta flag, depth and parent disagree"));
        }
        let cv = if has_cvs { 32 } else { 0 };
        let body = &b[HEADER_LEN..];
        let id_at = |c: &[u8], o: usize| Id(c[o..o + 32].try_into().unwrap());
        let pages = if delta {
            if body.len() != n * (36 + cv) {
                return Err(bad("length does not match entry count"));
            }
            let e: Vec<Change> = body
                .chunks_exact(36 + cv)
                .map(|c| Change {
                    pgno: u32::from_le_bytes(c[..4].try_into().unwrap()),
                    id: id_at(c, 4),
                    cv: if has_cvs && keep_cvs { id_at(c, 36) } else { Id::ZERO },
                })
                .collect();
            if e.iter().any(|c| c.pgno == 0 || c.pgno > page_count) || e.windows(2).any(|w| w[0].pgno >= w[1].pgno) {
                return Err(bad("page numbers out of order or range"));
            }
            Pages::Delta(e)
        } else {
            if n != page_count as usize || body.len() != n * (32 + cv) {
                return Err(bad("full map does not list every page exactly once"));
            }
            let ids = body.chunks_exact(32 + cv).map(|c| id_at(c, 0)).collect();
            let cvs = if has_cvs && keep_cvs {
                body.chunks_exact(64).map(|c| id_at(c, 32)).collect()
            } else {
                Vec::new()
            };
            Pages::Full { ids, cvs }
        };
        Ok(PageMap {
            page_size,
            page_count,
            depth,
            parent,
            has_cvs: has_cvs && keep_cvs,
            pages,
        })
    }

    /// Apply this map on top of `base` (the parent's resolved list; empty for
    /// a full map, which then simply becomes the list). Chaining values come
    /// along only if the map carries them (see `from_bytes_without_cvs`).
    pub fn apply(self, base: &mut PageList) {
        match self.pages {
            Pages::Full { ids, cvs } => {
                base.ids = ids;
                base.cvs = cvs; // empty when the map has none, or was read without
            }
            Pages::Delta(changes) => base.apply_changes(self.page_count, &changes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: u8) -> PageList {
        PageList {
            ids: (0..n).map(|i| Id::of(&[i])).collect(),
            cvs: (0..n).map(|i| Id::of(&[i, 9])).collect(),
        }
    }

    #[test]
    fn delta_round_trip_and_resolution() {
        let base = list(10);
        let changes = vec![
            Change {
                pgno: 4,
                id: Id::of(b"changed"),
                cv: Id::of(b"cv4"),
            },
            Change {
                pgno: 11,
                id: Id::of(b"grown"),
                cv: Id::of(b"cv11"),
            },
        ];
        let mut next = base.clone();
        next.apply_changes(11, &changes);
        let d = PageMap::from_changes(4096, Id::of(b"parent"), 0, next.clone(), changes.clone());
        assert_eq!(d.pages, Pages::Delta(changes));
        assert_eq!(next.ids[3], Id::of(b"changed"));
        assert_eq!(next.cvs[10], Id::of(b"cv11"));
        let back = PageMap::from_bytes(&d.to_bytes(), "t").unwrap();
        assert_eq!(back, d);
        let mut resolved = base.clone();
        back.apply(&mut resolved);
        assert_eq!(resolved, next);
        // As restore resolves: maps read without chaining values, onto a
        // base that has none.
        let mut ids_only = PageList {
            ids: base.ids.clone(),
            cvs: vec![],
        };
        PageMap::from_bytes_without_cvs(&d.to_bytes(), "t")
            .unwrap()
            .apply(&mut ids_only);
        assert_eq!(ids_only.ids, next.ids);
        assert!(ids_only.cvs.is_empty());
    }

    #[test]
    fn full_round_trip_with_and_without_cvs() {
        let m = PageMap::full(1024, list(7));
        assert!(m.has_cvs);
        let back = PageMap::from_bytes(&m.to_bytes(), "t").unwrap();
        assert_eq!(back, m);
        let mut r = PageList::default();
        back.apply(&mut r);
        assert_eq!(r, list(7));

        let ids_only = PageMap::from_bytes_without_cvs(&m.to_bytes(), "t").unwrap();
        assert!(!ids_only.has_cvs);
        let mut r = PageList::default();
        ids_only.apply(&mut r);
        assert_eq!((r.ids, r.cvs.len()), (list(7).ids, 0));

        let small = PageMap::full(
            512,
            PageList {
                ids: list(3).ids,
                cvs: vec![],
            },
        );
        assert!(!small.has_cvs);
        assert_eq!(PageMap::from_bytes(&small.to_bytes(), "t").unwrap(), small);
    }

    #[test]
    fn shrinking_and_mostly_changed_maps() {
        let mut next = list(10);
        next.apply_changes(6, &[]);
        let d = PageMap::from_changes(4096, Id::of(b"p"), 3, next.clone(), vec![]);
        assert_eq!(d.pages, Pages::Delta(vec![]));
        assert_eq!(next.ids, list(10).ids[..6]);
        let mut r = list(10);
        d.apply(&mut r);
        assert_eq!(r, next);

        let all: Vec<Change> = (1..=10u32)
            .map(|p| Change {
                pgno: p,
                id: Id::of(&p.to_le_bytes()),
                cv: Id::ZERO,
            })
            .collect();
        assert!(!PageMap::from_changes(4096, Id::of(b"p"), 0, list(10), all).is_delta());
        assert!(!PageMap::from_changes(4096, Id::of(b"p"), MAX_DEPTH, list(10), vec![]).is_delta());
    }

    #[test]
    fn rejects_corruption() {
        let m = PageMap::full(4096, list(4));
        let mut b = m.to_bytes();
        b.truncate(b.len() - 1);
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[52] = 9;
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[5] |= FLAG_DELTA;
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[5] |= 0x80;
        assert_eq!(
            PageMap::from_bytes(&b, "t").unwrap_err().kind,
            crate::error::ErrorKind::Config
        );
    }
}
