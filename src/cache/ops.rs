//! Operations on stored entries: `set`, `delete`, purges, clearing a tier, the background cold
//! copy, and `close`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::keys::Usage;
use super::{Cache, CacheWriter, ColdFill};
use crate::entry::{Metadata, StoredEntry};
use crate::error::{CloseError, Error, StoreError};

impl Cache {
    /// Copies the entry committed in tier `from` into the tiers below it that keep its size
    /// and do not hold it yet (`done`), on the worker pool.
    pub(super) fn spawn_cold_copy(&self, key: &str, ticket: u64, from: usize, done: Vec<usize>) {
        if self.copy_targets(from, &done).is_empty() {
            return;
        }
        let this = self.clone();
        let key = key.to_owned();
        self.spawn_background(async move {
            let usage = this.inner.keys.writer_with_ticket(&key, ticket);
            for i in this.copy_targets(from, &done) {
                let Some(entry) = this.read_tier(from, &key).await else {
                    return;
                };
                if !this.fits(i, entry.meta.content_length) {
                    continue;
                }
                if let Err(e) = this.copy_into(&key, &usage, i, entry).await {
                    let name = this.inner.tiers[i].store.name();
                    this.store_fault(name, "cold_copy", &e);
                }
            }
        });
    }

    /// Writes `entry` into tier `tier` and commits it, unless a newer write of the key started.
    pub(super) async fn copy_into(
        &self,
        key: &str,
        usage: &Usage,
        tier: usize,
        entry: StoredEntry,
    ) -> Result<(), StoreError> {
        let store = &self.inner.tiers[tier].store;
        let name = store.name();
        let put = store.put(key, (*entry.meta).clone());
        let mut w = self.store_call(name, "put", key, put).await?;
        let mut body = entry.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            })?;
            self.store_call(name, "write", key, w.write(chunk)).await?;
        }
        if let Some(_lock) = usage.lock_if_current().await {
            self.store_call(name, "commit", key, w.commit()).await?;
            self.committed(tier);
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
            let put = store.put(key, meta.clone());
            writers.push((i, self.store_call(store.name(), "put", key, put).await?));
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
    pub(super) async fn remove(&self, key: &str) -> Result<(), Error> {
        let usage = self.inner.keys.writer(key, true);
        let _lock = usage.lock().await;
        let mut first_err = None;
        for tier in self.inner.tiers.iter().filter(|t| !t.store.is_null()) {
            let name = tier.store.name();
            if let Err(e) = self
                .store_call(name, "delete", key, tier.store.delete(key))
                .await
            {
                first_err.get_or_insert(Error::Store(e));
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
            let purge = tier.store.purge_prefix(prefix);
            match self
                .store_call(tier.store.name(), "purge_prefix", prefix, purge)
                .await
            {
                Ok(n) => {
                    any = true;
                    removed += n;
                }
                Err(StoreError::Unsupported { .. }) => {}
                Err(e) => last_err = Some(e),
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
        let res = self
            .store_call(t.store.name(), "clear", "", t.store.clear())
            .await;
        self.sample_tiers();
        Ok(res?)
    }

    /// Stops accepting work and waits up to `timeout` for fills and writes in progress to
    /// commit, then for background refreshes and cold copies to finish. A fill can outlive its
    /// client's response (readers end once the whole body is through; the commit, an `fsync`
    /// or an upload, may still be running), so a graceful shutdown calls this before exiting.
    pub async fn close(&self, timeout: Duration) -> Result<(), CloseError> {
        self.inner.closed.store(true, Ordering::Release);
        let now = tokio::time::Instant::now();
        // Saturating: `Duration::MAX` means "wait as long as it takes".
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(1 << 32));
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

    /// Counts a `set`'s commits (`committed`: the tiers that took it, hot first) and copies
    /// it down in the background when lower tiers are filled that way.
    pub(crate) fn after_set_commit(&self, key: &str, ticket: u64, committed: Vec<usize>) {
        for &tier in &committed {
            self.committed(tier);
        }
        if self.inner.cfg.cold_fill == ColdFill::Background {
            self.spawn_cold_copy(key, ticket, 0, committed);
        }
    }
}
