//! Which snapshots a command looks at: `list` shows them, `forget` judges
//! them and leaves every other snapshot untouched.

use super::manifest::{Manifest, SnapshotKind};

/// `--kind`, `--tag`, `--host` and `--source`: a snapshot passes when it
/// matches every filter given. An empty filter passes every snapshot.
///
/// ```
/// use lifeboat::repo::SnapshotFilter;
/// use lifeboat::SnapshotKind;
///
/// let partials = SnapshotFilter { kind: Some(SnapshotKind::Partial), ..SnapshotFilter::default() };
/// assert!(!partials.is_empty());
/// assert!(SnapshotFilter::default().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots of this kind.
    pub kind: Option<SnapshotKind>,
    /// Only snapshots with at least one of these tags (none: any).
    pub tags: Vec<String>,
    /// Only snapshots taken on this host.
    pub host: Option<String>,
    /// Only snapshots holding a source of this name.
    pub source: Option<String>,
}

impl SnapshotFilter {
    /// No filter given.
    pub fn is_empty(&self) -> bool {
        *self == SnapshotFilter::default()
    }

    /// Whether the snapshot of manifest `m` passes.
    pub fn matches(&self, m: &Manifest) -> bool {
        self.kind.is_none_or(|k| m.kind == k)
            && (self.tags.is_empty() || m.tags.iter().any(|t| self.tags.contains(t)))
            && self.host.as_ref().is_none_or(|h| &m.host == h)
            && self
                .source
                .as_ref()
                .is_none_or(|n| m.sources.iter().any(|x| x.name() == n))
    }
}
