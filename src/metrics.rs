//! Metric names and recording, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`). Without the feature every call here compiles to nothing.
//!
//! Handles are registered once, when the cache is built, so the hit path does one atomic add
//! and no registry lookup: install your recorder (e.g. `metrics-exporter-prometheus`) **before**
//! building the cache. Every metric carries the label `cache` (the name given to
//! [`CacheBuilder::name`](crate::CacheBuilder::name), `"default"` otherwise).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `daramjwee_requests_total` | counter | `cache`, `outcome`, `tier` | lookups by outcome: `hit`, `stale` (served while refreshing), `miss` (led a fill), `coalesced` (followed one), `revalidated` (304 from the origin), `pass` (not storable), `bypass` (not looked up: method, `no-store`), `error`; `tier` is the tier that served it, or `origin` |
//! | `daramjwee_origin_fetches_total` | counter | `cache`, `result` | origin calls by fills and refreshes: `ok`, `not_modified`, `pass`, `error` |
//! | `daramjwee_origin_bytes_total` | counter | `cache` | body bytes received from the origin by fills |
//! | `daramjwee_fill_duration_seconds` | histogram | `cache` | time from the start of a fill to its end (body stored or failed) |
//! | `daramjwee_refresh_duration_seconds` | histogram | `cache` | the same, for background refreshes |
//! | `daramjwee_fills_total` | counter | `cache`, `tier` | entries committed to the tier by fills, promotions, copies and sets |
//! | `daramjwee_fills_too_large_total` | counter | `cache` | fills stored nowhere because no tier keeps a body of their size |
//! | `daramjwee_stored_bytes` | gauge | `cache`, `tier` | bytes held by the tier (entries and writes in progress) |
//! | `daramjwee_stored_entries` | gauge | `cache`, `tier` | entries held by the tier |
//! | `daramjwee_evictions_total` | counter | `cache`, `tier` | entries the tier evicted |
//! | `daramjwee_worker_queue_depth` | gauge | `cache` | background tasks waiting for a worker |
//! | `daramjwee_worker_dropped_total` | counter | `cache` | background tasks dropped because the queue was full |
//! | `daramjwee_store_errors_total` | counter | `cache`, `tier`, `op`, `kind` | store faults the cache failed open on |
//! | `daramjwee_purges_total` | counter | `cache` | entries deleted, purged, or invalidated by a successful unsafe request |
//!
//! Stored bytes, entries and evictions are sampled after every commit and delete, and whenever
//! [`Cache::stats`](crate::Cache::stats) is called.

#[cfg(feature = "metrics")]
mod on {
    use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    pub(crate) const OUTCOMES: [&str; 9] = [
        "hit",
        "stale",
        "miss",
        "coalesced",
        "revalidated",
        "pass",
        "bypass",
        "error",
        "stale_on_error",
    ];

    pub(crate) struct Metrics {
        name: String,
        /// `[tier][outcome]` for hits by tier; origin-side outcomes use the last row.
        requests: Vec<Vec<Counter>>,
        origin_ok: Counter,
        origin_not_modified: Counter,
        origin_pass: Counter,
        origin_error: Counter,
        origin_bytes: Counter,
        fill: Histogram,
        refresh: Histogram,
        fills: Vec<Counter>,
        too_large: Counter,
        stored_bytes: Vec<Gauge>,
        stored_entries: Vec<Gauge>,
        evictions: Vec<Counter>,
        queue: Gauge,
        dropped: Counter,
        purges: Counter,
    }

    impl Metrics {
        pub(crate) fn new(name: &str, tiers: &[&'static str]) -> Self {
            let n = name.to_owned();
            let mut rows: Vec<&'static str> = tiers.to_vec();
            rows.push("origin");
            let requests = rows
                .iter()
                .map(|tier| {
                    OUTCOMES
                        .iter()
                        .map(|o| {
                            counter!("daramjwee_requests_total", "cache" => n.clone(), "outcome" => *o, "tier" => *tier)
                        })
                        .collect()
                })
                .collect();
            let origin = |r: &'static str| counter!("daramjwee_origin_fetches_total", "cache" => n.clone(), "result" => r);
            Metrics {
                requests,
                origin_ok: origin("ok"),
                origin_not_modified: origin("not_modified"),
                origin_pass: origin("pass"),
                origin_error: origin("error"),
                origin_bytes: counter!("daramjwee_origin_bytes_total", "cache" => n.clone()),
                fill: histogram!("daramjwee_fill_duration_seconds", "cache" => n.clone()),
                refresh: histogram!("daramjwee_refresh_duration_seconds", "cache" => n.clone()),
                fills: tiers
                    .iter()
                    .map(|t| counter!("daramjwee_fills_total", "cache" => n.clone(), "tier" => *t))
                    .collect(),
                too_large: counter!("daramjwee_fills_too_large_total", "cache" => n.clone()),
                stored_bytes: tiers
                    .iter()
                    .map(|t| gauge!("daramjwee_stored_bytes", "cache" => n.clone(), "tier" => *t))
                    .collect(),
                stored_entries: tiers
                    .iter()
                    .map(|t| gauge!("daramjwee_stored_entries", "cache" => n.clone(), "tier" => *t))
                    .collect(),
                evictions: tiers
                    .iter()
                    .map(|t| counter!("daramjwee_evictions_total", "cache" => n.clone(), "tier" => *t))
                    .collect(),
                queue: gauge!("daramjwee_worker_queue_depth", "cache" => n.clone()),
                dropped: counter!("daramjwee_worker_dropped_total", "cache" => n.clone()),
                purges: counter!("daramjwee_purges_total", "cache" => n.clone()),
                name: n,
            }
        }

        /// `tier`: `Some(i)` when tier `i` served it, `None` for the origin.
        pub(crate) fn request(&self, outcome: usize, tier: Option<usize>) {
            let row = tier.unwrap_or(self.requests.len() - 1);
            if let Some(c) = self.requests.get(row).and_then(|r| r.get(outcome)) {
                c.increment(1);
            }
        }

        pub(crate) fn origin(&self, result: super::OriginResult) {
            use super::OriginResult::*;
            match result {
                Ok => &self.origin_ok,
                NotModified => &self.origin_not_modified,
                Pass => &self.origin_pass,
                Error => &self.origin_error,
            }
            .increment(1);
        }

        pub(crate) fn origin_bytes(&self, n: u64) {
            self.origin_bytes.increment(n);
        }

        pub(crate) fn fill_done(&self, secs: f64, refresh: bool) {
            if refresh {
                self.refresh.record(secs);
            } else {
                self.fill.record(secs);
            }
        }

        pub(crate) fn fill_committed(&self, tier: usize) {
            if let Some(c) = self.fills.get(tier) {
                c.increment(1);
            }
        }

        pub(crate) fn too_large(&self) {
            self.too_large.increment(1);
        }

        pub(crate) fn tier(
            &self,
            i: usize,
            bytes: Option<u64>,
            entries: Option<u64>,
            evictions: Option<u64>,
        ) {
            if let (Some(g), Some(b)) = (self.stored_bytes.get(i), bytes) {
                g.set(b as f64);
            }
            if let (Some(g), Some(e)) = (self.stored_entries.get(i), entries) {
                g.set(e as f64);
            }
            if let (Some(c), Some(e)) = (self.evictions.get(i), evictions) {
                c.absolute(e);
            }
        }

        pub(crate) fn worker(&self, queued: usize, dropped: bool) {
            self.queue.set(queued as f64);
            if dropped {
                self.dropped.increment(1);
            }
        }

        pub(crate) fn store_error(&self, tier: &'static str, op: &'static str, kind: &'static str) {
            counter!("daramjwee_store_errors_total", "cache" => self.name.clone(), "tier" => tier, "op" => op, "kind" => kind)
                .increment(1);
        }

        pub(crate) fn purged(&self, n: u64) {
            self.purges.increment(n);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    /// Without the `metrics` feature: nothing is recorded.
    pub(crate) struct Metrics;

    impl Metrics {
        pub(crate) fn new(_name: &str, _tiers: &[&'static str]) -> Self {
            Metrics
        }
        #[inline(always)]
        pub(crate) fn request(&self, _outcome: usize, _tier: Option<usize>) {}
        #[inline(always)]
        pub(crate) fn origin(&self, _result: super::OriginResult) {}
        #[inline(always)]
        pub(crate) fn origin_bytes(&self, _n: u64) {}
        #[inline(always)]
        pub(crate) fn fill_done(&self, _secs: f64, _refresh: bool) {}
        #[inline(always)]
        pub(crate) fn fill_committed(&self, _tier: usize) {}
        #[inline(always)]
        pub(crate) fn too_large(&self) {}
        #[inline(always)]
        pub(crate) fn tier(&self, _i: usize, _b: Option<u64>, _e: Option<u64>, _ev: Option<u64>) {}
        #[inline(always)]
        pub(crate) fn worker(&self, _queued: usize, _dropped: bool) {}
        #[inline(always)]
        pub(crate) fn store_error(&self, _t: &'static str, _op: &'static str, _k: &'static str) {}
        #[inline(always)]
        pub(crate) fn purged(&self, _n: u64) {}
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) use off::Metrics;
#[cfg(feature = "metrics")]
pub(crate) use on::Metrics;

/// Indexes into the `outcome` label values.
pub(crate) mod outcome {
    pub(crate) const HIT: usize = 0;
    pub(crate) const STALE: usize = 1;
    pub(crate) const MISS: usize = 2;
    pub(crate) const COALESCED: usize = 3;
    pub(crate) const REVALIDATED: usize = 4;
    pub(crate) const PASS: usize = 5;
    pub(crate) const BYPASS: usize = 6;
    pub(crate) const ERROR: usize = 7;
    pub(crate) const STALE_ON_ERROR: usize = 8;
}

/// What an origin call answered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OriginResult {
    Ok,
    NotModified,
    Pass,
    Error,
}
