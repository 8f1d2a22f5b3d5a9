//! What `prune` and `forget --prune` share: the prune flags, the options
//! built from them and `[retention]`, the writer lock prune waits for, and
//! the report. CLI command files do not call each other; both use this.

use std::time::Duration;

use lifeboat::prune::{self, PruneOptions, PruneReport};
use lifeboat::{Error, Result};

use super::output::bytes;
use super::{Ctx, flag_or_config};

/// The prune flags. `forget` flattens them too, and makes each require its
/// `--prune` (see `forget::Args`).
#[derive(clap::Args, Debug, Default)]
pub struct PruneFlags {
    /// Delete marked data only once its mark is this old. Shorter than 30m is safe only while
    /// no other snapshot or replicator writes to the repository. Default: config's
    /// [retention] grace, else 1h.
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Repack a pack once at least this percentage of it is unused (default: config, else 50).
    #[arg(long, value_name = "PERCENT")]
    pub repack_unused: Option<f64>,
}

/// This host's writer lock for prune's changes: a snapshot or base running
/// here is waited for (they take seconds), up to 15 minutes.
pub fn lock_for(
    command: &'static str,
) -> impl FnMut(&lifeboat::repo::Repository) -> Result<Box<dyn lifeboat::storage::LockGuard>> {
    move |repo| repo.lock_waiting(command, Duration::from_secs(15 * 60))
}

/// Prune settings from flags, else the config's `[retention]`, else defaults.
pub fn options(ctx: &Ctx, flags: &PruneFlags, dry_run: bool) -> Result<PruneOptions> {
    let section = ctx.config()?.map(|c| c.retention.clone()).unwrap_or_default();
    let grace = flag_or_config(
        ("--grace", flags.grace.as_deref()),
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
    let pct = flags.repack_unused.or(section.repack_unused).unwrap_or(50.0);
    if !(0.0..=100.0).contains(&pct) || pct == 0.0 {
        return Err(
            Error::usage(format!("--repack-unused {pct} is not a percentage above 0"))
                .fix("give a number from 1 to 100 (100 repacks only packs with nothing referenced)"),
        );
    }
    Ok(PruneOptions {
        grace,
        repack_unused: pct / 100.0,
        dry_run,
    })
}

fn parse_grace(what: &str, s: &str) -> Result<Duration> {
    if s.trim() == "0" || s.trim() == "0s" {
        return Ok(Duration::ZERO);
    }
    lifeboat::duration::parse_duration(what, s).map_err(|e| e.fix("write it like 1h, 30m or 0s"))
}

/// The prune report, on stderr, as `prune` and `forget --prune` print it.
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
