//! `lifeboat verify`: arguments, output and exit code over
//! [`lifeboat::verify::verify`].

use lifeboat::Result;

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --read-data, verify checks the structure: every snapshot's references resolve to packs
of the right size, every replicated database's WAL segments follow on from its bases. With
--read-data every pack and every WAL segment is downloaded, hashed and decoded; with
--read-data-subset 10% a random tenth of them, different on each run (as restic does), so a
daily 10% reads everything about every ten days. Exit 65 names each damaged snapshot and file,
or the database stream and the commits that cannot be restored.")]
pub struct Args {
    /// Also read, hash and decompress every stored byte (packs and WAL segments).
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read a random N% of the packs and WAL segments, e.g. 10%.
    #[arg(long, value_name = "N%", value_parser = parse_percent)]
    read_data_subset: Option<f64>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .strip_suffix('%')
        .ok_or_else(|| format!("`{s}`: write a percentage such as 10%"))?
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: write a percentage such as 10%"))?;
    if !(n > 0.0 && n <= 100.0) {
        return Err(format!("`{s}`: between 0% (excluded) and 100%"));
    }
    Ok(n / 100.0)
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    use lifeboat::verify::DataCheck;
    let repo = ctx.open_repo()?;
    let progress = ctx.progress();
    let data = match (args.read_data, args.read_data_subset) {
        (true, _) => DataCheck::All,
        (_, Some(f)) => DataCheck::Subset(f),
        _ => DataCheck::Structure,
    };
    let report = lifeboat::verify::verify(&repo, data, &progress)?;
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
    let read = if data != DataCheck::Structure {
        format!(
            ", read {} ({} of {} packs, {} of {} WAL segments)",
            bytes(report.bytes_read),
            report.packs_read,
            report.packs,
            report.segments_read,
            report.segments
        )
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
