//! A database's page list: for every page number, the id of the page blob.
//!
//! A full map lists every page's id in page order. A delta map lists only the
//! pages that differ from its parent map, so a snapshot after 10,000 changed
//! pages stores ~360 KB of map instead of 32 bytes for every page of the
//! database. Chains are bounded (`MAX_DEPTH`) so restore never walks far.
//!
//! Blob layout (after the envelope; docs/FORMAT.md, "Page map"):
//! `"LBPM" version:u8 flags:u8 reserved:u16 page_size:u32le page_count:u32le
//!  depth:u32le parent[32] entry_count:u32le` then, for a full map,
//! `blob_id[32]` per page; for a delta (flags bit 0), `(pgno:u32le blob_id[32])*`.

use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"LBPM";
const VERSION: u8 = 1;
const FLAG_DELTA: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 4 + 4 + 32 + 4;

/// A delta chain longer than this is cut by writing a full map.
pub const MAX_DEPTH: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pages {
    /// Every page's blob id, page 1 first.
    Full(Vec<Id>),
    /// Changed pages only, sorted by page number.
    Delta(Vec<(u32, Id)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMap {
    pub page_size: u32,
    pub page_count: u32,
    /// 0 for a full map; parent's depth + 1 for a delta.
    pub depth: u32,
    /// `Id::ZERO` for a full map.
    pub parent: Id,
    pub pages: Pages,
}

impl PageMap {
    pub fn full(page_size: u32, pages: Vec<Id>) -> PageMap {
        PageMap {
            page_size,
            page_count: pages.len() as u32,
            depth: 0,
            parent: Id::ZERO,
            pages: Pages::Full(pages),
        }
    }

    /// The cheaper of a delta against `parent` and a full map.
    pub fn against(page_size: u32, pages: Vec<Id>, parent_id: Id, parent_depth: u32, parent_pages: &[Id]) -> PageMap {
        let changed: Vec<(u32, Id)> = pages
            .iter()
            .enumerate()
            .filter(|(i, id)| parent_pages.get(*i) != Some(*id))
            .map(|(i, id)| (i as u32 + 1, *id))
            .collect();
        if parent_depth + 1 > MAX_DEPTH || changed.len() * 2 > pages.len() {
            return PageMap::full(page_size, pages);
        }
        PageMap {
            page_size,
            page_count: pages.len() as u32,
            depth: parent_depth + 1,
            parent: parent_id,
            pages: Pages::Delta(changed),
        }
    }

    pub fn is_delta(&self) -> bool {
        matches!(self.pages, Pages::Delta(_))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (flags, count, body) = match &self.pages {
            Pages::Full(ids) => (0, ids.len(), ids.len() * 32),
            Pages::Delta(e) => (FLAG_DELTA, e.len(), e.len() * 36),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.page_count.to_le_bytes());
        out.extend_from_slice(&self.depth.to_le_bytes());
        out.extend_from_slice(&self.parent.0);
        out.extend_from_slice(&(count as u32).to_le_bytes());
        match &self.pages {
            Pages::Full(ids) => ids.iter().for_each(|id| out.extend_from_slice(&id.0)),
            Pages::Delta(e) => e.iter().for_each(|(pgno, id)| {
                out.extend_from_slice(&pgno.to_le_bytes());
                out.extend_from_slice(&id.0);
            }),
        }
        out
    }

    pub fn from_bytes(b: &[u8], what: &str) -> Result<PageMap> {
        let bad = |m: &str| Error::bad_data(what, format!("page map: {m}"));
        if b.len() < HEADER_LEN || &b[..4] != MAGIC {
            return Err(bad("missing LBPM magic"));
        }
        if b[4] != VERSION {
            return Err(
                Error::config(what, format!("page map version {} is not supported", b[4])).fix("upgrade Lifeboat"),
            );
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let delta = b[5] & FLAG_DELTA != 0;
        let page_size = u32_at(8);
        let page_count = u32_at(12);
        let depth = u32_at(16);
        let parent = Id(b[20..52].try_into().unwrap());
        let n = u32_at(52) as usize;
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            return Err(bad("invalid page size"));
        }
        if delta == parent.is_zero() || delta == (depth == 0) {
            return Err(bad("delta flag, depth and parent disagree"));
        }
        let body = &b[HEADER_LEN..];
        let pages = if delta {
            if body.len() != n * 36 {
                return Err(bad("length does not match entry count"));
            }
            let e: Vec<(u32, Id)> = body
                .chunks_exact(36)
                .map(|c| {
                    (
                        u32::from_le_bytes(c[..4].try_into().unwrap()),
                        Id(c[4..].try_into().unwrap()),
                    )
                })
                .collect();
            if e.iter().any(|(p, _)| *p == 0 || *p > page_count) || e.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(bad("page numbers out of order or range"));
            }
            Pages::Delta(e)
        } else {
            if n != page_count as usize || body.len() != n * 32 {
                return Err(bad("full map does not list every page exactly once"));
            }
            Pages::Full(body.chunks_exact(32).map(|c| Id(c.try_into().unwrap())).collect())
        };
        Ok(PageMap {
            page_size,
            page_count,
            depth,
            parent,
            pages,
        })
    }

    /// Apply this map on top of `base` (the parent's resolved page list; empty
    /// for a full map, which then simply becomes the list).
    pub fn apply(self, base: &mut Vec<Id>) {
        match self.pages {
            Pages::Full(ids) => *base = ids,
            Pages::Delta(e) => {
                base.resize(self.page_count as usize, Id::ZERO);
                for (pgno, id) in e {
                    base[pgno as usize - 1] = id;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<Id> {
        (0..n).map(|i| Id::of(&[i])).collect()
    }

    #[test]
    fn delta_round_trip_and_resolution() {
        let base = ids(10);
        let mut next = base.clone();
        next[3] = Id::of(b"changed");
        next.push(Id::of(b"grown"));
        let d = PageMap::against(4096, next.clone(), Id::of(b"parent"), 0, &base);
        assert!(d.is_delta());
        assert_eq!(
            d.pages,
            Pages::Delta(vec![(4, Id::of(b"changed")), (11, Id::of(b"grown"))])
        );
        let back = PageMap::from_bytes(&d.to_bytes(), "t").unwrap();
        assert_eq!(back, d);
        let mut resolved = base.clone();
        back.apply(&mut resolved);
        assert_eq!(resolved, next);
    }

    #[test]
    fn full_round_trip() {
        let m = PageMap::full(1024, ids(7));
        let back = PageMap::from_bytes(&m.to_bytes(), "t").unwrap();
        assert_eq!(back, m);
        let mut r = Vec::new();
        back.apply(&mut r);
        assert_eq!(r, ids(7));
    }

    #[test]
    fn shrinking_and_mostly_changed_maps() {
        let base = ids(10);
        let shrunk = base[..6].to_vec();
        let d = PageMap::against(4096, shrunk.clone(), Id::of(b"p"), 3, &base);
        assert_eq!(d.pages, Pages::Delta(vec![]));
        let mut r = base.clone();
        d.apply(&mut r);
        assert_eq!(r, shrunk);

        let other: Vec<Id> = (0..10u8).map(|i| Id::of(&[i, 1])).collect();
        assert!(!PageMap::against(4096, other, Id::of(b"p"), 0, &base).is_delta());
        assert!(!PageMap::against(4096, base.clone(), Id::of(b"p"), MAX_DEPTH, &base).is_delta());
    }

    #[test]
    fn rejects_corruption() {
        let m = PageMap::full(4096, ids(4));
        let mut b = m.to_bytes();
        b.truncate(b.len() - 1);
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[52] = 9;
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[5] = FLAG_DELTA;
        assert!(PageMap::from_bytes(&b, "t").is_err());
    }
}
