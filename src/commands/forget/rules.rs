//! Which rule set judges a snapshot. `[retention]` may hold several (one
//! per tag, one per kind, and the top-level rules); exactly one judges each
//! snapshot, chosen in a fixed order so an operator can predict it:
//!
//! 1. the set of the first tag, in the order given, that the snapshot carries
//!    (`[retention.tag.NAME]`, tried in name order from a config file);
//! 2. else the set of its kind (`[retention.full]`, `[retention.partial]`,
//!    `[retention.base]`);
//! 3. else the fallback: the top-level `[retention]` rules, or the command
//!    line's `--keep-*` flags, which replace every set of the config;
//! 4. else none: the snapshot is kept ("no rule set covers it"), never
//!    deleted by omission. A replication base no set covers is decided by
//!    the WAL rules alone.

use crate::repo::manifest::SnapshotKind;
use crate::retention::Policy;

/// One named set of retention rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// Where the operator wrote it, as `forget --dry-run` names it:
    /// `retention`, `retention.partial`, `retention.tag.release`,
    /// `command line`.
    pub name: String,
    /// The rules. An empty policy keeps every snapshot it judges.
    pub policy: Policy,
}

/// Every rule set of one `forget`, and the order in which a snapshot's
/// set is chosen (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSets {
    /// By tag, tried in this order: the first tag the snapshot carries wins.
    pub tags: Vec<(String, RuleSet)>,
    /// By kind, for a snapshot none of whose tags has a set.
    pub kinds: Vec<(SnapshotKind, RuleSet)>,
    /// For a snapshot neither its tags nor its kind have a set for: the
    /// top-level `[retention]` rules, or the command line's.
    pub fallback: Option<RuleSet>,
}

impl RuleSets {
    /// One rule set judging every snapshot (the command line's `--keep-*`
    /// flags); none when `policy` has no rule.
    pub fn single(name: impl Into<String>, policy: Policy) -> RuleSets {
        RuleSets {
            fallback: (!policy.is_empty()).then(|| RuleSet {
                name: name.into(),
                policy,
            }),
            ..RuleSets::default()
        }
    }

    /// No set holds a rule: forget would remove no snapshot.
    pub fn is_empty(&self) -> bool {
        self.sets().all(|s| s.policy.is_empty())
    }

    /// Every set, in the order they are tried.
    pub fn sets(&self) -> impl Iterator<Item = &RuleSet> {
        self.tags
            .iter()
            .map(|(_, s)| s)
            .chain(self.kinds.iter().map(|(_, s)| s))
            .chain(self.fallback.as_ref())
    }

    /// The set that judges a snapshot of `kind` carrying `tags`, or `None`
    /// when none covers it (it is then kept).
    pub fn choose(&self, kind: SnapshotKind, tags: &[String]) -> Option<&RuleSet> {
        let by_tag = self.tags.iter().find(|(tag, _)| tags.contains(tag)).map(|(_, s)| s);
        by_tag
            .or_else(|| self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, s)| s))
            .or(self.fallback.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Count;

    fn set(name: &str, daily: u32) -> RuleSet {
        RuleSet {
            name: name.into(),
            policy: Policy {
                daily: Some(Count::N(daily)),
                ..Policy::default()
            },
        }
    }

    fn seed_004() -> RuleSets {
        RuleSets {
            tags: vec![
                ("keep".into(), set("retention.tag.keep", 100)),
                ("release".into(), set("retention.tag.release", 30)),
            ],
            kinds: vec![
                (SnapshotKind::Partial, set("retention.partial", 7)),
                (SnapshotKind::Full, set("retention.full", 28)),
            ],
            fallback: Some(set("retention", 1)),
        }
    }

    fn chosen(sets: &RuleSets, kind: SnapshotKind, tags: &[&str]) -> Option<String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        sets.choose(kind, &tags).map(|s| s.name.clone())
    }

    #[test]
    fn a_tag_set_comes_before_the_kind_set_which_comes_before_the_fallback() {
        let sets = seed_004();
        let name = |kind, tags: &[&str]| chosen(&sets, kind, tags);
        assert_eq!(name(SnapshotKind::Partial, &[]).as_deref(), Some("retention.partial"));
        assert_eq!(
            name(SnapshotKind::Full, &["nightly"]).as_deref(),
            Some("retention.full")
        );
        assert_eq!(
            name(SnapshotKind::Partial, &["nightly", "release"]).as_deref(),
            Some("retention.tag.release")
        );
        assert_eq!(name(SnapshotKind::Base, &[]).as_deref(), Some("retention"));
    }

    #[test]
    fn among_tag_sets_the_first_in_order_wins_whatever_the_snapshots_tag_order() {
        let sets = seed_004();
        for tags in [["release", "keep"], ["keep", "release"]] {
            assert_eq!(
                chosen(&sets, SnapshotKind::Full, &tags).as_deref(),
                Some("retention.tag.keep"),
                "{tags:?}"
            );
        }
    }

    #[test]
    fn without_a_fallback_a_snapshot_no_set_covers_has_none() {
        let mut sets = seed_004();
        sets.fallback = None;
        assert_eq!(chosen(&sets, SnapshotKind::Base, &[]), None);
        assert_eq!(chosen(&sets, SnapshotKind::Base, &["other"]), None);
        assert_eq!(
            chosen(&sets, SnapshotKind::Base, &["release"]).as_deref(),
            Some("retention.tag.release")
        );
        assert!(!sets.is_empty());
    }

    #[test]
    fn single_is_the_command_lines_one_set_and_an_empty_policy_is_no_set() {
        let one = RuleSets::single("command line", set("x", 7).policy);
        assert_eq!(
            chosen(&one, SnapshotKind::Partial, &["release"]).as_deref(),
            Some("command line")
        );
        let none = RuleSets::single("command line", Policy::default());
        assert!(none.is_empty());
        assert_eq!(chosen(&none, SnapshotKind::Full, &[]), None);
        // Zero counts are no rule (restic's reading).
        let zero = RuleSets::single("command line", set("x", 0).policy);
        assert!(zero.is_empty());
    }
}
