//! Putting a staged copy in place of what is there, so that the path is
//! never missing and what was there is kept: a file is hard-linked into the
//! aside folder and then replaced by one `rename` (atomic); a directory is
//! swapped with `renameat2(RENAME_EXCHANGE)` and the old one, now at the
//! staging path, moved aside. A SIGKILL at any moment leaves the old or the
//! new at the path, whole, and the old one either there or kept: after an
//! exchange the staging directory carries a marker, and the next restore's
//! sweep moves what such a directory holds into a pre-restore folder
//! instead of deleting it.
//!
//! Where hard links or `RENAME_EXCHANGE` are not supported (some network
//! and FUSE filesystems), the old is renamed aside first and the new renamed
//! in: the path is then missing for that moment.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Name of the marker in a staging directory whose content may be what a
/// restore replaced (see the module doc).
pub const PREVIOUS_MARKER: &str = ".holds-previous";

/// How to undo one step of a commit.
pub enum Undo {
    /// `from` was renamed to `to`: rename it back.
    Renamed { from: PathBuf, to: PathBuf },
    /// A hard link was made at `link`: remove it.
    Linked { link: PathBuf },
    /// `dest` was replaced; the old is at `old`: put it back.
    Replaced { dest: PathBuf, old: PathBuf },
    /// `a` and `b` were exchanged: exchange them back.
    Swapped { a: PathBuf, b: PathBuf },
    /// `dest` was exchanged with a staged directory, and the old one moved
    /// to `old`: exchange back, then remove the new one.
    Exchanged { dest: PathBuf, old: PathBuf },
}

impl Undo {
    pub fn undo(self) {
        match self {
            Undo::Renamed { from, to } => {
                let _ = fs::rename(to, from);
            }
            Undo::Linked { link } => {
                let _ = fs::remove_file(link);
            }
            Undo::Replaced { dest, old } => {
                let _ = fs::rename(old, dest);
            }
            Undo::Swapped { a, b } => {
                let _ = exchange(&a, &b);
            }
            Undo::Exchanged { dest, old } => {
                if exchange(&old, &dest).is_ok() {
                    let _ = fs::remove_dir_all(old);
                }
            }
        }
    }
}

/// Put `stage` at `dest`, keeping what was at `dest` at `aside` (whose
/// parent exists). `marker_dir` is the staging directory holding `stage`.
/// Each step taken is pushed onto `done`, so a failure half-way can be
/// undone too.
pub fn put_in_place(stage: &Path, dest: &Path, aside: &Path, marker_dir: &Path, done: &mut Vec<Undo>) -> Result<()> {
    let Ok(old) = fs::symlink_metadata(dest) else {
        crate::crashpoint::step("restore: rename into place").at(dest)?;
        fs::rename(stage, dest).at(dest)?;
        done.push(Undo::Renamed {
            from: stage.to_path_buf(),
            to: dest.to_path_buf(),
        });
        return Ok(());
    };
    let new_is_dir = fs::symlink_metadata(stage).at(stage)?.is_dir();
    if !old.is_dir() && !new_is_dir && fs::hard_link(dest, aside).is_ok() {
        // The old has a second name; one rename replaces it.
        done.push(Undo::Linked {
            link: aside.to_path_buf(),
        });
        crate::crashpoint::step("restore: replace").at(dest)?;
        fs::rename(stage, dest).at(dest)?;
        done.pop();
        done.push(Undo::Replaced {
            dest: dest.to_path_buf(),
            old: aside.to_path_buf(),
        });
        return Ok(());
    }
    if old.is_dir() && new_is_dir {
        let marker = marker_dir.join(PREVIOUS_MARKER);
        fs::write(&marker, b"").at(&marker)?;
        crate::crashpoint::step("restore: exchange").at(dest)?;
        if exchange(stage, dest).is_ok() {
            // `stage` now names the old directory: keep it.
            done.push(Undo::Swapped {
                a: stage.to_path_buf(),
                b: dest.to_path_buf(),
            });
            crate::crashpoint::step("restore: move the old aside").at(stage)?;
            fs::rename(stage, aside).at(stage)?;
            done.pop();
            done.push(Undo::Exchanged {
                dest: dest.to_path_buf(),
                old: aside.to_path_buf(),
            });
            let _ = fs::remove_file(&marker);
            return Ok(());
        }
        let _ = fs::remove_file(&marker);
    }
    // The fallback: the path is missing between the two renames.
    crate::crashpoint::step("restore: move aside").at(dest)?;
    fs::rename(dest, aside).at(dest)?;
    done.push(Undo::Renamed {
        from: dest.to_path_buf(),
        to: aside.to_path_buf(),
    });
    crate::crashpoint::step("restore: rename into place").at(dest)?;
    fs::rename(stage, dest).at(dest)?;
    done.push(Undo::Renamed {
        from: stage.to_path_buf(),
        to: dest.to_path_buf(),
    });
    Ok(())
}

/// Swap two paths atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `.lifeboat-pre-restore-<time>` in `root`, suffixed if a restore in the
/// same second already made one.
pub fn fresh_aside_dir(root: &Path, stamp: &str) -> PathBuf {
    let base = root.join(format!(".lifeboat-pre-restore-{stamp}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        n += 1;
        candidate = PathBuf::from(format!("{}-{n}", base.display()));
    }
    candidate
}
