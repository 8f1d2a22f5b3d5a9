//! `stats`: what the repository holds and what it costs. Object counts and
//! sizes by kind come from one listing; everything about blobs comes from the
//! loaded index and the snapshots' references; WAL streams from the listing
//! and two segments per stream.
//!
//! **Stored bytes of a blob.** Blobs share frames (up to 16 pages are
//! compressed together), so a blob has no stored size of its own. A frame's
//! stored `length` is divided among the blobs the index locates in it, in
//! proportion to their raw lengths, rounding so that the shares of one frame
//! add up to its length exactly (the share of the i-th blob in frame order is
//! `floor(L·c_i/T) − floor(L·c_{i−1}/T)`, `c_i` the raw bytes of blobs 1..=i,
//! `T` of all). A frame no indexed blob names (its blobs were indexed at
//! another location first) belongs to no blob; with pack headers and
//! trailers it is the packs' overhead.
//!
//! **Memory.** A repository may hold a thousand snapshots of a 1 GiB
//! database, each 262,144 pages, nearly all shared. Nothing here keeps a page
//! list per snapshot: each blob gets a compact key (its position in the
//! index's id order) and one `u32` of state (which single snapshot refers to
//! it, or "several"), so a snapshot's walk only touches that vector. Page
//! lists are resolved as positions (4 bytes a page instead of 32) and kept in
//! a small cache keyed by page map id: walking snapshots oldest first, each
//! delta map's parent is the map just resolved, so a chain is read once, not
//! once per snapshot. The index's own 56 bytes a blob stay the largest cost;
//! this module adds about 34 (and 20 more while frames are sorted, before
//! the walk). A thousand snapshots of a 1 GiB database, 308,000 blobs: 73 MiB
//! peak RSS for the whole command, 2.4 s of CPU.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::keys;
use crate::repo::manifest::Source;
use crate::repo::references::{MISSING, Walker};
use crate::repo::segment::Segment;
use crate::repo::{Opened, Repository, SnapshotRef};

/// Objects and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCount {
    /// How many objects.
    pub objects: u64,
    /// Their total size in bytes, as stored.
    pub bytes: u64,
}

impl ObjectCount {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// The repository's objects by kind (key prefix).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Objects {
    /// `data/`: pack files.
    pub packs: ObjectCount,
    /// `index/`: index files.
    pub index: ObjectCount,
    /// `snapshots/`: manifests.
    pub snapshots: ObjectCount,
    /// `wal/`: WAL segments (and anything else under `wal/`).
    pub wal: ObjectCount,
    /// Everything else: `config`, and prefixes this version does not know.
    pub other: ObjectCount,
    /// All of the above together.
    pub total: ObjectCount,
}

/// A set of distinct blobs: how many, their raw bytes and their stored
/// bytes (shares of frames, see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Blobs {
    /// How many distinct blobs.
    pub blobs: u64,
    /// Their decoded size in bytes.
    pub raw_bytes: u64,
    /// Their share of the stored frames, in bytes.
    pub stored_bytes: u64,
}

impl Blobs {
    fn add(&mut self, raw: u32, stored: u32) {
        self.blobs += 1;
        self.raw_bytes += raw as u64;
        self.stored_bytes += stored as u64;
    }
}

/// One snapshot's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotStats {
    /// The manifest id.
    pub id: Id,
    /// When it was taken.
    #[serde(with = "crate::rfc3339")]
    pub time: jiff::Timestamp,
    /// Full, partial or replication base.
    pub kind: crate::repo::manifest::SnapshotKind,
    /// Host that took it.
    pub host: String,
    /// Bytes its sources held (databases as page size times page count): what
    /// restoring it would write.
    pub logical_bytes: u64,
    /// What the snapshot stored when it was taken (its summary).
    pub added_stored_bytes: u64,
    /// Blobs no other snapshot refers to: what forgetting this snapshot
    /// alone would free.
    pub unique: Blobs,
}

/// One replication stream's WAL history.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    /// `wal/<stream>/`.
    pub stream: String,
    /// The database, as the newest base of the stream names it.
    pub path: Option<String>,
    /// WAL segments stored.
    pub segments: u64,
    /// Stored bytes under `wal/<stream>/`, segments and anything else there.
    pub bytes: u64,
    /// First commit the segments hold; `None` without segments.
    pub first_txid: Option<u64>,
    /// Last commit the segments hold; `None` without segments.
    pub last_txid: Option<u64>,
    /// When the replicator saw the first and the last commit (RFC 3339).
    pub first_commit: Option<String>,
    /// When the replicator saw the last commit (RFC 3339); `None` when unknown.
    pub last_commit: Option<String>,
    /// Snapshots of kind `base` that start from a point of this stream.
    pub bases: u64,
}

/// Everything [`compute`] reports (`lifeboat stats --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    /// Objects and bytes in the store, by kind.
    pub repository: Objects,
    /// Snapshots listed, replication bases included.
    pub snapshot_count: u64,
    /// Sum over snapshots of their `logical_bytes`: what restoring every
    /// snapshot would write.
    pub logical_bytes: u64,
    /// Every blob some snapshot refers to, once.
    pub referenced: Blobs,
    /// Indexed blobs no snapshot refers to: what pruning would free.
    pub unreferenced: Blobs,
    /// `logical_bytes / referenced.raw_bytes`; null when nothing is referenced.
    pub dedup_ratio: Option<f64>,
    /// `referenced.raw_bytes / referenced.stored_bytes`.
    pub compression_ratio: Option<f64>,
    /// Bytes of indexed packs that belong to no blob: headers, trailers, and
    /// frames whose blobs are indexed at another location.
    pub pack_overhead_bytes: u64,
    /// Packs in `data/` that no index file names (left by an interrupted
    /// writer; harmless, and not reused).
    pub unindexed_packs: ObjectCount,
    /// References to blobs the index does not have, or page maps that could
    /// not be read: 0 unless the repository is damaged (`verify` says where).
    pub missing_references: u64,
    /// Oldest first.
    pub snapshots: Vec<SnapshotStats>,
    /// One per stream that has objects under `wal/` or bases naming it, by name.
    pub wal_streams: Vec<StreamStats>,
}

/// Blob state: referred to by two snapshots or more.
const SHARED: u32 = u32::MAX;

/// `repo` is opened without its index (`Repository::open`): it is loaded
/// here, after the listing and the manifests, because a snapshot published
/// in between would otherwise refer to blobs the index does not have yet
/// (a writer publishes index files before its manifest).
///
/// ```
/// use lifeboat::{Repository, RepoLocation, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("server.toml"), "listen = 8443\n").unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// let repo = Repository::init(&location)?.locked("my-service")?;
/// let source = SourceSpec { name: "server.toml".into(), path: dir.path().join("server.toml"), kind: SourceKind::File };
/// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
/// for _ in 0..2 {
///     lifeboat::snapshot::take(&repo, &[source.clone()], &options, &lifeboat::progress::Silent)?;
/// }
///
/// let stats = lifeboat::stats::compute(&Repository::open(&location)?, &lifeboat::progress::Silent)?;
/// assert_eq!(stats.snapshot_count, 2);
/// // The unchanged file is stored once, and both snapshots refer to it.
/// assert_eq!(stats.referenced.blobs, 1);
/// assert_eq!(stats.dedup_ratio, Some(2.0));
/// assert_eq!(stats.snapshots[1].unique.blobs, 0);
/// # Ok(())
/// # }
/// ```
pub fn compute(repo: &Repository<Opened>, progress: &dyn Progress) -> Result<RepoStats> {
    let listing = repo.list_everything()?;
    let snaps = repo.snapshots()?;
    let repo = &repo.indexed()?;
    let index = repo.index();

    let Listing {
        objects,
        unindexed_packs,
        wal_keys,
        wal_other,
    } = sort_listing(&listing, index);

    let blobs = BlobSizes::new(index);
    if snaps.len() >= SHARED as usize {
        return Err(Error::bad_data(repo.location(), "too many snapshots to count"));
    }
    let logical_total: u64 = snaps.iter().map(|s| s.manifest.summary.logical_bytes).sum();
    let (state, missing) = reference_states(repo, &snaps, blobs.raw.len(), logical_total, progress)?;

    let (referenced, unreferenced, unique, shares_total) = tally(&state, &blobs, snaps.len());
    let pack_bytes: u64 = index.packs().iter().map(|(_, size)| size).sum();
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);

    let snapshots = snaps
        .iter()
        .zip(unique)
        .map(|(s, unique)| SnapshotStats {
            id: s.id,
            time: s.manifest.time,
            kind: s.manifest.kind,
            host: s.manifest.host.clone(),
            logical_bytes: s.manifest.summary.logical_bytes,
            added_stored_bytes: s.manifest.summary.added_stored_bytes,
            unique,
        })
        .collect();

    Ok(RepoStats {
        repository: objects,
        snapshot_count: snaps.len() as u64,
        logical_bytes: logical_total,
        referenced,
        unreferenced,
        dedup_ratio: ratio(logical_total, referenced.raw_bytes),
        compression_ratio: ratio(referenced.raw_bytes, referenced.stored_bytes),
        pack_overhead_bytes: pack_bytes.saturating_sub(shares_total),
        unindexed_packs,
        missing_references: missing,
        snapshots,
        wal_streams: wal_streams(repo, &snaps, wal_keys, wal_other, progress)?,
    })
}

/// The whole repository's listing, sorted: objects and bytes by prefix,
/// packs no index lists, and per WAL stream its segments and other files.
struct Listing {
    objects: Objects,
    unindexed_packs: ObjectCount,
    /// Per stream: (first txid, last txid, key, size) of each segment.
    wal_keys: BTreeMap<String, Vec<(u64, u64, String, u64)>>,
    wal_other: BTreeMap<String, ObjectCount>,
}

/// Objects and bytes by kind from a listing of the whole repository: what
/// the repository weighs, from the listing alone. The local writer's lock
/// file and staging area are not repository objects (in a bucket both live
/// in the host's working directory).
pub(crate) fn count_objects(listing: &[(String, u64)]) -> Objects {
    let mut objects = Objects::default();
    for (key, size) in listing {
        let kind = match keys::Kind::of(key) {
            Some(keys::Kind::Lock | keys::Kind::Staging) => continue,
            Some(keys::Kind::Pack) => &mut objects.packs,
            Some(keys::Kind::Index) => &mut objects.index,
            Some(keys::Kind::Snapshot) => &mut objects.snapshots,
            Some(keys::Kind::Segment) => &mut objects.wal,
            _ => &mut objects.other,
        };
        kind.add(*size);
        objects.total.add(*size);
    }
    objects
}

fn sort_listing(listing: &[(String, u64)], index: &crate::repo::index::Index) -> Listing {
    let indexed_packs: HashSet<Id> = index.packs().iter().map(|(id, _)| *id).collect();
    let mut unindexed_packs = ObjectCount::default();
    let mut wal_keys: BTreeMap<String, Vec<(u64, u64, String, u64)>> = BTreeMap::new();
    let mut wal_other: BTreeMap<String, ObjectCount> = BTreeMap::new();
    for (key, size) in listing {
        let rest = key.split_once('/').map_or("", |(_, rest)| rest);
        match keys::Kind::of(key) {
            Some(keys::Kind::Pack) => {
                let id = keys::object_id(key);
                if !id.is_some_and(|id| indexed_packs.contains(&id)) {
                    unindexed_packs.add(*size);
                }
            }
            Some(keys::Kind::Segment) => {
                let stream = rest.split('/').next().unwrap_or_default().to_string();
                match keys::parse_segment(key) {
                    Some((first, last)) => wal_keys
                        .entry(stream)
                        .or_default()
                        .push((first, last, key.clone(), *size)),
                    None => wal_other.entry(stream).or_default().add(*size),
                }
            }
            _ => {}
        }
    }
    Listing {
        objects: count_objects(listing),
        unindexed_packs,
        wal_keys,
        wal_other,
    }
}

/// Every snapshot's references walked, one state per blob (0 none, s + 1
/// only snapshot s, SHARED more); and the references that could not be
/// counted.
fn reference_states(
    repo: &Repository,
    snaps: &[SnapshotRef],
    blobs: usize,
    logical_total: u64,
    progress: &dyn Progress,
) -> Result<(Vec<u32>, u64)> {
    // One state per blob: 0 none, s + 1 only snapshot s so far, SHARED more.
    let mut state = vec![0u32; blobs];
    let mut missing = 0u64;
    let mut unreadable_maps = 0u64;
    let mut walker = Walker::new(repo)?;
    progress.begin("counting references", logical_total);
    for (s, snap) in snaps.iter().enumerate() {
        let tag = s as u32 + 1;
        let mut visit = |pos: u32| {
            if pos == MISSING {
                missing += 1;
                return;
            }
            let st = &mut state[pos as usize];
            if *st == 0 {
                *st = tag;
            } else if *st != tag {
                *st = SHARED;
            }
        };
        // A damaged or lost map is verify's business; count it and go on.
        let mut unreadable = |name: &str, e: Error| {
            if !matches!(e.kind, ErrorKind::BadData | ErrorKind::NoInput) {
                return Err(e);
            }
            progress.warn(&format!(
                "snapshot {}: {name}: page map unreadable, its pages are not counted: {}",
                snap.id.short(),
                e.problem
            ));
            unreadable_maps += 1;
            Ok(())
        };
        walker.visit(snaps, s, &mut visit, &mut unreadable)?;
        progress.advance(snap.manifest.summary.logical_bytes);
    }
    progress.end();
    Ok((state, missing + unreadable_maps))
}

/// Referenced and unreferenced blobs, each snapshot's unique ones, and the
/// stored bytes of every blob together.
fn tally(state: &[u32], blobs: &BlobSizes, snapshots: usize) -> (Blobs, Blobs, Vec<Blobs>, u64) {
    let mut referenced = Blobs::default();
    let mut unreferenced = Blobs::default();
    let mut unique = vec![Blobs::default(); snapshots];
    let mut shares_total = 0u64;
    for (pos, st) in state.iter().enumerate() {
        let (raw, stored) = (blobs.raw[pos], blobs.share[pos]);
        shares_total += stored as u64;
        match *st {
            0 => unreferenced.add(raw, stored),
            SHARED => referenced.add(raw, stored),
            t => {
                referenced.add(raw, stored);
                unique[t as usize - 1].add(raw, stored);
            }
        }
    }
    (referenced, unreferenced, unique, shares_total)
}

/// Raw and stored bytes of every blob, in the index's id order.
struct BlobSizes {
    raw: Vec<u32>,
    /// Stored bytes: the blob's share of its frame.
    share: Vec<u32>,
}

impl BlobSizes {
    fn new(index: &Index) -> BlobSizes {
        let n = index.blob_count();
        let mut t = BlobSizes {
            raw: Vec::with_capacity(n),
            share: vec![0; n],
        };
        // (pack, frame offset, blob offset, position, frame length): sorted,
        // the blobs of each frame come together in frame order.
        let mut frames: Vec<(u32, u32, u32, u32, u32)> = Vec::with_capacity(n);
        for (pos, (_, loc)) in index.iter().enumerate() {
            t.raw.push(loc.raw_length);
            frames.push((loc.pack, loc.offset, loc.blob_offset, pos as u32, loc.length));
        }
        frames.sort_unstable();
        for frame in frames.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let len = frame[0].4 as u128;
            let total: u128 = frame.iter().map(|f| t.raw[f.3 as usize] as u128).sum();
            let (mut cum, mut given) = (0u128, 0u128);
            for f in frame {
                cum += t.raw[f.3 as usize] as u128;
                // A frame of empty blobs goes whole to the first.
                let upto = (len * cum).checked_div(total).unwrap_or(len);
                t.share[f.3 as usize] = (upto - given) as u32;
                given = upto;
            }
        }
        t
    }
}

fn wal_streams(
    repo: &Repository,
    snaps: &[SnapshotRef],
    mut keys: BTreeMap<String, Vec<(u64, u64, String, u64)>>,
    other: BTreeMap<String, ObjectCount>,
    progress: &dyn Progress,
) -> Result<Vec<StreamStats>> {
    // Bases name their stream; newest last, so the path kept is the newest.
    let mut bases: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for s in snaps
        .iter()
        .filter(|s| s.manifest.kind == crate::repo::manifest::SnapshotKind::Base)
    {
        for src in &s.manifest.sources {
            if let Source::Sqlite(db) = src
                && let Some(r) = &db.replication
            {
                let e = bases.entry(r.stream.clone()).or_default();
                e.0 += 1;
                e.1 = db.path.clone();
            }
        }
    }
    let names: HashSet<&String> = keys.keys().chain(other.keys()).chain(bases.keys()).collect();
    let mut names: Vec<String> = names.into_iter().cloned().collect();
    names.sort();
    let mut out = Vec::new();
    for stream in names {
        let segs = keys.remove(&stream).unwrap_or_default();
        let extra = other.get(&stream).copied().unwrap_or_default();
        let first = segs.iter().min_by_key(|s| (s.0, s.1));
        let last = segs.iter().max_by_key(|s| (s.1, s.0));
        // Segments hold no index of their commits: the first and last are
        // read whole for the times of their first and last commit.
        let time_of = |seg: Option<&(u64, u64, String, u64)>, newest: bool| -> Result<Option<String>> {
            let Some((_, _, key, _)) = seg else {
                return Ok(None);
            };
            let what = repo.object_name(key);
            let decoded = repo.read_object(key).and_then(|raw| Segment::decode(&raw, &what));
            let seg = match decoded {
                Ok(s) => s,
                Err(e) if e.kind == ErrorKind::BadData || e.kind == ErrorKind::NoInput => {
                    progress.warn(&format!("{what}: {}", e.problem));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let c = if newest {
                seg.commits.last()
            } else {
                seg.commits.first()
            };
            Ok(c.and_then(|c| jiff::Timestamp::from_nanosecond(c.time_ns as i128).ok())
                .map(|t| t.to_string()))
        };
        let (n, path) = bases.get(&stream).cloned().unwrap_or_default();
        out.push(StreamStats {
            path: (!path.is_empty()).then_some(path),
            segments: segs.len() as u64,
            bytes: segs.iter().map(|s| s.3).sum::<u64>() + extra.bytes,
            first_txid: first.map(|s| s.0),
            last_txid: last.map(|s| s.1),
            first_commit: time_of(first, false)?,
            last_commit: time_of(last, true)?,
            bases: n,
            stream,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::index::{IndexFile, IndexedPack};
    use crate::repo::pack::{BlobEntry, BlobType};

    fn entry(id: Id, offset: u32, length: u32, blob_offset: u32, raw_length: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobType::Page,
            id,
            offset,
            length,
            blob_offset,
            raw_length,
        }
    }

    #[test]
    fn frames_are_shared_by_raw_length_and_add_up() {
        let ids: Vec<Id> = (0..5u8).map(|i| Id::of(&[i])).collect();
        let mut index = Index::default();
        index.add_file(&IndexFile {
            packs: vec![IndexedPack {
                id: Id::of(b"pack"),
                size: 200,
                blobs: vec![
                    // One frame of 10 stored bytes, three equal blobs.
                    entry(ids[0], 0, 10, 0, 100),
                    entry(ids[1], 0, 10, 100, 100),
                    entry(ids[2], 0, 10, 200, 100),
                    // One of 7 bytes, blobs of 1 and 3 raw bytes.
                    entry(ids[3], 10, 7, 0, 1),
                    entry(ids[4], 10, 7, 1, 3),
                ],
            }],
        });
        index.seal();
        let t = BlobSizes::new(&index);
        let positions = crate::repo::references::BlobPositions::new(&index).unwrap();
        let share = |i: usize| t.share[positions.position(&ids[i]) as usize];
        assert_eq!((share(0), share(1), share(2)), (3, 3, 4));
        assert_eq!((share(3), share(4)), (1, 6));
    }
}
