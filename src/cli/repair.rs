//! `lifeboat repair index` and `repair snapshots`: arguments and output over
//! [`lifeboat::repair`].

use lifeboat::Result;
use lifeboat::repair;

use super::Ctx;
use super::output::print_json_with_requests;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
When verify, prune or forget report a damaged index file or manifest, repair puts the
repository back into a state every command accepts, losing nothing that still reads:
  repair index       index every pack no readable index file lists, from the pack's own
                     header, then set the damaged index files aside;
  repair snapshots   set aside manifests that cannot be read, or that a restore would
                     refuse as unsafe (their snapshots were not restorable anyway).
Set aside means copied under damaged/ in the repository, then removed from where
commands look. Both are safe to run again, and to interrupt; --dry-run shows the plan.

Examples:
  lifeboat verify                      # names the damage and the snapshots it costs
  lifeboat repair index --dry-run
  lifeboat repair index && lifeboat repair snapshots && lifeboat verify --read-data")]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Rebuild the index from the packs' headers; set damaged index files aside.
    Index(Flags),
    /// Set damaged or unsafe snapshot manifests aside.
    Snapshots(Flags),
}

#[derive(clap::Args, Debug)]
struct Flags {
    /// Report what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    /// Whether the run changes the repository (and so is logged).
    pub fn changes_repository(&self) -> bool {
        match &self.what {
            What::Index(f) | What::Snapshots(f) => !f.dry_run,
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let repo = ctx.open_repo_locked("repair")?;
    match args.what {
        What::Index(f) => {
            let report = repair::repair_index(&repo, f.dry_run)?;
            if ctx.json {
                print_json_with_requests(&report, &repo);
                return Ok(0);
            }
            let verb = if f.dry_run { "would " } else { "" };
            for (key, why) in &report.unreadable_packs {
                println!("UNREADABLE {key}: {why}");
            }
            println!(
                "{verb}index {} pack(s) from their headers; {verb}set aside {} damaged index file(s)",
                report.packs_reindexed.len(),
                report.index_files_set_aside.len()
            );
        }
        What::Snapshots(f) => {
            let report = repair::repair_snapshots(&repo, f.dry_run)?;
            if ctx.json {
                print_json_with_requests(&report, &repo);
                return Ok(0);
            }
            let verb = if f.dry_run { "would set aside" } else { "set aside" };
            for (id, why) in &report.set_aside {
                println!("{verb} snapshot {}: {why}", &id[..8]);
            }
            for (id, why) in &report.left_alone {
                println!("left alone snapshot {} (could not be read; try again): {why}", &id[..8]);
            }
            println!("{verb} {} snapshot(s)", report.set_aside.len());
        }
    }
    Ok(0)
}
