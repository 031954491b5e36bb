//! One tier, and the one way every store call is made: under the operation timeout, with a
//! failure logged and counted the same way whatever the operation (get, put, commit, delete,
//! purge, clear), so the cache fails open everywhere alike.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::stats::bump;
use super::{Cache, Freshness};
use crate::entry::{Metadata, StoredEntry};
use crate::error::StoreError;
use crate::store::Store;

pub(super) struct Tier {
    pub(super) store: Arc<dyn Store>,
    pub(super) freshness: Freshness,
}

impl Tier {
    pub(super) fn ttl_for(&self, meta: &Metadata) -> Option<Duration> {
        if meta.is_negative() {
            self.freshness.negative.or(self.freshness.positive)
        } else {
            self.freshness.positive
        }
    }
}

impl Cache {
    /// Reads one tier, failing open: errors and timeouts are logged, counted and reported as a
    /// miss.
    pub(super) async fn read_tier(&self, i: usize, key: &str) -> Option<StoredEntry> {
        let store = &self.inner.tiers[i].store;
        if store.is_null() {
            return None;
        }
        match store.try_get_now(key) {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                self.store_fault(store.name(), "get", &e);
                None
            }
            None => {
                self.store_op(store.name(), "get", key, store.get(key))
                    .await?
            }
        }
    }

    /// The first tier, from hot to cold, that holds `key`, and its entry.
    pub(super) async fn read_any(&self, key: &str) -> Option<(usize, StoredEntry)> {
        for i in 0..self.inner.tiers.len() {
            if let Some(entry) = self.read_tier(i, key).await {
                return Some((i, entry));
            }
        }
        None
    }

    /// Runs one store operation under the op timeout; a failure or timeout is logged, counted
    /// and turned into `None` (the cache fails open).
    pub(super) async fn store_op<T>(
        &self,
        tier: &'static str,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        self.store_call(tier, op, key, fut).await.ok()
    }

    /// Runs one store operation under the op timeout; a failure or timeout is logged and
    /// counted, then returned. Every store call of the engine goes through here.
    pub(super) async fn store_call<T>(
        &self,
        tier: &'static str,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let after = self.inner.cfg.op_timeout;
        let res = tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(StoreError::Timeout {
                key: key.to_owned(),
                after,
            })
        });
        if let Err(e) = &res {
            // A tier that cannot do an operation (enumerate keys, say) is not at fault.
            if !matches!(e, StoreError::Unsupported { .. }) {
                self.store_fault(tier, op, e);
            }
        }
        res
    }

    pub(super) fn store_fault(&self, tier: &'static str, op: &'static str, e: &StoreError) {
        bump(&self.inner.stats.store_errors);
        self.inner.metrics.store_error(tier, op, e.kind());
        warn!(tier, op, kind = e.kind(), error = %e, "cache store fault; failing open");
    }

    /// Samples each tier's size and eviction counters into the metrics.
    pub(super) fn sample_tiers(&self) {
        for (i, t) in self.inner.tiers.iter().enumerate() {
            self.inner
                .metrics
                .tier(i, t.store.used_bytes(), t.store.len(), t.store.evictions());
        }
    }

    /// Queues background work on the pool; a full queue drops it (counted).
    pub(super) fn spawn_background(&self, fut: impl Future<Output = ()> + Send + 'static) -> bool {
        let ok = self.inner.workers.try_spawn(fut);
        self.inner
            .metrics
            .worker(self.inner.workers.stats().queued, !ok);
        ok
    }
}
