//! Fetching many small blobs at once: the chunks of a directory's files.
//! One ranged read per chunk, one at a time, made a restore of a few hundred
//! small files on an object store take minutes (a round trip each, and a
//! backoff for each that failed); here the chunks are grouped by pack,
//! neighbouring frames read as one span, every pack's spans in one streamed
//! request, and `transfers` packs in flight at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::codec::Decoder;
use crate::error::{Error, ErrorCode, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Location;
use crate::repo::keys;

/// Frames closer than this are read as one span: the bytes between cost
/// less than another range.
const SPAN_GAP: u64 = 64 << 10;

/// One frame of a pack and the blobs wanted from it.
struct Frame {
    offset: u32,
    length: u32,
    blobs: Vec<(Id, Location)>,
}

/// [`fetch`], read again once when a check fails: a body damaged in
/// transit is not damage in the repository.
pub fn fetch_checked(repo: &Repository, ids: &[Id]) -> Result<HashMap<Id, Vec<u8>>> {
    match fetch(repo, ids) {
        Err(e) if super::read_again(&e) => {
            tracing::warn!(event = "repo.read_again", error = %e, "reading the chunks again before calling them damaged");
            fetch(repo, ids)
        }
        other => other,
    }
}

/// Every blob in `ids`, by id, each checked against its hash.
pub fn fetch(repo: &Repository, ids: &[Id]) -> Result<HashMap<Id, Vec<u8>>> {
    // Frames by pack and offset.
    let mut packs: BTreeMap<u32, BTreeMap<u32, Frame>> = BTreeMap::new();
    for id in ids {
        let loc = repo
            .index()
            .get(id)
            .ok_or_else(|| Error::damaged(repo.location(), format!("blob {} is not in the index", id.short())))?;
        let frame = packs.entry(loc.pack).or_default().entry(loc.offset).or_insert(Frame {
            offset: loc.offset,
            length: loc.length,
            blobs: Vec::new(),
        });
        if !frame.blobs.iter().any(|(have, _)| have == id) {
            frame.blobs.push((*id, loc));
        }
    }
    let jobs: Vec<(u32, Vec<Frame>)> = packs
        .into_iter()
        .map(|(pack, frames)| (pack, frames.into_values().collect()))
        .collect();
    let out = Mutex::new(HashMap::with_capacity(ids.len()));
    let workers = repo.transfers().max(1);
    crate::workers::for_each(workers, jobs, Decoder::default, |dec, (pack, frames)| {
        fetch_pack(repo, pack, &frames, dec, &out)
    })?;
    Ok(out.into_inner().expect("blobs"))
}

/// The frames of one pack (sorted by offset), read in spans of neighbouring
/// frames with one `read_ranges`; each blob is cut out and hash-checked.
fn fetch_pack(
    repo: &Repository,
    pack: u32,
    frames: &[Frame],
    dec: &mut Decoder,
    out: &Mutex<HashMap<Id, Vec<u8>>>,
) -> Result<()> {
    let key = keys::pack(&repo.index().pack(pack).0);
    let what = repo.object_name(&key);
    // Spans: (start, end, first frame, end frame).
    let mut spans: Vec<(u64, u64, usize, usize)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let (start, end) = (f.offset as u64, f.offset as u64 + f.length as u64);
        match spans.last_mut() {
            Some(span) if start <= span.1 + SPAN_GAP => {
                span.1 = span.1.max(end);
                span.3 = i + 1;
            }
            _ => spans.push((start, end, i, i + 1)),
        }
    }
    let ranges: Vec<(u64, u64)> = spans.iter().map(|&(s, e, _, _)| (s, e - s)).collect();
    let mut next = spans.iter();
    let read = repo.read_object_ranges(&key, &ranges, &mut |buf| {
        let &(start, _, first, end) = next.next().expect("one buffer per range");
        for Frame { offset, length, blobs } in &frames[first..end] {
            let at = (*offset as u64 - start) as usize;
            let raw = buf
                .get(at..at + *length as usize)
                .ok_or_else(|| Error::damaged(&what, "a frame lies outside the bytes read"))?;
            let frame = dec.decode(raw, &what)?;
            let mut got = Vec::with_capacity(blobs.len());
            for (id, loc) in blobs {
                let (s, n) = (loc.blob_offset as usize, loc.raw_length as usize);
                let data = frame
                    .get(s..s + n)
                    .ok_or_else(|| Error::damaged(&what, format!("blob {} lies outside its frame", id.short())))?;
                if Id::of(data) != *id {
                    return Err(Error::damaged(
                        &what,
                        format!("blob {} does not match its hash", id.short()),
                    ));
                }
                got.push((*id, data.to_vec()));
            }
            out.lock().expect("blobs").extend(got);
        }
        Ok(())
    });
    read.map_err(|e| missing_is_damage(e, &what))
}

/// A pack the index names but the store does not have is damage (65), not
/// a missing input the operator could supply (66).
pub fn missing_is_damage(e: Error, what: &str) -> Error {
    if e.kind == crate::error::ErrorKind::NoInput {
        Error::damaged(what, "pack is missing from the repository").code(ErrorCode::RepoPackMissing)
    } else {
        e
    }
}
