//! Named steps of the write paths (an fsync, a rename, an upload, a
//! delete) at which the crash tests kill the process. Timing a SIGKILL from
//! outside lands wherever the scheduler puts it, and may land after the work
//! is done; killing at the Nth step reached lands exactly there, every
//! step in turn, and tells the test whether the run was interrupted.
//!
//! Disarmed unless the command line arms it (`LIFEBOAT_CRASH_AT`, read by
//! the CLI only): then each step costs one atomic increment.

use std::sync::atomic::{AtomicU64, Ordering};

/// The step at which to die (0: never), and the steps reached so far.
static ARMED_AT: AtomicU64 = AtomicU64::new(0);
static REACHED: AtomicU64 = AtomicU64::new(0);

/// Die with SIGKILL at the `n`th step reached (counting from 1).
pub fn arm(n: u64) {
    ARMED_AT.store(n, Ordering::SeqCst);
}

/// One step of a write path, reached.
pub fn step(name: &'static str) {
    let at = ARMED_AT.load(Ordering::Relaxed);
    if at == 0 {
        return;
    }
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        eprintln!("lifeboat: crash point {at} ({name}): SIGKILL");
        // SAFETY: sending a signal to this process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
