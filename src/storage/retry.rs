//! Retries of temporary failures (5xx, 429/SlowDown, timeouts, dropped
//! connections) with exponential backoff and full jitter, bounded in time per
//! request so a dead endpoint ends in a clear error instead of a hang.
//! Only errors the backend marked `temporary` are retried: a 403 or a missing
//! bucket fails at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use super::Storage;
use crate::error::{Error, Result};

/// Retries the temporary failures of the storage it wraps, within a time budget
/// per call.
pub struct RetryStorage {
    inner: Arc<dyn Storage>,
    budget: Duration,
}

impl RetryStorage {
    /// Retry `inner` for up to `budget` of waits per call.
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
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.run("read", key, || self.inner.read(key))
    }
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run("read_range", key, || self.inner.read_range(key, offset, len))
    }
    /// A retry resumes at the first range not yet handed over, so `each`
    /// sees every range once. Its own errors end the read, never retried.
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        let mut done = 0;
        let mut refused: Option<Error> = None;
        let result = self.run("read_ranges", key, || {
            self.inner
                .read_ranges(key, &ranges[done..], &mut |data| match each(data) {
                    Ok(()) => {
                        done += 1;
                        Ok(())
                    }
                    Err(e) => {
                        refused = Some(e);
                        Err(Error::usage("read ended by its caller"))
                    }
                })
        });
        match refused {
            Some(e) => Err(e),
            None => result,
        }
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::storage::local::LocalStorage;

    /// A directory whose `read_ranges` breaks off once, temporarily, after
    /// handing over `cut_after` ranges, as a dropped connection would.
    struct CutOnce {
        inner: LocalStorage,
        cut_after: usize,
        calls: AtomicUsize,
    }

    impl Storage for CutOnce {
        fn read(&self, key: &str) -> Result<Vec<u8>> {
            self.inner.read(key)
        }
        fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(key, offset, len)
        }
        fn read_ranges(
            &self,
            key: &str,
            ranges: &[(u64, u64)],
            each: &mut dyn FnMut(Vec<u8>) -> Result<()>,
        ) -> Result<()> {
            let first_call = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            for (n, &(offset, len)) in ranges.iter().enumerate() {
                if first_call && n == self.cut_after {
                    return Err(Error::busy(key, "connection reset").temporary());
                }
                each(self.inner.read_range(key, offset, len)?)?;
            }
            Ok(())
        }
        fn write(&self, key: &str, data: &[u8]) -> Result<()> {
            self.inner.write(key, data)
        }
        fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
            self.inner.create(key, data)
        }
        fn put_file(&self, key: &str, file: &Path) -> Result<()> {
            self.inner.put_file(key, file)
        }
        fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
            self.inner.list(prefix)
        }
        fn size(&self, key: &str) -> Result<Option<u64>> {
            self.inner.size(key)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn read_ranges_resumes_after_the_ranges_handed_over_and_never_retries_the_callers_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100u8).collect();
        let flaky = Arc::new(CutOnce {
            inner: LocalStorage::new(dir.path()),
            cut_after: 2,
            calls: AtomicUsize::new(0),
        });
        flaky.write("data/aa/pack", &bytes).unwrap();
        let retried = RetryStorage::new(flaky.clone(), Duration::from_secs(5));
        let ranges = [(0, 10), (10, 5), (40, 10), (90, 10)];

        let mut got = Vec::new();
        retried
            .read_ranges("data/aa/pack", &ranges, &mut |data| {
                got.push(data);
                Ok(())
            })
            .unwrap();
        let want: Vec<Vec<u8>> = ranges
            .iter()
            .map(|&(o, l)| bytes[o as usize..(o + l) as usize].to_vec())
            .collect();
        assert_eq!(got, want, "every range once, in order, across the cut");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);

        // An error from the caller ends the read at once and is the one returned.
        flaky.calls.store(1, Ordering::SeqCst);
        let mut seen = 0;
        let err = retried
            .read_ranges("data/aa/pack", &ranges, &mut |_| {
                seen += 1;
                Err(Error::busy("caller", "queue closed").temporary())
            })
            .unwrap_err();
        assert_eq!((seen, err.problem.as_str()), (1, "queue closed"));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2, "not retried");
    }
}
