//! Runs stopped at every crash point or failed with EIO at every step, and
//! runs bounded in time.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

// ------------------------------------------------------------ crash points

/// Run `args` against the repository with the crash switch set to step `n`
/// (src/crashpoint.rs): `None` when the run was killed there, else how it
/// exited.
pub fn run_crashing_at(env: &Env, args: &[&str], n: u64) -> Option<Out> {
    use std::os::unix::process::ExitStatusExt;
    let mut c = env.command();
    c.env("LIFEBOAT_CRASH_AT", n.to_string());
    c.arg("--repo").arg(&env.repo_arg).args(args);
    let what = format!("{c:?}");
    let o = c.output().unwrap();
    if o.status.signal() == Some(libc::SIGKILL) {
        return None;
    }
    Some(Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    })
}

/// Kill `args` at its first write step, then its second, and so on until a
/// run gets through; after each kill, `check`. Returns how many runs were
/// interrupted, and the run that got through.
pub fn kill_at_every_step(env: &Env, args: &[&str], mut check: impl FnMut(u64)) -> (u64, Out) {
    for n in 1..=500 {
        match run_crashing_at(env, args, n) {
            None => check(n),
            Some(out) => return (n - 1, out),
        }
    }
    panic!("`{args:?}` was still being killed after 500 steps");
}

/// Run `args` against the repository, killing the process (and failing the
/// test) if it has not ended after `secs`: the cases below used to hang.
pub fn run_bounded(env: &Env, repo: &str, args: &[&str], secs: u64) -> Out {
    run_bounded_command(env.command(), repo, args, secs)
}

/// [`run_bounded`] with a command already set up (its environment).
pub fn run_bounded_command(mut c: Command, repo: &str, args: &[&str], secs: u64) -> Out {
    c.arg("--repo").arg(repo).args(args);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let what = format!("{c:?}");
    let mut child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "`{what}` hung for {secs} s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    }
}

/// xorshift64*: a reproducible generator for tests (seeded, no dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Run `args` with the failure switch set to step `n` (an EIO there,
/// src/crashpoint.rs), bounded to a minute: `None` when the run never
/// reached step `n` (it has fewer), else how it ended. A run that reached
/// it must end 0 (a best-effort step: a cache copy, a clean-up) or 74.
pub fn run_failing_at(env: &Env, args: &[&str], n: u64) -> Option<Out> {
    let mut c = env.command();
    c.env("LIFEBOAT_FAIL_AT", n.to_string());
    c.env_remove("LIFEBOAT_CRASH_AT");
    let out = run_bounded_command(c, &env.repo_arg, args, 60);
    if !out.stderr.contains(&format!("failure point {n} ")) {
        assert_eq!(out.code, 0, "a run that never reached step {n} failed:\n{out:?}");
        return None;
    }
    assert!(
        out.code == 0 || out.code == 74,
        "an I/O error at step {n} must end the run with 74 (or be survived):\n{out:?}"
    );
    if out.code == 74 {
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("lifeboat: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line:\n{}", out.stderr);
    }
    Some(out)
}

/// Fail `args` with EIO at its first write step, then its second, and so
/// on until a run no longer reaches the step; after each, `check(n, out)`.
/// Returns how many runs failed (exit 74).
pub fn fail_at_every_step(env: &Env, args: &[&str], mut check: impl FnMut(u64, &Out)) -> u64 {
    let mut failed = 0;
    for n in 1..=500 {
        match run_failing_at(env, args, n) {
            None => return failed,
            Some(out) => {
                if out.code == 74 {
                    failed += 1;
                }
                check(n, &out);
            }
        }
    }
    panic!("`{args:?}` still reached step 500");
}
