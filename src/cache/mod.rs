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
mod fill;
pub(crate) mod flight;
pub(crate) mod keys;
mod lookup;
mod ops;
mod place;
mod refresh;
mod run;
mod stats;
mod tier;
mod types;
mod write;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use builder::{CacheBuilder, ColdFill, Freshness, Promotion};
pub use fetcher::{Fetched, Fetcher, Origin, Passthrough};
pub use stats::CacheStats;
pub(crate) use types::{Failed, Found};
pub use types::{GetOptions, Judge, Lookup, Outcome, Storing, Verdict};
pub use write::CacheWriter;

use self::builder::Config;
use self::flight::RetainBudget;
use self::keys::KeyTable;
use self::lookup::Probation;
use self::stats::Stats;
use self::tier::Tier;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::WorkerPool;

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

    /// The name given to [`CacheBuilder::name`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

/// A short, stable digest of a key for logs and spans: keys may be long or sensitive, so
/// they are never logged whole.
fn key_hash(key: &str) -> String {
    format!("{:08x}", crc32fast::hash(key.as_bytes()))
}
