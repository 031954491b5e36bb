//! The lookup: the tier walk from hot to cold, the freshness decision, hits and promotion.

use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tracing::{debug_span, field, trace_span, Instrument};

use super::flight::{Flight, FlightLimits};
use super::keys::Claim;
use super::run::{NoFetch, Source};
use super::stats::bump;
use super::types::{Failed, Found, Got};
use super::{key_hash, Cache, Fetcher, GetOptions, Lookup, Origin, Outcome, Passthrough, Verdict};
use crate::entry::{add_saturating, EntryBody, Metadata, StoredEntry};
use crate::error::{BoxError, Error};

/// Remembers keys seen once in a lower tier (promotion probation).
pub(super) struct Probation {
    seen: Mutex<HashSet<u64>>,
    cap: usize,
    hasher: RandomState,
}

impl Probation {
    pub(super) fn new(cap: usize) -> Self {
        Probation {
            seen: Mutex::new(HashSet::new()),
            cap: cap.max(1),
            hasher: RandomState::new(),
        }
    }

    /// Whether this hit should promote (the key was seen before).
    pub(super) fn admit(&self, key: &str) -> bool {
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

/// What a lookup does with a stored entry.
enum Serve {
    Fresh,
    Stale { refresh: bool },
    Validate,
}

impl Cache {
    /// Looks `key` up, fetching it with `fetcher` on a miss. See [`Cache::get_with`].
    pub fn get<'a, F>(
        &'a self,
        key: &'a str,
        fetcher: F,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a
    where
        F: Fetcher,
    {
        self.get_with(key, GetOptions::default(), fetcher)
    }

    /// Looks `key` up with per-call options.
    ///
    /// Errors: [`Error::Fetch`] when this call's fetcher failed and nothing usable was stored,
    /// [`Error::FillAbandoned`] when the fill this call followed failed (its cause says why; a
    /// follower never calls the origin again for a fill that failed), [`Error::NotCached`] with
    /// `only_cached` on a miss, [`Error::Closed`] after [`close`](Cache::close). Body streams
    /// end with an error item (never a clean end) if the body turns out incomplete.
    ///
    /// The returned future is `Send` whatever the fetcher, so it can be spawned.
    #[allow(clippy::manual_async_fn)]
    pub fn get_with<'a, F>(
        &'a self,
        key: &'a str,
        opts: GetOptions,
        fetcher: F,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a
    where
        F: Fetcher,
    {
        // Declaring `Send` here (instead of leaking it from an `async fn`) lets callers spawn
        // the future without tripping rustc's higher-ranked auto-trait inference on closures.
        self.lookup_then(key, opts, fetcher, None, public_result)
    }

    /// The lookup behind [`get_with`](Cache::get_with), for any fetcher: its pass-through
    /// value and its error come back as they are. `found` is an entry already read from the
    /// first tier by [`lookup_now`](Cache::lookup_now), so it is neither read nor counted as a
    /// hit twice.
    pub(crate) fn fetch_through<'a, F: Origin>(
        &'a self,
        key: &'a str,
        opts: GetOptions,
        fetcher: F,
        found: Option<StoredEntry>,
    ) -> impl Future<Output = Got<F>> + Send + 'a {
        self.lookup_then(key, opts, fetcher, found, |got| got)
    }

    /// The lookup, recorded and traced, its result passed through `finish` in the same future
    /// (no second state machine on the hit path).
    fn lookup_then<'a, F: Origin, T: 'a, M>(
        &'a self,
        key: &'a str,
        opts: GetOptions,
        fetcher: F,
        found: Option<StoredEntry>,
        finish: M,
    ) -> impl Future<Output = T> + Send + 'a
    where
        M: FnOnce(Got<F>) -> T + Send + 'a,
    {
        let span = trace_span!("daramjwee.lookup", key = %key_hash(key), outcome = field::Empty, tier = field::Empty);
        async move {
            let res = self.get_inner(key, opts, fetcher, found).await;
            self.record(&res);
            if let Ok(Found::Entry(l)) = &res {
                let span = tracing::Span::current();
                span.record("outcome", field::debug(&l.outcome));
                if let Some(tier) = l.outcome.tier() {
                    span.record("tier", self.tier_name(tier));
                }
            }
            finish(res)
        }
        .instrument(span)
    }

    /// Answers a fresh hit from the first tier without waiting, when its store can answer
    /// synchronously ([`Store::try_get_now`]) and `judge` (or, on [`Verdict::Default`], the
    /// tier's TTL) calls the entry fresh. The hit is counted as [`get_with`](Cache::get_with)
    /// counts it. With the lookup, the time it was judged fresh at (for the answer's `Age`).
    ///
    /// `Err(Some(entry))`: the entry was found but is not fresh; hand it to
    /// [`fetch_through`](Cache::fetch_through). `Err(None)`: nothing could be answered at once.
    ///
    /// This is the HTTP face's hit path: it lets a hit skip building the origin fetcher.
    pub(crate) fn lookup_now(
        &self,
        key: &str,
        judge: impl FnOnce(&Metadata, SystemTime) -> Verdict,
    ) -> Result<(Lookup, SystemTime), Option<StoredEntry>> {
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
        Ok((lookup, now))
    }

    pub(super) async fn get_inner<F: Origin>(
        &self,
        key: &str,
        opts: GetOptions,
        fetcher: F,
        mut found: Option<StoredEntry>,
    ) -> Got<F> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Failed::Cache(Error::Closed));
        }
        let now = SystemTime::now();
        let mut previous = None;
        for i in 0..self.inner.tiers.len() {
            let entry = match (i, found.take()) {
                (0, Some(entry)) => entry,
                _ => match self.read_tier(i, key).await {
                    Some(entry) => entry,
                    None => continue,
                },
            };
            match self.decide(i, &entry.meta, &opts, now) {
                Serve::Fresh => {
                    return Ok(Found::Entry(self.serve_hit(i, key, entry, false, &opts)));
                }
                Serve::Stale { refresh } => {
                    if refresh {
                        self.spawn_refresh(key, fetcher, Some(entry.meta.clone()));
                    }
                    return Ok(Found::Entry(self.serve_hit(i, key, entry, true, &opts)));
                }
                Serve::Validate => {
                    previous = Some(entry.meta);
                    break;
                }
            }
        }
        if opts.only_cached {
            return Err(Failed::Cache(Error::NotCached));
        }
        self.fill(key, previous, fetcher, &opts).await
    }

    /// What to do with an entry found in tier `tier`: the caller's judge decides, or else the
    /// tier's TTL, the stale window and the options.
    fn decide(&self, tier: usize, meta: &Metadata, opts: &GetOptions, now: SystemTime) -> Serve {
        if let Some(judge) = &opts.judge {
            match (judge.0)(meta, now) {
                Verdict::Fresh => return Serve::Fresh,
                Verdict::Stale { refresh } => return Serve::Stale { refresh },
                Verdict::Validate => return Serve::Validate,
                Verdict::Default => {}
            }
        }
        let ttl = self.inner.tiers[tier].ttl_for(meta);
        if !opts.revalidate && meta.is_fresh(now, ttl) {
            return Serve::Fresh;
        }
        let stale_window = meta.stale_for.or(self.inner.cfg.serve_stale_for);
        let servable = !opts.revalidate
            && !opts.no_stale
            && match (stale_window, meta.expires_at(ttl)) {
                (Some(w), Some(exp)) => now < add_saturating(exp, w),
                _ => true,
            };
        if servable {
            Serve::Stale { refresh: true }
        } else if opts.only_cached && !opts.revalidate {
            Serve::Stale { refresh: false }
        } else {
            Serve::Validate
        }
    }

    /// Whether `meta`, stored in tier `tier`, may be served as fresh (without a background
    /// refresh), given a judge's `verdict` on it, if there is a judge.
    pub(super) fn fresh_for(
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

    pub(super) fn serve_hit(
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
                return Lookup::new(Outcome::NotModified, entry.meta, EntryBody::empty());
            }
        }
        let outcome = Outcome::Hit { tier, stale };
        // An entry no tier above keeps (by its size) is served from where it is: no copy is
        // attempted on every hit.
        let len = entry.meta.content_length;
        let promotable = (0..tier).any(|i| self.fits(i, len));
        let (meta, body) = if !promotable || !self.should_promote(key) {
            (entry.meta, entry.body)
        } else {
            self.promote(tier, key, entry)
        };
        Lookup::new(outcome, meta, body)
    }

    /// Streams a lower tier's entry to the caller while it is written into the tiers above.
    /// If the key is being filled already, the caller reads its own stream of the tier instead
    /// of promoting twice.
    fn promote(&self, tier: usize, key: &str, entry: StoredEntry) -> (Arc<Metadata>, EntryBody) {
        let Claim::Lead(flight, usage) = self.claim(key, false) else {
            return (entry.meta, entry.body);
        };
        bump(&self.inner.stats.promotions);
        let reader = flight.join();
        let meta = entry.meta.clone();
        let this = self.clone();
        let key = key.to_owned();
        let span = debug_span!("daramjwee.promotion", key = %key_hash(&key), from_tier = tier);
        tokio::spawn(
            async move {
                let source = Source::Tier(entry.meta, entry.body);
                this.run_fill::<NoFetch>(&key, flight, usage, source, 0..tier, None)
                    .await;
            }
            .instrument(span),
        );
        // A new flight always accepts its first reader; the empty body is never served.
        let body = reader.map_or_else(EntryBody::empty, |r| r.into_body());
        (meta, body)
    }

    pub(super) fn should_promote(&self, key: &str) -> bool {
        match &self.inner.probation {
            Some(p) => p.admit(key),
            None => true,
        }
    }

    pub(super) fn claim(&self, key: &str, detached: bool) -> Claim {
        let limits = FlightLimits {
            window: self.inner.cfg.window,
            retain: self.inner.cfg.retain,
            budget: self.inner.retain_budget.clone(),
        };
        self.inner.keys.claim(key, self.inner.cfg.lock_age, || {
            Flight::new(limits, detached)
        })
    }
}

/// What [`Cache::get_with`] answers for a fetcher's lookup.
fn public_result(got: Result<Found<Passthrough>, Failed<BoxError>>) -> Result<Lookup, Error> {
    match got {
        Ok(Found::Entry(lookup)) => Ok(lookup),
        Ok(Found::Passed(passed)) => {
            let Passthrough { meta, body } = *passed;
            Ok(Lookup::new(Outcome::Pass, Arc::new(meta), body))
        }
        Err(Failed::Origin(e)) => Err(Error::Fetch(e)),
        Err(Failed::Cache(e)) => Err(e),
    }
}
