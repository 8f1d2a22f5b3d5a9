//! Durable file-system primitives shared by the repository and restore paths.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

/// fsync a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::crashpoint::step("sync_dir").at(dir)?;
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Ask the kernel to begin writing a file back without waiting for it, so a
/// later fsync finds little left to do.
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A name no other process or thread will pick: pid, time and a counter.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

/// Write `data` to `path` so that a reader sees either the old file or the
/// whole new one, never a torn write: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = write_synced_temp(path, data)?;
    let result = crate::crashpoint::step("write_atomic: before rename")
        .and_then(|()| fs::rename(&tmp, path))
        .at(path)
        .and_then(|()| sync_dir(parent_of(path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], but only if `path` does not exist: `link` fails
/// rather than replace, which makes create-if-absent atomic. `false` when
/// `path` already existed (nothing written).
pub fn write_new(path: &Path, data: &[u8]) -> Result<bool> {
    let tmp = write_synced_temp(path, data)?;
    let result = match crate::crashpoint::step("write_new: before link").and_then(|()| fs::hard_link(&tmp, path)) {
        Ok(()) => sync_dir(parent_of(path)).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(crate::error::Error::io(path, e)),
    };
    let _ = fs::remove_file(&tmp);
    result
}

/// `data` in a durable temp file beside `path`; removed again on failure.
fn write_synced_temp(path: &Path, data: &[u8]) -> Result<PathBuf> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = create_private_file(&tmp).at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `.<name>.tmp-<unique>` next to `path`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", unique_suffix()))
}

/// Filesystems on which SQLite's WAL shared memory or durable fsync cannot be
/// trusted; replication refuses them, snapshots only warn.
pub fn unreliable_filesystem(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    match st.f_type as i64 {
        0x6969 => Some("NFS"),
        0x0102_1994 => Some("tmpfs"),
        0x8584_58f6 => Some("ramfs"),
        0xFF53_4D42 | 0xFE53_4D42 => Some("CIFS/SMB"),
        _ => None,
    }
}

/// Processes other than this one that hold `path` open, as (pid, command).
/// Reads /proc, so it sees every process this user may inspect.
pub fn processes_holding(path: &Path) -> Vec<(u32, String)> {
    OpenFiles::scan()
        .holding(path)
        .into_iter()
        .map(|h| (h.pid, h.command))
        .collect()
}

/// A process holding a file open.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's command name (`/proc/PID/comm`), for the refusal message.
    pub command: String,
    /// The held file, under the path asked about: the holder's own name for it,
    /// or the path there with the same device and inode.
    pub path: PathBuf,
}

/// Every file other processes hold open, from one pass over `/proc/*/fd`
/// (every process this user may inspect). Other processes of this very
/// program are not counted: a `lifeboat replicate` following a database
/// notices it replaced and takes a new base; it is no service to stop.
pub struct OpenFiles {
    open: Vec<OpenFile>,
}

/// One descriptor of another process.
struct OpenFile {
    /// The name the process sees (its /proc/PID/fd link).
    link: PathBuf,
    pid: u32,
    /// The open file's device and inode.
    ino: Option<(u64, u64)>,
}

impl OpenFiles {
    /// Take the one pass over `/proc/*/fd`, skipping this process and other
    /// Lifeboat processes; those this user may not inspect are silently absent,
    /// never an error.
    pub fn scan() -> OpenFiles {
        use std::os::unix::fs::MetadataExt;
        let me = std::process::id();
        // An upgraded binary's running processes read "<path> (deleted)".
        let exe_of = |proc_dir: &Path| {
            fs::read_link(proc_dir.join("exe"))
                .ok()
                .map(|p| PathBuf::from(p.to_string_lossy().trim_end_matches(" (deleted)")))
        };
        let my_exe = exe_of(Path::new("/proc/self"));
        let mut open = Vec::new();
        if let Ok(procs) = fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me || my_exe.is_some() && exe_of(&p.path()) == my_exe {
                    continue;
                }
                let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
                    continue;
                };
                for fd in fds.flatten() {
                    if let Ok(l) = fs::read_link(fd.path())
                        && l.is_absolute()
                    {
                        // The file itself, whatever name the process sees it
                        // by (a container's own mount namespace, a bind mount).
                        let ino = fs::metadata(fd.path()).ok().map(|m| (m.dev(), m.ino()));
                        open.push(OpenFile { link: l, pid, ino });
                    }
                }
            }
        }
        OpenFiles { open }
    }

    /// Who holds `path` open, or, for a directory, anything beneath it:
    /// every (process, file) pair, matched by name and by inode.
    pub fn holding(&self, path: &Path) -> Vec<Holder> {
        let Ok(target) = fs::canonicalize(path) else {
            return Vec::new();
        };
        let inodes = inodes_beneath(&target);
        let mut out: Vec<Holder> = Vec::new();
        for OpenFile { link, pid, ino } in &self.open {
            let found = if link.starts_with(&target) {
                Some(link.clone())
            } else {
                ino.and_then(|i| inodes.get(&i).cloned())
            };
            if let Some(found) = found
                && !out.iter().any(|h| h.pid == *pid && h.path == found)
            {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push(Holder {
                    pid: *pid,
                    command: comm.trim().to_string(),
                    path: found,
                });
            }
        }
        out
    }
}

/// Device and inode of `root` and of everything beneath it (links not
/// followed), each with its path.
fn inodes_beneath(root: &Path) -> std::collections::HashMap<(u64, u64), PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        out.insert((m.dev(), m.ino()), p.clone());
        if m.is_dir()
            && let Ok(entries) = fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// The per-user directories Lifeboat keeps host-local state in: the S3
/// working directories (staging, metadata cache, the host's writer lock),
/// the default repository and the replication state. The library reads no
/// environment: a service passes these explicitly, or calls
/// [`HostDirs::from_env`] to get what the `lifeboat` binary uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDirs {
    /// The user's home directory.
    pub home: PathBuf,
    /// Per-user cache (`$XDG_CACHE_HOME`, `~/.cache`): S3 working
    /// directories live under `lifeboat/s3/` here.
    pub cache: PathBuf,
    /// Per-user state (`$XDG_STATE_HOME`, `~/.local/state`): the default
    /// repository and replication state live under `lifeboat/` here.
    pub state: PathBuf,
}

impl HostDirs {
    /// The XDG layout under `home`: `home/.cache` and `home/.local/state`.
    pub fn under(home: &Path) -> HostDirs {
        HostDirs {
            home: home.to_path_buf(),
            cache: home.join(".cache"),
            state: home.join(".local/state"),
        }
    }

    /// What the `lifeboat` binary uses: `$HOME` (else `/`), and
    /// `$XDG_CACHE_HOME` / `$XDG_STATE_HOME` when set and non-empty, else
    /// their defaults under the home directory. The one place the library
    /// looks at these variables, and only when called.
    pub fn from_env() -> HostDirs {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let defaults = HostDirs::under(&home);
        HostDirs {
            cache: var("XDG_CACHE_HOME").unwrap_or(defaults.cache),
            state: var("XDG_STATE_HOME").unwrap_or(defaults.state),
            home,
        }
    }

    /// Where a replicator keeps positions and unshipped segments by
    /// default: `<state>/lifeboat/replicate`. A relative state directory is
    /// ignored, as the XDG specification asks, for the home's default: a
    /// replicator's state must not move with its working directory.
    pub fn replication_state_dir(&self) -> PathBuf {
        let base = if self.state.is_absolute() {
            self.state.clone()
        } else {
            self.home.join(".local/state")
        };
        base.join("lifeboat/replicate")
    }

    /// The per-user default repository: `<state>/lifeboat/repo`.
    pub fn default_repo(&self) -> PathBuf {
        self.state.join("lifeboat/repo")
    }

    /// The per-host working directory of S3 repositories, by their hash.
    pub fn s3_work_root(&self) -> PathBuf {
        self.cache.join("lifeboat/s3")
    }
}

/// This machine's host name (`gethostname`), or `unknown` when it fails;
/// recorded in manifests, lock files and operations log records.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether the effective uid is 0, the only user a restore may give files
/// back to their stored owner.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `YYYYMMDDTHHMMSSZ` for directory names that sort by time.
pub fn compact_timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Remove `path`, a file or a whole directory tree, without following a
/// symlink; nothing there is not an error.
pub fn remove_file_or_tree(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `path` and its missing parents as 0700 directories, whatever the umask:
/// the repository, its host caches and spools hold backed-up secrets (TLS
/// keys, credentials) that no other local user may read.
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Open `path` for writing, created 0600 (never wider, whatever the umask)
/// and truncated.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// `path` made absolute with `.` and `..` resolved by name, without
/// touching the filesystem (it may not exist yet: a restore on a new host).
pub fn absolute_normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
