//! The repository: a typed view over a [`Store`], and the only way into it
//! for everything above. Knows the object layout (config, packs, index,
//! snapshots, marks, segments, log records: [`keys`]) and nothing about
//! SQLite or files.

pub mod config;
pub mod filter;
pub mod index;
pub mod keys;
pub mod manifest;
pub mod mark;
pub mod pack;
pub mod pagemap;
pub mod references;
pub mod segment;
pub mod writer;

use std::marker::PhantomData;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::{Error, ErrorCode, ErrorKind, IoContext, Result};
use crate::id::Id;
pub use crate::storage::RepoLocation;
use crate::storage::{Backend, LockGuard, LockHolder, RequestCounts, Store};
use config::RepoConfig;
pub use filter::SnapshotFilter;
use index::{Index, IndexFile};
use manifest::Manifest;
use mark::Mark;

/// How long a writer may go on publishing index files and manifests after
/// it listed the marks without listing them again: 15 minutes. `prune`
/// deletes a marked pack only after a grace period of at least twice this
/// (docs/FORMAT.md, "Deletion"), so whatever such a writer publishes is
/// visible to the prune that decides. [`scale_writer_view_limit`] shortens
/// it so tests can exercise the protocol in seconds.
pub fn writer_view_limit() -> Duration {
    match WRITER_VIEW_LIMIT_MS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Duration::from_secs(15 * 60),
        ms => Duration::from_millis(ms),
    }
}

/// 0 while unset: the protocol's limit. One value for the process, not per
/// repository, because every writer and prune of the process must agree on
/// it.
static WRITER_VIEW_LIMIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replace [`writer_view_limit`] for this process, before any repository is
/// opened (the binary's `LIFEBOAT_WRITER_VIEW_LIMIT`, e.g. `2s`, for tests).
/// Every process writing to or pruning the repository must use the same
/// value, so a service embedding the library leaves it alone.
pub fn scale_writer_view_limit(limit: Duration) {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    WRITER_VIEW_LIMIT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// A repository: the one way into the store for everything above. It
/// reads and writes the repository's objects (config, packs, index files,
/// manifests, marks, segments, log records) by their kinds, and holds the
/// loaded config, index and marks.
///
/// Its state is in its type. [`Repository::open`] gives an
/// `Repository<Opened>` (the config read: enough to list, show and find
/// snapshots); [`Repository::indexed`] one with the index loaded, a
/// `Repository` (`Repository<Indexed>`), which reads blobs and writes; and
/// [`Repository::locked`] a [`LockedRepository`], indexed and holding this
/// host's writer lock until it is dropped.
pub struct Repository<S = Indexed> {
    storage: Store,
    config: RepoConfig,
    index: Index,
    /// The marks listed when the index was loaded, by id.
    marks: Vec<(Id, Mark)>,
    /// Keys of the index files loaded.
    index_keys: Vec<String>,
    /// Index files that could not be read or parsed, left out of `index`.
    index_damage: IndexDamage,
    /// When the marks were listed.
    view: Option<Instant>,
    /// `fn() -> S`: the state is only a type, so it never keeps a
    /// repository from crossing threads.
    state: PhantomData<fn() -> S>,
}

/// The state of a repository whose config is read, and nothing else yet.
pub struct Opened;

/// The state of a repository whose marks and index files are loaded.
pub struct Indexed;

/// Index files left out of a load, by key, each with its error.
pub type IndexDamage = Vec<(String, Error)>;

/// The snapshots whose manifests read (oldest first), and the manifests
/// that do not, each with its error.
pub type Listed = (Vec<SnapshotRef>, Vec<(Id, Error)>);

/// A snapshot as listed: its id and manifest.
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    /// The snapshot id.
    pub id: Id,
    /// Its manifest.
    pub manifest: Manifest,
}

/// A page map with its chain applied.
pub struct ResolvedPages {
    /// Page size of the database.
    pub page_size: u32,
    /// Depth of the map resolved (0 = full).
    pub depth: u32,
    /// Blob id of every page, page 1 first.
    pub pages: Vec<Id>,
    /// Every page's BLAKE3 chaining value, when asked for and kept.
    pub cvs: Vec<Id>,
    /// The page maps of the chain, the one resolved first.
    pub maps: Vec<Id>,
}

impl ResolvedPages {
    /// Whether a writer can build on this list: every page and every map of
    /// the chain reusable (see [`Repository::all_live`]).
    pub fn is_live(&self, repo: &Repository) -> bool {
        repo.all_live(&self.maps) && repo.all_live(&self.pages)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Empty, or holding only the empty directories an interrupted `init` made.
fn is_empty_or_skeleton(root: &Path) -> Result<bool> {
    for e in std::fs::read_dir(root).at(root)? {
        let e = e.at(root)?;
        let name = e.file_name();
        let skeleton = keys::SKELETON.iter().any(|s| name == *s);
        let empty_dir = e.path().is_dir() && std::fs::read_dir(e.path()).at(&e.path())?.next().is_none();
        if !(skeleton && empty_dir) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Marks and index files as `Repository::read_index` read them, and when
/// the writer's view began (before the marks were listed).
struct LoadedIndex {
    view: Instant,
    marks: Vec<(Id, Mark)>,
    index: Index,
    names: Vec<String>,
    damage: IndexDamage,
}

impl Repository<Opened> {
    /// Create a new repository; refuses a directory or bucket prefix that is
    /// not empty.
    pub fn init(loc: &RepoLocation) -> Result<Repository<Opened>> {
        let exists = || {
            Error::cant_create(loc.display(), "a repository already exists here")
                .fix("use it as it is, or choose another path")
                .code(ErrorCode::RepoExists)
        };
        let not_empty = |what: &str| {
            Error::cant_create(loc.display(), format!("{what} is not empty"))
                .fix(format!("choose an empty or new {what} for the repository"))
        };
        if let Backend::Local(root) = &loc.backend {
            if root.join(keys::CONFIG).exists() {
                return Err(exists());
            }
            if root.exists() && !is_empty_or_skeleton(root)? {
                return Err(not_empty("directory"));
            }
            for sub in std::iter::once("").chain(keys::SKELETON) {
                let d = root.join(sub);
                crate::fsutil::create_private_dir_all(&d)
                    .map_err(|e| Error::io(&d, e).fix("check the parent directory exists and is writable"))?;
            }
            crate::fsutil::sync_dir(root)?;
            if let Some(parent) = root.parent() {
                crate::fsutil::sync_dir(parent)?;
            }
        }
        let storage = crate::storage::open(loc, &keys::LAYOUT)?;
        if let Backend::S3(_) = &loc.backend {
            let present = storage.list("")?;
            if present.iter().any(|(k, _)| k == keys::CONFIG) {
                return Err(exists());
            }
            if !present.is_empty() {
                return Err(not_empty("bucket prefix"));
            }
        }
        let config = RepoConfig::new_default();
        // The config is written last: a place without one is not yet a
        // repository, so an interrupted init can simply be run again. Created
        // only if absent, so two racing inits cannot both win.
        let bytes = config.to_bytes();
        // `false` also when our own first attempt landed and only its reply
        // was lost (then retried): the bytes tell the two apart.
        if !storage.create(keys::CONFIG, &bytes)? && storage.read(keys::CONFIG)? != bytes {
            return Err(exists());
        }
        tracing::info!(event = "repo.init", location = %storage.location());
        Ok(Repository::new(storage, config))
    }

    /// Open an existing repository: its config is read (and its version
    /// checked), nothing else. Enough for listing and showing snapshots,
    /// and a LIST plus downloads cheaper on an object store than loading
    /// the index.
    pub fn open(loc: &RepoLocation) -> Result<Repository<Opened>> {
        let not_found = || {
            Error::no_input(loc.display(), "no Lifeboat repository here")
                .code(ErrorCode::RepoNotFound)
                .fix(format!("create one with `lifeboat --repo {} init`", loc.repo_arg()))
        };
        if let Backend::Local(root) = &loc.backend
            && !root.join(keys::CONFIG).exists()
        {
            return Err(not_found());
        }
        let storage = crate::storage::open(loc, &keys::LAYOUT)?;
        let raw = match storage.read(keys::CONFIG) {
            Err(e) if e.kind == ErrorKind::NoInput => return Err(not_found()),
            other => other?,
        };
        let config = RepoConfig::from_bytes(&raw, &storage.location())?;
        Ok(Repository::new(storage, config))
    }

    /// [`Repository::open`] for a writer: the per-user default repository
    /// is created on first use.
    pub fn open_or_init_default(loc: &RepoLocation) -> Result<Repository<Opened>> {
        match Repository::open(loc) {
            Err(e) if e.kind == ErrorKind::NoInput && loc.is_default => {
                tracing::info!(event = "repo.create_default", path = %loc.display());
                Repository::init(loc)
            }
            other => other,
        }
    }

    /// The repository as a writer must see it: the marks, then the index
    /// files (docs/FORMAT.md, "Deletion"); the marks' packs join the index
    /// flagged, readable but never reused. A new handle on the same store;
    /// this one stays as it is.
    pub fn indexed(&self) -> Result<Repository> {
        let loaded = self.read_index()?;
        let mut repo = self.handle().retype();
        repo.install_index(loaded);
        Ok(repo)
    }

    /// The index for `prune` and `verify`: index files first, then marks.
    /// A prune that marks a pack writes its mark before it removes the pack
    /// from the index files, so in this order a pack another prune is
    /// moving out is seen in one place or the other (or both), never in
    /// neither.
    pub fn indexed_then_marks(&self) -> Result<Repository> {
        let (index, names, damage) = self.read_index_files()?;
        let view = Instant::now();
        let marks = self.read_marks()?;
        let mut repo = self.handle().retype();
        repo.install_index(LoadedIndex {
            view,
            marks,
            index,
            names,
            damage,
        });
        Ok(repo)
    }

    /// [`Repository::indexed`] and `find_snapshot(spec)`, for a reader of
    /// one snapshot. The snapshots are listed first: a manifest is
    /// published after the index file naming its packs, so the index,
    /// loaded after the listing, holds the blobs of every snapshot listed
    /// even while a writer publishes (`verify` lists in this order too).
    /// The manifests are read beside the index load: on an object store a
    /// round of downloads that then costs no time of its own. The index
    /// load's failure is reported before the lookup's.
    pub fn indexed_and_find(&self, spec: &str) -> Result<(Repository, SnapshotRef)> {
        let listed = self.snapshot_keys();
        let (loaded, found) = std::thread::scope(|scope| {
            let found = scope.spawn(move || self.pick_snapshot(self.read_snapshots(listed?)?, spec));
            (self.read_index(), found.join().expect("snapshot lookup"))
        });
        let mut repo = self.handle().retype();
        repo.install_index(loaded?);
        Ok((repo, found?))
    }

    /// Take this host's writer lock, then load the index (marks first, then
    /// what a killed writer on this host left is recovered, then the index
    /// files), so the index reflects everything earlier writers published.
    /// `ErrorKind::Busy` naming the holder when another process holds it.
    pub fn locked(&self, command: &str) -> Result<LockedRepository> {
        let guard = self.lock(command)?;
        self.handle().into_locked(guard)
    }

    /// [`Repository::locked`], waiting up to `patience` while another
    /// writer on this host holds the lock (event `repo.lock_wait`).
    pub fn locked_waiting(&self, command: &str, patience: Duration) -> Result<LockedRepository> {
        let guard = self.lock_waiting(command, patience)?;
        self.handle().into_locked(guard)
    }
}

impl Clone for Repository<Opened> {
    fn clone(&self) -> Self {
        self.handle()
    }
}

impl<S> Repository<S> {
    /// A new handle on the same store and config, nothing loaded.
    fn handle(&self) -> Repository<Opened> {
        Repository::new(self.storage.clone(), self.config.clone())
    }

    /// The same repository in another state, for the transitions here.
    fn retype<T>(self) -> Repository<T> {
        Repository {
            storage: self.storage,
            config: self.config,
            index: self.index,
            marks: self.marks,
            index_keys: self.index_keys,
            index_damage: self.index_damage,
            view: self.view,
            state: PhantomData,
        }
    }

    /// Hold `guard`, this repository's writer lock (from
    /// [`Repository::lock`]), and bring the index up to date under it: the
    /// marks are listed, what a killed writer left is recovered, and the
    /// index files are read. For a repository kept between writes (a
    /// replicator's bases), only index files not loaded yet are read while
    /// the marks and the files already loaded stand; a new mark, or a file
    /// gone (a prune rewrote it), loads everything again. A replicator of a
    /// hundred databases otherwise reads every index file a hundred times
    /// over at its start.
    pub fn into_locked(self, guard: Box<dyn LockGuard>) -> Result<LockedRepository> {
        let mut repo: Repository = self.retype();
        repo.refresh()?;
        Ok(LockedRepository::holding(repo, guard))
    }

    fn new(storage: Store, config: RepoConfig) -> Repository<S> {
        Repository {
            storage,
            config,
            index: Index::default(),
            marks: Vec::new(),
            index_keys: Vec::new(),
            index_damage: Vec::new(),
            view: None,
            state: PhantomData,
        }
    }

    /// What `indexed` reads, in its order (marks, then index files),
    /// without changing the repository yet.
    fn read_index(&self) -> Result<LoadedIndex> {
        let view = Instant::now();
        let marks = self.read_marks()?;
        let (index, names, damage) = self.read_index_files()?;
        Ok(LoadedIndex {
            view,
            marks,
            index,
            names,
            damage,
        })
    }

    fn install_index(&mut self, loaded: LoadedIndex) {
        self.marks = loaded.marks;
        self.view = Some(loaded.view);
        self.finish_index(loaded.index, loaded.names, loaded.damage);
    }

    fn read_marks(&self) -> Result<Vec<(Id, Mark)>> {
        let keys: Vec<(Id, String)> = self
            .storage
            .list(keys::Kind::Mark.prefix())?
            .into_iter()
            .filter_map(|(k, _)| Some((keys::object_id(&k)?, k)))
            .collect();
        let mut marks = Vec::with_capacity(keys.len());
        self.storage.read_parallel(keys, |id, key, raw| {
            let raw = match raw {
                // Swept by a prune since the listing: nothing to avoid.
                Err(e) if e.kind == ErrorKind::NoInput => return Ok(()),
                other => other?,
            };
            let what = format!("{}/{key}", self.storage.location());
            if Id::of(&raw) != id {
                return Err(Error::damaged(&what, "mark content does not match its name"));
            }
            marks.push((id, Mark::from_bytes(&codec::decode(&raw, &what)?, &what)?));
            Ok(())
        })?;
        marks.sort_by_key(|(id, m)| (m.time, *id));
        Ok(marks)
    }

    fn finish_index(&mut self, mut index: Index, names: Vec<String>, damage: IndexDamage) {
        for (_, mark) in &self.marks {
            index.add_marked(&mark.packs);
        }
        index.seal();
        self.index = index;
        self.index_keys = names;
        self.index_damage = damage;
    }

    fn read_index_files(&self) -> Result<(Index, Vec<String>, IndexDamage)> {
        let mut attempt = 0;
        loop {
            let mut index = Index::default();
            let keys: Vec<((), String)> = self
                .storage
                .list(keys::Kind::Index.prefix())?
                .into_iter()
                .filter(|(k, _)| {
                    // Not a name Lifeboat writes: someone's stray file, not
                    // an index file, so not damage either.
                    let ours = keys::object_id(k).is_some();
                    if !ours {
                        tracing::warn!(event = "repo.stray_file", key = %k, "ignored");
                    }
                    ours
                })
                .map(|(k, _)| ((), k))
                .collect();
            let names: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
            // Hash check, decompression and parsing of a 1 GiB database's
            // index took 75 ms on one core before a snapshot could start;
            // they run on every core, and only the adding is serial.
            let threads = self.storage.transfers().max(cores());
            let loaded = self.fetch_index_files(keys, threads, |_, file| index.add_file(&file));
            let damage = match loaded {
                // Replaced by a prune since the listing: list again.
                Err(e) if e.kind == ErrorKind::NoInput && attempt < 5 => {
                    attempt += 1;
                    tracing::info!(event = "repo.index_replaced", attempt);
                    continue;
                }
                other => other?,
            };
            return Ok((index, names, damage));
        }
    }

    /// Read, check and parse the index files `keys` on `threads` threads,
    /// handing each whole one to `each` (in this thread). A damaged one is
    /// left out and returned with its error; one gone since the listing (a
    /// prune rewrote it) ends the read with `NoInput`, for the caller to
    /// list again.
    fn fetch_index_files(
        &self,
        keys: Vec<((), String)>,
        threads: usize,
        mut each: impl FnMut(String, IndexFile),
    ) -> Result<IndexDamage> {
        let mut damage = Vec::new();
        crate::storage::read_and_decode_parallel(
            &*self.storage,
            keys,
            threads,
            |key, raw| {
                self.parse_index_file(key, &raw?)
                    .or_else(|e| self.read_again(key, e, |raw| self.parse_index_file(key, raw)))
            },
            |(), key, file| {
                match file {
                    Ok(file) => each(key, file),
                    Err(e) if e.kind == ErrorKind::NoInput => return Err(e),
                    Err(e) => {
                        tracing::warn!(event = "repo.index_damaged", error = %e, "index file left out");
                        damage.push((key, e));
                    }
                }
                Ok(())
            },
        )?;
        Ok(damage)
    }

    /// `key`'s check failed with `e`: if that says damage, read the object
    /// again from the store itself and check once more, so a body damaged
    /// in transit (or a damaged local copy) is not taken for damage in the
    /// repository. Any other failure, or a second failed check, stands.
    fn read_again<T>(&self, key: &str, e: Error, check: impl Fn(&[u8]) -> Result<T>) -> Result<T> {
        if e.kind != ErrorKind::BadData {
            return Err(e);
        }
        tracing::warn!(event = "repo.read_again", key, error = %e, "reading the object again before calling it damaged");
        let raw = self.storage.reread(key).map_err(|_| e)?;
        check(&raw)
    }

    /// Read, check and parse the index file at `key`.
    pub fn read_index_file(&self, key: &str) -> Result<IndexFile> {
        self.parse_index_file(key, &self.storage.read(key)?)
    }

    /// Check `raw`, read from `key`, against its name, and parse it.
    pub fn parse_index_file(&self, key: &str, raw: &[u8]) -> Result<IndexFile> {
        let what = format!("{}/{key}", self.storage.location());
        let id = keys::object_id(key);
        if id != Some(Id::of(raw)) {
            return Err(Error::damaged(&what, "index file content does not match its name"));
        }
        IndexFile::from_bytes(&codec::decode(raw, &what)?, &what)
    }

    /// The writer lock, waiting up to `patience` while another writer on
    /// this host holds it (event `repo.lock_wait`).
    pub fn lock_waiting(&self, command: &str, patience: Duration) -> Result<Box<dyn LockGuard>> {
        let started = Instant::now();
        loop {
            match self.lock(command) {
                Err(e) if e.kind == ErrorKind::Busy && started.elapsed() < patience => {
                    if started.elapsed() < Duration::from_millis(600) {
                        tracing::info!(event = "repo.lock_wait", error = %e);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// This host's writer lock, taken in `command`'s name; `ErrorKind::Busy`
    /// naming the holder when another process holds it. Most writers want
    /// [`Repository::locked`], whose repository owns the guard.
    pub fn lock(&self, command: &str) -> Result<Box<dyn LockGuard>> {
        self.storage.lock(&LockHolder {
            host: crate::fsutil::hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            since: jiff::Timestamp::now().to_string(),
        })
    }

    /// Read and check the manifest of snapshot `id`.
    pub fn read_manifest(&self, id: &Id) -> Result<Manifest> {
        self.parse_manifest(id, &self.storage.read(&keys::snapshot(id))?)
    }

    fn parse_manifest(&self, id: &Id, raw: &[u8]) -> Result<Manifest> {
        let key = keys::snapshot(id);
        let what = format!("{}/{key}", self.storage.location());
        let json = codec::decode(raw, &what)?;
        if Id::of(&json) != *id {
            return Err(Error::damaged(&what, "manifest does not match its id"));
        }
        Manifest::from_json(&json, &what)
    }

    /// Every snapshot whose manifest reads, oldest first. A damaged or
    /// unreadable manifest costs only its own snapshot: it is left out with
    /// a warning (`repo.manifest_damaged`), and everything else lists,
    /// restores and verifies. For readers and writers; see `snapshots_whole`.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRef>> {
        let (good, damaged) = self.snapshots_and_damage()?;
        warn_damaged(&damaged);
        Ok(good)
    }

    /// Every snapshot, or the first manifest that cannot be read: for
    /// `forget` and `prune`, whose decisions need every snapshot (a prune
    /// blind to one would delete its data).
    pub fn snapshots_whole(&self) -> Result<Vec<SnapshotRef>> {
        let (good, damaged) = self.snapshots_and_damage()?;
        match damaged.into_iter().next() {
            Some((_, e)) => Err(e.fix(
                "a damaged manifest must be set aside before anything is deleted: `lifeboat repair snapshots` moves it out of the way",
            )),
            None => Ok(good),
        }
    }

    /// The snapshots whose manifests read, and those that do not, each with
    /// its error.
    pub fn snapshots_and_damage(&self) -> Result<Listed> {
        self.read_snapshots(self.snapshot_keys()?)
    }

    fn snapshot_keys(&self) -> Result<Vec<(Id, String)>> {
        Ok(self
            .storage
            .list(keys::Kind::Snapshot.prefix())?
            .into_iter()
            .filter_map(|(key, _)| Some((keys::object_id(&key)?, key)))
            .collect())
    }

    /// The snapshots listed as `keys`, oldest first, and the manifests that
    /// could not be read or parsed.
    fn read_snapshots(&self, keys: Vec<(Id, String)>) -> Result<Listed> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        self.storage.read_parallel(keys, |id, key, raw| {
            let manifest = match raw {
                // Forgotten since the listing.
                Err(e) if e.kind == ErrorKind::NoInput => return Ok(()),
                Err(e) => Err(e),
                Ok(raw) => self
                    .parse_manifest(&id, &raw)
                    .or_else(|e| self.read_again(&key, e, |raw| self.parse_manifest(&id, raw))),
            };
            match manifest {
                Ok(manifest) => out.push(SnapshotRef { id, manifest }),
                Err(e) => damaged.push((id, e)),
            }
            Ok(())
        })?;
        // Parsed, not textual: RFC 3339 text omits zero fractions, so
        // `…:00Z` would sort after `…:00.5Z`.
        out.sort_by_key(|s| (s.manifest.time, s.id));
        damaged.sort_by_key(|(id, _)| *id);
        Ok((out, damaged))
    }

    /// Resolve `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<SnapshotRef> {
        self.pick_snapshot(self.snapshots_and_damage()?, spec)
    }

    /// `spec` among the snapshots listed (oldest first) and the damaged
    /// manifests, as `find_snapshot`: naming a damaged one is its error;
    /// `latest` is the newest readable, with a warning for each damaged one
    /// (whose time cannot be known).
    fn pick_snapshot(&self, listed: Listed, spec: &str) -> Result<SnapshotRef> {
        let (all, damaged) = listed;
        let spec_l = spec.to_ascii_lowercase();
        if spec != "latest" {
            let mut hits = damaged.into_iter().filter(|(id, _)| id.hex().starts_with(&spec_l));
            if let Some((_, e)) = hits.next() {
                let good_hits = all.iter().filter(|s| s.id.hex().starts_with(&spec_l)).count();
                if good_hits == 0 && hits.next().is_none() {
                    return Err(e);
                }
                return Err(Error::usage(format!("snapshot id prefix {spec} is ambiguous")).fix("give more digits"));
            }
        } else {
            warn_damaged(&damaged);
        }
        if spec == "latest" {
            // A replication base is an internal point of its stream, never
            // "the latest snapshot" of the service.
            let bases = all
                .iter()
                .filter(|s| s.manifest.kind == crate::repo::manifest::SnapshotKind::Base)
                .count();
            return all
                .into_iter()
                .rfind(|s| s.manifest.kind != crate::repo::manifest::SnapshotKind::Base)
                .ok_or_else(|| {
                    let hint = if bases > 0 {
                        format!("; {bases} replication bases are there (`lifeboat list --all`)")
                    } else {
                        String::new()
                    };
                    Error::no_input(
                        self.storage.location(),
                        format!("the repository holds no snapshot yet{hint}"),
                    )
                    .fix("take one with `lifeboat snapshot`")
                    .code(ErrorCode::RestoreNoSnapshot)
                });
        }
        let mut matches: Vec<SnapshotRef> = all.into_iter().filter(|s| s.id.hex().starts_with(&spec_l)).collect();
        match matches.len() {
            1 => Ok(matches.pop().unwrap()),
            0 => Err(Error::no_input(spec, "no such snapshot").fix("`lifeboat list` shows the ids")),
            _ => Err(Error::usage(format!("snapshot id prefix {spec} is ambiguous")).fix("give more digits")),
        }
    }

    /// The local directory where a writer stages files before they are
    /// stored.
    pub fn staging_dir(&self) -> &Path {
        self.storage.staging_dir()
    }
}

/// What the repository holds and where it lives, for readers.
impl<S> Repository<S> {
    /// Where the repository lives, for messages: a path or URL, never
    /// credentials.
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// `key` as named in messages: the repository's location and the key.
    pub fn object_name(&self, key: &str) -> String {
        format!("{}/{key}", self.storage.location())
    }

    /// Requests sent to the store so far, by kind (zero for a directory).
    pub fn requests(&self) -> RequestCounts {
        self.storage.requests()
    }

    /// How many transfers to run against the store at once.
    pub fn transfers(&self) -> usize {
        self.storage.transfers()
    }

    /// The repository's parameters, from its `config` object.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Where this repository's operations log records are appended.
    pub fn record_log(&self) -> RecordLog {
        RecordLog {
            storage: self.storage.clone(),
        }
    }

    /// A handle that stores WAL segments and reads their positions, shared
    /// with the threads of a replicator outside the writer's turn.
    pub fn segment_store(&self) -> SegmentStore {
        SegmentStore {
            storage: self.storage.clone(),
        }
    }
}

/// The repository's objects by key, for this crate's operations. The keys
/// come from [`keys`]; nothing above reaches the store another way.
impl<S> Repository<S> {
    /// Store a restore drill record under its key ([`keys::drill`]). No
    /// lock: like an operations log record, it is named by its time and
    /// content, written once and never replaced, and no other object
    /// refers to it (docs/FORMAT.md, "Drill records").
    pub(crate) fn write_drill_record(&self, key: &str, data: &[u8]) -> Result<()> {
        debug_assert_eq!(keys::Kind::of(key), Some(keys::Kind::Drill));
        self.storage.write(key, data)
    }

    /// The objects of `kind`, with their sizes.
    pub(crate) fn list_objects(&self, kind: keys::Kind) -> Result<Vec<(String, u64)>> {
        self.storage.list(kind.prefix())
    }

    /// Every object in the repository, whatever its kind, with its size.
    pub(crate) fn list_everything(&self) -> Result<Vec<(String, u64)>> {
        self.storage.list("")
    }

    /// The WAL segments of `stream` as `(first_txid, last_txid, key)`, in
    /// no particular order; other names under the stream are skipped.
    pub(crate) fn segments(&self, stream: &str) -> Result<Vec<(u64, u64, String)>> {
        Ok(self
            .storage
            .list(&keys::stream_prefix(stream))?
            .into_iter()
            .filter_map(|(k, _)| keys::parse_segment(&k).map(|(f, l)| (f, l, k)))
            .collect())
    }

    /// One WAL segment, decoded and checked.
    pub(crate) fn read_segment(&self, key: &str) -> Result<segment::Segment> {
        segment::Segment::decode(&self.storage.read(key)?, &self.object_name(key))
    }

    /// A whole object; `ErrorKind::NoInput` when absent.
    pub(crate) fn read_object(&self, key: &str) -> Result<Vec<u8>> {
        self.storage.read(key)
    }

    /// `len` bytes of an object at `offset`.
    pub(crate) fn read_object_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.storage.read_range(key, offset, len)
    }

    /// Several sorted, disjoint ranges of one object, each handed to `each`
    /// as soon as it is in (see [`Storage::read_ranges`]).
    pub(crate) fn read_object_ranges(
        &self,
        key: &str,
        ranges: &[(u64, u64)],
        each: &mut dyn FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.storage.read_ranges(key, ranges, each)
    }

    /// Whole objects, up to [`Repository::transfers`] reads in flight,
    /// each handed to `each` on this thread as it arrives (see
    /// [`crate::storage::read_parallel`]).
    pub(crate) fn read_objects<T: Send>(
        &self,
        keys: Vec<(T, String)>,
        each: impl FnMut(T, String, Result<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        self.storage.read_parallel(keys, each)
    }

    /// Delete an object; deleting one already gone succeeds.
    pub(crate) fn delete_object(&self, key: &str) -> Result<()> {
        self.storage.delete(key)
    }

    /// Copy what can be read of `key` under `damaged/` ([`keys::aside`]).
    pub(crate) fn copy_aside(&self, key: &str) -> Result<()> {
        if let Ok(raw) = self.storage.read(key) {
            self.storage.write(&keys::aside(key), &raw)?;
        }
        Ok(())
    }
}

/// Where operations log records are appended after a command, which may
/// have failed before (or instead of) opening its repository.
pub struct RecordLog {
    storage: Store,
}

impl RecordLog {
    /// The log of the repository at `loc`. Unless `opened` (a command that
    /// succeeded has opened it), the repository must be there: a record is
    /// never written where there is none (a directory or prefix `init`
    /// refused, a mistyped `--repo`). A bucket already opened is not asked
    /// again (a GET); a directory's check costs no request.
    pub fn open(loc: &RepoLocation, opened: bool) -> Result<RecordLog> {
        let storage = match (&loc.backend, opened) {
            (Backend::S3(_), true) => crate::storage::open(loc, &keys::LAYOUT)?,
            _ => Repository::open(loc)?.storage,
        };
        Ok(RecordLog { storage })
    }

    /// Store a record under its key ([`keys::record`]).
    pub(crate) fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        debug_assert_eq!(keys::Kind::of(key), Some(keys::Kind::LogRecord));
        self.storage.write(key, data)
    }

    /// Where the repository lives, for messages.
    pub fn location(&self) -> String {
        self.storage.location()
    }
}

/// Stores a repository's WAL segments, for a replicator's shipping threads,
/// which write beside the one thread holding the writer's turn.
#[derive(Clone)]
pub struct SegmentStore {
    storage: Store,
}

impl SegmentStore {
    /// Store the segment of `stream` holding transactions `first` to `last`.
    pub fn write(&self, stream: &str, first: u64, last: u64, bytes: &[u8]) -> Result<()> {
        self.storage.write(&keys::segment(stream, first, last), bytes)
    }

    /// The last transaction id of the newest segment of `stream`, 0 when it
    /// has none. One LIST.
    pub fn last_txid(&self, stream: &str) -> Result<u64> {
        Ok(self
            .storage
            .list(&keys::stream_prefix(stream))?
            .into_iter()
            .filter_map(|(k, _)| keys::parse_segment(&k))
            .map(|(_, last)| last)
            .max()
            .unwrap_or(0))
    }

    /// Requests sent to the store so far, by kind.
    pub fn requests(&self) -> RequestCounts {
        self.storage.requests()
    }
}

/// What a repository with its index loaded does: read blobs, and write.
impl Repository<Indexed> {
    /// Holding the writer lock: list the marks, recover what a killed
    /// writer left, and bring the index up to date (see
    /// [`Repository::into_locked`]).
    /// Read every index file (and the marked packs' records) into the
    /// index, keeping the marks.
    fn load_index_files(&mut self) -> Result<()> {
        let (index, names, damage) = self.read_index_files()?;
        self.finish_index(index, names, damage);
        Ok(())
    }

    fn refresh(&mut self) -> Result<()> {
        let refreshed = self.refresh_once();
        if refreshed.is_err() {
            // Half refreshed (new marks, old index): the next one loads all.
            self.view = None;
        }
        refreshed
    }

    fn refresh_once(&mut self) -> Result<()> {
        let view = Instant::now();
        let marks = self.read_marks()?;
        let same_marks = self.view.is_some()
            && marks.len() == self.marks.len()
            && marks.iter().zip(&self.marks).all(|((a, _), (b, _))| a == b);
        self.marks = marks;
        self.view = Some(view);
        self.recover_interrupted()?;
        if !same_marks {
            return self.load_index_files();
        }
        let listed: Vec<String> = self
            .storage
            .list(keys::Kind::Index.prefix())?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| keys::object_id(k).is_some())
            .collect();
        let known: std::collections::HashSet<&str> = self
            .index_keys
            .iter()
            .map(String::as_str)
            .chain(self.index_damage.iter().map(|(k, _)| k.as_str()))
            .collect();
        let listed_set: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        if known.iter().any(|k| !listed_set.contains(k)) {
            return self.load_index_files();
        }
        let new: Vec<((), String)> = listed
            .iter()
            .filter(|k| !known.contains(k.as_str()))
            .map(|k| ((), k.clone()))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut files = Vec::new();
        let loaded = self.fetch_index_files(new, self.storage.transfers(), |key, file| files.push((key, file)));
        let damage = match loaded {
            // Gone since the listing: a prune is rewriting; start over.
            Err(e) if e.kind == ErrorKind::NoInput => return self.load_index_files(),
            other => other?,
        };
        for (key, file) in files {
            self.index.add_file(&file);
            self.index_keys.push(key);
        }
        self.index.seal();
        self.index_damage.extend(damage);
        Ok(())
    }

    /// Finish what a writer killed on this host left behind, holding the
    /// writer lock: packs it uploaded but never indexed are indexed now (when
    /// the store holds them whole), so their data is reused rather than sent
    /// again; every other staged file is removed.
    fn recover_interrupted(&self) -> Result<()> {
        let staging = self.staging_dir().to_path_buf();
        let Ok(entries) = std::fs::read_dir(&staging) else {
            return Ok(());
        };
        let mut index = IndexFile::default();
        let mut pending_files = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == writer::PENDING_EXT) {
                let what = path.display().to_string();
                let pending = std::fs::read(&path)
                    .ok()
                    .and_then(|raw| IndexFile::from_bytes(&raw, &what).ok());
                for pack in pending.map(|f| f.packs).unwrap_or_default() {
                    let marked = self
                        .marks
                        .iter()
                        .any(|(_, m)| m.packs.packs.iter().any(|p| p.id == pack.id));
                    if !marked && self.storage.size(&keys::pack(&pack.id))? == Some(pack.size) {
                        index.packs.push(pack);
                    }
                }
                pending_files.push(path);
            } else {
                // Unfinished packs, up to the size of a database: freed
                // first, so the index below fits on a disk the killed writer
                // filled.
                remove_staged(&path);
            }
        }
        if !index.packs.is_empty() {
            self.store_index(&index)?;
            tracing::info!(event = "repo.recovered_packs", packs = index.packs.len());
        }
        // Only now: until the index is written, these say what to index.
        for path in pending_files {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Refuse to go on with index files left out: for `prune`, which would
    /// take the packs only they list for garbage.
    pub fn require_whole_index(&self) -> Result<()> {
        match self.index_damage.first().map(|(_, e)| e) {
            None => Ok(()),
            Some(e) => Err(Error::damaged(&e.subject, e.problem.clone())
                .code(ErrorCode::RepoIndexDamaged)
                .fix("nothing is deleted while an index file is damaged: `lifeboat repair index` rebuilds the index from the packs")),
        }
    }

    /// Before a writer publishes: if its view of the marks is older than
    /// [`writer_view_limit`], a prune may since have marked what it reuses
    /// and may soon delete it, so it looks again and stops (exit 75) when a
    /// new mark appeared. Runs shorter than the limit never pay a request.
    pub fn check_view(&self) -> Result<()> {
        let Some(view) = self.view else { return Ok(()) };
        if view.elapsed() <= writer_view_limit() {
            return Ok(());
        }
        let now: Vec<Id> = self
            .storage
            .list(keys::Kind::Mark.prefix())?
            .into_iter()
            .filter_map(|(k, _)| keys::object_id(&k))
            .collect();
        if now.iter().any(|id| !self.marks.iter().any(|(m, _)| m == id)) {
            return Err(Error::busy(
                self.storage.location(),
                format!(
                    "a prune marked data for deletion while this {}-minute run was writing",
                    view.elapsed().as_secs() / 60
                ),
            )
            .fix("run the command again: what it uploaded is reused")
            .code(ErrorCode::RepoRacedPrune));
        }
        Ok(())
    }

    /// Store an index file; its name is the hash of its stored bytes. Only
    /// under the writer lock: [`LockedRepository::write_index`], and the
    /// recovery that runs as the lock is taken.
    fn store_index(&self, file: &IndexFile) -> Result<Id> {
        self.check_view()?;
        let bytes = codec::encode(&file.to_bytes(), self.config.compression.level);
        let id = Id::of(&bytes);
        self.storage.write(&keys::index(&id), &bytes)?;
        Ok(id)
    }

    /// Read and check one blob: decoded bytes must hash to its id.
    /// One blob, hash-checked; a failed check is read again once from the
    /// store (a body damaged in transit is not damage in the repository).
    pub fn read_blob(&self, id: &Id, decoder: &mut codec::Decoder) -> Result<Vec<u8>> {
        match self.read_blob_once(id, decoder) {
            Err(e) if e.kind == ErrorKind::BadData && e.code != ErrorCode::RepoPackMissing => {
                tracing::warn!(event = "repo.read_again", blob = %id.short(), error = %e, "reading the blob again before calling it damaged");
                self.read_blob_once(id, decoder)
            }
            other => other,
        }
    }

    fn read_blob_once(&self, id: &Id, decoder: &mut codec::Decoder) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| {
            Error::damaged(
                self.storage.location(),
                format!("blob {} is not in the index", id.short()),
            )
        })?;
        let (pack, _) = self.index.pack(loc.pack);
        let key = keys::pack(&pack);
        let raw = self
            .storage
            .read_range(&key, loc.offset as u64, loc.length as u64)
            .map_err(|e| match e.kind {
                // The index names the pack: its absence is damage, not an
                // input the operator could supply.
                ErrorKind::NoInput => Error::damaged(
                    format!("{}/{key}", self.storage.location()),
                    "pack is missing from the repository",
                )
                .code(ErrorCode::RepoPackMissing),
                _ => e,
            })?;
        let mut frame = decoder.decode_vec(raw, &key)?;
        let (start, len) = (loc.blob_offset as usize, loc.raw_length as usize);
        if start.checked_add(len).is_none_or(|end| end > frame.len()) {
            return Err(Error::damaged(
                format!("{}/{key}", self.storage.location()),
                format!("blob {} lies outside its frame", id.short()),
            ));
        }
        // The common single-blob frame is returned without a copy.
        let data = if start == 0 && len == frame.len() {
            frame
        } else {
            frame.drain(start..start + len).collect()
        };
        if Id::of(&data) != *id {
            return Err(Error::damaged(
                format!("{}/{key}", self.storage.location()),
                format!("blob {} does not match its hash", id.short()),
            ));
        }
        Ok(data)
    }

    /// Read one page map (not its chain), with its chaining values when
    /// `keep_cvs`.
    pub fn read_pagemap(&self, id: &Id, keep_cvs: bool) -> Result<pagemap::PageMap> {
        let mut dec = codec::Decoder::default();
        let data = self.read_blob(id, &mut dec)?;
        let what = format!("page map {}", id.short());
        if keep_cvs {
            pagemap::PageMap::from_bytes(&data, &what)
        } else {
            pagemap::PageMap::from_bytes_without_cvs(&data, &what)
        }
    }

    /// Follow a page map's parent chain and return the full page list, with
    /// chaining values when `keep_cvs` and the maps have them.
    pub fn resolve_pagemap(&self, id: &Id, keep_cvs: bool) -> Result<ResolvedPages> {
        let mut chain = Vec::new();
        let mut maps = Vec::new();
        let mut next = *id;
        loop {
            let map = self.read_pagemap(&next, keep_cvs)?;
            let parent = map.parent;
            chain.push(map);
            maps.push(next);
            if parent.is_zero() {
                break;
            }
            if chain.len() > pagemap::MAX_DEPTH as usize {
                return Err(Error::damaged(
                    format!("page map {}", id.short()),
                    "parent chain is too long or cyclic",
                ));
            }
            next = parent;
        }
        let (page_size, depth, has_cvs) = (chain[0].page_size, chain[0].depth, chain[0].has_cvs);
        if chain.iter().any(|m| m.page_size != page_size || m.has_cvs != has_cvs) {
            return Err(Error::damaged(
                format!("page map {}", id.short()),
                "page size or chaining values change along the chain",
            ));
        }
        let mut list = pagemap::PageList::default();
        for map in chain.into_iter().rev() {
            map.apply(&mut list);
        }
        Ok(ResolvedPages {
            page_size,
            depth,
            pages: list.ids,
            cvs: list.cvs,
            maps,
        })
    }

    /// The loaded index: every blob of the index files read, and of the
    /// marked packs (readable, never reused). Empty until loaded.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The marks listed when the index was loaded, by id, oldest first.
    pub fn marks(&self) -> &[(Id, Mark)] {
        &self.marks
    }

    /// Keys of the index files loaded.
    pub fn index_keys(&self) -> &[String] {
        &self.index_keys
    }

    /// Index files that could not be read or parsed, left out of the index:
    /// the blobs only they list look missing, which costs exactly the
    /// snapshots that use them. `require_whole_index` refuses them.
    pub fn index_damage(&self) -> &IndexDamage {
        &self.index_damage
    }

    /// Whether a writer may reuse `id` instead of storing it.
    pub fn has_blob(&self, id: &Id) -> bool {
        self.index.get_live(id).is_some()
    }

    /// Whether a parent's page list can be built on: every page must be
    /// reusable, not only readable (a page of a snapshot since forgotten may
    /// sit in a pack a prune marked).
    pub fn all_live(&self, ids: &[Id]) -> bool {
        // Each lookup is a cache miss or two into an index of tens of MiB,
        // and a 1 GiB parent has 262,144 pages to check before any worker
        // starts: spread over the cores, it is that much less serial time.
        const PER_THREAD: usize = 16 * 1024;
        let threads = cores().min(ids.len().div_ceil(PER_THREAD)).max(1);
        if threads == 1 {
            return self.index.all_live(ids);
        }
        let chunk = ids.len().div_ceil(threads);
        // The first dead page stops the others: the answer is already no.
        crate::workers::for_each(
            threads,
            ids.chunks(chunk),
            || (),
            |_, part| {
                if self.index.all_live(part) { Ok(()) } else { Err(()) }
            },
        )
        .is_ok()
    }
}

/// An indexed repository holding this host's writer lock, released when it
/// is dropped (or given up with [`LockedRepository::unlocked`]). Everything
/// a [`Repository`] does, it does through `Deref`.
pub struct LockedRepository {
    repo: Repository,
    // In a mutex only so that the repository may be shared between the
    // threads of one writer; nobody locks it.
    _guard: std::sync::Mutex<Box<dyn LockGuard>>,
}

impl LockedRepository {
    /// Store a mark; this repository's view includes it from now on.
    pub fn write_mark(&mut self, mark: Mark) -> Result<Id> {
        let repo = &mut self.repo;
        let bytes = codec::encode(&mark.to_bytes(), repo.config.compression.level);
        let id = Id::of(&bytes);
        repo.storage.write(&keys::mark(&id), &bytes)?;
        repo.marks.push((id, mark));
        Ok(id)
    }

    /// Store an index file; its name is the hash of its stored bytes.
    pub fn write_index(&self, file: &IndexFile) -> Result<Id> {
        self.repo.store_index(file)
    }

    /// Publish a snapshot: store its manifest, named by the hash of its JSON.
    pub fn write_manifest(&self, m: &Manifest) -> Result<Id> {
        self.repo.check_view()?;
        let (json, id) = m.to_json();
        self.repo
            .storage
            .write(&keys::snapshot(&id), &codec::encode(&json, 3))?;
        Ok(id)
    }

    /// Treat the index's pack `pack` as marked from now on: its blobs are
    /// about to be copied elsewhere, so a writer must not find them stored.
    pub(crate) fn set_pack_marked(&mut self, pack: u32) {
        self.repo.index.set_marked(pack);
    }

    /// `repo` under `guard` as it is, without bringing its view up to date
    /// (prune decides from the view it listed, then locks to act on it).
    pub(crate) fn holding(repo: Repository, guard: Box<dyn LockGuard>) -> LockedRepository {
        LockedRepository {
            repo,
            _guard: std::sync::Mutex::new(guard),
        }
    }

    /// Bring the index up to date with what other writers published since
    /// it was loaded, still holding the lock (see
    /// [`Repository::into_locked`]).
    pub fn refresh(&mut self) -> Result<()> {
        self.repo.refresh()
    }

    /// Release the writer lock and keep the repository, index and all, to
    /// lock it again later with [`Repository::into_locked`].
    pub fn unlocked(self) -> Repository {
        self.repo
    }
}

impl std::ops::Deref for LockedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl std::ops::DerefMut for LockedRepository {
    fn deref_mut(&mut self) -> &mut Repository {
        &mut self.repo
    }
}

fn warn_damaged(damaged: &[(Id, Error)]) {
    for (id, e) in damaged {
        tracing::warn!(event = "repo.manifest_damaged", snapshot = %id.short(), error = %e, "snapshot left out");
    }
}

/// Remove whatever a killed writer left in the staging directory: a file, or
/// a directory of them.
fn remove_staged(path: &Path) {
    if let Err(e) = crate::fsutil::remove_file_or_tree(path) {
        tracing::warn!(event = "repo.staging_not_removed", path = %path.display(), error = %e);
    }
}
