//! Fills, as a request sees them: one per key. The request that claims the key leads (its
//! fetcher runs in a task of its own, see `run`), every other request for the key follows and
//! streams the same fill. A fill's outcome is shared: its body, its not-modified, its
//! stale-on-error, and its failure. A failed fill is never retried by its followers, so a sick
//! origin gets one call per fill, not one per waiting request.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;
use tracing::{debug_span, Instrument};

use super::flight::{Flight, FlightReader, Head};
use super::keys::{Claim, Usage};
use super::run::{LeaderNote, Source};
use super::types::{Failed, Found, Got};
use super::{key_hash, Cache, Fetched, GetOptions, Lookup, Origin, Outcome};
use crate::entry::Metadata;
use crate::error::{Error, FillError};

impl Cache {
    /// A miss (or a stale entry that must be validated): lead or follow the key's fill.
    pub(super) async fn fill<F: Origin>(
        &self,
        key: &str,
        previous: Option<Arc<Metadata>>,
        fetcher: F,
        opts: &GetOptions,
    ) -> Got<F> {
        match self.claim(key, false) {
            Claim::Lead(flight, usage) => {
                if previous.is_none() {
                    if let Some(hit) = self.reread_after_claim(key, &flight, &usage, opts).await {
                        return Ok(Found::Entry(hit));
                    }
                }
                self.lead(key, flight, usage, previous, fetcher).await
            }
            Claim::Follow(flight) => self.follow(key, flight, fetcher).await,
        }
    }

    /// Checked again under the claim: another fill may have committed and let go of the key
    /// between our tier reads and the claim. Fills finish at the origin's pace, so under load
    /// that gap is reachable; without this check it costs a second origin call.
    async fn reread_after_claim(
        &self,
        key: &str,
        flight: &Arc<Flight>,
        usage: &Usage,
        opts: &GetOptions,
    ) -> Option<Lookup> {
        let entry = self.read_tier(0, key).await?;
        let now = SystemTime::now();
        let verdict = opts.judge.as_ref().map(|j| (j.0)(&entry.meta, now));
        if !self.fresh_for(0, &entry.meta, verdict, opts.revalidate, now) {
            return None;
        }
        // Anyone who joined meanwhile reads the entry from the store.
        flight.set_head(Head::Stored);
        flight.finish(Ok(()));
        usage.retire(flight);
        Some(self.serve_hit(0, key, entry, false, opts))
    }

    /// Starts the fill task and answers with what it learns first.
    async fn lead<F: Origin>(
        &self,
        key: &str,
        flight: Arc<Flight>,
        usage: Usage,
        previous: Option<Arc<Metadata>>,
        fetcher: F,
    ) -> Got<F> {
        let reader = flight.join();
        let (note_tx, note_rx) = oneshot::channel();
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
                let tiers = 0..this.inner.tiers.len();
                let source = Source::Fetch(fetcher, previous);
                this.run_fill(&owned_key, f2, usage, source, tiers, Some(note_tx))
                    .await;
            }
            .instrument(span),
        );
        let Some(reader) = reader else {
            return Err(Failed::Cache(Error::FillAbandoned(FillError::Cancelled)));
        };
        self.leader_answer(key, &flight, reader, note_rx).await
    }

    /// What the leader answers, once the fill published its head.
    async fn leader_answer<P, E>(
        &self,
        key: &str,
        flight: &Flight,
        reader: FlightReader,
        note: oneshot::Receiver<LeaderNote<P, E>>,
    ) -> Result<Found<P>, Failed<E>> {
        let head = flight.head().await;
        let Head::Body(meta, storing) = head else {
            drop(reader);
            return self.leader_settled(key, head, note).await;
        };
        let body = reader.into_body();
        Ok(Found::Entry(Lookup {
            storing,
            ..Lookup::new(Outcome::Miss, meta, body)
        }))
    }

    /// What the leader answers when its fill published no body.
    async fn leader_settled<P, E>(
        &self,
        key: &str,
        head: Head,
        note: oneshot::Receiver<LeaderNote<P, E>>,
    ) -> Result<Found<P>, Failed<E>> {
        match head {
            Head::NotModified => Ok(Found::Entry(self.after_not_modified(key).await?)),
            Head::Stale(status) => Ok(Found::Entry(self.after_stale(key, status).await?)),
            // The fill task sends its note before it publishes the head, and drops the sender
            // when it ends: this never waits long.
            Head::Pass => match note.await {
                Ok(LeaderNote::Passed(p)) => Ok(Found::Passed(Box::new(p))),
                _ => Err(Failed::Cache(Error::FillAbandoned(FillError::Cancelled))),
            },
            Head::Failed(why) => match note.await {
                Ok(LeaderNote::Failed(e)) => Err(Failed::Origin(e)),
                _ => Err(Failed::Cache(leader_error(why))),
            },
            Head::Body(..) | Head::Pending | Head::Stored => {
                Err(Failed::Cache(Error::FillAbandoned(FillError::Cancelled)))
            }
        }
    }

    /// Follows another request's fill: its body as it streams, its not-modified or stale
    /// answer, or its failure. Only a response that must not be shared, or a leader slower
    /// than `lock_wait` to answer, makes a follower fetch on its own.
    pub(super) async fn follow<F: Origin>(
        &self,
        key: &str,
        flight: Arc<Flight>,
        fetcher: F,
    ) -> Got<F> {
        let wait = self.inner.cfg.lock_wait;
        let Some(reader) = flight.join() else {
            // The fill's start is gone: wait until it is stored, then read it from the tiers.
            return self.after_stored(key, &flight, fetcher).await;
        };
        let head = match tokio::time::timeout(wait, flight.head()).await {
            Ok(Head::Body(meta, storing)) => {
                let body = reader.into_body();
                return Ok(Found::Entry(Lookup {
                    storing,
                    ..Lookup::new(Outcome::Coalesced, meta, body)
                }));
            }
            Ok(head) => head,
            // The leader is too slow to answer: fetch on our own, store nothing.
            Err(_) => Head::Pending,
        };
        drop(reader);
        let found = match head {
            Head::NotModified => {
                flight.wait_finished().await.ok();
                self.after_not_modified(key).await?
            }
            Head::Stale(status) => self.after_stale(key, status).await?,
            Head::Failed(why) => return Err(Failed::Cache(Error::FillAbandoned(why))),
            Head::Stored => return self.after_stored(key, &flight, fetcher).await,
            // Not shareable, or no answer in time: fetch on our own, store nothing.
            Head::Pass | Head::Pending | Head::Body(..) => return self.fetch_alone(fetcher).await,
        };
        Ok(Found::Entry(found))
    }

    /// Waits (at most `lock_wait`) for the flight to end, then reads what it stored. A failed
    /// fill's failure is shared; a fill that stored nothing, or one that is too slow, leaves
    /// the follower to fetch alone.
    async fn after_stored<F: Origin>(&self, key: &str, flight: &Flight, fetcher: F) -> Got<F> {
        let wait = self.inner.cfg.lock_wait;
        match tokio::time::timeout(wait, flight.wait_finished()).await {
            Ok(Err(why)) => return Err(Failed::Cache(Error::FillAbandoned(why))),
            Ok(Ok(())) => {
                if let Some((tier, entry)) = self.read_any(key).await {
                    let _ = tier;
                    return Ok(Found::Entry(Lookup::new(
                        Outcome::Coalesced,
                        entry.meta,
                        entry.body,
                    )));
                }
            }
            Err(_) => {}
        }
        self.fetch_alone(fetcher).await
    }

    /// Fetches without coalescing or storing (the fallback of followers).
    async fn fetch_alone<F: Origin>(&self, fetcher: F) -> Got<F> {
        match fetcher.fetch(None).await.map_err(Failed::Origin)? {
            Fetched::Entry { meta, body } | Fetched::Variant { meta, body, .. } => Ok(
                Found::Entry(Lookup::new(Outcome::Pass, Arc::new(meta), body)),
            ),
            Fetched::Pass(p) => Ok(Found::Passed(Box::new(p))),
            Fetched::NotModified { .. } | Fetched::Stale { .. } => Err(Failed::Cache(
                Error::FillAbandoned(FillError::NothingStored),
            )),
        }
    }

    /// Reads the entry a not-modified answer just confirmed.
    async fn after_not_modified(&self, key: &str) -> Result<Lookup, Error> {
        let (tier, entry) = self
            .read_any(key)
            .await
            .ok_or(Error::FillAbandoned(FillError::NothingStored))?;
        Ok(Lookup::new(
            Outcome::Revalidated { tier },
            entry.meta,
            entry.body,
        ))
    }

    /// Reads the entry the fill chose to serve as it is because the origin failed.
    async fn after_stale(
        &self,
        key: &str,
        status: Option<http::StatusCode>,
    ) -> Result<Lookup, Error> {
        let (tier, entry) = self
            .read_any(key)
            .await
            .ok_or(Error::FillAbandoned(FillError::NothingStored))?;
        let outcome = Outcome::StaleOnError {
            tier,
            status: status.map(|s| s.as_u16()),
        };
        Ok(Lookup::new(outcome, entry.meta, entry.body))
    }
}

/// The engine error a leader gets when its fill failed and the origin's own error did not
/// reach it (a timeout, a panic, a body failure).
fn leader_error(why: FillError) -> Error {
    match why {
        FillError::OriginTimeout(after) => Error::Timeout {
            what: "origin",
            after,
        },
        FillError::Panicked => Error::Panicked,
        other => Error::FillAbandoned(other),
    }
}
