//! The operations log: one record per run of a command that changes a
//! repository (`init`, `snapshot`, `replicate`, `log prune`, …), stored in
//! that repository as `log/<time>-<hash>` (docs/FORMAT.md, "Operations log").
//!
//! A record is written once, by one `Storage::write`, and never changed, so
//! writers on several hosts cannot disturb each other's records: the key
//! holds the time to the nanosecond and a hash of the record itself. Keys
//! sort by time, so `list` with a lower bound and `prune` decide from the
//! listing alone, without downloading the records they pass over.
//!
//! A record that cannot be read (damaged, or written by a newer Lifeboat) is
//! an error naming its key, as everywhere else in the repository: a listing
//! that silently skipped it would present an incomplete history as the
//! whole one. `prune` never reads records, so it can remove such a record.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::repo::keys;
use crate::repo::{RecordLog, RepoLocation, Repository};
use crate::storage::RequestCounts;
use crate::storage::metered::Meter;

/// The record's `format` field for a record without `job`: every record
/// older Lifeboats wrote, and those still written outside the agent, so
/// they stay readable by them.
pub const RECORD_FORMAT: u32 = 1;
/// The `format` of a record with `job` (a run `lifeboat agent` started);
/// readers accept both, older readers refuse it as newer.
pub const RECORD_FORMAT_JOB: u32 = 2;
/// Manifests use the same level; records are small JSON.
const LEVEL: i32 = 3;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command exited 0.
    Ok,
    /// The command exited non-zero; `error` and `event` say why when it failed
    /// with an error.
    Error,
}

/// Requests sent to object stores, by kind. Its own type rather than
/// [`RequestCounts`], so a counter added there does not silently change
/// the stored format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// PUT and POST requests (multipart parts included).
    pub put: u64,
    /// GET requests, ranged reads included.
    pub get: u64,
    /// LIST requests (one per page of a listing).
    pub list: u64,
    /// HEAD requests.
    pub head: u64,
    /// DELETE requests.
    pub delete: u64,
}

impl From<RequestCounts> for Requests {
    fn from(c: RequestCounts) -> Requests {
        Requests {
            put: c.put,
            get: c.get,
            list: c.list,
            head: c.head,
            delete: c.delete,
        }
    }
}

impl Requests {
    /// All requests of every kind.
    pub fn total(&self) -> u64 {
        self.put + self.get + self.list + self.head + self.delete
    }
}

/// One record, exactly as stored (compact JSON inside the envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRecord {
    /// Always [`RECORD_FORMAT`] in a record this Lifeboat writes or accepts.
    pub format: u32,
    /// RFC 3339, UTC: when the command finished and the record was made.
    pub time: String,
    /// Host name of the machine that ran the command.
    pub host: String,
    /// Name of the real uid in the password database, else `$USER`, else the uid
    /// in decimal.
    pub user: String,
    /// Version of the Lifeboat that ran the command.
    pub lifeboat_version: String,
    /// The subcommand, e.g. `snapshot` or `log prune`.
    pub command: String,
    /// The arguments after the program name, secrets replaced by `***`.
    pub args: Vec<String>,
    /// `Ok` exactly when `exit_code` is 0.
    pub result: Outcome,
    /// The process's exit status (`replicate --exec` passes on its child's).
    pub exit_code: i32,
    /// One line, secrets redacted as in `args`; present only when the
    /// command failed with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's stable event name, e.g. `repo.in_use`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Milliseconds from the start of the process to the record.
    pub duration_ms: u64,
    /// Bytes this process stored in repositories (objects written, packs
    /// uploaded), whether the command succeeded or not.
    pub bytes_written: u64,
    /// Objects this process deleted from repositories.
    pub objects_deleted: u64,
    /// Requests this process sent to object stores, counted on the wire
    /// (retries and multipart parts included); all zero for a directory.
    pub requests: Requests,
    /// The `[[job]]` of `lifeboat agent` this run was (format 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl OpRecord {
    /// The stored form, compact JSON (before the envelope); the record's key is
    /// derived from these bytes by [`record_key`].
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    /// `format` is checked first, so a newer record is refused as such
    /// rather than as a damaged one.
    pub fn from_json(json: &[u8], what: &str) -> Result<OpRecord> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let bad = |e: serde_json::Error| Error::bad_data(what, format!("operations log record: {e}"));
        let f: Format = serde_json::from_slice(json).map_err(bad)?;
        if f.format != RECORD_FORMAT && f.format != RECORD_FORMAT_JOB {
            return Err(Error::config(
                what,
                format!("operations log record format {} is not supported", f.format),
            )
            .fix("upgrade Lifeboat"));
        }
        let record: OpRecord = serde_json::from_slice(json).map_err(bad)?;
        // The format says whether `job` may be there, so an older reader
        // refuses exactly the records it cannot show whole.
        if record.job.is_some() != (record.format == RECORD_FORMAT_JOB) {
            return Err(Error::bad_data(
                what,
                format!(
                    "operations log record format {} with job {:?}",
                    record.format, record.job
                ),
            ));
        }
        Ok(record)
    }

    /// `time` parsed; `None` when it is not RFC 3339.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }
}

/// The key `record` is stored under (see [`keys::record`]).
pub fn record_key(time: jiff::Timestamp, json: &[u8]) -> String {
    keys::record(nanos_of(time), json)
}

/// Clamped to what 20 digits hold (1970 to 2554), so a bound given on the
/// command line far in the past or future still compares the right way.
fn nanos_of(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_nanosecond().max(0)).unwrap_or(u64::MAX)
}

/// Store `record`; returns its key.
pub fn append(log: &RecordLog, record: &OpRecord) -> Result<String> {
    let time = record
        .timestamp()
        .ok_or_else(|| Error::usage(format!("operations log record time `{}` is not RFC 3339", record.time)))?;
    let json = record.to_json();
    let key = record_key(time, &json);
    log.write(&key, &codec::encode(&json, LEVEL))?;
    Ok(key)
}

/// One run of an operation, from its start to its record in the log: what
/// the binary does around every command that changes a repository, and
/// what a service embedding the library does around its own snapshots,
/// restores, prunes and checks ([`run`] wraps one call), so both leave the
/// same records.
///
/// The storages the operation opens count into its [`Meter`]: open them
/// through [`Operation::location`] (the binary puts the meter in every
/// location it resolves).
pub struct Operation {
    command: String,
    args: Vec<String>,
    user: String,
    started: Instant,
    meter: Arc<Meter>,
    job: Option<String>,
}

impl Operation {
    /// An operation named `command` (e.g. `snapshot`, `log prune`) starting
    /// now, with no arguments, run by [`current_user`]`(None)`, counting
    /// into a meter of its own.
    pub fn start(command: impl Into<String>) -> Operation {
        Operation {
            command: command.into(),
            args: Vec::new(),
            user: current_user(None),
            started: Instant::now(),
            meter: Arc::default(),
            job: None,
        }
    }

    /// The scheduled job this run is (`lifeboat agent`'s `[[job]]` name).
    pub fn job(mut self, name: impl Into<String>) -> Operation {
        self.job = Some(name.into());
        self
    }

    /// The arguments the record shows; secrets are redacted here.
    pub fn args(mut self, args: impl IntoIterator<Item = String>) -> Operation {
        self.args = redact_args(args);
        self
    }

    /// Who the record says ran it.
    pub fn user(mut self, user: impl Into<String>) -> Operation {
        self.user = user.into();
        self
    }

    /// When it started, if before [`Operation::start`] was called.
    pub fn started_at(mut self, started: Instant) -> Operation {
        self.started = started;
        self
    }

    /// Count into `meter` instead (one the caller already hands out).
    pub fn meter(mut self, meter: Arc<Meter>) -> Operation {
        self.meter = meter;
        self
    }

    /// The operation's name as recorded.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// `loc`, with storages opened through it counting into this operation.
    pub fn location(&self, loc: &RepoLocation) -> RepoLocation {
        let mut loc = loc.clone();
        loc.options.meter = Some(self.meter.clone());
        loc
    }

    /// The record of the operation ending now with `exit_code` (0 when it
    /// succeeded) and `error`; its totals are what its storages did so far.
    pub fn record(&self, exit_code: i32, error: Option<&Error>) -> OpRecord {
        let totals = self.meter.totals();
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let one_line = |s: String| redact(&s.split_whitespace().collect::<Vec<_>>().join(" "));
        OpRecord {
            format: if self.job.is_some() {
                RECORD_FORMAT_JOB
            } else {
                RECORD_FORMAT
            },
            time: jiff::Timestamp::now().to_string(),
            host: crate::fsutil::hostname(),
            user: self.user.clone(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            command: self.command.clone(),
            args: self.args.clone(),
            result: if exit_code == 0 { Outcome::Ok } else { Outcome::Error },
            exit_code,
            error: error.map(|e| one_line(e.to_string())),
            event: error.map(|e| e.code.event().to_string()),
            duration_ms,
            bytes_written: totals.bytes_written,
            objects_deleted: totals.objects_deleted,
            requests: totals.requests.into(),
            job: self.job.clone(),
        }
    }

    /// Append the operation's record to each repository it changed (what
    /// `targets` gives). Never changes the operation's outcome: a
    /// repository that cannot be opened (there is none yet, the location is
    /// wrong) is skipped quietly, and a record that cannot be written is a
    /// warning.
    pub fn finish(self, targets: impl FnOnce() -> Result<Vec<RepoLocation>>, exit_code: i32, error: Option<&Error>) {
        // Made first, so the record covers the operation and not its own
        // writing.
        let record = self.record(exit_code, error);
        if let Some(e) = error.filter(|e| e.temporary) {
            // The store stayed unreachable through the operation's retries;
            // writing the record would only wait out as many again.
            tracing::debug!(event = "oplog.skipped", command = %self.command, reason = %e);
            return;
        }
        let targets = match targets() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(event = "oplog.skipped", command = %self.command, reason = %e);
                return;
            }
        };
        for loc in targets {
            // Never write `log/` where there is no repository (a directory or
            // prefix `init` refused, a mistyped location). An operation that
            // succeeded has opened each of its repositories, so a bucket is
            // not asked again (a GET); a directory's check costs no request.
            let log = match RecordLog::open(&loc, exit_code == 0) {
                Ok(log) => log,
                Err(e) => {
                    tracing::debug!(event = "oplog.skipped", command = %self.command, reason = %e);
                    continue;
                }
            };
            match append(&log, &record) {
                Ok(key) => tracing::info!(event = "oplog.appended", repository = %log.location(), key),
                Err(e) => tracing::warn!(
                    event = "oplog.append_failed",
                    repository = %log.location(),
                    error = %e,
                    "the operation's operations log record was not written"
                ),
            }
        }
    }
}

/// Run `f` as the operation `command` on the repository at `loc` and append
/// its record there, as the binary records its commands: `f` gets `loc`
/// counting into the operation, and its result is returned unchanged.
///
/// ```
/// use lifeboat::{RepoLocation, Repository};
///
/// # fn main() -> lifeboat::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let location = RepoLocation::local(dir.path().join("backups"));
/// lifeboat::oplog::run("init", &location, |loc| Repository::init(loc))?;
/// let repo = Repository::open(&location)?;
/// let records = lifeboat::oplog::list(&repo, None)?;
/// assert_eq!(records[0].1.command, "init");
/// # Ok(())
/// # }
/// ```
pub fn run<T>(command: &str, loc: &RepoLocation, f: impl FnOnce(&RepoLocation) -> Result<T>) -> Result<T> {
    let op = Operation::start(command);
    let result = f(&op.location(loc));
    let (exit_code, error) = match &result {
        Ok(_) => (0, None),
        Err(e) => (e.kind.exit_code(), Some(e)),
    };
    op.finish(|| Ok(vec![loc.clone()]), exit_code, error);
    result
}

/// Record keys, oldest first, with their times.
fn keys<S>(repo: &Repository<S>) -> Result<Vec<(u64, String)>> {
    let mut out: Vec<(u64, String)> = repo
        .list_objects(keys::Kind::LogRecord)?
        .into_iter()
        .filter_map(|(key, _)| Some((keys::parse_record(&key)?.0, key)))
        .collect();
    out.sort();
    Ok(out)
}

/// Every record at or after `since` (all without it), oldest first, each
/// checked against its key. Records before `since` are not downloaded.
pub fn list<S>(repo: &Repository<S>, since: Option<jiff::Timestamp>) -> Result<Vec<(String, OpRecord)>> {
    let from = since.map(nanos_of).unwrap_or(0);
    let wanted: Vec<((), String)> = keys(repo)?
        .into_iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, k)| ((), k))
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    repo.read_objects(wanted, |(), key, raw| {
        let what = repo.object_name(&key);
        let json = codec::decode(&raw?, &what)?;
        let (nanos, hash) = keys::parse_record(&key).expect("listed keys parse");
        if !keys::record_matches(hash, &json) {
            return Err(
                Error::bad_data(&what, "operations log record does not match its name").fix(format!(
                    "remove it with `lifeboat log prune --before` a time after {}",
                    key_time(nanos)
                )),
            );
        }
        let record = OpRecord::from_json(&json, &what)?;
        if record.timestamp().map(nanos_of) != Some(nanos) {
            return Err(Error::bad_data(
                &what,
                "operations log record time does not match its name",
            ));
        }
        out.push((key, record));
        Ok(())
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn key_time(nanos: u64) -> String {
    jiff::Timestamp::from_nanosecond(nanos as i128)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| nanos.to_string())
}

/// Delete every record older than `before` (only list them when `dry_run`);
/// returns their keys, oldest first. Decided from the keys alone, so a record
/// that cannot be read is pruned like any other.
pub fn prune<S>(repo: &Repository<S>, before: jiff::Timestamp, dry_run: bool) -> Result<Vec<String>> {
    let until = nanos_of(before);
    let doomed: Vec<String> = keys(repo)?
        .into_iter()
        .filter(|(t, _)| *t < until)
        .map(|(_, k)| k)
        .collect();
    if dry_run || doomed.is_empty() {
        return Ok(doomed);
    }
    // One request per record on a bucket: as many in flight as transfers.
    let workers = repo.transfers().clamp(1, doomed.len());
    crate::workers::for_each(workers, &doomed, || (), |_, k| repo.delete_object(k))?;
    tracing::info!(event = "oplog.pruned", records = doomed.len(), before = %before);
    Ok(doomed)
}

/// A time given on the command line: `now`, an RFC 3339 time
/// (`2026-11-22T10:15:00Z`), a date (`2026-11-22`, midnight UTC), or a
/// duration before `now` (`90s`, `30m`, `24h`, `7d`, `2w`, or sums such as
/// `1d12h`). `flag` names the option in the error.
pub fn parse_when(flag: &str, s: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp> {
    let s = s.trim();
    let bad = || {
        Error::usage(format!("{flag} {s}: not a time or a duration"))
            .fix("give an RFC 3339 time such as 2026-11-22T10:15:00Z, a date such as 2026-11-22 (UTC), or a duration ago such as 30m, 24h, 7d or 2w")
    };
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    // A bare date only: a civil date-time without an offset is ambiguous.
    if let Some(d) = (s.len() == 10).then(|| s.parse::<jiff::civil::Date>().ok()).flatten() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    let ago = parse_ago(s).ok_or_else(bad)?;
    now.checked_sub(ago).map_err(|_| bad())
}

/// `<n><unit>` repeated, units s, m, h, d (24 h) and w (7 d).
fn parse_ago(s: &str) -> Option<jiff::SignedDuration> {
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(secs)?)?;
        rest = &rest[digits + 1..];
    }
    Some(jiff::SignedDuration::from_secs(total))
}

/// Parts of a name that mark its value as secret.
const SECRET_WORDS: [&str; 8] = [
    "secret",
    "key",
    "token",
    "password",
    "passwd",
    "credential",
    "auth",
    "signature",
];
/// What replaces a secret value in `args` and `error`.
pub const REDACTED: &str = "***";

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// The command line as it may be stored: values that look secret replaced by
/// [`REDACTED`]: `NAME=value` pairs (also in URL queries and inside an
/// argument such as `--exec "…"`) and the word after a `--flag` whose name
/// looks secret, and the password in `scheme://user:password@host`. Over-
/// redaction is the safe side: a record is kept for months and read by
/// whoever can read the repository.
pub fn redact_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut redact_next = false;
    args.into_iter()
        .map(|arg| {
            if std::mem::take(&mut redact_next) {
                return REDACTED.to_string();
            }
            let (text, pending) = redact_text(&arg);
            redact_next = pending;
            text
        })
        .collect()
}

/// A message that may quote arguments (an error naming a source path or a
/// URL), redacted like them.
pub fn redact(text: &str) -> String {
    redact_text(text).0
}

/// One argument; also whether the next argument is a secret flag's value.
fn redact_text(arg: &str) -> (String, bool) {
    let mut out = String::with_capacity(arg.len());
    let mut redact_next = false;
    // Whitespace kept as it was, so the argument reads the same.
    let mut rest = arg;
    while !rest.is_empty() {
        let word_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(word_len);
        if !word.is_empty() {
            if std::mem::take(&mut redact_next) {
                out.push_str(REDACTED);
            } else {
                out.push_str(&redact_word(word));
                redact_next = word.starts_with('-') && !word.contains('=') && looks_secret(word);
            }
        }
        let space_len = tail.find(|c: char| !c.is_whitespace()).unwrap_or(tail.len());
        out.push_str(&tail[..space_len]);
        rest = &tail[space_len..];
    }
    (out, redact_next)
}

fn redact_word(word: &str) -> String {
    let word = redact_userinfo(word);
    let mut out = String::with_capacity(word.len());
    // Pieces between `?`, `&` and `;` are `name=value` pairs in a URL query
    // or a cookie-like list; a lone word is one piece.
    let mut start = 0;
    for (i, c) in word.char_indices().chain([(word.len(), '\0')]) {
        if i < word.len() && !matches!(c, '?' | '&' | ';') {
            continue;
        }
        let piece = &word[start..i];
        match piece.split_once('=') {
            Some((name, _)) if looks_secret(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(piece),
        }
        if i < word.len() {
            out.push(c);
        }
        start = i + c.len_utf8();
    }
    out
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
fn redact_userinfo(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_string();
    };
    let auth_start = scheme_end + 3;
    let auth_end = word[auth_start..]
        .find(['/', '?', '#'])
        .map_or(word.len(), |i| auth_start + i);
    let authority = &word[auth_start..auth_end];
    let Some(at) = authority.rfind('@') else {
        return word.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return word.to_string();
    };
    format!(
        "{}{REDACTED}{}",
        &word[..auth_start + colon + 1],
        &word[auth_start + at..]
    )
}

/// The name of the user running this process: the password database's name
/// for the real uid, else `fallback` (the binary passes `$USER`), else the
/// uid as a number (a container user with no entry).
pub fn current_user(fallback: Option<String>) -> String {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    passwd_name(uid)
        .or_else(|| fallback.filter(|u| !u.is_empty()))
        .unwrap_or_else(|| uid.to_string())
}

fn passwd_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into
    // `buf`, which outlives every use below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().filter(|n| !n.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoLocation;

    fn record(time: &str, command: &str) -> OpRecord {
        OpRecord {
            format: RECORD_FORMAT,
            time: time.into(),
            host: "h".into(),
            user: "u".into(),
            lifeboat_version: "0".into(),
            command: command.into(),
            args: vec![command.into()],
            result: Outcome::Ok,
            exit_code: 0,
            error: None,
            event: None,
            duration_ms: 1,
            bytes_written: 2,
            objects_deleted: 0,
            requests: Requests::default(),
            job: None,
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    /// A service using the library alone gets the records the binary
    /// writes: success with what it stored, failure with its exit code and
    /// event, and none where there is no repository.
    #[test]
    fn operations_run_through_the_library_leave_records() {
        use crate::commands::snapshot::{SnapshotOptions, SourceKind, SourceSpec};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000));")
            .unwrap();
        let location = RepoLocation::local(dir.path().join("repo"));
        let nowhere = RepoLocation::local(dir.path().join("nowhere"));
        assert!(run("snapshot", &nowhere, Repository::open).is_err());
        run("init", &location, Repository::init).unwrap();
        let sources = [SourceSpec {
            name: "app.db".into(),
            path: db,
            kind: SourceKind::Sqlite {
                schema_query: "PRAGMA user_version".into(),
            },
        }];
        let options = SnapshotOptions {
            kind: crate::repo::manifest::SnapshotKind::Full,
            tags: vec![],
            replication: None,
            time: None,
        };
        run("snapshot", &location, |loc| {
            let repo = Repository::open(loc)?.locked("test")?;
            crate::commands::snapshot::take(&repo, &sources, &options, &crate::progress::Silent)
        })
        .unwrap();
        let missing = [SourceSpec {
            name: "gone.db".into(),
            path: dir.path().join("gone.db"),
            ..sources[0].clone()
        }];
        let failed = run("snapshot", &location, |loc| {
            let repo = Repository::open(loc)?.locked("test")?;
            crate::commands::snapshot::take(&repo, &missing, &options, &crate::progress::Silent)
        });
        let e = failed.unwrap_err();

        let repo = Repository::open(&location).unwrap();
        let records: Vec<OpRecord> = list(&repo, None).unwrap().into_iter().map(|(_, r)| r).collect();
        let commands: Vec<&str> = records.iter().map(|r| r.command.as_str()).collect();
        assert_eq!(commands, ["init", "snapshot", "snapshot"], "{records:#?}");
        assert!(
            records
                .iter()
                .all(|r| r.host == crate::fsutil::hostname() && !r.user.is_empty())
        );
        assert_eq!((records[1].result, records[1].exit_code), (Outcome::Ok, 0));
        assert!(records[1].bytes_written > 5000, "{:?}", records[1]);
        assert_eq!(records[2].result, Outcome::Error);
        assert_eq!(records[2].exit_code, e.kind.exit_code());
        assert_eq!(records[2].event.as_deref(), Some(e.code.event()));
        assert!(
            !dir.path().join("nowhere").exists(),
            "no log where there is no repository"
        );
    }

    #[test]
    fn keys_sort_by_time_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Repository::init(&RepoLocation::local(dir.path().join("repo"))).unwrap();
        let late = append(&store.record_log(), &record("2026-01-02T00:00:00.5Z", "snapshot")).unwrap();
        let early = append(&store.record_log(), &record("2026-01-02T00:00:00Z", "init")).unwrap();
        assert_eq!(
            early,
            record_key(
                ts("2026-01-02T00:00:00Z"),
                &record("2026-01-02T00:00:00Z", "init").to_json()
            )
        );
        assert!(
            early.starts_with("log/01767312000000000000-") && early.len() == 41,
            "{early}"
        );
        assert!(early < late, "{early} sorts before {late}");
        let all = list(&store, None).unwrap();
        assert_eq!(
            all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            [early.clone(), late.clone()]
        );
        assert_eq!(all[1].1, record("2026-01-02T00:00:00.5Z", "snapshot"));
        let since = list(&store, Some(ts("2026-01-02T00:00:00.1Z"))).unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].0, late);

        // A record changed behind its name is refused, naming the key;
        // prune still removes it.
        let json = br#"{"format":1}"#;
        std::fs::write(dir.path().join("repo").join(&early), codec::encode(json, 3)).unwrap();
        let e = list(&store, None).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
        assert!(e.subject.ends_with(&early), "{e}");
        let cut = ts("2026-01-02T00:00:00.1Z");
        assert_eq!(prune(&store, cut, true).unwrap(), std::slice::from_ref(&early));
        assert_eq!(list(&store, Some(cut)).unwrap().len(), 1);
        assert_eq!(prune(&store, cut, false).unwrap(), [early]);
        assert_eq!(list(&store, None).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_format_is_a_config_error() {
        let mut v = serde_json::to_value(record("2026-01-01T00:00:00Z", "x")).unwrap();
        v["format"] = 3.into();
        v["new_field"] = 1.into();
        let e = OpRecord::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Config);
        let mut v = serde_json::to_value(record("2026-01-01T00:00:00Z", "x")).unwrap();
        v["new_field"] = 1.into();
        let e = OpRecord::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
    }

    /// A job's record is format 2 and carries its name; a plain one stays
    /// format 1, byte for byte what older Lifeboats read; each format
    /// refuses the other's shape.
    #[test]
    fn job_records_are_format_2_and_plain_ones_stay_format_1() {
        let plain = Operation::start("snapshot").record(0, None);
        assert_eq!(plain.format, RECORD_FORMAT);
        assert!(!String::from_utf8(plain.to_json()).unwrap().contains("job"));
        let job = Operation::start("snapshot").job("nightly").record(0, None);
        assert_eq!((job.format, job.job.as_deref()), (RECORD_FORMAT_JOB, Some("nightly")));
        assert_eq!(OpRecord::from_json(&job.to_json(), "k").unwrap(), job);
        let mut v = serde_json::to_value(&job).unwrap();
        v["format"] = 1.into();
        let e = OpRecord::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
        let mut v = serde_json::to_value(&plain).unwrap();
        v["format"] = 2.into();
        assert!(OpRecord::from_json(v.to_string().as_bytes(), "k").is_err());
    }

    #[test]
    fn times_and_durations_ago() {
        let now = ts("2026-11-22T12:00:00Z");
        let p = |s| parse_when("--since", s, now).unwrap();
        assert_eq!(p("now"), now);
        assert_eq!(p("2026-11-20T10:15:00Z"), ts("2026-11-20T10:15:00Z"));
        assert_eq!(p("2026-11-20T11:15:00+01:00"), ts("2026-11-20T10:15:00Z"));
        assert_eq!(p("2026-11-20"), ts("2026-11-20T00:00:00Z"));
        assert_eq!(p("24h"), ts("2026-11-21T12:00:00Z"));
        assert_eq!(p("7d"), ts("2026-11-15T12:00:00Z"));
        assert_eq!(p("1w"), ts("2026-11-15T12:00:00Z"));
        assert_eq!(p("1d12h"), ts("2026-11-21T00:00:00Z"));
        assert_eq!(p("90s"), ts("2026-11-22T11:58:30Z"));
        for bad in ["", "7", "d", "7x", "yesterday", "-1h", "1h-"] {
            let e = parse_when("--since", bad, now).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let r = |v: &[&str]| redact_args(v.iter().map(|s| s.to_string()));
        assert_eq!(
            r(&["--repo", "s3://b/p?endpoint=https://h&secret_key=abc&region=r", "init"]),
            ["--repo", "s3://b/p?endpoint=https://h&secret_key=***&region=r", "init"]
        );
        assert_eq!(
            r(&["--repo=s3://b/p?Token=t1;password=p", "list"]),
            ["--repo=s3://b/p?Token=***;password=***", "list"]
        );
        assert_eq!(r(&["https://me:hunter2@h/x"]), ["https://me:***@h/x"]);
        assert_eq!(
            r(&["--password", "hunter2", "snapshot"]),
            ["--password", "***", "snapshot"]
        );
        assert_eq!(
            r(&[
                "replicate",
                "--exec",
                "app --api-token  t0k AWS_SECRET_ACCESS_KEY=x serve"
            ]),
            [
                "replicate",
                "--exec",
                "app --api-token  *** AWS_SECRET_ACCESS_KEY=*** serve"
            ]
        );
        assert_eq!(
            redact("https://me:pw@h/x?token=t: does not exist"),
            "https://me:***@h/x?token=*** does not exist"
        );
        // Ordinary arguments pass unchanged.
        let plain = ["snapshot", "/etc/ssl/private.key", "--tag", "nightly", "--kind", "full"];
        assert_eq!(r(&plain), plain);
    }
}
