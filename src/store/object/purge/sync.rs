//! The protocol of shared purges on one instance: publish a purge, catch up with the others',
//! apply them to this instance's tiers, compact the log, and decide at start (or after a long
//! stall) whether what the hot tiers hold can still be checked.
//!
//! One async lock orders everything an instance does with the log, so the cursor (the last
//! sequence number applied) only moves forward and a purge is applied once.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::log::Log;
use super::record::{Checkpoint, Purge, Record};
use super::{Counter, Poller, PurgeError, SharedPurgesStats};
use crate::store::object::floors::replaying;
use crate::store::object::BucketStore;
use crate::Cache;

/// Sequence numbers one publish tries before giving up (each loss means another purge landed).
const APPEND_ATTEMPTS: u32 = 16;
/// Log entries one compaction examines, so one compaction is a bounded number of requests.
const COMPACT_BATCH: u32 = 1000;

/// Where this instance is in the log.
#[derive(Debug)]
struct Cursor {
    /// The last sequence number applied.
    applied: u64,
    last_maintain: Instant,
}

/// The state behind [`SharedPurges`](super::SharedPurges).
#[derive(Debug)]
pub(super) struct Shared {
    cache: Cache,
    bucket: BucketStore,
    log: Log,
    /// Random per start: the log entries this instance wrote (and applied) itself.
    id: u64,
    retention: Duration,
    compact_every: Duration,
    state_file: Option<PathBuf>,
    cursor: tokio::sync::Mutex<Cursor>,
    applied: AtomicU64,
    published: Counter,
    received: Counter,
    hot_clears: Counter,
    poll_errors: Counter,
    pub(super) poller: Poller,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.poller.get_mut().take() {
            task.abort();
        }
    }
}

impl Shared {
    pub(super) fn new(
        cache: Cache,
        bucket: BucketStore,
        interval: Duration,
        retention: Duration,
        state_file: Option<PathBuf>,
    ) -> Self {
        let inner = &bucket.inner;
        let log = Log::new(
            inner.store.clone(),
            inner.layout.under(crate::store::object::PURGE_DIR),
            inner.op_timeout,
        );
        Shared {
            cache,
            log,
            bucket,
            id: RandomState::new().build_hasher().finish(),
            retention,
            compact_every: (retention / 4).max(interval),
            state_file,
            cursor: tokio::sync::Mutex::new(Cursor {
                applied: 0,
                last_maintain: Instant::now(),
            }),
            applied: AtomicU64::new(0),
            published: Counter::default(),
            received: Counter::default(),
            hot_clears: Counter::default(),
            poll_errors: Counter::default(),
            poller: Poller::default(),
        }
    }

    pub(super) fn stats(&self) -> SharedPurgesStats {
        SharedPurgesStats {
            applied_seq: self.applied.load(Ordering::Relaxed),
            published: self.published.get(),
            received: self.received.get(),
            hot_clears: self.hot_clears.get(),
            poll_errors: self.poll_errors.get(),
        }
    }

    /// Start: the checkpoint's prefix floors, then resume from the state file when the log
    /// still holds what came after it, else forget what cannot be checked.
    pub(super) async fn start(&self) -> Result<(), PurgeError> {
        let cp = self.checkpoint_or_create().await?;
        for (prefix, at) in &cp.floors {
            self.bucket.inner.floors.raise(prefix, *at);
        }
        let saved = self.read_state().await?;
        let mut cur = self.cursor.lock().await;
        match saved {
            Some(seq) if seq + 1 >= cp.oldest => cur.applied = seq,
            _ => self.forget(&mut cur, &cp).await?,
        }
        self.catch_up(&mut cur).await?;
        // Written even when nothing was read: the next start must know where this one began.
        self.save_state(cur.applied).await
    }

    /// Records `purge` in the log, then applies it here.
    pub(super) async fn publish(&self, purge: Purge) -> Result<(), PurgeError> {
        let record = Record {
            at: SystemTime::now(),
            origin: self.id,
            purge,
        };
        let mut cur = self.cursor.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            // Whatever was appended before is applied first: the next number is then ours to try.
            self.catch_up(&mut cur).await?;
            let seq = cur.applied + 1;
            if self.log.append(seq, &record).await? {
                self.advance(&mut cur, seq);
                self.published.bump();
                let applied = self.apply(&record).await;
                self.save_state(seq).await?;
                return applied.map_err(PurgeError::Apply);
            }
        }
        Err(PurgeError::Contended {
            attempts: APPEND_ATTEMPTS,
        })
    }

    pub(super) async fn sync(&self) -> Result<u64, PurgeError> {
        let mut cur = self.cursor.lock().await;
        self.catch_up(&mut cur).await
    }

    /// One tick of the poller: catch up, and maintain the log when due.
    pub(super) async fn poll(&self) {
        let mut cur = self.cursor.lock().await;
        if let Err(e) = self.catch_up(&mut cur).await {
            self.poll_errors.bump();
            tracing::warn!(error = %e, "shared purges: poll failed (retried next interval)");
        }
        if cur.last_maintain.elapsed() >= self.compact_every {
            cur.last_maintain = Instant::now();
            if let Err(e) = self.maintain_locked(&mut cur, false).await {
                tracing::warn!(error = %e, "shared purges: log maintenance failed");
            }
        }
    }

    pub(super) async fn maintain(&self, force: bool) -> Result<(), PurgeError> {
        let mut cur = self.cursor.lock().await;
        self.maintain_locked(&mut cur, force).await
    }

    fn advance(&self, cur: &mut Cursor, seq: u64) {
        cur.applied = seq;
        self.applied.store(seq, Ordering::Relaxed);
    }

    /// Applies every entry after the cursor, one GET each, until the first that does not exist.
    async fn catch_up(&self, cur: &mut Cursor) -> Result<u64, PurgeError> {
        let mut read = 0;
        while let Some(record) = self.log.read(cur.applied + 1).await? {
            self.advance(cur, cur.applied + 1);
            read += 1;
            if record.origin == self.id {
                continue; // published (and applied) by this instance
            }
            self.received.bump();
            if let Err(e) = self.apply(&record).await {
                // The hot tiers were purged before the error (the engine removes tier by tier);
                // what failed is a cold-tier request the purging instance made already.
                tracing::warn!(error = %e, "shared purges: applying a purge failed in a tier");
            }
        }
        if read > 0 {
            self.save_state(cur.applied).await?;
        }
        Ok(read)
    }

    /// Applies one purge through the engine (so fills in flight here lose their right to
    /// commit), as of the instant it was requested.
    async fn apply(&self, record: &Record) -> Result<(), crate::Error> {
        let cache = &self.cache;
        match &record.purge {
            Purge::Key(key) => replaying(record.at, cache.delete(key)).await,
            Purge::Prefix(prefix) => replaying(record.at, cache.purge_prefix(prefix))
                .await
                .map(drop),
            Purge::All => replaying(record.at, cache.purge_prefix("")).await.map(drop),
        }
    }

    /// The log was compacted past what this instance applied (or it starts without knowing
    /// what it applied): clear the hot tiers it cannot check, and read on from the checkpoint.
    async fn forget(&self, cur: &mut Cursor, cp: &Checkpoint) -> Result<(), PurgeError> {
        let mut cleared = false;
        for tier in 0..self.cache.tiers() {
            let Some(store) = self.cache.tier_store(tier) else {
                continue;
            };
            if store.name() == "object" || store.is_null() || store.is_empty() == Some(true) {
                continue;
            }
            self.cache
                .clear_tier(tier)
                .await
                .map_err(PurgeError::Apply)?;
            cleared = true;
        }
        if cleared {
            self.hot_clears.bump();
            tracing::warn!(
                "shared purges: purges since this instance last ran cannot be checked; \
                 hot tiers cleared"
            );
        }
        self.advance(cur, cp.head.max(cp.oldest.saturating_sub(1)));
        Ok(())
    }

    async fn checkpoint_or_create(&self) -> Result<Checkpoint, PurgeError> {
        for _ in 0..APPEND_ATTEMPTS {
            if let Some((cp, _)) = self.log.checkpoint().await? {
                return Ok(cp);
            }
            let first = Checkpoint {
                oldest: 1,
                ..Checkpoint::default()
            };
            if self.log.put_checkpoint(&first, None).await? {
                return Ok(first);
            }
        }
        Err(PurgeError::Contended {
            attempts: APPEND_ATTEMPTS,
        })
    }

    /// Checks the log was not compacted past this instance, and compacts it when due.
    async fn maintain_locked(&self, cur: &mut Cursor, force: bool) -> Result<(), PurgeError> {
        let Some((cp, version)) = self.log.checkpoint().await? else {
            return self.checkpoint_or_create().await.map(drop);
        };
        if cp.oldest > cur.applied + 1 {
            self.forget(cur, &cp).await?;
            return self.catch_up(cur).await.map(drop);
        }
        let now = SystemTime::now();
        let recent = cp
            .compacted_at
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age < self.compact_every);
        if recent && !force {
            return Ok(());
        }
        self.compact(cur, cp, version, now).await
    }

    /// Drops the entries older than the retention that this instance applied, after moving
    /// the checkpoint past them (with the prefix floors they carried). One instance wins the
    /// checkpoint swap; the others leave the log alone.
    async fn compact(
        &self,
        cur: &Cursor,
        cp: Checkpoint,
        version: object_store::UpdateVersion,
        now: SystemTime,
    ) -> Result<(), PurgeError> {
        let horizon = now
            .checked_sub(self.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut oldest = cp.oldest;
        let mut examined = 0;
        while oldest <= cur.applied && examined < COMPACT_BATCH {
            examined += 1;
            match self.log.read(oldest).await? {
                Some(r) if r.at >= horizon => break,
                _ => oldest += 1,
            }
        }
        let floors = &self.bucket.inner.floors;
        if let Some(ttl) = self.bucket.inner.ttl {
            floors.expire(ttl, now);
        }
        let next = Checkpoint {
            oldest,
            head: cur.applied.max(cp.head),
            compacted_at: Some(now),
            floors: floors.snapshot(),
        };
        if !self.log.put_checkpoint(&next, Some(&version)).await? {
            return Ok(());
        }
        for seq in cp.oldest..oldest {
            self.log.delete(seq).await?;
        }
        Ok(())
    }

    async fn read_state(&self) -> Result<Option<u64>, PurgeError> {
        let Some(path) = &self.state_file else {
            return Ok(None);
        };
        match tokio::fs::read_to_string(path).await {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PurgeError::State {
                path: path.clone(),
                source,
            }),
        }
    }

    /// Writes the cursor (temp file + rename, so a crash leaves the old value or the new one).
    async fn save_state(&self, seq: u64) -> Result<(), PurgeError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let res = async {
            tokio::fs::write(&tmp, format!("{seq}\n")).await?;
            tokio::fs::rename(&tmp, path).await
        };
        res.await.map_err(|source| PurgeError::State {
            path: path.clone(),
            source,
        })
    }
}
