//! One replica: a repository the stream is shipped to, with its own
//! position and its own thread, so a slow or unreachable replica never holds
//! back another, nor the reading of the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::spool::Spool;
use super::target::Target;

/// A replica's position, shared between its thread and the follower.
#[derive(Debug, Default)]
pub struct Position {
    /// The next transaction id this replica needs.
    pub next: u64,
    /// Its newest base; segments starting there are not needed.
    pub base: u64,
    /// It cannot continue from the spool: it needs a base first.
    pub needs_base: bool,
    /// The txid of a base being captured for it.
    pub inflight: Option<u64>,
    /// When a failed base may be tried again.
    pub base_retry_at: Option<Instant>,
    /// Failed bases in a row; the wait before the next try doubles with each.
    pub base_failures: u32,
    /// Milliseconds the last upload took.
    pub last_upload_ms: u64,
}

struct Shared {
    pos: Mutex<Position>,
    wake: Condvar,
    draining: AtomicBool,
    abandon: AtomicBool,
}

/// One replica of one database: its position and the thread uploading
/// spooled segments to it.
pub struct Replica {
    /// The repository shipped to.
    pub target: Arc<Target>,
    /// The replica, as the operator wrote its location.
    pub name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Replica {
    /// Start the replica's upload thread, next needing transaction `next`.
    pub fn start(target: Arc<Target>, stream: String, spool: Arc<Spool>, next: u64) -> Replica {
        let shared = Arc::new(Shared {
            pos: Mutex::new(Position {
                next,
                ..Position::default()
            }),
            wake: Condvar::new(),
            draining: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
        });
        let name = target.name.clone();
        let thread = {
            let shared = Arc::clone(&shared);
            let target = Arc::clone(&target);
            std::thread::Builder::new()
                .name("replica".into())
                .spawn(move || ship(&target, &stream, &spool, &shared))
                .expect("spawn replica thread")
        };
        Replica {
            target,
            name,
            shared,
            thread: Some(thread),
        }
    }

    /// Change the position under its lock, then wake the replica's thread to
    /// look at it.
    pub fn with<T>(&self, f: impl FnOnce(&mut Position) -> T) -> T {
        let mut p = self.shared.pos.lock().expect("replica position");
        let out = f(&mut p);
        self.shared.wake.notify_all();
        out
    }

    /// Read the position without waking the replica's thread: the
    /// follower looks at it on every turn of its loop, and a wake each time
    /// kept a hundred idle shippers spinning.
    pub fn peek<T>(&self, f: impl FnOnce(&Position) -> T) -> T {
        f(&self.shared.pos.lock().expect("replica position"))
    }

    /// Wake the replica's thread to look for work now.
    pub fn wake(&self) {
        self.shared.wake_up();
    }

    /// `wake`, for another thread (the sealer, after each segment).
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.wake_up()
    }

    /// Upload what is spooled, then stop; give up after `limit`.
    pub fn drain(mut self, limit: Duration) -> u64 {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.wake();
        let deadline = Instant::now() + limit;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shared.abandon.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
        self.with(|p| p.next)
    }
}

impl Shared {
    /// Notify under the position's lock: the thread looks for work and
    /// waits while holding it, so a wake cannot fall between the two and be
    /// lost (the wait's timeout is long).
    fn wake_up(&self) {
        let _p = self.pos.lock().expect("replica position");
        self.wake.notify_all();
    }
}

fn ship(target: &Target, stream: &str, spool: &Spool, shared: &Shared) {
    let name = target.name.as_str();
    let mut backoff = Duration::from_millis(500);
    loop {
        if shared.abandon.load(Ordering::SeqCst) {
            return;
        }
        // The next spooled segment this replica needs, if any.
        let job = {
            let mut p = shared.pos.lock().expect("replica position");
            loop {
                if p.needs_base {
                    // The follower writes the base; wait for it.
                } else if let Some((last, path)) = spool.get(p.next) {
                    break Some((p.next, last, path));
                } else if p.next == p.base && p.base > 0 {
                    p.next = p.base + 1;
                    continue;
                }
                if shared.abandon.load(Ordering::SeqCst) {
                    return;
                }
                if shared.draining.load(Ordering::SeqCst) {
                    break None;
                }
                // Every change worth a look comes with a wake (see
                // `wake_up`); the timeout is only a safety net, long so a
                // hundred idle replicas do not wake a hundred times a second.
                p = shared
                    .wake
                    .wait_timeout(p, Duration::from_secs(10))
                    .expect("replica position")
                    .0;
            }
        };
        let Some((first, last, path)) = job else { return };
        let started = Instant::now();
        let result = std::fs::read(&path)
            .map_err(|e| crate::error::Error::io(&path, e))
            .and_then(|bytes| target.segments.write(stream, first, last, &bytes).map(|()| bytes.len()));
        match result {
            Ok(bytes) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    event = "replicate.shipped",
                    replica = name,
                    first_txid = first,
                    last_txid = last,
                    bytes,
                    ms
                );
                let mut p = shared.pos.lock().expect("replica position");
                if p.next == first {
                    p.next = last + 1;
                }
                p.last_upload_ms = ms;
                shared.wake.notify_all();
                backoff = Duration::from_millis(500);
            }
            Err(e) => {
                tracing::warn!(event = "replicate.upload_failed", replica = name, first_txid = first, error = %e);
                if shared.draining.load(Ordering::SeqCst) && !e.temporary {
                    return;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
