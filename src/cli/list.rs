//! `lifeboat list`: the service's snapshots, oldest first; replication bases
//! only when asked for.

use lifeboat::Result;

use super::Ctx;
use super::filter::FilterArgs;
use super::output::{bytes, log_requests, print_json, when_at};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Lists the service's snapshots, oldest first. The bases `lifeboat replicate` writes are internal
restore points of their database's stream and are hidden; --all or --kind base shows them.")]
pub struct Args {
    /// Also list replication bases.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let every = repo.snapshots()?;
    let bases = every
        .iter()
        .filter(|s| s.manifest.kind == lifeboat::repo::manifest::SnapshotKind::Base)
        .count();
    let filter = args.filter.filter();
    let snaps: Vec<_> = every
        .into_iter()
        .filter(|s| filter.matches(&s.manifest))
        // Bases are hidden unless asked for, by --all or by their kind.
        .filter(|s| {
            filter.kind.is_some() || args.all || s.manifest.kind != lifeboat::repo::manifest::SnapshotKind::Base
        })
        .collect();
    if ctx.json {
        let rows: Vec<_> = snaps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "time": s.manifest.time, "kind": s.manifest.kind, "host": s.manifest.host,
                    "tags": s.manifest.tags,
                    "sources": s.manifest.sources.iter().map(|x| x.name()).collect::<Vec<_>>(),
                    "logical_bytes": s.manifest.summary.logical_bytes,
                    "added_stored_bytes": s.manifest.summary.added_stored_bytes,
                    "incomplete": !s.manifest.incomplete.is_empty(),
                })
            })
            .collect();
        log_requests(&repo);
        print_json(&rows);
        return Ok(0);
    }
    log_requests(&repo);
    let hint = if bases > 0 && filter.kind.is_none() && !args.all {
        format!(" ({bases} replication bases hidden; --all shows them)")
    } else {
        String::new()
    };
    if snaps.is_empty() {
        eprintln!("no snapshots in {}{hint}", repo.location());
        return Ok(0);
    }
    println!(
        "{:<8}  {:<20}  {:<7}  {:<16}  {:>10}  sources",
        "id", "time", "kind", "host", "added"
    );
    for s in &snaps {
        let m = &s.manifest;
        let names: Vec<&str> = m.sources.iter().map(|x| x.name()).collect();
        let mark = if m.incomplete.is_empty() { "" } else { "  INCOMPLETE" };
        println!(
            "{:<8}  {:<20}  {:<7}  {:<16}  {:>10}  {}{mark}",
            s.id.short(),
            when_at(m.time),
            m.kind,
            m.host,
            bytes(m.summary.added_stored_bytes),
            names.join(", ")
        );
    }
    if !hint.is_empty() && !ctx.quiet {
        eprintln!("{} snapshots{hint}", snaps.len());
    }
    Ok(0)
}
