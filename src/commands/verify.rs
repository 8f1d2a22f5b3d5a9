//! `verify`: every snapshot's references resolve and every replicated
//! stream's segments follow on from its bases; reading data, every pack and
//! every WAL segment (or a random sample of them) is read, hashed and
//! decoded. Each problem names the snapshot and the file it damages, or the
//! database stream and the commits.

use std::collections::{HashMap, HashSet};

use crate::codec::Decoder;
use crate::error::Result;
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::keys;
use crate::repo::manifest::Source;
use crate::repo::pack::parse_header;
use crate::repo::{Opened, Repository};

/// One piece of damage [`verify`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// Snapshot id, or empty for damage not (yet) tied to a snapshot.
    pub snapshot: String,
    /// Source name and file path inside it, when known.
    pub file: String,
    /// What is wrong, in one line.
    pub problem: String,
}

/// How much stored data `verify` reads.
///
/// A sample on each run is the cheap way to read everything over time:
/// with `verify --read-data-subset 10%` each night, every pack is read once
/// every ten nights on average.
///
/// ```
/// use lifeboat::{DataCheck, Repository, RepoLocation, SnapshotKind, SnapshotOptions, SourceKind, SourceSpec};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("server.toml"), "listen = 8443\n").unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// let repo = Repository::init(&location)?.locked("my-service")?;
/// let source = SourceSpec { name: "server.toml".into(), path: dir.path().join("server.toml"), kind: SourceKind::File };
/// let options = SnapshotOptions { kind: SnapshotKind::Full, tags: vec![], replication: None, time: None };
/// lifeboat::snapshot::take(&repo, &[source], &options, &lifeboat::progress::Silent)?;
///
/// let repo = Repository::open(&location)?;
/// let report = lifeboat::verify::verify(&repo, DataCheck::Subset(0.1), &lifeboat::progress::Silent)?;
/// assert!(report.packs_read <= report.packs);
/// assert!(report.problems.is_empty(), "damage: {:?}", report.problems);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataCheck {
    /// Structure only: listings, sizes, references.
    Structure,
    /// Every pack and every WAL segment.
    All,
    /// This fraction (0 < f <= 1) of packs and of segments, chosen at
    /// random on each run, so runs in turn cover everything.
    Subset(f64),
}

impl DataCheck {
    fn reads(&self) -> bool {
        *self != DataCheck::Structure
    }

    /// Whether the object `key` is read this run.
    fn picks(&self, seed: u64, key: &str) -> bool {
        match *self {
            DataCheck::Structure => false,
            DataCheck::All => true,
            DataCheck::Subset(f) => {
                let h = blake3::hash(format!("{seed}:{key}").as_bytes());
                let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
                (x as f64) < f * u64::MAX as f64
            }
        }
    }
}

/// What [`verify`] checked and found. The repository is sound exactly when
/// `problems` is empty.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Snapshots checked, replication bases included.
    pub snapshots: usize,
    /// Packs the index lists.
    pub packs: usize,
    /// Packs read (all of them, or the sample).
    pub packs_read: usize,
    /// WAL segments stored.
    pub segments: usize,
    /// WAL segments read (all of them, or the sample).
    pub segments_read: usize,
    /// Blobs the index lists.
    pub blobs: usize,
    /// Stored bytes read, packs and segments together.
    pub bytes_read: u64,
    /// Every problem found, not only the first.
    pub problems: Vec<Problem>,
    /// Packs present but in no index: left by an interrupted writer; harmless.
    pub unreferenced_packs: Vec<String>,
}

/// Loads the index itself, after listing the snapshots: a writer publishes
/// its index files before its manifest, and a prune its marks before it
/// rewrites index files, so in this order a snapshot published or a pack
/// marked meanwhile is not taken for damage.
///
/// ```
/// use lifeboat::{DataCheck, Repository, RepoLocation};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// Repository::init(&location)?;
/// let repo = Repository::open(&location)?;
/// let report = lifeboat::verify::verify(&repo, DataCheck::All, &lifeboat::progress::Silent)?;
/// assert!(report.problems.is_empty());
/// # Ok(())
/// # }
/// ```
pub fn verify(repo: &Repository<Opened>, data: DataCheck, progress: &dyn Progress) -> Result<VerifyReport> {
    let seed = jiff::Timestamp::now().as_nanosecond() as u64;
    // Segments listed before the bases: a replicator publishing a new base
    // and segments meanwhile cannot leave a hole that only looks missing.
    let wal_keys = repo.list_objects(keys::Kind::Segment)?;
    let (snaps, damaged_manifests) = repo.snapshots_and_damage()?;
    let repo = &repo.indexed_then_marks()?;
    let mut report = VerifyReport {
        packs: repo.index().packs().len(),
        blobs: repo.index().blob_count(),
        ..Default::default()
    };
    // Every problem is reported, not the first: each damaged object costs
    // the snapshots it names, and the check goes on.
    for (id, e) in &damaged_manifests {
        report.problems.push(Problem {
            snapshot: id.hex(),
            file: e.subject.clone(),
            problem: format!("manifest unreadable: {}", e.problem),
        });
    }
    for (_, e) in repo.index_damage() {
        // The snapshots it costs are named below, by the blobs they miss.
        report.problems.push(Problem {
            snapshot: String::new(),
            file: e.subject.clone(),
            problem: format!("index file unreadable, left out: {}", e.problem),
        });
    }

    let bad_blobs = check_packs(repo, data, seed, &mut report, progress)?;

    // Snapshots: every reference resolves and is undamaged.
    report.snapshots = snaps.len();
    for s in &snaps {
        check_snapshot(repo, s, &bad_blobs, &mut report);
    }
    verify_segments(repo, &snaps, wal_keys, data, seed, &mut report, progress)?;
    if report.problems.is_empty() {
        tracing::info!(event = "verify.ok", snapshots = report.snapshots, packs = report.packs);
    } else {
        tracing::warn!(event = "verify.damaged", problems = report.problems.len());
    }
    Ok(report)
}

/// What the pack pass keeps: the blobs found damaged so far, with why, and
/// (reading data) each pack's blobs by the pack's place in the index.
struct PackCheck<'a> {
    repo: &'a Repository,
    report: &'a mut VerifyReport,
    bad_blobs: HashMap<Id, String>,
    blobs_by_pack: HashMap<u32, Vec<(Id, crate::repo::index::Location)>>,
    dec: Decoder,
}

/// Packs: present, right size; with read_data, hashed and decoded. Returns
/// the damaged blobs, with why.
fn check_packs(
    repo: &Repository,
    data: DataCheck,
    seed: u64,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<HashMap<Id, String>> {
    let read_data = data.reads();
    let stored: HashMap<String, u64> = repo.list_objects(keys::Kind::Pack)?.into_iter().collect();
    let mut indexed_keys = HashSet::new();
    let mut blobs_by_pack: HashMap<u32, Vec<(Id, crate::repo::index::Location)>> = HashMap::new();
    if read_data {
        for (id, loc) in repo.index().iter() {
            blobs_by_pack.entry(loc.pack).or_default().push((*id, *loc));
        }
    }
    let mut check = PackCheck {
        repo,
        report,
        bad_blobs: HashMap::new(),
        blobs_by_pack,
        dec: Decoder::default(),
    };
    let to_read = check.listed(&stored, &mut indexed_keys, data, seed);
    check.report.packs_read = to_read.len();
    if read_data {
        let sizes: HashMap<&String, u64> = stored.iter().map(|(k, v)| (k, *v)).collect();
        progress.begin(
            "verify data",
            to_read.iter().map(|(_, k)| sizes.get(k).copied().unwrap_or(0)).sum(),
        );
    }
    // Packs are read several at a time (an object store's latency), and
    // checked here as they arrive.
    repo.read_objects(to_read, |(n, pack_id), key, data| {
        match data {
            Ok(data) => check.read(n, pack_id, key, data, progress),
            Err(e) => check.unreadable(n, pack_id, key, e),
        }
        Ok(())
    })?;
    if read_data {
        progress.end();
    }
    let report = check.report;
    for key in stored.keys() {
        if !indexed_keys.contains(key) {
            report.unreferenced_packs.push(key.clone());
        }
    }
    report.unreferenced_packs.sort();
    Ok(check.bad_blobs)
}

impl PackCheck<'_> {
    /// Every indexed pack against the listing of `data/`: a pack missing or
    /// of the wrong size damages all its blobs. Returns the packs to read.
    fn listed(
        &mut self,
        stored: &HashMap<String, u64>,
        indexed_keys: &mut HashSet<String>,
        data: DataCheck,
        seed: u64,
    ) -> Vec<((usize, Id), String)> {
        let (repo, bad_blobs) = (self.repo, &mut self.bad_blobs);
        let mut to_read = Vec::new();
        for (n, (pack_id, size)) in repo.index().packs().iter().enumerate() {
            let key = keys::pack(pack_id);
            indexed_keys.insert(key.clone());
            let damage = |bad: &mut HashMap<Id, String>, why: String| {
                for (id, _) in repo.index().iter().filter(|(_, l)| l.pack as usize == n) {
                    bad.entry(*id).or_insert_with(|| why.clone());
                }
            };
            match stored.get(&key) {
                None => {
                    damage(bad_blobs, format!("pack {} is missing", pack_id.short()));
                    continue;
                }
                Some(s) if s != size => {
                    damage(
                        bad_blobs,
                        format!("pack {} has {s} bytes, index says {size}", pack_id.short()),
                    );
                    continue;
                }
                _ => {}
            }
            if data.picks(seed, &key) {
                to_read.push(((n, *pack_id), key));
            }
        }
        to_read
    }

    /// Unreadable (damaged where it lies, not a file, an I/O error): every
    /// blob in it is lost to the snapshots that use it.
    fn unreadable(&mut self, n: usize, pack_id: Id, key: String, e: crate::error::Error) {
        let why = format!("pack {} unreadable: {}", pack_id.short(), e.problem);
        for (id, _) in self.blobs_by_pack.get(&(n as u32)).map(|v| v.as_slice()).unwrap_or(&[]) {
            self.bad_blobs.entry(*id).or_insert_with(|| why.clone());
        }
        self.report.problems.push(Problem {
            snapshot: String::new(),
            file: key,
            problem: why,
        });
    }

    /// A pack read whole: its name, its header, and every blob's hash.
    fn read(&mut self, n: usize, pack_id: Id, key: String, data: Vec<u8>, progress: &dyn Progress) {
        let (repo, report, bad_blobs, dec) = (self.repo, &mut *self.report, &mut self.bad_blobs, &mut self.dec);
        report.bytes_read += data.len() as u64;
        progress.advance(data.len() as u64);
        // A pack that does not match its name is read again once: a body
        // damaged in transit is not damage in the repository.
        let data = match Id::of(&data) == pack_id {
            true => data,
            false => repo.read_object(&key).unwrap_or(data),
        };
        if Id::of(&data) != pack_id {
            // Still check blobs one by one: the damage may spare most of them.
            report.problems.push(Problem {
                snapshot: String::new(),
                file: key.clone(),
                problem: "pack content does not match its name".into(),
            });
        }
        if let Err(e) = parse_header(&data, &key) {
            report.problems.push(Problem {
                snapshot: String::new(),
                file: key.clone(),
                problem: e.problem,
            });
        }
        let mine = self
            .blobs_by_pack
            .get_mut(&(n as u32))
            .map(|v| v.as_mut_slice())
            .unwrap_or(&mut []);
        // Frame by frame: each frame is decoded once for all its blobs.
        mine.sort_unstable_by_key(|(_, l)| (l.offset, l.blob_offset));
        let mut frame: Option<(u32, Vec<u8>)> = None;
        for (id, loc) in mine.iter() {
            if frame.as_ref().map(|(o, _)| *o) != Some(loc.offset) {
                let (s, e) = (loc.offset as usize, loc.offset as usize + loc.length as usize);
                let decoded = data
                    .get(s..e)
                    .and_then(|raw| dec.decode(raw, &key).ok())
                    .unwrap_or_default();
                frame = Some((loc.offset, decoded));
            }
            let decoded = &frame.as_ref().expect("set above").1;
            let (s, len) = (loc.blob_offset as usize, loc.raw_length as usize);
            let ok = decoded.get(s..s + len).is_some_and(|b| Id::of(b) == *id);
            if !ok {
                bad_blobs.insert(
                    *id,
                    format!("blob {} in pack {} is corrupt", id.short(), pack_id.short()),
                );
            }
        }
    }
}

/// One snapshot: a safe layout, and every page and chunk it references
/// indexed and undamaged.
fn check_snapshot(
    repo: &Repository,
    s: &crate::repo::SnapshotRef,
    bad_blobs: &HashMap<Id, String>,
    report: &mut VerifyReport,
) {
    let sid = s.id.hex();
    let mut add = |file: String, problem: String| {
        report.problems.push(Problem {
            snapshot: sid.clone(),
            file,
            problem,
        })
    };
    if let Err(e) = s.manifest.check_layout(&sid) {
        add(String::new(), e.problem);
    }
    for db in s.manifest.databases() {
        match repo.resolve_pagemap(&db.pagemap, false) {
            Err(e) => add(db.name.clone(), format!("page map unreadable: {}", e.problem)),
            Ok(resolved) => {
                let pages = resolved.pages;
                let mut seen = HashSet::new();
                for (i, id) in pages.iter().enumerate() {
                    if !seen.insert(*id) {
                        continue;
                    }
                    if !repo.index().contains(id) {
                        add(
                            db.name.clone(),
                            format!("page {} (blob {}) is missing", i + 1, id.short()),
                        );
                    } else if let Some(why) = bad_blobs.get(id) {
                        add(db.name.clone(), format!("page {}: {why}", i + 1));
                    }
                }
            }
        }
    }
    for src in &s.manifest.sources {
        match src {
            Source::Sqlite(_) => {}
            Source::Directory(d) => {
                for e in &d.entries {
                    check_chunks(repo, bad_blobs, &format!("{}/{}", d.name, e.path), &e.chunks, &mut add);
                }
            }
            Source::File(f) => check_chunks(repo, bad_blobs, &f.name, &f.entry.chunks, &mut add),
        }
    }
}

fn check_chunks(
    repo: &Repository,
    bad: &HashMap<Id, String>,
    file: &str,
    chunks: &[Id],
    add: &mut dyn FnMut(String, String),
) {
    for id in chunks {
        if !repo.index().contains(id) {
            add(file.to_string(), format!("chunk {} is missing", id.short()));
        } else if let Some(why) = bad.get(id) {
            add(file.to_string(), why.clone());
        }
    }
}

/// The WAL segments of every stream: each chain from a base runs on
/// without a hole (a hole is allowed only where a later base says
/// continuity was lost there), and, reading data, each segment read is
/// whole (its BLAKE3, its commit order, the txids its name gives).
/// Per stream: the database's name and its bases (txid, after a gap).
type Streams = HashMap<String, (String, Vec<(u64, bool)>)>;

/// Per stream: its segments as (first txid, last txid, key).
type Segments = HashMap<String, Vec<(u64, u64, String)>>;

fn verify_segments(
    repo: &Repository,
    snaps: &[crate::repo::SnapshotRef],
    wal_keys: Vec<(String, u64)>,
    data: DataCheck,
    seed: u64,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<()> {
    let streams = stream_bases(snaps);
    let mut segments = segments_by_stream(wal_keys);
    let name_of = |stream: &str| {
        streams
            .get(stream)
            .map(|(n, _)| format!("database {n} (stream {stream})"))
            .unwrap_or_else(|| format!("stream {stream}"))
    };
    for (stream, segs) in &mut segments {
        check_continuity(stream, segs, &streams, &name_of, report);
    }
    if !data.reads() {
        return Ok(());
    }
    read_segments(repo, &segments, data, seed, &name_of, report, progress)
}

fn stream_bases(snaps: &[crate::repo::SnapshotRef]) -> Streams {
    let mut streams: Streams = HashMap::new();
    for s in snaps {
        for db in s.manifest.databases() {
            if let Some(r) = &db.replication {
                let e = streams
                    .entry(r.stream.clone())
                    .or_insert_with(|| (db.name.clone(), Vec::new()));
                e.1.push((r.txid, r.after_gap));
            }
        }
    }
    streams
}

fn segments_by_stream(wal_keys: Vec<(String, u64)>) -> Segments {
    let mut segments: Segments = HashMap::new();
    for (key, _) in wal_keys {
        let Some(stream) = keys::segment_stream(&key) else {
            continue;
        };
        if let Some((first, last)) = keys::parse_segment(&key) {
            segments.entry(stream.to_string()).or_default().push((first, last, key));
        }
    }
    segments
}

/// Continuity: from each base, segment after segment; a hole is damage
/// unless a base stands at its end.
fn check_continuity(
    stream: &str,
    segs: &mut [(u64, u64, String)],
    streams: &Streams,
    name_of: &dyn Fn(&str) -> String,
    report: &mut VerifyReport,
) {
    segs.sort();
    report.segments += segs.len();
    let bases = streams.get(stream).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
    let Some(&(first_base, _)) = bases.iter().min_by_key(|(t, _)| *t) else {
        return; // no base left: prune removes such segments
    };
    let mut next = first_base + 1;
    for (first, last, _) in segs.iter() {
        if *last < next {
            continue; // before the chain's start, or covered already
        }
        // Excused: a base after lost continuity stands at the hole's
        // end, or bases stand at both ends (an interval retention let
        // go). A hole before a fold base is damage: the fold was made
        // from segments that are gone.
        let base_at = |t: u64, gap: bool| bases.iter().any(|(b, g)| *b == t && (*g || !gap));
        let excused = base_at(first - 1, true) || (base_at(next - 1, false) && base_at(first - 1, false));
        if *first > next && !excused {
            report.problems.push(Problem {
                snapshot: String::new(),
                file: name_of(stream),
                problem: format!(
                    "commits {next} to {} are missing from the stream: restores between them fail",
                    first - 1
                ),
            });
        }
        next = next.max(last + 1);
    }
}

/// Reading data: each segment picked is decoded whole (its BLAKE3, its
/// commit order) and must hold the commits its name gives.
fn read_segments(
    repo: &Repository,
    segments: &Segments,
    data: DataCheck,
    seed: u64,
    name_of: &dyn Fn(&str) -> String,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<()> {
    use crate::repo::segment::Segment;
    let wanted: Vec<((u64, u64, String), String)> = segments
        .iter()
        .flat_map(|(stream, segs)| segs.iter().map(move |(f, l, k)| ((*f, *l, stream.clone()), k.clone())))
        .filter(|(_, k)| data.picks(seed, k))
        .collect();
    report.segments_read = wanted.len();
    progress.begin("verify segments", wanted.len() as u64);
    repo.read_objects(wanted, |(first, last, stream), key, raw| {
        progress.advance(1);
        let checked = raw.and_then(|raw| {
            report.bytes_read += raw.len() as u64;
            let what = repo.object_name(&key);
            let seg = Segment::decode(&raw, &what)?;
            if (seg.first_txid, seg.last_txid) != (first, last) {
                return Err(crate::error::Error::damaged(
                    what,
                    "segment does not hold the commits its name gives",
                ));
            }
            Ok(())
        });
        if let Err(e) = checked {
            report.problems.push(Problem {
                snapshot: String::new(),
                file: name_of(&stream),
                problem: format!("commits {first} to {last} ({key}) unreadable: {}", e.problem),
            });
        }
        Ok(())
    })?;
    progress.end();
    Ok(())
}
