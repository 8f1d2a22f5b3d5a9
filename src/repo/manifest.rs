//! Snapshot manifests: `snapshots/<id>`, a zstd envelope around JSON, written
//! last, after every pack and index it references is durable. The id is the
//! BLAKE3 of the JSON bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::id::Id;

/// The manifest format written unless a newer field needs a newer one.
pub const MANIFEST_FORMAT: u32 = 1;
/// Format 2 adds `ReplicationPoint::watched_until_ns`; written only by the
/// manifests that carry it, so every other manifest stays readable by
/// format-1 readers.
pub const MANIFEST_FORMAT_WATCHED: u32 = 2;
/// Format 3 adds `Entry::database` (a database found inside a directory
/// source, captured page by page) and `Manifest::incomplete`; written only
/// by the manifests that carry one of them.
pub const MANIFEST_FORMAT_EMBEDDED: u32 = 3;

/// The format a manifest of `sources` (and `incomplete`) is written in.
pub fn format_for(sources: &[Source], incomplete: &[String]) -> u32 {
    let embedded = sources.iter().any(|s| match s {
        Source::Directory(d) => d.entries.iter().any(|e| e.database.is_some()),
        _ => false,
    });
    if embedded || !incomplete.is_empty() {
        return MANIFEST_FORMAT_EMBEDDED;
    }
    let watched = sources.iter().any(|s| match s {
        Source::Sqlite(d) => d.replication.as_ref().is_some_and(|r| r.watched_until_ns.is_some()),
        _ => false,
    });
    if watched {
        MANIFEST_FORMAT_WATCHED
    } else {
        MANIFEST_FORMAT
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A snapshot manifest (docs/FORMAT.md section 9).
pub struct Manifest {
    /// Manifest format (see [`format_for`]).
    pub format: u32,
    /// When it was taken; stored as RFC 3339 in UTC. A manifest whose time
    /// does not parse is damaged, not a snapshot of no particular time.
    #[serde(with = "crate::rfc3339")]
    pub time: jiff::Timestamp,
    /// The host the snapshot was taken on.
    pub host: String,
    /// The Lifeboat version that took it.
    pub lifeboat_version: String,
    /// What the snapshot is.
    pub kind: SnapshotKind,
    /// Tags given when it was taken.
    pub tags: Vec<String>,
    /// What it holds, source by source.
    pub sources: Vec<Source>,
    /// What taking it read and stored.
    pub summary: Summary,
    /// Files that changed while they were read (`<source>/<path>`): what
    /// this snapshot holds of them may mix old and new bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

/// What a snapshot is: stored as a lower-case string.
///
/// ```
/// use lifeboat::SnapshotKind;
///
/// let kind: SnapshotKind = "partial".parse().unwrap();
/// assert_eq!(kind, SnapshotKind::Partial);
/// assert_eq!(SnapshotKind::Base.to_string(), "base");
/// assert!("weekly".parse::<SnapshotKind>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Every configured source.
    Full,
    /// The sources not marked `full_only`.
    Partial,
    /// A replication base: an internal restore point of one database's WAL
    /// stream, not a snapshot of the service.
    Base,
}

impl SnapshotKind {
    /// The stored name: `full`, `partial` or `base`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Partial => "partial",
            SnapshotKind::Base => "base",
        }
    }
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SnapshotKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(SnapshotKind::Full),
            "partial" => Ok(SnapshotKind::Partial),
            "base" => Ok(SnapshotKind::Base),
            _ => Err(format!("`{s}` is not a snapshot kind (full, partial, base)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
/// One source a snapshot holds.
pub enum Source {
    /// A SQLite database, page by page.
    Sqlite(SqliteSource),
    /// A directory tree.
    Directory(DirectorySource),
    /// One regular file.
    File(FileSource),
}

impl Source {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Sqlite(s) => &s.name,
            Source::Directory(s) => &s.name,
            Source::File(s) => &s.name,
        }
    }
    /// Its absolute path at capture time.
    pub fn path(&self) -> &str {
        match self {
            Source::Sqlite(s) => &s.path,
            Source::Directory(s) => &s.path,
            Source::File(s) => &s.path,
        }
    }
    /// The stored name of its type: `sqlite`, `directory` or `file`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Source::Sqlite(_) => "sqlite",
            Source::Directory(_) => "directory",
            Source::File(_) => "file",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A database as captured.
pub struct SqliteSource {
    /// The source's name.
    pub name: String,
    /// Absolute path at capture time; restore's default target.
    pub path: String,
    /// Page size of the database.
    pub page_size: u32,
    /// Pages in the database.
    pub page_count: u32,
    /// `page_size * page_count`: the restored file's exact length.
    pub size: u64,
    /// BLAKE3 of the whole restored database file.
    pub blake3: Id,
    /// Its page map's blob id.
    pub pagemap: Id,
    /// Result of the schema-version query, when it returned an integer.
    pub schema_version: Option<i64>,
    /// The query that gave `schema_version`.
    pub schema_query: String,
    /// The SQLite library version that read it.
    pub sqlite_version: String,
    /// Its journal mode (`wal`, `delete`, ...).
    pub journal_mode: String,
    /// Metadata of the database file itself.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Set when this capture is a base of a replicated WAL stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationPoint>,
}

/// Where a base sits in its WAL stream (`wal/<stream>/`): the captured state
/// is the database as of commit `txid`; segments continue from `txid + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationPoint {
    /// The WAL stream (`wal/<stream>/`).
    pub stream: String,
    /// The commit the captured state is as of.
    pub txid: u64,
    /// Set when the stream lost continuity just before this base: commits
    /// between the previous point and this one are not recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_gap: bool,
    /// With `after_gap`: until when (ns since the epoch) the replicator is
    /// known to have watched the log with every commit shipped, before
    /// continuity was lost. The state at any time up to it is the last
    /// commit before the gap; only after it is the state unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched_until_ns: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A directory tree as captured.
pub struct DirectorySource {
    /// The source's name.
    pub name: String,
    /// Absolute path at capture time.
    pub path: String,
    /// Exclude globs, relative to the root.
    pub exclude: Vec<String>,
    /// The directory itself first (path ""), then entries in depth-first,
    /// name-sorted order, parents before children.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A regular file as captured.
pub struct FileSource {
    /// The source's name.
    pub name: String,
    /// Absolute path at capture time.
    pub path: String,
    /// The file itself.
    pub entry: Entry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A directory, file or symlink, with its metadata.
pub struct Entry {
    /// Relative to the source root, `/`-separated; "" for the root itself.
    pub path: String,
    #[serde(rename = "type")]
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    /// Size of a file, in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// BLAKE3 of a file's whole content.
    pub blake3: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// A file's chunks, in order.
    pub chunks: Vec<Id>,
    /// Symlink target, stored verbatim and never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For a SQLite database found inside a directory source: its pages,
    /// captured inside a read transaction as a configured database is
    /// (`chunks` is then empty; `size` and `blake3` are the database file's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<EmbeddedDatabase>,
}

/// A database inside a directory source, captured page by page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedDatabase {
    /// Page size of the database.
    pub page_size: u32,
    /// Pages in the database.
    pub page_count: u32,
    /// Its page map's blob id.
    pub pagemap: Id,
    /// The SQLite library version that read it.
    pub sqlite_version: String,
    /// Its journal mode (`wal`, `delete`, ...).
    pub journal_mode: String,
}

impl Entry {
    /// The database this entry holds, as a database source named `name`
    /// at `path`: what restore, verify and prune read.
    pub fn database_source(&self, name: &str, path: &str) -> Option<SqliteSource> {
        let d = self.database.as_ref()?;
        Some(SqliteSource {
            name: name.to_string(),
            path: path.to_string(),
            page_size: d.page_size,
            page_count: d.page_count,
            size: self.size,
            blake3: self.blake3?,
            pagemap: d.pagemap,
            schema_version: None,
            schema_query: String::new(),
            sqlite_version: d.sqlite_version.clone(),
            journal_mode: d.journal_mode.clone(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            replication: None,
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// The type of an entry.
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// What taking a snapshot read and stored.
pub struct Summary {
    /// Bytes the sources hold (databases at their page size times count).
    pub logical_bytes: u64,
    /// Regular files captured.
    pub files: u64,
    /// Blobs this snapshot stored that the repository did not have.
    pub new_blobs: u64,
    /// The size of those blobs before compression.
    pub added_raw_bytes: u64,
    /// The size of those blobs as stored.
    pub added_stored_bytes: u64,
    /// How long taking it took.
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// What was skipped or changed while read, as warnings.
    pub warnings: Vec<String>,
}

impl Manifest {
    /// The bytes stored (before the envelope) and the id they hash to.
    pub fn to_json(&self) -> (Vec<u8>, Id) {
        let json = serde_json::to_vec(self).expect("manifest serializes");
        let id = Id::of(&json);
        (json, id)
    }

    /// Parse a manifest, refusing a format this version does not read; `what`
    /// names it in errors.
    pub fn from_json(json: &[u8], what: &str) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let f: Format = serde_json::from_slice(json).map_err(|e| Error::damaged(what, format!("manifest: {e}")))?;
        if !(MANIFEST_FORMAT..=MANIFEST_FORMAT_EMBEDDED).contains(&f.format) {
            return Err(
                Error::config(what, format!("manifest format {} is not supported", f.format)).fix("upgrade Lifeboat"),
            );
        }
        serde_json::from_slice(json).map_err(|e| Error::damaged(what, format!("manifest: {e}")))
    }

    /// Every database whose pages this snapshot holds: the configured ones
    /// and those found inside directory sources (named `<source>/<path>`).
    pub fn databases(&self) -> Vec<std::borrow::Cow<'_, SqliteSource>> {
        let mut out = Vec::new();
        for s in &self.sources {
            match s {
                Source::Sqlite(d) => out.push(std::borrow::Cow::Borrowed(d)),
                Source::Directory(d) => {
                    for e in d.entries.iter().filter(|e| e.database.is_some()) {
                        let name = format!("{}/{}", d.name, e.path);
                        let path = format!("{}/{}", d.path, e.path);
                        out.extend(e.database_source(&name, &path).map(std::borrow::Cow::Owned));
                    }
                }
                Source::File(_) => {}
            }
        }
        out
    }

    /// Refuse a layout that could make a restore write anywhere but where it
    /// means to: source names that are not one plain path component or are
    /// repeated, source paths that are not absolute and normal, entries that
    /// repeat a path, climb with `..`, or sit beneath anything but a
    /// directory entry listed before them (a symlink, above all). A manifest
    /// Lifeboat wrote never fails this; one crafted or damaged does, before a
    /// restore writes a byte. `what` names the manifest in the error.
    pub fn check_layout(&self, what: &str) -> Result<()> {
        let damaged = |problem: String| {
            Error::damaged(what, problem)
                .code(ErrorCode::RestoreUnsafeManifest)
                .fix("the snapshot is damaged or was tampered with: restore another one, and run `lifeboat verify`")
        };
        let mut names = std::collections::HashSet::new();
        for source in &self.sources {
            let name = source.name();
            if !is_plain_component(name) || name.starts_with(".lifeboat-") {
                return Err(damaged(format!("source name {name:?} is not a plain file name")));
            }
            if !names.insert(name) {
                return Err(damaged(format!("source name {name:?} appears twice")));
            }
            // Absolute. (Older versions recorded paths from a relative
            // config unresolved, `/etc/app/../svc/state.db`: an in-place
            // restore resolves them by name, so `..` is allowed here.)
            let path = source.path();
            if !path.starts_with('/') || path.contains('\0') {
                return Err(damaged(format!(
                    "source {name:?} has path {path:?}, not an absolute path"
                )));
            }
            match source {
                Source::Sqlite(_) => {}
                Source::File(f) => {
                    if !f.entry.path.is_empty() || f.entry.kind == EntryKind::Dir {
                        return Err(damaged(format!("file source {name:?} holds more than one file")));
                    }
                }
                Source::Directory(d) => {
                    check_entries(&d.entries).map_err(|p| damaged(format!("source {name:?}: {p}")))?
                }
            }
        }
        Ok(())
    }
}

/// One path component that names something in its directory: not empty,
/// not `.` or `..`, no `/` and no NUL.
fn is_plain_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('/') && !c.contains('\0')
}

/// A directory source's entries: the root first, then each path once, each
/// beneath a directory entry listed before it.
fn check_entries(entries: &[Entry]) -> std::result::Result<(), String> {
    match entries.first() {
        Some(root) if root.path.is_empty() && root.kind == EntryKind::Dir => {}
        _ => return Err("its first entry is not the directory itself".into()),
    }
    let mut dirs = std::collections::HashSet::from([""]);
    let mut seen = std::collections::HashSet::new();
    for e in &entries[1..] {
        let (parent, leaf) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
        if !is_plain_component(leaf) || !parent.split('/').all(|c| parent.is_empty() || is_plain_component(c)) {
            return Err(format!("entry {:?} is not a relative path of plain names", e.path));
        }
        if !seen.insert(e.path.as_str()) {
            return Err(format!("entry {:?} appears twice", e.path));
        }
        if !dirs.contains(parent) {
            return Err(format!(
                "entry {:?} does not lie beneath a directory entry listed before it",
                e.path
            ));
        }
        if e.database.is_some() && (e.kind != EntryKind::File || e.blake3.is_none() || !e.chunks.is_empty()) {
            return Err(format!("entry {:?} holds a database but is not a plain file", e.path));
        }
        if e.kind == EntryKind::Dir {
            dirs.insert(&e.path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_with_time(time: &str) -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/manifests/ok-plain-directory.json"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v["time"] = serde_json::Value::String(time.into());
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_time_is_read_typed_and_written_back_as_the_same_text() {
        let m = Manifest::from_json(&corpus_with_time("2026-11-30T08:15:02.123456789Z"), "m").unwrap();
        assert_eq!(
            m.time,
            "2026-11-30T08:15:02.123456789Z".parse::<jiff::Timestamp>().unwrap()
        );
        let (json, _) = m.to_json();
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""time":"2026-11-30T08:15:02.123456789Z""#), "{text}");
        // What a snapshot writes now reads back to the same bytes: ids hold.
        let again = Manifest::from_json(text.as_bytes(), "m").unwrap().to_json().0;
        assert_eq!(again, text.into_bytes());
    }

    #[test]
    fn a_manifest_whose_time_is_not_rfc3339_is_damaged() {
        for bad in ["yesterday", "", "2026-13-01T00:00:00Z"] {
            let e = Manifest::from_json(&corpus_with_time(bad), "snapshot 1234").unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::BadData, "{bad}: {e}");
            assert!(e.to_string().contains("is not RFC 3339"), "{bad}: {e}");
        }
    }
}
