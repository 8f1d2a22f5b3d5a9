//! A local copy of the objects the layer above calls immutable (the
//! repository's index files, manifests and operations log records; which
//! keys those are is its knowledge, handed in as a [`Cacheable`]), so each
//! command downloads only what is new: one LIST tells what exists, and only names missing here
//! are fetched. Entries are content-addressed and checked against their
//! names by the repository on every read, so a stale or damaged cache cannot
//! produce wrong data; entries whose objects are gone from the store are
//! dropped when their prefix is listed. Pack data is never cached.
//!
//! A cache file is the object's bytes followed by their 32-byte BLAKE3
//! (docs/FORMAT.md, "Per-host working directory"): a copy damaged on this
//! disk is noticed here, dropped and fetched again, instead of failing every
//! command until someone deletes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Layer, Storage};
use crate::error::Result;

/// Whether the object at a key never changes once written, so a local
/// copy of it is never stale. A key it accepts must not contain `..`; a
/// listed prefix's copies are checked with the key `<prefix>/`.
pub type Cacheable = fn(&str) -> bool;

/// Keeps a local copy of every object `cacheable` accepts.
pub struct CachedStorage {
    inner: Arc<dyn Storage>,
    dir: PathBuf,
    cacheable: Cacheable,
}

impl CachedStorage {
    /// Cache `inner`'s objects that `cacheable` accepts under
    /// `<local_dir>/cache`.
    pub fn new(inner: Arc<dyn Storage>, local_dir: &Path, cacheable: Cacheable) -> CachedStorage {
        CachedStorage {
            inner,
            dir: local_dir.join("cache"),
            cacheable,
        }
    }

    fn cached_path(&self, key: &str) -> Option<PathBuf> {
        ((self.cacheable)(key) && !key.contains("..")).then(|| self.dir.join(key))
    }

    /// Drop the local copy of `key`, if any, so the next read fetches the
    /// object from the store itself.
    pub fn forget(&self, key: &str) {
        if let Some(path) = self.cached_path(key) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Best effort: a cache that cannot be written only costs downloads.
    fn remember(&self, path: &Path, data: &[u8]) {
        let mut entry = Vec::with_capacity(data.len() + 32);
        entry.extend_from_slice(data);
        entry.extend_from_slice(blake3::hash(data).as_bytes());
        let saved = crate::fsutil::create_private_dir_all(path.parent().expect("cache paths have a parent"))
            .map_err(|e| e.to_string())
            .and_then(|()| crate::fsutil::write_atomic(path, &entry).map_err(|e| e.to_string()));
        if let Err(e) = saved {
            tracing::warn!(event = "cache.write_failed", path = %path.display(), error = %e);
        }
    }
}

impl Layer for CachedStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let Some(path) = self.cached_path(key) else {
            return self.inner.read(key);
        };
        // A cache entry that is not a plain file is never read (a FIFO would
        // block): it is dropped and the object read from the store.
        let cached = super::local::open_object(&path).and_then(|mut f| {
            let mut entry = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut entry).map_err(|e| crate::error::Error::io(&path, e))?;
            Ok(entry)
        });
        if let Err(e) = &cached
            && e.kind == crate::error::ErrorKind::BadData
        {
            tracing::warn!(event = "cache.damaged", path = %path.display());
            let _ = std::fs::remove_file(&path);
        }
        if let Ok(mut entry) = cached {
            if let Some(split) = entry.len().checked_sub(32)
                && blake3::hash(&entry[..split]).as_bytes() == &entry[split..]
            {
                entry.truncate(split);
                return Ok(entry);
            }
            tracing::warn!(event = "cache.damaged", path = %path.display());
            let _ = std::fs::remove_file(&path);
        }
        let data = self.inner.read(key)?;
        self.remember(&path, &data);
        Ok(data)
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.write(key, data)?;
        if let Some(path) = self.cached_path(key) {
            self.remember(&path, data);
        }
        Ok(())
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let listed = self.inner.list(prefix)?;
        if let Some(dir) = self.cached_path(&format!("{}/", prefix.trim_end_matches('/'))) {
            let present: std::collections::HashSet<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let key = format!("{}/{}", prefix.trim_end_matches('/'), e.file_name().to_string_lossy());
                    if !present.contains(key.as_str()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(listed)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)?;
        if let Some(path) = self.cached_path(key) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    #[test]
    fn damaged_or_missing_copies_are_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, work) = (dir.path().join("store"), dir.path().join("work"));
        std::fs::create_dir_all(&store).unwrap();
        let inner: Arc<dyn Storage> = Arc::new(LocalStorage::new(&store));
        let cached: Arc<dyn Storage> = Arc::new(CachedStorage::new(
            inner.clone(),
            &work,
            crate::repo::keys::is_immutable,
        ));
        cached.write("index/aa", b"index bytes").unwrap();
        let copy = work.join("cache/index/aa");
        assert_eq!(std::fs::read(&copy).unwrap().len(), 11 + 32, "bytes plus their BLAKE3");
        // Served from the copy: the store's object is changed behind its back.
        inner.write("index/aa", b"changed").unwrap();
        assert_eq!(cached.read("index/aa").unwrap(), b"index bytes");
        // A damaged copy is dropped and the object fetched again.
        let mut bytes = std::fs::read(&copy).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(cached.read("index/aa").unwrap(), b"changed");
        // Listing drops copies of objects the store no longer has.
        inner.delete("index/aa").unwrap();
        assert!(cached.list("index").unwrap().is_empty());
        assert!(!copy.exists());
        // Packs are never cached.
        cached.write("data/00/p", b"pack").unwrap();
        assert!(!work.join("cache/data").exists());
    }
}
