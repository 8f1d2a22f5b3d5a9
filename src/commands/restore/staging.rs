//! Where a restore builds what it restores before swapping it into place: a
//! private directory `.lifeboat-restore-<unique>.tmp/` beside the
//! destination, holding the staged copy under the source's name.
//!
//! A staging directory must never outlive its restore. On every error path
//! it is removed when dropped; on SIGINT or SIGTERM, through
//! [`remove_all_on_signals`]; and a restore killed with SIGKILL cannot clean
//! up at all, so each restore holds an `flock` on its directory for as long
//! as it lives, and the next restore beside it removes every staging
//! directory whose lock it can take ([`sweep`]): its owner is gone, whatever
//! became of its pid since.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{IoContext, Result};

const PREFIX: &str = ".lifeboat-restore-";
const SUFFIX: &str = ".tmp";

/// Every staging directory of this process that still exists. The signal
/// thread removes them; a restore's commit holds this lock while it renames,
/// so an interrupt lands before or after the swap, never inside it.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Directories a restore of this process created on the way to its
/// destinations (`--to DIR` recreates the sources' absolute paths): an
/// interrupt removes those still empty, deepest first.
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Note a directory the restore created, for [`remove_all_on_signals`].
pub fn note_created(dir: &Path) {
    CREATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

/// The restore ended (and kept or removed what it created itself).
pub fn forget_created() {
    CREATED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// A staging directory, locked and registered; removed, with everything in
/// it, when dropped.
pub struct StagingDir {
    path: PathBuf,
    _lock: File,
}

impl StagingDir {
    /// A new, empty, owner-only staging directory in `parent`.
    pub fn create(parent: &Path) -> Result<StagingDir> {
        let path = parent.join(format!("{PREFIX}{}{SUFFIX}", crate::fsutil::unique_suffix()));
        // Registered before it exists: an interrupt between the two would
        // otherwise leave it.
        let mut live = lock_live();
        fs::DirBuilder::new().mode(0o700).create(&path).at(&path)?;
        let lock = match File::open(&path).and_then(|f| flock(&f, libc::LOCK_EX | libc::LOCK_NB).map(|_| f)) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(e).at(&path);
            }
        };
        live.push(path.clone());
        Ok(StagingDir { path, _lock: lock })
    }

    /// The staging directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let mut live = lock_live();
        remove_tree(&self.path);
        live.retain(|p| p != &self.path);
    }
}

/// Hold while swapping staged copies into place: a signal arriving meanwhile
/// is handled once the swap is done (or undone).
pub fn hold_off_signals() -> impl Drop {
    lock_live()
}

fn lock_live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn remove_tree(path: &Path) {
    if let Err(e) = crate::fsutil::remove_file_or_tree(path) {
        tracing::warn!(event = "restore.staging_not_removed", path = %path.display(), error = %e);
    }
}

/// Whether `name` is a restore's staging directory (or, from before staging
/// directories, a staged file).
pub fn is_staging_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// Remove the staging left in `dir` by restores that were killed: every
/// staging entry whose lock nobody holds. Returns what was removed; one held
/// by a running restore is left alone.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        if !is_staging_name(&e.file_name()) {
            continue;
        }
        let path = e.path();
        // Never follows a link, never blocks on a FIFO: only what a restore
        // made is opened.
        let opened = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
        };
        let Ok(f) = opened else { continue };
        if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            continue; // a restore at work
        }
        if path.join(super::swap::PREVIOUS_MARKER).exists() {
            // Killed in the middle of a swap: what it holds may be what the
            // restore replaced. Kept, never deleted.
            keep_previous(dir, &path);
        }
        remove_tree(&path);
        tracing::info!(event = "restore.stale_staging_removed", path = %path.display());
        removed.push(path);
    }
    removed
}

/// Move what a staging directory holds into a new pre-restore folder in
/// `dir`, where an operator finds it as after any restore.
fn keep_previous(dir: &Path, staging: &Path) {
    let stamp = crate::fsutil::compact_timestamp(jiff::Timestamp::now());
    let aside = super::swap::fresh_aside_dir(dir, &stamp);
    let Ok(entries) = fs::read_dir(staging) else { return };
    for e in entries.flatten() {
        if e.file_name() == super::swap::PREVIOUS_MARKER {
            continue;
        }
        if fs::create_dir_all(&aside).is_ok() && fs::rename(e.path(), aside.join(e.file_name())).is_ok() {
            tracing::warn!(event = "restore.previous_kept", path = %aside.join(e.file_name()).display(),
                "an interrupted restore's swap left this; kept");
        }
    }
}

/// On the first SIGINT or SIGTERM, remove this process's staging
/// directories and exit with 128 + the signal's number, as a shell reports a
/// process the signal ended. For the command line; an embedding service
/// handles its own signals and drops its restores.
pub fn remove_all_on_signals() -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| crate::error::Error::io(Path::new("signal handler"), e))?;
    std::thread::Builder::new()
        .name("restore-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let live = lock_live();
                for path in live.iter() {
                    remove_tree(path);
                }
                let created = CREATED.lock().unwrap_or_else(|p| p.into_inner());
                for dir in created.iter().rev() {
                    let _ = fs::remove_dir(dir);
                }
                tracing::warn!(event = "restore.interrupted", signal = sig, removed = live.len());
                std::process::exit(128 + sig);
            }
        })
        .map_err(|e| crate::error::Error::io(Path::new("signal thread"), e))?;
    Ok(())
}
