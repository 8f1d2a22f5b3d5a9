//! `repair index` and `repair snapshots` (restic's names): bring a damaged
//! repository back to a state every command accepts, losing nothing that can
//! still be read. Damaged objects are never deleted outright: their bytes, as
//! far as they read, are first copied under `damaged/` (FORMAT.md, "Repair"),
//! then removed from where readers look. Both run under the writer lock, are
//! idempotent (a second run finds nothing to do) and crash-safe (every step
//! is one atomic write or delete, and a run killed between them is finished
//! by the next).

use std::collections::HashSet;

use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::keys;
use crate::repo::pack::{header_tail_len, parse_header_tail};
use crate::repo::{LockedRepository, Repository};

/// What `repair index` found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Packs in the store that no readable index file listed, now indexed
    /// again from their own headers.
    pub packs_reindexed: Vec<String>,
    /// The new index file listing them.
    pub index_written: Option<String>,
    /// Damaged index files, now under `damaged/`.
    pub index_files_set_aside: Vec<String>,
    /// Packs whose header cannot be read: their blobs stay lost, and
    /// `verify` names the snapshots that miss them.
    pub unreadable_packs: Vec<(String, String)>,
    /// Whether nothing was changed (`--dry-run`): the lists say what would be.
    pub dry_run: bool,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// Snapshot ids whose manifests were set aside, with why.
    pub set_aside: Vec<(String, String)>,
    /// Manifests that could not be read for a reason that may pass (an I/O
    /// error, a store that does not answer): left where they are.
    pub left_alone: Vec<(String, String)>,
    /// Whether nothing was changed (`--dry-run`): the lists say what would be.
    pub dry_run: bool,
}

/// Whether `e` says the object itself is wrong, not that reading it failed
/// for now.
fn is_damage(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::BadData | ErrorKind::Config) && !e.temporary
}

/// Copy what can be read of `key` under `damaged/`, then delete it.
fn set_aside(repo: &Repository, key: &str) -> Result<()> {
    repo.copy_aside(key)?;
    repo.delete_object(key)
}

/// Rebuild the index from the packs themselves: every pack that no readable
/// index file lists is indexed again from its header, in one new index file,
/// written before the damaged index files are set aside. `repo` must be
/// locked (`Repository::locked`).
pub fn repair_index(repo: &LockedRepository, dry_run: bool) -> Result<IndexRepair> {
    let mut report = IndexRepair {
        dry_run,
        ..Default::default()
    };
    let indexed: HashSet<Id> = repo.index().packs().iter().map(|(id, _)| *id).collect();
    let mut file = IndexFile::default();
    for (key, size) in repo.list_objects(keys::Kind::Pack)? {
        let Some(id) = key.rsplit('/').next().and_then(Id::parse) else {
            tracing::warn!(event = "repo.stray_file", key = %key, "ignored");
            continue;
        };
        if indexed.contains(&id) {
            continue;
        }
        match read_pack_header(repo, &key, size) {
            Ok(blobs) => {
                report.packs_reindexed.push(key);
                file.packs.push(IndexedPack { id, size, blobs });
            }
            Err(e) => report.unreadable_packs.push((key, e.problem)),
        }
    }
    if dry_run {
        report.index_files_set_aside = repo.index_damage().iter().map(|(k, _)| k.clone()).collect();
        return Ok(report);
    }
    // Copies first, then the new index, then the deletions: until the new
    // index is written, the damaged files are what keeps a prune from taking
    // their packs for garbage. The new file may even take a damaged one's
    // name (same packs, same bytes), replacing it.
    for (key, _) in repo.index_damage() {
        repo.copy_aside(key)?;
    }
    if !file.packs.is_empty() {
        let id = repo.write_index(&file)?;
        report.index_written = Some(keys::index(&id));
        tracing::info!(event = "repair.index_written", packs = file.packs.len());
    }
    for (key, _) in repo.index_damage() {
        if report.index_written.as_ref() != Some(key) {
            repo.delete_object(key)?;
        }
        tracing::info!(event = "repair.index_set_aside", key = %key);
        report.index_files_set_aside.push(key.clone());
    }
    Ok(report)
}

/// A pack's blob list, from the end of the pack only.
fn read_pack_header(repo: &Repository, key: &str, size: u64) -> Result<Vec<crate::repo::pack::BlobEntry>> {
    let what = repo.object_name(key);
    if size < 8 {
        return Err(Error::damaged(&what, "too short to be a pack"));
    }
    let trailer = repo.read_object_range(key, size - 8, 8)?;
    let tail_len = header_tail_len(&trailer, &what)?;
    if tail_len > size {
        return Err(Error::damaged(&what, "pack header length exceeds the file"));
    }
    let tail = repo.read_object_range(key, size - tail_len, tail_len)?;
    parse_header_tail(&tail, size, &what)
}

/// Set aside every manifest that cannot be read or parsed, or whose layout a
/// restore would refuse (`Manifest::check_layout`), so that `forget` and
/// `prune` can run again. The snapshots they described were unrestorable
/// already; their bytes stay under `damaged/snapshots/`.
pub fn repair_snapshots(repo: &Repository, dry_run: bool) -> Result<SnapshotRepair> {
    let mut report = SnapshotRepair {
        dry_run,
        ..Default::default()
    };
    let (good, damaged) = repo.snapshots_and_damage()?;
    let mut doomed: Vec<(Id, String)> = Vec::new();
    for (id, e) in damaged {
        if is_damage(&e) {
            doomed.push((id, e.problem));
        } else {
            report.left_alone.push((id.hex(), e.to_string()));
        }
    }
    for s in &good {
        if let Err(e) = s.manifest.check_layout(&s.id.short()) {
            doomed.push((s.id, e.problem));
        }
    }
    for (id, why) in doomed {
        if !dry_run {
            set_aside(repo, &keys::snapshot(&id))?;
            tracing::info!(event = "repair.snapshot_set_aside", snapshot = %id.short(), problem = %why);
        }
        report.set_aside.push((id.hex(), why));
    }
    Ok(report)
}
