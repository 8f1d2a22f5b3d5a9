use lifeboat::Result;

use super::Ctx;
use super::output::{bytes, log_requests, print_json, when};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _: Args) -> Result<i32> {
    let repo = ctx.open_repo_unindexed()?;
    let snaps = repo.snapshots()?;
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
                })
            })
            .collect();
        log_requests(&repo);
        print_json(&rows);
        return Ok(0);
    }
    log_requests(&repo);
    if snaps.is_empty() {
        eprintln!("no snapshots in {}", repo.storage.location());
        return Ok(0);
    }
    println!(
        "{:<8}  {:<20}  {:<7}  {:<16}  {:>10}  sources",
        "id", "time", "kind", "host", "added"
    );
    for s in &snaps {
        let m = &s.manifest;
        let names: Vec<&str> = m.sources.iter().map(|x| x.name()).collect();
        println!(
            "{:<8}  {:<20}  {:<7}  {:<16}  {:>10}  {}",
            s.id.short(),
            when(&m.time),
            m.kind,
            m.host,
            bytes(m.summary.added_stored_bytes),
            names.join(", ")
        );
    }
    Ok(0)
}
