//! Content identifiers: BLAKE3-256. What is hashed depends on the object
//! (docs/FORMAT.md, "Ids"): a blob's decoded bytes, a pack's or index file's
//! stored bytes, a manifest's JSON before its envelope.

use std::fmt;

/// A 32-byte BLAKE3 digest naming a blob, pack, index file or manifest; shown
/// and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Id(pub [u8; 32]);

/// Lexicographic, like the derived order, but decided by the first eight
/// bytes as one integer in all but one case in 2^64: the index's binary
/// searches compare ids millions of times per restore.
impl Ord for Id {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let head = |id: &Id| u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        head(self)
            .cmp(&head(other))
            .then_with(|| self.0[8..].cmp(&other.0[8..]))
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Id {
    /// All zero bytes: "none" where an id is required by layout, e.g. a full page
    /// map's parent or a page map without chaining values.
    pub const ZERO: Id = Id([0; 32]);

    /// The BLAKE3 digest of `data`.
    pub fn of(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }
    /// All 64 hex digits, as in object names and JSON.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The first 8 hex digits, as shown to operators (`list`, log lines).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
    /// Parse exactly 64 hex digits (either case); `None` otherwise. Id prefixes
    /// are resolved by the repository, not here.
    pub fn parse(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
    /// Whether this is [`Id::ZERO`].
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a 64-digit hex id: {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_lexicographic() {
        let mut ids: Vec<Id> = (0..2000u32).map(|i| Id::of(&i.to_le_bytes())).collect();
        let mut a = ids.clone();
        a.push(Id([0; 32]));
        let mut b = Id([0; 32]);
        b.0[9] = 1; // differs after the first eight bytes only
        a.push(b);
        ids = a.clone();
        a.sort();
        ids.sort_by_key(|x| x.0);
        assert_eq!(a, ids);
    }
}
