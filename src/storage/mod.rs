//! Where repository objects live. The trait is deliberately small: whole-object
//! reads and writes by key, ranged reads for pack files, listing and deletion,
//! plus the writer lock. Everything above it (packs, index, manifests) is
//! backend-agnostic.
//!
//! Backends: [`local::LocalStorage`] (a directory) and [`s3::S3Storage`] (any
//! S3-compatible bucket). Wrappers add behaviour without the backends knowing:
//! [`retry::RetryStorage`] retries temporary failures with backoff,
//! [`cache::CachedStorage`] keeps immutable metadata (index files, manifests,
//! operations log records) on local disk so a command does not download them
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
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
pub use location::{Backend, RepoLocation, StorageOptions};

/// Who holds the writer lock; recorded so a refused writer can name it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub since: String,
}

/// Releases the lock when dropped.
pub trait LockGuard: Send {}

pub trait Storage: Send + Sync {
    /// Human-readable location for messages (path or URL, never credentials).
    fn location(&self) -> String;
    /// Whole object; `ErrorKind::NoInput` when absent.
    fn read(&self, key: &str) -> Result<Vec<u8>>;
    /// The object again, from the store itself past any local copy: for a
    /// caller whose check of what `read` gave failed, before it calls the
    /// object damaged (a body damaged in transit, or a cached copy that
    /// was).
    fn reread(&self, key: &str) -> Result<Vec<u8>> {
        self.read(key)
    }
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
    fn delete(&self, key: &str) -> Result<()>;
    /// Exclusive writer lock; `ErrorKind::Busy` naming the holder if taken.
    fn lock(&self, holder: &LockHolder) -> Result<Box<dyn LockGuard>>;
    /// A local directory for staging files before `put_file`.
    fn staging_dir(&self) -> &Path;
    /// Requests sent so far, by kind (zero for backends that send none).
    fn requests(&self) -> RequestCounts {
        RequestCounts::default()
    }
    /// How many transfers callers should run at once.
    fn transfers(&self) -> usize {
        1
    }
}

/// Requests made to an object store, counted on the wire (retries and every
/// multipart part included), because requests are what the provider bills.
#[derive(Debug, Default)]
pub struct RequestCounter {
    pub put: AtomicU64,
    pub get: AtomicU64,
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// PUT and POST (object writes, multipart parts, multipart start/finish).
    pub put: u64,
    /// GET of object bytes.
    pub get: u64,
    /// GET on the bucket (ListObjectsV2).
    pub list: u64,
    pub head: u64,
    pub delete: u64,
}

impl RequestCounter {
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
    pub fn total(&self) -> u64 {
        self.put + self.get + self.list + self.head + self.delete
    }
}

/// Open the backend for `loc`, wrapped for retries (and, for remote stores,
/// a local cache of the objects `cacheable` accepts), and metered for the
/// process-wide totals.
pub fn open(loc: &RepoLocation, cacheable: cache::Cacheable) -> Result<Arc<dyn Storage>> {
    let backend: Arc<dyn Storage> = match &loc.backend {
        Backend::Local(path) => Arc::new(local::LocalStorage::new(path)),
        Backend::S3(target) => {
            let s3: Arc<dyn Storage> = Arc::new(s3::S3Storage::connect(target, &loc.options)?);
            let retried: Arc<dyn Storage> = Arc::new(retry::RetryStorage::new(s3, loc.options.retry_budget()));
            Arc::new(cache::CachedStorage::new(retried, &target.local_dir(), cacheable))
        }
    };
    Ok(Arc::new(metered::MeteredStorage::new(backend)))
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
                .event("repo.in_use"));
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

/// Read `keys` with up to `storage.transfers()` reads in flight, handing each
/// result to `each` on the calling thread as it arrives (in any order). At
/// most twice that many objects are held in memory at once. Stops at the
/// first error `each` returns.
pub fn read_parallel<T: Send>(
    storage: &dyn Storage,
    keys: Vec<(T, String)>,
    each: impl FnMut(T, String, Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    read_and_decode_parallel(storage, keys, storage.transfers(), |_, raw| raw, each)
}

/// [`read_parallel`] with `threads` readers that also run `decode` on what
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
    if fetchers == 1 {
        for (tag, key) in keys {
            let data = decode(&key, storage.read(&key));
            each(tag, key, data)?;
        }
        return Ok(());
    }
    let queue = std::sync::Mutex::new(keys.into_iter());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(fetchers);
        for _ in 0..fetchers {
            let (tx, queue, stop, decode) = (tx.clone(), &queue, &stop, &decode);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some((tag, key)) = queue.lock().expect("read queue").next() else {
                        return;
                    };
                    let data = decode(&key, storage.read(&key));
                    if tx.send((tag, key, data)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut outcome = Ok(());
        for (tag, key, data) in rx.iter() {
            if outcome.is_ok() {
                outcome = each(tag, key, data);
                if outcome.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        outcome
    })
}
