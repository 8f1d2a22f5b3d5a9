//! Taking a snapshot: capture every source, store what the repository lacks,
//! then publish the manifest. Nothing is visible until the manifest is written,
//! and the manifest is written only after every pack and index is durable.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use crate::codec::Encoder;
use crate::error::{Error, IoContext, Result};
use crate::files;
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::manifest::{DirectorySource, Entry, EntryKind, FileSource, Manifest, Source, SqliteSource, Summary};
use crate::repo::pack::{BlobType, Member};
use crate::repo::pagemap::{Change, PageList, PageMap};
use crate::repo::writer::BlobWriter;
use crate::repo::{LockedRepository, Repository};
use crate::sqlite::capture::{self, OpenDatabase};

mod embedded;

/// What to capture, as resolved from the command line or the config.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Unique within one snapshot; how restores and later snapshots find it.
    pub name: String,
    /// Where it lives now; stored absolute.
    pub path: PathBuf,
    /// What it is and how to capture it.
    pub kind: SourceKind,
}

/// How a source is captured.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A live SQLite database, captured page by page inside a read
    /// transaction.
    Sqlite {
        /// SQL returning one integer, recorded as the schema version that
        /// `restore` compares with its maximum (e.g. `PRAGMA user_version`).
        schema_query: String,
    },
    /// A directory tree, walked without following symlinks; SQLite
    /// databases found inside are captured as databases.
    Directory {
        /// Globs, relative to the directory, of paths left out.
        exclude: Vec<String>,
    },
    /// One regular file, chunked like a directory's files.
    File,
}

/// How a snapshot is recorded.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Full, partial or (for `replicate`) a replication base; recorded, and what
    /// retention and `restore latest` go by.
    pub kind: crate::repo::manifest::SnapshotKind,
    /// Free-form labels recorded in the manifest (`forget --keep-tag` keeps by them).
    pub tags: Vec<String>,
    /// Recorded on the (single) database of a replication base.
    pub replication: Option<crate::repo::manifest::ReplicationPoint>,
    /// The snapshot's recorded time; now when not given.
    pub time: Option<jiff::Timestamp>,
}

/// A database for `take_opened`: opened here and finished after its
/// capture, or opened (and kept open) by the caller.
enum Db<'a> {
    Owned(Box<OpenDatabase>),
    Borrowed(&'a OpenDatabase),
}

impl Db<'_> {
    fn get(&self) -> &OpenDatabase {
        match self {
            Db::Owned(d) => d,
            Db::Borrowed(d) => d,
        }
    }
}

/// Pages per unit of work handed to a hashing/compressing worker.
const BATCH_PAGES: usize = 256;

/// Capture `specs` into one snapshot and publish its manifest; returns the
/// manifest's id and the manifest. Every database's read transaction begins
/// before any slow work, so the databases are captured at one instant; pages
/// and chunks the repository already holds are not stored again. The caller
/// holds the writer lock ([`Repository::lock`]).
/// Fails with [`ErrorKind::Usage`](crate::ErrorKind::Usage) for no sources or
/// two with one name, [`ErrorKind::NoInput`](crate::ErrorKind::NoInput) for a
/// missing source, [`ErrorKind::BadData`](crate::ErrorKind::BadData) for a
/// database source that is not SQLite, [`ErrorKind::Config`](crate::ErrorKind::Config) for a
/// SQLite built without `SQLITE_ENABLE_DBPAGE_VTAB`, and
/// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when a database stays locked.
/// Nothing is visible in the repository unless it succeeds.
pub fn take(
    repo: &LockedRepository,
    specs: &[SourceSpec],
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<(Id, Manifest)> {
    take_with_hooks(repo, specs, opts, progress, &NoHooks)
}

/// Work an operator wants done around each source's capture: stop the
/// service that writes it, start it again. The library runs no commands
/// and reads no configuration; the caller decides what `before` and
/// `after` do for each source.
pub trait SourceHooks {
    /// Called right before `source` is captured; for a database, before
    /// its read transaction begins (all databases' `before`s come first, in
    /// order, since their transactions begin together). An error fails
    /// the snapshot: nothing is published, and `after` is still called for
    /// this source and every other whose `before` ran.
    fn before(&self, source: &SourceSpec) -> Result<()>;
    /// Called once for every source whose `before` was called, right after
    /// its capture ended: `failure` is `None` when it was captured, else
    /// why the snapshot failed (the capture's own error, a later source's,
    /// or a panic's unwinding). It cannot fail the snapshot: a snapshot
    /// whose sources were all captured is still published, so the caller
    /// keeps what it needs to report.
    fn after(&self, source: &SourceSpec, failure: Option<&Error>);
}

/// No work around any source: what [`take`] runs with.
pub struct NoHooks;

impl SourceHooks for NoHooks {
    fn before(&self, _source: &SourceSpec) -> Result<()> {
        Ok(())
    }
    fn after(&self, _source: &SourceSpec, _failure: Option<&Error>) {}
}

/// [`take`], calling `hooks` around each source's capture: `before` right
/// before it, `after` right after it, whether it succeeded, failed, or a
/// panic unwound through it, so a service stopped for its source is
/// stopped only while that source is captured, and is always started again.
pub fn take_with_hooks(
    repo: &LockedRepository,
    specs: &[SourceSpec],
    opts: &SnapshotOptions,
    progress: &dyn Progress,
    hooks: &dyn SourceHooks,
) -> Result<(Id, Manifest)> {
    let started = Instant::now();
    check_names(specs)?;
    let mut around = Around {
        hooks,
        specs,
        pending: vec![false; specs.len()],
    };
    let taken = take_around(repo, specs, opts, progress, &mut around, started);
    if let Err(e) = &taken {
        around.fail_all(e);
    }
    taken
}

fn take_around(
    repo: &LockedRepository,
    specs: &[SourceSpec],
    opts: &SnapshotOptions,
    progress: &dyn Progress,
    around: &mut Around,
    started: Instant,
) -> Result<(Id, Manifest)> {
    // Every database's `before` first: their read transactions begin
    // together, below.
    for (i, s) in specs.iter().enumerate() {
        if matches!(s.kind, SourceKind::Sqlite { .. }) {
            around.before(i)?;
        }
    }
    // Open every database and begin all read transactions together, before
    // any slow work, so the databases are captured at one instant.
    let mut to_open = Vec::new();
    for s in specs {
        if let SourceKind::Sqlite { schema_query } = &s.kind {
            to_open.push(capture::open(&s.path, schema_query)?);
        }
    }
    let dbs = capture::begin_all(to_open)?
        .into_iter()
        .map(|d| Db::Owned(Box::new(d)))
        .collect();
    tracing::info!(event = "snapshot.read_transactions_open", databases = specs.len());
    take_with(repo, specs, opts, progress, dbs, started, Some(around))
}

/// Which sources' `before` ran without their `after` yet; dropped during
/// a panic's unwinding, it calls the `after`s still owed.
struct Around<'a> {
    hooks: &'a dyn SourceHooks,
    specs: &'a [SourceSpec],
    pending: Vec<bool>,
}

impl Around<'_> {
    fn before(&mut self, i: usize) -> Result<()> {
        // Owed from here on: a `before` that fails half way may already
        // have stopped the service.
        self.pending[i] = true;
        self.hooks.before(&self.specs[i])
    }

    fn after(&mut self, i: usize, failure: Option<&Error>) {
        if std::mem::take(&mut self.pending[i]) {
            self.hooks.after(&self.specs[i], failure);
        }
    }

    fn fail_all(&mut self, e: &Error) {
        for i in 0..self.specs.len() {
            self.after(i, Some(e));
        }
    }
}

impl Drop for Around<'_> {
    fn drop(&mut self) {
        if self.pending.iter().any(|p| *p) {
            let e = Error::new(crate::error::ErrorKind::Io, "snapshot", "interrupted (panic)");
            self.fail_all(&e);
        }
    }
}

/// Capture from read transactions the caller opened (and keeps open), one
/// per SQLite source in `specs` order: a replication base pinned to a
/// known WAL position.
pub fn take_opened(
    repo: &LockedRepository,
    specs: &[SourceSpec],
    opts: &SnapshotOptions,
    progress: &dyn Progress,
    dbs: &[&OpenDatabase],
) -> Result<(Id, Manifest)> {
    check_names(specs)?;
    let dbs = dbs.iter().map(|d| Db::Borrowed(d)).collect();
    take_with(repo, specs, opts, progress, dbs, Instant::now(), None)
}

fn take_with(
    repo: &LockedRepository,
    specs: &[SourceSpec],
    opts: &SnapshotOptions,
    progress: &dyn Progress,
    dbs: Vec<Db>,
    started: Instant,
    mut around: Option<&mut Around>,
) -> Result<(Id, Manifest)> {
    let mut warnings = Vec::new();
    let mut warn = |w: String| {
        progress.warn(&w);
        warnings.push(w);
    };
    let mut dbs: Vec<Option<Db>> = dbs.into_iter().map(Some).collect();

    let mut cap = Capture {
        repo,
        progress,
        previous: repo.snapshots()?,
        writer: BlobWriter::new(repo),
        encoder: Encoder::new(repo.config().compression.level),
        logical: 0,
        files_count: 0,
        incomplete: Vec::new(),
    };
    let mut sources = Vec::new();
    let mut db_i = 0;
    for (i, spec) in specs.iter().enumerate() {
        let is_db = matches!(spec.kind, SourceKind::Sqlite { .. });
        if let Some(a) = around.as_deref_mut()
            && !is_db
        {
            a.before(i)?;
        }
        let src = match &spec.kind {
            SourceKind::Sqlite { .. } => {
                let handle = dbs[db_i].take().expect("each database captured once");
                db_i += 1;
                Source::Sqlite(cap.database(spec, handle, opts, &mut warn)?)
            }
            SourceKind::Directory { exclude } => Source::Directory(cap.directory(spec, exclude, specs, &mut warn)?),
            SourceKind::File => Source::File(cap.file(spec, &mut warn)?),
        };
        if let Some(a) = around.as_deref_mut() {
            a.after(i, None);
        }
        sources.push(src);
    }
    let Capture {
        writer,
        logical,
        files_count,
        incomplete,
        ..
    } = cap;

    let stats = writer.finish()?;
    let manifest = Manifest {
        format: crate::repo::manifest::format_for(&sources, &incomplete),
        time: opts.time.unwrap_or_else(jiff::Timestamp::now),
        host: crate::fsutil::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        kind: opts.kind,
        tags: opts.tags.clone(),
        sources,
        summary: Summary {
            logical_bytes: logical,
            files: files_count,
            new_blobs: stats.new_blobs,
            added_raw_bytes: stats.raw_bytes,
            added_stored_bytes: stats.stored_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
            warnings,
        },
        incomplete,
    };
    let id = repo.write_manifest(&manifest)?;
    tracing::info!(event = "snapshot.done", id = %id.short(), new_blobs = stats.new_blobs, stored = stats.stored_bytes, packs = stats.packs);
    Ok((id, manifest))
}

/// What a snapshot gathers while it captures its sources one by one: the
/// writer every blob goes through, and the totals for the manifest.
struct Capture<'r> {
    repo: &'r LockedRepository,
    progress: &'r dyn Progress,
    /// The snapshots already published: each source's parent is found here.
    previous: Vec<crate::repo::SnapshotRef>,
    writer: BlobWriter<'r>,
    encoder: Encoder,
    logical: u64,
    files_count: u64,
    /// Files that changed on both reads.
    incomplete: Vec<String>,
}

impl Capture<'_> {
    /// A configured database, by pages, on top of the newest earlier
    /// capture of the same name and path.
    fn database(
        &mut self,
        spec: &SourceSpec,
        handle: Db,
        opts: &SnapshotOptions,
        warn: &mut dyn FnMut(String),
    ) -> Result<SqliteSource> {
        let db = handle.get();
        if db.journal_mode != "wal" {
            warn(format!(
                "{}: journal_mode is {} (not WAL): captured correctly, but writers waited while it was read and `replicate` will refuse it",
                spec.path.display(),
                db.journal_mode
            ));
        }
        if let Some(fs) = crate::fsutil::unreliable_filesystem(&spec.path) {
            warn(format!(
                "{}: on {fs}; snapshots work, `replicate` will refuse it",
                spec.path.display()
            ));
        }
        let path = abs_string(&spec.path);
        let parent = self.previous.iter().rev().find_map(|s| {
            s.manifest.sources.iter().find_map(|src| match src {
                Source::Sqlite(d) if d.name == spec.name && d.path == path => Some(d.pagemap),
                _ => None,
            })
        });
        let mut s = capture_database(self.repo, &mut self.writer, spec, db, parent, self.progress)?;
        if let Db::Owned(db) = handle {
            db.finish()?;
        }
        s.replication = opts.replication.clone();
        self.logical += s.size;
        self.files_count += 1;
        Ok(s)
    }

    /// A directory tree; a database found inside is captured by pages.
    fn directory(
        &mut self,
        spec: &SourceSpec,
        exclude: &[String],
        specs: &[SourceSpec],
        warn: &mut dyn FnMut(String),
    ) -> Result<DirectorySource> {
        let progress = self.progress;
        let globs = files::build_excludes(exclude, &spec.path.display().to_string())?;
        let skip = others_inside(spec, specs);
        let walked = files::walk(&spec.path, &globs, &skip, warn)?;
        // The same files reached by another name (a hard link, a
        // bind mount) are the other sources too; opening a database
        // this process holds a read transaction on, and closing
        // that descriptor, would drop SQLite's locks on it.
        let others = embedded::inodes_of(&skip);
        let walked = embedded::find_databases(walked, &others);
        let mut captured_dbs: HashSet<String> = HashSet::new();
        let total: u64 = walked.iter().map(|(w, _)| w.entry.size).sum();
        progress.begin(&format!("files {}", spec.name), total);
        let mut entries = Vec::with_capacity(walked.len());
        for (w, is_db) in walked {
            if embedded::sidecar_of(&w.entry.path).is_some_and(|db| captured_dbs.contains(db)) {
                continue; // its database was captured by pages
            }
            let label = format!("{}/{}", spec.name, w.entry.path);
            let (e, changed) = self.dir_entry(spec, w, is_db, &label, &mut captured_dbs, warn)?;
            if changed {
                self.incomplete.push(label);
            }
            self.logical += e.size;
            self.files_count += u64::from(e.kind == EntryKind::File);
            entries.push(e);
        }
        progress.end();
        Ok(DirectorySource {
            name: spec.name.clone(),
            path: abs_string(&spec.path),
            exclude: exclude.to_vec(),
            entries,
        })
    }

    /// One walked entry of a directory source: a database by pages when
    /// it is one and opens as one, anything else as content.
    fn dir_entry(
        &mut self,
        spec: &SourceSpec,
        w: files::Walked,
        is_db: bool,
        label: &str,
        captured_dbs: &mut HashSet<String>,
        warn: &mut dyn FnMut(String),
    ) -> Result<(Entry, bool)> {
        Ok(match is_db {
            true => {
                let parent = embedded::previous_pagemap(&self.previous, &spec.name, &w.entry.path);
                let captured = embedded::open(&w.abs, warn)?
                    .map(|db| {
                        let sub = SourceSpec {
                            name: label.to_string(),
                            path: w.abs.clone(),
                            kind: SourceKind::Sqlite {
                                schema_query: String::new(),
                            },
                        };
                        let s = capture_database(self.repo, &mut self.writer, &sub, &db, parent, self.progress);
                        db.finish().and(s)
                    })
                    .transpose()?;
                match captured {
                    Some(s) => {
                        captured_dbs.insert(w.entry.path.clone());
                        (embedded::entry(w.entry, &s), false)
                    }
                    None => self.content(w, warn)?,
                }
            }
            false => self.content(w, warn)?,
        })
    }

    /// A single file source.
    fn file(&mut self, spec: &SourceSpec, warn: &mut dyn FnMut(String)) -> Result<FileSource> {
        let progress = self.progress;
        // A file named through a symlink means what it points at.
        let meta = std::fs::metadata(&spec.path).at(&spec.path)?;
        let entry = files::entry_for("", &meta, &spec.path)?
            .ok_or_else(|| Error::usage(format!("{} is a socket, FIFO or device", spec.path.display())))?;
        progress.begin(&format!("file {}", spec.name), entry.size);
        let e = self.content(
            files::Walked {
                abs: spec.path.clone(),
                entry,
            },
            warn,
        )?;
        if e.1 {
            self.incomplete.push(spec.name.clone());
        }
        let e = e.0;
        progress.end();
        self.logical += e.size;
        self.files_count += 1;
        Ok(FileSource {
            name: spec.name.clone(),
            path: abs_string(&spec.path),
            entry: e,
        })
    }

    /// One walked entry's content, through [`capture_entry`].
    fn content(&mut self, w: files::Walked, warn: &mut dyn FnMut(String)) -> Result<(Entry, bool)> {
        capture_entry(&mut self.encoder, self.repo, &mut self.writer, w, warn, self.progress)
    }
}

/// Every other source inside this directory is captured as that source,
/// once: never also copied raw here. Their paths (and a database's
/// sidecars), for the walk to skip.
fn others_inside(spec: &SourceSpec, specs: &[SourceSpec]) -> Vec<PathBuf> {
    let mut skip = Vec::new();
    for other in specs.iter().filter(|o| o.path != spec.path) {
        // Sidecars may not exist, so canonicalize via the database.
        let p = std::fs::canonicalize(&other.path).unwrap_or_else(|_| other.path.clone());
        if matches!(other.kind, SourceKind::Sqlite { .. }) {
            skip.extend(crate::sqlite::sidecar_paths(&p));
        }
        skip.push(p);
    }
    skip
}

fn check_names(specs: &[SourceSpec]) -> Result<()> {
    let mut seen = HashSet::new();
    for s in specs {
        if !seen.insert(s.name.as_str()) {
            return Err(Error::usage(format!("two sources are named `{}`", s.name))
                .fix("give one of them a distinct `name` in the configuration"));
        }
    }
    if specs.is_empty() {
        return Err(Error::usage("nothing to snapshot").fix("name paths on the command line or sources in the config"));
    }
    Ok(())
}

/// `p` as an absolute path (not resolving links), as sources are recorded in
/// manifests; `p` itself when the working directory is unreadable.
pub fn abs_string(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// A batch of consecutive pages, read inside the transaction.
struct Batch {
    first_pgno: u32,
    data: Vec<u8>,
}

/// Its result: the pages whose id differs from the parent snapshot's (every
/// page when there is none), and the new ones packed into frames.
struct Hashed {
    pages: usize,
    changed: Vec<Change>,
    /// Enveloped frames back to back in `encoded`: (start, length, members).
    frames: Vec<(usize, usize, Vec<Member>)>,
    encoded: Vec<u8>,
}

/// New pages share a zstd frame up to this many: 64 KiB of 4 KiB pages
/// compresses a third faster and a fifth smaller than page by page, and
/// restore decodes one frame for many pages.
const FRAME_PAGES: usize = 16;

/// The parent snapshot's page list, when it can serve as a base.
struct Parent {
    id: Id,
    depth: u32,
    list: PageList,
}

fn capture_database(
    repo: &Repository,
    writer: &mut BlobWriter,
    spec: &SourceSpec,
    db: &OpenDatabase,
    parent: Option<Id>,
    progress: &dyn Progress,
) -> Result<SqliteSource> {
    let page_size = db.page_size as usize;
    let total = db.page_count as u64 * page_size as u64;
    // With chaining values the whole-file hash is assembled from the pages'
    // (treehash), so unchanged pages are hashed once, not twice.
    let use_cvs = crate::treehash::supported(page_size as u32);
    let parent = usable_parent(repo, parent, page_size, use_cvs);
    progress.begin(&format!("database {}", spec.name), total);
    let level = repo.config().compression.level;
    // Without a parent every page lands here; with one, only changes do.
    let mut list = PageList::default();
    if parent.is_none() {
        list.ids = vec![Id::ZERO; db.page_count as usize];
        if use_cvs {
            list.cvs = vec![Id::ZERO; db.page_count as usize];
        }
        writer.reserve(db.page_count as usize);
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut whole = blake3::Hasher::new();
    let job = HashJob {
        page_size,
        level,
        repo,
        parent: parent.as_ref().map(|p| p.list.ids.as_slice()).unwrap_or(&[]),
        use_cvs,
    };
    let mut found = Found {
        list: &mut list,
        changes: &mut changes,
        has_parent: parent.is_some(),
        use_cvs,
    };
    read_pages(db, spec, &job, writer, &mut found, &mut whole, progress)?;
    progress.end();

    let schema_version = db.schema_version;
    let sqlite_version = db.sqlite_version.clone();
    let journal_mode = db.journal_mode.clone();
    let schema_query = db.schema_query.clone();
    let page_count = db.page_count;

    let (file_hash, map) = page_map(parent, page_count, page_size as u32, list, changes, whole);
    let map_id = store_page_map(writer, &map, spec)?;
    drop(map);

    let meta = std::fs::metadata(&spec.path).at(&spec.path)?;
    use std::os::unix::fs::MetadataExt;
    Ok(SqliteSource {
        name: spec.name.clone(),
        path: abs_string(&spec.path),
        page_size: page_size as u32,
        page_count,
        size: total,
        blake3: file_hash,
        pagemap: map_id,
        schema_version,
        schema_query,
        sqlite_version,
        journal_mode,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        replication: None,
    })
}

/// The earlier snapshot's page list this capture can build on: readable,
/// same page size, chaining values when this capture uses them, and every
/// page still in the index. Resolved first, so workers skip the index for
/// every unchanged page.
fn usable_parent(repo: &Repository, parent: Option<Id>, page_size: usize, use_cvs: bool) -> Option<Parent> {
    match parent.map(|p| repo.resolve_pagemap(&p, true).map(|r| (p, r))) {
        Some(Ok((id, r)))
            if r.page_size as usize == page_size && (!use_cvs || r.cvs.len() == r.pages.len()) && r.is_live(repo) =>
        {
            Some(Parent {
                id,
                depth: r.depth,
                list: PageList {
                    ids: r.pages,
                    cvs: r.cvs,
                },
            })
        }
        Some(Err(e)) => {
            // Never build on a parent we cannot read: a full map stands alone.
            tracing::warn!(event = "snapshot.parent_unreadable", error = %e);
            None
        }
        _ => None,
    }
}

/// Read every page inside the read transaction on this thread, hash and
/// compress batches on workers, and store what they find on a collector
/// thread, so packs are written while the database is still being read.
fn read_pages(
    db: &OpenDatabase,
    spec: &SourceSpec,
    job: &HashJob,
    writer: &mut BlobWriter,
    found: &mut Found,
    whole: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> Result<()> {
    let (page_size, use_cvs) = (job.page_size, job.use_cvs);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (work_tx, work_rx) = sync_channel::<Batch>(workers);
    // Batch buffers circulate between the reader and the workers instead of
    // being allocated per batch: bounded memory, no allocator churn.
    let pool = workers + 2;
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(pool);
    for _ in 0..pool {
        free_tx
            .send(Vec::with_capacity(BATCH_PAGES * page_size))
            .expect("pool has room");
    }

    std::thread::scope(|scope| {
        // Only the workers hold the queue's receiving end, and the buffers'
        // way back: when they have all stopped (the collector failed, say,
        // on a full disk), the reader's next send or wait for a buffer
        // fails instead of waiting forever on a queue nobody drains.
        let collector = scope.spawn(move || -> Result<()> {
            crate::workers::map_consume(
                workers,
                work_rx,
                || job.worker(),
                |hasher, batch| {
                    let hashed = job.hash(hasher, &batch);
                    // Returned as is: the reader overwrites it whole.
                    let _ = free_tx.send(batch.data);
                    hashed
                },
                |h| {
                    found.record(&h);
                    for (start, len, members) in &h.frames {
                        writer.add_frame(&[&h.encoded[*start..*start + *len]], members)?;
                    }
                    progress.advance((h.pages * page_size) as u64);
                    Ok(())
                },
            )
        });
        let stopped = || {
            Error::new(
                crate::error::ErrorKind::Io,
                spec.path.display(),
                "capture pipeline stopped",
            )
        };
        let read = db.read_batches(
            BATCH_PAGES as u32,
            || free_rx.recv().map_err(|_| stopped()),
            |first_pgno, data| {
                if !use_cvs {
                    whole.update(&data);
                }
                work_tx.send(Batch { first_pgno, data }).map_err(|_| stopped())
            },
        );
        drop(work_tx);
        let collected = collector.join().expect("collector thread");
        // A collector failure (disk full, say) is the root cause of a read
        // failure that merely saw the pipeline stop.
        collected.and(read)
    })
}

/// Where the collector records the pages the workers hashed.
struct Found<'a> {
    list: &'a mut PageList,
    changes: &'a mut Vec<Change>,
    has_parent: bool,
    use_cvs: bool,
}

impl Found<'_> {
    /// The page ids of one hashed batch, or its changes when there is a
    /// parent.
    fn record(&mut self, h: &Hashed) {
        if self.has_parent {
            self.changes.extend_from_slice(&h.changed);
        } else {
            for c in &h.changed {
                self.list.ids[c.pgno as usize - 1] = c.id;
                if self.use_cvs {
                    self.list.cvs[c.pgno as usize - 1] = c.cv;
                }
            }
        }
    }
}

/// The capture's page map (full, or the changes from its parent) and the
/// whole file's hash: assembled from the pages' chaining values, or the
/// reader's hash of every byte when pages carry none.
fn page_map(
    parent: Option<Parent>,
    page_count: u32,
    page_size: u32,
    list: PageList,
    mut changes: Vec<Change>,
    whole: blake3::Hasher,
) -> (Id, PageMap) {
    let use_cvs = crate::treehash::supported(page_size);
    let (parent_ref, list) = match parent {
        None => (None, list),
        Some(mut p) => {
            changes.sort_unstable_by_key(|c| c.pgno);
            p.list.apply_changes(page_count, &changes);
            (Some((p.id, p.depth)), p.list)
        }
    };
    let file_hash = if use_cvs {
        crate::treehash::file_hash(&list.cvs, list.ids.first().copied().unwrap_or_default())
    } else {
        Id(*whole.finalize().as_bytes())
    };
    let map = match parent_ref {
        None => PageMap::full(page_size, list),
        Some((id, depth)) => PageMap::from_changes(page_size, id, depth, list, changes),
    };
    (file_hash, map)
}

/// Store the page map, hashed in one pass and streamed into the pack in
/// another: a full map of a 1 GiB database is 16 MiB, and is never held
/// twice.
fn store_page_map(writer: &mut BlobWriter, map: &PageMap, spec: &SourceSpec) -> Result<Id> {
    let mut hasher = blake3::Hasher::new();
    map.write_to(&mut hasher).at(&spec.path)?;
    let map_id = Id(*hasher.finalize().as_bytes());
    writer.add_raw_streamed(BlobType::PageMap, map_id, map.encoded_len(), &mut |w| map.write_to(w))?;
    Ok(map_id)
}

/// What every hashing worker of one database shares.
struct HashJob<'a> {
    page_size: usize,
    level: i32,
    repo: &'a Repository,
    /// The parent snapshot's page ids (empty without one).
    parent: &'a [Id],
    use_cvs: bool,
}

/// A hashing worker's own encoder and the frame it is filling.
struct FrameBuilder {
    enc: Encoder,
    pending: Vec<u8>,
    members: Vec<Member>,
}

impl HashJob<'_> {
    fn worker(&self) -> FrameBuilder {
        FrameBuilder {
            enc: Encoder::new(self.level),
            pending: Vec::with_capacity(FRAME_PAGES * self.page_size),
            members: Vec::with_capacity(FRAME_PAGES),
        }
    }

    /// The pages of `batch` that differ from the parent's, and those the
    /// repository lacks packed into frames.
    fn hash(&self, builder: &mut FrameBuilder, batch: &Batch) -> Hashed {
        let HashJob {
            page_size,
            repo,
            parent,
            use_cvs,
            ..
        } = *self;
        let FrameBuilder { enc, pending, members } = builder;
        let pages = batch.data.len() / page_size;
        let mut changed = Vec::new();
        let mut frames = Vec::new();
        let mut encoded = Vec::new();
        let mut seal = |pending: &mut Vec<u8>, members: &mut Vec<Member>, encoded: &mut Vec<u8>| {
            if !members.is_empty() {
                let start = encoded.len();
                let len = enc.encode_into(pending, encoded);
                frames.push((start, len, std::mem::take(members)));
                pending.clear();
            }
        };
        for (i, page) in batch.data.chunks_exact(page_size).enumerate() {
            let pgno = batch.first_pgno + i as u32;
            let id = Id::of(page);
            if parent.get(pgno as usize - 1) == Some(&id) {
                continue; // unchanged since the parent snapshot: stored already
            }
            let cv = if use_cvs {
                crate::treehash::page_cv(page, pgno)
            } else {
                Id::ZERO
            };
            changed.push(Change { pgno, id, cv });
            // A page repeated within this run is compressed again and then
            // dropped by the writer: cheaper than a shared claim set.
            if !repo.has_blob(&id) {
                let blob_offset = pending.len() as u32;
                pending.extend_from_slice(page);
                members.push(Member {
                    kind: BlobType::Page,
                    id,
                    blob_offset,
                    raw_length: page_size as u32,
                });
                if members.len() == FRAME_PAGES {
                    seal(pending, members, &mut encoded);
                }
            }
        }
        seal(pending, members, &mut encoded);
        Hashed {
            pages,
            changed,
            frames,
            encoded,
        }
    }
}

/// Store one walked entry's content (for regular files) and return its entry.
fn capture_entry(
    enc: &mut Encoder,
    repo: &Repository,
    writer: &mut BlobWriter,
    w: files::Walked,
    warn: &mut dyn FnMut(String),
    progress: &dyn Progress,
) -> Result<(Entry, bool)> {
    let mut entry = w.entry;
    if entry.kind != EntryKind::File {
        return Ok((entry, false));
    }
    let mut changed_twice = false;
    for attempt in 0..2 {
        let mut chunks = Vec::new();
        let read = files::read_chunks(&w.abs, repo.config().chunker, &mut |data| {
            let id = Id::of(data);
            if !writer.has(&id) {
                writer.add(BlobType::Chunk, id, &enc.encode(data), data.len())?;
            }
            chunks.push(id);
            progress.advance(data.len() as u64);
            Ok(())
        })?;
        entry.size = read.size;
        entry.blake3 = Some(read.blake3);
        entry.chunks = chunks;
        if !read.changed {
            break;
        }
        if attempt == 0 {
            tracing::info!(event = "snapshot.file_changed_retry", path = %w.abs.display());
        } else {
            warn(format!(
                "{}: changed while it was read (twice); the stored copy may be inconsistent",
                w.abs.display()
            ));
            changed_twice = true;
        }
    }
    // Metadata as of the read we kept.
    if let Ok(meta) = std::fs::symlink_metadata(&w.abs)
        && let Ok(Some(e)) = files::entry_for(&entry.path, &meta, &w.abs)
    {
        entry.mode = e.mode;
        entry.mtime_ns = e.mtime_ns;
        entry.uid = e.uid;
        entry.gid = e.gid;
    }
    Ok((entry, changed_twice))
}

#[cfg(test)]
mod hook_tests {
    use super::*;

    /// Records every call.
    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl SourceHooks for Recorder {
        fn before(&self, source: &SourceSpec) -> Result<()> {
            self.0.borrow_mut().push(format!("before {}", source.name));
            Ok(())
        }
        fn after(&self, source: &SourceSpec, failure: Option<&Error>) {
            let why = failure.map(|e| e.problem.clone()).unwrap_or_default();
            self.0.borrow_mut().push(format!("after {} {why}", source.name));
        }
    }

    #[test]
    fn a_panic_during_a_capture_still_runs_its_after() {
        let spec = |name: &str| SourceSpec {
            name: name.into(),
            path: PathBuf::from("/nowhere").join(name),
            kind: SourceKind::File,
        };
        let specs = [spec("a"), spec("b"), spec("c")];
        let rec = Recorder(Default::default());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut around = Around {
                hooks: &rec,
                specs: &specs,
                pending: vec![false; specs.len()],
            };
            around.before(0).unwrap();
            around.after(0, None);
            around.before(1).unwrap();
            panic!("a capture panicked");
        }));
        assert!(unwound.is_err());
        assert_eq!(
            *rec.0.borrow(),
            ["before a", "after a ", "before b", "after b interrupted (panic)"]
        );
    }
}
