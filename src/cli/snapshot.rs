//! `lifeboat snapshot`: sources from the command line or the configuration,
//! captured under the writer lock by [`lifeboat::snapshot::take`].

use std::path::PathBuf;

use super::config::file_name;
use lifeboat::repo::manifest::SnapshotKind;
use lifeboat::snapshot::{self, SnapshotOptions, SourceKind, SourceSpec};
use lifeboat::sqlite::capture::DEFAULT_SCHEMA_QUERY;
use lifeboat::{Error, ErrorCode, Result};

use super::hooks::{EventInfo, HookEvent, Hooks};
use super::output::{bytes, log_requests, print_json_with_requests};
use super::{Ctx, require_exists};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
PATHs are detected: a file starting with the SQLite header is captured online as a database
(consistent while the service writes), a directory as a tree, anything else as a file.
Without PATHs the sources come from the config file's [[sqlite]], [[directory]] and [[file]].
Prints the new snapshot's id on stdout.

A SQLite database found inside a directory (by its header) is captured like a configured one,
online and page by page; its -wal/-shm are not copied. Any other file that keeps changing while
it is read (twice) makes the snapshot incomplete: it is published, `list` and `show` mark it,
and snapshot exits 75.

Hooks (config sources only): a source's `before` runs right before it is captured (every
[[sqlite]] source's first, since their read transactions begin together) and its `after` right
after, also when the capture fails or SIGINT/SIGTERM interrupts it. A failing `before` fails
the snapshot (nothing published, exit 75, event=hook.failed or hook.timed_out); a failing
`after` exits 75 but the snapshot stays published. [[hook]]s on snapshot.success and
snapshot.failure run after it; one with policy = \"fail\" makes a snapshot that succeeded
exit 75. Hook output goes to the log (event=hook.output, shown with -v), never to stdout.")]
pub struct Args {
    /// Databases, directories or files to capture (default: the config's sources).
    paths: Vec<PathBuf>,
    /// Label the snapshot (repeatable).
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// `partial` leaves out config sources marked `full_only = true`.
    #[arg(long, default_value = "full", value_parser = capture_kind)]
    kind: SnapshotKind,
    /// Capture only the configured source of this name (repeatable): one tenant or one service
    /// can have its own schedule.
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    only: Vec<String>,
    /// Record this as the snapshot's time instead of now (RFC 3339, e.g.
    /// 2026-01-31T03:00:00Z): for importing a history, or testing retention.
    #[arg(long, value_name = "RFC3339")]
    time: Option<jiff::Timestamp>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let hooks = Hooks::new(ctx);
    match capture(ctx, args, &hooks) {
        Ok((id, code)) => {
            let info = EventInfo {
                exit_code: Some(code),
                snapshot: Some(id.to_string()),
                ..Default::default()
            };
            match hooks.fire(HookEvent::SnapshotSuccess, &info) {
                // The snapshot stands, and its result is printed already.
                Err(e) if code == 0 => Ok(super::exit::report_line(&e)),
                _ => Ok(code),
            }
        }
        Err(e) => {
            let info = EventInfo {
                exit_code: Some(e.kind.exit_code()),
                error: Some(e.to_string()),
                ..Default::default()
            };
            // The command fails with the snapshot's error whatever the
            // hooks do.
            let _ = hooks.fire(HookEvent::SnapshotFailure, &info);
            Err(e)
        }
    }
}

/// Take the snapshot and print it: its id, and the exit code (0, or 75 for
/// a snapshot published incomplete or after a source's `after` failed).
fn capture(ctx: &Ctx, args: Args, hooks: &Hooks) -> Result<(lifeboat::id::Id, i32)> {
    // A source's `before`/`after` are the config's: only for its sources.
    let runner = if args.paths.is_empty() {
        hooks.for_sources()
    } else {
        None
    };
    let specs = if args.paths.is_empty() {
        let config = ctx.config()?.ok_or_else(super::config::Config::not_found_error)?;
        let sources = config.sources(args.kind);
        if let Some(missing) = args.only.iter().find(|n| !sources.iter().any(|s| &&s.name == n)) {
            let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::usage(format!(
                "--only {missing}: no {} source of that name in {}",
                args.kind,
                config.path.display()
            ))
            .fix(format!("choose from: {}", names.join(", ")))
            .code(ErrorCode::SnapshotNoSuchSource));
        }
        sources
            .into_iter()
            .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
            .collect()
    } else {
        args.paths.iter().map(|p| detect(p)).collect::<Result<Vec<_>>>()?
    };
    for s in &specs {
        // A `before` may make its source (a dump the service writes).
        if !runner.as_ref().is_some_and(|r| r.has_before(&s.name)) {
            require_exists(&s.path)?;
        }
    }
    let repo = ctx.open_repo_locked("snapshot")?;
    let progress = ctx.progress();
    let opts = SnapshotOptions {
        kind: args.kind,
        tags: args.tags,
        replication: None,
        time: args.time,
    };
    if runner.is_some() {
        super::hooks::run_afters_on_signals()?;
    }
    let taken = match &runner {
        Some(r) => snapshot::take_with_hooks(&repo, &specs, &opts, &progress, r),
        None => snapshot::take(&repo, &specs, &opts, &progress),
    };
    // Interrupted: the signal thread runs what is owed, then exits.
    super::hooks::settle();
    let (id, m) = taken?;
    if ctx.json {
        print_json_with_requests(
            &serde_json::json!({"id": id, "time": m.time, "kind": m.kind, "sources": m.sources.iter().map(|s| s.name()).collect::<Vec<_>>(), "summary": m.summary, "incomplete": m.incomplete}),
            &repo,
        );
    } else {
        log_requests(&repo);
        if !ctx.quiet {
            eprintln!(
                "snapshot {} of {} sources: {} read, {} new ({} stored) in {:.1}s",
                id.short(),
                m.sources.len(),
                bytes(m.summary.logical_bytes),
                bytes(m.summary.added_raw_bytes),
                bytes(m.summary.added_stored_bytes),
                m.summary.duration_ms as f64 / 1000.0
            );
        }
        println!("{id}");
    }
    let mut code = 0;
    if !m.incomplete.is_empty() {
        // Published (what it holds is worth keeping), but not a clean copy:
        // said whatever -q or --json asked, and the exit code says it too.
        tracing::warn!(event = "snapshot.incomplete", id = %id.short(), files = m.incomplete.len());
        eprintln!(
            "lifeboat: warning: snapshot {} is incomplete: {} changed while read ({}); take another when they are quiet (event=snapshot.incomplete)",
            id.short(),
            if m.incomplete.len() == 1 {
                "1 file".to_string()
            } else {
                format!("{} files", m.incomplete.len())
            },
            m.incomplete.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
        code = super::exit::TEMPFAIL;
    }
    if let Some(e) = runner.and_then(|r| r.after_failure()) {
        // Published: every source was captured. The operator must still
        // hear that the service may be down.
        code = super::exit::report_line(&e);
    }
    Ok((id, code))
}

/// `full` or `partial`: the kinds a snapshot is taken as (`base` is
/// `replicate`'s).
fn capture_kind(s: &str) -> std::result::Result<SnapshotKind, String> {
    match s.parse()? {
        SnapshotKind::Base => Err("`base` snapshots are taken by `lifeboat replicate`; use full or partial".into()),
        k => Ok(k),
    }
}

fn detect(p: &std::path::Path) -> Result<SourceSpec> {
    require_exists(p)?;
    let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    let kind = if meta.is_dir() {
        SourceKind::Directory { exclude: Vec::new() }
    } else if meta.is_file() && lifeboat::sqlite::has_header(p)? {
        SourceKind::Sqlite {
            schema_query: DEFAULT_SCHEMA_QUERY.into(),
        }
    } else {
        SourceKind::File
    };
    Ok(SourceSpec {
        name: file_name(p),
        path: p.to_path_buf(),
        kind,
    })
}
