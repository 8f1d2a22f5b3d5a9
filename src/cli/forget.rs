//! `lifeboat forget`: retention rules from the command line or
//! `[retention]`, the plan printed, then applied (and `--prune`).

use super::config::{keep_within, parse_wal_window};
use super::filter::FilterArgs;
use lifeboat::Result;
use lifeboat::forget::{self, ForgetOptions, ForgetPlan, RuleSets, WalWindow};
use lifeboat::repo::manifest::SnapshotKind;
use lifeboat::retention::{Count, Policy};

use super::output::{bytes, print_json_with_requests, when};
use super::pruning::{self, PruneFlags};
use super::{Ctx, flag_value};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Rules are restic's: snapshots are grouped by host and sources (a replicated database's bases
by stream), newest first; --keep-daily 7 keeps the newest snapshot of each of the 7 most recent
days that have one (hours, days, ISO weeks, months and years in this machine's time zone);
a snapshot is kept if any rule of its rule set keeps it. N may be `unlimited` (or -1).

Rule sets: [retention] in the config may hold one per tag ([retention.tag.NAME]) and one per
kind ([retention.full], [retention.partial], [retention.base]) beside its top-level rules.
Exactly one set judges each snapshot: the set of its first tag (in name order) that has one,
else its kind's, else the top-level rules; each set counts only the snapshots it judges.
A snapshot no set covers is kept. The --keep-* flags here are one set for every snapshot,
replacing the config's rules.

Filters (--kind, --tag, --host, --source) restrict what forget considers at all: other
snapshots, and the WAL of streams none of whose bases pass, are left untouched.

WAL history (--keep-wal, default 24h): every commit inside the window stays restorable, so the
bases inside it and the newest base before it are kept and older segments are deleted; outside
the window, the restore points are the bases the other rules keep. `--keep-wal unlimited` keeps
every commit after the oldest kept base. The newest base of a stream is always kept.

Forget removes manifests (and segments) at once; the data only they used is freed by prune
(--prune runs it afterwards). --dry-run names, for each snapshot, the rule set and rules that
decided (`retention.partial: daily snapshot`).

Examples:
  lifeboat forget --keep-daily 7 --keep-weekly 4 --keep-wal 24h --dry-run
  lifeboat forget --keep-last 10 --keep-tag release --prune
  lifeboat forget --kind partial --keep-within 7d      # only partial snapshots
  lifeboat forget --dry-run                            # the config's [retention] rule sets")]
// The prune flags are prune's own; here each needs --prune and points there.
#[command(mut_arg("grace", |a| a.requires("prune").help("With --prune: see `lifeboat prune --help`")))]
#[command(mut_arg("repack_unused", |a| a.requires("prune").help("With --prune: see `lifeboat prune --help`")))]
pub struct Args {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_hourly: Option<Count>,
    /// ... of each of the N most recent days.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_daily: Option<Count>,
    /// ... of each of the N most recent ISO weeks (Monday to Sunday).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_weekly: Option<Count>,
    /// ... of each of the N most recent months.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_monthly: Option<Count>,
    /// ... of each of the N most recent years.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_yearly: Option<Count>,
    /// Keep every snapshot newer than the group's newest minus DURATION (e.g. 2d, 1y6m; m = months).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "T")]
    keep_tags: Vec<String>,
    /// Keep every commit restorable this far back (e.g. 24h, 7d, or `unlimited`). Default: 24h.
    #[arg(long, value_name = "DURATION")]
    keep_wal: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show, for every snapshot, keep or remove and the rule set and rules that decided;
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: PruneFlags,
}

fn parse_count(s: &str) -> std::result::Result<Count, String> {
    match s.trim() {
        "unlimited" | "-1" => Ok(Count::Unlimited),
        n => n
            .parse::<u32>()
            .map(Count::N)
            .map_err(|_| format!("`{n}` is not a count (a number, or `unlimited`)")),
    }
}

/// The rule sets and WAL window: `--keep-*` flags are one rule set for
/// every snapshot forget considers, replacing the config's sets; without
/// them, `[retention]`'s sets decide. `--keep-wal` else `[retention]
/// keep_wal` either way.
fn rules(ctx: &Ctx, args: &Args) -> Result<(RuleSets, Option<WalWindow>)> {
    let from_flags = args.keep_last.is_some()
        || args.keep_hourly.is_some()
        || args.keep_daily.is_some()
        || args.keep_weekly.is_some()
        || args.keep_monthly.is_some()
        || args.keep_yearly.is_some()
        || args.keep_within.is_some()
        || !args.keep_tags.is_empty();
    let config = ctx.config()?;
    let rules = if from_flags {
        let policy = Policy {
            last: args.keep_last,
            hourly: args.keep_hourly,
            daily: args.keep_daily,
            weekly: args.keep_weekly,
            monthly: args.keep_monthly,
            yearly: args.keep_yearly,
            within: args
                .keep_within
                .as_deref()
                .map(|w| flag_value("--keep-within", w, keep_within))
                .transpose()?,
            tags: args.keep_tags.clone(),
        };
        RuleSets::single(COMMAND_LINE, policy)
    } else {
        match config {
            Some(c) => c.retention_sets(true)?,
            None => RuleSets::default(),
        }
    };
    let keep_wal = match (&args.keep_wal, config) {
        (Some(w), _) => Some(flag_value("--keep-wal", w, parse_wal_window)?),
        (None, Some(c)) => c.retention_keep_wal()?,
        (None, None) => None,
    };
    Ok((rules, keep_wal))
}

/// The name `--dry-run` gives the flags' rule set.
const COMMAND_LINE: &str = "command line";

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let (rules, keep_wal) = rules(ctx, &args)?;
    let prune_opts = if args.prune {
        Some(pruning::options(ctx, &args.prune_flags, args.dry_run)?)
    } else {
        None
    };
    // No lock: forget deletes only manifests and segments, which no writer
    // of this host stages or rewrites.
    let repo = ctx.open_repo()?;
    let opts = ForgetOptions {
        rules,
        filter: args.filter.filter(),
        keep_wal,
        tz: jiff::tz::TimeZone::system(),
        now: jiff::Timestamp::now(),
    };
    let plan = forget::plan(&repo, &opts)?;
    let report = if args.dry_run {
        None
    } else {
        Some(forget::apply(&repo, &plan)?)
    };
    let pruned = match prune_opts {
        Some(p) => Some(lifeboat::prune::prune(
            &repo,
            &p,
            &ctx.progress(),
            &mut pruning::lock_for("forget"),
        )?),
        None => None,
    };
    if ctx.json {
        print_json_with_requests(
            &serde_json::json!({
                "dry_run": args.dry_run,
                "snapshots": plan.verdicts,
                "wal": plan.wal,
                "wal_window": plan.wal_window,
                "wal_window_default": plan.wal_window_default,
                "removed": plan.removed().count(),
                "untouched": plan.untouched,
                "kept": plan.verdicts.len() - plan.removed().count(),
                "result": report,
                "prune": pruned,
            }),
            &repo,
        );
        return Ok(0);
    }
    super::output::log_requests(&repo);
    print_plan(&plan, args.dry_run);
    if let Some(p) = &pruned {
        pruning::print_report(p);
    }
    Ok(0)
}

fn print_plan(plan: &ForgetPlan, dry_run: bool) {
    // Each group once, in order of first appearance, its snapshots oldest
    // first: full and partial snapshots of a service alternate in time.
    let mut order: Vec<&str> = Vec::new();
    for v in &plan.verdicts {
        if !order.contains(&v.group.as_str()) {
            order.push(&v.group);
        }
    }
    let mut group = None;
    let by_group = order
        .iter()
        .flat_map(|g| plan.verdicts.iter().filter(move |v| v.group == *g));
    for v in by_group {
        if group != Some(&v.group) {
            println!("group {}", v.group);
            group = Some(&v.group);
        }
        let decision = if v.keep { "keep" } else { "remove" };
        // Which set decided, then why: `retention.partial: daily snapshot`.
        let why = match (&v.rule_set, v.reasons.is_empty()) {
            (Some(set), true) => format!("{set}: no rule keeps it"),
            (Some(set), false) => format!("{set}: {}", v.reasons.join(", ")),
            (None, true) => "keep_wal: outside the WAL window".to_string(),
            (None, false) if v.kind == SnapshotKind::Base => format!("keep_wal: {}", v.reasons.join(", ")),
            (None, false) => v.reasons.join(", "),
        };
        println!(
            "  {}  {:<20}  {:<7}  {:<6}  {}",
            v.id.short(),
            when(&v.time),
            v.kind.as_str(),
            decision,
            why
        );
    }
    if !plan.wal.is_empty() {
        println!(
            "wal window {}{}",
            plan.wal_window,
            if plan.wal_window_default {
                " (the default; --keep-wal sets it)"
            } else {
                ""
            }
        );
    }
    for s in &plan.wal {
        println!(
            "wal {}: {} segments ({}), {} up to txid {} ({})",
            s.stream,
            s.segments,
            bytes(s.bytes),
            if dry_run { "would delete those" } else { "deleted those" },
            s.cutoff_txid,
            if s.delete_segments == 0 {
                "none".to_string()
            } else {
                format!("{} segments, {}", s.delete_segments, bytes(s.delete_bytes))
            }
        );
    }
    let removed = plan.removed().count();
    eprintln!(
        "{} {} of {} snapshots, kept {}{}",
        if dry_run { "would remove" } else { "removed" },
        removed,
        plan.verdicts.len(),
        plan.verdicts.len() - removed,
        if plan.untouched > 0 {
            format!("; {} outside the filters left untouched", plan.untouched)
        } else {
            String::new()
        }
    );
}
