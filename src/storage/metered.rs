//! Process-wide totals of what this process did to repositories: bytes
//! stored, objects deleted and requests sent, over every storage
//! [`super::open`] built, whichever repository, thread or command part used
//! it. The operations log (src/oplog.rs) records them once a command ends,
//! after every `Repository` the command opened is gone, so the totals cannot
//! live in any one of them.
//!
//! Bytes and deletions are counted here, above the cache and the retries, so
//! an object is counted once however many attempts it took. Requests are
//! counted on the wire by the S3 backend, per instance; this wrapper adds
//! them up: the instances still open are asked, and each one adds its count
//! to the retired total when it is dropped.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{RequestCounter, RequestCounts, Storage};
use crate::error::Result;

static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static OBJECTS_DELETED: AtomicU64 = AtomicU64::new(0);

struct Registry {
    next: u64,
    live: Vec<(u64, Weak<RequestCounter>)>,
    retired: RequestCounts,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    live: Vec::new(),
    retired: RequestCounts {
        put: 0,
        get: 0,
        list: 0,
        head: 0,
        delete: 0,
    },
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic elsewhere while holding it leaves plain counters behind.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn add(to: &mut RequestCounts, c: RequestCounts) {
    to.put += c.put;
    to.get += c.get;
    to.list += c.list;
    to.head += c.head;
    to.delete += c.delete;
}

/// What this process has done to repositories so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of objects written, created and uploaded (`write`, `create`
    /// that created, `put_file`), counted when the call succeeded.
    pub bytes_written: u64,
    /// Successful `delete` calls.
    pub objects_deleted: u64,
    /// Requests sent to object stores (zero for directories).
    pub requests: RequestCounts,
}

/// What this process has done to every repository it opened so far.
pub fn totals() -> Totals {
    let reg = registry();
    let mut requests = reg.retired;
    for (_, s) in &reg.live {
        // Always upgradable: an instance leaves `live` in its `drop`, under
        // this lock, before its inner storage can go.
        if let Some(s) = s.upgrade() {
            add(&mut requests, s.snapshot());
        }
    }
    Totals {
        bytes_written: BYTES_WRITTEN.load(Ordering::Relaxed),
        objects_deleted: OBJECTS_DELETED.load(Ordering::Relaxed),
        requests,
    }
}

/// Adds what passes through it to the process-wide [`totals`].
pub struct MeteredStorage {
    inner: Arc<dyn Storage>,
    /// The backend's request counter and its place in the registry, for a
    /// backend that counts requests.
    requests: Option<(Arc<RequestCounter>, u64)>,
}

impl MeteredStorage {
    /// Meter `inner`, whose backend counts its requests in `requests` (none
    /// for a directory).
    pub fn new(inner: Arc<dyn Storage>, requests: Option<Arc<RequestCounter>>) -> MeteredStorage {
        let requests = requests.map(|counter| {
            let mut reg = registry();
            let slot = reg.next;
            reg.next += 1;
            reg.live.push((slot, Arc::downgrade(&counter)));
            (counter, slot)
        });
        MeteredStorage { inner, requests }
    }
}

impl Drop for MeteredStorage {
    fn drop(&mut self) {
        if let Some((counter, slot)) = &self.requests {
            let mut reg = registry();
            reg.live.retain(|(s, _)| s != slot);
            add(&mut reg.retired, counter.snapshot());
        }
    }
}

fn count_written(n: u64) {
    BYTES_WRITTEN.fetch_add(n, Ordering::Relaxed);
}

impl Storage for MeteredStorage {
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read(key)
    }
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(key, offset, len)
    }
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        self.inner.read_ranges(key, ranges, each)
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.write(key, data)?;
        count_written(data.len() as u64);
        Ok(())
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let created = self.inner.create(key, data)?;
        if created {
            count_written(data.len() as u64);
        }
        Ok(created)
    }
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        // Taken first: the file is gone once it is in the store.
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        self.inner.put_file(key, file)?;
        count_written(size);
        Ok(())
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.inner.list(prefix)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)?;
        OBJECTS_DELETED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    /// Other tests in this process move the totals too, so only growth
    /// of at least what this test did is checked.
    #[test]
    fn counts_bytes_stored_and_objects_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = MeteredStorage::new(Arc::new(LocalStorage::new(dir.path())), None);
        let before = totals();
        store.write("a/x", b"12345").unwrap();
        assert!(store.create("a/y", b"123").unwrap());
        assert!(!store.create("a/y", b"123").unwrap(), "not created: not counted");
        let staged = dir.path().join("staged");
        std::fs::write(&staged, [0u8; 100]).unwrap();
        store.put_file("a/z", &staged).unwrap();
        store.delete("a/x").unwrap();
        let after = totals();
        assert!(
            after.bytes_written - before.bytes_written >= 108,
            "{before:?} {after:?}"
        );
        assert!(after.objects_deleted > before.objects_deleted);
    }
}
