//! Totals of what an operation did to repositories: bytes stored, objects
//! deleted and requests sent, over every storage opened with the same
//! [`Meter`], whichever repository, thread or part of the operation used
//! it. The operations log (src/oplog.rs) records them once the operation
//! ends, after every `Repository` it opened may be gone, so the totals live
//! in the `Meter` the caller holds (handed to [`super::open`] through
//! `StorageOptions::meter`), not in any one repository or in the process.
//!
//! Bytes and deletions are counted here, above the cache and the retries, so
//! an object is counted once however many attempts it took. Requests are
//! counted on the wire by the S3 backend, per instance; the meter adds them
//! up: the instances still open are asked, and each one adds its count to
//! the meter's retired total when it is dropped.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Layer, RequestCounter, RequestCounts, Storage};
use crate::error::Result;

#[derive(Default)]
struct Registry {
    next: u64,
    live: Vec<(u64, Weak<RequestCounter>)>,
    retired: RequestCounts,
}

/// What the storages of one operation (a command, a service's snapshot)
/// did, added up as they go. Shared through an `Arc`: every storage opened
/// with it counts into it, and it outlives them.
#[derive(Default)]
pub struct Meter {
    bytes_written: AtomicU64,
    objects_deleted: AtomicU64,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.totals().fmt(f)
    }
}

fn add(to: &mut RequestCounts, c: RequestCounts) {
    to.put += c.put;
    to.get += c.get;
    to.list += c.list;
    to.head += c.head;
    to.delete += c.delete;
}

/// What an operation has done to repositories so far.
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

impl Meter {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere while holding it leaves plain counters behind.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything counted so far, by storages alive or dropped.
    pub fn totals(&self) -> Totals {
        let reg = self.registry();
        let mut requests = reg.retired;
        for (_, s) in &reg.live {
            // Always upgradable: an instance leaves `live` in its `drop`,
            // under this lock, before its inner storage can go.
            if let Some(s) = s.upgrade() {
                add(&mut requests, s.snapshot());
            }
        }
        Totals {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            objects_deleted: self.objects_deleted.load(Ordering::Relaxed),
            requests,
        }
    }
}

/// The outermost wrapper of every storage [`super::open`] builds: counts
/// into its [`Meter`].
pub struct MeteredStorage {
    inner: Arc<dyn Storage>,
    meter: Arc<Meter>,
    /// The backend's request counter and its place in the meter's registry,
    /// for a backend that counts requests.
    requests: Option<(Arc<RequestCounter>, u64)>,
}

impl MeteredStorage {
    /// `inner`, counted into `meter`; its backend counts its requests in
    /// `requests` (none for a directory).
    pub fn new(inner: Arc<dyn Storage>, meter: Arc<Meter>, requests: Option<Arc<RequestCounter>>) -> MeteredStorage {
        let requests = requests.map(|counter| {
            let mut reg = meter.registry();
            let slot = reg.next;
            reg.next += 1;
            reg.live.push((slot, Arc::downgrade(&counter)));
            (counter, slot)
        });
        MeteredStorage { inner, meter, requests }
    }

    fn count_written(&self, n: u64) {
        self.meter.bytes_written.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for MeteredStorage {
    fn drop(&mut self) {
        if let Some((counter, slot)) = &self.requests {
            let mut reg = self.meter.registry();
            reg.live.retain(|(s, _)| s != slot);
            add(&mut reg.retired, counter.snapshot());
        }
    }
}

impl Layer for MeteredStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.write(key, data)?;
        self.count_written(data.len() as u64);
        Ok(())
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let created = self.inner.create(key, data)?;
        if created {
            self.count_written(data.len() as u64);
        }
        Ok(created)
    }
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        // Taken first: the file is gone once it is in the store.
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        self.inner.put_file(key, file)?;
        self.count_written(size);
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)?;
        self.meter.objects_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    #[test]
    fn counts_bytes_stored_and_objects_deleted_into_its_meter() {
        let dir = tempfile::tempdir().unwrap();
        let meter = Arc::new(Meter::default());
        let other = Arc::new(Meter::default());
        let store: Arc<dyn Storage> = Arc::new(MeteredStorage::new(
            Arc::new(LocalStorage::new(dir.path())),
            meter.clone(),
            None,
        ));
        let elsewhere: Arc<dyn Storage> = Arc::new(MeteredStorage::new(
            Arc::new(LocalStorage::new(dir.path())),
            other.clone(),
            None,
        ));
        store.write("a/x", b"12345").unwrap();
        assert!(store.create("a/y", b"123").unwrap());
        assert!(!store.create("a/y", b"123").unwrap(), "not created: not counted");
        let staged = dir.path().join("staged");
        std::fs::write(&staged, [0u8; 100]).unwrap();
        store.put_file("a/z", &staged).unwrap();
        store.delete("a/x").unwrap();
        elsewhere.write("b/x", b"1").unwrap();
        drop(store);
        let totals = meter.totals();
        assert_eq!((totals.bytes_written, totals.objects_deleted), (108, 1), "{totals:?}");
        assert_eq!(other.totals().bytes_written, 1, "another meter is another operation");
    }
}
