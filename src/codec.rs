//! The envelope every stored object and every blob passes through. One leading
//! byte names the encoding, so encryption can be added as a new tag without
//! touching readers of the older ones (docs/FORMAT.md, "Envelope").

use crate::error::{Error, Result};

/// Envelope tag: the body is the data itself, uncompressed.
pub const TAG_RAW: u8 = 0x00;
/// Envelope tag: the body is one zstd frame that records its content size.
pub const TAG_ZSTD: u8 = 0x01;

/// Decoded objects larger than this are refused: no legitimate blob, index or
/// manifest comes close, and a corrupt length must not exhaust memory.
const MAX_DECODED: usize = 1 << 30;

/// Compresses with a reusable zstd context; one per worker thread.
pub struct Encoder {
    zstd: zstd::bulk::Compressor<'static>,
}

impl Encoder {
    /// A compressor at zstd `level`: the repository config's level for blobs,
    /// 3 for manifests and index files.
    pub fn new(level: i32) -> Encoder {
        let zstd = zstd::bulk::Compressor::new(level).expect("zstd compressor");
        Encoder { zstd }
    }

    /// Encode `data`, keeping it raw when compression does not pay.
    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(data, &mut out);
        out
    }

    /// Append the envelope of `data` to `out`; returns its length.
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.push(TAG_ZSTD);
        out.resize(start + 1 + zstd::zstd_safe::compress_bound(data.len()), 0);
        let n = self
            .zstd
            .compress_to_buffer(data, &mut out[start + 1..])
            .expect("zstd output buffer sized by compress_bound");
        if n >= data.len() {
            out.truncate(start);
            out.push(TAG_RAW);
            out.extend_from_slice(data);
        } else {
            out.truncate(start + 1 + n);
        }
        out.len() - start
    }
}

/// Decompresses with a reusable zstd context.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            zstd: zstd::bulk::Decompressor::new().expect("zstd decompressor"),
        }
    }
}

impl Decoder {
    /// Decode an envelope; `what` names the object for error messages.
    pub fn decode(&mut self, data: &[u8], what: &str) -> Result<Vec<u8>> {
        let (&tag, body) = data
            .split_first()
            .ok_or_else(|| Error::damaged(what, "empty object (no envelope tag)"))?;
        match tag {
            TAG_RAW => Ok(body.to_vec()),
            TAG_ZSTD => {
                let size = zstd::zstd_safe::get_frame_content_size(body)
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::damaged(what, "zstd frame without a content size"))?;
                if size as usize > MAX_DECODED {
                    return Err(Error::damaged(what, format!("claims {size} decoded bytes")));
                }
                self.zstd
                    .decompress(body, size as usize)
                    .map_err(|e| Error::damaged(what, format!("zstd: {e}")))
            }
            // A newer encoding comes with a newer repository version, which
            // `config` refuses before any object is read: in a repository this
            // Lifeboat opened, an unknown tag is damage.
            other => Err(Error::damaged(what, format!("unknown envelope tag 0x{other:02x}"))),
        }
    }
}

impl Decoder {
    /// [`Decoder::decode`] taking ownership: a raw envelope is unwrapped in
    /// place, so a large raw blob (a page map) is never held twice.
    pub fn decode_vec(&mut self, mut data: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        if data.first() == Some(&TAG_RAW) {
            data.drain(..1);
            return Ok(data);
        }
        self.decode(&data, what)
    }
}

/// One-shot helpers for small objects (config, index, manifests).
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    Encoder::new(level).encode(data)
}

/// One-shot [`Decoder::decode`] for small objects. Fails with
/// [`ErrorKind::BadData`](crate::ErrorKind::BadData) for an empty object, an
/// unknown tag, a frame without a content size or one claiming over 1 GiB.
pub fn decode(data: &[u8], what: &str) -> Result<Vec<u8>> {
    Decoder::default().decode(data, what)
}

/// Envelope without compression, for objects whose readability matters more
/// than size (config, pack headers of random ids).
pub fn encode_raw(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(TAG_RAW);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_falls_back_to_raw() {
        let text = b"hello hello hello hello hello hello hello hello".repeat(20);
        let enc = encode(&text, 1);
        assert_eq!(enc[0], TAG_ZSTD);
        assert!(enc.len() < text.len());
        assert_eq!(decode(&enc, "t").unwrap(), text);

        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let enc = encode(&noise, 1);
        assert_eq!(decode(&enc, "t").unwrap(), noise);
    }

    #[test]
    fn refuses_unknown_tag_and_truncation() {
        // Damage, not "upgrade": a newer encoding comes with a newer
        // repository version, refused before any object is read.
        let e = decode(&[7, 1, 2], "t").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadData);
        assert!(e.fix.contains("verify --read-data"), "{e}");
        let enc = encode(&[b'a'; 10000], 1);
        assert!(decode(&enc[..enc.len() - 3], "t").is_err());
        assert!(decode(&[], "t").is_err());
    }
}
