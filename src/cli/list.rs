//! `lifeboat list`: the service's snapshots, oldest first; replication bases
//! only when asked for.

use lifeboat::Result;

use super::Ctx;
use super::output::{bytes, log_requests, print_json, when_at};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Lists the service's snapshots, oldest first. The bases `lifeboat replicate` writes are internal
restore points of their database's stream and are hidden; --all or --kind base shows them.")]
pub struct Args {
    /// Also list replication bases.
    #[arg(long)]
    all: bool,
    /// Only snapshots of this kind (full, partial, base).
    #[arg(long, value_name = "KIND")]
    kind: Option<lifeboat::repo::manifest::SnapshotKind>,
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long, value_name = "T")]
    tag: Vec<String>,
    /// Only snapshots taken on this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only snapshots holding the source of this name.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let every = repo.snapshots()?;
    let bases = every
        .iter()
        .filter(|s| s.manifest.kind == lifeboat::repo::manifest::SnapshotKind::Base)
        .count();
    let snaps: Vec<_> = every
        .into_iter()
        .filter(|s| match &args.kind {
            Some(k) => s.manifest.kind == *k,
            None => args.all || s.manifest.kind != lifeboat::repo::manifest::SnapshotKind::Base,
        })
        .filter(|s| args.tag.is_empty() || s.manifest.tags.iter().any(|t| args.tag.contains(t)))
        .filter(|s| args.host.as_ref().is_none_or(|h| &s.manifest.host == h))
        .filter(|s| {
            args.source
                .as_ref()
                .is_none_or(|n| s.manifest.sources.iter().any(|x| x.name() == n))
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
    let hint = if bases > 0 && args.kind.is_none() && !args.all {
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
