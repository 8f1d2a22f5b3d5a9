//! Named steps of the write paths (an fsync, a rename, an upload, a
//! delete) at which the crash tests kill the process or make it fail.
//! Timing a SIGKILL from outside lands wherever the scheduler puts it, and
//! may land after the work is done; acting at the Nth step reached lands
//! exactly there, every step in turn, and tells the test whether the run
//! was interrupted.
//!
//! Disarmed unless the command line arms it (`LIFEBOAT_CRASH_AT` to kill,
//! `LIFEBOAT_FAIL_AT` to fail the step with EIO, read by the CLI only):
//! then each step costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};

/// The step at which to act (0: never), what to do, and the steps reached.
static ARMED_AT: AtomicU64 = AtomicU64::new(0);
static FAIL_INSTEAD: AtomicU64 = AtomicU64::new(0);
static REACHED: AtomicU64 = AtomicU64::new(0);

/// Die with SIGKILL at the `n`th step reached (counting from 1).
pub fn arm(n: u64) {
    ARMED_AT.store(n, Ordering::SeqCst);
}

/// Fail the `n`th step reached with an I/O error (EIO), as a disk that
/// goes bad there would.
pub fn arm_failure(n: u64) {
    FAIL_INSTEAD.store(1, Ordering::SeqCst);
    ARMED_AT.store(n, Ordering::SeqCst);
}

/// One step of a write path, reached: `Err(EIO)` where a failure is armed.
pub fn step(name: &'static str) -> std::io::Result<()> {
    let at = ARMED_AT.load(Ordering::Relaxed);
    if at == 0 || REACHED.fetch_add(1, Ordering::SeqCst) + 1 != at {
        return Ok(());
    }
    if FAIL_INSTEAD.load(Ordering::SeqCst) == 1 {
        eprintln!("lifeboat: failure point {at} ({name}): EIO");
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    eprintln!("lifeboat: crash point {at} ({name}): SIGKILL");
    // SAFETY: sending a signal to this process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    Ok(())
}
