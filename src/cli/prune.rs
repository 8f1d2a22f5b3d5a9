//! `lifeboat prune`: arguments, then [`lifeboat::prune::prune`] under the
//! writer lock and its report (both shared with `forget --prune`, in
//! `pruning.rs`).

use lifeboat::Result;
use lifeboat::prune;

use super::Ctx;
use super::output::print_json_with_requests;
use super::pruning::{PruneFlags, lock_for, options, print_report};

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
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Report what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let opts = options(ctx, &args.flags, args.dry_run)?;
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
