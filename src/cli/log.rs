//! `lifeboat log` and `lifeboat log prune`: the operations log
//! (src/oplog.rs), and the hook `main` runs after every command that changes
//! a repository, which appends that command's record.

use std::sync::Arc;
use std::time::Instant;

use lifeboat::oplog::{self, Operation, Outcome};
use lifeboat::repo::RepoLocation;
use lifeboat::storage::metered::Meter;
use lifeboat::{Error, Result};

use super::Ctx;
use super::output::{bytes, keyed_records, log_requests, print_json, print_json_with_requests, when};

#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Every command that changes a repository (init, snapshot, replicate, log prune, …), and every
restore, verify and reset --confirm, leaves one record in it when it ends, whether it succeeded
or failed: time, host, user, command and arguments (secrets redacted), result and exit code,
bytes stored, objects deleted and requests sent. Listing and showing leave none.

TIME is an RFC 3339 time (2026-11-22T10:15:00Z), a date (2026-11-22, midnight UTC), or a
duration ago: 90s, 30m, 24h, 7d, 2w, 1d12h.

Examples:
  lifeboat log                                 # every record, oldest first
  lifeboat log --since 24h                     # what ran in the last day
  lifeboat log --json --since 2026-11-01 | jq 'map(select(.result == \"error\"))'
  lifeboat log prune --before 90d --dry-run    # which records are older than 90 days
  lifeboat log prune --before 90d              # delete them"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<LogCommand>,
    /// Only records at or after TIME (RFC 3339, a date, or a duration ago such as 24h or 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum LogCommand {
    /// Delete the records older than --before (the log only grows otherwise).
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Decided from the records' names alone: a record that cannot be read is deleted like any other.
`log prune` itself then appends its own record (not with --dry-run).

Examples:
  lifeboat log prune --before 90d --dry-run
  lifeboat log prune --before 2026-01-01")]
struct PruneArgs {
    /// Delete records older than TIME (RFC 3339, a date, or a duration ago such as 90d).
    #[arg(long, value_name = "TIME")]
    before: String,
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    /// `log prune` changes the repository; listing and a dry run do not.
    pub fn changes_repository(&self) -> bool {
        matches!(&self.command, Some(LogCommand::Prune(p)) if !p.dry_run)
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    match args.command {
        Some(LogCommand::Prune(p)) => prune(ctx, p),
        None => list(ctx, args.since.as_deref()),
    }
}

fn list(ctx: &Ctx, since: Option<&str>) -> Result<i32> {
    let since = since
        .map(|s| oplog::parse_when("--since", s, jiff::Timestamp::now()))
        .transpose()?;
    let repo = ctx.open_repo()?;
    let records = oplog::list(&repo, since)?;
    log_requests(&repo);
    if ctx.json {
        print_json(&keyed_records(&records));
        return Ok(0);
    }
    if records.is_empty() {
        eprintln!("no operations logged in {}", repo.location());
        return Ok(0);
    }
    println!(
        "{:<20}  {:<16}  {:<10}  {:<11}  {:<8}  {:>7}  {:>10}  {:>7}  {:>8}",
        "time", "host", "user", "command", "result", "took", "written", "deleted", "requests"
    );
    for (_, r) in &records {
        let result = match r.result {
            Outcome::Ok => "ok".to_string(),
            Outcome::Error => format!("error {}", r.exit_code),
        };
        let line = format!(
            "{:<20}  {:<16}  {:<10}  {:<11}  {:<8}  {:>7}  {:>10}  {:>7}  {:>8}",
            when(&r.time),
            r.host,
            r.user,
            // A run of an agent job shows the job's name beside the command.
            match &r.job {
                Some(job) => format!("{} [{job}]", r.command),
                None => r.command.clone(),
            },
            result,
            took(r.duration_ms),
            bytes(r.bytes_written),
            r.objects_deleted,
            r.requests.total()
        );
        match &r.error {
            Some(e) => println!("{line}  {e}"),
            None => println!("{line}"),
        }
    }
    Ok(0)
}

fn took(ms: u64) -> String {
    match ms {
        ..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn prune(ctx: &Ctx, args: PruneArgs) -> Result<i32> {
    let before = oplog::parse_when("--before", &args.before, jiff::Timestamp::now())?;
    let repo = ctx.open_repo()?;
    let keys = oplog::prune(&repo, before, args.dry_run)?;
    if ctx.json {
        print_json_with_requests(
            &serde_json::json!({
                "before": before.to_string(),
                "dry_run": args.dry_run,
                "count": keys.len(),
                "records": keys,
            }),
            &repo,
        );
        return Ok(0);
    }
    log_requests(&repo);
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {} operations log record{} older than {}",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" },
        when(&before.to_string())
    );
    if args.dry_run {
        for k in &keys {
            println!("  {k}");
        }
    }
    Ok(0)
}

/// What the hook needs to know about the command before it runs.
pub struct Pending {
    operation: Operation,
    /// `replicate --replica` values: the repositories it changes.
    replicas: Vec<String>,
}

impl Pending {
    /// The command's operation, counting into `meter` (the one every
    /// location the command resolves carries).
    pub fn new(matches: &clap::ArgMatches, started: Instant, meter: Arc<Meter>) -> Pending {
        let (name, sub) = matches.subcommand().unwrap_or(("", matches));
        let command = match sub.subcommand_name() {
            Some(nested) => format!("{name} {nested}"),
            None => name.to_string(),
        };
        // `try_`: an argument id that changed is no replicas, not a panic.
        let replicas = match name {
            "replicate" => sub
                .try_get_many::<String>("replicas")
                .ok()
                .flatten()
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut operation = Operation::start(command)
            .started_at(started)
            .meter(meter)
            .args(std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()))
            .user(oplog::current_user(std::env::var("USER").ok()));
        if let Some(job) = super::agent::job_of_this_run() {
            operation = operation.job(job);
        }
        Pending { operation, replicas }
    }
}

/// The repositories the command changed: `replicate`'s replicas (flags, else
/// `[replicate] replicas`, else the repository), every other command's one
/// repository.
fn targets(ctx: &Ctx, command: &str, replicas: &[String]) -> Result<Vec<RepoLocation>> {
    if command == "replicate" {
        let configured = ctx.config()?.map(|c| c.replicate.replicas.clone()).unwrap_or_default();
        return ctx.replica_locations(replicas, &configured);
    }
    Ok(vec![ctx.repo_location()?])
}

/// Append the command's record to each repository it changed; the library's
/// [`Operation::finish`] says when it is skipped.
pub fn append_record(ctx: &Ctx, op: Pending, exit_code: i32, error: Option<&Error>) {
    let Pending { operation, replicas } = op;
    let command = operation.command().to_string();
    operation.finish(|| targets(ctx, &command, &replicas), exit_code, error);
}
