//! `lifeboat restore`: which point (`ID`, `latest`, `--at`, `--txid`) and
//! where (`--to`, `-o`, in place), over [`lifeboat::restore`].

use std::path::PathBuf;

use lifeboat::pitr;
use lifeboat::restore::{self, RestoreOptions, Selection, Target};
use lifeboat::{Error, ErrorCode, Repository, Result};

use super::Ctx;
use super::output::{bytes, log_requests, print_json_with_requests};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Which point: `lifeboat restore` brings the whole service back as of its newest point: each
directory and file from the newest snapshot holding it, each database at its newest commit
shipped by `lifeboat replicate` when that is newer than its newest snapshot. --at T does the
same as of T; an id restores exactly that snapshot. The output says, per source, which point
it came from and how old it is.

Without --to or -o, every source goes back where it was captured.
Nothing is replaced until everything is restored into a staging area and verified (hashes,
PRAGMA integrity_check). A non-empty target is refused (exit 73) unless --force; with --force
the current files, with their -wal/-shm/-journal/.lock sidecars, are moved into
.lifeboat-pre-restore-<time>/ in the target directory, never deleted, and each restored file or
folder takes its place in one step. A file in the way that another process holds open is
refused (exit 75, naming the process) even with --force: stop the service first. Another
configured source inside a restored folder stays where it is.")]
pub struct Args {
    /// Snapshot id (or unique prefix): exactly that snapshot. `latest` (the default): the
    /// service as of its newest point, each database at its newest shipped commit.
    #[arg(default_value = "latest")]
    id: String,
    /// Restore each source under DIR at its original absolute path (DIR/var/lib/app/state.db),
    /// so a copy of the service can be started from DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    to: Option<PathBuf>,
    /// Restore one database as a plain SQLite file (like `sqlite3 .backup`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Restore only the source with this name (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Restore only these paths inside directory sources (a glob, repeatable), e.g. one tenant:
    /// `--include tenants/42`. Each match is restored (and, in place, replaced) on its own.
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Move what is in the way aside instead of refusing.
    #[arg(long)]
    force: bool,
    /// Refuse databases whose schema version is newer (exit 78). Default: the config's
    /// [restore] max_schema_version.
    #[arg(long, value_name = "N")]
    max_schema_version: Option<i64>,
    /// The service as of this moment (RFC 3339, e.g. 2026-11-22T10:15:00Z, or `now`): each
    /// database at the last commit seen at or before it, each folder and file from the newest
    /// snapshot before it.
    #[arg(long, value_name = "TIME", conflicts_with = "txid")]
    at: Option<String>,
    /// Replicated database right after commit N (`lifeboat replicate` numbers every commit).
    #[arg(long, value_name = "N")]
    txid: Option<u64>,
    /// Do nothing (exit 0) if the target database already exists: safe in a container's start
    /// command.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Do nothing (exit 0) if the repository holds no backup of it yet.
    #[arg(long)]
    if_replica_exists: bool,
    /// Forensics only: restore databases without PRAGMA integrity_check, to get the bytes out
    /// of a snapshot of a damaged database. Every byte is still checked against its hash.
    /// Never restore over a live service this way.
    #[arg(long)]
    no_integrity_check: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    // An interrupted restore leaves nothing behind: its staging goes with it.
    restore::staging::remove_all_on_signals()?;
    let target = match (args.to.clone(), args.output.clone()) {
        (Some(d), _) => Target::Dir(d),
        (_, Some(f)) => Target::File(f),
        _ => Target::Original,
    };
    let max = match args.max_schema_version {
        Some(n) => Some(n),
        None => ctx.config()?.and_then(|c| c.restore.max_schema_version),
    };
    // The shortcut touches no repository (a container starts even while
    // the store is unreachable), but a name the config does not know is
    // checked against the repository first: a typo is never "nothing to do".
    let configured = |n: &String| {
        ctx.config().ok().flatten().is_none_or(|c| {
            c.sources(lifeboat::repo::manifest::SnapshotKind::Full)
                .iter()
                .any(|s| &s.name == n)
        })
    };
    if args.if_db_not_exists
        && args.only.iter().all(configured)
        && let Some(existing) = existing_target(&target)
    {
        if !ctx.quiet {
            eprintln!("{} exists; nothing restored (--if-db-not-exists)", existing.display());
        }
        return Ok(0);
    }
    let point = match (&args.at, args.txid) {
        (Some(t), _) => Some(pitr::Target::Time(parse_time(t)?)),
        (_, Some(n)) => Some(pitr::Target::Txid(n)),
        _ => None,
    };
    let exact = args.id != "latest";
    if point.is_some() && exact {
        return Err(Error::usage("a snapshot id and --at/--txid exclude each other")
            .fix("--at and --txid choose the points themselves; drop the id"));
    }
    let Some((repo, selection)) = select(ctx, &args, point, exact)? else {
        return Ok(0);
    };
    let progress = ctx.progress();
    // Every configured source is another source's to keep.
    let keep = ctx
        .config()?
        .map(|c| {
            c.sources(lifeboat::repo::manifest::SnapshotKind::Full)
                .into_iter()
                .map(|s| s.path)
                .collect()
        })
        .unwrap_or_default();
    let opts = RestoreOptions {
        target,
        force: args.force,
        max_schema_version: max,
        keep,
        skip_integrity_check: args.no_integrity_check,
    };
    if args.no_integrity_check {
        // Loud whatever -q says: what comes out may be a corrupt database.
        eprintln!(
            "lifeboat: WARNING: --no-integrity-check: restored databases are NOT checked by SQLite and may be corrupt; for forensics, not for a service"
        );
    }
    let report = restore::restore(&repo, &selection, &opts, &progress)?;
    if ctx.json {
        print_json_with_requests(&report, &repo);
        return Ok(0);
    }
    log_requests(&repo);
    // -q: the exit code says it; only errors are printed.
    if ctx.quiet {
        return Ok(0);
    }
    print_report(&report);
    Ok(0)
}

/// The repository and what to restore from it: the snapshot named, or
/// each source's newest point (at `point`). None when there is nothing to
/// restore yet and --if-replica-exists says that is fine.
fn select(ctx: &Ctx, args: &Args, point: Option<pitr::Target>, exact: bool) -> Result<Option<(Repository, Selection)>> {
    // A snapshot id is looked up while the index loads.
    let opened = ctx.open_repo().and_then(|repo| match exact {
        true => repo.indexed_and_find(&args.id).map(|(repo, found)| (repo, Some(found))),
        false => repo.indexed().map(|repo| (repo, None)),
    });
    let nothing_yet = |e: &Error| {
        args.if_replica_exists
            && e.kind == lifeboat::ErrorKind::NoInput
            && matches!(
                e.code,
                ErrorCode::RepoNotFound | ErrorCode::RestoreNoSnapshot | ErrorCode::RestoreNoReplica
            )
    };
    let (repo, found) = match opened {
        Err(e) if nothing_yet(&e) => {
            if !ctx.quiet {
                eprintln!("no repository yet; nothing restored (--if-replica-exists)");
            }
            return Ok(None);
        }
        r => r?,
    };
    // The configuration, when there is one, says what the service is.
    let service: Option<Vec<String>> = ctx.config()?.map(|c| {
        c.sources(lifeboat::repo::manifest::SnapshotKind::Full)
            .into_iter()
            .map(|s| s.name)
            .collect()
    });
    let selection = match (found, point) {
        (Some(snap), _) => Selection::of_snapshot(&snap, &args.only),
        (None, Some(pitr::Target::Txid(n))) => Selection::at_txid(&repo, &args.only, n),
        (None, Some(pitr::Target::Time(t))) => Selection::newest_of(&repo, &args.only, Some(t), service.as_deref()),
        (None, _) => Selection::newest_of(&repo, &args.only, None, service.as_deref()),
    };
    let selection = match selection {
        Err(e) if nothing_yet(&e) => {
            if !ctx.quiet {
                eprintln!("no backup yet; nothing restored (--if-replica-exists)");
            }
            return Ok(None);
        }
        r => r?,
    };
    let selection = selection.narrow(&args.include, &args.only)?;
    Ok(Some((repo, selection)))
}

/// What was restored, from where, and where the files in the way went.
fn print_report(report: &lifeboat::restore::RestoreReport) {
    for r in &report.restored {
        println!("restored {} {} -> {} ({})", r.kind, r.name, r.path, bytes(r.bytes));
        let age = age(r.age_seconds);
        match &r.point {
            Some(p) => println!(
                "  as of txid {} ({}, {age} old): base txid {} + {} commits from {} segments",
                p.txid, p.time, p.base_txid, p.commits_applied, p.segments
            ),
            None => println!(
                "  from snapshot {} ({}, {age} old)",
                &r.snapshot[..8.min(r.snapshot.len())],
                r.snapshot_time
            ),
        }
    }
    for d in &report.moved_aside {
        println!("previous files moved to {d}");
    }
}

/// A duration for people: `3 s`, `4 min`, `2 h`, `3 d`.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// The file `--if-db-not-exists` looks at: the -o file (a --to or original
/// target is checked by the restore's own refusal instead).
fn existing_target(target: &Target) -> Option<PathBuf> {
    match target {
        Target::File(f) if f.exists() => Some(f.clone()),
        _ => None,
    }
}

fn parse_time(s: &str) -> Result<jiff::Timestamp> {
    if s == "now" {
        return Ok(jiff::Timestamp::now());
    }
    s.parse::<jiff::Timestamp>().map_err(|e| {
        Error::usage(format!("--at {s}: {e}")).fix("give an RFC 3339 time such as 2026-11-22T10:15:00Z, or `now`")
    })
}
