//! The repository's key layout (docs/FORMAT.md section 1), in one place:
//! every key the repository stores or reads is built here, and every key a
//! listing returns is parsed here. Storage below knows keys only as opaque
//! `/`-separated strings; what it may cache is told to it from here
//! ([`is_immutable`]).

use crate::id::Id;

/// The kinds of object a repository holds, by where their keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `config`: the repository's parameters and format version.
    Config,
    /// `data/XX/<packid>`: pack files.
    Pack,
    /// `index/<indexid>`: index files.
    Index,
    /// `snapshots/<snapid>`: snapshot manifests.
    Snapshot,
    /// `marks/<markid>`: packs a prune marked for deletion.
    Mark,
    /// `wal/<stream>/<first>-<last>`: WAL segments of a replicated database.
    Segment,
    /// `log/<time>-<hash>`: operations log records.
    LogRecord,
    /// `damaged/<key>`: objects `repair` set aside.
    Damaged,
    /// `drills/<time>-<hash>`: restore drill records.
    Drill,
    /// `lock`: the local writer's lock file, not a repository object.
    Lock,
    /// `tmp/…`: the local writer's staging area, not a repository object.
    Staging,
}

impl Kind {
    /// The first component of this kind's keys (the whole key for
    /// [`Kind::Config`] and [`Kind::Lock`]); what a listing of the kind
    /// asks for.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Pack => "data",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Mark => "marks",
            Kind::Segment => "wal",
            Kind::LogRecord => "log",
            Kind::Damaged => "damaged",
            Kind::Drill => "drills",
            Kind::Lock => "lock",
            Kind::Staging => "tmp",
        }
    }

    /// The kind a key belongs to by its place, `None` for a key outside the
    /// layout (a stray file). It says nothing of whether the name itself
    /// parses: see [`object_id`], [`parse_segment`], [`parse_record`].
    pub fn of(key: &str) -> Option<Kind> {
        const ALL: [Kind; 11] = [
            Kind::Config,
            Kind::Pack,
            Kind::Index,
            Kind::Snapshot,
            Kind::Mark,
            Kind::Segment,
            Kind::LogRecord,
            Kind::Damaged,
            Kind::Drill,
            Kind::Lock,
            Kind::Staging,
        ];
        let (top, rest) = match key.split_once('/') {
            Some((top, rest)) => (top, Some(rest)),
            None => (key, None),
        };
        ALL.into_iter().find(|k| {
            let whole_key = matches!(k, Kind::Config | Kind::Lock);
            k.prefix() == top && whole_key == rest.is_none()
        })
    }

    /// Whether objects of this kind never change once written: named by
    /// their content (or by time and content), so a local copy is never
    /// stale. Packs are immutable too, but too large to keep a copy of.
    fn is_cached_metadata(self) -> bool {
        // Operations log records are immutable too, and `lifeboat log`
        // would otherwise download every one on every run.
        // Drill records likewise: `drill list` and `status` read them often.
        matches!(self, Kind::Index | Kind::Snapshot | Kind::LogRecord | Kind::Drill)
    }
}

/// The key of the repository's config object.
pub const CONFIG: &str = "config";

/// The local writer's lock file, relative to the repository root (in a
/// bucket, relative to the host's working directory).
pub const LOCK: &str = "lock";

/// The local writer's staging directory, relative to the repository root.
pub const STAGING: &str = "tmp";

/// The directories `init` creates in a local repository.
pub const SKELETON: [&str; 4] = ["data", "index", "snapshots", "tmp"];

/// The directories (`""` is the root) where an unfinished atomic write of a
/// locked writer may be left: index files, manifests, marks and the config.
/// Not `log/`: records are appended after a command ends, without the lock.
pub const LOCKED_WRITES: [&str; 4] = ["", "index", "snapshots", "marks"];

/// The layout as storage needs to know it: what it may cache, and where a
/// directory repository keeps its staging area and writer lock.
pub const LAYOUT: crate::storage::Layout = crate::storage::Layout {
    cacheable: is_immutable,
    staging: STAGING,
    lock: LOCK,
    locked_writes: &LOCKED_WRITES,
};

/// Whether the object at `key` may be kept in a local cache: index files,
/// manifests and operations log records, which never change once written.
pub fn is_immutable(key: &str) -> bool {
    !key.contains("..") && Kind::of(key).is_some_and(Kind::is_cached_metadata)
}

/// Key of a pack: `data/XX/<id>`, XX its first two hex digits.
pub fn pack(id: &Id) -> String {
    let h = id.hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Key of an index file.
pub fn index(id: &Id) -> String {
    format!("index/{}", id.hex())
}

/// Key of a snapshot manifest.
pub fn snapshot(id: &Id) -> String {
    format!("snapshots/{}", id.hex())
}

/// Key of a mark.
pub fn mark(id: &Id) -> String {
    format!("marks/{}", id.hex())
}

/// The id an object's key names (its last component), `None` when that is
/// not an id: a name Lifeboat never writes (a stray file).
pub fn object_id(key: &str) -> Option<Id> {
    key.rsplit('/').next().and_then(Id::parse)
}

/// Where the WAL segments of `stream` live.
pub fn stream_prefix(stream: &str) -> String {
    format!("wal/{stream}/")
}

/// Key of the WAL segment of `stream` holding transactions `first_txid` to
/// `last_txid`.
pub fn segment(stream: &str, first_txid: u64, last_txid: u64) -> String {
    format!("wal/{stream}/{}", segment_name(first_txid, last_txid))
}

/// A segment's name within its stream (also its spool file's name).
pub fn segment_name(first_txid: u64, last_txid: u64) -> String {
    format!("{first_txid:016x}-{last_txid:016x}")
}

/// `(first_txid, last_txid)` from a key's (or a spool file name's) last
/// component; `None` for anything that is not a segment (a reader skips it).
pub fn parse_segment(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let (a, b) = name.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    let first = u64::from_str_radix(a, 16).ok()?;
    let last = u64::from_str_radix(b, 16).ok()?;
    (first <= last).then_some((first, last))
}

/// The stream a key under `wal/` belongs to.
pub fn segment_stream(key: &str) -> Option<&str> {
    let (stream, _) = key.strip_prefix("wal/")?.split_once('/')?;
    Some(stream)
}

const RECORD_HASH_DIGITS: usize = 16;
const RECORD_TIME_DIGITS: usize = 20;

/// Key of an operations log record: `log/<nanoseconds since the epoch, 20
/// digits>-<first 16 hex digits of BLAKE3(json)>`.
pub fn record(nanos: u64, json: &[u8]) -> String {
    let hash = blake3::hash(json).to_hex();
    format!("log/{nanos:0RECORD_TIME_DIGITS$}-{}", &hash[..RECORD_HASH_DIGITS])
}

/// The time (nanoseconds) and hash prefix a record key names; `None` for
/// anything that is not a record key (readers leave such objects alone).
pub fn parse_record(key: &str) -> Option<(u64, &str)> {
    parse_timed_name(key.strip_prefix("log/")?)
}

/// `<20 digits>-<16 lower hex>`: the name of a log or drill record.
fn parse_timed_name(name: &str) -> Option<(u64, &str)> {
    let (time, hash) = name.split_once('-')?;
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if time.len() != RECORD_TIME_DIGITS || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if hash.len() != RECORD_HASH_DIGITS || !lower_hex(hash) {
        return None;
    }
    Some((time.parse().ok()?, hash))
}

/// Whether a record's JSON matches the hash its key names.
pub fn record_matches(hash: &str, json: &[u8]) -> bool {
    blake3::hash(json).to_hex()[..RECORD_HASH_DIGITS] == *hash
}

/// Key of a restore drill record: `drills/<nanoseconds since the epoch, 20
/// digits>-<first 16 hex digits of BLAKE3(json)>`, named like an operations
/// log record, so the two are listed, bounded by time and checked alike.
pub fn drill(nanos: u64, json: &[u8]) -> String {
    let hash = blake3::hash(json).to_hex();
    format!("drills/{nanos:0RECORD_TIME_DIGITS$}-{}", &hash[..RECORD_HASH_DIGITS])
}

/// The time (nanoseconds) and hash prefix a drill record key names; `None`
/// for anything else under `drills/`.
pub fn parse_drill(key: &str) -> Option<(u64, &str)> {
    parse_timed_name(key.strip_prefix("drills/")?)
}

/// Where `repair` keeps a damaged object's bytes: under `damaged/`, with its
/// original key.
pub fn aside(key: &str) -> String {
    format!("damaged/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        let id = Id::of(b"x");
        assert_eq!(Kind::of(&pack(&id)), Some(Kind::Pack));
        assert_eq!(Kind::of(&index(&id)), Some(Kind::Index));
        assert_eq!(Kind::of(&snapshot(&id)), Some(Kind::Snapshot));
        assert_eq!(Kind::of(&mark(&id)), Some(Kind::Mark));
        assert_eq!(Kind::of(&segment("ab", 1, 2)), Some(Kind::Segment));
        assert_eq!(Kind::of(&record(5, b"{}")), Some(Kind::LogRecord));
        assert_eq!(Kind::of(CONFIG), Some(Kind::Config));
        assert_eq!(Kind::of(LOCK), Some(Kind::Lock));
        assert_eq!(Kind::of("tmp/x"), Some(Kind::Staging));
        assert_eq!(Kind::of("config/x"), None);
        assert_eq!(Kind::of("stray"), None);
        assert_eq!(object_id(&pack(&id)), Some(id));
        assert_eq!(segment_stream(&segment("ab", 1, 2)), Some("ab"));
        assert_eq!(parse_segment(&segment("ab", 7, 8)), Some((7, 8)));
        assert_eq!(parse_segment("wal/ab/junk"), None);
        let key = record(5, b"{}");
        let (nanos, hash) = parse_record(&key).unwrap();
        assert_eq!(nanos, 5);
        assert!(record_matches(hash, b"{}"));
        let key = drill(7, b"{}");
        assert_eq!(Kind::of(&key), Some(Kind::Drill));
        assert_eq!(parse_drill(&key), Some((7, hash)));
        assert_eq!(parse_drill(&record(7, b"{}")), None);
        assert_eq!(parse_record(&key), None);
        assert!(is_immutable(&key));
    }

    #[test]
    fn only_metadata_is_cached() {
        let id = Id::of(b"x");
        assert!(is_immutable(&index(&id)));
        assert!(is_immutable(&snapshot(&id)));
        assert!(is_immutable(&record(5, b"{}")));
        assert!(!is_immutable(&pack(&id)));
        assert!(!is_immutable(&mark(&id)));
        assert!(!is_immutable(CONFIG));
        assert!(!is_immutable("index/../config"));
    }
}
