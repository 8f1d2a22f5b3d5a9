use lifeboat::Result;

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also read, hash and decompress every stored byte.
    #[arg(long)]
    read_data: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let mut repo = ctx.open_repo_unindexed()?;
    let progress = ctx.progress();
    let report = lifeboat::verify::verify(&mut repo, args.read_data, &progress)?;
    let code = if report.problems.is_empty() {
        0
    } else {
        super::exit::damaged()
    };
    if ctx.json {
        print_json_with_requests(&report, &repo);
        return Ok(code);
    }
    log_requests(&repo);
    for p in &report.problems {
        let snap = if p.snapshot.is_empty() {
            "repository".to_string()
        } else {
            format!("snapshot {}", &p.snapshot[..8])
        };
        println!("DAMAGED {snap}: {}: {}", p.file, p.problem);
    }
    if !report.unreferenced_packs.is_empty() {
        println!(
            "note: {} pack(s) not in any index (left by an interrupted snapshot; harmless)",
            report.unreferenced_packs.len()
        );
    }
    let read = if args.read_data {
        format!(", read {}", bytes(report.bytes_read))
    } else {
        String::new()
    };
    if report.problems.is_empty() {
        println!(
            "ok: {} snapshots, {} packs, {} blobs{read}",
            report.snapshots, report.packs, report.blobs
        );
    } else {
        println!(
            "{} problem(s) in {} snapshots{read}",
            report.problems.len(),
            report.snapshots
        );
    }
    Ok(code)
}
