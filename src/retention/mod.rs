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

impl Reason {
    /// The setting that gave this reason, as `[retention]` spells it
    /// (`keep_daily`, `keep_within`, `keep_tags`); `None` for
    /// [`Reason::NoPolicy`].
    pub fn setting(&self) -> Option<&'static str> {
        Some(match self {
            Reason::Last => "keep_last",
            Reason::Hourly | Reason::Oldest(Bucket::Hourly) => "keep_hourly",
            Reason::Daily | Reason::Oldest(Bucket::Daily) => "keep_daily",
            Reason::Weekly | Reason::Oldest(Bucket::Weekly) => "keep_weekly",
            Reason::Monthly | Reason::Oldest(Bucket::Monthly) => "keep_monthly",
            Reason::Yearly | Reason::Oldest(Bucket::Yearly) => "keep_yearly",
            Reason::Within(_) => "keep_within",
            Reason::Tag(_) => "keep_tags",
            Reason::NoPolicy => return None,
        })
    }
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
mod tests;
