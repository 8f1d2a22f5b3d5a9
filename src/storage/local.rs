//! Repository on a local (or mounted) directory. Objects are plain files; every
//! write goes through temp + fsync + rename + directory fsync.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::Storage;
use crate::error::{Error, ErrorCode, IoContext, Result};
use crate::fsutil::{sync_dir, write_atomic};

/// Objects as files under a directory.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Open an existing directory; creating it is the repository's job.
    pub fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
        }
    }

    /// The directory, for messages.
    pub fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn ensure_parent(&self, path: &Path) -> Result<()> {
        let parent = path.parent().expect("keys have a parent");
        if !parent.exists() {
            crate::fsutil::create_private_dir_all(parent).at(parent)?;
            sync_dir(parent.parent().unwrap_or(&self.root))?;
        }
        Ok(())
    }
}

/// Open a stored object for reading. Only a regular file is one: a FIFO, a
/// device or a socket where an object belongs is damage, reported at once
/// rather than read (opening a FIFO would wait for a writer forever, so the
/// open itself does not block).
pub(crate) fn open_object(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .at(p)?;
    let meta = f.metadata().at(p)?;
    if !meta.is_file() {
        return Err(
            Error::damaged(p.display(), "is not a regular file where a repository object belongs")
                .code(ErrorCode::RepoNotAFile)
                .fix("move it out of the repository, then run `lifeboat verify` to see which snapshots it damages"),
        );
    }
    Ok(f)
}

impl Storage for LocalStorage {
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let p = self.path(key);
        let mut f = open_object(&p)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).at(&p)?;
        Ok(buf)
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.path(key);
        let mut f = open_object(&p)?;
        f.seek(SeekFrom::Start(offset)).at(&p)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::damaged(p.display(), format!("truncated: wanted {len} bytes at offset {offset}"))
            } else {
                Error::io(&p, e)
            }
        })?;
        Ok(buf)
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        let p = self.path(key);
        self.ensure_parent(&p)?;
        write_atomic(&p, data)
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let p = self.path(key);
        self.ensure_parent(&p)?;
        crate::fsutil::write_new(&p, data)
    }

    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        let p = self.path(key);
        self.ensure_parent(&p)?;
        File::open(file).and_then(|f| f.sync_all()).at(file)?;
        crate::crashpoint::step("put_file: before rename").at(&p)?;
        fs::rename(file, &p).at(&p)?;
        sync_dir(p.parent().expect("keys have a parent"))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let base = self.path(prefix);
        if !base.exists() {
            return Ok(out);
        }
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                // Removed since its parent was read (a prune at work).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.at(&dir)?,
            };
            for entry in entries {
                let entry = entry.at(&dir)?;
                let meta = match entry.metadata() {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    other => other.at(&entry.path())?,
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue; // an unfinished temp file
                    }
                    let rel = entry.path().strip_prefix(&self.root).expect("under root").to_path_buf();
                    out.push((rel.to_string_lossy().into_owned(), meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key);
        crate::crashpoint::step("delete").at(&p)?;
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().expect("keys have a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}
