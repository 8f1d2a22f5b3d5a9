//! The `lifeboat` command line: argument parsing, shared context, dispatch.
//! One file per subcommand; `exit.rs` is the only place errors become exit
//! codes and messages.

mod agent;
mod agent_socket;
mod completions;
mod config;
mod demo;
mod drill;
mod exit;
mod filter;
mod forget;
pub mod hooks;
mod init;
mod list;
mod log;
mod man;
mod output;
mod progress;
mod prune;
mod pruning;
mod repair;
mod replicate;
mod reset;
mod restore;
mod show;
mod snapshot;
mod stats;
mod status;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use config::Config;
use lifeboat::fsutil::HostDirs;
use lifeboat::repo::{LockedRepository, Opened, RepoLocation, Repository};
use lifeboat::storage::StorageOptions;
use lifeboat::storage::metered::Meter;
use lifeboat::{Error, Result};

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 64 usage, 65 bad data (corrupt backup, failed check), 66 missing input,
73 would clobber (use --force), 74 I/O error, 75 busy (repository or database in use; retry;
also a hook that failed or timed out),
78 configuration or version problem.

Quick start:
  lifeboat snapshot /var/lib/app/state.db /etc/app     # back up a live database and a directory
  lifeboat list                                         # what is in the repository
  lifeboat restore latest --to /tmp/check               # restore somewhere safe to look at it
  lifeboat verify --read-data                           # prove every byte is still readable";

#[derive(Parser, Debug)]
#[command(name = "lifeboat", version, about = "Backups of a self-hosted service's state: live SQLite databases, directories, files.", after_help = AFTER_HELP)]
pub struct Cli {
    /// Repository path. Default: the config's [repository] url, else
    /// $XDG_STATE_HOME/lifeboat/repo (~/.local/state/lifeboat/repo), created on first use.
    #[arg(long, global = true, env = "LIFEBOAT_REPO", value_name = "URL_OR_PATH")]
    repo: Option<String>,
    /// Configuration file. Default: $LIFEBOAT_CONFIG, ./lifeboat.toml,
    /// $XDG_CONFIG_HOME/lifeboat/lifeboat.toml, /etc/lifeboat/lifeboat.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print results (and errors) as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More log output (-v: events, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository.
    Init(init::Args),
    /// Capture databases, directories and files into the repository.
    Snapshot(snapshot::Args),
    /// List snapshots, oldest first.
    List(list::Args),
    /// Show a snapshot's manifest.
    Show(show::Args),
    /// Restore a snapshot, or a replicated database as of any commit, safely.
    Restore(restore::Args),
    /// Ship every commit of live databases to the repository (WAL replication).
    Replicate(replicate::Args),
    /// Move a service's SQLite databases (and sidecars) out of its data dir.
    Reset(reset::Args),
    /// Check the repository; --read-data also reads every byte.
    Verify(verify::Args),
    /// Remove snapshots and WAL history by retention rules (restic's), --dry-run shows why.
    Forget(forget::Args),
    /// Delete data no snapshot references (two phases, never blocks backups).
    Prune(prune::Args),
    /// Rebuild a damaged index from the packs, or set damaged snapshots aside.
    Repair(repair::Args),
    /// Operations log: every command that changed the repository, and its result.
    Log(log::Args),
    /// Repository size, dedup and compression, unique bytes per snapshot, WAL history.
    Stats(stats::Args),
    /// Show the whole cycle on a scratch service: snapshot under load, disaster, restore.
    Demo(demo::Args),
    /// How current the backups are: each source's newest point, replication, last drill, jobs.
    Status(status::Args),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(completions::Args),
    /// Print or write the manual pages.
    Man(man::Args),
    /// Run everything on schedule: replication, snapshots, retention, drills (a service).
    Agent(agent::Args),
    /// Prove a backup restores: restore into scratch, check it, start the service, smoke checks.
    Drill(drill::Args),
}

/// What every subcommand gets: global flags and lazily loaded config.
pub struct Ctx {
    pub json: bool,
    pub quiet: bool,
    repo_flag: Option<String>,
    config_flag: Option<PathBuf>,
    config: std::cell::OnceCell<Option<Config>>,
    dirs: HostDirs,
    /// What every storage the command opens counts into, for its
    /// operations log record.
    meter: Arc<Meter>,
}

impl Ctx {
    /// The configuration, if one was named or found.
    pub fn config(&self) -> Result<Option<&Config>> {
        if self.config.get().is_none() {
            let c = Config::discover(self.config_flag.as_deref())?;
            if let Some(c) = &c {
                agent::check_config(c)?;
            }
            let _ = self.config.set(c);
        }
        Ok(self.config.get().expect("set above").as_ref())
    }

    /// `--repo`, else the config's `[repository] url`, else the default.
    /// Storage settings (`[repository]`, `[repository.s3]`) come from the
    /// config whichever named the location.
    pub fn repo_location(&self) -> Result<RepoLocation> {
        let section = self.config()?.and_then(|c| c.repository.clone());
        let options = self.storage_options()?;
        if let Some(r) = &self.repo_flag {
            return RepoLocation::parse(r, &options);
        }
        if let Some(url) = section.as_ref().and_then(|r| r.url.as_deref()) {
            return RepoLocation::parse(url, &options);
        }
        Ok(RepoLocation::default_location(&self.dirs, &options))
    }

    /// Where `replicate` ships to: `--replica` flags, else `[replicate]
    /// replicas`, else the repository.
    pub fn replica_locations(&self, flags: &[String], configured: &[String]) -> Result<Vec<RepoLocation>> {
        let options = self.storage_options()?;
        let named = if flags.is_empty() { configured } else { flags };
        if named.is_empty() {
            return Ok(vec![self.repo_location()?]);
        }
        named.iter().map(|n| RepoLocation::parse(n, &options)).collect()
    }

    /// `[repository]`'s storage settings with the environment's applied:
    /// the library reads no environment, so whatever the binary honours is
    /// read here. `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`
    /// and `AWS_DEFAULT_REGION` come before the config's (a URL's own
    /// `?endpoint=`/`?region=` before both), `LIFEBOAT_RETRY_SECONDS`
    /// overrides `retry_seconds`, and S3 working directories go under
    /// `$XDG_CACHE_HOME`.
    pub fn storage_options(&self) -> Result<StorageOptions> {
        let section = self.config()?.and_then(|c| c.repository.as_ref());
        let mut options = section.map(|r| r.storage_options()).unwrap_or_default();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(secs) = env("LIFEBOAT_RETRY_SECONDS").and_then(|v| v.parse().ok()) {
            options.retry_seconds = Some(secs);
        }
        let s3 = &mut options.s3;
        s3.endpoint = env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or(s3.endpoint.take());
        s3.region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or(s3.region.take());
        options.cache_dir = Some(self.dirs.cache.clone());
        options.meter = Some(self.meter.clone());
        Ok(options)
    }

    /// The per-user directories, as the environment names them.
    pub fn dirs(&self) -> &HostDirs {
        &self.dirs
    }

    /// `--repo` as given on the command line, if it was.
    pub fn repo_flag(&self) -> Option<&str> {
        self.repo_flag.as_deref()
    }

    /// For commands that read manifests only (list, show), or load the
    /// index themselves after a listing (stats, verify, prune).
    pub fn open_repo(&self) -> Result<Repository<Opened>> {
        Repository::open(&self.repo_location()?)
    }

    /// For commands that write: locked, and the default repository is
    /// created on first use.
    pub fn open_repo_locked(&self, command: &str) -> Result<LockedRepository> {
        Repository::open_or_init_default(&self.repo_location()?)?.locked(command)
    }

    pub fn progress(&self) -> progress::CliProgress {
        progress::CliProgress::new(self.quiet)
    }
}

pub fn main() -> i32 {
    let started = std::time::Instant::now();
    // The matches as well as the parsed `Cli`: the operations log names the
    // subcommand as typed.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // The crash tests' kill switch (src/crashpoint.rs); never set otherwise.
    if let Some(n) = std::env::var("LIFEBOAT_CRASH_AT").ok().and_then(|v| v.parse().ok()) {
        lifeboat::crashpoint::arm(n);
    }
    if let Some(n) = std::env::var("LIFEBOAT_FAIL_AT").ok().and_then(|v| v.parse().ok()) {
        lifeboat::crashpoint::arm_failure(n);
    }
    // The concurrency tests' time scale for the prune protocol; never set
    // otherwise.
    if let Some(limit) = std::env::var("LIFEBOAT_WRITER_VIEW_LIMIT")
        .ok()
        .and_then(|v| lifeboat::duration::parse_duration("LIFEBOAT_WRITER_VIEW_LIMIT", &v).ok())
    {
        lifeboat::repo::scale_writer_view_limit(limit);
    }
    // A long-running replicator's log needs times; one-shot commands' do not.
    init_logging(
        cli.verbose,
        cli.quiet,
        matches!(cli.command, Command::Replicate(_)) || agent::runs_as_service(&cli.command),
    );
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
        repo_flag: cli.repo,
        config_flag: cli.config,
        config: Default::default(),
        dirs: HostDirs::from_env(),
        meter: Arc::default(),
    };
    // A config named with --config is always read, so a broken one is
    // reported even by commands that would not otherwise need it.
    if ctx.config_flag.is_some()
        && let Err(e) = ctx.config()
    {
        return exit::report(&e, ctx.json);
    }
    hooks::set_command(matches.subcommand_name().unwrap_or_default());
    // A run the agent started is recorded whatever it is: the job's
    // history is the log's (src/cli/agent/jobs.rs).
    let recorded = changes_repository(&cli.command) || agent::job_of_this_run().is_some();
    let oplog = recorded.then(|| log::Pending::new(&matches, started, ctx.meter.clone()));
    let result = match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Show(a) => show::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Replicate(a) => replicate::run(&ctx, a),
        Command::Reset(a) => reset::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Repair(a) => repair::run(&ctx, a),
        Command::Log(a) => log::run(&ctx, a),
        Command::Stats(a) => stats::run(&ctx, a),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Completions(a) => completions::run(&ctx, a),
        Command::Man(a) => man::run(&ctx, a),
        Command::Agent(a) => agent::run(&ctx, a),
        Command::Drill(a) => drill::run(&ctx, a),
    };
    let code = match &result {
        Ok(code) => *code,
        Err(e) => exit::report(e, ctx.json),
    };
    if code != 0 {
        // Told to `[[hook]]`s on `any_error`; the code stays the command's.
        let info = hooks::EventInfo {
            exit_code: Some(code),
            error: Some(match &result {
                Err(e) => e.to_string(),
                // Why it did not exit 0, when it said so on a line.
                Ok(_) => exit::line_reported().map(str::to_string).unwrap_or_else(|| {
                    let name = matches.subcommand_name().unwrap_or_default();
                    format!("lifeboat {name} exited {code}")
                }),
            }),
            ..Default::default()
        };
        let _ = hooks::fire(&ctx, hooks::HookEvent::AnyError, &info);
    }
    if let Some(op) = oplog {
        agent::before_record();
        log::append_record(&ctx, op, code, result.as_ref().err());
    }
    code
}

/// Whether a run of `command` appends a record to the operations log when it
/// ends, succeeded or failed (docs/FORMAT.md, "Operations log"): every run
/// that may change the repository, and the runs an operator must be able to
/// account for afterwards: restores, verifies and resets.
fn changes_repository(command: &Command) -> bool {
    match command {
        Command::Init(_) | Command::Snapshot(_) | Command::Replicate(_) => true,
        Command::Restore(_) | Command::Verify(_) => true,
        Command::Reset(a) => a.confirmed(),
        Command::Forget(a) => !a.dry_run,
        Command::Prune(a) => !a.dry_run,
        Command::Repair(a) => a.changes_repository(),
        Command::Log(a) => a.changes_repository(),
        Command::Drill(a) => a.changes_repository(),
        _ => false,
    }
}

fn init_logging(verbose: u8, quiet: bool, with_time: bool) {
    use tracing::level_filters::LevelFilter;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_max_level(level)
        .with_target(false);
    let _ = if with_time {
        builder.try_init()
    } else {
        builder.without_time().try_init()
    };
}

/// `Err` for a source path that does not exist, naming it.
pub fn require_exists(p: &std::path::Path) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Err(Error::no_input(p.display(), "does not exist").fix("check the path"));
    }
    Ok(())
}

/// A setting given by a flag, else by the config file, read with one
/// parser: a bad flag is a usage error (64), a bad line of the config file a
/// configuration error (78), each naming where the value came from.
pub fn flag_or_config<T>(
    flag: (&str, Option<&str>),
    config: (&str, Option<&str>),
    parse: impl Fn(&str, &str) -> Result<T>,
) -> Result<Option<T>> {
    match (flag, config) {
        ((name, Some(v)), _) => flag_value(name, v, parse).map(Some),
        (_, (key, Some(v))) => parse(key, v).map(Some),
        _ => Ok(None),
    }
}

/// A flag's value read with a parser shared with the config file: its
/// error becomes a usage error (64).
pub fn flag_value<T>(name: &str, value: &str, parse: impl Fn(&str, &str) -> Result<T>) -> Result<T> {
    parse(name, value).map_err(|e| {
        let problem = if e.subject.is_empty() {
            e.problem
        } else {
            format!("{} {}", e.subject, e.problem)
        };
        Error::usage(problem).fix(e.fix)
    })
}
