//! Retention per kind and tag: `[retention]` rule sets (seed 004's whole
//! policy as one config), the rule set `forget --dry-run` names for each
//! snapshot, snapshots no set covers kept, `forget` filters, and refusals
//! of broken rule sets (78, naming file and line) that change nothing.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Env, Out, s};

/// Child process: the WAL writer of the filter test (inert unless re-executed).
#[test]
fn replica_writer_child() {
    common::replica_writer_child_main();
}

/// Seed 004's policy: partial backups 7 days, full ones 4 weeks, WAL 24
/// hours; plus release-tagged snapshots, of which the last 2 stay.
const SEED_004: &str = r#"
[[file]]
path = "svc/state.txt"

[[directory]]
path = "svc/images"
full_only = true

[retention]
keep_wal = "24h"

[retention.partial]
keep_daily = 7

[retention.full]
keep_weekly = 4

[retention.tag.release]
keep_last = 2
"#;

/// A service with a state file and a full-only image directory, and a
/// config of `retention` below its sources.
fn service(env: &Env, config: &str) -> PathBuf {
    std::fs::create_dir_all(env.path("svc/images")).unwrap();
    std::fs::write(env.path("svc/state.txt"), "state").unwrap();
    std::fs::write(env.path("svc/images/app.tar"), "image").unwrap();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(&cfg, config).unwrap();
    cfg
}

/// Run with the config, in UTC (calendar buckets are the machine's zone).
fn run(env: &Env, cfg: &std::path::Path, args: &[&str]) -> Out {
    let mut c = env.command();
    c.env("TZ", "UTC")
        .arg("--repo")
        .arg(&env.repo_arg)
        .arg("--config")
        .arg(cfg);
    c.args(args);
    common::run_command(c)
}

fn snapshot(env: &Env, cfg: &std::path::Path, kind: &str, time: &str, tag: Option<&str>) -> String {
    let mut args = vec!["snapshot", "--kind", kind, "--time", time];
    if let Some(t) = tag {
        args.extend(["--tag", t]);
    }
    run(env, cfg, &args).expect_code(0).stdout.trim().to_string()
}

/// `2026-MM-DDTHH:00:00Z`, `day` days after Sunday 2026-10-04.
fn at(day: i64, hour: i8) -> String {
    jiff::civil::date(2026, 10, 4)
        .at(hour, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .checked_add(jiff::Span::new().days(day))
        .unwrap()
        .timestamp()
        .to_string()
}

/// Seed 004's cron over six weeks: a full snapshot every Sunday, a partial
/// one Monday to Saturday, all at 03:00; a second partial on the last day
/// at 15:00; and three release-tagged full snapshots in September. Returns
/// the ids by time.
fn seed_history(env: &Env, cfg: &std::path::Path) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for day in 0..41 {
        let kind = if day % 7 == 0 { "full" } else { "partial" };
        let t = at(day, 3);
        ids.insert(t.clone(), snapshot(env, cfg, kind, &t, None));
    }
    let t = at(40, 15);
    ids.insert(t.clone(), snapshot(env, cfg, "partial", &t, None));
    for t in ["2026-09-02T12:00:00Z", "2026-09-16T12:00:00Z", "2026-09-30T12:00:00Z"] {
        ids.insert(t.to_string(), snapshot(env, cfg, "full", t, Some("release")));
    }
    ids
}

/// What seed 004's policy keeps of [`seed_history`], and the set deciding
/// each snapshot: time -> (kept, rule set).
fn seed_expected() -> BTreeMap<String, (bool, &'static str)> {
    let mut want = BTreeMap::new();
    for day in 0..41 {
        let t = at(day, 3);
        if day % 7 == 0 {
            // Sundays: days 0, 7 (ISO weeks 40, 41) go; 14..=35 (weeks 42-45) stay.
            want.insert(t, (day >= 14, "retention.full"));
        } else {
            // The 7 most recent days with a partial: Nov 6 and 7 (days
            // 33, 34; Sunday the 8th has none) and Nov 9-13 (days 36-40,
            // the 13th's newest being the one at 15:00).
            want.insert(
                t,
                (day == 33 || day == 34 || (36..40).contains(&day), "retention.partial"),
            );
        }
    }
    want.insert(at(40, 15), (true, "retention.partial"));
    // The tag's set, not the kind's, judges these: the last 2 stay (the
    // full set's 4 weeks would keep none of them).
    want.insert("2026-09-02T12:00:00Z".into(), (false, "retention.tag.release"));
    want.insert("2026-09-16T12:00:00Z".into(), (true, "retention.tag.release"));
    want.insert("2026-09-30T12:00:00Z".into(), (true, "retention.tag.release"));
    want
}

fn repo_state(env: &Env) -> BTreeMap<String, common::Node> {
    let mut d = common::describe_without_log(&env.repo);
    d.remove("lock");
    d
}

#[test]
fn seed_004s_policy_is_one_config_and_keeps_exactly_the_expected_snapshots_per_kind() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = service(&env, SEED_004);
    let ids = seed_history(&env, &cfg);
    let want = seed_expected();
    assert_eq!(ids.len(), want.len());
    let by_id: BTreeMap<&str, &str> = ids.iter().map(|(t, id)| (id.as_str(), t.as_str())).collect();

    // The dry run names, for every snapshot, the set that decided it, and
    // changes nothing.
    let before = repo_state(&env);
    let plan = run(&env, &cfg, &["--json", "forget", "--dry-run"])
        .expect_code(0)
        .json();
    assert_eq!(repo_state(&env), before, "a dry run changes nothing");
    let verdicts = plan["snapshots"].as_array().unwrap();
    assert_eq!(verdicts.len(), want.len(), "{plan}");
    for v in verdicts {
        let time = by_id[v["id"].as_str().unwrap()];
        let (keep, set) = want[time];
        assert_eq!(v["keep"], keep, "{time}: {v}");
        assert_eq!(v["rule_set"], set, "{time}: {v}");
        let reasons = v["reasons"].as_array().unwrap();
        assert_eq!(reasons.is_empty(), !keep, "{time}: {v}");
        // And the settings that kept it, as the config spells them.
        let rules = match (keep, set) {
            (false, _) => serde_json::json!([]),
            (true, "retention.partial") => serde_json::json!(["keep_daily"]),
            (true, "retention.full") => serde_json::json!(["keep_weekly"]),
            (true, _) => serde_json::json!(["keep_last"]),
        };
        assert_eq!(v["rules"], rules, "{time}: {v}");
    }
    let removed = want.values().filter(|(k, _)| !k).count();
    assert_eq!(plan["removed"], removed, "{plan}");
    assert_eq!(plan["untouched"], 0, "{plan}");

    // The text says the same, one line per snapshot: `set: rule`, under
    // one heading per group (partial; full and release-tagged).
    let text = run(&env, &cfg, &["forget", "--dry-run"]).expect_code(0);
    let headings = text.stdout.lines().filter(|l| l.starts_with("group ")).count();
    assert_eq!(headings, 2, "{}", text.stdout);
    for (time, id) in &ids {
        let line = text
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&id[..8]))
            .unwrap_or_else(|| panic!("no line for {time}:\n{}", text.stdout));
        let (keep, set) = want[time.as_str()];
        let why = match (keep, set) {
            (true, "retention.partial") => "retention.partial: daily snapshot",
            (true, "retention.full") => "retention.full: weekly snapshot",
            (true, _) => "retention.tag.release: last snapshot",
            (false, _) => "no rule keeps it",
        };
        assert!(line.contains(why), "{time}: {line}");
        assert!(line.contains(set), "{time}: {line}");
        assert!(line.contains(if keep { " keep " } else { " remove " }), "{line}");
    }

    // Applied, exactly the expected ones remain.
    run(&env, &cfg, &["forget"]).expect_code(0);
    let left: Vec<String> = env
        .list()
        .iter()
        .map(|r| by_id[r["id"].as_str().unwrap()].to_string())
        .collect();
    let kept: Vec<String> = want.iter().filter(|(_, (k, _))| *k).map(|(t, _)| t.clone()).collect();
    assert_eq!(left, kept);
    // Run again: the same policy removes nothing more.
    let again = run(&env, &cfg, &["--json", "forget"]).expect_code(0).json();
    assert_eq!(again["removed"], 0, "{again}");
}

#[test]
fn a_snapshot_no_rule_set_covers_is_kept_and_the_dry_run_says_so() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = service(&env, &SEED_004.replace("[retention.full]\nkeep_weekly = 4\n", ""));
    let full = snapshot(&env, &cfg, "full", &at(0, 3), None);
    let old_full = snapshot(&env, &cfg, "full", &at(-30, 3), None);
    let partials: Vec<String> = (1..4)
        .map(|d| snapshot(&env, &cfg, "partial", &at(d, 3), None))
        .collect();
    let plan = run(&env, &cfg, &["--json", "forget", "--dry-run"])
        .expect_code(0)
        .json();
    for v in plan["snapshots"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        if id == full || id == old_full {
            assert_eq!(v["keep"], true, "{v}");
            assert_eq!(v["rule_set"], serde_json::Value::Null, "{v}");
            assert_eq!(v["reasons"][0], "no rule set covers it", "{v}");
        } else {
            assert_eq!(v["rule_set"], "retention.partial", "{v}");
        }
    }
    let text = run(&env, &cfg, &["forget", "--dry-run"]).expect_code(0);
    let line = text.stdout.lines().find(|l| l.contains(&old_full[..8])).unwrap();
    assert!(
        line.contains(" keep ") && line.contains("no rule set covers it"),
        "{line}"
    );
    run(&env, &cfg, &["forget"]).expect_code(0);
    let left: Vec<String> = env
        .list()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(left.contains(&full) && left.contains(&old_full), "{left:?}");
    assert_eq!(left.len(), 2 + partials.len(), "keep_daily 7 keeps the 3 partials");
}

#[test]
fn filters_restrict_what_forget_considers_and_list_shares_them() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = service(&env, SEED_004);
    let fulls: Vec<String> = (0..3)
        .map(|w| snapshot(&env, &cfg, "full", &at(7 * w, 3), None))
        .collect();
    let partials: Vec<String> = (1..4)
        .map(|d| snapshot(&env, &cfg, "partial", &at(d, 3), None))
        .collect();
    let tagged = snapshot(&env, &cfg, "partial", &at(5, 3), Some("tenant-42"));
    let ids = |out: &Out| -> Vec<String> {
        out.json()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["--json", "list"];
        a.extend(args);
        run(&env, &cfg, &a)
            .expect_code(0)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };

    // --kind: only the partial ones are judged, the full ones untouched.
    let out = run(
        &env,
        &cfg,
        &["--json", "forget", "--kind", "partial", "--keep-last", "1", "--dry-run"],
    )
    .expect_code(0);
    let mut want = partials.clone();
    want.push(tagged.clone());
    assert_eq!(ids(&out), want);
    assert_eq!(out.json()["untouched"], 3);
    assert_eq!(list(&["--kind", "partial"]), want, "list filters the same way");
    // The flags are one rule set for what the filter passes.
    for v in out.json()["snapshots"].as_array().unwrap() {
        assert_eq!(v["rule_set"], "command line", "{v}");
    }
    // --source: the image directory is in the full snapshots only.
    let out = run(&env, &cfg, &["--json", "forget", "--source", "images", "--dry-run"]).expect_code(0);
    assert_eq!(ids(&out), fulls);
    assert_eq!(list(&["--source", "images"]), fulls);
    // --tag and --host.
    let out = run(
        &env,
        &cfg,
        &[
            "--json",
            "forget",
            "--tag",
            "tenant-42",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    )
    .expect_code(0);
    assert_eq!(ids(&out), vec![tagged.clone()]);
    assert_eq!(list(&["--tag", "tenant-42"]), vec![tagged.clone()]);
    let out = run(
        &env,
        &cfg,
        &[
            "--json",
            "forget",
            "--host",
            "elsewhere",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    )
    .expect_code(0);
    assert!(ids(&out).is_empty());
    assert_eq!(out.json()["untouched"], 7);
    let host = common::hostname();
    let out = run(
        &env,
        &cfg,
        &["--json", "forget", "--host", &host, "--keep-last", "1", "--dry-run"],
    )
    .expect_code(0);
    assert_eq!(ids(&out).len(), 7);

    // Applied: --kind partial --keep-last 1 removes three partials and
    // touches no full snapshot.
    run(&env, &cfg, &["forget", "--kind", "partial", "--keep-last", "1"]).expect_code(0);
    let left = [fulls[0].clone(), tagged.clone(), fulls[1].clone(), fulls[2].clone()];
    assert_eq!(list(&[]), left, "oldest first");
}

#[test]
fn a_streams_wal_outside_the_filter_is_left_alone() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = service(&env, SEED_004);
    snapshot(&env, &cfg, "partial", &at(1, 3), None);
    snapshot(&env, &cfg, "partial", &at(2, 3), None);
    let db = env.path("svc/app.db");
    common::create_replica_db(&db);
    let exe = std::env::current_exe().unwrap();
    let service = format!(
        "'{}' replica_writer_child --exact --nocapture --test-threads=1",
        exe.display()
    );
    let mut c = env.command();
    c.arg("--repo")
        .arg(&env.repo_arg)
        .args(["replicate", s(&db), "--sync-interval", "200ms", "--exec", &service])
        .env(common::RW_DB, &db)
        .env(common::RW_ROWS, "40")
        .env(common::RW_PAUSE_US, "3000")
        // Rows are written once the first base is taken: they travel as
        // segments of the stream.
        .env(common::RW_WAIT_STATE, env.xdg_state.join("lifeboat/replicate"));
    common::run_command(c).expect_code(0);
    let segments = || common::files_under(&env.repo.join("wal"));
    let before = segments();
    assert!(!before.is_empty(), "the writer's commits made segments");

    // Unfiltered, forget considers the stream; no rule set covers the
    // base, so the WAL rules decide it, and the dry run says so.
    let all = run(&env, &cfg, &["--json", "forget", "--dry-run"])
        .expect_code(0)
        .json();
    assert_eq!(all["wal"].as_array().unwrap().len(), 1, "{all}");
    let base = all["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"] == "base")
        .unwrap();
    assert_eq!(base["rules"], serde_json::json!(["keep_wal"]), "{base}");
    let text = run(&env, &cfg, &["forget", "--dry-run"]).expect_code(0).stdout;
    let line = text
        .lines()
        .find(|l| l.contains(" base "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" keep ") && line.contains("keep_wal: newest base of its stream"),
        "{line}"
    );
    // Filtered to partial snapshots, neither the base nor the segments.
    let out = run(
        &env,
        &cfg,
        &["--json", "forget", "--kind", "partial", "--keep-last", "1"],
    )
    .expect_code(0)
    .json();
    assert_eq!(out["wal"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(out["untouched"], 1, "{out}");
    assert_eq!(segments(), before);
    let kinds: Vec<String> = env
        .list()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["partial", "base"]);
}

#[test]
fn broken_rule_sets_exit_78_naming_file_and_line_and_change_nothing() {
    let _serial = common::serial();
    let env = Env::new();
    let cfg = service(&env, SEED_004);
    for d in 1..4 {
        snapshot(&env, &cfg, "partial", &at(d, 3), None);
    }
    let before = repo_state(&env);
    // (config text, line of the fault, words the message must hold)
    let sources = "[[file]]\npath = \"svc/state.txt\"\n\n[retention]\nkeep_wal = \"24h\"\n";
    let cases: &[(&str, usize, &str)] = &[
        ("[retention.weekly]\nkeep_last = 1\n", 6, "unknown field `weekly`"),
        ("[retention.partial]\n", 6, "[retention.partial]: holds no rule"),
        ("[retention.partial]\nkeep_daily = 0\n", 6, "holds no rule"),
        ("[retention.full]\nkeep_daily = \"seven\"\n", 7, "invalid type"),
        (
            "[retention.partial]\nkeep_daily = -5\n",
            7,
            "[retention.partial] keep_daily: -5 is not a count",
        ),
        (
            "[retention.tag.release]\nkeep_within = \"soon\"\n",
            7,
            "[retention.tag.release] keep_within",
        ),
        // (A value over two lines is named by its first.)
        (
            "[retention.tag.release]\nkeep_within = \"\"\"\nsoon\"\"\"\n",
            7,
            "[retention.tag.release] keep_within",
        ),
        (
            "[retention.partial]\nkeep_daily = 7\nkeep_wal = \"1h\"\n",
            8,
            "move keep_wal to [retention]",
        ),
        (
            "[retention.partial]\nkeep_daily = 7\ngrace = \"1h\"\n",
            8,
            "unknown field `grace`",
        ),
    ];
    for (section, line, words) in cases {
        let bad = env.path("bad.toml");
        std::fs::write(&bad, format!("{sources}{section}")).unwrap();
        for args in [&["forget", "--dry-run"][..], &["forget"], &["list"]] {
            let out = run(&env, &bad, args).expect_code(78);
            let where_ = format!("{}: line {line}: ", bad.display());
            assert!(
                out.stderr.contains(&where_),
                "{section:?} names {where_}:\n{}",
                out.stderr
            );
            assert!(out.stderr.contains(words), "{section:?}: {}", out.stderr);
            assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.stderr);
        }
    }
    // The top-level rules are read when forget uses them (its flags replace
    // them), and named by line the same way.
    let bad = env.path("bad.toml");
    std::fs::write(&bad, format!("{sources}keep_daily = -2\n")).unwrap();
    let out = run(&env, &bad, &["forget", "--dry-run"]).expect_code(78);
    let where_ = format!("{}: line 6: [retention] keep_daily: -2 is not a count", bad.display());
    assert!(out.stderr.contains(&where_), "{}", out.stderr);
    run(&env, &bad, &["forget", "--dry-run", "--keep-last", "1"]).expect_code(0);
    // A set that would remove every snapshot it judges is refused too.
    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        format!("{sources}[retention.partial]\nkeep_tags = [\"relaese\"]\n"),
    )
    .unwrap();
    let out = run(&env, &bad, &["forget"]).expect_code(64);
    assert!(out.stderr.contains("retention.partial"), "{}", out.stderr);
    assert!(out.stderr.contains("would remove every snapshot"), "{}", out.stderr);
    assert_eq!(repo_state(&env), before, "refusals change nothing");
    assert_eq!(env.list().len(), 3);
}
