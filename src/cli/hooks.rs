//! Hooks: commands the operator's `lifeboat.toml` runs around each source's
//! capture (`before`/`after`, e.g. `docker compose stop web worker` and
//! `start web worker`) and on events (`[[hook]]`: `snapshot.success`,
//! `snapshot.failure`, `drill.failure`, `replicate.gap`, `any_error`).
//!
//! Every hook runs through `sh -c` in a process group of its own, stdin
//! from /dev/null, with a timeout after which the whole group is killed.
//! Its stdout and stderr are read line by line as they come and logged
//! (`hook.output`), never printed on the command's stdout, so `--json`
//! output stays one value. Without `-v` the lines of a hook that succeeds
//! are not shown; a hook that fails or times out has every line it printed
//! logged as a warning with it (`hook.failed`, `hook.timed_out`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lifeboat::oplog::redact;
use lifeboat::snapshot::{SourceHooks, SourceSpec};
use lifeboat::{Error, ErrorCode, Result};

use super::Ctx;
use super::config::{Config, file_name};
pub use super::config::{HookEvent, HookPolicy};

/// A `[[hook]]` may run this long unless its `timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// A source's `before` and `after` may each run this long unless its
/// `hook_timeout` says otherwise: stopping a few containers can take a
/// while, but a hung one must not hold the repository lock for ever.
const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(300);
/// After SIGTERM, how long a timed-out hook's group has before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// After a hook's shell exits, how long its output is waited for: a
/// process it started in the background may keep the pipe open for ever,
/// and is left running, its lines still logged as they come.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// A longer line is logged in pieces of this size.
const MAX_LINE: u64 = 64 << 10;
/// Output kept (when not logged as it comes) for a hook that may fail.
const KEEP_BYTES: usize = 1 << 20;

fn timeout(what: &str, s: &str) -> Result<Duration> {
    lifeboat::duration::parse_duration(what, s)
}

/// One source's `before`/`after`, by source name.
struct SourceCommands {
    name: String,
    before: Option<String>,
    after: Option<String>,
    timeout: Option<String>,
}

fn sources(c: &Config) -> Vec<SourceCommands> {
    let mut v = Vec::new();
    let mut add =
        |name: &Option<String>, path: &Path, before: &Option<String>, after: &Option<String>, t: &Option<String>| {
            if before.is_some() || after.is_some() || t.is_some() {
                v.push(SourceCommands {
                    name: name.clone().unwrap_or_else(|| file_name(path)),
                    before: before.clone(),
                    after: after.clone(),
                    timeout: t.clone(),
                });
            }
        };
    for s in &c.sqlite {
        add(&s.name, &s.path, &s.before, &s.after, &s.hook_timeout);
    }
    for d in &c.directory {
        add(&d.name, &d.path, &d.before, &d.after, &d.hook_timeout);
    }
    for f in &c.file {
        add(&f.name, &f.path, &f.before, &f.after, &f.hook_timeout);
    }
    v
}

/// The subcommand being run, for `LIFEBOAT_COMMAND`; set once by `main`.
static COMMAND: OnceLock<String> = OnceLock::new();

/// Name the subcommand this process runs (`snapshot`, `drill`, ...).
pub fn set_command(name: &str) {
    let _ = COMMAND.set(name.to_string());
}

/// What a hook is told of the event, besides its name.
#[derive(Debug, Clone, Default)]
pub struct EventInfo {
    /// The exit code the command ends with (`LIFEBOAT_EXIT_CODE`).
    pub exit_code: Option<i32>,
    /// The error, on one line (`LIFEBOAT_ERROR`); redacted when set.
    pub error: Option<String>,
    /// The snapshot's id (`LIFEBOAT_SNAPSHOT`).
    pub snapshot: Option<String>,
    /// The source or database concerned (`LIFEBOAT_SOURCE`).
    pub source: Option<String>,
}

/// The hooks of one configuration, ready to fire.
#[derive(Clone, Default)]
pub struct Hooks {
    hooks: Vec<super::config::HookConfig>,
    sources: Arc<Vec<SourceCommands>>,
    repository: String,
}

impl Hooks {
    /// The configuration's hooks (none without one, or with one that does
    /// not read: that error is the command's own to report) and the
    /// repository they are told of.
    pub fn new(ctx: &Ctx) -> Hooks {
        let Ok(Some(config)) = ctx.config() else {
            return Hooks::default();
        };
        if config.hook.is_empty() && sources(config).is_empty() {
            return Hooks::default();
        }
        Hooks {
            hooks: config.hook.clone(),
            sources: Arc::new(sources(config)),
            repository: ctx.repo_location().map(|l| redact(&l.display())).unwrap_or_default(),
        }
    }

    fn base_env(&self, event: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LIFEBOAT_EVENT", event.to_string()),
            ("LIFEBOAT_COMMAND", COMMAND.get().cloned().unwrap_or_default()),
            ("LIFEBOAT_REPOSITORY", self.repository.clone()),
        ]
    }

    /// Run every `[[hook]]` whose `on` holds `event`, in the order of the
    /// file, each to its end. `Err` (`hook.failed` or `hook.timed_out`,
    /// 75) for the first that failed with `policy = "fail"`; a failure
    /// under `ignore` is only logged.
    pub fn fire(&self, event: HookEvent, info: &EventInfo) -> Result<()> {
        let mut first = None;
        for (i, h) in self.hooks.iter().enumerate() {
            if !h.on.contains(&event) {
                continue;
            }
            let mut env = self.base_env(event.name());
            let mut add = |k: &'static str, v: &Option<String>| {
                if let Some(v) = v {
                    env.push((k, v.clone()));
                }
            };
            add("LIFEBOAT_EXIT_CODE", &info.exit_code.map(|c| c.to_string()));
            add("LIFEBOAT_ERROR", &info.error.as_deref().map(one_line));
            add("LIFEBOAT_SNAPSHOT", &info.snapshot);
            add("LIFEBOAT_SOURCE", &info.source);
            let limit = h
                .timeout
                .as_deref()
                .and_then(|t| timeout("timeout", t).ok())
                .unwrap_or(DEFAULT_TIMEOUT);
            let label = format!("[[hook]] {} on {}", i + 1, event.name());
            if let Err(e) = run(&label, &h.run, &env, limit)
                && h.policy == HookPolicy::Fail
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The per-source `before`/`after` runner for one snapshot; `None`
    /// when no source has either.
    pub fn for_sources(&self) -> Option<SourceRunner> {
        (!self.sources.is_empty()).then(|| SourceRunner {
            hooks: self.clone(),
            after_failures: RefCell::default(),
        })
    }
}

/// Fire `event` with the configuration's hooks: for the commands that
/// raise events of their own (`drill` fires `drill.failure`). `Err` as
/// [`Hooks::fire`].
pub fn fire(ctx: &Ctx, event: HookEvent, info: &EventInfo) -> Result<()> {
    Hooks::new(ctx).fire(event, info)
}

/// An error as `LIFEBOAT_ERROR` holds it: one line, secrets redacted.
fn one_line(s: &str) -> String {
    redact(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The sources' `before` and `after`, as the library's snapshot calls
/// them; `after`s that failed are kept for the command to report once the
/// snapshot is published.
pub struct SourceRunner {
    hooks: Hooks,
    after_failures: RefCell<Vec<Error>>,
}

impl SourceRunner {
    fn commands(&self, source: &SourceSpec) -> Option<&SourceCommands> {
        self.hooks.sources.iter().find(|s| s.name == source.name)
    }

    fn env(&self, event: &str, source: &SourceSpec) -> Vec<(&'static str, String)> {
        let mut env = self.hooks.base_env(event);
        env.push(("LIFEBOAT_SOURCE", source.name.clone()));
        env.push(("LIFEBOAT_SOURCE_PATH", source.path.display().to_string()));
        env
    }

    /// Whether the source of this name has a `before`.
    pub fn has_before(&self, name: &str) -> bool {
        self.hooks.sources.iter().any(|s| s.name == name && s.before.is_some())
    }

    /// The first `after` that failed, if any did.
    pub fn after_failure(&self) -> Option<Error> {
        let mut v = self.after_failures.borrow_mut();
        (!v.is_empty()).then(|| v.remove(0))
    }
}

/// An `after` whose source's `before` has started and which has not
/// finished: what a SIGINT or SIGTERM must still run.
struct Owed {
    source: String,
    label: String,
    command: String,
    env: Vec<(&'static str, String)>,
    timeout: Duration,
}

static OWED: Mutex<Vec<Owed>> = Mutex::new(Vec::new());
/// Set once a signal arrived: hooks started after it wait for the exit.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The process group of the hook running now, 0 when none.
static RUNNING: AtomicI32 = AtomicI32::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// On the first SIGINT or SIGTERM: [`run_owed_afters`], then exit with
/// 128 + the signal, so a service stopped for a snapshot is started again
/// however the snapshot ends short of SIGKILL. For the command line: it
/// takes the process's SIGINT and SIGTERM for good (installed once; a
/// process handling its own signals calls [`run_owed_afters`] instead).
pub fn run_afters_on_signals() -> Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| Error::io(Path::new("signal handler"), e))?;
    std::thread::Builder::new()
        .name("hook-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                run_owed_afters(128 + sig, &format!("interrupted by signal {sig}"));
                std::process::exit(128 + sig);
            }
        })
        .map_err(|e| Error::io(Path::new("signal thread"), e))?;
    Ok(())
}

/// Stop hooks for good, as the process ends: kill the hook running (its
/// process group), make every thread that starts another wait in
/// [`settle`], and run each `after` still owed (one cut short runs again),
/// told `exit_code` and `reason` as `LIFEBOAT_EXIT_CODE` and
/// `LIFEBOAT_ERROR`. The caller then exits.
pub fn run_owed_afters(exit_code: i32, reason: &str) {
    STOPPING.store(true, Ordering::SeqCst);
    let pgid = RUNNING.load(Ordering::SeqCst);
    if pgid > 0 {
        // SAFETY: kill with a process group id and a valid signal.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let owed = std::mem::take(&mut *lock(&OWED));
    tracing::warn!(event = "snapshot.interrupted", reason, afters = owed.len());
    for o in owed {
        let mut env = o.env;
        env.push(("LIFEBOAT_EXIT_CODE", exit_code.to_string()));
        env.push(("LIFEBOAT_ERROR", reason.to_string()));
        let _ = run_hook(&o.label, &o.command, &env, o.timeout);
    }
}

/// Once a signal arrived, the thread calling this waits for the signal
/// thread to run the owed `after`s and end the process.
pub fn settle() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

fn source_timeout(c: &SourceCommands) -> Duration {
    c.timeout
        .as_deref()
        .and_then(|t| timeout("hook_timeout", t).ok())
        .unwrap_or(DEFAULT_SOURCE_TIMEOUT)
}

impl SourceHooks for SourceRunner {
    fn before(&self, source: &SourceSpec) -> Result<()> {
        let Some(c) = self.commands(source) else { return Ok(()) };
        let Some(cmd) = &c.before else { return Ok(()) };
        if let Some(after) = &c.after {
            // Owed from here on, to a signal too: a `before` stopped half
            // way may already have stopped the service.
            let owed = Owed {
                source: source.name.clone(),
                label: format!("source `{}` after", source.name),
                command: after.clone(),
                env: self.env("source.after", source),
                timeout: source_timeout(c),
            };
            lock(&OWED).push(owed);
        }
        let label = format!("source `{}` before", source.name);
        run(&label, cmd, &self.env("source.before", source), source_timeout(c)).map_err(|e| {
            let fix = "nothing was published and its `after` ran; run the command by hand to see why (its output is logged as hook.output)";
            e.fix(fix)
        })
    }

    fn after(&self, source: &SourceSpec, failure: Option<&Error>) {
        let Some(c) = self.commands(source) else { return };
        let Some(cmd) = &c.after else { return };
        let mut env = self.env("source.after", source);
        if let Some(e) = failure {
            env.push(("LIFEBOAT_EXIT_CODE", e.kind.exit_code().to_string()));
            env.push(("LIFEBOAT_ERROR", one_line(&e.to_string())));
        }
        let label = format!("source `{}` after", source.name);
        let ran = run(&label, cmd, &env, source_timeout(c));
        // Done (a signal meanwhile would have parked this thread in `run`).
        lock(&OWED).retain(|o| o.source != source.name);
        if let Err(e) = ran {
            let fix = "the service may not have been started again: check it; the snapshot itself is unaffected";
            self.after_failures.borrow_mut().push(e.fix(fix));
        }
    }
}

/// Lines a hook printed, kept while they are not logged as they come.
#[derive(Default)]
struct Kept {
    lines: VecDeque<(&'static str, String)>,
    bytes: usize,
    dropped: usize,
}

/// Run `command` through `sh -c` in its own process group with `env`
/// added, its output logged line by line; kill the group after `limit`.
/// `Err` (`hook.failed`, `hook.timed_out`) when it cannot start, exits
/// non-zero, is killed by a signal, or times out; each is also logged.
pub fn run(label: &str, command: &str, env: &[(&'static str, String)], limit: Duration) -> Result<()> {
    settle();
    run_hook(label, command, env, limit)
}

fn run_hook(label: &str, command: &str, env: &[(&'static str, String)], limit: Duration) -> Result<()> {
    let subject = format!("{label} hook `{}`", redact(command));
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout reaches what it started too, and a
        // terminal's Ctrl-C is ours to handle, not the hook's.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            let e = Error::busy(&subject, format!("cannot start /bin/sh: {e}")).code(ErrorCode::HookFailed);
            tracing::warn!(event = "hook.failed", hook = label, "{e}");
            e
        })?;
    tracing::info!(event = "hook.started", hook = label, pid = child.id());
    let pid = child.id() as libc::pid_t;
    RUNNING.store(pid, Ordering::SeqCst);
    let live = tracing::enabled!(tracing::Level::INFO);
    let kept = Arc::new(Mutex::new(Kept::default()));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let pipes: [(&'static str, Option<Box<dyn Read + Send>>); 2] = [
        (
            "stdout",
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            "stderr",
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ];
    for (stream, pipe) in pipes {
        let Some(pipe) = pipe else { continue };
        let (label, kept, done) = (label.to_string(), kept.clone(), done_tx.clone());
        // Detached: a background process holding the pipe past the
        // hook's end keeps its reader, which logs what it prints.
        let _ = std::thread::Builder::new().name("hook-output".into()).spawn(move || {
            read_lines(pipe, stream, &label, live, &kept);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let (status_tx, status_rx) = mpsc::channel();
    let _ = std::thread::Builder::new().name("hook-wait".into()).spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let status = match status_rx.recv_timeout(limit) {
        Ok(s) => Some(s),
        Err(_) => {
            // The shell is not reaped until the waiter sees it exit, so its
            // pid, the group's id, cannot have been reused.
            // SAFETY: kill with a process group id and a valid signal.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let _ = status_rx.recv_timeout(KILL_GRACE);
            // SAFETY: as above; whatever ignored SIGTERM in the group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            None
        }
    };
    let _ = RUNNING.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    // The output up to the end (or the kill), unless a background process
    // keeps a pipe open.
    let deadline = std::time::Instant::now() + OUTPUT_GRACE;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let failed = match status {
        None => Some((
            "hook.timed_out",
            Error::busy(
                &subject,
                format!(
                    "still running after {}; killed with its process group",
                    jiff::SignedDuration::try_from(limit)
                        .map(|d| format!("{d:#}"))
                        .unwrap_or_default()
                ),
            )
            .fix("make it finish sooner, or give it a longer timeout")
            .code(ErrorCode::HookTimedOut),
        )),
        Some(Err(e)) => Some((
            "hook.failed",
            Error::busy(&subject, format!("cannot wait for it: {e}")).code(ErrorCode::HookFailed),
        )),
        Some(Ok(st)) if st.success() => None,
        Some(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match (st.code(), st.signal()) {
                (Some(c), _) => format!("exited {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "failed".into(),
            };
            Some((
                "hook.failed",
                Error::busy(&subject, how)
                    .fix("run the command by hand to see why (its output is logged as hook.output)")
                    .code(ErrorCode::HookFailed),
            ))
        }
    };
    match failed {
        None => {
            tracing::info!(event = "hook.done", hook = label);
            Ok(())
        }
        Some((event, e)) => {
            // What it printed, unless it was logged as it came.
            let kept = std::mem::take(&mut *kept.lock().unwrap_or_else(|p| p.into_inner()));
            if kept.dropped > 0 {
                tracing::warn!(
                    event = "hook.output",
                    hook = label,
                    "({} earlier lines not kept)",
                    kept.dropped
                );
            }
            for (stream, line) in kept.lines {
                tracing::warn!(event = "hook.output", hook = label, stream, "{line}");
            }
            if event == "hook.timed_out" {
                tracing::warn!(event = "hook.timed_out", hook = label, "{e}");
            } else {
                tracing::warn!(event = "hook.failed", hook = label, "{e}");
            }
            Err(e)
        }
    }
}

/// Log each line of `pipe` as it comes (`live`), else keep it for a
/// failure to show.
fn read_lines(pipe: Box<dyn Read + Send>, stream: &'static str, label: &str, live: bool, kept: &Mutex<Kept>) {
    let mut r = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A line without end is logged in pieces, not held whole.
        match r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if live {
            tracing::info!(event = "hook.output", hook = label, stream, "{line}");
            continue;
        }
        let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
        k.bytes += line.len();
        k.lines.push_back((stream, line.to_string()));
        while k.bytes > KEEP_BYTES && k.lines.len() > 1 {
            if let Some((_, old)) = k.lines.pop_front() {
                k.bytes -= old.len();
            }
            k.dropped += 1;
        }
    }
}
