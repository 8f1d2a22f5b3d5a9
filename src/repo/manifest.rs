//! Snapshot manifests: `snapshots/<id>`, a zstd envelope around JSON, written
//! last, after every pack and index it references is durable. The id is the
//! BLAKE3 of the JSON bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

pub const MANIFEST_FORMAT: u32 = 1;
/// Format 2 adds `ReplicationPoint::watched_until_ns`; written only by the
/// manifests that carry it, so every other manifest stays readable by
/// format-1 readers.
pub const MANIFEST_FORMAT_WATCHED: u32 = 2;

/// The format a manifest of `sources` is written in.
pub fn format_for(sources: &[Source]) -> u32 {
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
pub struct Manifest {
    pub format: u32,
    /// RFC 3339, UTC.
    pub time: String,
    pub host: String,
    pub lifeboat_version: String,
    /// `full` or `partial`.
    pub kind: String,
    pub tags: Vec<String>,
    pub sources: Vec<Source>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    Sqlite(SqliteSource),
    Directory(DirectorySource),
    File(FileSource),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Sqlite(s) => &s.name,
            Source::Directory(s) => &s.name,
            Source::File(s) => &s.name,
        }
    }
    pub fn path(&self) -> &str {
        match self {
            Source::Sqlite(s) => &s.path,
            Source::Directory(s) => &s.path,
            Source::File(s) => &s.path,
        }
    }
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
pub struct SqliteSource {
    pub name: String,
    /// Absolute path at capture time; restore's default target.
    pub path: String,
    pub page_size: u32,
    pub page_count: u32,
    /// `page_size * page_count`: the restored file's exact length.
    pub size: u64,
    /// BLAKE3 of the whole restored database file.
    pub blake3: Id,
    pub pagemap: Id,
    /// Result of the schema-version query, when it returned an integer.
    pub schema_version: Option<i64>,
    pub schema_query: String,
    pub sqlite_version: String,
    pub journal_mode: String,
    /// Metadata of the database file itself.
    pub mode: u32,
    pub uid: u32,
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
    pub stream: String,
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
pub struct DirectorySource {
    pub name: String,
    pub path: String,
    pub exclude: Vec<String>,
    /// The directory itself first (path ""), then entries in depth-first,
    /// name-sorted order, parents before children.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub name: String,
    pub path: String,
    pub entry: Entry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative to the source root, `/`-separated; "" for the root itself.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    /// Symlink target, stored verbatim and never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Bytes the sources hold (databases at their page size times count).
    pub logical_bytes: u64,
    pub files: u64,
    /// Blobs this snapshot stored that the repository did not have.
    pub new_blobs: u64,
    /// Their size before and after compression.
    pub added_raw_bytes: u64,
    pub added_stored_bytes: u64,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Manifest {
    /// The bytes stored (before the envelope) and the id they hash to.
    pub fn to_json(&self) -> (Vec<u8>, Id) {
        let json = serde_json::to_vec(self).expect("manifest serializes");
        let id = Id::of(&json);
        (json, id)
    }

    pub fn from_json(json: &[u8], what: &str) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let f: Format = serde_json::from_slice(json).map_err(|e| Error::damaged(what, format!("manifest: {e}")))?;
        if !(MANIFEST_FORMAT..=MANIFEST_FORMAT_WATCHED).contains(&f.format) {
            return Err(
                Error::config(what, format!("manifest format {} is not supported", f.format)).fix("upgrade Lifeboat"),
            );
        }
        serde_json::from_slice(json).map_err(|e| Error::damaged(what, format!("manifest: {e}")))
    }

    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
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
                .event("restore.unsafe_manifest")
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
        if e.kind == EntryKind::Dir {
            dirs.insert(&e.path);
        }
    }
    Ok(())
}

pub fn snapshot_key(id: &Id) -> String {
    format!("snapshots/{}", id.hex())
}
