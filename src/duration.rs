//! Elapsed durations as operators write them in flags and the
//! configuration (`1s`, `250ms`, `5m`, `2h`), parsed in one place. (Calendar
//! spans for retention, where `m` means months as in restic, are
//! `retention::parse_duration`.)

use crate::error::{Error, Result};

/// Parse a duration such as `1s`, `250ms`, `5m`, naming the setting on error.
///
/// ```
/// use std::time::Duration;
/// use lifeboat::duration::parse_duration;
///
/// assert_eq!(parse_duration("sync_interval", "250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_duration("snapshot_interval", "2h").unwrap(), Duration::from_secs(7200));
/// let e = parse_duration("sync_interval", "soon").unwrap_err();
/// assert_eq!(e.kind, lifeboat::ErrorKind::Config);
/// ```
pub fn parse_duration(what: &str, s: &str) -> Result<std::time::Duration> {
    s.trim()
        .parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::config(what, format!("`{s}` is not a positive duration")).fix("write it like 1s, 250ms, 5m or 2h")
        })
}
