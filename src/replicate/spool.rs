//! The replicator's local state for one database, in
//! `$XDG_STATE_HOME/lifeboat/replicate/<stream>/`: `state.json` (the
//! database's identity, and where WAL reading stood at the last base) and
//! `spool/`, the encoded segments not yet uploaded to every replica, and
//! always the newest one. A segment is spooled (written, fsynced, renamed)
//! as soon as it is sealed, so a crash or an unreachable replica never loses
//! a commit and a restart re-uploads nothing already uploaded. Where reading
//! stood after the last commit is the newest of the two: the state, or the
//! newest segment's `wal_end` (a busy database seals tens of segments a
//! second, and saving the state after each cost a second file created,
//! fsynced and renamed every time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::repo::segment::{self, Segment};
use crate::sqlite::wal::WalPosition;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaState {
    pub version: u32,
    pub stream: String,
    pub db: String,
    /// The last transaction id given out (a commit, or a base after a gap).
    pub txid: u64,
    /// Where WAL reading stood after `txid`; absent after a gap.
    pub pos: Option<WalPosition>,
    pub page_size: u32,
    pub dev: u64,
    pub ino: u64,
    /// Until when the replicator watched the log with everything it read
    /// shipped (ns since the epoch; 0 when not known): commits found after
    /// a restart were made after this.
    #[serde(default)]
    pub seen_ns: i64,
}

pub struct Spool {
    pub dir: PathBuf,
    /// Spooled segments by first txid: (last txid, file).
    entries: Mutex<BTreeMap<u64, (u64, PathBuf)>>,
    /// The `seen` file, kept open between heartbeats.
    seen: Mutex<Option<std::fs::File>>,
}

/// The default home of replication state.
pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| crate::fsutil::home_dir().join(".local/state"));
    base.join("lifeboat/replicate")
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool> {
        let spool = dir.join("spool");
        fsutil::create_private_dir_all(&spool).map_err(|e| {
            Error::io(&spool, e).fix("check that the replication state directory is writable (or set XDG_STATE_HOME)")
        })?;
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(&spool).at(&spool)? {
            let e = e.at(&spool)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted spool write.
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if let Some((first, last)) = segment::parse_key(&name) {
                entries.insert(first, (last, e.path()));
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            seen: Mutex::new(None),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Record that `stream`'s log was watched until `ns` with everything
    /// committed before it read and spooled. Not fsynced: after a crash an
    /// older value (a wider interval for what the next run finds) is the
    /// safe side, and an idle replicator writes this every second.
    ///
    /// Written over in place, one fixed-length record at offset 0 through a
    /// descriptor kept open: a new file created and renamed every second
    /// for each of a hundred idle databases was most of an idle
    /// replicator's CPU (ext4 inode allocation). A record is far smaller
    /// than a sector, so a crash leaves the old one or the new one; a file
    /// left unreadable reads as 0, the widest interval.
    pub fn save_seen(&self, stream: &str, ns: i64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let p = self.dir.join("seen");
        let mut seen = self.seen.lock().expect("seen");
        if seen.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&p)
                .at(&p)?;
            *seen = Some(f);
        }
        let f = seen.as_ref().expect("opened above");
        f.write_all_at(format!("{stream} {ns:>20}\n").as_bytes(), 0).at(&p)
    }

    /// What [`Spool::save_seen`] last recorded for `stream`; 0 if nothing.
    pub fn load_seen(&self, stream: &str) -> i64 {
        let text = std::fs::read_to_string(self.dir.join("seen")).unwrap_or_default();
        match text.trim().split_once(' ') {
            Some((s, ns)) if s == stream => ns.trim().parse().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn load_state(&self) -> Result<Option<ReplicaState>> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(b) => {
                let s: ReplicaState = serde_json::from_slice(&b).map_err(|e| {
                    Error::bad_data(p.display(), format!("replication state unreadable: {e}"))
                        .fix("remove the file; the next start takes a new base")
                })?;
                if s.version != STATE_VERSION {
                    return Err(
                        Error::config(p.display(), "replication state from another Lifeboat version")
                            .fix("remove the file; the next start takes a new base"),
                    );
                }
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    pub fn save_state(&self, s: &ReplicaState) -> Result<()> {
        fsutil::write_atomic(&self.state_path(), &serde_json::to_vec(s).expect("state serializes"))
    }

    /// Durably spool an encoded segment.
    pub fn put(&self, first: u64, last: u64, bytes: &[u8]) -> Result<()> {
        let name = segment::segment_key("x", first, last)
            .rsplit('/')
            .next()
            .expect("key has a name")
            .to_string();
        let path = self.dir.join("spool").join(name);
        fsutil::write_atomic(&path, bytes)?;
        self.entries.lock().expect("spool").insert(first, (last, path));
        Ok(())
    }

    /// The spooled segment starting at `first`: (last txid, file).
    pub fn get(&self, first: u64) -> Option<(u64, PathBuf)> {
        self.entries.lock().expect("spool").get(&first).cloned()
    }

    /// The first txid held, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.lock().expect("spool").keys().next().copied()
    }

    /// The newest spooled segment, decoded (to resume after a crash between
    /// spooling it and saving the state).
    pub fn newest(&self) -> Result<Option<Segment>> {
        let last = self.entries.lock().expect("spool").values().next_back().cloned();
        let Some((_, path)) = last else { return Ok(None) };
        let raw = std::fs::read(&path).at(&path)?;
        Segment::decode(&raw, &path.display().to_string()).map(Some)
    }

    /// Drop segments every replica has (`below`: lowest txid still needed),
    /// but never the newest: it says where reading stood.
    pub fn trim(&self, below: u64) {
        let mut entries = self.entries.lock().expect("spool");
        let newest = entries.keys().next_back().copied();
        let done: Vec<u64> = entries
            .iter()
            .filter(|(first, (last, _))| *last < below && Some(**first) != newest)
            .map(|(f, _)| *f)
            .collect();
        for f in done {
            if let Some((_, p)) = entries.remove(&f) {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.entries
            .lock()
            .expect("spool")
            .values()
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_newest_segment_whatever_the_replicas_have() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for (first, last) in [(1, 10), (11, 20), (21, 30)] {
            spool.put(first, last, b"segment").unwrap();
        }
        spool.trim(21);
        assert!(spool.get(1).is_none() && spool.get(11).is_none());
        assert!(spool.get(21).is_some());
        spool.trim(u64::MAX);
        assert_eq!(spool.oldest(), Some(21), "the newest says where reading stood");
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(reopened.oldest(), Some(21));
        assert_eq!(reopened.get(21).map(|(last, _)| last), Some(30));
    }
}
