//! The cache engine: tiers, the tier walk, fills, promotion, refresh and writes.
//!
//! The engine is HTTP-agnostic: it knows keys, [`Metadata`] and body streams, never HTTP
//! headers. A [`Fetcher`] stands for the origin. [`Cache::get`] walks the tiers from hot to cold:
//!
//! - **hot hit**: the stored stream, at once (a stale one is served while a refresh runs in the
//!   background);
//! - **lower-tier hit**: streamed to the caller while it is promoted into the tiers above;
//! - **miss**: one fill per key (see the `flight` module): the fetcher's stream goes to every
//!   caller that asked for the key while it fills the hot tier; lower tiers are filled from the
//!   committed hot entry in the background, or written through.
//!
//! Store faults never fail a request: a failing read is a miss, a failing write is dropped. They
//! are logged and counted in [`CacheStats`].
//!
//! ```
//! use daramjwee::{Cache, EntryBody, Fetched, Metadata};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::Error> {
//! let cache = Cache::builder().build();
//! let origin = |_prev| async {
//!     Ok(Fetched::Entry { meta: Metadata::new(http::StatusCode::OK), body: EntryBody::from_bytes("hi") })
//! };
//! let first = cache.get("greeting", origin).await?;
//! assert_eq!(first.body.collect().await?, "hi");
//! let second = cache.get("greeting", |_prev| async { unreachable!("served from the hot tier") }).await?;
//! assert!(second.outcome.is_hit());
//! # Ok(()) }
//! ```

mod builder;
mod fetcher;
pub(crate) mod flight;
pub(crate) mod keys;
mod write;

use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tracing::{debug, debug_span, field, trace_span, warn, Instrument};

pub use builder::{CacheBuilder, ColdFill, Freshness, Promotion};
pub use fetcher::{Fetched, Fetcher};
pub use write::CacheWriter;

use self::builder::Config;
use self::flight::{Flight, FlightLimits, Head, RetainBudget};
use self::keys::{Claim, KeyTable, Usage};
use crate::entry::{EntryBody, Metadata, StoredEntry};
use crate::error::{CloseError, Error, StoreError};
use crate::metrics::{outcome, Metrics, OriginResult};
use crate::store::{Store, StoreWriter};
use crate::worker::WorkerPool;

/// How a [`Lookup`] was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Served from tier `tier` (0 is hot). `stale`: a background refresh was scheduled.
    Hit {
        /// Index of the tier that served it.
        tier: usize,
        /// Whether the entry was stale (served while it is refreshed).
        stale: bool,
    },
    /// Fetched from the origin by this call (it led the fill).
    Miss,
    /// Streamed from a fill that another call started.
    Coalesced,
    /// A stored entry the origin confirmed with not-modified, served from tier `tier`.
    Revalidated {
        /// Index of the tier that served the body.
        tier: usize,
    },
    /// The origin's response must not be stored; handed through.
    Pass,
    /// The caller's validator matched the entry: no body.
    NotModified,
}

impl Outcome {
    /// Whether the response came from a tier without an origin round trip.
    pub fn is_hit(&self) -> bool {
        matches!(self, Outcome::Hit { .. } | Outcome::NotModified)
    }
}

/// The answer of [`Cache::get`]: metadata, a body stream, and how it was obtained.
#[derive(Debug)]
#[non_exhaustive]
pub struct Lookup {
    /// How the lookup was answered.
    pub outcome: Outcome,
    /// The entry's metadata.
    pub meta: Arc<Metadata>,
    /// The body (empty for [`Outcome::NotModified`]).
    pub body: EntryBody,
}

/// Per-call options of [`Cache::get_with`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GetOptions {
    /// The caller's entity tag: when the entry's matches, answer [`Outcome::NotModified`].
    pub if_none_match: Option<String>,
    /// Validate with the origin even if the entry is fresh.
    pub revalidate: bool,
    /// Never serve a stale entry; validate it with the origin first.
    pub no_stale: bool,
    /// Answer only from the tiers ([`Error::NotCached`] on a miss).
    pub only_cached: bool,
    /// The caller's own freshness decision for a stored entry; when set, it replaces the
    /// engine's (`revalidate`, `no_stale`, TTLs and stale windows are then not consulted).
    pub judge: Option<Judge>,
}

/// What to do with a stored entry, as decided by a [`Judge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Serve it as fresh.
    Fresh,
    /// Serve it stale; `refresh` schedules a background refresh.
    Stale {
        /// Whether to refresh it in the background.
        refresh: bool,
    },
    /// Validate it with the origin before serving (or [`Error::NotCached`] with
    /// `only_cached`).
    Validate,
    /// No opinion: decide as without a judge (TTLs, stale windows, the other options).
    Default,
}

/// A caller-supplied freshness decision over a stored entry's metadata at `now`, so that a
/// protocol layer (the HTTP face) can apply its own rules without the engine parsing them.
#[derive(Clone)]
pub struct Judge(Arc<JudgeFn>);

type JudgeFn = dyn Fn(&Metadata, SystemTime) -> Verdict + Send + Sync;

impl Judge {
    /// Wraps a decision function.
    pub fn new(f: impl Fn(&Metadata, SystemTime) -> Verdict + Send + Sync + 'static) -> Self {
        Judge(Arc::new(f))
    }
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Judge(..)")
    }
}

impl GetOptions {
    /// Answers not-modified when the entry's entity tag equals `etag`.
    pub fn if_none_match(mut self, etag: impl Into<String>) -> Self {
        self.if_none_match = Some(etag.into());
        self
    }
    /// Validates with the origin even if fresh.
    pub fn revalidate(mut self, yes: bool) -> Self {
        self.revalidate = yes;
        self
    }
    /// Never serves stale entries.
    pub fn no_stale(mut self, yes: bool) -> Self {
        self.no_stale = yes;
        self
    }
    /// Answers only from the tiers.
    pub fn only_cached(mut self, yes: bool) -> Self {
        self.only_cached = yes;
        self
    }
    /// Lets `judge` decide, for each stored entry, whether it is served, served stale or
    /// validated first.
    ///
    /// ```
    /// use daramjwee::{Cache, EntryBody, Fetched, GetOptions, Metadata, Verdict};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::Error> {
    /// let cache = Cache::builder().build();
    /// let v1 = |_prev| async {
    ///     Ok(Fetched::Entry { meta: Metadata::new(http::StatusCode::OK), body: EntryBody::from_bytes("v1") })
    /// };
    /// cache.get("k", v1).await?.body.collect().await?;
    /// // This caller accepts nothing stored: the entry is validated (here: replaced).
    /// let always_validate = GetOptions::default().judge(|_meta, _now| Verdict::Validate);
    /// let v2 = |_prev| async {
    ///     Ok(Fetched::Entry { meta: Metadata::new(http::StatusCode::OK), body: EntryBody::from_bytes("v2") })
    /// };
    /// let got = cache.get_with("k", always_validate, v2).await?;
    /// assert_eq!(got.body.collect().await?, "v2");
    /// # Ok(()) }
    /// ```
    pub fn judge(
        mut self,
        judge: impl Fn(&Metadata, SystemTime) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.judge = Some(Judge::new(judge));
        self
    }
}

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
    /// Entries committed by fills, promotions and cold copies.
    pub fills_committed: u64,
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

struct Tier {
    store: Arc<dyn Store>,
    freshness: Freshness,
}

impl Tier {
    fn ttl_for(&self, meta: &Metadata) -> Option<Duration> {
        if meta.is_negative() {
            self.freshness.negative.or(self.freshness.positive)
        } else {
            self.freshness.positive
        }
    }
}

struct Stats {
    hits: Box<[AtomicU64]>,
    stale_hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    revalidated: AtomicU64,
    fills_committed: AtomicU64,
    fills_failed: AtomicU64,
    promotions: AtomicU64,
    refreshes: AtomicU64,
    store_errors: AtomicU64,
}

impl Stats {
    fn new(tiers: usize) -> Self {
        Stats {
            hits: (0..tiers).map(|_| AtomicU64::new(0)).collect(),
            stale_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
            fills_committed: AtomicU64::new(0),
            fills_failed: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Remembers keys seen once in a lower tier (promotion probation).
struct Probation {
    seen: Mutex<HashSet<u64>>,
    cap: usize,
    hasher: RandomState,
}

impl Probation {
    fn new(cap: usize) -> Self {
        Probation {
            seen: Mutex::new(HashSet::new()),
            cap: cap.max(1),
            hasher: RandomState::new(),
        }
    }

    /// Whether this hit should promote (the key was seen before).
    fn admit(&self, key: &str) -> bool {
        let h = self.hasher.hash_one(key);
        let mut seen = self.seen.lock();
        if seen.remove(&h) {
            return true;
        }
        if seen.len() >= self.cap {
            // A coarse reset keeps the window bounded; at worst a key waits one more hit.
            seen.clear();
        }
        seen.insert(h);
        false
    }
}

struct Inner {
    name: String,
    metrics: Metrics,
    tiers: Box<[Tier]>,
    keys: Arc<KeyTable>,
    workers: WorkerPool,
    probation: Option<Probation>,
    closed: AtomicBool,
    /// What this cache's fills may retain for late followers, together.
    retain_budget: Arc<RetainBudget>,
    cfg: Config,
    stats: Stats,
}

/// The cache engine. Cheap to clone: clones share the tiers and the background pool.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field(
                "tiers",
                &self
                    .inner
                    .tiers
                    .iter()
                    .map(|t| t.store.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Where a fill's bytes come from.
enum Source<F> {
    Fetch(F, Option<Arc<Metadata>>),
    Tier(Arc<Metadata>, EntryBody),
}

impl Cache {
    /// Starts building a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// Number of tiers (including null ones).
    pub fn tiers(&self) -> usize {
        self.inner.tiers.len()
    }

    /// The name of tier `i` (`"memory"`, `"file"`, ...).
    pub fn tier_name(&self, i: usize) -> &'static str {
        self.inner.tiers.get(i).map_or("none", |t| t.store.name())
    }

    /// The store behind tier `i`.
    pub fn tier_store(&self, i: usize) -> Option<&Arc<dyn Store>> {
        self.inner.tiers.get(i).map(|t| &t.store)
    }

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
            fills_committed: ld(&s.fills_committed),
            fills_failed: ld(&s.fills_failed),
            promotions: ld(&s.promotions),
            refreshes: ld(&s.refreshes),
            store_errors: ld(&s.store_errors),
            dropped_tasks: self.inner.workers.stats().dropped,
        }
    }

    /// Looks `key` up, fetching it with `fetcher` on a miss. See [`Cache::get_with`].
    pub fn get<'a, F: Fetcher>(
        &'a self,
        key: &'a str,
        fetcher: F,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        self.get_with(key, GetOptions::default(), fetcher)
    }

    /// Looks `key` up with per-call options.
    ///
    /// Errors: [`Error::Fetch`] when the origin failed and nothing usable was stored,
    /// [`Error::NotCached`] with `only_cached` on a miss, [`Error::Closed`] after
    /// [`close`](Cache::close). Body streams end with an error item (never a clean end) if the
    /// body turns out incomplete.
    ///
    /// The returned future is `Send` whatever the fetcher, so it can be spawned.
    #[allow(clippy::manual_async_fn)]
    pub fn get_with<'a, F: Fetcher>(
        &'a self,
        key: &'a str,
        opts: GetOptions,
        fetcher: F,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        // Declaring `Send` here (instead of leaking it from an `async fn`) lets callers spawn
        // the future without tripping rustc's higher-ranked auto-trait inference on closures.
        self.get_found(key, opts, fetcher, None)
    }

    /// [`get_with`](Cache::get_with), starting from an entry already read from the first tier
    /// by [`lookup_now`](Cache::lookup_now), so it is neither read nor counted as a hit twice.
    pub(crate) fn get_found<'a, F: Fetcher>(
        &'a self,
        key: &'a str,
        opts: GetOptions,
        fetcher: F,
        found: Option<StoredEntry>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        let span = trace_span!("daramjwee.lookup", key = %key_hash(key), outcome = field::Empty, tier = field::Empty);
        async move {
            let res = self.get_inner(key, opts, fetcher, found).await;
            self.record(&res);
            if let Ok(l) = &res {
                let span = tracing::Span::current();
                span.record("outcome", field::debug(&l.outcome));
                if let Outcome::Hit { tier, .. } | Outcome::Revalidated { tier } = l.outcome {
                    span.record("tier", self.tier_name(tier));
                }
            }
            res
        }
        .instrument(span)
    }

    fn record(&self, res: &Result<Lookup, Error>) {
        match res {
            Ok(l) => self.record_outcome(l.outcome),
            Err(Error::NotCached) => {}
            Err(_) => self.inner.metrics.request(outcome::ERROR, None),
        }
    }

    fn record_outcome(&self, found: Outcome) {
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
        }
    }

    /// Counts a request the HTTP face did not look up (method, `no-store`).
    pub(crate) fn record_bypass(&self) {
        self.inner.metrics.request(outcome::BYPASS, None);
    }

    /// The name given to [`CacheBuilder::name`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Answers a fresh hit from the first tier without waiting, when its store can answer
    /// synchronously ([`Store::try_get_now`]) and `judge` (or, on [`Verdict::Default`], the
    /// tier's TTL) calls the entry fresh. The hit is counted as [`get_with`](Cache::get_with)
    /// counts it.
    ///
    /// `Err(Some(entry))`: the entry was found but is not fresh; hand it to
    /// [`get_found`](Cache::get_found). `Err(None)`: nothing could be answered at once.
    ///
    /// This is the HTTP face's hit path: it lets a hit skip building the origin fetcher.
    pub(crate) fn lookup_now(
        &self,
        key: &str,
        judge: impl FnOnce(&Metadata, SystemTime) -> Verdict,
    ) -> Result<Lookup, Option<StoredEntry>> {
        let inner = &self.inner;
        let tier = &inner.tiers[0];
        if inner.closed.load(Ordering::Acquire) || tier.store.is_null() {
            return Err(None);
        }
        let entry = match tier.store.try_get_now(key) {
            Some(Ok(Some(entry))) => entry,
            // Misses, faults and stores that need to wait take the full path (which also
            // counts the fault).
            _ => return Err(None),
        };
        let now = SystemTime::now();
        let verdict = judge(&entry.meta, now);
        if !self.fresh_for(0, &entry.meta, Some(verdict), false, now) {
            return Err(Some(entry));
        }
        let lookup = self.serve_hit(0, key, entry, false, &GetOptions::default());
        self.record_outcome(lookup.outcome);
        Ok(lookup)
    }

    async fn get_inner<F: Fetcher>(
        &self,
        key: &str,
        opts: GetOptions,
        fetcher: F,
        mut found: Option<StoredEntry>,
    ) -> Result<Lookup, Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let now = SystemTime::now();
        let mut previous = None;
        for (i, tier) in inner.tiers.iter().enumerate() {
            let found = if i == 0 { found.take() } else { None };
            let entry = match found {
                Some(entry) => entry,
                None => match self.read_tier(i, key).await {
                    Some(entry) => entry,
                    None => continue,
                },
            };
            if let Some(judge) = &opts.judge {
                match (judge.0)(&entry.meta, now) {
                    Verdict::Fresh => return Ok(self.serve_hit(i, key, entry, false, &opts)),
                    Verdict::Stale { refresh } => {
                        if refresh {
                            self.spawn_refresh(key, fetcher, Some(entry.meta.clone()));
                        }
                        return Ok(self.serve_hit(i, key, entry, true, &opts));
                    }
                    Verdict::Validate => {
                        previous = Some(entry.meta);
                        break;
                    }
                    Verdict::Default => {}
                }
            }
            let ttl = tier.ttl_for(&entry.meta);
            if !opts.revalidate && entry.meta.is_fresh(now, ttl) {
                return Ok(self.serve_hit(i, key, entry, false, &opts));
            }
            let stale_window = entry.meta.stale_for.or(inner.cfg.serve_stale_for);
            let servable = !opts.revalidate
                && !opts.no_stale
                && match (stale_window, entry.meta.expires_at(ttl)) {
                    (None, _) => true,
                    (Some(w), Some(exp)) => now < exp + w,
                    (Some(_), None) => true,
                };
            if servable || opts.only_cached && !opts.revalidate {
                if servable {
                    self.spawn_refresh(key, fetcher, Some(entry.meta.clone()));
                }
                return Ok(self.serve_hit(i, key, entry, true, &opts));
            }
            previous = Some(entry.meta);
            break;
        }
        if opts.only_cached {
            return Err(Error::NotCached);
        }
        self.fill(key, previous, fetcher, &opts).await
    }

    /// Whether `meta`, stored in tier `tier`, may be served as fresh (without a background
    /// refresh), given a judge's `verdict` on it, if there is a judge.
    fn fresh_for(
        &self,
        tier: usize,
        meta: &Metadata,
        verdict: Option<Verdict>,
        revalidate: bool,
        now: SystemTime,
    ) -> bool {
        match verdict {
            Some(Verdict::Fresh) => true,
            Some(Verdict::Stale { .. } | Verdict::Validate) => false,
            Some(Verdict::Default) | None => {
                !revalidate && meta.is_fresh(now, self.inner.tiers[tier].ttl_for(meta))
            }
        }
    }

    /// Reads one tier, failing open: errors and timeouts are logged, counted and reported as a
    /// miss.
    async fn read_tier(&self, i: usize, key: &str) -> Option<StoredEntry> {
        let store = &self.inner.tiers[i].store;
        if store.is_null() {
            return None;
        }
        let res = match store.try_get_now(key) {
            Some(res) => res,
            None => match tokio::time::timeout(self.inner.cfg.op_timeout, store.get(key)).await {
                Ok(res) => res,
                Err(_) => Err(StoreError::Timeout {
                    key: key.to_owned(),
                    after: self.inner.cfg.op_timeout,
                }),
            },
        };
        match res {
            Ok(found) => found,
            Err(e) => {
                self.store_fault(store.name(), "get", &e);
                None
            }
        }
    }

    /// Runs one store operation under the op timeout; a failure or timeout is logged, counted
    /// and turned into `None` (the cache fails open).
    async fn store_op<T>(
        &self,
        tier: &'static str,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let after = self.inner.cfg.op_timeout;
        let res = tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(StoreError::Timeout {
                key: key.to_owned(),
                after,
            })
        });
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                self.store_fault(tier, op, &e);
                None
            }
        }
    }

    fn store_fault(&self, tier: &'static str, op: &'static str, e: &StoreError) {
        bump(&self.inner.stats.store_errors);
        self.inner.metrics.store_error(tier, op, e.kind());
        warn!(tier, op, kind = e.kind(), error = %e, "cache store fault; failing open");
    }

    fn serve_hit(
        &self,
        tier: usize,
        key: &str,
        entry: StoredEntry,
        stale: bool,
        opts: &GetOptions,
    ) -> Lookup {
        let inner = &self.inner;
        bump(&inner.stats.hits[tier]);
        if stale {
            bump(&inner.stats.stale_hits);
        }
        if let (Some(theirs), Some(ours)) = (&opts.if_none_match, &entry.meta.etag) {
            if theirs == ours {
                return Lookup {
                    outcome: Outcome::NotModified,
                    meta: entry.meta,
                    body: EntryBody::empty(),
                };
            }
        }
        let outcome = Outcome::Hit { tier, stale };
        if tier == 0 || !self.should_promote(key) {
            return Lookup {
                outcome,
                meta: entry.meta,
                body: entry.body,
            };
        }
        match self.claim(key, false) {
            Claim::Lead(flight, usage) => {
                bump(&inner.stats.promotions);
                let reader = flight.join();
                let meta = entry.meta.clone();
                let this = self.clone();
                let key = key.to_owned();
                let span =
                    debug_span!("daramjwee.promotion", key = %key_hash(&key), from_tier = tier);
                tokio::spawn(
                    async move {
                        this.run_fill::<NoFetch>(
                            &key,
                            flight,
                            usage,
                            Source::Tier(entry.meta, entry.body),
                            0..tier,
                            None,
                        )
                        .await;
                    }
                    .instrument(span),
                );
                match reader {
                    Some(r) => Lookup {
                        outcome,
                        meta,
                        body: r.into_body(),
                    },
                    // Unreachable in practice: a new flight always accepts its first reader.
                    None => Lookup {
                        outcome,
                        meta,
                        body: EntryBody::empty(),
                    },
                }
            }
            // Someone else is already filling the key: serve our own stream of this tier
            // rather than promoting twice.
            Claim::Follow(_) => Lookup {
                outcome,
                meta: entry.meta,
                body: entry.body,
            },
        }
    }

    fn should_promote(&self, key: &str) -> bool {
        match &self.inner.probation {
            Some(p) => p.admit(key),
            None => true,
        }
    }

    fn claim(&self, key: &str, detached: bool) -> Claim {
        let limits = FlightLimits {
            window: self.inner.cfg.window,
            retain: self.inner.cfg.retain,
            budget: self.inner.retain_budget.clone(),
        };
        self.inner.keys.claim(key, self.inner.cfg.lock_age, || {
            Flight::new(limits, detached)
        })
    }

    /// A miss (or a stale entry that must be validated): lead or follow the key's fill.
    async fn fill<F: Fetcher>(
        &self,
        key: &str,
        previous: Option<Arc<Metadata>>,
        fetcher: F,
        opts: &GetOptions,
    ) -> Result<Lookup, Error> {
        match self.claim(key, false) {
            Claim::Lead(flight, usage) => {
                if previous.is_none() {
                    // Checked again under the claim: another fill may have committed and let
                    // go of the key between our tier reads and the claim. Fills now finish at
                    // the origin's pace, so under load that gap is reachable; without this
                    // check it costs a second origin call.
                    if let Some(entry) = self.read_tier(0, key).await {
                        let now = SystemTime::now();
                        let verdict = opts.judge.as_ref().map(|j| (j.0)(&entry.meta, now));
                        if self.fresh_for(0, &entry.meta, verdict, opts.revalidate, now) {
                            // Anyone who joined meanwhile reads the entry from the store.
                            flight.set_head(Head::Stored);
                            flight.finish(Ok(()));
                            usage.retire(&flight);
                            drop(usage);
                            return Ok(self.serve_hit(0, key, entry, false, opts));
                        }
                    }
                }
                let reader = flight.join();
                let (pass_tx, pass_rx) = tokio::sync::oneshot::channel();
                let this = self.clone();
                let owned_key = key.to_owned();
                let f2 = flight.clone();
                let span = if previous.is_some() {
                    debug_span!("daramjwee.revalidation", key = %key_hash(key))
                } else {
                    debug_span!("daramjwee.fill", key = %key_hash(key))
                };
                tokio::spawn(
                    async move {
                        this.run_fill(
                            &owned_key,
                            f2,
                            usage,
                            Source::Fetch(fetcher, previous),
                            0..this.inner.tiers.len(),
                            Some(pass_tx),
                        )
                        .await;
                    }
                    .instrument(span),
                );
                let Some(reader) = reader else {
                    return Err(Error::FillAbandoned("fill could not be joined".into()));
                };
                match flight.head().await {
                    Head::Body(meta) => Ok(Lookup {
                        outcome: Outcome::Miss,
                        meta,
                        body: reader.into_body(),
                    }),
                    Head::NotModified => {
                        drop(reader);
                        self.after_not_modified(key).await
                    }
                    Head::Pass => {
                        drop(reader);
                        match pass_rx.await {
                            Ok((meta, body)) => Ok(Lookup {
                                outcome: Outcome::Pass,
                                meta: Arc::new(meta),
                                body,
                            }),
                            Err(_) => Err(Error::FillAbandoned("pass-through lost".into())),
                        }
                    }
                    Head::Failed(e) => Err(Error::Fetch(e.into())),
                    Head::Pending | Head::Stored => {
                        Err(Error::FillAbandoned("fill ended without a head".into()))
                    }
                }
            }
            Claim::Follow(flight) => self.follow(key, flight, fetcher).await,
        }
    }

    async fn follow<F: Fetcher>(
        &self,
        key: &str,
        flight: Arc<Flight>,
        fetcher: F,
    ) -> Result<Lookup, Error> {
        let wait = self.inner.cfg.lock_wait;
        let Some(reader) = flight.join() else {
            // The fill's start is gone: wait until it is stored, then read it from the tiers.
            return self.after_stored(key, &flight, fetcher).await;
        };
        match tokio::time::timeout(wait, flight.head()).await {
            Ok(Head::Body(meta)) => Ok(Lookup {
                outcome: Outcome::Coalesced,
                meta,
                body: reader.into_body(),
            }),
            Ok(Head::NotModified) => {
                drop(reader);
                flight.wait_finished().await.ok();
                self.after_not_modified(key).await
            }
            Ok(Head::Failed(e)) => Err(Error::Fetch(e.into())),
            Ok(Head::Stored) => {
                drop(reader);
                self.after_stored(key, &flight, fetcher).await
            }
            // Not shareable, or the leader is too slow: fetch on our own, store nothing.
            Ok(Head::Pass) | Ok(Head::Pending) | Err(_) => {
                drop(reader);
                self.fetch_alone(fetcher).await
            }
        }
    }

    /// Waits (at most `lock_wait`) for the flight to end, then reads what it stored; fetches
    /// alone if nothing is there.
    async fn after_stored<F: Fetcher>(
        &self,
        key: &str,
        flight: &Flight,
        fetcher: F,
    ) -> Result<Lookup, Error> {
        let wait = self.inner.cfg.lock_wait;
        if tokio::time::timeout(wait, flight.wait_finished())
            .await
            .is_ok()
        {
            for i in 0..self.inner.tiers.len() {
                if let Some(entry) = self.read_tier(i, key).await {
                    return Ok(Lookup {
                        outcome: Outcome::Coalesced,
                        meta: entry.meta,
                        body: entry.body,
                    });
                }
            }
        }
        self.fetch_alone(fetcher).await
    }

    /// Fetches without coalescing or storing (the fallback of followers).
    async fn fetch_alone<F: Fetcher>(&self, fetcher: F) -> Result<Lookup, Error> {
        match fetcher.fetch(None).await.map_err(Error::Fetch)? {
            Fetched::Entry { meta, body } | Fetched::Pass { meta, body } => Ok(Lookup {
                outcome: Outcome::Pass,
                meta: Arc::new(meta),
                body,
            }),
            Fetched::NotModified { .. } => Err(Error::Fetch(
                "origin answered not-modified to an unconditional fetch".into(),
            )),
        }
    }

    /// Reads the entry a not-modified answer just confirmed.
    async fn after_not_modified(&self, key: &str) -> Result<Lookup, Error> {
        for i in 0..self.inner.tiers.len() {
            if let Some(entry) = self.read_tier(i, key).await {
                return Ok(Lookup {
                    outcome: Outcome::Revalidated { tier: i },
                    meta: entry.meta,
                    body: entry.body,
                });
            }
        }
        Err(Error::FillAbandoned(
            "entry vanished after revalidation".into(),
        ))
    }

    /// Schedules a background refresh of `key` on the worker pool. Returns false when the pool
    /// is full (the refresh is dropped and counted) or the cache is closed. At most one refresh
    /// (or fill) per key runs at a time.
    pub fn schedule_refresh<F: Fetcher>(&self, key: &str, fetcher: F) -> bool {
        self.spawn_refresh(key, fetcher, None)
    }

    fn spawn_refresh<F: Fetcher>(
        &self,
        key: &str,
        fetcher: F,
        previous: Option<Arc<Metadata>>,
    ) -> bool {
        if self.inner.closed.load(Ordering::Acquire) || self.inner.keys.flight(key).is_some() {
            return false;
        }
        let this = self.clone();
        let key = key.to_owned();
        let span = debug_span!("daramjwee.revalidation", key = %key_hash(&key), background = true);
        let ok = self.spawn_background(
            async move {
                let Claim::Lead(flight, usage) = this.claim(&key, true) else {
                    return; // a fill is already running: it is the refresh
                };
                bump(&this.inner.stats.refreshes);
                let previous = match previous {
                    Some(p) => Some(p),
                    None => this.head_any(&key).await,
                };
                let tiers = 0..this.inner.tiers.len();
                this.run_fill(
                    &key,
                    flight,
                    usage,
                    Source::Fetch(fetcher, previous),
                    tiers,
                    None,
                )
                .await;
            }
            .instrument(span),
        );
        if !ok {
            debug!("refresh dropped: worker pool full or closed");
        }
        ok
    }

    async fn head_any(&self, key: &str) -> Option<Arc<Metadata>> {
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            let name = tier.store.name();
            if let Some(Some(m)) = self.store_op(name, "head", key, tier.store.head(key)).await {
                return Some(Arc::new(m));
            }
        }
        None
    }

    /// Runs one fill to its end: fetch (or read a lower tier), stream into the flight and the
    /// target tiers, verify, commit. Every exit path finishes the flight.
    async fn run_fill<F: Fetcher>(
        &self,
        key: &str,
        flight: Arc<Flight>,
        usage: Usage,
        source: Source<F>,
        targets: std::ops::Range<usize>,
        pass_to: Option<tokio::sync::oneshot::Sender<(Metadata, EntryBody)>>,
    ) {
        let guard = FinishGuard {
            flight: &flight,
            usage: &usage,
        };
        let cfg = &self.inner.cfg;
        let from_origin = matches!(source, Source::Fetch(..));
        // Only lookups hand a pass-through back; background refreshes have no caller.
        let is_refresh = pass_to.is_none();
        let (meta, body, tiers) = match source {
            Source::Tier(meta, body) => (meta, body, targets),
            Source::Fetch(fetcher, previous) => {
                let fetch = fetcher.fetch(previous.clone());
                let fetched = match tokio::time::timeout(cfg.idle_timeout, fetch).await {
                    Ok(Ok(f)) => f,
                    Ok(Err(e)) => {
                        self.inner.metrics.origin(OriginResult::Error);
                        return self.fail(&flight, format!("origin fetch failed: {e}"));
                    }
                    Err(_) => {
                        self.inner.metrics.origin(OriginResult::Error);
                        return self.fail(&flight, "origin fetch timed out".into());
                    }
                };
                self.inner.metrics.origin(match &fetched {
                    Fetched::Entry { .. } => OriginResult::Ok,
                    Fetched::NotModified { .. } => OriginResult::NotModified,
                    Fetched::Pass { .. } => OriginResult::Pass,
                });
                match fetched {
                    Fetched::Entry { meta, body } => {
                        let tiers = match cfg.cold_fill {
                            ColdFill::WriteThrough => targets,
                            ColdFill::Background => targets.start..targets.end.min(1),
                        };
                        (Arc::new(meta), body, tiers)
                    }
                    Fetched::Pass { meta, body } => {
                        if let Some(tx) = pass_to {
                            let _ = tx.send((meta, body));
                        }
                        flight.set_head(Head::Pass);
                        flight.finish(Ok(()));
                        return;
                    }
                    Fetched::NotModified { meta } => {
                        let Some(prev) = previous else {
                            return self.fail(
                                &flight,
                                "origin answered not-modified with nothing stored".into(),
                            );
                        };
                        bump(&self.inner.stats.revalidated);
                        let updated = refreshed_meta(&prev, meta);
                        self.update_all(key, &usage, &updated).await;
                        flight.set_head(Head::NotModified);
                        flight.finish(Ok(()));
                        return;
                    }
                }
            }
        };
        flight.set_head(Head::Body(meta.clone()));
        let started = std::time::Instant::now();
        let committed = self
            .stream_fill(&flight, &usage, &meta, body, tiers, from_origin)
            .await;
        if from_origin {
            let secs = started.elapsed().as_secs_f64();
            self.inner.metrics.fill_done(secs, is_refresh);
        }
        self.sample_tiers();
        match committed {
            Ok(hot_committed) => {
                flight.finish(Ok(()));
                drop(guard);
                // Only origin bytes go down: a promotion came from a lower tier, which holds
                // the entry already.
                if from_origin && hot_committed && cfg.cold_fill == ColdFill::Background {
                    self.spawn_cold_copy(key, usage.ticket);
                }
            }
            Err(e) => {
                debug!(error = %e, "fill failed; nothing stored");
                self.fail(&flight, e);
            }
        }
    }

    fn fail(&self, flight: &Flight, why: String) {
        bump(&self.inner.stats.fills_failed);
        flight.finish(Err(why));
    }

    /// Streams `body` into the flight and the writers of `tiers`, then commits them. Returns
    /// whether tier 0 committed, or why the fill failed.
    async fn stream_fill(
        &self,
        flight: &Flight,
        usage: &Usage,
        meta: &Arc<Metadata>,
        mut body: EntryBody,
        tiers: std::ops::Range<usize>,
        from_origin: bool,
    ) -> Result<bool, String> {
        let key = usage.key();
        let cfg = &self.inner.cfg;
        if flight.orphaned() {
            return Err("every reader left before the body".into());
        }
        let mut writers: Vec<(usize, Box<dyn StoreWriter>)> = Vec::new();
        for i in tiers {
            let store = &self.inner.tiers[i].store;
            if store.is_null() {
                continue;
            }
            let put = store.put(key, (**meta).clone());
            if let Some(w) = self.store_op(store.name(), "put", key, put).await {
                writers.push((i, w));
            }
        }
        let declared = meta.content_length;
        let mut received: u64 = 0;
        // A chunk already handed to the readers, still to be written to the tiers. It is written
        // while the next one is read, so a fill runs at the slower of the source and the
        // stores, not at their sum.
        let mut unwritten: Option<Bytes> = None;
        loop {
            // A reader that has every declared byte may leave before the origin's end of
            // stream (hyper drops a body once Content-Length is sent): the body is complete,
            // so the fill goes on to its end and commits.
            if !flight.wait_room().await && declared != Some(received) {
                return Err("every reader left; fill abandoned".into());
            }
            let read = tokio::time::timeout(cfg.idle_timeout, body.next());
            let next = match unwritten.take() {
                // Tier failures only drop that tier's copy.
                Some(prev) => tokio::join!(self.write_all(key, &mut writers, &prev, false), read).1,
                None => read.await,
            };
            let chunk = match next {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => return Err(format!("body failed after {received} bytes: {e}")),
                Ok(None) => break,
                Err(_) => return Err(format!("body stalled after {received} bytes")),
            };
            received += chunk.len() as u64;
            if from_origin {
                self.inner.metrics.origin_bytes(chunk.len() as u64);
            }
            if declared.is_some_and(|d| received > d) {
                return Err(format!(
                    "body longer than its declared {} bytes",
                    declared.unwrap_or(0)
                ));
            }
            flight.push(chunk.clone());
            unwritten = Some(chunk);
        }
        if let Some(last) = unwritten {
            let _ = self.write_all(key, &mut writers, &last, false).await;
        }
        if let Some(d) = declared {
            if received != d {
                return Err(format!("body truncated: {received} of {d} bytes"));
            }
        }
        // The body is whole: readers finish now rather than after the commit below.
        flight.complete_body();
        if writers.is_empty() {
            return Ok(false);
        }
        let Some(_lock) = usage.lock_if_current().await else {
            debug!("fill superseded by a newer set or delete; discarded");
            return Ok(false);
        };
        let mut hot = false;
        for (i, w) in writers {
            let store = &self.inner.tiers[i].store;
            if self
                .store_op(store.name(), "commit", key, w.commit())
                .await
                .is_some()
            {
                bump(&self.inner.stats.fills_committed);
                hot |= i == 0;
            }
        }
        Ok(hot)
    }

    /// Writes a chunk to every writer. A failing writer is dropped (its entry discarded) and
    /// the write goes on for the others; with `hot_required`, a failure of tier 0 is returned
    /// instead (a `set` cannot succeed without the hot tier).
    pub(crate) async fn write_all(
        &self,
        key: &str,
        writers: &mut Vec<(usize, Box<dyn StoreWriter>)>,
        chunk: &Bytes,
        hot_required: bool,
    ) -> Result<(), StoreError> {
        let op = self.inner.cfg.op_timeout;
        let mut i = 0;
        while i < writers.len() {
            let (tier, w) = &mut writers[i];
            let res = tokio::time::timeout(op, w.write(chunk.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Timeout {
                        key: key.to_owned(),
                        after: op,
                    })
                });
            match res {
                Ok(()) => i += 1,
                Err(e) if hot_required && *tier == 0 => return Err(e),
                Err(e) => {
                    let name = self.inner.tiers[*tier].store.name();
                    if matches!(e, StoreError::TooLarge { .. }) {
                        debug!(tier = name, "entry too large for tier; not stored there");
                    } else {
                        self.store_fault(name, "write", &e);
                    }
                    writers.swap_remove(i);
                }
            }
        }
        Ok(())
    }

    /// Replaces the metadata in every tier that holds the entry (a not-modified refresh).
    async fn update_all(&self, key: &str, usage: &Usage, meta: &Metadata) {
        let Some(_lock) = usage.lock_if_current().await else {
            return;
        };
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            let update = tier.store.update_metadata(key, meta.clone());
            self.store_op(tier.store.name(), "update_metadata", key, update)
                .await;
        }
    }

    /// Queues background work on the pool; a full queue drops it (counted).
    fn spawn_background(&self, fut: impl Future<Output = ()> + Send + 'static) -> bool {
        let ok = self.inner.workers.try_spawn(fut);
        self.inner
            .metrics
            .worker(self.inner.workers.stats().queued, !ok);
        ok
    }

    /// Copies the committed hot entry into the lower tiers on the worker pool.
    fn spawn_cold_copy(&self, key: &str, ticket: u64) {
        if self.inner.tiers.iter().skip(1).all(|t| t.store.is_null()) {
            return;
        }
        let this = self.clone();
        let key = key.to_owned();
        self.spawn_background(async move {
            let usage = this.inner.keys.writer_with_ticket(&key, ticket);
            for i in 1..this.inner.tiers.len() {
                let Some(entry) = this.read_tier(0, &key).await else {
                    return;
                };
                let store = &this.inner.tiers[i].store;
                if store.is_null() {
                    continue;
                }
                if let Err(e) = this.copy_into(&key, &usage, store, entry).await {
                    this.store_fault(store.name(), "cold_copy", &e);
                }
            }
        });
    }

    async fn copy_into(
        &self,
        key: &str,
        usage: &Usage,
        store: &Arc<dyn Store>,
        entry: StoredEntry,
    ) -> Result<(), StoreError> {
        let op = self.inner.cfg.op_timeout;
        let timeout = |_| StoreError::Timeout {
            key: key.to_owned(),
            after: op,
        };
        let mut w = tokio::time::timeout(op, store.put(key, (*entry.meta).clone()))
            .await
            .map_err(timeout)??;
        let mut body = entry.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            })?;
            tokio::time::timeout(op, w.write(chunk))
                .await
                .map_err(timeout)??;
        }
        if let Some(_lock) = usage.lock_if_current().await {
            tokio::time::timeout(op, w.commit())
                .await
                .map_err(timeout)??;
            bump(&self.inner.stats.fills_committed);
        }
        Ok(())
    }

    /// Starts a streaming write of `key`, replacing any stored entry when committed. A fill,
    /// refresh or cold copy that started before this call will not overwrite it.
    pub async fn set(&self, key: &str, meta: Metadata) -> Result<CacheWriter, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let usage = self.inner.keys.writer(key, true);
        let last = match self.inner.cfg.cold_fill {
            ColdFill::WriteThrough => self.inner.tiers.len(),
            ColdFill::Background => 1,
        };
        let mut writers = Vec::new();
        for i in 0..last {
            let store = &self.inner.tiers[i].store;
            if store.is_null() {
                continue;
            }
            let w = tokio::time::timeout(self.inner.cfg.op_timeout, store.put(key, meta.clone()))
                .await
                .map_err(|_| Error::Timeout {
                    what: "store put",
                    after: self.inner.cfg.op_timeout,
                })??;
            writers.push((i, w));
        }
        Ok(CacheWriter::new(
            self.clone(),
            key.to_owned(),
            usage,
            meta.content_length,
            writers,
        ))
    }

    /// Removes `key` from every tier. A fill in progress for it will not store its result.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let res = self.remove(key).await;
        self.inner.metrics.purged(1);
        self.sample_tiers();
        res
    }

    /// Removes `key` from every tier under its commit lock, raising its generation floor.
    /// Records nothing: callers count what they purged.
    async fn remove(&self, key: &str) -> Result<(), Error> {
        let usage = self.inner.keys.writer(key, true);
        let _lock = usage.lock().await;
        let mut first_err = None;
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            let res = tokio::time::timeout(self.inner.cfg.op_timeout, tier.store.delete(key)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.store_fault(tier.store.name(), "delete", &e);
                    first_err.get_or_insert(Error::Store(e));
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Timeout {
                        what: "store delete",
                        after: self.inner.cfg.op_timeout,
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes every entry whose key starts with `prefix` from every tier; returns how many
    /// entries were removed (summed over tiers). Tiers that cannot enumerate their keys are
    /// skipped; an error is returned only if no tier could purge.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        // First make every write in flight under the prefix lose its right to commit, then
        // remove what is stored, then the keys whose writes may have committed meanwhile.
        let in_flight = self.inner.keys.purge_prefix(prefix);
        let mut removed = 0;
        let mut last_err = None;
        let mut any = false;
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            match tier.store.purge_prefix(prefix).await {
                Ok(n) => {
                    any = true;
                    removed += n;
                }
                Err(StoreError::Unsupported { .. }) => {}
                Err(e) => {
                    self.store_fault(tier.store.name(), "purge_prefix", &e);
                    last_err = Some(e);
                }
            }
        }
        for key in in_flight {
            // `remove` waits for the key's commit lock, so a commit that passed its check just
            // before the purge is removed right after it. Not counted again: the purge is
            // counted once, by what the tiers removed.
            let _ = self.remove(&key).await;
        }
        self.inner.metrics.purged(removed);
        self.sample_tiers();
        match (any, last_err) {
            (false, Some(e)) => Err(Error::Store(e)),
            (false, None) => Err(Error::Store(StoreError::Unsupported { op: "purge_prefix" })),
            _ => Ok(removed),
        }
    }

    /// Removes every entry from tier `tier`.
    pub async fn clear_tier(&self, tier: usize) -> Result<(), Error> {
        let Some(t) = self.inner.tiers.get(tier) else {
            return Ok(());
        };
        t.store.clear().await?;
        self.sample_tiers();
        Ok(())
    }

    /// Samples each tier's size and eviction counters into the metrics.
    fn sample_tiers(&self) {
        for (i, t) in self.inner.tiers.iter().enumerate() {
            self.inner
                .metrics
                .tier(i, t.store.used_bytes(), t.store.len(), t.store.evictions());
        }
    }

    /// Stops accepting work and waits up to `timeout` for fills and writes in progress to
    /// commit, then for background refreshes and cold copies to finish. A fill can outlive its
    /// client's response (readers end once the whole body is through; the commit, an `fsync`
    /// or an upload, may still be running), so a graceful shutdown calls this before exiting.
    pub async fn close(&self, timeout: Duration) -> Result<(), CloseError> {
        self.inner.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        // Fills and writes in progress first (a client may have its whole body while the fill
        // is still committing), with the pool still open for the cold copies they start.
        if tokio::time::timeout_at(deadline, self.inner.keys.wait_idle())
            .await
            .is_err()
        {
            let pending = self.inner.keys.live_count() + self.inner.workers.stats().queued;
            tracing::warn!(pending, ?timeout, "fills or writes did not finish in time");
            return Err(CloseError { timeout, pending });
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.inner
            .workers
            .close(left)
            .await
            .map_err(|e| CloseError { timeout, ..e })
    }

    /// Whether [`close`](Cache::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.inner.cfg.op_timeout
    }

    pub(crate) fn after_set_commit(&self, key: &str, ticket: u64) {
        bump(&self.inner.stats.fills_committed);
        if self.inner.cfg.cold_fill == ColdFill::Background {
            self.spawn_cold_copy(key, ticket);
        }
    }
}

/// A short, stable digest of a key for logs and spans: keys may be long or sensitive, so
/// they are never logged whole.
fn key_hash(key: &str) -> String {
    format!("{:08x}", crc32fast::hash(key.as_bytes()))
}

/// Metadata after a not-modified answer: the new one if the origin sent it, with the stored
/// body's length kept, or the old one restamped.
fn refreshed_meta(prev: &Metadata, new: Option<Metadata>) -> Metadata {
    match new {
        Some(mut m) => {
            m.content_length = prev.content_length;
            m
        }
        None => {
            let mut m = prev.clone();
            let now = SystemTime::now();
            if let Some(until) = m.fresh_until {
                let lifetime = until.duration_since(m.stored_at).unwrap_or_default();
                m.fresh_until = Some(now + lifetime);
            }
            m.stored_at = now;
            m
        }
    }
}

/// Finishes the flight as failed if the fill task ends without finishing it (a panic in the
/// fetcher or a body, or the task being dropped), and stops advertising it.
struct FinishGuard<'a> {
    flight: &'a Arc<Flight>,
    usage: &'a Usage,
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        if !self.flight.is_finished() {
            self.flight
                .finish(Err("the fill ended early (panic or cancellation)".into()));
        }
        self.usage.retire(self.flight);
    }
}

/// A fetcher type for fills that never fetch (promotions).
struct NoFetch;

impl Fetcher for NoFetch {
    #[allow(clippy::manual_async_fn)]
    fn fetch(
        self,
        _previous: Option<Arc<Metadata>>,
    ) -> impl std::future::Future<Output = Result<Fetched, crate::BoxError>> + Send + 'static {
        async { Err("promotions do not fetch".into()) }
    }
}
