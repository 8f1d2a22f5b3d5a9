//! Regular files and directory trees: walking (with excludes, never following
//! symlinks), metadata, and content-defined chunking.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, IoContext, Result};
use crate::repo::manifest::{Entry, EntryKind};

/// One walked path: where it is and its metadata entry (without content yet).
pub struct Walked {
    /// Absolute path on disk, for reading the content.
    pub abs: PathBuf,
    /// Metadata as stored in the manifest; `path` is relative to the walked root.
    pub entry: Entry,
}

/// Compile exclude globs (relative to the source's root) into one set.
/// Fails with [`ErrorKind::Config`](crate::ErrorKind::Config), naming
/// `subject`, on a pattern that is not a valid glob.
pub fn build_excludes(patterns: &[String], subject: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| {
            Error::config(subject, format!("invalid exclude pattern `{p}`: {e}"))
                .fix("fix the glob in the configuration")
        })?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::config(subject, format!("exclude patterns: {e}")))
}

/// The manifest entry for one path, without content (no hash, no chunks);
/// `None` for sockets, FIFOs and devices, which are not stored. `mtime_ns` is
/// nanoseconds since the epoch. Fails only when a symlink's target cannot be
/// read.
pub fn entry_for(rel: &str, meta: &fs::Metadata, abs: &Path) -> Result<Option<Entry>> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        return Ok(None);
    };
    let target = if kind == EntryKind::Symlink {
        Some(fs::read_link(abs).at(abs)?.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(Some(Entry {
        path: rel.to_string(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        size: if kind == EntryKind::File { meta.len() } else { 0 },
        blake3: None,
        chunks: Vec::new(),
        target,
        database: None,
    }))
}

/// Folders Lifeboat itself leaves in a service's directories: what a restore
/// or reset moved aside, and a restore's staging. Never captured: they are
/// the way back from one restore, not the service's state, and restoring
/// them would nest one inside the next.
const OWN_PREFIXES: [&str; 3] = [".lifeboat-pre-restore-", ".lifeboat-reset-", ".lifeboat-restore-"];

fn is_lifeboats_own(name: &str) -> bool {
    OWN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Walk `root` depth-first in name order. Sockets, FIFOs and devices are
/// skipped with a warning; excluded paths (matched relative to `root`) and
/// `skip` paths are left out with everything below them.
pub fn walk(root: &Path, excludes: &GlobSet, skip: &[PathBuf], warn: &mut dyn FnMut(String)) -> Result<Vec<Walked>> {
    // A source named through a symlink means what it points at.
    let meta = fs::metadata(root).at(root)?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("{} is not a directory", root.display())));
    }
    // Compare canonical paths, so `./app/state.db` and `/srv/app/state.db`
    // are recognised as the same database.
    let root = fs::canonicalize(root).at(root)?;
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut out = Vec::new();
    let root_entry = entry_for("", &meta, &root)?.expect("a directory");
    out.push(Walked {
        abs: root.clone(),
        entry: root_entry,
    });
    walk_dir(&root, "", excludes, &skip, warn, &mut out)?;
    Ok(out)
}

fn walk_dir(
    dir: &Path,
    rel: &str,
    excludes: &GlobSet,
    skip: &[PathBuf],
    warn: &mut dyn FnMut(String),
    out: &mut Vec<Walked>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .at(dir)?;
    names.sort();
    for name in names {
        let abs = dir.join(&name);
        let name = name.to_string_lossy();
        let child_rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        if excludes.is_match(&child_rel) || skip.iter().any(|s| s == &abs) || is_lifeboats_own(&name) {
            continue;
        }
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted while walking
            Err(e) => return Err(Error::io(&abs, e)),
        };
        match entry_for(&child_rel, &meta, &abs)? {
            None => warn(format!("{}: skipped (socket, FIFO or device)", abs.display())),
            Some(entry) => {
                let is_dir = entry.kind == EntryKind::Dir;
                out.push(Walked {
                    abs: abs.clone(),
                    entry,
                });
                if is_dir {
                    walk_dir(&abs, &child_rel, excludes, skip, warn, out)?;
                }
            }
        }
    }
    Ok(())
}

/// What reading a file produced.
pub struct ReadFile {
    /// Bytes read, the file's length as chunked.
    pub size: u64,
    /// BLAKE3 of the whole content, as read.
    pub blake3: crate::id::Id,
    /// Whether size, mtime or ctime moved while it was being read.
    pub changed: bool,
}

/// Read `path` once, calling `chunk` for each content-defined chunk.
pub fn read_chunks(
    path: &Path,
    chunker: crate::repo::config::Chunker,
    chunk: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<ReadFile> {
    // A database (stored as plain bytes when its capture fails) or a `-shm`
    // may carry this process's SQLite locks: read through a descriptor that
    // is never closed.
    let f = crate::sqlite::open_for_reading(path).at(path)?;
    let before = f.metadata().at(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let reader = HashingReader {
        inner: &f,
        at: 0,
        hasher: &mut hasher,
    };
    let cdc = fastcdc::v2020::StreamCDC::new(reader, chunker.min_size, chunker.avg_size, chunker.max_size);
    for c in cdc {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => Error::io(path, io),
            other => Error::bad_data(path.display(), format!("chunking: {other}")),
        })?;
        size += c.length as u64;
        chunk(&c.data)?;
    }
    let after = fs::metadata(path).at(path)?;
    let changed = before.len() != after.len()
        || before.mtime_nsec() != after.mtime_nsec()
        || before.mtime() != after.mtime()
        || before.ctime() != after.ctime()
        || before.ctime_nsec() != after.ctime_nsec()
        || size != after.len();
    Ok(ReadFile {
        size,
        blake3: crate::id::Id(*hasher.finalize().as_bytes()),
        changed,
    })
}

/// Reads at its own offset: the descriptor may be shared.
struct HashingReader<'a> {
    inner: &'a File,
    at: u64,
    hasher: &'a mut blake3::Hasher,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.inner, buf, self.at)?;
        self.at += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
