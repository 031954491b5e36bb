//! Background refresh: revalidation of a served entry on the bounded worker pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, debug_span, Instrument};

use super::keys::Claim;
use super::run::Source;
use super::stats::bump;
use super::{key_hash, Cache, Origin};
use crate::entry::Metadata;

impl Cache {
    /// Schedules a background refresh of `key` on the worker pool. Returns false when the pool
    /// is full (the refresh is dropped and counted) or the cache is closed. At most one refresh
    /// (or fill) per key runs at a time.
    pub fn schedule_refresh<F: Origin>(&self, key: &str, fetcher: F) -> bool {
        self.spawn_refresh(key, fetcher, None)
    }

    pub(super) fn spawn_refresh<F: Origin>(
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

    pub(super) async fn head_any(&self, key: &str) -> Option<Arc<Metadata>> {
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            let name = tier.store.name();
            if let Some(Some(m)) = self.store_op(name, "head", key, tier.store.head(key)).await {
                return Some(Arc::new(m));
            }
        }
        None
    }
}
