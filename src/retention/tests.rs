//! Retention's tests. The policy vectors (restic's golden files and our own
//! cases: snapshot times and tags, a policy, a time zone, and the expected
//! verdict and reasons for every snapshot) are data, one case per file in
//! `testdata/` (format in `testdata/README.md`), checked by one table-driven
//! test; what is left here is parsing, wording and emptiness.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Bucket as B;
use super::Reason as R;
use super::*;

/// `"2024-05-06 11:00:00"` (optionally with a fraction) read as UTC.
fn ts(s: &str) -> Timestamp {
    format!("{}Z", s.replace(' ', "T")).parse().unwrap()
}

fn untagged(times: &[&str]) -> Vec<Candidate<'static>> {
    times.iter().map(|t| Candidate { time: ts(t), tags: &[] }).collect()
}

/// The reasons per candidate, after checking `keep` agrees with them.
fn reasons(decisions: Vec<Decision>) -> Vec<Vec<Reason>> {
    decisions
        .into_iter()
        .map(|d| {
            assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
            d.reasons
        })
        .collect()
}

fn run(policy: &Policy, times: &[&str], tz: &TimeZone) -> Vec<Vec<Reason>> {
    reasons(apply(policy, &untagged(times), tz))
}

fn within(s: &str) -> Reason {
    R::Within(s.to_string())
}

fn with_daily(c: Count) -> Policy {
    Policy {
        daily: Some(c),
        ..Policy::default()
    }
}

fn with_within(s: &str) -> Policy {
    Policy {
        within: Some(parse_duration(s).unwrap()),
        ..Policy::default()
    }
}

/// One file of `testdata/`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    #[allow(dead_code)]
    #[serde(default)]
    source: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    notes: Vec<String>,
    /// `UTC`, a tz database name, or a fixed offset such as `+02` or `-05:30`.
    time_zone: String,
    /// Given: `apply_at` with this as the current time; else `apply`.
    #[serde(default)]
    now: Option<Timestamp>,
    policy: CasePolicy,
    snapshots: Vec<CaseSnapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePolicy {
    last: Option<CaseCount>,
    hourly: Option<CaseCount>,
    daily: Option<CaseCount>,
    weekly: Option<CaseCount>,
    monthly: Option<CaseCount>,
    yearly: Option<CaseCount>,
    /// restic's spelling, e.g. `1m14d`.
    within: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// A number, or `"unlimited"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum CaseCount {
    N(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSnapshot {
    time: Timestamp,
    #[serde(default)]
    tags: Vec<String>,
    keep: bool,
    /// `Reason`'s `Display`, restic's words, in order.
    reasons: Vec<String>,
}

fn case_count(c: Option<CaseCount>) -> Result<Option<Count>, String> {
    match c {
        None => Ok(None),
        Some(CaseCount::N(n)) => Ok(Some(Count::N(n))),
        Some(CaseCount::Word(w)) => w.parse().map(Some),
    }
}

fn case_time_zone(name: &str) -> Result<TimeZone, String> {
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    if let Some(sign) = name.chars().next().filter(|c| *c == '+' || *c == '-') {
        let (hours, minutes) = name[1..].split_once(':').unwrap_or((&name[1..], "0"));
        let seconds = hours.parse::<i32>().map_err(|e| e.to_string())? * 3600
            + minutes.parse::<i32>().map_err(|e| e.to_string())? * 60;
        let seconds = if sign == '-' { -seconds } else { seconds };
        return Offset::from_seconds(seconds)
            .map(TimeZone::fixed)
            .map_err(|e| e.to_string());
    }
    // The POSIX rule equals Berlin's tzdb entry for every date used, so the
    // cases do not depend on the host having a tz database.
    TimeZone::get(name).or_else(|e| match name {
        "Europe/Berlin" => TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").map_err(|e| e.to_string()),
        _ => Err(e.to_string()),
    })
}

/// Run one case; the first disagreement, if any.
fn check_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Case = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let p = case.policy;
    let policy = Policy {
        last: case_count(p.last)?,
        hourly: case_count(p.hourly)?,
        daily: case_count(p.daily)?,
        weekly: case_count(p.weekly)?,
        monthly: case_count(p.monthly)?,
        yearly: case_count(p.yearly)?,
        within: p.within.as_deref().map(parse_duration).transpose()?,
        tags: p.tags,
    };
    let tz = case_time_zone(&case.time_zone)?;
    let group: Vec<Candidate> = case
        .snapshots
        .iter()
        .map(|s| Candidate {
            time: s.time,
            tags: &s.tags,
        })
        .collect();
    let decisions = match case.now {
        Some(now) => apply_at(&policy, &group, &tz, now),
        None => apply(&policy, &group, &tz),
    };
    for (i, (want, got)) in case.snapshots.iter().zip(&decisions).enumerate() {
        let got_reasons: Vec<String> = got.reasons.iter().map(ToString::to_string).collect();
        if got.keep != want.keep || got_reasons != want.reasons {
            return Err(format!(
                "snapshot {i} ({}) under {policy}: expected keep {} {:?}, got keep {} {:?}",
                want.time, want.keep, want.reasons, got.keep, got_reasons
            ));
        }
    }
    Ok(())
}

fn testdata() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/retention/testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Every case in `testdata/`, each reported by its file name.
#[test]
fn policy_vectors() {
    let files = testdata();
    // The 65 cases carried over from the Rust tables; more may be added.
    assert!(files.len() >= 65, "only {} cases in testdata/", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            check_case(f)
                .err()
                .map(|e| format!("{}: {e}", f.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn empty_group_and_empty_policy() {
    let p = with_daily(Count::N(3));
    assert!(apply(&p, &[], &TimeZone::UTC).is_empty());
    assert!(apply(&Policy::default(), &[], &TimeZone::UTC).is_empty());

    let times = ["2024-05-01 00:00:00", "2024-05-02 00:00:00"];
    let all_kept = vec![vec![R::NoPolicy]; 2];
    assert!(Policy::default().is_empty());
    assert_eq!(run(&Policy::default(), &times, &TimeZone::UTC), all_kept);

    // Zero counts and a zero duration are "no rule", as in restic.
    let zeros = Policy {
        last: Some(Count::N(0)),
        yearly: Some(Count::N(0)),
        within: Some(parse_duration("").unwrap()),
        ..Policy::default()
    };
    assert!(zeros.is_empty());
    assert_eq!(run(&zeros, &times, &TimeZone::UTC), all_kept);

    assert!(!with_daily(Count::Unlimited).is_empty());
    assert!(!with_within("1h").is_empty());
    let tagged = Policy {
        tags: vec![String::new()],
        ..Policy::default()
    };
    assert!(!tagged.is_empty());
}

/// restic's TestExpireSnapshotOps (empty-ness part).
#[test]
fn restic_expire_snapshot_ops() {
    assert!(Policy::default().is_empty());
    let p = Policy {
        daily: Some(Count::N(7)),
        weekly: Some(Count::N(2)),
        monthly: Some(Count::N(3)),
        yearly: Some(Count::N(10)),
        ..Policy::default()
    };
    assert!(!p.is_empty());
}

#[test]
fn parse_duration_accepts_restic_syntax() {
    let d = |years, months, days, hours| KeepWithin {
        years,
        months,
        days,
        hours,
    };
    assert_eq!(parse_duration("2h"), Ok(d(0, 0, 0, 2)));
    assert_eq!(parse_duration("7d"), Ok(d(0, 0, 7, 0)));
    assert_eq!(parse_duration("30m"), Ok(d(0, 30, 0, 0)));
    assert_eq!(parse_duration("1y2m"), Ok(d(1, 2, 0, 0)));
    assert_eq!(parse_duration("1y5m7d2h"), Ok(d(1, 5, 7, 2)));
    assert_eq!(parse_duration("2h1y"), Ok(d(1, 0, 0, 2)));
    assert_eq!(parse_duration("  3d\n"), Ok(d(0, 0, 3, 0)));
    assert_eq!(parse_duration("1d2d"), Ok(d(0, 0, 2, 0)));
    assert_eq!(parse_duration("007d"), Ok(d(0, 0, 7, 0)));
    assert_eq!(parse_duration(""), Ok(d(0, 0, 0, 0)));
    assert_eq!("1m14d".parse::<KeepWithin>(), Ok(d(0, 1, 14, 0)));
}

#[test]
fn parse_duration_rejects_garbage() {
    for bad in [
        "30",
        "d",
        "1w",
        "1s",
        "1d 2h",
        "1.5d",
        "-1d",
        "1d-2h",
        "+1d",
        "-",
        "99999999999d",
        "1é",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert!(parse_duration("-1d").unwrap_err().contains("negative"));
    assert!(parse_duration("30").unwrap_err().contains("no unit"));
    assert!(parse_duration("1w").unwrap_err().contains("invalid unit 'w'"));
}

#[test]
fn count_parses_like_restic_flags() {
    assert_eq!("unlimited".parse::<Count>(), Ok(Count::Unlimited));
    assert_eq!("7".parse::<Count>(), Ok(Count::N(7)));
    assert_eq!("0".parse::<Count>(), Ok(Count::N(0)));
    assert_eq!(
        "-1".parse::<Count>(),
        Err("negative values not allowed, use 'unlimited' instead".to_string())
    );
    assert!("seven".parse::<Count>().is_err());
    assert!("".parse::<Count>().is_err());
    assert_eq!(Count::Unlimited.to_string(), "unlimited");
    assert_eq!(Count::N(3).to_string(), "3");
}

#[test]
fn display_uses_restic_wording() {
    let p = Policy {
        last: Some(Count::N(2)),
        hourly: Some(Count::N(0)),
        daily: Some(Count::N(7)),
        weekly: Some(Count::Unlimited),
        monthly: None,
        yearly: None,
        within: Some(parse_duration("2d").unwrap()),
        tags: vec!["prod".to_string(), "a, b".to_string()],
    };
    assert_eq!(
        p.to_string(),
        "keep 2 latest, 7 daily, all weekly snapshots and all snapshots with \
         tags [[prod] [a, b]] and all snapshots within 2d of the newest"
    );
    assert_eq!(Policy::default().to_string(), "no retention rule given");
    assert_eq!(
        with_within("1y1d1m").to_string(),
        "keep all snapshots within 1y1m1d of the newest"
    );
    let tags_only = Policy {
        tags: vec!["foo".to_string()],
        ..Policy::default()
    };
    assert_eq!(tags_only.to_string(), "keep all snapshots with tags [[foo]]");
    assert_eq!(with_daily(Count::N(5)).to_string(), "keep 5 daily snapshots");

    let words: Vec<String> = [
        R::Last,
        R::Hourly,
        R::Daily,
        R::Weekly,
        R::Monthly,
        R::Yearly,
        R::Oldest(B::Monthly),
        within("1m14d"),
        R::Tag("foo, bar".to_string()),
        R::Tag(String::new()),
        R::NoPolicy,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        words,
        [
            "last snapshot",
            "hourly snapshot",
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            "yearly snapshot",
            "oldest monthly snapshot",
            "within 1m14d",
            "has tags [foo, bar]",
            "has tags []",
            "no retention rule given",
        ]
    );
    assert_eq!(KeepWithin::default().to_string(), "");
}

#[test]
fn each_reason_names_the_setting_that_gave_it() {
    let cases = [
        (R::Last, Some("keep_last")),
        (R::Hourly, Some("keep_hourly")),
        (R::Daily, Some("keep_daily")),
        (R::Oldest(B::Daily), Some("keep_daily")),
        (R::Weekly, Some("keep_weekly")),
        (R::Oldest(B::Weekly), Some("keep_weekly")),
        (R::Monthly, Some("keep_monthly")),
        (R::Yearly, Some("keep_yearly")),
        (R::Oldest(B::Yearly), Some("keep_yearly")),
        (within("7d"), Some("keep_within")),
        (R::Tag("a,b".into()), Some("keep_tags")),
        (R::NoPolicy, None),
    ];
    for (reason, setting) in cases {
        assert_eq!(reason.setting(), setting, "{reason}");
    }
}
