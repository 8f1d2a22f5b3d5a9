//! Waking a follower when its log is written, so an idle replicator sleeps
//! instead of looking a hundred times a second. Polling cost a hundred idle
//! databases a third of a core; one inotify instance for the process (the
//! default limit is 128 per user) with a thread handing each write to the
//! follower of that log costs nothing while nothing is written.
//!
//! Besides the log itself, each follower watches its database's directory
//! for the database or its log being created, renamed or removed there: a
//! replaced database then wakes its follower at once, so an idle follower
//! need not look every 250 ms to notice one (four looks a second for each of
//! a hundred databases was most of an idle replicator's CPU). A wake is only
//! a hint to look now: followers still look at least every [`IDLE_LOOK`]
//! (their heartbeat needs a fresh look), [`wake_all`] ends every wait (a
//! stop), and on a system without inotify they poll as before.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Longest an idle follower sleeps without a wake while it records its own
/// heartbeat (`seen`, every second). Writes and replacements wake it.
pub const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Longest an idle follower sleeps without a wake while the process records
/// its heartbeat (see [`sync`]): only a safety net for what no watch
/// reports.
pub const QUIET_LOOK: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Signal {
    /// Written since the last wait, or the watch is gone.
    state: Mutex<(bool, bool)>,
    cv: Condvar,
    /// Counts every event for this watch, never reset (see [`sync`]).
    events: AtomicU64,
}

impl Signal {
    fn raise(&self, gone: bool) {
        let mut st = self.state.lock().expect("signal");
        self.events.fetch_add(1, Ordering::SeqCst);
        st.0 = true;
        st.1 |= gone;
        self.cv.notify_all();
    }
}

/// A watch's event count, for a thread other than its follower's.
#[derive(Clone)]
pub struct Events(Arc<Signal>);

impl Events {
    /// Events seen so far; a changed count means the watched files moved.
    pub fn count(&self) -> u64 {
        self.0.events.load(Ordering::SeqCst)
    }
}

/// Who a watch descriptor's events are for.
struct Entry {
    signal: Weak<Signal>,
    /// On a directory watch, the names that matter, and whether an event on
    /// that name means the watched log is another file now.
    names: Vec<(OsString, bool)>,
}

struct Watcher {
    fd: libc::c_int,
    by_wd: Mutex<HashMap<libc::c_int, Vec<Entry>>>,
    /// The reading thread stopped: watches no longer wake anyone.
    dead: AtomicBool,
    /// A file of our own whose writes mark a point in the event queue
    /// (see [`sync`]): it and its watch descriptor.
    marker: Option<(std::fs::File, libc::c_int)>,
    /// Marks written, and the number the reading thread has reached.
    marks: Mutex<(u64, u64)>,
    marked: Condvar,
}

fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();
    *WATCHER.get_or_init(|| {
        // SAFETY: plain syscall; the descriptor is owned by the watcher for
        // the process's life.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            tracing::info!(event = "replicate.no_inotify", error = %std::io::Error::last_os_error(), "polling instead");
            return None;
        }
        let w: &'static Watcher = Box::leak(Box::new(Watcher {
            fd,
            by_wd: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            marker: marker(fd),
            marks: Mutex::new((0, 0)),
            marked: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("wal-watch".into())
            .stack_size(64 << 10)
            .spawn(move || w.run());
        spawned.ok().map(|_| w)
    })
}

/// The marker file: created in the temporary directory, watched, and
/// unlinked at once (the watch and our descriptor keep it).
fn marker(fd: libc::c_int) -> Option<(std::fs::File, libc::c_int)> {
    let path = std::env::temp_dir().join(format!(".lifeboat-wake-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .ok()?;
    let c = CString::new(path.as_os_str().as_bytes()).ok();
    // SAFETY: a valid descriptor and a NUL-terminated path.
    let wd = c.map_or(-1, |c| unsafe {
        libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY)
    });
    let _ = std::fs::remove_file(&path);
    (wd >= 0).then_some((file, wd))
}

/// Wait until every event of writes completed before this call has been
/// handed to its watch, at most `timeout`; `false` if that cannot be known
/// (no inotify, no marker file, too slow).
///
/// Inotify queues one instance's events in order, so once the reading
/// thread reaches the event of a write to the marker file made now, every
/// write to a watched log completed before it has raised its watch's
/// [`Events::count`]. A follower asleep since a look that began when the
/// count was `n` therefore had everything committed until the call read
/// when the count is still `n` after it: the process's heartbeat records
/// that for every idle database at once, without waking any of them.
pub fn sync(timeout: Duration) -> bool {
    use std::os::unix::fs::FileExt;
    let Some(w) = watcher() else { return false };
    let Some((file, _)) = &w.marker else { return false };
    let deadline = std::time::Instant::now() + timeout;
    let mut m = w.marks.lock().expect("marks");
    // One mark in flight at a time: the kernel merges an unread event with
    // an identical one queued after it, so a second mark written before the
    // first was read could be reported by the first's event.
    while m.1 < m.0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || w.dead.load(Ordering::SeqCst) {
            return false;
        }
        m = w.marked.wait_timeout(m, left).expect("marks").0;
    }
    if file.write_all_at(b"m", 0).is_err() {
        return false;
    }
    m.0 += 1;
    let want = m.0;
    while m.1 < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || w.dead.load(Ordering::SeqCst) {
            return false;
        }
        m = w.marked.wait_timeout(m, left).expect("marks").0;
    }
    true
}

/// Whether [`sync`] can work here: a follower with a watch may then leave
/// its heartbeat to the process and sleep until something happens.
pub fn can_sync() -> bool {
    watcher().is_some_and(|w| w.marker.is_some() && !w.dead.load(Ordering::SeqCst))
}

/// End every follower's current wait at once (the replicator is stopping).
pub fn wake_all() {
    if let Some(w) = watcher() {
        w.raise_all(false);
    }
}

impl Watcher {
    fn raise_all(&self, gone: bool) {
        let all: Vec<Arc<Signal>> = self
            .by_wd
            .lock()
            .expect("watches")
            .values()
            .flatten()
            .filter_map(|e| e.signal.upgrade())
            .collect();
        for s in all {
            s.raise(gone);
        }
    }

    fn run(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Nobody is woken from here on: every follower drops its
                // watch and polls.
                self.dead.store(true, Ordering::SeqCst);
                self.raise_all(true);
                self.marked.notify_all();
                return;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_at = off + header;
                off = name_at + ev.len as usize;
                if self.marker.as_ref().is_some_and(|(_, wd)| *wd == ev.wd) {
                    let mut m = self.marks.lock().expect("marks");
                    m.1 = m.0;
                    self.marked.notify_all();
                    continue;
                }
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    // Events were dropped: anyone may have missed a write.
                    // Every count moves, so a mark lost with them may be
                    // taken as reached.
                    self.raise_all(false);
                    let mut m = self.marks.lock().expect("marks");
                    m.1 = m.0;
                    self.marked.notify_all();
                    continue;
                }
                // The name is NUL-padded to `len`.
                let name = buf.get(name_at..off.min(n as usize)).unwrap_or_default();
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                let gone = ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0;
                let hits: Vec<(Arc<Signal>, bool)> = self
                    .by_wd
                    .lock()
                    .expect("watches")
                    .get(&ev.wd)
                    .map(|list| {
                        list.iter()
                            .filter_map(|e| {
                                let hit = if e.names.is_empty() || gone {
                                    // The log's own events, or the directory
                                    // itself gone: watch again.
                                    Some(gone)
                                } else {
                                    e.names.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, g)| *g)
                                };
                                Some((e.signal.upgrade()?, hit?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for (s, gone) in hits {
                    s.raise(gone);
                }
            }
        }
    }

    fn add(&self, path: &Path, mask: u32, entry: Entry) -> Option<libc::c_int> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut by_wd = self.by_wd.lock().expect("watches");
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), mask) };
        if wd < 0 {
            return None;
        }
        let list = by_wd.entry(wd).or_default();
        list.retain(|e| e.signal.strong_count() > 0);
        list.push(entry);
        Some(wd)
    }

    fn remove(&self, wd: libc::c_int, signal: &Arc<Signal>) {
        let mut by_wd = self.by_wd.lock().expect("watches");
        if let Some(list) = by_wd.get_mut(&wd) {
            list.retain(|e| e.signal.strong_count() > 0 && !std::ptr::eq(e.signal.as_ptr(), Arc::as_ptr(signal)));
            if list.is_empty() {
                by_wd.remove(&wd);
                // SAFETY: removing a watch this process added.
                unsafe { libc::inotify_rm_watch(self.fd, wd) };
            }
        }
    }
}

/// A watch on one database's log and on the names of the database and its
/// log in their directory: writes to the log, and the database or the log
/// replaced, end [`Watch::wait`] early.
pub struct Watch {
    /// The log's watch (none while there is no log) and the directory's.
    wds: [Option<libc::c_int>; 2],
    signal: Arc<Signal>,
}

impl Watch {
    /// Watch the log `wal` of the database `db` (in the same directory);
    /// `None` when they cannot be watched (no inotify, no such directory),
    /// and the caller sleeps its usual nap.
    pub fn new(db: &Path, wal: &Path) -> Option<Watch> {
        let w = watcher()?;
        if w.dead.load(Ordering::SeqCst) {
            return None;
        }
        let signal = Arc::new(Signal::default());
        let file_mask = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
        // No log (the service's last connection closed and removed it): the
        // directory's watch says when it is created.
        let file = w.add(
            wal,
            file_mask,
            Entry {
                signal: Arc::downgrade(&signal),
                names: Vec::new(),
            },
        );
        let names = [(db, false), (wal, true)]
            .iter()
            .filter_map(|(p, gone)| Some((p.file_name()?.to_os_string(), *gone)))
            .collect();
        let dir_mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_ONLYDIR;
        let dir = db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Some(dir) = w.add(
            dir,
            dir_mask,
            Entry {
                signal: Arc::downgrade(&signal),
                names,
            },
        ) else {
            if let Some(file) = file {
                w.remove(file, &signal);
            }
            return None;
        };
        Some(Watch {
            wds: [file, Some(dir)],
            signal,
        })
    }

    /// Events seen so far (see [`sync`]).
    pub fn count(&self) -> u64 {
        self.signal.events.load(Ordering::SeqCst)
    }

    /// This watch's event count, for another thread.
    pub fn events(&self) -> Events {
        Events(Arc::clone(&self.signal))
    }

    /// Sleep until the log is written, the database or the log is replaced,
    /// or `timeout` passes. `false` once the log is gone (deleted, moved,
    /// another file at its name): watch again.
    pub fn wait(&self, timeout: Duration) -> bool {
        let st = self.signal.state.lock().expect("signal");
        let (mut st, _) = self
            .signal
            .cv
            .wait_timeout_while(st, timeout, |s| !s.0)
            .expect("signal");
        st.0 = false;
        !st.1
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(w) = watcher() else { return };
        for wd in self.wds.into_iter().flatten() {
            w.remove(wd, &self.signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A database renamed over at its path wakes an idle follower at once,
    /// not after its idle wait (nothing writes to the old log).
    #[test]
    fn a_replaced_database_or_log_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let wal = dir.path().join("app.db-wal");
        std::fs::write(&db, b"db").unwrap();
        std::fs::write(&wal, b"wal").unwrap();
        // Made before any watch: no event about it can still be on its way
        // to the last watch below (the watcher reads events on a thread of
        // its own, so the move aside's may land after that wait returned).
        let quiet_log = dir.path().join("quiet.db-wal");
        std::fs::write(&quiet_log, b"wal").unwrap();
        let Some(watch) = Watch::new(&db, &wal) else {
            eprintln!("no inotify here: nothing to test");
            return;
        };
        let long = Duration::from_secs(30);
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"other").unwrap();
        // Other names in the directory do not wake it.
        let t = Instant::now();
        assert!(watch.wait(Duration::from_millis(100)));
        assert!(t.elapsed() >= Duration::from_millis(90), "woken by another file");
        let t = Instant::now();
        std::fs::rename(&other, &db).unwrap();
        assert!(watch.wait(long), "the log is still the same file");
        assert!(t.elapsed() < long / 2, "woken by the rename, not the timeout");
        // The log moved aside: the watch says it is gone.
        std::fs::rename(&wal, dir.path().join("aside")).unwrap();
        let t = Instant::now();
        assert!(!watch.wait(long));
        assert!(t.elapsed() < long / 2);
        // And a wake for everyone ends a wait too.
        let again = Watch::new(&db, &quiet_log).unwrap();
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                wake_all();
            });
            assert!(again.wait(long));
        });
        assert!(t.elapsed() < long / 2);
    }
}
