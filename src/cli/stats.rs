//! `lifeboat stats`: what the repository holds and what it costs, printed
//! from [`lifeboat::stats::compute`].

use lifeboat::Result;
use lifeboat::stats::{ObjectCount, RepoStats};

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests, when, when_at};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Figures:
  objects by kind     every object in the repository (one listing): packs (data/), index files
                      (index/), manifests (snapshots/), WAL segments (wal/), other (config, ...)
  logical             the sum of every snapshot's size: what restoring all of them would write
  referenced          every blob (page, chunk, page map) some snapshot uses, counted once:
                      raw bytes (before compression) and stored bytes
  stored bytes        a frame (up to 16 pages compressed together) is shared among its blobs
                      in proportion to their raw sizes
  dedup ratio         logical / referenced raw bytes
  compression ratio   referenced raw / referenced stored bytes
  unreferenced        blobs in packs that no snapshot uses: what pruning would free
  pack overhead       pack headers and trailers, and frames whose blobs are indexed elsewhere
  unindexed packs     packs no index file names, left by an interrupted snapshot (harmless)
  missing             references to blobs the index lacks or page maps that cannot be read:
                      0 unless the repository is damaged (`lifeboat verify` says where)
  unique (per snap)   stored bytes of the blobs only that snapshot uses: what forgetting it
                      alone would free (blobs two snapshots share count for neither)
  added (per snap)    what the snapshot stored when it was taken
  WAL streams         per replicated database: segments, their size, the txids and commit
                      times they span, and how many bases (snapshots of kind base) it has

Reads the index, every manifest, every page map and two segments per WAL stream; never the
pages themselves. --json prints all of it, sizes in bytes.")]
pub struct Args {}

pub fn run(ctx: &Ctx, _: Args) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let progress = ctx.progress();
    let st = lifeboat::stats::compute(&repo, &progress)?;
    if ctx.json {
        print_json_with_requests(&st, &repo);
        return Ok(0);
    }
    log_requests(&repo);
    print_text(&repo.location(), &st);
    Ok(0)
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into())
}

fn print_text(location: &str, st: &RepoStats) {
    let o = &st.repository;
    println!("repository {location}");
    let row = |name: &str, c: &ObjectCount| println!("  {name:<10} {:>8} objects  {:>10}", c.objects, bytes(c.bytes));
    row("packs", &o.packs);
    row("index", &o.index);
    row("snapshots", &o.snapshots);
    row("wal", &o.wal);
    row("other", &o.other);
    row("total", &o.total);
    println!();
    println!(
        "snapshots          {}, {} logical",
        st.snapshot_count,
        bytes(st.logical_bytes)
    );
    let r = &st.referenced;
    println!(
        "referenced         {} blobs, {} raw, {} stored",
        r.blobs,
        bytes(r.raw_bytes),
        bytes(r.stored_bytes)
    );
    println!("dedup ratio        {}", ratio(st.dedup_ratio));
    println!("compression ratio  {}", ratio(st.compression_ratio));
    let u = &st.unreferenced;
    println!(
        "unreferenced       {} blobs, {} stored (pruning would free it)",
        u.blobs,
        bytes(u.stored_bytes)
    );
    println!("pack overhead      {}", bytes(st.pack_overhead_bytes));
    if st.unindexed_packs.objects > 0 {
        println!(
            "unindexed packs    {}, {} (left by an interrupted snapshot; harmless)",
            st.unindexed_packs.objects,
            bytes(st.unindexed_packs.bytes)
        );
    }
    if st.missing_references > 0 {
        println!(
            "missing            {} references to data the repository lacks; run `lifeboat verify`",
            st.missing_references
        );
    }
    print_snapshots(st);
    print_wal_streams(st);
}

/// One line per snapshot: what it holds, added and alone references.
fn print_snapshots(st: &RepoStats) {
    if !st.snapshots.is_empty() {
        println!();
        println!(
            "{:<8}  {:<20}  {:<7}  {:>10}  {:>10}  {:>10}",
            "id", "time", "kind", "logical", "added", "unique"
        );
        for s in &st.snapshots {
            println!(
                "{:<8}  {:<20}  {:<7}  {:>10}  {:>10}  {:>10}",
                s.id.short(),
                when_at(s.time),
                s.kind,
                bytes(s.logical_bytes),
                bytes(s.added_stored_bytes),
                bytes(s.unique.stored_bytes)
            );
        }
    }
}

/// One line per WAL stream: its segments, txids, commit times and bases.
fn print_wal_streams(st: &RepoStats) {
    if !st.wal_streams.is_empty() {
        println!();
        println!(
            "{:<16}  {:>8}  {:>10}  {:<21}  {:<20}  {:<20}  {:>5}  database",
            "WAL stream", "segments", "size", "txids", "first commit", "last commit", "bases"
        );
        let opt = |t: &Option<String>| t.as_deref().map(when).unwrap_or_else(|| "-".into());
        for w in &st.wal_streams {
            let txids = match (w.first_txid, w.last_txid) {
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "-".into(),
            };
            println!(
                "{:<16}  {:>8}  {:>10}  {:<21}  {:<20}  {:<20}  {:>5}  {}",
                w.stream,
                w.segments,
                bytes(w.bytes),
                txids,
                opt(&w.first_commit),
                opt(&w.last_commit),
                w.bases,
                w.path.as_deref().unwrap_or("-")
            );
        }
    }
}
