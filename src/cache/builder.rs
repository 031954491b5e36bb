//! [`CacheBuilder`]: configuration of the engine.

use std::sync::Arc;
use std::time::Duration;

use super::lookup::Probation;
use super::stats::Stats;
use super::tier::Tier;
use super::{Cache, Inner};
use crate::cache::flight::RetainBudget;
use crate::cache::keys::KeyTable;
use crate::metrics::Metrics;
use crate::store::{MemStore, Store};
use crate::worker::WorkerPool;

/// How the tiers below the hot tier are filled on a miss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColdFill {
    /// After the hot tier committed the entry, a background task copies it down (the default).
    /// Entries the hot tier refused (too large) are not copied: use `WriteThrough` for those.
    #[default]
    Background,
    /// The fill writes every tier as the body streams, and commits them together.
    WriteThrough,
}

/// When an entry found in a lower tier is copied up into the tiers above it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Promotion {
    /// On every lower-tier hit (the default).
    #[default]
    Always,
    /// On the second hit within the probation window, so one-hit wonders do not pollute the hot
    /// tier. The window remembers up to this many keys.
    SecondHit(usize),
}

/// Per-tier freshness: how long an entry without an explicit `fresh_until` stays fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Freshness {
    /// TTL of positive entries (`None`: never stale unless their metadata says so).
    pub positive: Option<Duration>,
    /// TTL of negative entries (`None`: the same as `positive`).
    pub negative: Option<Duration>,
}

impl Freshness {
    /// Positive and negative TTLs.
    pub fn new(positive: Option<Duration>, negative: Option<Duration>) -> Self {
        Freshness { positive, negative }
    }
}

/// Builds a [`Cache`].
///
/// Every value is accepted; none makes a request panic:
///
/// - **Durations** (TTLs, the stale window, `lock_age`, `lock_wait`, timeouts) longer than 100
///   years are clamped to 100 years, which for a cache means "for ever" (`Duration::MAX`
///   included). Zero means what it says: a zero TTL makes entries stale at once, a zero
///   `lock_age` never lets a request join another's fill, a zero `lock_wait` makes followers
///   fetch on their own at once, and a zero timeout fails every store operation or origin
///   read that is not ready the moment it is polled (the cache then fails open).
/// - **Sizes**: `stream_window` and `workers`' concurrency are at least 1; a zero queue drops
///   all background work (counted); zero retain budgets keep nothing for late followers.
///
/// ```
/// use std::time::Duration;
/// use daramjwee::{Cache, store::MemStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder()
///     .hot(MemStore::new(64 << 20))
///     .default_ttl(Duration::from_secs(60))
///     .negative_ttl(Duration::from_secs(5))
///     .workers(4, 256)
///     .build();
/// # let _ = cache; }
/// ```
#[derive(Debug)]
#[must_use]
pub struct CacheBuilder {
    tiers: Vec<(Arc<dyn Store>, Option<Freshness>)>,
    /// A pool given by [`worker_pool`](Self::worker_pool), used instead of a private one.
    pool: Option<WorkerPool>,
    pub(super) cfg: Config,
}

/// Engine settings, filled in by [`CacheBuilder`].
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub name: String,
    pub freshness: Freshness,
    pub serve_stale_for: Option<Duration>,
    pub cold_fill: ColdFill,
    pub promotion: Promotion,
    pub workers: (usize, usize),
    pub lock_age: Duration,
    pub lock_wait: Duration,
    pub op_timeout: Duration,
    pub idle_timeout: Duration,
    pub window: u64,
    pub retain: u64,
    pub retain_total: u64,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            tiers: Vec::new(),
            pool: None,
            cfg: Config {
                name: "default".to_owned(),
                freshness: Freshness::default(),
                serve_stale_for: None,
                cold_fill: ColdFill::default(),
                promotion: Promotion::default(),
                workers: (4, 1024),
                lock_age: Duration::from_secs(30),
                lock_wait: Duration::from_secs(10),
                op_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(30),
                window: 1 << 20,
                retain: 32 << 20,
                retain_total: 128 << 20,
            },
        }
    }
}

impl CacheBuilder {
    /// A builder with defaults: no tiers yet (a 64 MiB [`MemStore`] hot tier if none is given).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the hot (first) tier. Replaces a hot tier set before.
    pub fn hot(mut self, store: impl Store) -> Self {
        self.set_tier(0, Arc::new(store));
        self
    }

    /// Sets the cold (second) tier. Replaces a cold tier set before.
    pub fn cold(mut self, store: impl Store) -> Self {
        if self.tiers.is_empty() {
            self.tiers
                .push((Arc::new(MemStore::new(DEFAULT_HOT_BYTES)), None));
        }
        self.set_tier(1, Arc::new(store));
        self
    }

    /// Appends a tier below the existing ones, with its own freshness (or the engine's).
    pub fn tier(mut self, store: Arc<dyn Store>, freshness: Option<Freshness>) -> Self {
        self.tiers.push((store, freshness));
        self
    }

    fn set_tier(&mut self, i: usize, store: Arc<dyn Store>) {
        if i < self.tiers.len() {
            self.tiers[i].0 = store;
        } else {
            self.tiers.push((store, None));
        }
    }

    /// Names the cache in logs and in the `cache` label of its metrics (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }

    /// TTL of positive entries whose metadata has no `fresh_until` (default: never stale).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.cfg.freshness.positive = Some(ttl);
        self
    }

    /// TTL of negative entries whose metadata has no `fresh_until`.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.cfg.freshness.negative = Some(ttl);
        self
    }

    /// How long after it went stale an entry is still served while a background refresh runs.
    /// `None` (the default) serves stale entries for as long as they are stored, like the Go
    /// daramjwee; entries can override it with [`Metadata::stale_for`](crate::Metadata).
    pub fn serve_stale_for(mut self, window: Option<Duration>) -> Self {
        self.cfg.serve_stale_for = window;
        self
    }

    /// How lower tiers are filled (default [`ColdFill::Background`]).
    pub fn cold_fill(mut self, mode: ColdFill) -> Self {
        self.cfg.cold_fill = mode;
        self
    }

    /// When lower-tier hits are promoted (default [`Promotion::Always`]).
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.cfg.promotion = promotion;
        self
    }

    /// Background pool: at most `concurrency` refreshes and cold copies run at once, and at most
    /// `queue` wait; more are dropped and counted (default 4 and 1024). The pool is the
    /// cache's own; it replaces a pool given by [`worker_pool`](Self::worker_pool) before.
    pub fn workers(mut self, concurrency: usize, queue: usize) -> Self {
        self.cfg.workers = (concurrency.max(1), queue);
        self.pool = None;
        self
    }

    /// Runs background work on `pool` instead of a pool of the cache's own, typically a group
    /// of a [`WorkerRuntime`](crate::WorkerRuntime) that several caches share by weight.
    /// Replaces [`workers`](Self::workers) set before.
    ///
    /// [`Cache::close`] closes the pool, so give each cache its own group.
    ///
    /// ```
    /// use daramjwee::{Cache, WorkerRuntime};
    ///
    /// let runtime = WorkerRuntime::new(8);
    /// let images = Cache::builder().name("images").worker_pool(runtime.group(3, 1024)).build();
    /// let api = Cache::builder().name("api").worker_pool(runtime.group(1, 256)).build();
    /// # let _ = (images, api);
    /// ```
    pub fn worker_pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// A fill older than this is no longer joined by new requests (default 30 s), so a stuck
    /// fill cannot hold a key.
    pub fn lock_age(mut self, age: Duration) -> Self {
        self.cfg.lock_age = age;
        self
    }

    /// How long a follower waits for the fill's response head before fetching on its own
    /// (default 10 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.cfg.lock_wait = wait;
        self
    }

    /// Time limit of each store operation (default 10 s). A store that exceeds it is treated as
    /// failed for that operation: reads miss, writes are dropped.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.op_timeout = timeout;
        self
    }

    /// Longest wait for the origin's response or its next body chunk during a fill
    /// (default 30 s); past it the fill fails and stores nothing.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.idle_timeout = timeout;
        self
    }

    /// Bytes a fill may run ahead of its slowest reader (default 1 MiB).
    pub fn stream_window(mut self, bytes: u64) -> Self {
        self.cfg.window = bytes.max(1);
        self
    }

    /// Bytes of a fill kept from its start so late followers can join it while it streams
    /// (default 32 MiB). While a fill's body fits, every follower streams it from byte 0 and
    /// the fill runs at the origin's pace; a larger body is no longer kept whole (bounded by
    /// [`stream_window`](Self::stream_window) instead), and followers arriving after its start
    /// was dropped wait for the fill to be stored.
    pub fn follower_retain(mut self, bytes: u64) -> Self {
        self.cfg.retain = bytes;
        self
    }

    /// Bytes all fills may keep from their starts together (default 128 MiB): the bound on
    /// [`follower_retain`](Self::follower_retain) memory when many large fills run at once. A
    /// fill that would go over it stops retaining, as a body over `follower_retain` does.
    pub fn follower_retain_total(mut self, bytes: u64) -> Self {
        self.cfg.retain_total = bytes;
        self
    }

    /// Builds the cache.
    pub fn build(mut self) -> Cache {
        if self.tiers.is_empty() {
            self.tiers
                .push((Arc::new(MemStore::new(DEFAULT_HOT_BYTES)), None));
        }
        let cfg = self.cfg.saturated();
        let workers = self
            .pool
            .unwrap_or_else(|| WorkerPool::new(cfg.workers.0, cfg.workers.1));
        let tiers: Box<[Tier]> = self
            .tiers
            .into_iter()
            .map(|(store, freshness)| Tier {
                store,
                freshness: freshness.map_or(cfg.freshness, Freshness::saturated),
            })
            .collect();
        let probation = match cfg.promotion {
            Promotion::SecondHit(n) => Some(Probation::new(n)),
            Promotion::Always => None,
        };
        let names: Vec<&'static str> = tiers.iter().map(|t| t.store.name()).collect();
        Cache {
            inner: Arc::new(Inner {
                name: cfg.name.clone(),
                metrics: Metrics::new(&cfg.name, &names),
                stats: Stats::new(tiers.len()),
                tiers,
                keys: KeyTable::new(),
                workers,
                probation,
                closed: Default::default(),
                retain_budget: RetainBudget::new(cfg.retain_total),
                cfg,
            }),
        }
    }
}

const DEFAULT_HOT_BYTES: u64 = 64 << 20;

/// The longest duration the engine is configured with. Longer settings mean "for ever" and are
/// clamped to it, so the engine's `Instant` and `SystemTime` arithmetic (deadlines, the stale
/// window added to an expiry at most [`far_future`](crate::entry::far_future)) cannot
/// overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Config {
    /// The configuration with every duration clamped to [`LONGEST`].
    fn saturated(mut self) -> Self {
        self.freshness = self.freshness.saturated();
        self.serve_stale_for = self.serve_stale_for.map(|d| d.min(LONGEST));
        for d in [
            &mut self.lock_age,
            &mut self.lock_wait,
            &mut self.op_timeout,
            &mut self.idle_timeout,
        ] {
            *d = (*d).min(LONGEST);
        }
        self
    }
}

impl Freshness {
    /// Both TTLs clamped to [`LONGEST`].
    fn saturated(self) -> Self {
        Freshness {
            positive: self.positive.map(|d| d.min(LONGEST)),
            negative: self.negative.map(|d| d.min(LONGEST)),
        }
    }
}
