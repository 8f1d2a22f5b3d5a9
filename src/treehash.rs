//! The BLAKE3 hash of a whole database file, assembled from per-page chaining
//! values instead of a second pass over every byte.
//!
//! BLAKE3 is a Merkle tree over 1 KiB chunks, and a page of 1 KiB or more at
//! a page-aligned offset is exactly one complete subtree. A page's chaining
//! value depends on its content and position, so it is kept in the page map;
//! a later snapshot recomputes it only for pages that changed and merges the
//! tree again (one compression per parent node, ~20 ms for a GiB). The result
//! is the same hash `b3sum` prints for the file.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::id::Id;

/// Whether pages of this size are whole BLAKE3 subtrees.
pub fn supported(page_size: u32) -> bool {
    page_size >= 1024 && page_size.is_power_of_two()
}

/// The chaining value of page `pgno` (1-based) with this content.
pub fn page_cv(page: &[u8], pgno: u32) -> Id {
    let mut h = blake3::Hasher::new();
    h.set_input_offset((pgno as u64 - 1) * page.len() as u64);
    h.update(page);
    Id(h.finalize_non_root())
}

/// The root hash of the file made of these pages, given every page's
/// chaining value and the first page's plain hash (a one-page file's root
/// is the hash of that page, which has no parent node).
pub fn file_hash(cvs: &[Id], first_page_id: Id) -> Id {
    match cvs.len() {
        0 => Id(*blake3::hash(&[]).as_bytes()),
        1 => first_page_id,
        n => {
            let left = left_pages(n);
            // The halves on two threads: one compression per page, ~20 ms
            // for a GiB, paid after the last page is read.
            let (l, r) = std::thread::scope(|scope| {
                let right = scope.spawn(|| subtree(&cvs[left..]));
                (subtree(&cvs[..left]), right.join().expect("tree hash thread"))
            });
            Id(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
        }
    }
}

fn subtree(cvs: &[Id]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0].0;
    }
    let left = left_pages(cvs.len());
    merge_subtrees_non_root(&subtree(&cvs[..left]), &subtree(&cvs[left..]), Mode::Hash)
}

/// BLAKE3's split: the left subtree holds the largest power of two of
/// chunks (here, pages) strictly less than the total.
fn left_pages(n: usize) -> usize {
    debug_assert!(n > 1);
    n.div_ceil(2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_blake3_of_the_whole_file() {
        for page_size in [1024usize, 4096, 65536] {
            for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 100] {
                if page_size == 65536 && n > 17 {
                    continue;
                }
                let file: Vec<u8> = (0..n * page_size)
                    .map(|i| (i * 31 % 251) as u8 ^ (i / page_size) as u8)
                    .collect();
                let cvs: Vec<Id> = file
                    .chunks(page_size)
                    .enumerate()
                    .map(|(i, p)| page_cv(p, i as u32 + 1))
                    .collect();
                let first = Id::of(&file[..page_size]);
                assert_eq!(
                    file_hash(&cvs, first),
                    Id::of(&file),
                    "page_size {page_size}, {n} pages"
                );
            }
        }
    }

    #[test]
    fn only_changed_pages_need_new_values() {
        let ps = 4096;
        let mut file: Vec<u8> = (0..50 * ps).map(|i| (i % 253) as u8).collect();
        let mut cvs: Vec<Id> = file
            .chunks(ps)
            .enumerate()
            .map(|(i, p)| page_cv(p, i as u32 + 1))
            .collect();
        file[7 * ps + 5] ^= 0xff;
        cvs[7] = page_cv(&file[7 * ps..8 * ps], 8);
        assert_eq!(file_hash(&cvs, Id::of(&file[..ps])), Id::of(&file));
        assert!(!supported(512) && supported(1024) && supported(65536));
    }
}
