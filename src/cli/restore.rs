use std::path::PathBuf;

use lifeboat::Result;
use lifeboat::restore::{self, RestoreOptions, Target};

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --to or -o, every source goes back where it was captured.
Nothing is replaced until everything is restored into a staging area and verified (hashes,
PRAGMA integrity_check). A non-empty target is refused (exit 73) and a database another
process has open is refused (exit 75) unless --force; with --force the current files, with
their -wal/-shm/-journal/.lock sidecars, are moved into .lifeboat-pre-restore-<time>/ in the
target directory, never deleted.")]
pub struct Args {
    /// Snapshot id (or unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    id: String,
    /// Restore each source as DIR/<name>.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    to: Option<PathBuf>,
    /// Restore one database as a plain SQLite file (like `sqlite3 .backup`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Restore only the source with this name (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Move what is in the way aside instead of refusing.
    #[arg(long)]
    force: bool,
    /// Refuse databases whose schema version is newer (exit 78). Default: the config's
    /// [restore] max_schema_version.
    #[arg(long, value_name = "N")]
    max_schema_version: Option<i64>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let target = match (args.to, args.output) {
        (Some(d), _) => Target::Dir(d),
        (_, Some(f)) => Target::File(f),
        _ => Target::Original,
    };
    let max = match args.max_schema_version {
        Some(n) => Some(n),
        None => ctx.config()?.and_then(|c| c.restore.max_schema_version),
    };
    let repo = ctx.open_repo()?;
    let snap = repo.find_snapshot(&args.id)?;
    let progress = ctx.progress();
    let opts = RestoreOptions {
        target,
        only: args.only,
        force: args.force,
        max_schema_version: max,
    };
    let report = restore::restore(&repo, &snap, &opts, &progress)?;
    if ctx.json {
        print_json_with_requests(&report, &repo);
        return Ok(0);
    }
    log_requests(&repo);
    for r in &report.restored {
        println!("restored {} {} -> {} ({})", r.kind, r.name, r.path, bytes(r.bytes));
    }
    for d in &report.moved_aside {
        println!("previous files moved to {d}");
    }
    Ok(0)
}
