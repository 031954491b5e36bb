//! Placement by size: which tiers a fill writes, given the body's declared length and each
//! tier's per-object limit ([`Store::object_size_limit`](crate::store::Store::object_size_limit)).
//!
//! A body goes to the highest tier that keeps a body of its size. When its length is declared
//! the choice is made at the start. When it is not (a chunked response), the fill writes the
//! hot tier and, from the start as well, the first lower tier that keeps larger bodies: if the
//! body outgrows the hot tier, the hot writer is dropped and the fill carries on in the lower
//! one without a second fetch and without holding the body in memory.
//!
//! Why both from the start rather than switching tiers when the hot one refuses: a switch must
//! replay the prefix already written, which means holding up to the hot tier's limit in memory
//! per fill or reading it back from the hot writer (a new store API every store must implement).
//! Writing both costs nothing extra in the default [`ColdFill::Background`] mode: the lower tier
//! receives every committed hot entry anyway (by the background copy, which then has nothing
//! left to do). Its cost is that such a fill runs at the pace of the slower of the two stores,
//! as a write-through fill does.

use std::ops::Range;

use super::stats::bump;
use super::{Cache, ColdFill};

/// The tiers a fill writes, and whether its size kept it out of every tier it targeted.
pub(super) struct Placement {
    pub(super) tiers: Vec<usize>,
    pub(super) too_large: bool,
}

impl Cache {
    /// Tier `i`'s per-object limit, if it has one.
    fn limit(&self, i: usize) -> Option<u64> {
        self.inner.tiers[i].store.object_size_limit()
    }

    /// Whether tier `i` keeps a body of `len` bytes (of unknown length: it may).
    pub(super) fn fits(&self, i: usize, len: Option<u64>) -> bool {
        !self.inner.tiers[i].store.is_null()
            && match (len, self.limit(i)) {
                (Some(len), Some(max)) => len <= max,
                _ => true,
            }
    }

    /// The tiers among `targets` a body of `len` bytes is written to as it streams: every one
    /// that keeps it for a promotion (`from_origin` false) or when writing through, else the
    /// highest that does (and, for a body of unknown length, the lower tier it may outgrow
    /// into). Only an origin body is counted as too large: a promotion's body is stored already.
    pub(super) fn place(
        &self,
        targets: Range<usize>,
        len: Option<u64>,
        from_origin: bool,
    ) -> Placement {
        let wanted = targets
            .clone()
            .any(|i| !self.inner.tiers[i].store.is_null());
        let mut fitting = targets.filter(|&i| self.fits(i, len));
        let every = !from_origin || self.inner.cfg.cold_fill == ColdFill::WriteThrough;
        let tiers: Vec<usize> = match fitting.next() {
            Some(first) if !every => {
                let spill = len.is_none().then(|| self.outgrown_into(first, fitting));
                std::iter::once(first).chain(spill.flatten()).collect()
            }
            first => first.into_iter().chain(fitting).collect(),
        };
        Placement {
            too_large: from_origin && wanted && tiers.is_empty(),
            tiers,
        }
    }

    /// The first of `lower` that keeps larger bodies than tier `first` does (none if `first`
    /// has no limit).
    fn outgrown_into(&self, first: usize, mut lower: impl Iterator<Item = usize>) -> Option<usize> {
        let limit = self.limit(first)?;
        lower.find(|&i| self.limit(i).is_none_or(|l| l > limit))
    }

    /// The tiers below `from` that a committed entry may be copied into in the background:
    /// those that store, less those the fill wrote already. Whether each keeps the entry's size
    /// is checked as the entry is read ([`fits`](Cache::fits)).
    pub(super) fn copy_targets(&self, from: usize, done: &[usize]) -> Vec<usize> {
        (from + 1..self.inner.tiers.len())
            .filter(|i| !done.contains(i) && !self.inner.tiers[*i].store.is_null())
            .collect()
    }

    /// Counts and logs a body no tier keeps because of its size (a decision, not a fault).
    pub(super) fn too_large(&self, len: Option<u64>) {
        bump(&self.inner.stats.too_large);
        self.inner.metrics.too_large();
        tracing::debug!(?len, "body too large for every tier; streamed unstored");
    }

    /// Counts an entry committed to tier `tier`.
    pub(super) fn committed(&self, tier: usize) {
        bump(&self.inner.stats.fills_committed);
        if let Some(c) = self.inner.stats.fills_by_tier.get(tier) {
            bump(c);
        }
        self.inner.metrics.fill_committed(tier);
    }
}
