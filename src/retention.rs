//! Snapshot retention (`forget`) with restic's semantics, so that users who
//! know `restic forget --keep-*` get exactly the same answer from Lifeboat.
//!
//! Reference: restic v0.18.0 (commit d401ad6c1ec93a8fbcfcd9f6855a7a4468878ec2),
//! `internal/restic/snapshot_policy.go`, `internal/restic/duration.go`,
//! `internal/restic/tag_list.go`, `cmd/restic/cmd_forget.go` and
//! `doc/060_forget.rst`. The policy logic is unchanged on restic master as of
//! commit a80be1478a4c537f8396e0db2b05120aa78f11e0 (v0.19.1+), where the files
//! moved to `internal/data/`.
//!
//! Deliberate differences from restic, all at the edges:
//! - An empty policy keeps everything (reason [`Reason::NoPolicy`]) instead of
//!   restic's "remove everything" under `--unsafe-allow-remove-all`; callers
//!   are expected to refuse via [`Policy::is_empty`].
//! - [`apply`] takes "the latest snapshot" to be the newest in the group. restic
//!   ignores snapshots dated in the future (clock skew) when picking it; use
//!   [`apply_at`] with the current time for that behaviour.
//! - `--keep-within-{hourly,daily,...}` are not modelled.
//! - Buckets are computed in the caller's time zone; restic uses the zone each
//!   snapshot's timestamp was parsed with (normally the local zone).

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Span, Timestamp};

/// How many snapshots a counting rule may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// `N(0)` disables the rule, as `--keep-daily 0` does in restic.
    N(u32),
    /// restic's `unlimited` (stored as -1 there).
    Unlimited,
}

impl Count {
    fn is_active(self) -> bool {
        self != Count::N(0)
    }

    /// `None` stands for "no limit".
    fn budget(self) -> Option<u32> {
        match self {
            Count::N(n) => Some(n),
            Count::Unlimited => None,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl FromStr for Count {
    type Err = String;

    /// Accepts what restic's `--keep-*` flags accept: a non-negative integer or
    /// `unlimited`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" {
            return Ok(Count::Unlimited);
        }
        if let Some(rest) = s.strip_prefix('-')
            && !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("negative values not allowed, use 'unlimited' instead".to_string());
        }
        s.parse::<u32>()
            .map(Count::N)
            .map_err(|_| format!("invalid count {s:?}: expected a number or 'unlimited'"))
    }
}

/// A `--keep-within` duration: calendar units, as restic's `Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeepWithin {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl KeepWithin {
    /// A zero duration is "no rule", as in restic.
    pub fn is_zero(&self) -> bool {
        *self == KeepWithin::default()
    }
}

impl fmt::Display for KeepWithin {
    /// restic's spelling (`1y2m3d4h`, zero units omitted), so reasons read the
    /// same as restic's. A zero duration prints as the empty string, like restic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for KeepWithin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

/// Parses restic's duration syntax: `<n><unit>` repeated, units `y` (years),
/// `m` (months, not minutes), `d` (days) and `h` (hours), e.g. `1y5m7d2h`.
///
/// Mirrors restic's `ParseDuration` quirks: surrounding whitespace is ignored,
/// a repeated unit overwrites the earlier one (`1d2d` is `2d`), and the empty
/// string is the zero duration (which means "no rule"). Negative numbers,
/// which restic's parser accepts but `forget` then rejects, are rejected here.
pub fn parse_duration(s: &str) -> Result<KeepWithin, String> {
    let mut out = KeepWithin::default();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (negative, unsigned) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let digits = unsigned.find(|c: char| !c.is_ascii_digit()).unwrap_or(unsigned.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: no number found"));
        }
        let (number, after) = unsigned.split_at(digits);
        let Some(unit) = after.chars().next() else {
            return Err(format!("invalid duration {s:?}: no unit found after number {number}"));
        };
        if negative {
            return Err(format!("invalid duration {s:?}: negative values are not allowed"));
        }
        let n: u32 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number {number} is too large"))?;
        match unit {
            'y' => out.years = n,
            'm' => out.months = n,
            'd' => out.days = n,
            'h' => out.hours = n,
            other => {
                return Err(format!(
                    "invalid duration {s:?}: invalid unit {other:?} after number {n} \
                     (use y, m (months), d or h)"
                ));
            }
        }
        rest = &after[unit.len_utf8()..];
    }
    Ok(out)
}

/// What to keep. A snapshot is kept if any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`: the newest N.
    pub last: Option<Count>,
    /// `--keep-hourly`: the newest in each of the last N hours that have one.
    pub hourly: Option<Count>,
    /// `--keep-daily`: the newest in each of the last N days that have one.
    pub daily: Option<Count>,
    /// `--keep-weekly`: the newest in each of the last N ISO weeks that have one.
    pub weekly: Option<Count>,
    /// `--keep-monthly`: the newest in each of the last N months that have one.
    pub monthly: Option<Count>,
    /// `--keep-yearly`: the newest in each of the last N years that have one.
    pub yearly: Option<Count>,
    /// `--keep-within`: every snapshot this close to the newest (see [`apply_at`]).
    pub within: Option<KeepWithin>,
    /// Each entry is a tag list: `"a,b"` keeps snapshots having both `a` and
    /// `b`; entries are alternatives. `""` matches untagged snapshots.
    pub tags: Vec<String>,
}

impl Policy {
    /// No rule given (zero counts and zero durations count as absent, as in
    /// restic). Callers should refuse to forget anything with such a policy.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(c, _)| !c.is_some_and(Count::is_active))
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }

    fn counts(&self) -> [(Option<Count>, Rule); 6] {
        [
            (self.last, Rule::Last),
            (self.hourly, Rule::Bucket(Bucket::Hourly)),
            (self.daily, Rule::Bucket(Bucket::Daily)),
            (self.weekly, Rule::Bucket(Bucket::Weekly)),
            (self.monthly, Rule::Bucket(Bucket::Monthly)),
            (self.yearly, Rule::Bucket(Bucket::Yearly)),
        ]
    }

    fn active_within(&self) -> Option<KeepWithin> {
        self.within.filter(|w| !w.is_zero())
    }
}

impl fmt::Display for Policy {
    /// restic's wording, e.g. `keep 2 latest, 7 daily snapshots and all
    /// snapshots with tags [[prod]] and all snapshots within 2d of the newest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let counts: Vec<String> = self
            .counts()
            .iter()
            .filter_map(|&(count, rule)| {
                let word = match rule {
                    Rule::Last => "latest",
                    Rule::Bucket(b) => b.word(),
                };
                match count? {
                    Count::N(0) => None,
                    Count::N(n) => Some(format!("{n} {word}")),
                    Count::Unlimited => Some(format!("all {word}")),
                }
            })
            .collect();
        if !counts.is_empty() {
            s = format!("{} snapshots", counts.join(", "));
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|t| bracket_tag_list(t)).collect();
            s.push_str(&format!("all snapshots with tags [{}]", lists.join(" ")));
        }
        if let Some(w) = self.active_within() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!("all snapshots within {w} of the newest"));
        }
        if s.is_empty() {
            f.write_str("no retention rule given")
        } else {
            write!(f, "keep {s}")
        }
    }
}

/// One snapshot of the group being pruned.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// When it was taken.
    pub time: Timestamp,
    /// Its tags, matched against [`Policy::tags`].
    pub tags: &'a [String],
}

/// The calendar periods of the bucket rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Calendar hours, in the caller's time zone.
    Hourly,
    /// Calendar days.
    Daily,
    /// ISO 8601 weeks (Monday first, the week-numbering year).
    Weekly,
    /// Calendar months.
    Monthly,
    /// Calendar years.
    Yearly,
}

impl Bucket {
    fn word(self) -> &'static str {
        match self {
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }

    /// Same integer encoding as restic (`YYYYMMDDHH`, `YYYYMMDD`, `YYYYWW`
    /// with the ISO week-numbering year, `YYYYMM`, `YYYY`).
    fn key(self, dt: DateTime) -> i64 {
        let (y, m, d, h) = (
            i64::from(dt.year()),
            i64::from(dt.month()),
            i64::from(dt.day()),
            i64::from(dt.hour()),
        );
        match self {
            Bucket::Hourly => y * 1_000_000 + m * 10_000 + d * 100 + h,
            Bucket::Daily => y * 10_000 + m * 100 + d,
            Bucket::Weekly => {
                let iso = dt.date().iso_week_date();
                i64::from(iso.year()) * 100 + i64::from(iso.week())
            }
            Bucket::Monthly => y * 100 + m,
            Bucket::Yearly => y,
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Why a snapshot is kept. `Display` gives restic's words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Kept by [`Policy::last`].
    Last,
    /// Kept by [`Policy::hourly`].
    Hourly,
    /// Kept by [`Policy::daily`].
    Daily,
    /// Kept by [`Policy::weekly`].
    Weekly,
    /// Kept by [`Policy::monthly`].
    Monthly,
    /// Kept by [`Policy::yearly`].
    Yearly,
    /// The group's oldest snapshot, kept because the rule still had count left
    /// although its bucket was already kept (restic >= 0.16, labelled since 0.18).
    Oldest(Bucket),
    /// The `--keep-within` duration, in restic's spelling (`1m14d`).
    Within(String),
    /// The [`Policy::tags`] entry that matched, verbatim.
    Tag(String),
    /// The policy has no rule; everything is kept so nothing is lost by mistake.
    NoPolicy,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last => f.write_str("last snapshot"),
            Reason::Hourly => f.write_str("hourly snapshot"),
            Reason::Daily => f.write_str("daily snapshot"),
            Reason::Weekly => f.write_str("weekly snapshot"),
            Reason::Monthly => f.write_str("monthly snapshot"),
            Reason::Yearly => f.write_str("yearly snapshot"),
            Reason::Oldest(b) => write!(f, "oldest {b} snapshot"),
            Reason::Within(d) => write!(f, "within {d}"),
            Reason::Tag(list) => write!(f, "has tags {}", bracket_tag_list(list)),
            Reason::NoPolicy => f.write_str("no retention rule given"),
        }
    }
}

/// The verdict for one candidate. `reasons` lists every rule that kept it, in
/// restic's order: tags, within, last, hourly, daily, weekly, monthly, yearly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether any rule keeps the snapshot.
    pub keep: bool,
    /// Every rule that kept it; empty when removed.
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Bucket(Bucket),
}

/// One decision per candidate, in the candidates' order.
///
/// Candidates are walked newest first; equal timestamps keep their input order
/// (restic uses a stable sort too), so among identical times the earlier
/// candidate counts as the newer one. `--keep-within` is measured back from
/// the newest candidate, not from now; bucket boundaries and calendar
/// arithmetic use `tz`.
///
/// ```
/// use jiff::tz::TimeZone;
/// use lifeboat::retention::{Candidate, Count, Policy, Reason, apply};
///
/// let untagged: Vec<String> = Vec::new();
/// let times = ["2026-03-03T02:00:00Z", "2026-03-02T14:00:00Z", "2026-03-02T02:00:00Z", "2026-03-01T02:00:00Z"];
/// let group: Vec<Candidate> = times
///     .iter()
///     .map(|t| Candidate { time: t.parse().unwrap(), tags: &untagged })
///     .collect();
/// // `--keep-last 1 --keep-daily 2`
/// let policy = Policy { last: Some(Count::N(1)), daily: Some(Count::N(2)), ..Policy::default() };
/// assert_eq!(policy.to_string(), "keep 1 latest, 2 daily snapshots");
///
/// let decisions = apply(&policy, &group, &TimeZone::UTC);
/// let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
/// assert_eq!(kept, [true, true, false, false]);
/// assert_eq!(decisions[0].reasons, [Reason::Last, Reason::Daily]);
/// assert_eq!(decisions[1].reasons, [Reason::Daily]);
/// ```
pub fn apply(policy: &Policy, group: &[Candidate<'_>], tz: &TimeZone) -> Vec<Decision> {
    evaluate(policy, group, tz, None)
}

/// Like [`apply`], but candidates dated at or after `now` are ignored when
/// picking the newest snapshot for `--keep-within`, as restic does so that a
/// clock-skewed snapshot from the future cannot expire everything else. If all
/// candidates are in the future every one of them counts as within.
pub fn apply_at(policy: &Policy, group: &[Candidate<'_>], tz: &TimeZone, now: Timestamp) -> Vec<Decision> {
    evaluate(policy, group, tz, Some(now))
}

fn evaluate(policy: &Policy, group: &[Candidate<'_>], tz: &TimeZone, now: Option<Timestamp>) -> Vec<Decision> {
    let mut decisions = vec![Decision::default(); group.len()];
    if group.is_empty() {
        return decisions;
    }
    if policy.is_empty() {
        for d in &mut decisions {
            d.keep = true;
            d.reasons.push(Reason::NoPolicy);
        }
        return decisions;
    }

    let mut order: Vec<usize> = (0..group.len()).collect();
    // `sort_by` is stable, which is what makes ties deterministic.
    order.sort_by(|&a, &b| group[b].time.cmp(&group[a].time));

    let tag_lists: Vec<(&String, Vec<&str>)> = policy.tags.iter().map(|entry| (entry, split_tag_list(entry))).collect();

    // Outer `None`: no within rule. Inner `None`: the cutoff lies before the
    // representable range, so everything is within.
    let within = policy.active_within().map(|w| {
        let newest = group
            .iter()
            .map(|c| c.time)
            .filter(|&t| now.is_none_or(|now| t < now))
            .max();
        (w.to_string(), newest.and_then(|n| within_cutoff(n, w, tz)))
    });

    struct State {
        rule: Rule,
        left: Option<u32>,
        last_key: Option<i64>,
    }
    let mut rules: Vec<State> = policy
        .counts()
        .iter()
        .filter_map(|&(count, rule)| {
            let count = count.filter(|c| c.is_active())?;
            Some(State {
                rule,
                left: count.budget(),
                last_key: None,
            })
        })
        .collect();

    let oldest = order.len() - 1;
    for (nr, &idx) in order.iter().enumerate() {
        let cand = &group[idx];
        let reasons = &mut decisions[idx].reasons;

        for (entry, list) in &tag_lists {
            if has_tags(list, cand.tags) {
                reasons.push(Reason::Tag((*entry).clone()));
            }
        }

        if let Some((label, cutoff)) = &within
            && cutoff.is_none_or(|c| cand.time > c)
        {
            reasons.push(Reason::Within(label.clone()));
        }

        let local = tz.to_datetime(cand.time);
        for st in &mut rules {
            if st.left == Some(0) {
                continue;
            }
            let key = match st.rule {
                // Every snapshot is its own "bucket" for keep-last.
                Rule::Last => nr as i64,
                Rule::Bucket(b) => b.key(local),
            };
            let same_bucket = st.last_key == Some(key);
            // restic also keeps the oldest snapshot while a rule still has
            // count left, so a short history is not cut shorter than needed.
            if same_bucket && nr != oldest {
                continue;
            }
            reasons.push(match (st.rule, same_bucket) {
                (Rule::Last, _) => Reason::Last,
                (Rule::Bucket(b), true) => Reason::Oldest(b),
                (Rule::Bucket(Bucket::Hourly), false) => Reason::Hourly,
                (Rule::Bucket(Bucket::Daily), false) => Reason::Daily,
                (Rule::Bucket(Bucket::Weekly), false) => Reason::Weekly,
                (Rule::Bucket(Bucket::Monthly), false) => Reason::Monthly,
                (Rule::Bucket(Bucket::Yearly), false) => Reason::Yearly,
            });
            st.last_key = Some(key);
            if let Some(left) = &mut st.left {
                *left -= 1;
            }
        }

        decisions[idx].keep = !decisions[idx].reasons.is_empty();
    }
    decisions
}

/// restic computes the cutoff with Go's `latest.AddDate(-y, -m, -d)` followed
/// by `.Add(-h hours)`. `AddDate` normalises an out-of-range day by rolling
/// over rather than clamping (2021-03-31 minus one month is "2021-02-31", i.e.
/// 2021-03-03, where `jiff::Span` arithmetic would give 2021-02-28), and the
/// hours are absolute. Both are reproduced so results match restic exactly.
/// `None` means the cutoff precedes the supported range.
fn within_cutoff(latest: Timestamp, w: KeepWithin, tz: &TimeZone) -> Option<Timestamp> {
    let local = tz.to_datetime(latest);
    let month_index =
        i64::from(local.year()) * 12 + i64::from(local.month()) - 1 - i64::from(w.years) * 12 - i64::from(w.months);
    let year = i16::try_from(month_index.div_euclid(12)).ok()?;
    let month = i8::try_from(month_index.rem_euclid(12) + 1).ok()?;
    let day_offset = i64::from(local.day()) - 1 - i64::from(w.days);
    let date = Date::new(year, month, 1)
        .ok()?
        .checked_add(Span::new().try_days(day_offset).ok()?)
        .ok()?;
    go_wall_to_instant(date.to_datetime(local.time()), tz)?
        .checked_sub(SignedDuration::from_hours(i64::from(w.hours)))
        .ok()
}

/// Go's `time.Date` resolution of a wall-clock time in a zone: look up the
/// offset at the wall time read as UTC, then once more at the resulting
/// instant. For a repeated hour this can pick either occurrence depending on
/// the zone, unlike jiff's fixed "compatible" rule, so it is spelled out.
fn go_wall_to_instant(wall: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    let first = tz.to_offset(Offset::UTC.to_timestamp(wall).ok()?);
    let guess = first.to_timestamp(wall).ok()?;
    tz.to_offset(guess).to_timestamp(wall).ok()
}

/// restic's `splitTagList`: comma separated, whitespace trimmed, empty items
/// kept (so `""` is the one-element list `[""]`).
fn split_tag_list(entry: &str) -> Vec<&str> {
    entry.split(',').map(str::trim).collect()
}

fn bracket_tag_list(entry: &str) -> String {
    format!("[{}]", split_tag_list(entry).join(", "))
}

/// restic's `Snapshot.HasTags`, quirks included: an empty item matches an
/// untagged snapshot and short-circuits to true; otherwise every item must be
/// present.
fn has_tags(list: &[&str], tags: &[String]) -> bool {
    for want in list {
        if want.is_empty() && tags.is_empty() {
            return true;
        }
        if !tags.iter().any(|t| t == want) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
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

    fn berlin() -> TimeZone {
        // The POSIX rule equals Berlin's tzdb entry for every date used here,
        // so the tests do not depend on the host having a tz database.
        TimeZone::get("Europe/Berlin").unwrap_or_else(|_| TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap())
    }

    fn plus2() -> TimeZone {
        TimeZone::fixed(jiff::tz::offset(2))
    }

    fn within(s: &str) -> Reason {
        R::Within(s.to_string())
    }

    const HOURLY: Policy = Policy {
        last: None,
        hourly: Some(Count::N(10)),
        daily: None,
        weekly: None,
        monthly: None,
        yearly: None,
        within: None,
        tags: Vec::new(),
    };

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

    #[test]
    fn hour_boundary_utc_and_oldest() {
        let times = [
            "2024-05-06 11:00:00",
            "2024-05-06 12:00:00",
            "2024-05-06 10:59:59",
            "2024-05-06 11:59:59",
            "2024-05-06 10:00:00",
        ];
        // Newest first: 12:00 (h12), 11:59:59 (h11), 11:00 (h11 again),
        // 10:59:59 (h10), 10:00 (h10 again, but the oldest with count left).
        assert_eq!(
            run(&HOURLY, &times, &TimeZone::UTC),
            vec![
                vec![],
                vec![R::Hourly],
                vec![R::Hourly],
                vec![R::Hourly],
                vec![R::Oldest(B::Hourly)],
            ]
        );
        let two = Policy {
            hourly: Some(Count::N(2)),
            ..Policy::default()
        };
        assert_eq!(
            run(&two, &times, &TimeZone::UTC),
            vec![vec![], vec![R::Hourly], vec![], vec![R::Hourly], vec![]]
        );
    }

    #[test]
    fn hour_bucket_is_local_wall_clock_across_dst_fold() {
        // On 2021-10-31 Berlin falls back at 01:00 UTC: 00:30Z is 02:30 CEST
        // and 01:30Z is 02:30 CET, the same local hour.
        let times = [
            "2021-10-31 00:30:00",
            "2021-10-31 01:30:00",
            "2021-10-31 02:30:00",
            "2021-10-30 12:00:00",
        ];
        assert_eq!(
            run(&HOURLY, &times, &berlin()),
            vec![vec![], vec![R::Hourly], vec![R::Hourly], vec![R::Hourly]]
        );
        assert_eq!(
            run(&HOURLY, &times, &TimeZone::UTC),
            vec![vec![R::Hourly], vec![R::Hourly], vec![R::Hourly], vec![R::Hourly]]
        );
    }

    #[test]
    fn day_boundary_utc_and_berlin() {
        // 22:00Z on May 6 is already 00:00 on May 7 in Berlin (CEST, +2).
        let times = [
            "2024-05-06 22:00:00",
            "2024-05-06 21:59:59",
            "2024-05-06 12:00:00",
            "2024-05-05 12:00:00",
        ];
        let p = with_daily(Count::N(5));
        assert_eq!(
            run(&p, &times, &TimeZone::UTC),
            vec![vec![R::Daily], vec![], vec![], vec![R::Daily]]
        );
        assert_eq!(
            run(&p, &times, &berlin()),
            vec![vec![R::Daily], vec![R::Daily], vec![], vec![R::Daily]]
        );
    }

    #[test]
    fn week_boundary_utc_and_fixed_offset() {
        // 2024-05-05 is a Sunday (ISO 2024-W18), 2024-05-06 a Monday (W19).
        // Sunday 23:00Z is Monday 01:00 at +02:00.
        let times = [
            "2024-05-06 12:00:00",
            "2024-05-05 23:00:00",
            "2024-05-05 10:00:00",
            "2024-04-28 10:00:00",
        ];
        let p = Policy {
            weekly: Some(Count::N(10)),
            ..Policy::default()
        };
        assert_eq!(
            run(&p, &times, &TimeZone::UTC),
            vec![vec![R::Weekly], vec![R::Weekly], vec![], vec![R::Weekly]]
        );
        assert_eq!(
            run(&p, &times, &plus2()),
            vec![vec![R::Weekly], vec![], vec![R::Weekly], vec![R::Weekly]]
        );
    }

    #[test]
    fn week_uses_iso_year_around_2020_w53() {
        // 2020-12-28 (Mon) .. 2021-01-03 (Sun) are all ISO 2020-W53;
        // 2021-01-04 starts 2021-W01; 2020-12-27 is 2020-W52, 12-20 W51.
        let times = [
            "2021-01-04 12:00:00",
            "2021-01-03 12:00:00",
            "2020-12-31 12:00:00",
            "2020-12-28 12:00:00",
            "2020-12-27 12:00:00",
            "2020-12-20 12:00:00",
        ];
        let weekly = Policy {
            weekly: Some(Count::N(10)),
            ..Policy::default()
        };
        assert_eq!(
            run(&weekly, &times, &TimeZone::UTC),
            vec![
                vec![R::Weekly],
                vec![R::Weekly],
                vec![],
                vec![],
                vec![R::Weekly],
                vec![R::Weekly],
            ]
        );
        // keep-yearly uses the calendar year, not the ISO year.
        let yearly = Policy {
            yearly: Some(Count::N(10)),
            ..Policy::default()
        };
        assert_eq!(
            run(&yearly, &times, &TimeZone::UTC),
            vec![
                vec![R::Yearly],
                vec![],
                vec![R::Yearly],
                vec![],
                vec![],
                vec![R::Oldest(B::Yearly)],
            ]
        );
    }

    #[test]
    fn week_uses_iso_year_2024_12_30_is_2025_w01() {
        // 2024-12-30 (Mon) and 2025-01-05 (Sun) are both ISO 2025-W01;
        // 2024-12-29 is 2024-W52 and 2024-12-22 is 2024-W51.
        let times = [
            "2025-01-05 12:00:00",
            "2024-12-30 12:00:00",
            "2024-12-29 12:00:00",
            "2024-12-22 12:00:00",
        ];
        let weekly = Policy {
            weekly: Some(Count::N(10)),
            ..Policy::default()
        };
        assert_eq!(
            run(&weekly, &times, &TimeZone::UTC),
            vec![vec![R::Weekly], vec![], vec![R::Weekly], vec![R::Weekly]]
        );
        let both = Policy {
            weekly: Some(Count::N(10)),
            yearly: Some(Count::N(10)),
            ..Policy::default()
        };
        assert_eq!(
            run(&both, &times, &TimeZone::UTC),
            vec![
                vec![R::Weekly, R::Yearly],
                vec![R::Yearly],
                vec![R::Weekly],
                vec![R::Weekly, R::Oldest(B::Yearly)],
            ]
        );
    }

    #[test]
    fn month_boundary_utc_and_berlin() {
        // 2024-03-31 22:30Z is 00:30 on April 1 in Berlin (CEST since that
        // morning).
        let times = [
            "2024-03-31 22:30:00",
            "2024-03-31 21:30:00",
            "2024-03-15 12:00:00",
            "2024-02-10 12:00:00",
        ];
        let p = Policy {
            monthly: Some(Count::N(5)),
            ..Policy::default()
        };
        assert_eq!(
            run(&p, &times, &TimeZone::UTC),
            vec![vec![R::Monthly], vec![], vec![], vec![R::Monthly]]
        );
        assert_eq!(
            run(&p, &times, &berlin()),
            vec![vec![R::Monthly], vec![R::Monthly], vec![], vec![R::Monthly]]
        );
    }

    #[test]
    fn year_boundary_utc_and_negative_offset() {
        // 2024-01-01 03:00Z is still 2023-12-31 22:00 at -05:00.
        let times = [
            "2024-01-01 03:00:00",
            "2024-06-01 12:00:00",
            "2023-07-01 12:00:00",
            "2022-07-01 12:00:00",
        ];
        let p = Policy {
            yearly: Some(Count::N(5)),
            ..Policy::default()
        };
        assert_eq!(
            run(&p, &times, &TimeZone::UTC),
            vec![vec![], vec![R::Yearly], vec![R::Yearly], vec![R::Yearly]]
        );
        let minus5 = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(
            run(&p, &times, &minus5),
            vec![vec![R::Yearly], vec![R::Yearly], vec![], vec![R::Yearly]]
        );
    }

    #[test]
    fn keep_last() {
        let times = [
            "2024-05-01 00:00:00",
            "2024-05-04 00:00:00",
            "2024-05-02 00:00:00",
            "2024-05-03 00:00:00",
        ];
        let p = |c| Policy {
            last: Some(c),
            ..Policy::default()
        };
        assert_eq!(
            run(&p(Count::N(2)), &times, &TimeZone::UTC),
            vec![vec![], vec![R::Last], vec![], vec![R::Last]]
        );
        // keep-last never marks "oldest": every snapshot is its own bucket.
        assert_eq!(run(&p(Count::N(10)), &times, &TimeZone::UTC), vec![vec![R::Last]; 4]);
        assert_eq!(
            run(&p(Count::Unlimited), &times, &TimeZone::UTC),
            vec![vec![R::Last]; 4]
        );
    }

    #[test]
    fn unlimited_and_exhausted_counts_with_oldest() {
        let times = [
            "2024-05-03 18:00:00",
            "2024-05-03 09:00:00",
            "2024-05-02 18:00:00",
            "2024-05-02 09:00:00",
            "2024-05-01 18:00:00",
            "2024-05-01 09:00:00",
        ];
        let daily = |c| run(&with_daily(c), &times, &TimeZone::UTC);
        let newest_per_day_and_oldest = vec![
            vec![R::Daily],
            vec![],
            vec![R::Daily],
            vec![],
            vec![R::Daily],
            vec![R::Oldest(B::Daily)],
        ];
        assert_eq!(daily(Count::Unlimited), newest_per_day_and_oldest);
        // One count left when the oldest is reached: kept as "oldest".
        assert_eq!(daily(Count::N(4)), newest_per_day_and_oldest);
        // Count used up exactly: the oldest is not kept.
        assert_eq!(
            daily(Count::N(3)),
            vec![vec![R::Daily], vec![], vec![R::Daily], vec![], vec![R::Daily], vec![],]
        );
        assert_eq!(
            daily(Count::N(2)),
            vec![vec![R::Daily], vec![], vec![R::Daily], vec![], vec![], vec![]]
        );
    }

    #[test]
    fn oldest_in_a_new_bucket_gets_the_plain_reason() {
        let times = ["2024-05-02 10:00:00", "2024-05-01 10:00:00"];
        assert_eq!(
            run(&with_daily(Count::N(5)), &times, &TimeZone::UTC),
            vec![vec![R::Daily], vec![R::Daily]]
        );
        assert_eq!(
            run(&with_daily(Count::N(1)), &times[..1], &TimeZone::UTC),
            vec![vec![R::Daily]]
        );
    }

    #[test]
    fn identical_times_keep_input_order() {
        let times = ["2024-05-10 12:00:00", "2024-05-10 12:00:00", "2024-05-10 10:00:00"];
        let last1 = Policy {
            last: Some(Count::N(1)),
            ..Policy::default()
        };
        assert_eq!(run(&last1, &times, &TimeZone::UTC), vec![vec![R::Last], vec![], vec![]]);
        let shuffled = [times[2], times[0], times[1]];
        assert_eq!(
            run(&last1, &shuffled, &TimeZone::UTC),
            vec![vec![], vec![R::Last], vec![]]
        );
        assert_eq!(
            run(&with_daily(Count::N(5)), &times, &TimeZone::UTC),
            vec![vec![R::Daily], vec![], vec![R::Oldest(B::Daily)]]
        );
    }

    #[test]
    fn within_days_has_strict_cutoff() {
        // Cutoff: 2024-05-10 12:00 - 7d = 2024-05-03 12:00, exclusive.
        let times = [
            "2024-05-03 12:00:01",
            "2024-05-10 12:00:00",
            "2024-05-03 12:00:00",
            "2024-05-01 00:00:00",
        ];
        assert_eq!(
            run(&with_within("7d"), &times, &TimeZone::UTC),
            vec![vec![within("7d")], vec![within("7d")], vec![], vec![]]
        );
    }

    #[test]
    fn within_month_rolls_over_like_go_add_date() {
        // 2021-03-31 minus one month is "2021-02-31", which Go normalises to
        // 2021-03-03 (not clamped to 02-28).
        let times = [
            "2021-03-31 10:00:00",
            "2021-03-03 10:00:01",
            "2021-03-03 10:00:00",
            "2021-03-01 00:00:00",
        ];
        assert_eq!(
            run(&with_within("1m"), &times, &TimeZone::UTC),
            vec![vec![within("1m")], vec![within("1m")], vec![], vec![]]
        );
    }

    #[test]
    fn within_month_across_february() {
        // 2024-03-15 08:00 minus one month is 2024-02-15 08:00.
        let times = ["2024-03-15 08:00:00", "2024-02-15 08:00:01", "2024-02-15 07:59:59"];
        assert_eq!(
            run(&with_within("1m"), &times, &TimeZone::UTC),
            vec![vec![within("1m")], vec![within("1m")], vec![]]
        );
    }

    #[test]
    fn within_year_from_leap_day() {
        // 2024-02-29 minus a year is "2023-02-29", i.e. 2023-03-01.
        let times = [
            "2024-02-29 12:00:00",
            "2023-03-01 12:00:01",
            "2023-03-01 11:00:00",
            "2023-02-28 13:00:00",
        ];
        assert_eq!(
            run(&with_within("1y"), &times, &TimeZone::UTC),
            vec![vec![within("1y")], vec![within("1y")], vec![], vec![]]
        );
    }

    #[test]
    fn within_borrows_months_across_years_and_adds_hours() {
        // 2024-01-15 00:00 - 1y1m1d = 2022-12-14 00:00.
        let times = ["2024-01-15 00:00:00", "2022-12-14 00:00:01", "2022-12-14 00:00:00"];
        assert_eq!(
            run(&with_within("1y1m1d"), &times, &TimeZone::UTC),
            vec![vec![within("1y1m1d")], vec![within("1y1m1d")], vec![]]
        );
        // 2024-05-10 12:00 - 1d2h = 2024-05-09 10:00.
        let times = ["2024-05-10 12:00:00", "2024-05-09 10:00:01", "2024-05-09 10:00:00"];
        assert_eq!(
            run(&with_within("1d2h"), &times, &TimeZone::UTC),
            vec![vec![within("1d2h")], vec![within("1d2h")], vec![]]
        );
    }

    #[test]
    fn within_day_is_a_calendar_day_across_spring_forward() {
        // 2024-03-31 12:00Z is 14:00 CEST; one calendar day earlier is
        // 2024-03-30 14:00 CET = 13:00Z, only 23 hours before.
        let times = [
            "2024-03-31 12:00:00",
            "2024-03-30 13:00:01",
            "2024-03-30 13:00:00",
            "2024-03-30 12:30:00",
        ];
        let p = with_within("1d");
        assert_eq!(
            run(&p, &times, &berlin()),
            vec![vec![within("1d")], vec![within("1d")], vec![], vec![]]
        );
        assert_eq!(run(&p, &times, &TimeZone::UTC), vec![vec![within("1d")]; 4]);
    }

    #[test]
    fn within_resolves_skipped_and_repeated_wall_times_like_go() {
        // Skipped: 2021-03-29 00:30Z is 02:30 CEST; 2021-03-28 02:30 does not
        // exist in Berlin and Go resolves it to 03:30 CEST = 01:30Z.
        let times = [
            "2021-03-29 00:30:00",
            "2021-03-28 01:30:01",
            "2021-03-28 01:30:00",
            "2021-03-28 01:00:00",
        ];
        assert_eq!(
            run(&with_within("1d"), &times, &berlin()),
            vec![vec![within("1d")], vec![within("1d")], vec![], vec![]]
        );
        // Repeated: 2021-11-01 01:30Z is 02:30 CET; 2021-10-31 02:30 happens
        // twice and Go picks the CET one, 01:30Z (not 00:30Z).
        let times = [
            "2021-11-01 01:30:00",
            "2021-10-31 01:30:01",
            "2021-10-31 01:30:00",
            "2021-10-31 00:45:00",
        ];
        assert_eq!(
            run(&with_within("1d"), &times, &berlin()),
            vec![vec![within("1d")], vec![within("1d")], vec![], vec![]]
        );
    }

    #[test]
    fn apply_at_ignores_future_snapshots_when_finding_the_newest() {
        let group = untagged(&[
            "2024-06-01 00:00:00",
            "2024-05-09 12:00:00",
            "2024-05-07 12:00:01",
            "2024-05-07 12:00:00",
        ]);
        let p = with_within("2d");
        // Newest not in the future: 05-09 12:00, so the cutoff is 05-07 12:00.
        let now = ts("2024-05-10 00:00:00");
        assert_eq!(
            reasons(apply_at(&p, &group, &TimeZone::UTC, now)),
            vec![vec![within("2d")], vec![within("2d")], vec![within("2d")], vec![]]
        );
        // Without a clock the future snapshot is the newest: cutoff 05-30.
        assert_eq!(
            reasons(apply(&p, &group, &TimeZone::UTC)),
            vec![vec![within("2d")], vec![], vec![], vec![]]
        );
        // Everything in the future: restic's "latest" is the zero time, so
        // every snapshot is within.
        let past = ts("2020-01-01 00:00:00");
        assert_eq!(
            reasons(apply_at(&p, &group, &TimeZone::UTC, past)),
            vec![vec![within("2d")]; 4]
        );
        // A snapshot exactly at `now` does not count as in the past either.
        let group = untagged(&["2024-05-10 00:00:00", "2024-05-09 00:00:00", "2024-05-08 00:00:00"]);
        assert_eq!(
            reasons(apply_at(&with_within("1d"), &group, &TimeZone::UTC, now)),
            vec![vec![within("1d")], vec![within("1d")], vec![]]
        );
    }

    #[test]
    fn keep_tags() {
        let tag_sets: Vec<Vec<String>> = [&["prod"][..], &["weekly"], &["weekly", "verified"], &[], &["other"]]
            .iter()
            .map(|s| s.iter().map(|t| t.to_string()).collect())
            .collect();
        let group: Vec<Candidate> = tag_sets
            .iter()
            .enumerate()
            .map(|(i, tags)| Candidate {
                time: ts(&format!("2024-05-0{} 12:00:00", 5 - i)),
                tags,
            })
            .collect();
        let keep = |entries: &[&str]| {
            let p = Policy {
                tags: entries.iter().map(|e| e.to_string()).collect(),
                ..Policy::default()
            };
            reasons(apply(&p, &group, &TimeZone::UTC))
        };
        let tag = |e: &str| R::Tag(e.to_string());

        // Entries are alternatives; commas inside an entry mean all-of.
        assert_eq!(
            keep(&["prod", " weekly , verified"]),
            vec![
                vec![tag("prod")],
                vec![],
                vec![tag(" weekly , verified")],
                vec![],
                vec![],
            ]
        );
        // Every matching entry is a reason.
        assert_eq!(
            keep(&["weekly", "weekly,verified"]),
            vec![
                vec![],
                vec![tag("weekly")],
                vec![tag("weekly"), tag("weekly,verified")],
                vec![],
                vec![],
            ]
        );
        // The empty entry matches untagged snapshots only.
        assert_eq!(keep(&[""]), vec![vec![], vec![], vec![], vec![tag("")], vec![]]);
        // restic quirk: an empty item short-circuits for untagged snapshots
        // but is an unsatisfiable requirement for tagged ones.
        assert_eq!(
            keep(&[",prod"]),
            vec![vec![], vec![], vec![], vec![tag(",prod")], vec![]]
        );
        // Nothing matches: everything goes (restic's CLI refuses this case).
        assert_eq!(keep(&["nope"]), vec![Vec::<Reason>::new(); 5]);
    }

    #[test]
    fn several_rules_record_every_reason() {
        let prod = vec!["prod".to_string()];
        let at = |t: &str| Candidate { time: ts(t), tags: &[] };
        // Fri 05-10 (W19), Thu 05-09 (W19), Sun 05-05 (W18), Sun 04-28 (W17).
        let group = vec![
            at("2024-05-05 12:00:00"),
            Candidate {
                time: ts("2024-05-10 12:00:00"),
                tags: &prod,
            },
            at("2024-04-28 12:00:00"),
            at("2024-05-10 08:00:00"),
            at("2024-05-09 12:00:00"),
        ];
        let p = Policy {
            last: Some(Count::N(1)),
            hourly: None,
            daily: Some(Count::N(2)),
            weekly: Some(Count::N(2)),
            monthly: Some(Count::N(3)),
            yearly: Some(Count::N(2)),
            within: Some(parse_duration("1d").unwrap()),
            tags: vec!["prod".to_string()],
        };
        assert_eq!(
            reasons(apply(&p, &group, &TimeZone::UTC)),
            vec![
                vec![R::Weekly],
                vec![
                    R::Tag("prod".to_string()),
                    within("1d"),
                    R::Last,
                    R::Daily,
                    R::Weekly,
                    R::Monthly,
                    R::Yearly,
                ],
                vec![R::Monthly, R::Oldest(B::Yearly)],
                vec![within("1d")],
                vec![R::Daily],
            ]
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

    /// The `--keep-daily 5` example in restic's doc/060_forget.rst.
    #[test]
    fn restic_doc_keep_daily_example() {
        let times = [
            "2025-04-21 11:00:00",
            "2025-04-22 11:00:00",
            "2025-04-23 11:00:00",
            "2025-04-24 11:00:00",
            "2025-04-25 11:00:00",
            "2025-04-25 23:00:00",
            "2025-04-28 11:00:00",
            "2025-04-29 11:00:00",
            "2025-05-01 11:00:00",
            "2025-05-02 11:00:00",
            "2025-05-02 23:00:00",
        ];
        let d = || vec![R::Daily];
        assert_eq!(
            run(&with_daily(Count::N(5)), &times, &TimeZone::UTC),
            vec![vec![], vec![], vec![], vec![], vec![], d(), d(), d(), d(), vec![], d(),]
        );
    }

    // restic's own vectors: the snapshot list of TestApplyPolicy in
    // internal/restic/snapshot_policy_test.go and the expected results from
    // its golden files internal/restic/testdata/policy_keep_snapshots_<n>
    // (restic v0.18.0), as (index into the list, time, reasons joined by ", ").
    // All times are UTC.
    const RESTIC_SNAPSHOTS: &[(&str, &[&str])] = &[
        ("2014-09-01 10:20:30", &[]),             // 0
        ("2014-09-02 10:20:30", &[]),             // 1
        ("2014-09-05 10:20:30", &[]),             // 2
        ("2014-09-06 10:20:30", &[]),             // 3
        ("2014-09-08 10:20:30", &[]),             // 4
        ("2014-09-09 10:20:30", &[]),             // 5
        ("2014-09-10 10:20:30", &[]),             // 6
        ("2014-09-11 10:20:30", &[]),             // 7
        ("2014-09-20 10:20:30", &[]),             // 8
        ("2014-09-22 10:20:30", &[]),             // 9
        ("2014-08-08 10:20:30", &[]),             // 10
        ("2014-08-10 10:20:30", &[]),             // 11
        ("2014-08-12 10:20:30", &[]),             // 12
        ("2014-08-13 10:20:30", &[]),             // 13
        ("2014-08-13 10:20:30.1", &[]),           // 14
        ("2014-08-15 10:20:30", &[]),             // 15
        ("2014-08-18 10:20:30", &[]),             // 16
        ("2014-08-20 10:20:30", &[]),             // 17
        ("2014-08-21 10:20:30", &[]),             // 18
        ("2014-08-22 10:20:30", &[]),             // 19
        ("2014-10-01 10:20:30", &["foo"]),        // 20
        ("2014-10-02 10:20:30", &["foo"]),        // 21
        ("2014-10-05 10:20:30", &["foo"]),        // 22
        ("2014-10-06 10:20:30", &["foo"]),        // 23
        ("2014-10-08 10:20:30", &["foo"]),        // 24
        ("2014-10-09 10:20:30", &["foo"]),        // 25
        ("2014-10-10 10:20:30", &["foo"]),        // 26
        ("2014-10-11 10:20:30", &["foo"]),        // 27
        ("2014-10-20 10:20:30", &["foo"]),        // 28
        ("2014-10-22 10:20:30", &["foo"]),        // 29
        ("2014-11-08 10:20:30", &["foo"]),        // 30
        ("2014-11-10 10:20:30", &["foo"]),        // 31
        ("2014-11-12 10:20:30", &["foo"]),        // 32
        ("2014-11-13 10:20:30", &["foo"]),        // 33
        ("2014-11-13 10:20:30.1", &["bar"]),      // 34
        ("2014-11-15 10:20:30", &["foo", "bar"]), // 35
        ("2014-11-18 10:20:30", &[]),             // 36
        ("2014-11-20 10:20:30", &[]),             // 37
        ("2014-11-21 10:20:30", &[]),             // 38
        ("2014-11-22 10:20:30", &[]),             // 39
        ("2015-09-01 10:20:30", &[]),             // 40
        ("2015-09-02 10:20:30", &[]),             // 41
        ("2015-09-05 10:20:30", &[]),             // 42
        ("2015-09-06 10:20:30", &[]),             // 43
        ("2015-09-08 10:20:30", &[]),             // 44
        ("2015-09-09 10:20:30", &[]),             // 45
        ("2015-09-10 10:20:30", &[]),             // 46
        ("2015-09-11 10:20:30", &[]),             // 47
        ("2015-09-20 10:20:30", &[]),             // 48
        ("2015-09-22 10:20:30", &[]),             // 49
        ("2015-08-08 10:20:30", &[]),             // 50
        ("2015-08-10 10:20:30", &[]),             // 51
        ("2015-08-12 10:20:30", &[]),             // 52
        ("2015-08-13 10:20:30", &[]),             // 53
        ("2015-08-13 10:20:30.1", &[]),           // 54
        ("2015-08-15 10:20:30", &[]),             // 55
        ("2015-08-18 10:20:30", &[]),             // 56
        ("2015-08-20 10:20:30", &[]),             // 57
        ("2015-08-21 10:20:30", &[]),             // 58
        ("2015-08-22 10:20:30", &[]),             // 59
        ("2015-10-01 10:20:30", &[]),             // 60
        ("2015-10-02 10:20:30", &[]),             // 61
        ("2015-10-05 10:20:30", &[]),             // 62
        ("2015-10-06 10:20:30", &[]),             // 63
        ("2015-10-08 10:20:30", &[]),             // 64
        ("2015-10-09 10:20:30", &[]),             // 65
        ("2015-10-10 10:20:30", &[]),             // 66
        ("2015-10-11 10:20:30", &[]),             // 67
        ("2015-10-20 10:20:30", &[]),             // 68
        ("2015-10-22 10:20:30", &[]),             // 69
        ("2015-10-22 10:20:30", &[]),             // 70
        ("2015-10-22 10:20:30", &["foo", "bar"]), // 71
        ("2015-10-22 10:20:30", &["foo", "bar"]), // 72
        ("2015-10-22 10:20:30", &["foo", "bar"]), // 73
        ("2015-11-08 10:20:30", &[]),             // 74
        ("2015-11-10 10:20:30", &[]),             // 75
        ("2015-11-12 10:20:30", &[]),             // 76
        ("2015-11-13 10:20:30", &[]),             // 77
        ("2015-11-13 10:20:30.1", &[]),           // 78
        ("2015-11-15 10:20:30", &[]),             // 79
        ("2015-11-18 10:20:30", &[]),             // 80
        ("2015-11-20 10:20:30", &[]),             // 81
        ("2015-11-21 10:20:30", &[]),             // 82
        ("2015-11-22 10:20:30", &[]),             // 83
        ("2016-01-01 01:02:03", &[]),             // 84
        ("2016-01-01 01:03:03", &[]),             // 85
        ("2016-01-01 07:08:03", &[]),             // 86
        ("2016-01-03 07:02:03", &[]),             // 87
        ("2016-01-04 10:23:03", &[]),             // 88
        ("2016-01-04 11:23:03", &[]),             // 89
        ("2016-01-04 12:23:03", &[]),             // 90
        ("2016-01-04 12:24:03", &[]),             // 91
        ("2016-01-04 12:28:03", &[]),             // 92
        ("2016-01-04 12:30:03", &[]),             // 93
        ("2016-01-04 16:23:03", &[]),             // 94
        ("2016-01-05 09:02:03", &[]),             // 95
        ("2016-01-06 08:02:03", &[]),             // 96
        ("2016-01-07 10:02:03", &[]),             // 97
        ("2016-01-08 20:02:03", &[]),             // 98
        ("2016-01-09 21:02:03", &[]),             // 99
        ("2016-01-12 21:02:03", &[]),             // 100
        ("2016-01-12 21:08:03", &[]),             // 101
        ("2016-01-18 12:02:03", &[]),             // 102
    ];

    fn check_restic_vector(policy: Policy, expected: &[(usize, &str, &str)]) {
        let tags: Vec<Vec<String>> = RESTIC_SNAPSHOTS
            .iter()
            .map(|(_, tags)| tags.iter().map(|t| t.to_string()).collect())
            .collect();
        let group: Vec<Candidate> = RESTIC_SNAPSHOTS
            .iter()
            .zip(&tags)
            .map(|((time, _), tags)| Candidate { time: ts(time), tags })
            .collect();
        let mut want: Vec<Option<&str>> = vec![None; group.len()];
        for &(i, time, reasons) in expected {
            assert_eq!(RESTIC_SNAPSHOTS[i].0, time, "table row for index {i}");
            want[i] = Some(reasons);
        }
        let got = apply(&policy, &group, &TimeZone::UTC);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.keep, !d.reasons.is_empty());
            let text = d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            assert_eq!(
                d.keep.then_some(text.as_str()),
                want[i],
                "snapshot {i} ({}) under {policy}",
                RESTIC_SNAPSHOTS[i].0
            );
        }
    }

    /// Indices that are a second snapshot within an already kept hour, i.e.
    /// the 13 snapshots missing from golden file 38 (`Hourly: -1`).
    const RESTIC_HOURLY_DUPLICATES: [usize; 13] = [100, 92, 91, 90, 84, 77, 70, 71, 72, 73, 53, 33, 13];

    /// Golden files 36 (`Last: -1`), 37 (`Last: -1, Hourly: -1`) and 38
    /// (`Hourly: -1`), stated as rules rather than tables.
    #[test]
    fn restic_vectors_36_37_38_unlimited() {
        let n = RESTIC_SNAPSHOTS.len();
        let expect = |f: &dyn Fn(usize) -> &'static str| {
            (0..n)
                .filter_map(|i| {
                    let r = f(i);
                    (!r.is_empty()).then_some((i, RESTIC_SNAPSHOTS[i].0, r))
                })
                .collect::<Vec<_>>()
        };
        let dup = |i| RESTIC_HOURLY_DUPLICATES.contains(&i);
        check_restic_vector(
            Policy {
                last: Some(Count::Unlimited),
                ..Policy::default()
            },
            &expect(&|_| "last snapshot"),
        );
        check_restic_vector(
            Policy {
                last: Some(Count::Unlimited),
                hourly: Some(Count::Unlimited),
                ..Policy::default()
            },
            &expect(&|i| {
                if dup(i) {
                    "last snapshot"
                } else {
                    "last snapshot, hourly snapshot"
                }
            }),
        );
        check_restic_vector(
            Policy {
                hourly: Some(Count::Unlimited),
                ..Policy::default()
            },
            &expect(&|i| if dup(i) { "" } else { "hourly snapshot" }),
        );
    }

    #[test]
    fn restic_vector_1_keep_last_10() {
        check_restic_vector(
            Policy {
                last: Some(Count::N(10)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "last snapshot"),
                (101, "2016-01-12 21:08:03", "last snapshot"),
                (100, "2016-01-12 21:02:03", "last snapshot"),
                (99, "2016-01-09 21:02:03", "last snapshot"),
                (98, "2016-01-08 20:02:03", "last snapshot"),
                (97, "2016-01-07 10:02:03", "last snapshot"),
                (96, "2016-01-06 08:02:03", "last snapshot"),
                (95, "2016-01-05 09:02:03", "last snapshot"),
                (94, "2016-01-04 16:23:03", "last snapshot"),
                (93, "2016-01-04 12:30:03", "last snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_5_keep_hourly_20() {
        check_restic_vector(
            Policy {
                hourly: Some(Count::N(20)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "hourly snapshot"),
                (101, "2016-01-12 21:08:03", "hourly snapshot"),
                (99, "2016-01-09 21:02:03", "hourly snapshot"),
                (98, "2016-01-08 20:02:03", "hourly snapshot"),
                (97, "2016-01-07 10:02:03", "hourly snapshot"),
                (96, "2016-01-06 08:02:03", "hourly snapshot"),
                (95, "2016-01-05 09:02:03", "hourly snapshot"),
                (94, "2016-01-04 16:23:03", "hourly snapshot"),
                (93, "2016-01-04 12:30:03", "hourly snapshot"),
                (89, "2016-01-04 11:23:03", "hourly snapshot"),
                (88, "2016-01-04 10:23:03", "hourly snapshot"),
                (87, "2016-01-03 07:02:03", "hourly snapshot"),
                (86, "2016-01-01 07:08:03", "hourly snapshot"),
                (85, "2016-01-01 01:03:03", "hourly snapshot"),
                (83, "2015-11-22 10:20:30", "hourly snapshot"),
                (82, "2015-11-21 10:20:30", "hourly snapshot"),
                (81, "2015-11-20 10:20:30", "hourly snapshot"),
                (80, "2015-11-18 10:20:30", "hourly snapshot"),
                (79, "2015-11-15 10:20:30", "hourly snapshot"),
                (78, "2015-11-13 10:20:30.1", "hourly snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_7_keep_daily_10() {
        check_restic_vector(
            Policy {
                daily: Some(Count::N(10)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "daily snapshot"),
                (101, "2016-01-12 21:08:03", "daily snapshot"),
                (99, "2016-01-09 21:02:03", "daily snapshot"),
                (98, "2016-01-08 20:02:03", "daily snapshot"),
                (97, "2016-01-07 10:02:03", "daily snapshot"),
                (96, "2016-01-06 08:02:03", "daily snapshot"),
                (95, "2016-01-05 09:02:03", "daily snapshot"),
                (94, "2016-01-04 16:23:03", "daily snapshot"),
                (87, "2016-01-03 07:02:03", "daily snapshot"),
                (86, "2016-01-01 07:08:03", "daily snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_10_keep_last_2_daily_10() {
        check_restic_vector(
            Policy {
                last: Some(Count::N(2)),
                daily: Some(Count::N(10)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "last snapshot, daily snapshot"),
                (101, "2016-01-12 21:08:03", "last snapshot, daily snapshot"),
                (99, "2016-01-09 21:02:03", "daily snapshot"),
                (98, "2016-01-08 20:02:03", "daily snapshot"),
                (97, "2016-01-07 10:02:03", "daily snapshot"),
                (96, "2016-01-06 08:02:03", "daily snapshot"),
                (95, "2016-01-05 09:02:03", "daily snapshot"),
                (94, "2016-01-04 16:23:03", "daily snapshot"),
                (87, "2016-01-03 07:02:03", "daily snapshot"),
                (86, "2016-01-01 07:08:03", "daily snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_13_keep_daily_3_weekly_4() {
        check_restic_vector(
            Policy {
                daily: Some(Count::N(3)),
                weekly: Some(Count::N(4)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "daily snapshot, weekly snapshot"),
                (101, "2016-01-12 21:08:03", "daily snapshot, weekly snapshot"),
                (99, "2016-01-09 21:02:03", "daily snapshot, weekly snapshot"),
                (87, "2016-01-03 07:02:03", "weekly snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_15_keep_daily_2_weekly_2_monthly_6() {
        check_restic_vector(
            Policy {
                daily: Some(Count::N(2)),
                weekly: Some(Count::N(2)),
                monthly: Some(Count::N(6)),
                ..Policy::default()
            },
            &[
                (
                    102,
                    "2016-01-18 12:02:03",
                    "daily snapshot, weekly snapshot, monthly snapshot",
                ),
                (101, "2016-01-12 21:08:03", "daily snapshot, weekly snapshot"),
                (83, "2015-11-22 10:20:30", "monthly snapshot"),
                (69, "2015-10-22 10:20:30", "monthly snapshot"),
                (49, "2015-09-22 10:20:30", "monthly snapshot"),
                (59, "2015-08-22 10:20:30", "monthly snapshot"),
                (39, "2014-11-22 10:20:30", "monthly snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_16_keep_yearly_10() {
        check_restic_vector(
            Policy {
                yearly: Some(Count::N(10)),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "yearly snapshot"),
                (83, "2015-11-22 10:20:30", "yearly snapshot"),
                (39, "2014-11-22 10:20:30", "yearly snapshot"),
                (10, "2014-08-08 10:20:30", "oldest yearly snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_17_keep_daily_7_weekly_2_monthly_3_yearly_10() {
        check_restic_vector(
            Policy {
                daily: Some(Count::N(7)),
                weekly: Some(Count::N(2)),
                monthly: Some(Count::N(3)),
                yearly: Some(Count::N(10)),
                ..Policy::default()
            },
            &[
                (
                    102,
                    "2016-01-18 12:02:03",
                    "daily snapshot, weekly snapshot, monthly snapshot, yearly snapshot",
                ),
                (101, "2016-01-12 21:08:03", "daily snapshot, weekly snapshot"),
                (99, "2016-01-09 21:02:03", "daily snapshot"),
                (98, "2016-01-08 20:02:03", "daily snapshot"),
                (97, "2016-01-07 10:02:03", "daily snapshot"),
                (96, "2016-01-06 08:02:03", "daily snapshot"),
                (95, "2016-01-05 09:02:03", "daily snapshot"),
                (83, "2015-11-22 10:20:30", "monthly snapshot, yearly snapshot"),
                (69, "2015-10-22 10:20:30", "monthly snapshot"),
                (39, "2014-11-22 10:20:30", "yearly snapshot"),
                (10, "2014-08-08 10:20:30", "oldest yearly snapshot"),
            ],
        );
    }

    #[test]
    fn restic_vector_19_keep_tag_foo_and_bar() {
        check_restic_vector(
            Policy {
                tags: vec!["foo,bar".to_string()],
                ..Policy::default()
            },
            &[
                (71, "2015-10-22 10:20:30", "has tags [foo, bar]"),
                (72, "2015-10-22 10:20:30", "has tags [foo, bar]"),
                (73, "2015-10-22 10:20:30", "has tags [foo, bar]"),
                (35, "2014-11-15 10:20:30", "has tags [foo, bar]"),
            ],
        );
    }

    #[test]
    fn restic_vector_20_keep_tag_foo_or_bar() {
        check_restic_vector(
            Policy {
                tags: vec!["foo".to_string(), "bar".to_string()],
                ..Policy::default()
            },
            &[
                (71, "2015-10-22 10:20:30", "has tags [foo], has tags [bar]"),
                (72, "2015-10-22 10:20:30", "has tags [foo], has tags [bar]"),
                (73, "2015-10-22 10:20:30", "has tags [foo], has tags [bar]"),
                (35, "2014-11-15 10:20:30", "has tags [foo], has tags [bar]"),
                (34, "2014-11-13 10:20:30.1", "has tags [bar]"),
                (33, "2014-11-13 10:20:30", "has tags [foo]"),
                (32, "2014-11-12 10:20:30", "has tags [foo]"),
                (31, "2014-11-10 10:20:30", "has tags [foo]"),
                (30, "2014-11-08 10:20:30", "has tags [foo]"),
                (29, "2014-10-22 10:20:30", "has tags [foo]"),
                (28, "2014-10-20 10:20:30", "has tags [foo]"),
                (27, "2014-10-11 10:20:30", "has tags [foo]"),
                (26, "2014-10-10 10:20:30", "has tags [foo]"),
                (25, "2014-10-09 10:20:30", "has tags [foo]"),
                (24, "2014-10-08 10:20:30", "has tags [foo]"),
                (23, "2014-10-06 10:20:30", "has tags [foo]"),
                (22, "2014-10-05 10:20:30", "has tags [foo]"),
                (21, "2014-10-02 10:20:30", "has tags [foo]"),
                (20, "2014-10-01 10:20:30", "has tags [foo]"),
            ],
        );
    }

    #[test]
    fn restic_vector_25_keep_within_1m14d() {
        check_restic_vector(
            Policy {
                within: Some(KeepWithin {
                    months: 1,
                    days: 14,
                    ..KeepWithin::default()
                }),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "within 1m14d"),
                (101, "2016-01-12 21:08:03", "within 1m14d"),
                (100, "2016-01-12 21:02:03", "within 1m14d"),
                (99, "2016-01-09 21:02:03", "within 1m14d"),
                (98, "2016-01-08 20:02:03", "within 1m14d"),
                (97, "2016-01-07 10:02:03", "within 1m14d"),
                (96, "2016-01-06 08:02:03", "within 1m14d"),
                (95, "2016-01-05 09:02:03", "within 1m14d"),
                (94, "2016-01-04 16:23:03", "within 1m14d"),
                (93, "2016-01-04 12:30:03", "within 1m14d"),
                (92, "2016-01-04 12:28:03", "within 1m14d"),
                (91, "2016-01-04 12:24:03", "within 1m14d"),
                (90, "2016-01-04 12:23:03", "within 1m14d"),
                (89, "2016-01-04 11:23:03", "within 1m14d"),
                (88, "2016-01-04 10:23:03", "within 1m14d"),
                (87, "2016-01-03 07:02:03", "within 1m14d"),
                (86, "2016-01-01 07:08:03", "within 1m14d"),
                (85, "2016-01-01 01:03:03", "within 1m14d"),
                (84, "2016-01-01 01:02:03", "within 1m14d"),
            ],
        );
    }

    #[test]
    fn restic_vector_27_keep_within_13d23h() {
        check_restic_vector(
            Policy {
                within: Some(KeepWithin {
                    days: 13,
                    hours: 23,
                    ..KeepWithin::default()
                }),
                ..Policy::default()
            },
            &[
                (102, "2016-01-18 12:02:03", "within 13d23h"),
                (101, "2016-01-12 21:08:03", "within 13d23h"),
                (100, "2016-01-12 21:02:03", "within 13d23h"),
                (99, "2016-01-09 21:02:03", "within 13d23h"),
                (98, "2016-01-08 20:02:03", "within 13d23h"),
                (97, "2016-01-07 10:02:03", "within 13d23h"),
                (96, "2016-01-06 08:02:03", "within 13d23h"),
                (95, "2016-01-05 09:02:03", "within 13d23h"),
                (94, "2016-01-04 16:23:03", "within 13d23h"),
            ],
        );
    }

    #[test]
    fn restic_vector_39_keep_daily_3_weekly_2_monthly_all_yearly_all() {
        check_restic_vector(
            Policy {
                daily: Some(Count::N(3)),
                weekly: Some(Count::N(2)),
                monthly: Some(Count::Unlimited),
                yearly: Some(Count::Unlimited),
                ..Policy::default()
            },
            &[
                (
                    102,
                    "2016-01-18 12:02:03",
                    "daily snapshot, weekly snapshot, monthly snapshot, yearly snapshot",
                ),
                (101, "2016-01-12 21:08:03", "daily snapshot, weekly snapshot"),
                (99, "2016-01-09 21:02:03", "daily snapshot"),
                (83, "2015-11-22 10:20:30", "monthly snapshot, yearly snapshot"),
                (69, "2015-10-22 10:20:30", "monthly snapshot"),
                (49, "2015-09-22 10:20:30", "monthly snapshot"),
                (59, "2015-08-22 10:20:30", "monthly snapshot"),
                (39, "2014-11-22 10:20:30", "monthly snapshot, yearly snapshot"),
                (29, "2014-10-22 10:20:30", "monthly snapshot"),
                (9, "2014-09-22 10:20:30", "monthly snapshot"),
                (19, "2014-08-22 10:20:30", "monthly snapshot"),
                (
                    10,
                    "2014-08-08 10:20:30",
                    "oldest monthly snapshot, oldest yearly snapshot",
                ),
            ],
        );
    }
}
