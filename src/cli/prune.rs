//! `lifeboat prune`: arguments, the writer lock taken for the changes, and
//! the report of [`lifeboat::prune::prune`].

use std::time::Duration;

use lifeboat::prune::{self, PruneOptions, PruneReport};
use lifeboat::{Error, Result};

use super::output::{bytes, print_json_with_requests};
use super::{Ctx, flag_or_config};

#[derive(clap::Args, Debug, Default)]
#[command(after_help = "\
Prune deletes data no snapshot references, in two phases, and never blocks snapshots or
replication (from this host or any other) for more than a moment:
  1. mark: unreferenced packs are recorded in a mark and leave the index, so no new backup
     reuses them; packs mostly unused are first repacked (their live data copied out);
  2. sweep: a later prune deletes marked packs once the mark is older than --grace and
     they are still unreferenced. A marked pack a snapshot turned out to need is restored
     to the index instead.
So space comes back on the first prune run after the grace period: schedule prune (or
`forget --prune`) daily, or run it twice with --grace 0s when nothing else writes.

Examples:
  lifeboat prune --dry-run             # what would be marked, repacked and deleted
  lifeboat forget --keep-daily 7 --keep-wal 24h --prune")]
pub struct Args {
    /// Delete marked data only once its mark is this old. Shorter than 30m is safe only while
    /// no other snapshot or replicator writes to the repository. Default: config's
    /// [retention] grace, else 1h.
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Repack a pack once at least this percentage of it is unused (default: config, else 50).
    #[arg(long, value_name = "PERCENT")]
    pub repack_unused: Option<f64>,
    /// Report what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let opts = options(ctx, &args)?;
    let repo = ctx.open_repo()?;
    let report = prune::prune(&repo, &opts, &ctx.progress(), &mut lock_for("prune"))?;
    if ctx.json {
        print_json_with_requests(&report, &repo);
    } else {
        super::output::log_requests(&repo);
        print_report(&report);
    }
    Ok(0)
}

/// This host's writer lock for prune's changes: a snapshot or base running
/// here is waited for (they take seconds), up to 15 minutes.
pub fn lock_for(
    command: &'static str,
) -> impl FnMut(&lifeboat::repo::Repository) -> Result<Box<dyn lifeboat::storage::LockGuard>> {
    move |repo| repo.lock_waiting(command, Duration::from_secs(15 * 60))
}

/// Prune settings from flags, else the config's `[retention]`, else defaults.
pub fn options(ctx: &Ctx, args: &Args) -> Result<PruneOptions> {
    let section = ctx.config()?.map(|c| c.retention.clone()).unwrap_or_default();
    let grace = flag_or_config(
        ("--grace", args.grace.as_deref()),
        ("[retention] grace", section.grace.as_deref()),
        parse_grace,
    )?
    .unwrap_or(prune::DEFAULT_GRACE);
    if grace < prune::safe_grace() {
        tracing::warn!(
            event = "prune.short_grace",
            "grace {}s is shorter than {}s: safe only while no other snapshot or replicator writes to this repository",
            grace.as_secs(),
            prune::safe_grace().as_secs()
        );
    }
    let pct = args.repack_unused.or(section.repack_unused).unwrap_or(50.0);
    if !(0.0..=100.0).contains(&pct) || pct == 0.0 {
        return Err(
            Error::usage(format!("--repack-unused {pct} is not a percentage above 0"))
                .fix("give a number from 1 to 100 (100 repacks only packs with nothing referenced)"),
        );
    }
    Ok(PruneOptions {
        grace,
        repack_unused: pct / 100.0,
        dry_run: args.dry_run,
    })
}

fn parse_grace(what: &str, s: &str) -> Result<Duration> {
    if s.trim() == "0" || s.trim() == "0s" {
        return Ok(Duration::ZERO);
    }
    lifeboat::duration::parse_duration(what, s).map_err(|e| e.fix("write it like 1h, 30m or 0s"))
}

pub fn print_report(r: &PruneReport) {
    let verb = if r.dry_run { "would " } else { "" };
    eprintln!(
        "{} snapshots reference {} blobs in {} packs",
        r.snapshots, r.referenced_blobs, r.packs
    );
    if r.missing_packs > 0 {
        eprintln!(
            "warning: {} indexed packs are missing from the store; run `lifeboat verify`",
            r.missing_packs
        );
    }
    if r.recovered_packs > 0 {
        eprintln!("{verb}index again {} marked packs a snapshot needs", r.recovered_packs);
    }
    eprintln!(
        "{verb}delete {} packs ({}) of {} marks past their grace period",
        r.deleted_packs,
        bytes(r.deleted_bytes),
        r.deleted_marks
    );
    if r.repacked_packs > 0 {
        eprintln!(
            "{verb}repack {} mostly unused packs ({} blobs copied, {} written)",
            r.repacked_packs,
            r.repacked_blobs,
            bytes(r.repack_written_bytes)
        );
    }
    eprintln!(
        "{verb}mark {} packs ({}) for deletion{}",
        r.marked_packs,
        bytes(r.marked_bytes),
        if r.unindexed_packs > 0 {
            format!(", {} of them never indexed", r.unindexed_packs)
        } else {
            String::new()
        }
    );
    if r.waiting_packs > 0 {
        eprintln!(
            "{} packs ({}) wait for the grace period of earlier marks",
            r.waiting_packs,
            bytes(r.waiting_bytes)
        );
    }
}
