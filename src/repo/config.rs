//! The `config` object: the first thing read, naming the format version and the
//! parameters every writer must share.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::id::Id;

/// The repository format this version reads and writes (docs/FORMAT.md).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// The repository's `config` object (docs/FORMAT.md section 4).
pub struct RepoConfig {
    /// Format version; checked before anything else is read.
    pub format_version: u32,
    /// Random identity of this repository (distinguishes copies in caches).
    pub id: Id,
    /// When `init` ran (RFC 3339, UTC).
    pub created: String,
    /// Target pack size in bytes; packs close once they reach it.
    pub pack_size: u64,
    /// How frames and index files are compressed.
    pub compression: Compression,
    /// How regular files are cut into chunks; writers must share it for dedup.
    pub chunker: Chunker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// Compression settings.
pub struct Compression {
    /// Always `zstd`.
    pub algorithm: String,
    /// zstd level for frames and index files.
    pub level: i32,
}

/// FastCDC (2020) parameters for non-database files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunker {
    /// Smallest chunk (but a last one).
    pub min_size: u32,
    /// Chunk size aimed at.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl RepoConfig {
    /// A new repository's config: a fresh id, now, and the default parameters.
    pub fn new_default() -> RepoConfig {
        let seed = format!("{}-{}", crate::fsutil::unique_suffix(), crate::fsutil::hostname());
        RepoConfig {
            format_version: FORMAT_VERSION,
            id: Id::of(seed.as_bytes()),
            created: jiff::Timestamp::now().to_string(),
            pack_size: 16 << 20,
            compression: Compression {
                algorithm: "zstd".into(),
                level: 1,
            },
            chunker: Chunker {
                min_size: 512 << 10,
                avg_size: 1 << 20,
                max_size: 8 << 20,
            },
        }
    }

    /// The config as stored: a raw envelope around pretty-printed JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("config serializes");
        json.push(b'\n');
        crate::codec::encode_raw(&json)
    }

    /// Parse a stored config, checking the format version first; `location`
    /// names the repository in errors.
    pub fn from_bytes(data: &[u8], location: &str) -> Result<RepoConfig> {
        let what = format!("{location}/config");
        let json = crate::codec::decode(data, &what)?;
        // Read the version alone first so a newer format is reported as such,
        // not as an unknown field.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&json)
            .map_err(|e| Error::damaged(&what, format!("not a Lifeboat repository config: {e}")))?;
        if v.format_version != FORMAT_VERSION {
            return Err(Error::config(
                &what,
                format!(
                    "repository format version {} (this Lifeboat reads {FORMAT_VERSION})",
                    v.format_version
                ),
            )
            .fix("use the Lifeboat version that wrote this repository")
            .code(ErrorCode::RepoFormatVersion));
        }
        let c: RepoConfig =
            serde_json::from_slice(&json).map_err(|e| Error::damaged(&what, format!("invalid config: {e}")))?;
        if c.compression.algorithm != "zstd" {
            return Err(Error::config(
                &what,
                format!("compression `{}` is not supported", c.compression.algorithm),
            )
            .fix("upgrade Lifeboat"));
        }
        Ok(c)
    }
}
