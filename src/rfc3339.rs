//! Times as RFC 3339 text, for serde: the form stored structures
//! (manifests) and `--json` output keep them in, while the code holds a
//! typed `jiff::Timestamp`. Written as `Timestamp`'s display, so a manifest
//! written now has the bytes (and so the id) it had when its time was kept
//! as that very text; read strictly, so a time that does not parse makes
//! the structure damaged rather than timeless.

use serde::{Deserialize, Deserializer, Serializer, de::Error};

/// Write `time` as RFC 3339 (UTC, `Z`).
pub fn serialize<S: Serializer>(time: &jiff::Timestamp, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(time)
}

/// Read an RFC 3339 time; anything else is an error naming the text.
pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<jiff::Timestamp, D::Error> {
    let text = String::deserialize(input)?;
    text.parse()
        .map_err(|e| D::Error::custom(format!("time `{text}` is not RFC 3339: {e}")))
}
