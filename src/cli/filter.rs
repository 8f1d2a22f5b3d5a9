//! The snapshot filters `list` and `forget` share (`--kind`, `--tag`,
//! `--host`, `--source`), as one flattened set of flags.

use lifeboat::repo::SnapshotFilter;
use lifeboat::repo::manifest::SnapshotKind;

#[derive(clap::Args, Debug, Default)]
pub struct FilterArgs {
    /// Only snapshots of this kind (full, partial, base).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<SnapshotKind>,
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long, value_name = "T")]
    pub tag: Vec<String>,
    /// Only snapshots taken on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots holding the source of this name.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

impl FilterArgs {
    /// The library's filter.
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            kind: self.kind,
            tags: self.tag.clone(),
            host: self.host.clone(),
            source: self.source.clone(),
        }
    }
}
