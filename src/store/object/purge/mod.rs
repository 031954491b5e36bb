//! Purges shared by every instance over one bucket: [`SharedPurges`].
//!
//! A purge on one instance is appended to a log of small objects under the cache's prefix; every
//! instance polls the log and applies the purges it has not seen to its own tiers. Nothing but
//! the bucket is shared: no server to run, no instance to elect. Module map: `record` (the
//! objects' bytes), `log` (the requests on them), `sync` (polling, applying, compacting).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::BucketStore;
use crate::Cache;

mod log;
mod record;
mod sync;
#[cfg(test)]
mod tests;

pub use record::{MalformedLogObject, Purge};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Why a shared purge, or the purge log, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// A request on the purge log failed.
    #[error("purge log object {path}: {source}")]
    Log {
        /// The log object.
        path: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A purge log object is not one of ours, or is damaged.
    #[error("purge log object {path} is malformed")]
    MalformedLogObject {
        /// The log object.
        path: String,
        /// What was wrong.
        #[source]
        source: record::MalformedLogObject,
    },
    /// A request on the purge log did not finish in the store's `op_timeout`.
    #[error("purge log request timed out after {0:?}")]
    Timeout(Duration),
    /// Every sequence number tried was taken by other instances' purges.
    #[error("purge log append lost {attempts} times to other instances")]
    Contended {
        /// How many numbers were tried.
        attempts: u32,
    },
    /// This instance's engine could not apply a purge.
    #[error("applying a purge to this instance: {0}")]
    Apply(#[source] crate::Error),
    /// The state file (the last purge applied, kept across restarts) could not be used.
    #[error("purge state file {path}: {source}", path = path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one [`SharedPurges`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedPurgesStats {
    /// The sequence number of the last purge applied (or skipped as this instance's own).
    pub applied_seq: u64,
    /// Purges this instance wrote to the log.
    pub published: u64,
    /// Purges from other instances applied here.
    pub received: u64,
    /// Times the hot tiers were cleared because purges could not be checked (a start after
    /// the log's retention, or a stall longer than it).
    pub hot_clears: u64,
    /// Polls that failed (the next poll retries).
    pub poll_errors: u64,
}

/// Purges shared by every cache instance over one bucket.
///
/// Holds the instance's [`Cache`] and the [`BucketStore`] that is its cold tier. A purge through
/// it ([`purge_key`](Self::purge_key), [`purge_prefix`](Self::purge_prefix),
/// [`purge_all`](Self::purge_all)) is recorded in the bucket and applied here; a background task
/// polls the bucket every [`interval`](SharedPurgesBuilder::interval) (default 1 s) and applies
/// the other instances' purges to this instance's tiers, so a purge anywhere is a miss everywhere
/// within about one interval. A fill that started before a purge never stores its body again, on
/// any instance (see `docs/object-store.md`, *Running many instances*).
///
/// Cheap to clone; the poller stops when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use daramjwee::store::{BucketStore, MemStore, SharedPurges};
/// use daramjwee::Cache;
///
/// let bucket = BucketStore::from_url("memory:///cache")?.build()?; // s3://bucket/prefix in production
/// let cache = Cache::builder().hot(MemStore::new(64 << 20)).cold(bucket.clone()).build();
/// let purges = SharedPurges::builder(cache.clone(), bucket)
///     .interval(Duration::from_millis(500))
///     .start()
///     .await?;
/// purges.purge_prefix("http://example.com/assets/").await?; // every instance, within ~0.5 s
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SharedPurges {
    shared: Arc<sync::Shared>,
}

/// Configures and starts [`SharedPurges`].
#[derive(Debug)]
#[must_use]
pub struct SharedPurgesBuilder {
    cache: Cache,
    bucket: BucketStore,
    interval: Duration,
    retention: Duration,
    state_file: Option<PathBuf>,
}

impl SharedPurges {
    /// A builder for the shared purges of `cache`, whose cold tier is `bucket`.
    pub fn builder(cache: Cache, bucket: BucketStore) -> SharedPurgesBuilder {
        SharedPurgesBuilder {
            cache,
            bucket,
            interval: DEFAULT_INTERVAL,
            retention: DEFAULT_RETENTION,
            state_file: None,
        }
    }

    /// Purges one key on every instance. For the HTTP layer, `purge_key(&handle.key_for(url)?)`
    /// purges a URL with all its `Vary` variants: their marker is the URL's own entry, and
    /// without it the variants are unreachable.
    pub async fn purge_key(&self, key: &str) -> Result<(), PurgeError> {
        self.shared.publish(Purge::Key(key.to_owned())).await
    }

    /// Purges every key starting with `prefix` on every instance (with the default key, a path
    /// is `scheme://host/path/`, a host is `scheme://host/`).
    pub async fn purge_prefix(&self, prefix: &str) -> Result<(), PurgeError> {
        self.shared.publish(Purge::Prefix(prefix.to_owned())).await
    }

    /// Purges everything on every instance.
    pub async fn purge_all(&self) -> Result<(), PurgeError> {
        self.shared.publish(Purge::All).await
    }

    /// Applies the purges not seen yet now, without waiting for the next poll. Returns how
    /// many were read.
    pub async fn sync(&self) -> Result<u64, PurgeError> {
        self.shared.sync().await
    }

    /// Compacts the log now if it is due (normally done by the poller).
    pub async fn compact(&self) -> Result<(), PurgeError> {
        self.shared.maintain(true).await
    }

    /// This instance's counters.
    pub fn stats(&self) -> SharedPurgesStats {
        self.shared.stats()
    }

    /// Stops the poller. Purges through this handle still work; others' are no longer applied.
    pub fn shutdown(&self) {
        if let Some(task) = self.shared.poller.lock().take() {
            task.abort();
        }
    }
}

impl SharedPurgesBuilder {
    /// How often the log is polled for other instances' purges: the bound on how long a purge
    /// elsewhere can still be served here. Default 1 s. Each poll is one GET per instance.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long purges stay in the log. Default 15 minutes. An instance that was away longer
    /// (stopped, or unable to reach the bucket) cannot check what it missed and clears its hot
    /// tiers instead. Keep it above the longest restart you want to survive with a warm disk.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention.max(self.interval * 4);
        self
    }

    /// A file where the last purge applied is kept, so a restart resumes from it and keeps
    /// its hot tiers (a [`FileStore`](crate::store::FileStore) survives restarts). Without it,
    /// a start clears the hot tiers that are not empty.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Reads the log's checkpoint, catches up (or clears the hot tiers when it cannot) and
    /// starts the poller on the current tokio runtime.
    pub async fn start(self) -> Result<SharedPurges, PurgeError> {
        let shared = Arc::new(sync::Shared::new(
            self.cache,
            self.bucket,
            self.interval,
            self.retention,
            self.state_file,
        ));
        shared.start().await?;
        let task = tokio::spawn(poll_forever(Arc::downgrade(&shared), self.interval));
        *shared.poller.lock() = Some(task);
        Ok(SharedPurges { shared })
    }
}

/// The poller: holds the shared state weakly, so dropping the last handle ends it.
async fn poll_forever(shared: Weak<sync::Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.poll().await;
    }
}

/// A counter of [`SharedPurgesStats`].
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

type Poller = Mutex<Option<JoinHandle<()>>>;
