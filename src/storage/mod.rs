//! Where repository objects live. The [`Storage`] trait is object-store verbs
//! only: whole-object reads and writes by key, ranged reads for pack files,
//! listing and deletion. What lives beside the objects on this host (the
//! writer lock, the staging directory, request counts, how many transfers to
//! run, the cache to bypass for a second read) is the [`Store`] that
//! [`open`] returns, so wrappers implement the verbs and nothing else.
//! Everything above (packs, index, manifests) is backend-agnostic, and the
//! key layout is the repository's: it hands [`open`] a [`Layout`].
//!
//! Backends: [`local::LocalStorage`] (a directory) and [`s3::S3Storage`] (any
//! S3-compatible bucket). Wrappers add behaviour without the backends knowing:
//! [`retry::RetryStorage`] retries temporary failures with backoff,
//! [`cache::CachedStorage`] keeps the objects the layout calls immutable
//! (index files, manifests, operations log records) on local disk so a command does not download them
//! again, and [`metered::MeteredStorage`], outermost on every backend, adds
//! up what the whole process stored, deleted and sent (for the operations log).
//!
//! Keys are `/`-separated relative paths such as `data/ab/ab12…` (docs/FORMAT.md).

pub mod cache;
pub mod local;
pub mod location;
pub mod metered;
pub mod retry;
pub mod s3;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorCode, IoContext, Result};
pub use location::{Backend, RepoLocation, StorageOptions};

/// Who holds the writer lock; recorded so a refused writer can name it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The command that took the lock.
    pub command: String,
    /// When it took the lock (RFC 3339).
    pub since: String,
}

/// Releases the lock when dropped.
pub trait LockGuard: Send {}

/// An object store: bytes by key, and nothing else. What lives beside the
/// objects on this host (the writer lock, the staging directory, request
/// counts, how many transfers to run) belongs to the [`Store`] that
/// [`open`] returns with it, so a wrapper implements only these verbs.
pub trait Storage: Send + Sync {
    /// Whole object; `ErrorKind::NoInput` when absent.
    fn read(&self, key: &str) -> Result<Vec<u8>>;
    /// `len` bytes at `offset`.
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Several `(offset, len)` ranges of one object, sorted and apart, each
    /// handed to `each` in order as soon as it is in; stops at the first
    /// error `each` returns. A backend where every request costs a round
    /// trip reads neighbouring ranges with one streamed request, dropping the
    /// bytes between them, and holds about one range at a time.
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        for &(offset, len) in ranges {
            each(self.read_range(key, offset, len)?)?;
        }
        Ok(())
    }
    /// Create or replace atomically and durably.
    fn write(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Create only if absent; `false` when the key already existed (nothing
    /// written). Atomic on local disk and on servers that enforce
    /// `If-None-Match` (docs/FORMAT.md lists which do).
    fn create(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// Move a finished local file into the store under `key` (a rename for the
    /// local backend, an upload elsewhere), durable and checked when this
    /// returns. The file is consumed on success and left on failure.
    fn put_file(&self, key: &str, file: &Path) -> Result<()>;
    /// Keys under `prefix` with their sizes.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Size of an object, `None` when absent.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Delete an object; deleting one already gone succeeds.
    fn delete(&self, key: &str) -> Result<()>;
}

/// A wrapper around another storage that changes only the verbs it is
/// about (the cache its reads, the meter its writes); every other verb goes
/// to [`Layer::inner`] untouched. Each `Layer` is a [`Storage`] through the
/// one blanket implementation below, so no wrapper forwards by hand.
pub trait Layer: Send + Sync {
    /// The storage this one wraps.
    fn inner(&self) -> &dyn Storage;
    /// See [`Storage::read`].
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.inner().read(key)
    }
    /// See [`Storage::read_range`].
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner().read_range(key, offset, len)
    }
    /// See [`Storage::read_ranges`].
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        self.inner().read_ranges(key, ranges, each)
    }
    /// See [`Storage::write`].
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner().write(key, data)
    }
    /// See [`Storage::create`].
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.inner().create(key, data)
    }
    /// See [`Storage::put_file`].
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        self.inner().put_file(key, file)
    }
    /// See [`Storage::list`].
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.inner().list(prefix)
    }
    /// See [`Storage::size`].
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner().size(key)
    }
    /// See [`Storage::delete`].
    fn delete(&self, key: &str) -> Result<()> {
        self.inner().delete(key)
    }
}

impl<L: Layer> Storage for L {
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        Layer::read(self, key)
    }
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        Layer::read_range(self, key, offset, len)
    }
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        Layer::read_ranges(self, key, ranges, each)
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        Layer::write(self, key, data)
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        Layer::create(self, key, data)
    }
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        Layer::put_file(self, key, file)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        Layer::list(self, prefix)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        Layer::size(self, key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        Layer::delete(self, key)
    }
}

/// What the layer above tells storage of its layout, so that storage itself
/// knows keys only as strings.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The keys whose objects never change, which a remote store keeps a
    /// local copy of.
    pub cacheable: cache::Cacheable,
    /// A directory repository's staging directory, relative to its root.
    pub staging: &'static str,
    /// A directory repository's writer lock file, relative to its root.
    pub lock: &'static str,
    /// The directories of a directory repository (relative to its root,
    /// `""` for the root) where a writer that died holding the lock may
    /// have left unfinished atomic writes; cleared when the lock is taken.
    pub locked_writes: &'static [&'static str],
}

/// A repository's store as [`open`] built it: the objects, wrapped, and
/// what lives beside them on this host. Dereferences to the objects.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn Storage>,
    site: Arc<Site>,
}

/// What lives beside a store's objects on this host.
struct Site {
    location: String,
    staging: PathBuf,
    lock_file: PathBuf,
    /// Cleared of unfinished atomic writes when the lock is taken.
    locked_writes: Vec<PathBuf>,
    transfers: usize,
    requests: Option<Arc<RequestCounter>>,
    cache: Option<Arc<cache::CachedStorage>>,
}

impl std::ops::Deref for Store {
    type Target = dyn Storage;
    fn deref(&self) -> &(dyn Storage + 'static) {
        self.objects.as_ref()
    }
}

impl Store {
    /// The objects, for a thread that outlives this borrow.
    pub fn objects(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.objects)
    }

    /// Human-readable location for messages (path or URL, never
    /// credentials).
    pub fn location(&self) -> String {
        self.site.location.clone()
    }

    /// A local directory for staging files before `put_file`.
    pub fn staging_dir(&self) -> &Path {
        &self.site.staging
    }

    /// How many transfers callers should run at once.
    pub fn transfers(&self) -> usize {
        self.site.transfers
    }

    /// Requests sent so far, by kind (zero for a directory).
    pub fn requests(&self) -> RequestCounts {
        self.site.requests.as_ref().map(|c| c.snapshot()).unwrap_or_default()
    }

    /// The object again, from the store itself past any local copy: for a
    /// caller whose check of what `read` gave failed, before it calls the
    /// object damaged (a body damaged in transit, or a cached copy that
    /// was).
    pub fn reread(&self, key: &str) -> Result<Vec<u8>> {
        if let Some(cache) = &self.site.cache {
            cache.forget(key);
        }
        self.objects.read(key)
    }

    /// The exclusive writer lock of this host: an `flock` (see `flock`) on
    /// the repository's lock file for a directory, on one in the host's
    /// working directory for a bucket. `ErrorKind::Busy` naming the holder
    /// if taken. Taking it also clears the unfinished atomic writes a writer
    /// that died holding it left (`Layout::locked_writes`).
    pub fn lock(&self, holder: &LockHolder) -> Result<Box<dyn LockGuard>> {
        let guard = flock(&self.site.lock_file, holder, &self.site.location)?;
        // Nobody else can be writing now.
        for dir in &self.site.locked_writes {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with('.')
                        && e.file_name().to_string_lossy().contains(".tmp-")
                    {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(guard)
    }

    /// Read `keys` with up to [`Store::transfers`] reads in flight, handing
    /// each result to `each` on the calling thread as it arrives (in any
    /// order). At most twice that many objects are held in memory at once.
    /// Stops at the first error `each` returns.
    pub fn read_parallel<T: Send>(
        &self,
        keys: Vec<(T, String)>,
        each: impl FnMut(T, String, Result<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        read_and_decode_parallel(&*self.objects, keys, self.transfers(), |_, raw| raw, each)
    }
}

/// Requests made to an object store, counted on the wire (retries and every
/// multipart part included), because requests are what the provider bills.
#[derive(Debug, Default)]
pub struct RequestCounter {
    /// PUT and POST requests.
    pub put: AtomicU64,
    /// GET requests of object bytes.
    pub get: AtomicU64,
    /// LIST requests.
    pub list: AtomicU64,
    /// HEAD requests.
    pub head: AtomicU64,
    /// DELETE requests.
    pub delete: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
/// Requests sent to an object store, by kind, at one moment.
pub struct RequestCounts {
    /// PUT and POST (object writes, multipart parts, multipart start/finish).
    pub put: u64,
    /// GET of object bytes.
    pub get: u64,
    /// GET on the bucket (ListObjectsV2).
    pub list: u64,
    /// HEAD (object size and upload checks).
    pub head: u64,
    /// DELETE (aborted multipart uploads only, in version 1).
    pub delete: u64,
}

impl RequestCounter {
    /// The counts as they stand now.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            put: self.put.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

impl RequestCounts {
    /// Every request, whatever its kind.
    pub fn total(&self) -> u64 {
        self.put + self.get + self.list + self.head + self.delete
    }
}

/// Open the backend for `loc`, wrapped for retries (and, for remote stores,
/// a local cache of the objects `layout.cacheable` accepts), and metered
/// into `loc.options.meter` (a meter of its own when none is given).
pub fn open(loc: &RepoLocation, layout: &Layout) -> Result<Store> {
    let meter = loc.options.meter.clone().unwrap_or_default();
    let (objects, site): (Arc<dyn Storage>, Site) = match &loc.backend {
        Backend::Local(root) => {
            let local = local::LocalStorage::new(root);
            let site = Site {
                location: local.location(),
                staging: root.join(layout.staging),
                lock_file: root.join(layout.lock),
                locked_writes: layout.locked_writes.iter().map(|d| root.join(d)).collect(),
                transfers: 1,
                requests: None,
                cache: None,
            };
            (
                Arc::new(metered::MeteredStorage::new(Arc::new(local), meter, None)),
                site,
            )
        }
        Backend::S3(target) => {
            let s3 = s3::S3Storage::connect(target, &loc.options)?;
            let (location, staging, lock_file, transfers, counter) = (
                s3.location(),
                s3.staging_dir(),
                s3.lock_file(),
                s3.transfers(),
                s3.counter(),
            );
            let retried: Arc<dyn Storage> =
                Arc::new(retry::RetryStorage::new(Arc::new(s3), loc.options.retry_budget()));
            let cached = Arc::new(cache::CachedStorage::new(
                retried,
                &loc.options.s3_work_dir(target)?,
                layout.cacheable,
            ));
            let site = Site {
                location,
                staging,
                lock_file,
                // No lock in the bucket, and nothing of its own to clear.
                locked_writes: Vec::new(),
                transfers,
                requests: Some(Arc::clone(&counter)),
                cache: Some(Arc::clone(&cached)),
            };
            (
                Arc::new(metered::MeteredStorage::new(cached, meter, Some(counter))),
                site,
            )
        }
    };
    Ok(Store {
        objects,
        site: Arc::new(site),
    })
}

struct FileLock {
    // Fields drop in order: the `flock` goes before the next thread of this
    // process is let in.
    _file: File,
    _gate: Option<GateTicket>,
}
impl LockGuard for FileLock {}

/// Who of this process holds each lock file, by path. An `flock` belongs to
/// an open file description, so two threads of one process that each open
/// the lock file exclude each other exactly as two processes do: without
/// this, a replicator shipping fifty databases refused its own bases
/// ("repository in use" naming its own pid) and put them off for minutes.
/// Threads wait here for each other instead; only another process is
/// refused.
#[derive(Default)]
struct Gate {
    holder: std::sync::Mutex<Option<std::thread::ThreadId>>,
    free: std::sync::Condvar,
}

/// This thread's turn at a lock file; the next waiting thread's when dropped.
struct GateTicket(Arc<Gate>);

impl Drop for GateTicket {
    fn drop(&mut self) {
        *self.0.holder.lock().expect("lock gate") = None;
        self.0.free.notify_one();
    }
}

/// Wait for this process's other threads to let go of the lock file at
/// `path`. `None` when this very thread holds it: waiting would never end,
/// and the `flock` refuses it as it always did.
fn gate(path: &Path) -> Option<GateTicket> {
    static GATES: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Arc<Gate>>>> =
        std::sync::LazyLock::new(Default::default);
    // One gate per file, however the repository was spelled.
    let key = path
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .map(|d| d.join(path.file_name().unwrap_or_default()))
        .unwrap_or_else(|| path.to_path_buf());
    let gate = Arc::clone(GATES.lock().expect("lock gates").entry(key).or_default());
    let me = std::thread::current().id();
    let mut holder = gate.holder.lock().expect("lock gate");
    loop {
        match *holder {
            None => break,
            Some(t) if t == me => return None,
            Some(_) => holder = gate.free.wait(holder).expect("lock gate"),
        }
    }
    *holder = Some(me);
    drop(holder);
    Some(GateTicket(gate))
}

/// An advisory `flock` on `path`: the kernel drops it when the holder dies,
/// so a lock left by a killed process is never stale. The file's contents
/// name the current holder for the refusal message. Threads of this process
/// wait for each other first (see [`Gate`]), so only another process is
/// refused.
pub(crate) fn flock(path: &Path, holder: &LockHolder, location: &str) -> Result<Box<dyn LockGuard>> {
    let gate = gate(path);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .at(path)?
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let who = serde_json::from_str::<LockHolder>(&text)
                .map(|h| {
                    format!(
                        "held by pid {} on host {} ({}) since {}",
                        h.pid, h.host, h.command, h.since
                    )
                })
                .unwrap_or_else(|_| "held by another process".into());
            return Err(Error::busy(location, format!("repository in use: {who}"))
                .fix("wait for it to finish and retry")
                .code(ErrorCode::RepoInUse));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
    }
    let text = serde_json::to_vec(holder).expect("holder serializes");
    file.set_len(0).at(path)?;
    file.seek(SeekFrom::Start(0)).at(path)?;
    file.write_all(&text).at(path)?;
    Ok(Box::new(FileLock {
        _file: file,
        _gate: gate,
    }))
}

/// [`Store::read_parallel`] with `threads` readers that also run `decode` on what
/// they read (hash checks, decompression, parsing), so only `each` is left
/// to the calling thread.
pub fn read_and_decode_parallel<T: Send, U: Send>(
    storage: &dyn Storage,
    keys: Vec<(T, String)>,
    threads: usize,
    decode: impl Fn(&str, Result<Vec<u8>>) -> Result<U> + Sync,
    mut each: impl FnMut(T, String, Result<U>) -> Result<()>,
) -> Result<()> {
    let fetchers = threads.clamp(1, keys.len().max(1));
    crate::workers::map_consume(
        fetchers,
        keys,
        || (),
        |_, (tag, key)| {
            let data = decode(&key, storage.read(&key));
            (tag, key, data)
        },
        |(tag, key, data)| each(tag, key, data),
    )
}
