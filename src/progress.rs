//! Progress reporting for long work. The library reports bytes; the CLI decides
//! whether that becomes a bar on a terminal, periodic plain lines, or nothing.

/// Receives progress from long operations (snapshot, restore, verify, prune).
/// Called from worker threads, hence `Sync`; implementations must be cheap,
/// since `advance` may run for every blob.
pub trait Progress: Sync {
    /// A new phase of `total` bytes (0 when unknown).
    fn begin(&self, what: &str, total: u64);
    /// A new phase counted in items (snapshots, blobs) rather than bytes.
    fn begin_items(&self, what: &str, total: u64) {
        self.begin(what, total);
    }
    /// `bytes` more (or items, after [`Progress::begin_items`]) of the current
    /// phase are done.
    fn advance(&self, bytes: u64);
    /// The current phase is over.
    fn end(&self);
    /// A non-fatal problem the operator should see.
    fn warn(&self, message: &str) {
        tracing::warn!(event = "warning", "{message}");
    }
}

/// A [`Progress`] that reports nothing; warnings still go to `tracing`.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
