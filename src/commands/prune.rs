//! `prune`: delete what no snapshot references, without a lock that blocks
//! backups, in two phases (docs/FORMAT.md, "Deletion").
//!
//! 1. **Mark.** Packs holding no referenced blob (and packs found in `data/`
//!    that no index file lists) are recorded in a mark, with their index
//!    records, and leave the index files. Packs mostly unused are first
//!    repacked: their referenced blobs are copied into new packs, then the
//!    old packs are marked like the others.
//! 2. **Sweep**, in a later run: a marked pack is deleted once every mark
//!    naming it is older than the grace period and it is still unreferenced.
//!    A marked pack that a snapshot needs (a writer that loaded the index
//!    before the mark reused its blobs) is indexed again instead.
//!
//! Why this is safe beside writers that hold no common lock: a writer reuses
//! only blobs of packs no mark names, as of when it listed the marks, and
//! publishes everything within [`writer_view_limit`] of that listing (or
//! stops, `Repository::check_view`). A grace period of at least twice that
//! limit means any snapshot built on a pack before its mark existed is
//! visible to the prune that would delete the pack, which then recovers it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, ErrorCode, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::keys;
use crate::repo::mark::Mark;
use crate::repo::pack::Member;
use crate::repo::references::{MISSING, Walker};
use crate::repo::writer::BlobWriter;
use crate::repo::{LockedRepository, Opened, Repository, SnapshotRef, writer_view_limit};

/// Index records per rewritten index file (as a snapshot writes them).
const INDEX_BLOBS: usize = 65536;
/// Blobs per frame when repacking (as capture groups pages).
const REPACK_FRAME_BLOBS: usize = 16;

/// How [`prune`] behaves.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How old a mark must be before its packs are deleted.
    pub grace: Duration,
    /// Repack a pack when at least this fraction of its bytes is unused.
    pub repack_unused: f64,
    /// Decide and report, but change nothing (and take no lock).
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: DEFAULT_GRACE,
            repack_unused: 0.5,
            dry_run: false,
        }
    }
}

/// The grace period when none is given: one hour.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// The shortest grace period that is safe while other writers run.
pub fn safe_grace() -> Duration {
    writer_view_limit() * 2
}

/// What [`prune`] found and did (with `dry_run`: would do). Counts of packs
/// and blobs; `*_bytes` are stored (compressed) bytes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose references were walked, replication bases included.
    pub snapshots: usize,
    /// Distinct blobs those snapshots reference.
    pub referenced_blobs: u64,
    /// Packs in the index files at the start, marked packs not counted.
    pub packs: u64,
    /// Packs marked by this run (unused, repacked, or not indexed).
    pub marked_packs: u64,
    /// Stored bytes of the packs marked by this run.
    pub marked_bytes: u64,
    /// Of those, packs found in `data/` that no index file listed.
    pub unindexed_packs: u64,
    /// Packs whose referenced blobs were copied into new packs, then marked.
    pub repacked_packs: u64,
    /// Blobs copied by repacking.
    pub repacked_blobs: u64,
    /// Stored bytes of the new packs written by repacking.
    pub repack_written_bytes: u64,
    /// Marked packs a snapshot needed, indexed again.
    pub recovered_packs: u64,
    /// Marked packs deleted, their grace period over.
    pub deleted_packs: u64,
    /// Stored bytes of those packs.
    pub deleted_bytes: u64,
    /// Marks past their grace period, deleted after their packs.
    pub deleted_marks: u64,
    /// Marked packs waiting for their grace period.
    pub waiting_packs: u64,
    /// Stored bytes of the packs waiting for their grace period.
    pub waiting_bytes: u64,
    /// Index files written (rewrites without marked packs, repacks, recoveries).
    pub index_files_written: u64,
    /// Index files deleted, replaced by rewritten ones.
    pub index_files_deleted: u64,
    /// Packs the index lists that are missing from `data/`.
    pub missing_packs: u64,
}

/// One bit per blob of the index, by its position in the index's id order
/// ([`crate::repo::index::Index::at`]).
pub struct Referenced {
    bits: Vec<u64>,
    /// How many blobs are referenced.
    pub count: u64,
}

impl Referenced {
    fn new(blobs: usize) -> Referenced {
        Referenced {
            bits: vec![0; blobs.div_ceil(64)],
            count: 0,
        }
    }
    fn set(&mut self, pos: u32) {
        let (w, b) = (pos as usize / 64, pos % 64);
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }
    /// Whether the blob at index position `pos` is referenced.
    pub fn get(&self, pos: usize) -> bool {
        self.bits[pos / 64] & (1 << (pos % 64)) != 0
    }
    /// The index positions of every referenced blob, ascending.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits
            .iter()
            .enumerate()
            .flat_map(|(w, &word)| (0..64).filter(move |b| word & (1 << b) != 0).map(move |b| w * 64 + b))
    }
}

/// Every blob the snapshots reference, directly or through page maps.
/// Refuses (bad data) when a snapshot needs a blob no index lists: deleting
/// anything from a damaged repository could only make it worse.
pub fn referenced(repo: &Repository, snaps: &[SnapshotRef], progress: &dyn Progress) -> Result<Referenced> {
    let mut refs = Referenced::new(repo.index().blob_count());
    let mut walker = Walker::new(repo)?;
    progress.begin_items("reading snapshots", snaps.len() as u64);
    for (s, snap) in snaps.iter().enumerate() {
        let mut missing = 0u64;
        walker.visit(
            snaps,
            s,
            &mut |pos| match pos {
                MISSING => missing += 1,
                pos => refs.set(pos),
            },
            &mut |_, e| Err(e),
        )?;
        if missing > 0 {
            return Err(Error::bad_data(
                format!("snapshot {}", snap.id.short()),
                format!("references {missing} blobs that no index file lists"),
            )
            .fix("run `lifeboat verify` to see the damage; prune deletes nothing from a damaged repository")
            .code(ErrorCode::PruneMissingBlob));
        }
        progress.advance(1);
    }
    progress.end();
    Ok(refs)
}

/// What prune decided for one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Live, nothing referenced: mark.
    Unused,
    /// Live, mostly unused: copy what is referenced, then mark.
    Repack,
    /// Marked, but a snapshot needs it: index again.
    Recover,
    /// Marked, unreferenced: deleted once its marks are old.
    Marked,
}

/// Run both phases. Everything is decided without a lock (the protocol
/// makes that safe, module comment); this host's writer lock is taken with
/// `lock` only for the changes, so a snapshot here waits seconds, not for
/// the whole prune.
pub fn prune(
    repo: &Repository<Opened>,
    opts: &PruneOptions,
    progress: &dyn Progress,
    lock: &mut dyn FnMut(&Repository) -> Result<Box<dyn crate::storage::LockGuard>>,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Everything decided below is decided from what was listed after this
    // instant; a mark must be this much older than the grace period.
    let listed_at = jiff::Timestamp::now();
    // Snapshots before the index: a writer publishes its index files before
    // its manifest, so every manifest listed here has its index files in
    // the listing that follows.
    let snaps = repo.snapshots_whole()?;
    let repo = repo.indexed_then_marks()?;
    repo.require_whole_index()?;
    report.snapshots = snaps.len();
    let refs = referenced(&repo, &snaps, progress)?;
    report.referenced_blobs = refs.count;

    let usage = pack_usage(&repo, &refs)?;
    let fates = fates(&repo, &usage, opts);
    let n_packs = fates.len();
    report.packs = fates
        .iter()
        .filter(|f| !matches!(f, Fate::Marked | Fate::Recover))
        .count() as u64;
    let unindexed = unindexed_packs(&repo, &fates, &mut report)?;

    // From here on the repository changes: the staging directory this
    // host's writers share is used by repacking. The lock keeps the view
    // the decisions above were made from (no refresh).
    let (plain, mut locked) = if opts.dry_run {
        (Some(repo), None)
    } else {
        let guard = lock(&repo)?;
        (None, Some(LockedRepository::holding(repo, guard)))
    };

    // Recovery first: a snapshot needs these now.
    let recover = recover_marked(viewed(&plain, &locked), &fates, &mut report);
    if let Some(l) = &locked
        && !recover.is_empty()
    {
        l.write_index(&IndexFile { packs: recover.clone() })?;
        report.index_files_written += 1;
        tracing::info!(event = "prune.recovered", packs = recover.len());
    }

    sweep(viewed(&plain, &locked), opts, listed_at, &fates, &recover, &mut report)?;

    // Phase 1: repack, then mark.
    let repack: Vec<u32> = (0..n_packs as u32)
        .filter(|&p| fates[p as usize] == Fate::Repack)
        .collect();
    report.repacked_packs = repack.len() as u64;
    if let Some(l) = &mut locked
        && !repack.is_empty()
    {
        let (blobs, written) = repack_packs(l, &repack, &refs, progress)?;
        report.repacked_blobs = blobs;
        report.repack_written_bytes = written;
        report.index_files_written += 1;
    }
    let to_mark: HashSet<u32> = (0..n_packs as u32)
        .filter(|&p| matches!(fates[p as usize], Fate::Unused | Fate::Repack))
        .collect();
    if to_mark.is_empty() && unindexed.is_empty() {
        return Ok(report);
    }
    let marking = plan_mark(
        viewed(&plain, &locked),
        &to_mark,
        unindexed,
        &usage.listed_by,
        &mut report,
    )?;
    if let Some(l) = &mut locked {
        mark_and_unlist(l, marking, &mut report)?;
    }
    Ok(report)
}

/// The repository as the decisions see it, locked or (a dry run) not.
fn viewed<'a>(plain: &'a Option<Repository>, locked: &'a Option<LockedRepository>) -> &'a Repository {
    match (plain, locked) {
        (Some(r), _) => r,
        (_, Some(l)) => l,
        (None, None) => unreachable!("prune holds its repository one way or the other"),
    }
}

/// Which index files list which packs, and each pack's raw bytes: in total
/// over every record (duplicates included), and referenced.
struct Usage {
    /// By index file (in `repo.index_keys` order): the packs it lists.
    listed_by: Vec<Vec<u32>>,
    total_raw: Vec<u64>,
    used_raw: Vec<u64>,
}

fn pack_usage(repo: &Repository, refs: &Referenced) -> Result<Usage> {
    let n_packs = repo.index().packs().len();
    let mut total_raw = vec![0u64; n_packs];
    let mut listed_by: Vec<Vec<u32>> = Vec::with_capacity(repo.index_keys().len());
    let keys: Vec<(usize, String)> = repo.index_keys().iter().cloned().enumerate().collect();
    listed_by.resize(keys.len(), Vec::new());
    repo.read_objects(keys, |i, key, raw| {
        let file = repo.parse_index_file(&key, &raw?)?;
        for p in &file.packs {
            let pos = repo.index().pack_position(&p.id).expect("loaded from this file");
            total_raw[pos as usize] += p.blobs.iter().map(|b| b.raw_length as u64).sum::<u64>();
            listed_by[i].push(pos);
        }
        Ok(())
    })?;
    for (_, mark) in repo.marks() {
        for p in &mark.packs.packs {
            let pos = repo.index().pack_position(&p.id).expect("loaded from the mark") as usize;
            if repo.index().is_marked(pos as u32) {
                total_raw[pos] = total_raw[pos].max(p.blobs.iter().map(|b| b.raw_length as u64).sum());
            }
        }
    }
    let mut used_raw = vec![0u64; n_packs];
    for pos in refs.positions() {
        let (_, loc) = repo.index().at(pos);
        used_raw[loc.pack as usize] += loc.raw_length as u64;
    }
    Ok(Usage {
        listed_by,
        total_raw,
        used_raw,
    })
}

/// What becomes of each pack: kept, marked (unused, or repacked first when
/// mostly unused), recovered (marked but needed), or left marked.
fn fates(repo: &Repository, usage: &Usage, opts: &PruneOptions) -> Vec<Fate> {
    let Usage {
        total_raw, used_raw, ..
    } = usage;
    let n_packs = total_raw.len();
    let mut fates = vec![Fate::Keep; n_packs];
    for (p, fate) in fates.iter_mut().enumerate() {
        let marked = repo.index().is_marked(p as u32);
        *fate = match (marked, used_raw[p]) {
            (true, 0) => Fate::Marked,
            (true, _) => Fate::Recover,
            (false, 0) => Fate::Unused,
            (false, used) => {
                let unused = 1.0 - used as f64 / total_raw[p].max(1) as f64;
                if unused >= opts.repack_unused {
                    Fate::Repack
                } else {
                    Fate::Keep
                }
            }
        };
    }
    fates
}

/// Packs in the store that nothing indexes: left by writers that died
/// before indexing, or being written right now (which the grace period
/// lets finish). Indexed packs missing from the store are counted.
fn unindexed_packs(repo: &Repository, fates: &[Fate], report: &mut PruneReport) -> Result<Vec<IndexedPack>> {
    let mut present: HashSet<Id> = HashSet::new();
    let mut unindexed: Vec<IndexedPack> = Vec::new();
    for (key, size) in repo.list_objects(keys::Kind::Pack)? {
        let Some(id) = key.rsplit('/').next().and_then(Id::parse) else {
            continue;
        };
        present.insert(id);
        if repo.index().pack_position(&id).is_none() {
            unindexed.push(IndexedPack {
                id,
                size,
                blobs: Vec::new(),
            });
        }
    }
    for (p, fate) in fates.iter().enumerate() {
        if *fate != Fate::Marked && !present.contains(&repo.index().pack(p as u32).0) {
            report.missing_packs += 1;
            tracing::warn!(event = "prune.pack_missing", pack = %repo.index().pack(p as u32).0.short());
        }
    }
    Ok(unindexed)
}

/// The marked packs a snapshot needs, to index again (prune writes them
/// first, unless it is a dry run).
fn recover_marked(repo: &Repository, fates: &[Fate], report: &mut PruneReport) -> Vec<IndexedPack> {
    let recover: Vec<IndexedPack> = repo
        .marks()
        .iter()
        .flat_map(|(_, m)| m.packs.packs.iter())
        .filter(|p| {
            let pos = repo.index().pack_position(&p.id).expect("loaded") as usize;
            fates[pos] == Fate::Recover && !p.blobs.is_empty()
        })
        .cloned()
        .collect::<Vec<_>>();
    let recover = dedup_packs(recover);
    report.recovered_packs = recover.len() as u64;
    recover
}

/// Phase 1's end, decided: the mark holding the records of the packs to
/// mark and of the unindexed ones, the records the rewritten index files
/// keep, and the index files they replace.
struct Marking {
    mark: Mark,
    kept_records: Vec<IndexedPack>,
    affected: Vec<usize>,
}

fn plan_mark(
    repo: &Repository,
    to_mark: &HashSet<u32>,
    unindexed: Vec<IndexedPack>,
    listed_by: &[Vec<u32>],
    report: &mut PruneReport,
) -> Result<Marking> {
    // The records to keep in the mark come from the index files that list
    // the packs; those files are the ones to rewrite.
    let affected: Vec<usize> = (0..listed_by.len())
        .filter(|&i| listed_by[i].iter().any(|p| to_mark.contains(p)))
        .collect();
    let (marked_records, kept_records) = split_records(repo, &affected, to_mark)?;
    report.unindexed_packs = unindexed.len() as u64;
    let mut mark = Mark {
        time: jiff::Timestamp::now(),
        packs: IndexFile {
            packs: marked_records.into_values().chain(unindexed).collect(),
        },
    };
    mark.packs.packs.sort_by_key(|p| p.id);
    report.marked_packs = mark.packs.packs.len() as u64;
    report.marked_bytes = mark.packs.packs.iter().map(|p| p.size).sum();
    Ok(Marking {
        mark,
        kept_records,
        affected,
    })
}

/// Write the mark before the index files that list its packs are
/// rewritten without them.
fn mark_and_unlist(repo: &mut LockedRepository, marking: Marking, report: &mut PruneReport) -> Result<()> {
    let Marking {
        mark,
        kept_records,
        affected,
    } = marking;
    let mark_id = repo.write_mark(mark)?;
    tracing::info!(event = "prune.marked", mark = %mark_id.short(), packs = report.marked_packs, bytes = report.marked_bytes);
    // Only now may the packs leave the index: the mark holds their records.
    for chunk in chunk_packs(kept_records) {
        repo.write_index(&IndexFile { packs: chunk })?;
        report.index_files_written += 1;
    }
    for &i in &affected {
        repo.delete_object(&repo.index_keys()[i])?;
        report.index_files_deleted += 1;
    }
    Ok(())
}

/// The records of the `affected` index files: those of packs to mark, and
/// (once each) those to keep.
fn split_records(
    repo: &Repository,
    affected: &[usize],
    to_mark: &HashSet<u32>,
) -> Result<(HashMap<Id, IndexedPack>, Vec<IndexedPack>)> {
    let mut marked_records: HashMap<Id, IndexedPack> = HashMap::new();
    let mut kept_records: Vec<IndexedPack> = Vec::new();
    let mut kept_seen: HashSet<Id> = HashSet::new();
    for &i in affected {
        let key = &repo.index_keys()[i];
        let file = repo.read_index_file(key)?;
        for p in file.packs {
            let pos = repo.index().pack_position(&p.id).expect("loaded");
            if to_mark.contains(&pos) {
                marked_records.entry(p.id).or_insert(p);
            } else if kept_seen.insert(p.id) {
                kept_records.push(p);
            }
        }
    }
    Ok((marked_records, kept_records))
}

/// Phase 2: delete the packs of marks older than the grace period that
/// nothing needs, then the marks.
fn sweep(
    repo: &Repository,
    opts: &PruneOptions,
    listed_at: jiff::Timestamp,
    fates: &[Fate],
    recovered: &[IndexedPack],
    report: &mut PruneReport,
) -> Result<()> {
    let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::MAX);
    let is_old = |m: &Mark| listed_at.duration_since(m.time) >= grace;
    // A pack named by a young mark too waits for that one.
    let young: HashSet<Id> = repo
        .marks()
        .iter()
        .filter(|(_, m)| !is_old(m))
        .flat_map(|(_, m)| m.packs.packs.iter().map(|p| p.id))
        .collect();
    let recovered: HashSet<Id> = recovered.iter().map(|p| p.id).collect();
    let mut deleted: HashSet<Id> = HashSet::new();
    for (id, mark) in repo.marks() {
        if !is_old(mark) {
            for p in &mark.packs.packs {
                report.waiting_packs += 1;
                report.waiting_bytes += p.size;
            }
            continue;
        }
        for p in &mark.packs.packs {
            let pos = repo.index().pack_position(&p.id).expect("loaded") as usize;
            let deletable = fates[pos] == Fate::Marked && !young.contains(&p.id) && !recovered.contains(&p.id);
            if deletable && deleted.insert(p.id) {
                report.deleted_packs += 1;
                report.deleted_bytes += p.size;
                if !opts.dry_run {
                    repo.delete_object(&keys::pack(&p.id))?;
                }
            }
        }
        report.deleted_marks += 1;
        if !opts.dry_run {
            repo.delete_object(&keys::mark(id))?;
            tracing::info!(event = "prune.swept", mark = %id.short());
        }
    }
    Ok(())
}

/// Copy the referenced blobs of `packs` into new packs (indexed when this
/// returns). Returns blobs copied and stored bytes written.
fn repack_packs(
    repo: &mut LockedRepository,
    packs: &[u32],
    refs: &Referenced,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    // Their blobs must be stored anew, not found "already stored" in them.
    for &p in packs {
        repo.set_pack_marked(p);
    }
    let by_frame = referenced_frames(repo, packs, refs);
    let total: u64 = by_frame.len() as u64;
    progress.begin_items("repacking blobs", total);
    let repo = &*repo;
    let mut writer = BlobWriter::new(repo);
    let mut decoder = Decoder::default();
    let mut encoder = Encoder::new(repo.config().compression.level);
    let mut pending: Vec<u8> = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    let mut flush = |pending: &mut Vec<u8>, members: &mut Vec<Member>, writer: &mut BlobWriter| -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let encoded = encoder.encode(pending);
        writer.add_frame(&[&encoded], members)?;
        pending.clear();
        members.clear();
        Ok(())
    };
    let mut i = 0;
    while i < by_frame.len() {
        let (pack, offset, length, _) = by_frame[i];
        let key = keys::pack(&repo.index().pack(pack).0);
        let raw = repo.read_object_range(&key, offset as u64, length as u64)?;
        let frame = decoder.decode_vec(raw, &key)?;
        while i < by_frame.len() && by_frame[i].0 == pack && by_frame[i].1 == offset {
            let (id, loc) = repo.index().at(by_frame[i].3);
            let start = loc.blob_offset as usize;
            let data = frame
                .get(start..start + loc.raw_length as usize)
                .filter(|d| Id::of(d) == *id)
                .ok_or_else(|| {
                    Error::bad_data(
                        repo.object_name(&key),
                        format!("blob {} does not match its hash", id.short()),
                    )
                    .fix("run `lifeboat verify --read-data`")
                })?;
            members.push(Member {
                kind: loc.kind,
                id: *id,
                blob_offset: pending.len() as u32,
                raw_length: loc.raw_length,
            });
            pending.extend_from_slice(data);
            if members.len() == REPACK_FRAME_BLOBS || pending.len() >= 1 << 20 {
                flush(&mut pending, &mut members, &mut writer)?;
            }
            progress.advance(1);
            i += 1;
        }
    }
    flush(&mut pending, &mut members, &mut writer)?;
    let stats = writer.finish()?;
    progress.end();
    tracing::info!(
        event = "prune.repacked",
        packs = packs.len(),
        blobs = total,
        stored = stats.stored_bytes
    );
    Ok((total, stats.stored_bytes))
}

/// The referenced blobs of `packs` as (pack, frame offset, frame length,
/// index position), sorted by pack and frame.
fn referenced_frames(repo: &Repository, packs: &[u32], refs: &Referenced) -> Vec<(u32, u32, u32, usize)> {
    let wanted: HashSet<u32> = packs.iter().copied().collect();
    let mut by_frame: Vec<(u32, u32, u32, usize)> = refs
        .positions()
        .filter_map(|pos| {
            let (_, loc) = repo.index().at(pos);
            wanted
                .contains(&loc.pack)
                .then_some((loc.pack, loc.offset, loc.length, pos))
        })
        .collect();
    by_frame.sort_unstable();
    by_frame
}

fn dedup_packs(packs: Vec<IndexedPack>) -> Vec<IndexedPack> {
    let mut seen = HashSet::new();
    packs.into_iter().filter(|p| seen.insert(p.id)).collect()
}

fn chunk_packs(packs: Vec<IndexedPack>) -> Vec<Vec<IndexedPack>> {
    let mut out: Vec<Vec<IndexedPack>> = Vec::new();
    let mut blobs = 0;
    for p in packs {
        if out.is_empty() || (blobs + p.blobs.len() > INDEX_BLOBS && !out.last().expect("one").is_empty()) {
            out.push(Vec::new());
            blobs = 0;
        }
        blobs += p.blobs.len();
        out.last_mut().expect("pushed").push(p);
    }
    out
}
