//! The engine's counters: what [`Cache::stats`] reports and the metrics each outcome records.

use std::sync::atomic::{AtomicU64, Ordering};

use super::types::{Failed, Found};
use super::{Cache, Outcome};
use crate::error::Error;
use crate::metrics::outcome;

/// A snapshot of the engine's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Hits per tier (index 0 is hot).
    pub hits: Vec<u64>,
    /// Stale hits (served while refreshing), all tiers.
    pub stale_hits: u64,
    /// Lookups answered by a fill they led ([`Outcome::Miss`]).
    pub misses: u64,
    /// Lookups that followed another call's fill.
    pub coalesced: u64,
    /// Origin answers of not-modified.
    pub revalidated: u64,
    /// Stored entries served as they were because the origin failed (`stale-if-error`).
    pub stale_on_error: u64,
    /// Entries committed by fills, promotions and cold copies, all tiers.
    pub fills_committed: u64,
    /// Entries committed per tier (index 0 is hot).
    pub fills_by_tier: Vec<u64>,
    /// Fills stored nowhere because no tier keeps a body of their size (streamed unstored; a
    /// decision, not a store error).
    pub too_large: u64,
    /// Fills that failed or were abandoned (nothing stored).
    pub fills_failed: u64,
    /// Promotions started from lower tiers.
    pub promotions: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Store operations that failed (the request was served anyway).
    pub store_errors: u64,
    /// Background tasks dropped because the pool was full.
    pub dropped_tasks: u64,
}

pub(super) struct Stats {
    pub(super) hits: Box<[AtomicU64]>,
    pub(super) stale_hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) revalidated: AtomicU64,
    pub(super) stale_on_error: AtomicU64,
    pub(super) fills_committed: AtomicU64,
    pub(super) fills_by_tier: Box<[AtomicU64]>,
    pub(super) too_large: AtomicU64,
    pub(super) fills_failed: AtomicU64,
    pub(super) promotions: AtomicU64,
    pub(super) refreshes: AtomicU64,
    pub(super) store_errors: AtomicU64,
}

impl Stats {
    pub(super) fn new(tiers: usize) -> Self {
        Stats {
            hits: (0..tiers).map(|_| AtomicU64::new(0)).collect(),
            stale_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
            stale_on_error: AtomicU64::new(0),
            fills_committed: AtomicU64::new(0),
            fills_by_tier: (0..tiers).map(|_| AtomicU64::new(0)).collect(),
            too_large: AtomicU64::new(0),
            fills_failed: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
        }
    }
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Cache {
    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.sample_tiers();
        let s = &self.inner.stats;
        let ld = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: s.hits.iter().map(ld).collect(),
            stale_hits: ld(&s.stale_hits),
            misses: ld(&s.misses),
            coalesced: ld(&s.coalesced),
            revalidated: ld(&s.revalidated),
            stale_on_error: ld(&s.stale_on_error),
            fills_committed: ld(&s.fills_committed),
            fills_by_tier: s.fills_by_tier.iter().map(ld).collect(),
            too_large: ld(&s.too_large),
            fills_failed: ld(&s.fills_failed),
            promotions: ld(&s.promotions),
            refreshes: ld(&s.refreshes),
            store_errors: ld(&s.store_errors),
            dropped_tasks: self.inner.workers.stats().dropped,
        }
    }

    pub(super) fn record<P, E>(&self, res: &Result<Found<P>, Failed<E>>) {
        match res {
            Ok(Found::Entry(l)) => self.record_outcome(l.outcome),
            Ok(Found::Passed(_)) => self.record_outcome(Outcome::Pass),
            Err(Failed::Cache(Error::NotCached)) => {}
            Err(_) => self.inner.metrics.request(outcome::ERROR, None),
        }
    }

    pub(super) fn record_outcome(&self, found: Outcome) {
        let m = &self.inner.metrics;
        match found {
            Outcome::Hit { tier, stale } => m.request(
                if stale { outcome::STALE } else { outcome::HIT },
                Some(tier),
            ),
            Outcome::NotModified => m.request(outcome::HIT, Some(0)),
            Outcome::Miss => {
                bump(&self.inner.stats.misses);
                m.request(outcome::MISS, None)
            }
            Outcome::Coalesced => {
                bump(&self.inner.stats.coalesced);
                m.request(outcome::COALESCED, None)
            }
            Outcome::Revalidated { tier } => m.request(outcome::REVALIDATED, Some(tier)),
            Outcome::Pass => m.request(outcome::PASS, None),
            Outcome::StaleOnError { tier, .. } => {
                bump(&self.inner.stats.stale_on_error);
                m.request(outcome::STALE_ON_ERROR, Some(tier))
            }
        }
    }

    /// Counts a request the HTTP face did not look up (method, `no-store`).
    pub(crate) fn record_bypass(&self) {
        self.inner.metrics.request(outcome::BYPASS, None);
    }
}
