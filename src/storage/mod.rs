//! Where repository objects live. The trait is deliberately small: whole-object
//! reads and writes by key, ranged reads for pack files, listing and deletion,
//! plus the writer lock. Everything above it (packs, index, manifests) is
//! backend-agnostic; retry and rate-limit wrappers wrap a `Box<dyn Storage>`.
//!
//! Keys are `/`-separated relative paths such as `data/ab/ab12…` (docs/FORMAT.md).

pub mod local;

use std::path::Path;

use crate::error::Result;

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
    /// `len` bytes at `offset`.
    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Create or replace atomically and durably.
    fn write(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Move a finished local file into the store under `key` (a rename for the
    /// local backend, an upload elsewhere). The file is consumed.
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
}
