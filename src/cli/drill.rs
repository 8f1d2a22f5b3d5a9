//! `lifeboat drill` and `lifeboat drill list`: prove the newest backup (or
//! `ID`, or `--at`) restores, and show the drills recorded, over
//! [`lifeboat::drill`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use lifeboat::drill::{self, DrillOptions, DrillRecord, DrillReport, Outcome};
use lifeboat::repo::manifest::SnapshotKind;
use lifeboat::restore::Selection;
use lifeboat::storage::location::Backend;
use lifeboat::{Error, Result, oplog};

use super::Ctx;
use super::output::{keyed_records, log_requests, print_json, print_json_with_requests, when, when_at};

#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
A drill restores the newest point (each database at its newest shipped commit, as `restore`
does), or ID, or the point at --at, into a scratch directory: each source at DIR + its
original absolute path, as `restore --to DIR`. Then, in order:
  1. PRAGMA integrity_check on every restored database;
  2. every restored file against the manifest (size and BLAKE3);
  3. [drill] start, run with the scratch directory in $LIFEBOAT_DRILL_DIR (in its own process
     group; output in DIR/.lifeboat-drill/service.log);
  4. each [[drill.check]] in order: `sql` (first column of the first row compared with
     `expect`), `http` (GET, `expect_status`, default 200; refused connections and 502-504 are
     retried until the check's timeout while the service starts), `command` (sh -c, exit 0);
  5. [drill] stop, or SIGTERM to the service's process group, then SIGKILL: always, also when
     a check failed or the drill was interrupted.
The scratch copy is then removed unless --keep (copies that drills killed with SIGKILL left
under the default parent are removed by the next drill; kept ones never). The drill is recorded in the repository (seed
003's drill log: date, host, sources and their points, each check pass/fail, duration, notes);
`lifeboat drill list` shows the records, newest first.

Exit codes: 0 every check passed; 65 a check failed (the record is written all the same);
130/143 interrupted by SIGINT/SIGTERM (service stopped, scratch removed, record written as
interrupted; a restore under way finishes first); otherwise as for `restore`.

Example lifeboat.toml:
  [drill]
  start = \"exec ./bin/app --data $LIFEBOAT_DRILL_DIR/var/lib/app --listen 127.0.0.1:18080\"
  timeout = \"30s\"
  [[drill.check]]
  name = \"users survived\"
  sql = \"SELECT count(*) > 0 FROM users\"
  database = \"app.db\"
  expect = 1
  [[drill.check]]
  http = \"http://127.0.0.1:18080/up\"
  expect_status = 200
  [[drill.check]]
  command = \"test -s $LIFEBOAT_DRILL_DIR/etc/app/config.toml\"

Examples:
  lifeboat drill                          # the newest point, checks from lifeboat.toml
  lifeboat drill --keep --scratch /srv/drill   # look at the copy afterwards
  lifeboat drill --at 2026-11-22T10:15:00Z
  lifeboat drill list                     # every drill, newest first
  lifeboat --json drill | jq '.checks[] | select(.passed | not)'"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<DrillCommand>,
    /// Snapshot id (or unique prefix) to drill; default: the newest point.
    #[arg(value_name = "ID")]
    id: Option<String>,
    /// The service as of TIME (RFC 3339, a date, or a duration ago such as 1d).
    #[arg(long, value_name = "TIME", conflicts_with = "id")]
    at: Option<String>,
    /// Restore into DIR (created, or empty) instead of a new directory under
    /// $XDG_CACHE_HOME/lifeboat/drill/ (or [drill] scratch). Never inside a source.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Keep the scratch copy afterwards (the output says where).
    #[arg(long)]
    keep: bool,
    /// A note for the drill's record (repeatable).
    #[arg(long, value_name = "TEXT")]
    note: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
enum DrillCommand {
    /// The drills recorded in the repository, newest first.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Each line: when, host, result, checks passed of all, how long, the point drilled, the record's
key; the failed checks follow. --json prints every record whole.

Examples:
  lifeboat drill list --last 5
  lifeboat drill list --since 30d --json")]
struct ListArgs {
    /// Only drills at or after TIME (RFC 3339, a date, or a duration ago such as 30d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only the N newest.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
}

impl Args {
    /// A drill writes its record (and restores); listing changes nothing.
    pub fn changes_repository(&self) -> bool {
        self.command.is_none()
    }
}

/// The signal that interrupted the drill, 0 while none did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    match args.command {
        Some(DrillCommand::List(l)) => list(ctx, l),
        None => run_drill(ctx, args),
    }
}

fn run_drill(ctx: &Ctx, args: Args) -> Result<i32> {
    let config = ctx.config()?;
    let (checks, service, scratch_parent, max_schema_version) = match config {
        Some(c) => (
            c.drill.checks(&c.path)?,
            c.drill.service(&c.path)?,
            c.drill.scratch.clone(),
            c.restore.max_schema_version,
        ),
        None => (Vec::new(), None, None, None),
    };
    let at = args
        .at
        .as_deref()
        .map(|t| oplog::parse_when("--at", t, jiff::Timestamp::now()))
        .transpose()?;
    let location = ctx.repo_location()?;
    let opened = ctx.open_repo()?;
    let (repo, selection) = match &args.id {
        Some(id) => {
            let (repo, snap) = opened.indexed_and_find(id)?;
            let selection = Selection::of_snapshot(&snap, &[])?;
            (repo, selection)
        }
        None => {
            let repo = opened.indexed()?;
            let service_names: Option<Vec<String>> =
                config.map(|c| c.sources(SnapshotKind::Full).into_iter().map(|s| s.name).collect());
            let selection = Selection::newest_of(&repo, &[], at, service_names.as_deref())?;
            (repo, selection)
        }
    };
    let point = match (&args.id, at) {
        (Some(id), _) => id.clone(),
        (None, Some(t)) => format!("at {t}"),
        (None, None) => "latest".to_string(),
    };
    let scratch = match (args.scratch.clone(), scratch_parent) {
        (Some(dir), _) => dir,
        (None, parent) => {
            // Drills killed before they could clean up left their copies
            // where this one goes: those go first.
            let parent = parent.unwrap_or_else(|| drill::default_scratch_parent(&ctx.dirs().cache));
            drill::sweep_stale(&parent);
            drill::default_scratch_in(&parent)
        }
    };
    let mut protected: Vec<PathBuf> = config
        .map(|c| c.sources(SnapshotKind::Full).into_iter().map(|s| s.path).collect())
        .unwrap_or_default();
    if let Backend::Local(dir) = &location.backend {
        protected.push(dir.clone());
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    watch_signals(interrupt.clone())?;
    let opts = DrillOptions {
        scratch,
        keep: args.keep,
        checks,
        service,
        point,
        protected,
        max_schema_version,
        notes: args.note.clone(),
        user: oplog::current_user(std::env::var("USER").ok()),
        interrupt,
    };
    let report = drill::run(&repo, &selection, &opts, &ctx.progress())?;
    if let Some(e) = &report.record_error {
        tracing::warn!(event = "drill.record_failed", "the drill's record was not written: {e}");
    }
    if ctx.json {
        print_json_with_requests(&report, &repo);
    } else {
        log_requests(&repo);
        if !ctx.quiet || report.record.result != Outcome::Pass {
            print_report(&report);
        }
    }
    if report.record.result == Outcome::Fail {
        let failed: Vec<&str> = report
            .record
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        let info = super::hooks::EventInfo {
            exit_code: Some(super::exit::DATAERR),
            error: Some(format!("drill failed: {}", failed.join(", "))),
            ..Default::default()
        };
        // The drill's outcome stands whatever the hooks do; a `fail`
        // policy cannot make a failed drill worse.
        let _ = super::hooks::fire(ctx, super::config::HookEvent::DrillFailure, &info);
    }
    Ok(match report.record.result {
        Outcome::Pass => 0,
        Outcome::Fail => super::exit::DATAERR,
        Outcome::Interrupted => 128 + SIGNAL.load(Ordering::SeqCst).max(libc::SIGINT),
    })
}

/// SIGINT and SIGTERM stop the drill at its next step (the service is
/// stopped and the scratch removed) rather than end the process at once.
fn watch_signals(flag: Arc<AtomicBool>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| Error::io(std::path::Path::new("signal handler"), e))?;
    std::thread::Builder::new()
        .name("drill-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if SIGNAL.swap(sig, Ordering::SeqCst) == 0 {
                    eprintln!(
                        "lifeboat: drill interrupted (signal {sig}); stopping the service and removing the scratch copy"
                    );
                }
                flag.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|e| Error::io(std::path::Path::new("signal thread"), e))?;
    Ok(())
}

/// Seed 003's drill log, filled in.
fn print_report(report: &DrillReport) {
    let r = &report.record;
    println!("Date: {}", when(&r.time));
    println!(
        "Environment: {} (user {}, lifeboat {})",
        r.host, r.user, r.lifeboat_version
    );
    println!("Backup source: {}", r.point);
    for s in &r.sources {
        let txid = s.txid.map(|t| format!(", txid {t}")).unwrap_or_default();
        println!(
            "  {} {} from {} ({}{txid}, as of {})",
            s.kind,
            s.name,
            &s.snapshot[..8.min(s.snapshot.len())],
            when_at(s.snapshot_time),
            when_at(s.as_of)
        );
    }
    let fate = if r.kept { "kept" } else { "removed" };
    println!("Restore target: {} ({fate})", r.scratch);
    println!("Validation:");
    for c in &r.checks {
        let verdict = if c.passed { "pass" } else { "FAIL" };
        println!("- {}: {verdict} ({})", c.name, c.detail);
    }
    if r.notes.is_empty() {
        println!("Notes: none");
    } else {
        println!("Notes: {}", r.notes.join("; "));
    }
    let (passed, all) = r.passed_of();
    let recorded = match (&report.key, &report.record_error) {
        (Some(k), _) => format!("recorded as {k}"),
        (None, Some(e)) => format!("NOT recorded: {e}"),
        (None, None) => "not recorded".into(),
    };
    println!(
        "Result: {} ({passed}/{all} checks passed in {:.1}s); {recorded}",
        outcome_word(r.result),
        r.duration_ms as f64 / 1000.0
    );
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Interrupted => "interrupted",
    }
}

fn list(ctx: &Ctx, args: ListArgs) -> Result<i32> {
    let since = args
        .since
        .as_deref()
        .map(|s| oplog::parse_when("--since", s, jiff::Timestamp::now()))
        .transpose()?;
    let repo = ctx.open_repo()?;
    let mut records: Vec<(String, DrillRecord)> = drill::list(&repo, since)?;
    log_requests(&repo);
    records.reverse();
    if let Some(n) = args.last {
        records.truncate(n);
    }
    if ctx.json {
        print_json(&keyed_records(&records));
        return Ok(0);
    }
    if records.is_empty() {
        eprintln!("no drills recorded in {}; run `lifeboat drill`", repo.location());
        return Ok(0);
    }
    println!(
        "{:<20}  {:<16}  {:<11}  {:>6}  {:>7}  {:<10}  record",
        "time", "host", "result", "checks", "took", "point"
    );
    for (key, r) in &records {
        let (passed, all) = r.passed_of();
        let point = if r.point.len() > 10 { &r.point[..10] } else { &r.point };
        println!(
            "{:<20}  {:<16}  {:<11}  {:>6}  {:>6.1}s  {:<10}  {key}",
            when(&r.time),
            r.host,
            outcome_word(r.result),
            format!("{passed}/{all}"),
            r.duration_ms as f64 / 1000.0,
            point
        );
        for c in r.checks.iter().filter(|c| !c.passed) {
            println!("    failed {}: {}", c.name, c.detail);
        }
    }
    Ok(0)
}
