//! Retries of temporary failures (5xx, 429/SlowDown, timeouts, dropped
//! connections) with exponential backoff and full jitter, bounded in time per
//! request so a dead endpoint ends in a clear error instead of a hang.
//! Only errors the backend marked `temporary` are retried: a 403 or a missing
//! bucket fails at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use super::{LockGuard, LockHolder, RequestCounts, Storage};
use crate::error::{Error, Result};

pub struct RetryStorage {
    inner: Arc<dyn Storage>,
    budget: Duration,
}

impl RetryStorage {
    pub fn new(inner: Arc<dyn Storage>, budget: Duration) -> RetryStorage {
        RetryStorage { inner, budget }
    }

    fn run<T>(&self, op: &str, key: &str, f: impl FnMut() -> Result<T>) -> Result<T> {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(8))
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.budget));
        f.retry(backoff)
            .when(|e: &Error| e.temporary)
            .notify(|e: &Error, wait: Duration| {
                tracing::info!(event = "storage.retry", op, key, wait_ms = wait.as_millis() as u64, error = %e);
            })
            .call()
            .map_err(|mut e| {
                if e.temporary {
                    e.problem = format!("{} (still failing after retrying for {:?})", e.problem, self.budget);
                }
                e
            })
    }
}

impl Storage for RetryStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.run("read", key, || self.inner.read(key))
    }
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run("read_range", key, || self.inner.read_range(key, offset, len))
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run("write", key, || self.inner.write(key, data))
    }
    /// A retried create whose first attempt landed (the reply was lost) sees
    /// its own object and answers `false`; callers compare contents when that
    /// matters (the repository config does).
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.run("create", key, || self.inner.create(key, data))
    }
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        self.run("put_file", key, || self.inner.put_file(key, file))
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.run("list", prefix, || self.inner.list(prefix))
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.run("size", key, || self.inner.size(key))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key))
    }
    fn lock(&self, holder: &LockHolder) -> Result<Box<dyn LockGuard>> {
        self.inner.lock(holder)
    }
    fn staging_dir(&self) -> &Path {
        self.inner.staging_dir()
    }
    fn requests(&self) -> RequestCounts {
        self.inner.requests()
    }
    fn transfers(&self) -> usize {
        self.inner.transfers()
    }
}
