//! `lifeboat show`: one snapshot (an id, a unique prefix or `latest`), its
//! manifest summarized as text or whole with `--json`.

use lifeboat::Result;
use lifeboat::repo::manifest::{EntryKind, Source};

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests, when_at};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let s = repo.find_snapshot(&args.id)?;
    let m = &s.manifest;
    if ctx.json {
        print_json_with_requests(&serde_json::json!({"id": s.id, "manifest": m}), &repo);
        return Ok(0);
    }
    log_requests(&repo);
    println!("snapshot {}", s.id);
    println!(
        "time     {}  host {}  kind {}  lifeboat {}",
        when_at(m.time),
        m.host,
        m.kind,
        m.lifeboat_version
    );
    if !m.tags.is_empty() {
        println!("tags     {}", m.tags.join(", "));
    }
    println!(
        "size     {} in {} files; added {} new ({} stored)",
        bytes(m.summary.logical_bytes),
        m.summary.files,
        bytes(m.summary.added_raw_bytes),
        bytes(m.summary.added_stored_bytes)
    );
    for w in &m.summary.warnings {
        println!("warning  {w}");
    }
    if !m.incomplete.is_empty() {
        println!(
            "INCOMPLETE: changed while read, may mix old and new bytes: {}",
            m.incomplete.join(", ")
        );
    }
    for src in &m.sources {
        println!();
        match src {
            Source::Sqlite(d) => {
                println!("sqlite   {}  ({})", d.name, d.path);
                println!(
                    "         {} pages of {} B = {}, journal {}, sqlite {}",
                    d.page_count,
                    d.page_size,
                    bytes(d.size),
                    d.journal_mode,
                    d.sqlite_version
                );
                let sv = d.schema_version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                println!("         schema version {sv} ({})", d.schema_query);
                println!("         blake3 {}", d.blake3);
            }
            Source::Directory(d) => {
                println!("dir      {}  ({}) {} entries", d.name, d.path, d.entries.len());
                for e in &d.entries {
                    print_entry(e);
                }
            }
            Source::File(f) => {
                println!("file     {}  ({})", f.name, f.path);
                print_entry(&f.entry);
            }
        }
    }
    Ok(0)
}

fn print_entry(e: &lifeboat::repo::manifest::Entry) {
    let path = if e.path.is_empty() { "." } else { &e.path };
    match e.kind {
        EntryKind::Dir => println!("         {:o} {:>10}  {path}/", e.mode, ""),
        EntryKind::Symlink => println!(
            "         {:o} {:>10}  {path} -> {}",
            e.mode,
            "",
            e.target.as_deref().unwrap_or("")
        ),
        EntryKind::File => println!(
            "         {:o} {:>10}  {path}  {}{}",
            e.mode,
            bytes(e.size),
            e.blake3.map(|b| b.short()).unwrap_or_default(),
            match &e.database {
                Some(d) => format!("  (sqlite database, {} pages of {} B)", d.page_count, d.page_size),
                None => String::new(),
            }
        ),
    }
}
