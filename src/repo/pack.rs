//! Pack files: many blobs in one object, so object stores see few large PUTs.
//!
//! Layout (docs/FORMAT.md, "Pack file"):
//! `frame*  header-envelope  header_len:u32le  "LBPK"`.
//! A frame is one envelope holding one or more blobs back to back (pages
//! share frames of up to 16 pages, so zstd sees more than one page at a time).
//! The header lists every blob so a pack can be re-indexed on its own.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;

/// The last four bytes of every pack file.
pub const PACK_MAGIC: &[u8; 4] = b"LBPK";
const HEADER_MAGIC: &[u8; 4] = b"LBPH";
const HEADER_VERSION: u8 = 1;
/// Length of a blob entry, in pack headers and index files.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
/// What a blob holds (docs/FORMAT.md section 5).
pub enum BlobType {
    /// One SQLite page.
    Page = 0,
    /// A content-defined chunk of a regular file.
    Chunk = 1,
    /// A database page map (see `pagemap`).
    PageMap = 2,
}

impl BlobType {
    /// The type stored as `b`, `None` for one this version does not know.
    pub fn from_u8(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Page),
            1 => Some(BlobType::Chunk),
            2 => Some(BlobType::PageMap),
            _ => None,
        }
    }
}

/// Where one blob sits: the frame (an envelope in the pack) that holds it,
/// and its byte range inside the decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// The blob's type.
    pub kind: BlobType,
    /// The blob id.
    pub id: Id,
    /// Offset of the frame in the pack.
    pub offset: u32,
    /// Stored (enveloped) length of the frame.
    pub length: u32,
    /// Offset of the blob inside the decoded frame.
    pub blob_offset: u32,
    /// Length of the blob.
    pub raw_length: u32,
}

impl BlobEntry {
    /// Append the 49-byte stored form.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.blob_offset.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    /// Parse the 49-byte stored form; `None` when too short or of an unknown
    /// type.
    pub fn read_from(b: &[u8]) -> Option<BlobEntry> {
        if b.len() < ENTRY_LEN {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        Some(BlobEntry {
            kind: BlobType::from_u8(b[0])?,
            id: Id(b[1..33].try_into().unwrap()),
            offset: u32_at(33),
            length: u32_at(37),
            blob_offset: u32_at(41),
            raw_length: u32_at(45),
        })
    }

    /// The blob's bytes within its decoded frame, if they lie inside it.
    pub fn slice<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.blob_offset as usize;
        frame.get(start..start.checked_add(self.raw_length as usize)?)
    }
}

/// A blob placed in a frame: its type, id, and range in the decoded frame.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// The blob's type.
    pub kind: BlobType,
    /// The blob id.
    pub id: Id,
    /// Offset of the blob in the decoded frame.
    pub blob_offset: u32,
    /// Length of the blob.
    pub raw_length: u32,
}

/// Streams blobs into a staging file; `finish` seals it and names it by hash.
pub struct PackWriter {
    path: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    entries: Vec<BlobEntry>,
    written: u64,
}

/// A sealed pack in the staging directory, named by its hash.
pub struct FinishedPack {
    /// The pack id: the BLAKE3 of the whole file.
    pub id: Id,
    /// Where it is staged.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its blobs.
    pub entries: Vec<BlobEntry>,
}

impl PackWriter {
    /// Start a pack in a new file under `staging`.
    pub fn create(staging: &Path) -> Result<PackWriter> {
        crate::fsutil::create_private_dir_all(staging).at(staging)?;
        let path = staging.join(format!("pack-{}", crate::fsutil::unique_suffix()));
        let file = crate::fsutil::create_private_file(&path).at(&path)?;
        Ok(PackWriter {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            written: 0,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.written
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append a frame whose envelope is the concatenation of `parts`,
    /// holding `members`.
    pub fn add(&mut self, parts: &[&[u8]], members: &[Member]) -> Result<()> {
        let offset = u32::try_from(self.written)
            .map_err(|_| Error::usage("pack grew past 4 GiB; pack_size is misconfigured"))?;
        let mut length = 0;
        for p in parts {
            self.put(p)?;
            length += p.len();
        }
        for m in members {
            self.entries.push(BlobEntry {
                kind: m.kind,
                id: m.id,
                offset,
                length: length as u32,
                blob_offset: m.blob_offset,
                raw_length: m.raw_length,
            });
        }
        Ok(())
    }

    /// Append a frame written by `fill`, holding `members`.
    pub fn add_streamed(
        &mut self,
        members: &[Member],
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let offset = u32::try_from(self.written)
            .map_err(|_| Error::usage("pack grew past 4 GiB; pack_size is misconfigured"))?;
        let path = self.path.clone();
        fill(&mut PackSink(self)).at(&path)?;
        let length = (self.written - offset as u64) as u32;
        for m in members {
            self.entries.push(BlobEntry {
                kind: m.kind,
                id: m.id,
                offset,
                length,
                blob_offset: m.blob_offset,
                raw_length: m.raw_length,
            });
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at(&self.path)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Write header and trailer and return the sealed pack. It is not yet
    /// durable: writeback has only been started, and `Storage::put_file`
    /// fsyncs it when it is published.
    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut header = Vec::with_capacity(9 + self.entries.len() * ENTRY_LEN);
        header.extend_from_slice(HEADER_MAGIC);
        header.push(HEADER_VERSION);
        header.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.write_to(&mut header);
        }
        let header = codec::encode_raw(&header);
        self.put(&header)?;
        self.put(&(header.len() as u32).to_le_bytes())?;
        self.put(PACK_MAGIC)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        crate::fsutil::start_writeback(&file);
        Ok(FinishedPack {
            id: Id(*self.hasher.finalize().as_bytes()),
            path: self.path,
            size: self.written,
            entries: self.entries,
        })
    }

    /// Drop the unfinished pack and its file.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Lets a frame be streamed into a pack, hashed and counted as it goes.
struct PackSink<'a>(&'a mut PackWriter);

impl std::io::Write for PackSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.out.write_all(buf)?;
        self.0.hasher.update(buf);
        self.0.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parse the header of a whole pack (used by `verify --read-data`).
pub fn parse_header(pack: &[u8], what: &str) -> Result<Vec<BlobEntry>> {
    parse_header_tail(pack, pack.len() as u64, what)
}

/// How many bytes at a pack's end `parse_header_tail` needs: the trailer
/// says, once the last 8 bytes are in.
pub fn header_tail_len(trailer: &[u8], what: &str) -> Result<u64> {
    if trailer.len() < 8 || &trailer[trailer.len() - 4..] != PACK_MAGIC {
        return Err(Error::damaged(what, "not a pack file (missing LBPK trailer)"));
    }
    let n = trailer.len();
    Ok(u32::from_le_bytes(trailer[n - 8..n - 4].try_into().unwrap()) as u64 + 8)
}

/// Parse a pack's header from `tail`, the last bytes of a pack of
/// `pack_len` bytes (at least the header and trailer): what `repair index`
/// reads instead of the whole pack.
pub fn parse_header_tail(pack: &[u8], pack_len: u64, what: &str) -> Result<Vec<BlobEntry>> {
    let n = pack.len();
    if n < 8 || &pack[n - 4..] != PACK_MAGIC {
        return Err(Error::damaged(what, "not a pack file (missing LBPK trailer)"));
    }
    let hlen = u32::from_le_bytes(pack[n - 8..n - 4].try_into().unwrap()) as usize;
    if hlen + 8 > n {
        return Err(Error::damaged(what, "pack header length exceeds the file"));
    }
    let header = codec::decode(&pack[n - 8 - hlen..n - 8], what)?;
    if header.len() < 9 || &header[..4] != HEADER_MAGIC {
        return Err(Error::damaged(what, "pack header has the wrong magic"));
    }
    if header[4] != HEADER_VERSION {
        return Err(
            Error::config(what, format!("pack header version {} is not supported", header[4])).fix("upgrade Lifeboat"),
        );
    }
    let count = u32::from_le_bytes(header[5..9].try_into().unwrap()) as usize;
    let body = &header[9..];
    if body.len() != count * ENTRY_LEN {
        return Err(Error::damaged(
            what,
            "pack header entry count does not match its length",
        ));
    }
    let data_end = pack_len - 8 - hlen as u64;
    body.chunks_exact(ENTRY_LEN)
        .map(|c| {
            let e = BlobEntry::read_from(c).ok_or_else(|| newer_blob_type(what, c[0]))?;
            if e.offset as u64 + e.length as u64 > data_end {
                return Err(Error::damaged(
                    what,
                    format!("blob {} lies outside the pack", e.id.short()),
                ));
            }
            Ok(e)
        })
        .collect()
}

/// A blob type this version does not know was written by a newer one.
pub fn newer_blob_type(what: &str, t: u8) -> Error {
    Error::config(what, format!("unknown blob type {t}"))
        .fix("this repository was written by a newer Lifeboat; upgrade to read it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoder;

    #[test]
    fn pack_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let mut enc = Encoder::new(1);
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 4096]).collect();
        // Two single-blob frames, then one frame holding three blobs.
        for b in &blobs[..2] {
            let m = Member {
                kind: BlobType::Page,
                id: Id::of(b),
                blob_offset: 0,
                raw_length: 4096,
            };
            w.add(&[&enc.encode(b)], &[m]).unwrap();
        }
        let joined: Vec<u8> = blobs[2..].concat();
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                kind: BlobType::Page,
                id: Id::of(&blobs[2 + i]),
                blob_offset: 4096 * i as u32,
                raw_length: 4096,
            })
            .collect();
        w.add(&[&enc.encode(&joined)], &members).unwrap();
        let done = w.finish().unwrap();
        let bytes = std::fs::read(&done.path).unwrap();
        assert_eq!(Id::of(&bytes), done.id);
        assert_eq!(bytes.len() as u64, done.size);
        let entries = parse_header(&bytes, "p").unwrap();
        assert_eq!(entries, done.entries);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[3].offset, entries[4].offset, "blobs share a frame");
        for (e, b) in entries.iter().zip(&blobs) {
            let raw = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let frame = crate::codec::decode(raw, "p").unwrap();
            assert_eq!(e.slice(&frame).unwrap(), &b[..]);
            assert_eq!(Id::of(e.slice(&frame).unwrap()), e.id);
        }
        let mut broken = bytes.clone();
        let n = broken.len();
        broken[n - 1] ^= 1;
        assert!(parse_header(&broken, "p").is_err());
        assert!(parse_header(&bytes[..n - 2], "p").is_err());
    }
}
