//! Jobs: the `[[job]]` entries (or the seeds' schedule) checked and turned
//! into [`JobSpec`]s, and their runs as child processes.
//!
//! A run is the agent's own binary started again with the job's command line
//! and the agent's `--config` and `--repo`: it behaves exactly as the command
//! typed by hand, exits with its own code, and writes its own operations log
//! record, which `LIFEBOAT_JOB` makes carry the job's name (and makes it
//! recorded even for a command that otherwise leaves none). Only a run that
//! could not leave a record, because it never started or a signal ended it,
//! is recorded by the agent. Each run is its own process group, so a
//! timeout stops whatever it started; `PR_SET_PDEATHSIG` ends it when the
//! agent dies (SIGKILL included), and its writes are crash-safe, so nothing
//! partial is left.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat::duration::parse_duration;
use lifeboat::error::{Error, ErrorCode, Result};

use super::super::Cli;
use super::super::config::{Config, JobConfig};
use super::schedule::{DEFAULT_JOBS, Schedule};

/// The variable a job's run finds its name in.
pub const JOB_ENV: &str = "LIFEBOAT_JOB";

/// One job, checked.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule_text: String,
    pub schedule: Schedule,
    pub run: String,
    /// `run` split into words.
    pub words: Vec<String>,
    pub jitter: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_on: Vec<i32>,
}

impl JobSpec {
    /// The subcommand it runs (`snapshot`, `forget`, …), as the operations
    /// log names it.
    pub fn command(&self) -> String {
        subcommand(&self.words).unwrap_or_else(|_| self.words.first().cloned().unwrap_or_default())
    }
}

/// The subcommand a command line names, as typed (`log prune` for nested
/// ones), if it parses as lifeboat's own.
fn subcommand(words: &[String]) -> std::result::Result<String, clap::Error> {
    use clap::CommandFactory;
    let argv = std::iter::once("lifeboat".to_string()).chain(words.iter().cloned());
    let m = Cli::command().try_get_matches_from(argv)?;
    let (name, sub) = m.subcommand().unwrap_or(("", &m));
    Ok(match sub.subcommand_name() {
        Some(nested) => format!("{name} {nested}"),
        None => name.to_string(),
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Commands a job may not run: the agent itself, the replicator it already
/// runs, and the interactive demo.
const NOT_A_JOB: &[&str] = &["agent", "replicate", "demo"];

/// Check every `[[job]]` of a config just parsed (its `text` gives the
/// lines): names unique, schedules that parse, command lines that parse as
/// lifeboat's own, durations. The first problem is a configuration error
/// naming the file, the line and the fix.
pub fn specs(config: &Config, text: &str) -> Result<Vec<JobSpec>> {
    let path = config.path.display().to_string();
    let err = |line: Option<usize>, problem: String, fix: &str| {
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        Error::config(&path, format!("{at}{problem}"))
            .fix(fix)
            .code(ErrorCode::ConfigInvalid)
    };
    let mut out: Vec<JobSpec> = Vec::new();
    for j in &config.job {
        let schedule_line = line_of(text, j.schedule.span().start);
        let run_line = line_of(text, j.run.span().start);
        if j.name.trim().is_empty() || j.name.chars().any(|c| c.is_control()) {
            return Err(err(
                Some(schedule_line),
                format!("job name `{}` is empty or has control characters", j.name),
                "give the [[job]] a name = \"…\"",
            ));
        }
        if out.iter().any(|o| o.name == j.name) {
            return Err(err(
                Some(schedule_line),
                format!("two jobs are named `{}`", j.name),
                "give one of them another name",
            ));
        }
        out.push(spec(j, schedule_line, run_line).map_err(|(line, problem, fix)| err(Some(line), problem, fix))?);
    }
    Ok(out)
}

/// The jobs the agent runs: the config's, else the seeds' schedule.
pub fn effective(config: &Config, text: &str) -> Result<(Vec<JobSpec>, bool)> {
    let jobs = specs(config, text)?;
    if !jobs.is_empty() {
        return Ok((jobs, false));
    }
    let defaults = DEFAULT_JOBS
        .iter()
        .map(|d| JobSpec {
            name: d.name.into(),
            schedule_text: d.schedule.into(),
            schedule: Schedule::parse(d.schedule).expect("the default schedules parse"),
            run: d.run.into(),
            words: shell_words::split(d.run).expect("the default command lines split"),
            jitter: None,
            timeout: None,
            // A snapshot meeting a replication base (or another job) at the
            // repository's lock exits 75: try again a minute later.
            retries: 3,
            retry_delay: Duration::from_secs(60),
            retry_on: vec![75],
        })
        .collect();
    Ok((defaults, true))
}

type Problem = (usize, String, &'static str);

fn spec(j: &JobConfig, schedule_line: usize, run_line: usize) -> std::result::Result<JobSpec, Problem> {
    let schedule = Schedule::parse(j.schedule.get_ref()).map_err(|p| {
        (
            schedule_line,
            format!("job `{}`: schedule {p}", j.name),
            "write a cron expression such as \"0 3 * * *\" (6 fields: seconds first) or a duration such as \"15m\"",
        )
    })?;
    let run = j.run.get_ref().trim().to_string();
    let words = shell_words::split(&run).map_err(|e| {
        (
            run_line,
            format!("job `{}`: run `{run}` does not split into words: {e}", j.name),
            "close the quotes in run",
        )
    })?;
    check_command_line(&words).map_err(|p| {
        (
            run_line,
            format!("job `{}`: run `{run}`: {p}", j.name),
            "write a lifeboat command line without `lifeboat`, e.g. \"snapshot --kind partial\"; see `lifeboat --help`",
        )
    })?;
    let duration = |what: &str, v: &Option<String>, line: usize| -> std::result::Result<Option<Duration>, Problem> {
        v.as_deref().map(|s| parse_duration(what, s)).transpose().map_err(|e| {
            (
                line,
                format!("job `{}`: {what} {}", j.name, e.problem),
                "write it like 30s, 5m or 2h",
            )
        })
    };
    Ok(JobSpec {
        name: j.name.clone(),
        schedule_text: j.schedule.get_ref().trim().to_string(),
        schedule,
        run: run.clone(),
        words,
        jitter: duration("jitter", &j.jitter, schedule_line)?,
        timeout: duration("timeout", &j.timeout, run_line)?,
        // A run meeting another at the repository's lock (a replication
        // base, another job) exits 75: worth a second try by default.
        retries: j.retries.unwrap_or(3),
        retry_delay: duration("retry_delay", &j.retry_delay, run_line)?.unwrap_or(Duration::from_secs(60)),
        retry_on: j.retry_on.clone().unwrap_or_else(|| vec![75]),
    })
}

/// A command line parses as lifeboat's own (so a typo is refused when the
/// config is read, not at 3 a.m.), and is not one a job may not run.
fn check_command_line(words: &[String]) -> std::result::Result<(), String> {
    if words.iter().any(|w| w == "--config" || w.starts_with("--config=")) {
        return Err("a job runs with the agent's own --config".into());
    }
    match subcommand(words) {
        Ok(name) => {
            let first = name.split(' ').next().unwrap_or_default();
            if NOT_A_JOB.contains(&first) {
                return Err(format!("`{first}` cannot be a job (the agent replicates by itself)"));
            }
            Ok(())
        }
        Err(e) => Err(e
            .to_string()
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("does not parse")
            .trim_start_matches("error: ")
            .to_string()),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code (it wrote its own record).
    Exited(i32),
    /// A signal ended it (no record of its own).
    Signal(i32),
}

impl Ended {
    /// The exit code as a shell gives it: 128 + signal when killed.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signal(s) => 128 + s,
        }
    }
}

/// One run in progress.
pub struct Running {
    pub child: Child,
    pub started: Instant,
    pub started_at: jiff::Timestamp,
    /// When SIGTERM was sent (timeout or stop), so SIGKILL follows after
    /// the grace period.
    pub terminated: Option<Instant>,
    pub timed_out: bool,
    /// The argv given after the program name, for a record made on its
    /// behalf.
    pub argv: Vec<String>,
}

impl Running {
    /// Start `spec`'s run: `exe` with `prefix` (the agent's global flags) and
    /// the job's words.
    pub fn start(launch: &Launch, spec: &JobSpec) -> std::io::Result<Running> {
        let own_repo = spec.words.iter().any(|w| w == "--repo" || w.starts_with("--repo="));
        // At info level: a job's log is the agent's (the journal), and what
        // its hooks print is logged at info, never to be lost there.
        let argv: Vec<String> = std::iter::once("-v".to_string())
            .chain(launch.prefix(own_repo))
            .chain(spec.words.iter().cloned())
            .collect();
        let mut c = launch.command();
        c.args(&argv).env(JOB_ENV, &spec.name);
        // A job's stdout goes to the agent's stderr (the journal), keeping
        // the agent's stdout for its own output.
        if let Ok(err) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            c.stdout(Stdio::from(err));
        }
        let child = c.spawn()?;
        Ok(Running {
            child,
            started: Instant::now(),
            started_at: jiff::Timestamp::now(),
            terminated: None,
            timed_out: false,
            argv,
        })
    }

    /// The run's end, if it has ended.
    pub fn poll(&mut self) -> Option<Ended> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(match st.code() {
                Some(c) => Ended::Exited(c),
                None => Ended::Signal(st.signal().unwrap_or(0)),
            }),
            Ok(None) => None,
            // Reaped elsewhere or gone: count it as killed.
            Err(_) => Some(Ended::Signal(libc::SIGKILL)),
        }
    }

    /// SIGTERM to the run's process group, once.
    pub fn terminate(&mut self) {
        if self.terminated.is_none() {
            signal_group(self.child.id(), libc::SIGTERM);
            self.terminated = Some(Instant::now());
        }
    }

    /// SIGKILL once `grace` has passed since SIGTERM.
    pub fn kill_after(&mut self, grace: Duration) {
        if self.terminated.is_some_and(|t| t.elapsed() >= grace) {
            signal_group(self.child.id(), libc::SIGKILL);
        }
    }
}

/// How the agent starts its children: its own binary, its global flags, the
/// directory of the config it was given.
pub struct Launch {
    pub exe: std::path::PathBuf,
    /// `--config <in force>`, then `--repo R` when the agent was given one.
    pub prefix: Vec<String>,
    /// The original config's directory (see `config::CONFIG_BASE_ENV`).
    pub base: std::path::PathBuf,
}

impl Launch {
    /// The binary, in its own process group, ended with the agent, with no
    /// stdin and none of the agent's service variables.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env(super::super::config::CONFIG_BASE_ENV, &self.base)
            .env_remove(JOB_ENV)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null());
        c.process_group(0);
        die_with_parent(&mut c, libc::SIGTERM);
        c
    }

    /// The global flags, without `--repo` when the command names its own.
    pub fn prefix(&self, own_repo: bool) -> Vec<String> {
        let mut p = Vec::new();
        let mut it = self.prefix.iter();
        while let Some(a) = it.next() {
            if own_repo && a == "--repo" {
                it.next();
                continue;
            }
            p.push(a.clone());
        }
        p
    }
}

/// Send `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; the
    // group is our child's own (process_group(0)).
    unsafe { libc::kill(-(pid as libc::pid_t), sig) };
}

/// The child gets `sig` when the agent's thread that started it ends (the
/// agent starts every child from its main thread, so: when the agent dies),
/// and exits at once if the agent is already gone.
pub fn die_with_parent(c: &mut Command, sig: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, getppid, _exit).
    unsafe {
        c.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            Ok(())
        });
    }
}
