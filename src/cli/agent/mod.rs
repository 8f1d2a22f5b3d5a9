//! `lifeboat agent`: the service that runs everything on schedule. One
//! loop on the main thread starts and reaps children, fires jobs, and reacts
//! to signals (a thread turns them into messages, so the loop sleeps until a
//! signal or the next deadline): SIGTERM/SIGINT stop it cleanly, SIGHUP
//! reloads the configuration.
//!
//! Replication runs as one supervised child, `lifeboat replicate --json`,
//! rather than in this process: the replicator's stop flag and signal
//! handling are process-wide, so a changed set of databases on reload is
//! simply a clean stop (everything read is shipped) and a start that
//! resumes from its state without a gap; a replicator that fails (a
//! database replaced and gone, a refusal) is started again with backoff
//! without taking the scheduler down; and its memory is its own.
//!
//! `schedule.rs` parses schedules and computes fire times, `jobs.rs` checks
//! jobs and runs them as children, `state.rs` remembers the last fires
//! across restarts, `status.rs` is the live state `lifeboat status` reads.

pub mod jobs;
pub mod schedule;
pub mod state;
pub mod status;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use lifeboat::duration::parse_duration;
use lifeboat::error::{Error, ErrorCode, Result};
use lifeboat::oplog::{self, Operation};

use super::Ctx;
use super::config::Config;
use jobs::{Ended, JobSpec, Launch, Running};
use schedule::Schedule;
use state::{JobState, SchedulerState, StateFile};
use status::{AgentStatus, DatabaseStatus, JobStatus, ReplicationStatus};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Runs in the foreground as a service (systemd Type=notify: READY, STATUS and WATCHDOG through
sd_notify). It replicates every [[sqlite]] source continuously (as `lifeboat replicate`; opt one
out with `replicate = false`) and runs each [[job]] on its schedule as a child `lifeboat` process
with the agent's --config and --repo:

  timezone = \"Europe/Berlin\"          # cron schedules are read here (default: the system's)

  [[job]]
  name = \"partial\"
  schedule = \"0 3 * * 1-6\"             # cron: 5 fields, or 6 with seconds first
  run = \"snapshot --kind partial\"      # any lifeboat command line
  jitter = \"5m\"                        # start up to 5 minutes late, at random
  timeout = \"2h\"                       # then SIGTERM, and SIGKILL after [agent] stop_grace
  retries = 3                          # after a temporary failure (exit 75, or retry_on); default 3
  retry_delay = \"1m\"                   # default

  [[job]]
  name = \"tenant-42\"
  schedule = \"15m\"                     # a duration: every 15 minutes
  run = \"snapshot --only tenant-42\"

Without any [[job]] it runs the seeds' schedule: a partial snapshot daily but Sunday and a full
one on Sunday (03:00), `forget --prune` daily (04:00, by [retention]) and a drill on Sunday (05:00).

A run still going at the job's next time is not started twice (agent.job_skipped). A run missed
while the agent was down, or cut short by its death, runs once at start. Each run is one record
in the operations log carrying the job's name (`lifeboat log`).

Signals: SIGTERM or SIGINT stops running jobs (SIGTERM, SIGKILL after [agent] stop_grace; their
writes are crash-safe, so nothing partial remains and they run again at start) and the replicator
(which ships what it read), then exits 0. SIGHUP reads the configuration again: a broken one is
refused (agent.reload_refused, with file, line and fix) and the old one kept; a valid one replaces
the jobs (running ones finish) and restarts replication if its databases changed.

Its state and agent-status.json live in $XDG_STATE_HOME/lifeboat/agent ([agent] state_dir).

Examples:
  lifeboat agent --print-jobs               # the effective schedule, next three runs of each job
  lifeboat agent --print-jobs --json
  lifeboat --config /etc/lifeboat/lifeboat.toml agent")]
pub struct Args {
    /// Print each job's name, schedule, command line and next three run times (in the config's
    /// time zone), and exit without starting anything.
    #[arg(long)]
    pub print_jobs: bool,
}

/// Whether this command runs as a long-lived service (its log needs times).
pub fn runs_as_service(command: &super::Command) -> bool {
    matches!(command, super::Command::Agent(a) if !a.print_jobs)
}

/// The job this process runs for, when the agent started it.
pub fn job_of_this_run() -> Option<String> {
    std::env::var(jobs::JOB_ENV).ok().filter(|j| !j.is_empty())
}

/// Just before a run the agent started writes its record: from here on a
/// SIGTERM (the agent stopping, a timeout) would end it after the record
/// is written but before it exits, and the agent, seeing a run ended by a
/// signal, would record it a second time. So SIGTERM is ignored from here
/// to the exit; SIGKILL after the grace period still ends it.
pub fn before_record() {
    if job_of_this_run().is_some() {
        // SAFETY: setting a disposition to SIG_IGN has no handler to race.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
}

/// The agent's part of checking a config when it is read: jobs, time zone
/// and `[agent]` durations. Every command checks them (`Ctx::config`), so a
/// broken job is found by whichever command reads the file first.
pub fn check_config(config: &Config) -> Result<()> {
    let text = std::fs::read_to_string(&config.path).map_err(|e| Error::io(&config.path, e))?;
    jobs::specs(config, &text)?;
    timezone(config)?;
    stop_grace(config)?;
    Ok(())
}

/// The config's `timezone`, else the system's.
fn timezone(config: &Config) -> Result<(TimeZone, String)> {
    match config.timezone.as_deref() {
        Some(name) => TimeZone::get(name).map(|tz| (tz, name.to_string())).map_err(|e| {
            Error::config(config.path.display(), format!("timezone `{name}` is not known: {e}"))
                .fix("use an IANA name such as \"Europe/Berlin\" or \"UTC\"")
                .code(ErrorCode::ConfigInvalid)
        }),
        None => {
            let tz = TimeZone::system();
            let name = tz.iana_name().unwrap_or("system").to_string();
            Ok((tz, name))
        }
    }
}

fn stop_grace(config: &Config) -> Result<Duration> {
    match config.agent.stop_grace.as_deref() {
        Some(s) => parse_duration("[agent] stop_grace", s).map_err(|e| {
            Error::config(config.path.display(), format!("[agent] stop_grace {}", e.problem))
                .fix(e.fix)
                .code(ErrorCode::ConfigInvalid)
        }),
        None => Ok(Duration::from_secs(30)),
    }
}

/// A configuration read and checked, with what the agent derives from it.
struct Loaded {
    /// The file's text as checked.
    text: String,
    config: Config,
    jobs: Vec<JobSpec>,
    default_schedule: bool,
    tz: TimeZone,
    tz_name: String,
    stop_grace: Duration,
    /// The databases replication follows (their names).
    replicated: Vec<String>,
    /// What replication depends on: a change restarts the replicator.
    replication_key: String,
}

fn load(path: &Path) -> Result<Loaded> {
    let read = || std::fs::read_to_string(path).map_err(|e| Error::io(path, e));
    let text = read()?;
    let config = Config::load(path)?;
    check_config(&config)?;
    // The text checked is the text the jobs get (see `write_in_force`):
    // an edit landing while it was read is read again next time.
    if read()? != text {
        return Err(Error::busy(path.display(), "the file changed while it was read")
            .fix("send SIGHUP again once the edit is saved"));
    }
    let (jobs, default_schedule) = jobs::effective(&config, &text)?;
    let (tz, tz_name) = timezone(&config)?;
    let replicated = config
        .sqlite
        .iter()
        .filter(|s| s.replicate != Some(false))
        .map(|s| s.name.clone().unwrap_or_else(|| super::config::file_name(&s.path)))
        .collect();
    let replication_key = format!("{:?}", (&config.sqlite, &config.replicate, &config.repository));
    Ok(Loaded {
        text,
        stop_grace: stop_grace(&config)?,
        config,
        jobs,
        default_schedule,
        tz,
        tz_name,
        replicated,
        replication_key,
    })
}

/// Why a job's first run is when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// Its schedule's next fire.
    Scheduled,
    /// A fire passed while the agent was down: once, now.
    Missed(Timestamp),
    /// The agent died during its last run: again, now.
    Interrupted,
    /// An interval job never run: now.
    New,
}

/// When a job first runs after a start (or a reload that made it new).
fn first_fire(spec: &JobSpec, st: Option<&JobState>, now: Timestamp, tz: &TimeZone) -> (Option<Timestamp>, First) {
    let st = st.filter(|s| s.schedule == spec.schedule_text);
    if st.is_some_and(JobState::interrupted) {
        return (Some(now), First::Interrupted);
    }
    match (st.and_then(|s| s.last_fire), &spec.schedule) {
        (Some(last), _) => match spec.schedule.next_after(last, tz) {
            Some(n) if n <= now => (Some(now), First::Missed(n)),
            n => (n, First::Scheduled),
        },
        (None, Schedule::Every(_)) => (Some(now), First::New),
        (None, Schedule::Cron(_)) => (spec.schedule.next_after(now, tz), First::Scheduled),
    }
}

/// The next nominal fire after one at `fired`: never in the past, so fires
/// missed meanwhile collapse into none.
fn advance(schedule: &Schedule, fired: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    match schedule.next_after(fired, tz) {
        Some(n) if n <= now => schedule.next_after(now, tz),
        n => n,
    }
}

/// The agent's state directory for `config`: `[agent] state_dir`, else
/// `$XDG_STATE_HOME/lifeboat/agent`. `lifeboat status` finds
/// `agent-status.json` here (`status::AgentStatus::path`).
pub fn state_dir(ctx: &Ctx, config: &Config) -> PathBuf {
    config
        .agent
        .state_dir
        .clone()
        .unwrap_or_else(|| super::agent_socket::default_state_dir(ctx.dirs()))
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let config = ctx.config()?.ok_or_else(|| {
        Config::not_found_error().fix("pass --config FILE: the agent runs what a configuration names (see --help)")
    })?;
    let path = std::path::absolute(&config.path).map_err(|e| Error::io(&config.path, e))?;
    let loaded = load(&path)?;
    let dir = state_dir(ctx, &loaded.config);
    if args.print_jobs {
        return print_jobs(ctx, &loaded, &dir);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(&dir, e).fix("create the agent's state directory or set [agent] state_dir"))?;
    let _lock = lock_state_dir(&dir)?;
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), e))?;
    let in_force = write_in_force(&dir, &loaded.text)?;
    let mut prefix = vec!["--config".to_string(), in_force.display().to_string()];
    if let Some(r) = ctx.repo_flag() {
        prefix.extend(["--repo".to_string(), r.to_string()]);
    }
    let signals = signal_channel()?;
    let launch = Launch {
        exe,
        prefix,
        base: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
    };
    let mut agent = Agent::new(ctx, launch, path, loaded, dir)?;
    agent.run(signals)
}

/// The configuration in force, `<state dir>/config.toml`: what the jobs and
/// the replicator read (with `config::CONFIG_BASE_ENV` naming the original's
/// directory for relative paths), so a file edited into a broken state, and
/// refused, does not reach them. Written crash-safe and readable by the
/// owner only, since it may hold credentials.
fn write_in_force(dir: &Path, text: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("config.toml");
    let tmp = dir.join(".config.toml.tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io(&path, e))?;
    lifeboat::fsutil::sync_dir(dir)?;
    Ok(path)
}

/// One agent per state directory: a second would fire every job twice.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("agent.lock");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::busy(
            path.display(),
            "another lifeboat agent runs with this state directory",
        )
        .fix("stop it first, or give this one another [agent] state_dir")
        .code(ErrorCode::AgentBusy)),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// SIGTERM, SIGINT and SIGHUP as messages to the loop.
fn signal_channel() -> Result<std::sync::mpsc::Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .map_err(|e| Error::io(Path::new("signals"), e))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::io(Path::new("signals"), e))?;
    Ok(rx)
}

// ------------------------------------------------------------------ sd_notify

/// systemd's notification socket, when `NOTIFY_SOCKET` names one; every
/// call is a no-op otherwise.
struct Notifier {
    socket: Option<(std::os::unix::net::UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when systemd asks for pings.
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_status: String,
}

impl Notifier {
    fn from_env() -> Notifier {
        use std::os::linux::net::SocketAddrExt;
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = match p.strip_prefix('@') {
                Some(abs) => std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes()).ok()?,
                None => std::os::unix::net::SocketAddr::from_pathname(&p).ok()?,
            };
            Some((std::os::unix::net::UnixDatagram::unbound().ok()?, addr))
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            socket,
            watchdog,
            last_ping: Instant::now(),
            last_status: String::new(),
        }
    }

    fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.socket
            && let Err(e) = s.send_to_addr(msg.as_bytes(), addr)
        {
            tracing::debug!(event = "agent.notify_failed", error = %e);
        }
    }

    fn status(&mut self, line: String) {
        if line != self.last_status {
            self.send(&format!("STATUS={line}"));
            self.last_status = line;
        }
    }

    /// A watchdog ping when half the interval has passed.
    fn ping(&mut self) {
        if let Some(every) = self.watchdog
            && self.last_ping.elapsed() >= every
        {
            self.send("WATCHDOG=1");
            self.last_ping = Instant::now();
        }
    }
}

// ---------------------------------------------------------------- replication

/// The replicator child and what its `--json` lines said.
struct Replicator {
    child: Option<Child>,
    key: String,
    enabled: bool,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    restarts: u32,
    databases: Arc<Mutex<Vec<DatabaseStatus>>>,
    changed: Arc<AtomicBool>,
}

impl Replicator {
    fn new(loaded: &Loaded) -> Replicator {
        let r = Replicator {
            child: None,
            key: loaded.replication_key.clone(),
            enabled: !loaded.replicated.is_empty(),
            started: None,
            restart_at: Some(Instant::now()),
            backoff: Duration::from_secs(1),
            restarts: 0,
            databases: Arc::default(),
            changed: Arc::default(),
        };
        r.set_databases(&loaded.replicated);
        r
    }

    fn set_databases(&self, names: &[String]) {
        *self.databases.lock().expect("databases") = names
            .iter()
            .map(|n| DatabaseStatus {
                name: n.clone(),
                ..Default::default()
            })
            .collect();
    }

    fn start(&mut self, launch: &Launch) {
        let mut c = launch.command();
        c.args(launch.prefix(false))
            .args(["replicate", "--json"])
            .stdout(Stdio::piped());
        match c.spawn() {
            Ok(mut child) => {
                tracing::info!(event = "agent.replicate_started", pid = child.id());
                let out = child.stdout.take().expect("piped");
                let (dbs, changed) = (Arc::clone(&self.databases), Arc::clone(&self.changed));
                std::thread::spawn(move || read_notices(out, &dbs, &changed));
                self.child = Some(child);
                self.started = Some(Instant::now());
                self.restart_at = None;
            }
            Err(e) => {
                tracing::error!(event = "agent.replicate_not_started", error = %e);
                self.schedule_restart();
            }
        }
        self.changed.store(true, Ordering::SeqCst);
    }

    fn schedule_restart(&mut self) {
        // A replicator that ran a while was fine: start again soon. One that
        // keeps failing at once waits longer each time, up to a minute.
        if self.started.is_some_and(|s| s.elapsed() > Duration::from_secs(60)) {
            self.backoff = Duration::from_secs(1);
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
    }

    /// Reap an ended child; start one when due.
    fn tick(&mut self, launch: &Launch, stopping: bool) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            tracing::warn!(event = "agent.replicate_exited", status = %st, "the replicator ended; starting it again");
            self.child = None;
            self.changed.store(true, Ordering::SeqCst);
            if !stopping {
                self.restarts += 1;
                self.schedule_restart();
            }
        }
        if !stopping && self.enabled && self.child.is_none() && self.restart_at.is_some_and(|t| t <= Instant::now()) {
            self.start(launch);
        }
    }

    /// SIGTERM, then wait up to `grace` (it ships what it read), then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            jobs::signal_group(c.id(), libc::SIGTERM);
            let t = Instant::now();
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    tracing::info!(event = "agent.replicate_stopped", status = %st);
                    break;
                }
                if t.elapsed() >= grace {
                    jobs::signal_group(c.id(), libc::SIGKILL);
                    let _ = c.wait();
                    tracing::warn!(event = "agent.replicate_killed", "the replicator did not stop in time");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.changed.store(true, Ordering::SeqCst);
        }
    }

    fn status(&self) -> ReplicationStatus {
        ReplicationStatus {
            running: self.child.is_some(),
            pid: self.child.as_ref().map(Child::id),
            restarts: self.restarts,
            databases: self.databases.lock().expect("databases").clone(),
        }
    }
}

/// Each `--json` line of the replicator, into the databases' status.
fn read_notices(out: std::process::ChildStdout, dbs: &Mutex<Vec<DatabaseStatus>>, changed: &AtomicBool) {
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let event = v["event"].as_str().unwrap_or_default().to_string();
        let Some(db) = v["db"].as_str() else { continue };
        let mut dbs = dbs.lock().expect("databases");
        let Some(d) = dbs.iter_mut().find(|d| d.name == db) else {
            continue;
        };
        if let Some(t) = v["txid"].as_u64() {
            d.txid = Some(d.txid.map_or(t, |old| old.max(t)));
        }
        if event == "replicate.gap" {
            d.gaps += 1;
        }
        d.last_event = Some(event);
        d.last_event_at = Some(Timestamp::now().to_string());
        changed.store(true, Ordering::SeqCst);
    }
}

// ----------------------------------------------------------------------- jobs

/// One job in the loop.
struct Slot {
    spec: JobSpec,
    /// The next nominal fire.
    next_fire: Option<Timestamp>,
    /// When it really starts (the fire plus jitter).
    due: Option<Timestamp>,
    running: Option<Running>,
    retry_at: Option<Timestamp>,
    attempt: u32,
    /// Gone from the config at a reload: dropped once its run ends.
    retiring: bool,
    /// Why its first run is when it is.
    first: First,
}

impl Slot {
    fn new(spec: JobSpec, state: &SchedulerState, now: Timestamp, tz: &TimeZone) -> Slot {
        let (first, why) = first_fire(&spec, state.jobs.get(&spec.name), now, tz);
        match why {
            First::Missed(at) => {
                tracing::info!(event = "agent.job_missed", job = %spec.name, missed = %at, "a run was missed while the agent was down; running it once now")
            }
            First::Interrupted => {
                tracing::info!(event = "agent.job_interrupted", job = %spec.name, "the last run was cut short; running it again now")
            }
            First::Scheduled | First::New => {}
        }
        let due = first.map(|f| with_jitter(f, &spec, why == First::Scheduled));
        Slot {
            spec,
            next_fire: first,
            due,
            running: None,
            retry_at: None,
            attempt: 0,
            retiring: false,
            first: why,
        }
    }
}

fn with_jitter(fire: Timestamp, spec: &JobSpec, scheduled: bool) -> Timestamp {
    match spec.jitter.filter(|_| scheduled) {
        Some(max) => fire
            .checked_add(jiff::SignedDuration::try_from(schedule::jitter(max)).unwrap_or_default())
            .unwrap_or(fire),
        None => fire,
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

// ---------------------------------------------------------------------- agent

struct Agent<'a> {
    ctx: &'a Ctx,
    launch: Launch,
    path: PathBuf,
    loaded: Loaded,
    slots: Vec<Slot>,
    state: StateFile,
    dir: PathBuf,
    replicator: Replicator,
    notify: Notifier,
    started: Timestamp,
    stopping: bool,
    stopped: bool,
    dirty: bool,
    /// What the status socket answers: the last status published.
    live: std::sync::Arc<std::sync::Mutex<AgentStatus>>,
    /// Serves `live` at `<state dir>/agent.sock` while the agent runs.
    socket: Option<super::agent_socket::StatusServer>,
}

impl<'a> Agent<'a> {
    fn new(ctx: &'a Ctx, launch: Launch, path: PathBuf, loaded: Loaded, dir: PathBuf) -> Result<Agent<'a>> {
        let state = StateFile::open(&dir)?;
        let now = Timestamp::now();
        let slots = loaded
            .jobs
            .iter()
            .map(|s| Slot::new(s.clone(), &state.state, now, &loaded.tz))
            .collect();
        Ok(Agent {
            ctx,
            launch,
            path,
            replicator: Replicator::new(&loaded),
            loaded,
            slots,
            state,
            dir,
            notify: Notifier::from_env(),
            started: now,
            stopping: false,
            stopped: false,
            dirty: true,
            live: Default::default(),
            socket: None,
        })
    }

    fn run(&mut self, signals: std::sync::mpsc::Receiver<i32>) -> Result<i32> {
        self.record_interrupted();
        self.replicator.tick(&self.launch, false);
        tracing::info!(
            event = "agent.started",
            config = %self.path.display(),
            jobs = self.slots.len(),
            replicated = self.loaded.replicated.len(),
            timezone = %self.loaded.tz_name,
            "agent running"
        );
        self.serve_status();
        self.notify.send("READY=1");
        loop {
            match signals.recv_timeout(self.wait()) {
                Ok(libc::SIGHUP) => self.reload(),
                Ok(sig) => {
                    tracing::info!(
                        event = "agent.stopping",
                        signal = sig,
                        "stopping: running jobs are stopped, replication ships what it read"
                    );
                    return self.shutdown();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
            self.tick();
        }
    }

    /// How long the loop may sleep: until the next start, shorter while
    /// children run (their ends and timeouts are polled) and for the
    /// watchdog.
    fn wait(&self) -> Duration {
        let now = Timestamp::now();
        let mut wait = Duration::from_secs(60);
        if self.slots.iter().any(|s| s.running.is_some()) {
            wait = wait.min(Duration::from_millis(200));
        }
        // A replicator's end is noticed within a second; it restarts later
        // anyway, so an idle agent wakes once a second at most.
        if self.replicator.child.is_some() {
            wait = wait.min(Duration::from_secs(1));
        }
        if let Some(t) = self.replicator.restart_at {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        for s in &self.slots {
            for t in [s.due, s.retry_at].into_iter().flatten() {
                let until = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
                wait = wait.min(until);
            }
        }
        if let Some(w) = self.notify.watchdog {
            wait = wait.min(w / 2);
        }
        wait.max(Duration::from_millis(5))
    }

    fn tick(&mut self) {
        self.replicator.tick(&self.launch, self.stopping);
        if self.replicator.changed.swap(false, Ordering::SeqCst) {
            self.dirty = true;
        }
        for i in 0..self.slots.len() {
            self.reap(i);
        }
        self.slots.retain(|s| !(s.retiring && s.running.is_none()));
        let now = Timestamp::now();
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.retiring {
                continue;
            }
            if s.due.is_some_and(|d| d <= now) {
                let fire = s.next_fire.unwrap_or(now);
                s.next_fire = advance(&s.spec.schedule, fire, now, &self.loaded.tz);
                s.due = s.next_fire.map(|f| with_jitter(f, &s.spec, true));
                s.retry_at = None;
                s.attempt = 0;
                if s.running.is_some() {
                    tracing::warn!(event = "agent.job_skipped", job = %s.spec.name, fire = %fire, "the previous run is still going; this one is skipped");
                    self.dirty = true;
                    continue;
                }
                self.start(i, fire);
            } else if s.running.is_none() && s.retry_at.is_some_and(|r| r <= now) {
                s.retry_at = None;
                let fire = self.state.job(&self.slots[i].spec.name).last_fire.unwrap_or(now);
                self.start(i, fire);
            }
        }
        self.notify.ping();
        if self.dirty {
            self.publish();
        }
    }

    fn start(&mut self, i: usize, fire: Timestamp) {
        let spec = self.slots[i].spec.clone();
        match Running::start(&self.launch, &spec) {
            Ok(r) => {
                tracing::info!(event = "agent.job_started", job = %spec.name, pid = r.child.id(), run = %spec.run, attempt = self.slots[i].attempt);
                let st = self.state.job(&spec.name);
                *st = JobState {
                    schedule: spec.schedule_text.clone(),
                    last_fire: Some(fire),
                    started: Some(r.started_at),
                    finished: None,
                    exit_code: None,
                };
                self.save_state();
                self.slots[i].running = Some(r);
            }
            Err(e) => {
                tracing::error!(event = "agent.job_not_started", job = %spec.name, error = %e);
                let err = Error::new(
                    lifeboat::ErrorKind::Io,
                    self.launch.exe.display(),
                    format!("cannot start job `{}`: {e}", spec.name),
                )
                .fix("check the lifeboat binary is still in place")
                .code(ErrorCode::AgentJobNotStarted);
                let argv: Vec<String> = self.launch.prefix.iter().chain(&spec.words).cloned().collect();
                self.record_on_behalf(&spec, &argv, Instant::now(), err.kind.exit_code(), &err);
            }
        }
        self.dirty = true;
    }

    /// A run that ended: its state, its record when it could not write one,
    /// and a retry after a temporary failure.
    fn reap(&mut self, i: usize) {
        let grace = self.loaded.stop_grace;
        let slot = &mut self.slots[i];
        let Some(r) = slot.running.as_mut() else { return };
        if let Some(t) = slot.spec.timeout
            && r.started.elapsed() >= t
            && r.terminated.is_none()
        {
            tracing::warn!(event = "agent.job_timeout", job = %slot.spec.name, timeout = ?t, "the run outlasted its timeout; stopping it");
            r.timed_out = true;
            r.terminate();
        }
        r.kill_after(grace);
        let Some(ended) = r.poll() else { return };
        let r = slot.running.take().expect("running");
        let spec = slot.spec.clone();
        let code = ended.code();
        tracing::info!(event = "agent.job_finished", job = %spec.name, exit_code = code, ms = r.started.elapsed().as_millis() as u64);
        let abandoned = self.stopping && matches!(ended, Ended::Signal(_));
        if !abandoned {
            let st = self.state.job(&spec.name);
            st.finished = Some(Timestamp::now());
            st.exit_code = Some(code);
            self.save_state();
        }
        if let Ended::Signal(sig) = ended {
            let (problem, event) = if r.timed_out {
                (
                    format!(
                        "stopped after its timeout ({})",
                        humantime(spec.timeout.unwrap_or_default())
                    ),
                    ErrorCode::AgentJobTimeout,
                )
            } else if self.stopping {
                (
                    "stopped with the agent; it runs again at start".to_string(),
                    ErrorCode::AgentJobKilled,
                )
            } else {
                (format!("ended by signal {sig}"), ErrorCode::AgentJobKilled)
            };
            let err = Error::busy(format!("job {}", spec.name), problem)
                .fix("nothing partial was kept; it runs again at its next time")
                .code(event);
            self.record_on_behalf(&spec, &r.argv, r.started, code, &err);
        }
        let slot = &mut self.slots[i];
        if !self.stopping && spec.retry_on.contains(&code) && slot.attempt < spec.retries {
            slot.attempt += 1;
            let at = Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(spec.retry_delay).unwrap_or_default())
                .unwrap_or_else(|_| Timestamp::now());
            tracing::warn!(event = "agent.job_retry", job = %spec.name, exit_code = code, attempt = slot.attempt, retries = spec.retries, at = %at, "temporary failure; trying again");
            slot.retry_at = Some(at);
        } else if code != 0 {
            tracing::warn!(event = "agent.job_failed", job = %spec.name, exit_code = code, "the run failed (see its record: lifeboat log)");
            slot.attempt = 0;
        } else {
            slot.attempt = 0;
        }
        self.dirty = true;
    }

    /// A run the agent's death cut short left no record (its process ended
    /// with the agent, by PR_SET_PDEATHSIG's SIGTERM, or with the host):
    /// recorded now, once, before it runs again.
    fn record_interrupted(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].first != First::Interrupted {
                continue;
            }
            let spec = self.slots[i].spec.clone();
            let argv: Vec<String> = self.launch.prefix.iter().chain(&spec.words).cloned().collect();
            let started = self.state.job(&spec.name).started;
            let err = Error::busy(
                format!("job {}", spec.name),
                format!(
                    "the agent died during this run (started {}); nothing partial was kept",
                    started.map(rfc3339).unwrap_or_default()
                ),
            )
            .fix("it runs again now")
            .code(ErrorCode::AgentJobKilled);
            self.record_on_behalf(&spec, &argv, Instant::now(), 128 + libc::SIGTERM, &err);
        }
    }

    /// The operations log record of a run that could not write its own.
    fn record_on_behalf(&self, spec: &JobSpec, argv: &[String], started: Instant, code: i32, err: &Error) {
        let op = Operation::start(spec.command())
            .started_at(started)
            .args(argv.iter().cloned())
            .user(oplog::current_user(std::env::var("USER").ok()))
            .job(spec.name.clone());
        let ctx = self.ctx;
        op.finish(|| Ok(vec![ctx.repo_location()?]), code, Some(err));
    }

    fn save_state(&mut self) {
        if let Err(e) = self.state.save() {
            tracing::warn!(event = "agent.state_write_failed", error = %e, "cannot save the scheduler state; missed runs may not be caught up after a restart");
        }
    }

    /// SIGHUP: the new configuration, or the old one kept.
    fn reload(&mut self) {
        let loaded = match load(&self.path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(event = "agent.reload_refused", config = %self.path.display(), error = %e, fix = %e.fix, "the new configuration is refused; the old one stays in force");
                return;
            }
        };
        if let Err(e) = write_in_force(&self.dir, &loaded.text) {
            tracing::error!(event = "agent.reload_refused", config = %self.path.display(), error = %e, fix = %e.fix, "cannot save the new configuration for the jobs; the old one stays in force");
            return;
        }
        let now = Timestamp::now();
        let mut slots: Vec<Slot> = Vec::new();
        for spec in &loaded.jobs {
            match self.slots.iter().position(|s| s.spec.name == spec.name && !s.retiring) {
                Some(p) => {
                    let mut old = self.slots.remove(p);
                    if old.spec.schedule_text != spec.schedule_text || loaded.tz != self.loaded.tz {
                        old.next_fire = spec.schedule.next_after(now, &loaded.tz);
                        old.due = old.next_fire.map(|f| with_jitter(f, spec, true));
                    }
                    old.spec = spec.clone();
                    slots.push(old);
                }
                None => slots.push(Slot::new(spec.clone(), &self.state.state, now, &loaded.tz)),
            }
        }
        // Jobs gone from the config finish their run, then go.
        for mut s in self.slots.drain(..) {
            if s.running.is_some() {
                s.retiring = true;
                slots.push(s);
            }
        }
        self.slots = slots;
        if loaded.replication_key != self.replicator.key {
            tracing::info!(
                event = "agent.replicate_restart",
                "replication settings changed; restarting the replicator"
            );
            self.replicator.stop(loaded.stop_grace);
            self.replicator.key = loaded.replication_key.clone();
            self.replicator.enabled = !loaded.replicated.is_empty();
            self.replicator.set_databases(&loaded.replicated);
            self.replicator.restart_at = Some(Instant::now());
            self.replicator.backoff = Duration::from_secs(1);
        }
        tracing::info!(
            event = "agent.reloaded",
            jobs = loaded.jobs.len(),
            replicated = loaded.replicated.len(),
            "configuration reloaded"
        );
        self.loaded = loaded;
        self.dirty = true;
        self.tick();
    }

    /// Stop every run and the replicator, then exit 0.
    fn shutdown(&mut self) -> Result<i32> {
        self.stopping = true;
        self.notify.send("STOPPING=1");
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                r.terminate();
            }
        }
        self.publish();
        self.replicator.stop(self.loaded.stop_grace);
        while self.slots.iter().any(|s| s.running.is_some()) {
            for i in 0..self.slots.len() {
                self.reap(i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stopped = true;
        self.publish();
        tracing::info!(event = "agent.stopped", "agent stopped");
        Ok(0)
    }

    /// `lifeboat status` asks here first. Without the socket (a path too
    /// long for one, say) it still reads agent-status.json: a warning, not
    /// a reason to stop backing up.
    fn serve_status(&mut self) {
        let live = std::sync::Arc::clone(&self.live);
        let path = self.dir.join(super::agent_socket::SOCKET_NAME);
        match super::agent_socket::serve_status(&path, move || live.lock().unwrap_or_else(|p| p.into_inner()).clone()) {
            Ok(server) => self.socket = Some(server),
            Err(e) => {
                tracing::warn!(event = "agent.socket_failed", error = %e, "lifeboat status will read agent-status.json instead")
            }
        }
    }

    /// agent-status.json and the systemd status line.
    fn publish(&mut self) {
        self.dirty = false;
        let jobs: Vec<JobStatus> = self
            .slots
            .iter()
            .filter(|s| !s.retiring)
            .map(|s| {
                let st = self.state.state.jobs.get(&s.spec.name);
                JobStatus {
                    name: s.spec.name.clone(),
                    schedule: s.spec.schedule_text.clone(),
                    run: s.spec.run.clone(),
                    state: if s.running.is_some() {
                        "running"
                    } else if s.retry_at.is_some() {
                        "retry_wait"
                    } else {
                        "idle"
                    }
                    .into(),
                    pid: s.running.as_ref().map(|r| r.child.id()),
                    last_start: st.and_then(|j| j.started).map(rfc3339),
                    last_end: st.and_then(|j| j.finished).map(rfc3339),
                    last_exit_code: st.and_then(|j| j.exit_code),
                    next_run: s.retry_at.or(s.due).map(rfc3339),
                }
            })
            .collect();
        let running: Vec<String> = jobs
            .iter()
            .filter(|j| j.state == "running")
            .map(|j| j.name.clone())
            .collect();
        let next = self
            .slots
            .iter()
            .filter(|s| s.running.is_none() && !s.retiring)
            .filter_map(|s| s.due.map(|d| (d, s.spec.name.as_str())))
            .min();
        let status = AgentStatus {
            format: status::STATUS_FORMAT,
            pid: std::process::id(),
            started: rfc3339(self.started),
            updated: rfc3339(Timestamp::now()),
            config: self.path.clone(),
            timezone: self.loaded.tz_name.clone(),
            default_schedule: self.loaded.default_schedule,
            state: match (self.stopping, self.stopped) {
                (_, true) => "stopped",
                (true, _) => "stopping",
                _ => "running",
            }
            .into(),
            jobs,
            replication: self.replicator.status(),
        };
        status.write(&self.dir);
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = status.clone();
        let n = status.jobs.len();
        let mut line = format!("{n} job{}", if n == 1 { "" } else { "s" });
        if !running.is_empty() {
            line += &format!(", running {}", running.join(", "));
        }
        if let Some((at, name)) = next {
            line += &format!(
                ", next {name} at {}",
                at.to_zoned(self.loaded.tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z")
            );
        }
        if self.replicator.enabled {
            line += &format!(
                "; replicating {} database{}{}",
                self.loaded.replicated.len(),
                if self.loaded.replicated.len() == 1 { "" } else { "s" },
                if self.replicator.child.is_some() {
                    ""
                } else {
                    " (restarting)"
                }
            );
        }
        self.notify.status(line);
    }
}

fn humantime(d: Duration) -> String {
    jiff::SignedDuration::try_from(d)
        .map(|s| format!("{s:#}"))
        .unwrap_or_else(|_| format!("{d:?}"))
}

// ----------------------------------------------------------------- print-jobs

fn print_jobs(ctx: &Ctx, loaded: &Loaded, dir: &Path) -> Result<i32> {
    let now = Timestamp::now();
    // Read only: --print-jobs changes nothing, not even an unreadable state.
    let state: SchedulerState = std::fs::read(dir.join("schedule.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let tz = &loaded.tz;
    let zoned = |t: Timestamp| t.to_zoned(tz.clone());
    let rows: Vec<(&JobSpec, Vec<Timestamp>, First)> = loaded
        .jobs
        .iter()
        .map(|spec| {
            let (first, why) = first_fire(spec, state.jobs.get(&spec.name), now, tz);
            let mut next: Vec<Timestamp> = first.into_iter().collect();
            if let Some(f) = first {
                next.extend(spec.schedule.upcoming(f, tz, 2));
            }
            (spec, next, why)
        })
        .collect();
    if ctx.json {
        let jobs: Vec<serde_json::Value> = rows
            .iter()
            .map(|(spec, next, why)| {
                serde_json::json!({
                    "name": spec.name,
                    "schedule": spec.schedule_text,
                    "run": spec.run,
                    "jitter": spec.jitter.map(humantime),
                    "timeout": spec.timeout.map(humantime),
                    "retries": spec.retries,
                    "retry_delay": humantime(spec.retry_delay),
                    "retry_on": spec.retry_on,
                    "at_start": *why != First::Scheduled,
                    "next": next.iter().map(|t| zoned(*t).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::output::print_json(&serde_json::json!({
            "config": loaded.config.path,
            "timezone": loaded.tz_name,
            "default_schedule": loaded.default_schedule,
            "jobs": jobs,
            "replicated": loaded.replicated,
        }));
        return Ok(0);
    }
    println!("time zone: {}", loaded.tz_name);
    if loaded.default_schedule {
        println!("no [[job]] in {}: the seeds' schedule", loaded.config.path.display());
    }
    let name_w = rows.iter().map(|r| r.0.name.len()).max().unwrap_or(0).max(3);
    let sched_w = rows.iter().map(|r| r.0.schedule_text.len()).max().unwrap_or(0).max(8);
    let run_w = rows.iter().map(|r| r.0.run.len()).max().unwrap_or(0).max(3);
    println!(
        "{:<name_w$}  {:<sched_w$}  {:<run_w$}  NEXT RUNS",
        "JOB", "SCHEDULE", "RUN"
    );
    for (spec, next, why) in &rows {
        let mut times: Vec<String> = next
            .iter()
            .map(|t| zoned(*t).strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
            .collect();
        if *why != First::Scheduled
            && let Some(first) = times.first_mut()
        {
            *first = "at start".into();
        }
        println!(
            "{:<name_w$}  {:<sched_w$}  {:<run_w$}  {}",
            spec.name,
            spec.schedule_text,
            spec.run,
            times.join(", ")
        );
    }
    if loaded.replicated.is_empty() {
        println!("replicated continuously: none");
    } else {
        println!("replicated continuously: {}", loaded.replicated.join(", "));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(schedule: &str) -> JobSpec {
        JobSpec {
            name: "j".into(),
            schedule_text: schedule.into(),
            schedule: Schedule::parse(schedule).unwrap(),
            run: "snapshot".into(),
            words: vec!["snapshot".into()],
            jitter: None,
            timeout: None,
            retries: 0,
            retry_delay: Duration::from_secs(60),
            retry_on: vec![75],
        }
    }

    fn state(schedule: &str, last: &str, finished: bool) -> JobState {
        JobState {
            schedule: schedule.into(),
            last_fire: Some(ts(last)),
            started: Some(ts(last)),
            finished: finished.then(|| ts(last)),
            exit_code: finished.then_some(0),
        }
    }

    /// Missed fires (three days of them) run once, now; the next fire after
    /// that is the schedule's next, not the missed ones.
    #[test]
    fn a_missed_fire_runs_once_at_start() {
        let utc = TimeZone::UTC;
        let now = ts("2026-12-07T12:00:00Z");
        let daily = spec("0 3 * * *");
        let st = state("0 3 * * *", "2026-12-04T03:00:00Z", true);
        let (first, why) = first_fire(&daily, Some(&st), now, &utc);
        assert_eq!((first, why), (Some(now), First::Missed(ts("2026-12-05T03:00:00Z"))));
        assert_eq!(
            advance(&daily.schedule, now, now, &utc),
            Some(ts("2026-12-08T03:00:00Z"))
        );
        // Not missed: the next fire is still ahead.
        let st = state("0 3 * * *", "2026-12-07T03:00:00Z", true);
        assert_eq!(
            first_fire(&daily, Some(&st), now, &utc),
            (Some(ts("2026-12-08T03:00:00Z")), First::Scheduled)
        );
    }

    #[test]
    fn an_interrupted_run_runs_again_and_a_changed_schedule_starts_afresh() {
        let utc = TimeZone::UTC;
        let now = ts("2026-12-07T12:00:00Z");
        let daily = spec("0 3 * * *");
        let st = state("0 3 * * *", "2026-12-07T03:00:00Z", false);
        assert_eq!(
            first_fire(&daily, Some(&st), now, &utc),
            (Some(now), First::Interrupted)
        );
        let st = state("0 4 * * *", "2026-12-01T04:00:00Z", false);
        assert_eq!(
            first_fire(&daily, Some(&st), now, &utc),
            (Some(ts("2026-12-08T03:00:00Z")), First::Scheduled)
        );
        assert_eq!(first_fire(&spec("15m"), None, now, &utc), (Some(now), First::New));
        assert_eq!(
            first_fire(&daily, None, now, &utc),
            (Some(ts("2026-12-08T03:00:00Z")), First::Scheduled)
        );
    }

    /// An interval job runs again one interval after its last fire; fires
    /// that passed while it ran collapse into the next one ahead.
    #[test]
    fn advance_never_schedules_in_the_past() {
        let utc = TimeZone::UTC;
        let every = spec("15m");
        let fired = ts("2026-12-07T12:00:00Z");
        assert_eq!(
            advance(&every.schedule, fired, ts("2026-12-07T12:01:00Z"), &utc),
            Some(ts("2026-12-07T12:15:00Z"))
        );
        assert_eq!(
            advance(&every.schedule, fired, ts("2026-12-07T13:00:00Z"), &utc),
            Some(ts("2026-12-07T13:15:00Z"))
        );
    }
}
