//! When jobs run: a `[[job]]`'s schedule parsed once (a cron expression in
//! the config's time zone, or a fixed interval), its next fire times, and the
//! seeds' schedule used when the config has no `[[job]]`.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use lifeboat::duration::parse_duration;

/// A parsed `schedule`.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression of 5 fields (minute first) or 6 (second first),
    /// read in the time zone given to [`Schedule::next_after`].
    Cron(Box<Cron>),
    /// Every this long (`"15m"`), counted from the previous fire.
    Every(Duration),
}

impl Schedule {
    /// A cron expression, or a duration; the error says which forms exist.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let fields = t.split_whitespace().count();
        if fields == 1 && !t.starts_with('@') {
            return parse_duration("schedule", t)
                .map(Schedule::Every)
                .map_err(|_| format!("`{t}` is neither a duration nor a cron expression"));
        }
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "`{t}` has {fields} fields; a cron expression has 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        parser
            .parse(t)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("`{t}` is not a cron expression: {e}"))
    }

    /// The first fire strictly after `after`, in `tz`. Cron follows
    /// croner's daylight-saving rules: a fixed time that falls into a
    /// spring-forward gap runs at the first instant after it, one in a
    /// fall-back fold runs once; interval patterns follow real time.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => after.checked_add(jiff::SignedDuration::try_from(*d).ok()?).ok(),
            Schedule::Cron(c) => {
                let z = after.to_zoned(tz.clone());
                c.find_next_occurrence(&z, false).ok().map(|z: Zoned| z.timestamp())
            }
        }
    }

    /// The next `n` fires after `after`.
    pub fn upcoming(&self, after: Timestamp, tz: &TimeZone, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// One job of the seeds' schedule: name, schedule, command line.
pub struct DefaultJob {
    pub name: &'static str,
    pub schedule: &'static str,
    pub run: &'static str,
}

/// What runs without any `[[job]]`: seed 004's crontab (partial daily but
/// Sunday, full on Sunday, both at 03:00), then retention daily and a
/// restore drill weekly (seed 003), each after the backups it concerns.
pub const DEFAULT_JOBS: &[DefaultJob] = &[
    DefaultJob {
        name: "partial",
        schedule: "0 3 * * 1-6",
        run: "snapshot --kind partial",
    },
    DefaultJob {
        name: "full",
        schedule: "0 3 * * 0",
        run: "snapshot --kind full",
    },
    DefaultJob {
        name: "forget",
        schedule: "0 4 * * *",
        run: "forget --prune",
    },
    DefaultJob {
        name: "drill",
        schedule: "0 5 * * 0",
        run: "drill",
    },
];

/// A random share of `max`: spreads the starts of many hosts' jobs.
pub fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // The standard library's per-process random keys are enough to spread
    // start times; nothing here needs a cryptographic source.
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(r % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations_and_cron_of_five_and_six_fields() {
        let utc = TimeZone::UTC;
        let every = Schedule::parse("15m").unwrap();
        assert_eq!(
            every.next_after(ts("2026-01-01T00:00:00Z"), &utc),
            Some(ts("2026-01-01T00:15:00Z"))
        );
        let five = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            five.next_after(ts("2026-01-01T02:30:00Z"), &utc),
            Some(ts("2026-01-02T02:30:00Z")),
            "strictly after"
        );
        let six = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            six.upcoming(ts("2026-01-01T00:00:00Z"), &utc, 3),
            [
                ts("2026-01-01T00:00:02Z"),
                ts("2026-01-01T00:00:04Z"),
                ts("2026-01-01T00:00:06Z")
            ]
        );
        for bad in ["often", "* * * *", "0 0 0 * * * 2026", "61 * * * *", "0s"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    /// A daily 02:30 in Berlin: on the spring-forward day 02:30 does not
    /// exist and the run comes at 03:00 local; on the fall-back day it runs
    /// once, not twice.
    #[test]
    fn cron_in_a_time_zone_across_daylight_saving() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        let spring = s.upcoming(ts("2026-03-28T12:00:00Z"), &berlin, 2);
        assert_eq!(spring, [ts("2026-03-29T01:00:00Z"), ts("2026-03-30T00:30:00Z")]);
        let autumn = s.upcoming(ts("2026-10-24T12:00:00Z"), &berlin, 2);
        assert_eq!(autumn, [ts("2026-10-25T00:30:00Z"), ts("2026-10-26T01:30:00Z")]);
        let winter = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            winter.next_after(ts("2026-12-07T00:00:00Z"), &berlin),
            Some(ts("2026-12-07T02:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(5)) < Duration::from_secs(5));
        }
    }
}
