//! A database's page list: for every page number, the id of the page blob.
//!
//! A full map lists every page. A delta map lists only pages that differ from
//! its parent map, so a snapshot after 10,000 changed pages stores ~360 KB of
//! map instead of 36 bytes for every page of the database. Chains are bounded
//! (`MAX_DEPTH`) so restore never walks far.
//!
//! Blob layout (after the envelope; docs/FORMAT.md, "Page map"):
//! `"LBPM" version:u8 flags:u8 reserved:u16 page_size:u32le page_count:u32le
//!  depth:u32le parent[32] entry_count:u32le (pgno:u32le blob_id[32])*`

use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"LBPM";
const VERSION: u8 = 1;
const FLAG_DELTA: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 4 + 4 + 32 + 4;

/// A delta chain longer than this is cut by writing a full map.
pub const MAX_DEPTH: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMap {
    pub page_size: u32,
    pub page_count: u32,
    /// 0 for a full map; parent's depth + 1 for a delta.
    pub depth: u32,
    /// `Id::ZERO` for a full map.
    pub parent: Id,
    /// Sorted by page number; for a full map, exactly pages 1..=page_count.
    pub entries: Vec<(u32, Id)>,
}

impl PageMap {
    pub fn full(page_size: u32, pages: &[Id]) -> PageMap {
        PageMap {
            page_size,
            page_count: pages.len() as u32,
            depth: 0,
            parent: Id::ZERO,
            entries: pages.iter().enumerate().map(|(i, id)| (i as u32 + 1, *id)).collect(),
        }
    }

    /// The cheaper of a delta against `parent` and a full map.
    pub fn against(page_size: u32, pages: &[Id], parent_id: Id, parent_depth: u32, parent_pages: &[Id]) -> PageMap {
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
            entries: changed,
        }
    }

    pub fn is_delta(&self) -> bool {
        !self.parent.is_zero()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.entries.len() * 36);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(if self.is_delta() { FLAG_DELTA } else { 0 });
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.page_count.to_le_bytes());
        out.extend_from_slice(&self.depth.to_le_bytes());
        out.extend_from_slice(&self.parent.0);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (pgno, id) in &self.entries {
            out.extend_from_slice(&pgno.to_le_bytes());
            out.extend_from_slice(&id.0);
        }
        out
    }

    pub fn from_bytes(b: &[u8], what: &str) -> Result<PageMap> {
        let bad = |m: &str| Error::bad_data(what, format!("page map: {m}"));
        if b.len() < HEADER_LEN || &b[..4] != MAGIC {
            return Err(bad("missing LBPM magic"));
        }
        if b[4] != VERSION {
            return Err(Error::config(what, format!("page map version {} is not supported", b[4])).fix("upgrade Lifeboat"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let delta = b[5] & FLAG_DELTA != 0;
        let page_size = u32_at(8);
        let page_count = u32_at(12);
        let depth = u32_at(16);
        let parent = Id(b[20..52].try_into().unwrap());
        let n = u32_at(52) as usize;
        if b.len() != HEADER_LEN + n * 36 {
            return Err(bad("length does not match entry count"));
        }
        if delta == parent.is_zero() {
            return Err(bad("delta flag and parent disagree"));
        }
        let entries: Vec<(u32, Id)> = b[HEADER_LEN..]
            .chunks_exact(36)
            .map(|c| (u32::from_le_bytes(c[..4].try_into().unwrap()), Id(c[4..].try_into().unwrap())))
            .collect();
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            return Err(bad("invalid page size"));
        }
        if entries.iter().any(|(p, _)| *p == 0 || *p > page_count) || entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(bad("page numbers out of order or range"));
        }
        if !delta && entries.len() != page_count as usize {
            return Err(bad("full map does not list every page"));
        }
        Ok(PageMap { page_size, page_count, depth, parent, entries })
    }

    /// Apply this map on top of `base` (the parent's resolved page list).
    pub fn apply(&self, base: &mut Vec<Id>) {
        base.resize(self.page_count as usize, Id::ZERO);
        for (pgno, id) in &self.entries {
            base[*pgno as usize - 1] = *id;
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
        let d = PageMap::against(4096, &next, Id::of(b"parent"), 0, &base);
        assert!(d.is_delta());
        assert_eq!(d.entries.len(), 2);
        let back = PageMap::from_bytes(&d.to_bytes(), "t").unwrap();
        assert_eq!(back, d);
        let mut resolved = base.clone();
        back.apply(&mut resolved);
        assert_eq!(resolved, next);
    }

    #[test]
    fn shrinking_and_mostly_changed_maps() {
        let base = ids(10);
        let shrunk = base[..6].to_vec();
        let d = PageMap::against(4096, &shrunk, Id::of(b"p"), 3, &base);
        assert!(d.is_delta() && d.entries.is_empty());
        let mut r = base.clone();
        d.apply(&mut r);
        assert_eq!(r, shrunk);

        let other: Vec<Id> = (0..10u8).map(|i| Id::of(&[i, 1])).collect();
        assert!(!PageMap::against(4096, &other, Id::of(b"p"), 0, &base).is_delta());
        assert!(!PageMap::against(4096, &base, Id::of(b"p"), MAX_DEPTH, &base).is_delta());
    }

    #[test]
    fn rejects_corruption() {
        let m = PageMap::full(4096, &ids(4));
        let mut b = m.to_bytes();
        b.truncate(b.len() - 1);
        assert!(PageMap::from_bytes(&b, "t").is_err());
        let mut b = m.to_bytes();
        b[52] = 9;
        assert!(PageMap::from_bytes(&b, "t").is_err());
    }
}
