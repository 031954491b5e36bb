//! The fill task: fetch (or read a lower tier, for a promotion), stream the body into the
//! flight and the target tiers, verify it, commit. It runs in a task of its own, so a client
//! that goes away does not abandon a body other readers still want.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, debug_span, Instrument};

use super::flight::{Flight, Head};
use super::keys::{Claim, Usage};
use super::stats::bump;
use super::{key_hash, Cache, ColdFill, Fetched, Origin, Storing};
use crate::entry::{add_saturating, EntryBody, Metadata};
use crate::error::{FillError, StoreError};
use crate::metrics::OriginResult;
use crate::store::StoreWriter;

/// Where a fill's bytes come from.
pub(super) enum Source<F> {
    /// The fetcher, given the stored entry's metadata if there is one.
    Fetch(F, Option<Arc<Metadata>>),
    /// An origin response another fill fetched (a variant): stored like a fetch.
    Fetched(Arc<Metadata>, EntryBody),
    /// A lower tier's entry (a promotion).
    Tier(Arc<Metadata>, EntryBody),
}

/// What only the request that led a fill receives, as the fetcher produced it: a response
/// that must not be shared, or the origin's own error.
pub(super) enum LeaderNote<P, E> {
    Passed(P),
    Failed(E),
}

/// A write in progress into one tier: the tier's index and its writer.
pub(crate) type Writer = (usize, Box<dyn StoreWriter>);

/// The leader's end of the note channel, if the fill has a leader (refreshes have none).
type NoteTx<F> = oneshot::Sender<LeaderNote<<F as Origin>::Pass, <F as Origin>::Error>>;

impl Cache {
    /// Runs one fill to its end. Every exit path finishes the flight.
    pub(super) async fn run_fill<F: Origin>(
        &self,
        key: &str,
        flight: Arc<Flight>,
        usage: Usage,
        source: Source<F>,
        targets: Range<usize>,
        note: Option<NoteTx<F>>,
    ) {
        let guard = FinishGuard {
            flight: &flight,
            usage: &usage,
        };
        let from_origin = !matches!(source, Source::Tier(..));
        let is_refresh = note.is_none();
        let Some((meta, body)) = self.fill_source(key, &flight, &usage, source, note).await else {
            return;
        };
        let writers = match self
            .open_fill(&flight, key, &meta, targets, from_origin)
            .await
        {
            Ok(writers) => writers,
            Err(why) => return self.fail(&flight, why),
        };
        let started = std::time::Instant::now();
        let committed = self
            .stream_fill(&flight, &usage, &meta, body, writers, from_origin)
            .await;
        if from_origin {
            let secs = started.elapsed().as_secs_f64();
            self.inner.metrics.fill_done(secs, is_refresh);
        }
        self.sample_tiers();
        match committed {
            Ok(tiers) => {
                flight.finish(Ok(()));
                drop(guard);
                // Only origin bytes go down: a promotion came from a lower tier, which holds
                // the entry already.
                let background = self.inner.cfg.cold_fill == ColdFill::Background;
                if let (true, true, Some(&from)) = (from_origin, background, tiers.first()) {
                    self.spawn_cold_copy(key, usage.ticket, from, tiers);
                }
            }
            Err(e) => {
                debug!(error = %e, "fill failed; nothing stored");
                self.fail(&flight, e);
            }
        }
    }

    /// The entry a fill streams into its tiers: the one it was given, or the origin's. `None`
    /// when the flight is already finished: a pass-through handed to the leader, a failed
    /// fetch, or an answer about the stored entry (not-modified, stale-on-error).
    async fn fill_source<F: Origin>(
        &self,
        key: &str,
        flight: &Arc<Flight>,
        usage: &Usage,
        source: Source<F>,
        note: Option<NoteTx<F>>,
    ) -> Option<(Arc<Metadata>, EntryBody)> {
        match source {
            Source::Tier(meta, body) | Source::Fetched(meta, body) => Some((meta, body)),
            Source::Fetch(fetcher, previous) => {
                let fetched = match self.fetch(flight, fetcher, previous.clone(), note).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return None,
                    Err(why) => {
                        self.fail(flight, why);
                        return None;
                    }
                };
                let (meta, body) = self.settle(key, flight, usage, previous, fetched).await?;
                Some((Arc::new(meta), body))
            }
        }
    }

    /// Places the body by its size, publishes the head (saying which tier takes the body),
    /// then opens the writers. An origin body goes where [`place`](Cache::place) puts it; a
    /// promotion into every tier of `targets` that keeps its size. The head goes first so that
    /// readers never wait for a store to start a write (a file tier creates its temp file).
    async fn open_fill(
        &self,
        flight: &Flight,
        key: &str,
        meta: &Arc<Metadata>,
        targets: Range<usize>,
        from_origin: bool,
    ) -> Result<Vec<Writer>, FillError> {
        if flight.orphaned() {
            return Err(FillError::Orphaned);
        }
        let len = meta.content_length;
        let placement = self.place(targets, len, from_origin);
        if placement.too_large {
            self.too_large(len);
        }
        let storing = match placement.tiers.first() {
            Some(&tier) => Storing::Tier(tier),
            None if placement.too_large => Storing::TooLarge,
            None => Storing::NoTier,
        };
        flight.set_head(Head::Body(meta.clone(), storing));
        Ok(self.open_writers(key, meta, placement.tiers).await)
    }

    /// Stores `meta` and `body` under `key` in a fill of its own, which runs whether or not
    /// anyone reads it yet (the lookup of `key` that follows joins it). If that key is being
    /// filled already, that fill stands and this body is dropped.
    fn spawn_variant_fill(&self, key: String, meta: Metadata, body: EntryBody) {
        let Claim::Lead(flight, usage) = self.claim(&key, true) else {
            return;
        };
        let this = self.clone();
        let span = debug_span!("daramjwee.variant_fill", key = %key_hash(&key));
        tokio::spawn(
            async move {
                let tiers = 0..this.inner.tiers.len();
                let source = Source::<NoFetch>::Fetched(Arc::new(meta), body);
                this.run_fill(&key, flight, usage, source, tiers, None)
                    .await;
            }
            .instrument(span),
        );
    }

    /// Runs the fetcher under the idle limit. A pass-through is handed to the leader (then
    /// `Ok(None)`: the flight is finished here); the origin's error goes to the leader as it is,
    /// and the fill fails with [`FillError::Origin`] for everyone else.
    async fn fetch<F: Origin>(
        &self,
        flight: &Flight,
        fetcher: F,
        previous: Option<Arc<Metadata>>,
        note: Option<NoteTx<F>>,
    ) -> Result<Option<Fetched<Infallible>>, FillError> {
        let after = self.inner.cfg.idle_timeout;
        let fetched = match tokio::time::timeout(after, fetcher.fetch(previous)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                self.inner.metrics.origin(OriginResult::Error);
                let why = F::failure(&e);
                if let Some(tx) = note {
                    let _ = tx.send(LeaderNote::Failed(e));
                }
                return Err(why);
            }
            Err(_) => {
                self.inner.metrics.origin(OriginResult::Error);
                return Err(FillError::OriginTimeout(after));
            }
        };
        self.inner.metrics.origin(match &fetched {
            Fetched::Entry { .. } | Fetched::Variant { .. } => OriginResult::Ok,
            Fetched::NotModified { .. } => OriginResult::NotModified,
            Fetched::Pass(_) => OriginResult::Pass,
            Fetched::Stale { .. } => OriginResult::Error,
        });
        Ok(Some(match fetched {
            Fetched::Pass(p) => {
                if let Some(tx) = note {
                    let _ = tx.send(LeaderNote::Passed(p));
                }
                flight.set_head(Head::Pass);
                flight.finish(Ok(()));
                return Ok(None);
            }
            Fetched::Entry { meta, body } => Fetched::Entry { meta, body },
            Fetched::Variant {
                key,
                marker,
                meta,
                body,
            } => Fetched::Variant {
                key,
                marker,
                meta,
                body,
            },
            Fetched::NotModified { meta } => Fetched::NotModified { meta },
            Fetched::Stale { status } => Fetched::Stale { status },
        }))
    }

    /// Settles an answer about the stored entry (not-modified, stale-on-error) or a
    /// pass-through, finishing the flight; returns the entry to stream otherwise.
    async fn settle(
        &self,
        key: &str,
        flight: &Flight,
        usage: &Usage,
        previous: Option<Arc<Metadata>>,
        fetched: Fetched<Infallible>,
    ) -> Option<(Metadata, EntryBody)> {
        let head = match fetched {
            Fetched::Entry { meta, body } => return Some((meta, body)),
            Fetched::Variant {
                key,
                marker,
                meta,
                body,
            } => {
                // Claimed before the marker's head is published, so every reader of the
                // marker that looks the variant up finds this fill.
                self.spawn_variant_fill(key, meta, body);
                return Some((marker, EntryBody::empty()));
            }
            Fetched::Pass(never) => match never {},
            _ if previous.is_none() => {
                self.fail(flight, FillError::NothingStored);
                return None;
            }
            Fetched::NotModified { meta } => {
                bump(&self.inner.stats.revalidated);
                let prev = previous.as_deref()?;
                let updated = refreshed_meta(prev, meta);
                self.update_all(key, usage, &updated).await;
                Head::NotModified
            }
            // RFC 5861 §4: the stored entry is served as it is; nothing is written.
            Fetched::Stale { status } => Head::Stale(status),
        };
        flight.set_head(head);
        flight.finish(Ok(()));
        None
    }

    /// Streams `body` into the flight and `writers`, then commits them. Returns the tiers
    /// that committed (highest first), or why the fill failed.
    async fn stream_fill(
        &self,
        flight: &Flight,
        usage: &Usage,
        meta: &Arc<Metadata>,
        body: EntryBody,
        mut writers: Vec<Writer>,
        from_origin: bool,
    ) -> Result<Vec<usize>, FillError> {
        let declared = meta.content_length;
        let received = self
            .pump(
                flight,
                usage.key(),
                body,
                &mut writers,
                declared,
                from_origin,
            )
            .await?;
        if let Some(expected) = declared.filter(|d| received != *d) {
            return Err(FillError::Truncated { received, expected });
        }
        // The body is whole: readers finish now rather than after the commit below.
        flight.complete_body();
        if writers.is_empty() {
            return Ok(Vec::new());
        }
        let Some(_lock) = usage.lock_if_current().await else {
            debug!("fill superseded by a newer set or delete; discarded");
            return Ok(Vec::new());
        };
        Ok(self.commit_writers(usage.key(), writers).await)
    }

    /// A writer for `key` in each of `tiers` that can take one (failures are logged, counted
    /// and skipped).
    async fn open_writers(&self, key: &str, meta: &Metadata, tiers: Vec<usize>) -> Vec<Writer> {
        let mut writers = Vec::with_capacity(tiers.len());
        for i in tiers {
            let store = &self.inner.tiers[i].store;
            let put = store.put(key, meta.clone());
            if let Some(w) = self.store_op(store.name(), "put", key, put).await {
                writers.push((i, w));
            }
        }
        writers
    }

    /// Moves the body into the flight and the writers, chunk by chunk, checking it against its
    /// declared length; returns the bytes received.
    async fn pump(
        &self,
        flight: &Flight,
        key: &str,
        mut body: EntryBody,
        writers: &mut Vec<Writer>,
        declared: Option<u64>,
        from_origin: bool,
    ) -> Result<u64, FillError> {
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
                return Err(FillError::Orphaned);
            }
            let read = tokio::time::timeout(self.inner.cfg.idle_timeout, body.next());
            let next = match unwritten.take() {
                // Tier failures only drop that tier's copy.
                Some(prev) => tokio::join!(self.write_all(key, writers, &prev, false), read).1,
                None => read.await,
            };
            let chunk = match next {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    let source = Arc::new(e);
                    return Err(FillError::Body { received, source });
                }
                Ok(None) => break,
                Err(_) => return Err(FillError::Stalled { received }),
            };
            received += chunk.len() as u64;
            if from_origin {
                self.inner.metrics.origin_bytes(chunk.len() as u64);
            }
            if let Some(expected) = declared.filter(|d| received > *d) {
                return Err(FillError::TooLong { expected });
            }
            flight.push(chunk.clone());
            unwritten = Some(chunk);
        }
        if let Some(last) = unwritten {
            let _ = self.write_all(key, writers, &last, false).await;
        }
        Ok(received)
    }

    /// Commits every writer; returns the tiers whose commit succeeded, in writer order.
    async fn commit_writers(&self, key: &str, writers: Vec<Writer>) -> Vec<usize> {
        let mut committed = Vec::with_capacity(writers.len());
        for (i, w) in writers {
            let store = &self.inner.tiers[i].store;
            let commit = w.commit();
            if self
                .store_op(store.name(), "commit", key, commit)
                .await
                .is_some()
            {
                self.committed(i);
                committed.push(i);
            }
        }
        committed
    }

    /// Writes a chunk to every writer. A failing writer is dropped (its entry discarded) and
    /// the write goes on for the others; with `hot_required`, a failure of tier 0 is returned
    /// instead (a `set` cannot succeed without the hot tier).
    pub(crate) async fn write_all(
        &self,
        key: &str,
        writers: &mut Vec<Writer>,
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
                    let too_large = matches!(e, StoreError::TooLarge { .. });
                    if too_large {
                        debug!(tier = name, "entry too large for tier; not stored there");
                    } else {
                        self.store_fault(name, "write", &e);
                    }
                    // Removed in place, so the writers stay highest tier first.
                    writers.remove(i);
                    if too_large && writers.is_empty() {
                        self.too_large(None);
                    }
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

    pub(super) fn fail(&self, flight: &Flight, why: FillError) {
        bump(&self.inner.stats.fills_failed);
        flight.finish(Err(why));
    }
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
                m.fresh_until = Some(add_saturating(now, lifetime));
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
            let why = if std::thread::panicking() {
                FillError::Panicked
            } else {
                FillError::Cancelled
            };
            self.flight.finish(Err(why));
        }
        self.usage.retire(self.flight);
    }
}

/// A fetcher type for fills that never fetch (promotions).
pub(super) struct NoFetch;

impl Origin for NoFetch {
    type Pass = Infallible;
    type Error = Infallible;

    #[allow(clippy::manual_async_fn)]
    fn fetch(
        self,
        _previous: Option<Arc<Metadata>>,
    ) -> impl std::future::Future<Output = Result<Fetched<Infallible>, Infallible>> + Send + 'static
    {
        // Promotions stream a lower tier's entry (`Source::Tier`) and never call this.
        async { Ok(Fetched::Stale { status: None }) }
    }
}
