//! Waking a follower when its log is written, so an idle replicator sleeps
//! instead of looking a hundred times a second. Polling cost a hundred idle
//! databases a third of a core; one inotify instance for the process (the
//! default limit is 128 per user) with a thread handing each write to the
//! follower of that log costs nothing while nothing is written.
//!
//! A wake is only a hint to look now: followers still look at least every
//! [`IDLE_LOOK`], and on a system without inotify they poll as before.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Longest an idle follower sleeps without a wake: it bounds how late a
/// replaced database or a stop is noticed, not how late a commit is seen.
pub const IDLE_LOOK: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Signal {
    /// Written since the last wait, or the watch is gone.
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

struct Watcher {
    fd: libc::c_int,
    by_wd: Mutex<HashMap<libc::c_int, Vec<Weak<Signal>>>>,
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
        }));
        let spawned = std::thread::Builder::new()
            .name("wal-watch".into())
            .stack_size(64 << 10)
            .spawn(move || w.run());
        spawned.ok().map(|_| w)
    })
}

impl Watcher {
    fn run(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Every follower falls back to looking every IDLE_LOOK.
                return;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                off += header + ev.len as usize;
                let gone = ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0;
                let signals = self
                    .by_wd
                    .lock()
                    .expect("watches")
                    .get(&ev.wd)
                    .cloned()
                    .unwrap_or_default();
                for s in signals.iter().filter_map(Weak::upgrade) {
                    let mut st = s.state.lock().expect("signal");
                    st.0 = true;
                    st.1 |= gone;
                    s.cv.notify_all();
                }
            }
        }
    }
}

/// A watch on one file: writes to it end [`Watch::wait`] early.
pub struct Watch {
    wd: libc::c_int,
    signal: Arc<Signal>,
}

impl Watch {
    /// Watch `path` for writes; `None` when it cannot be watched (no
    /// inotify, no such file), and the caller sleeps its usual nap.
    pub fn new(path: &Path) -> Option<Watch> {
        let w = watcher()?;
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
        let signal = Arc::new(Signal::default());
        let mut by_wd = w.by_wd.lock().expect("watches");
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(w.fd, c.as_ptr(), mask) };
        if wd < 0 {
            return None;
        }
        let list = by_wd.entry(wd).or_default();
        list.retain(|s| s.strong_count() > 0);
        list.push(Arc::downgrade(&signal));
        Some(Watch { wd, signal })
    }

    /// Sleep until the file is written or `timeout` passes. `false` once the
    /// file is gone (deleted, moved): watch the path again.
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
        let mut by_wd = w.by_wd.lock().expect("watches");
        if let Some(list) = by_wd.get_mut(&self.wd) {
            list.retain(|s| s.strong_count() > 0 && !std::ptr::eq(s.as_ptr(), Arc::as_ptr(&self.signal)));
            if list.is_empty() {
                by_wd.remove(&self.wd);
                // SAFETY: removing a watch this process added.
                unsafe { libc::inotify_rm_watch(w.fd, self.wd) };
            }
        }
    }
}
