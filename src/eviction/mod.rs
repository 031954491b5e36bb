//! Eviction policies: which entry a byte-bounded store drops when it needs room.
//!
//! A policy sees only opaque 64-bit entry ids, their weights in bytes, and accesses; it never
//! sees keys or bodies, and it does no I/O. Stores own the index and call the policy under
//! their own (per-shard) lock, so a policy needs no synchronisation of its own.
//!
//! | policy | idea |
//! |---|---|
//! | [`Lru`] | least recently used |
//! | [`S3Fifo`] | small FIFO + main FIFO + ghost queue (Yang et al., SOSP '23) |
//! | [`Sieve`] | one FIFO with a moving hand and visited bits (Zhang et al., NSDI '24) |
//! | [`TinyLfu`] | LRU window + segmented LRU, frequency-sketch admission (W-TinyLFU) |

mod list;
mod lru;
mod s3fifo;
mod sieve;
mod tinylfu;

use std::fmt::Debug;
use std::sync::Arc;

pub use lru::Lru;
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;
pub use tinylfu::TinyLfu;

/// A byte-weighted eviction policy.
///
/// The store calls [`insert`](EvictionPolicy::insert) when an entry is committed,
/// [`touch`](EvictionPolicy::touch) on every hit, [`remove`](EvictionPolicy::remove) when it
/// deletes an entry itself, and [`evict`](EvictionPolicy::evict) while it is over capacity.
/// Ids passed to `touch` and `remove` that the policy does not track are ignored.
pub trait EvictionPolicy: Debug + Send + 'static {
    /// Starts tracking `id` with `weight` bytes. Inserting a tracked id updates its weight.
    fn insert(&mut self, id: u64, weight: u64);
    /// Records a hit on `id`.
    fn touch(&mut self, id: u64);
    /// Stops tracking `id`.
    fn remove(&mut self, id: u64);
    /// Chooses a victim, stops tracking it and returns it; `None` when nothing is tracked.
    fn evict(&mut self) -> Option<u64>;
    /// Number of tracked ids.
    fn len(&self) -> usize;
    /// Whether nothing is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sum of the weights of tracked ids.
    fn weight(&self) -> u64;
}

/// Which built-in policy a store uses, or a factory for your own.
///
/// A store creates one policy instance per shard, passing each the shard's byte capacity.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// S3-FIFO (the default).
    #[default]
    S3Fifo,
    /// SIEVE.
    Sieve,
    /// W-TinyLFU: LRU window, segmented LRU main region, count-min sketch admission.
    TinyLfu,
    /// A user policy, built from the shard's capacity in bytes.
    Custom(Arc<dyn Fn(u64) -> Box<dyn EvictionPolicy> + Send + Sync>),
}

impl PolicyKind {
    /// Builds a policy for a store (or shard) of `capacity` bytes.
    pub fn build(&self, capacity: u64) -> Box<dyn EvictionPolicy> {
        match self {
            PolicyKind::Lru => Box::new(Lru::new()),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity)),
            PolicyKind::Sieve => Box::new(Sieve::new()),
            PolicyKind::TinyLfu => Box::new(TinyLfu::new(capacity)),
            PolicyKind::Custom(f) => f(capacity),
        }
    }

    /// The policy's name, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::Sieve => "sieve",
            PolicyKind::TinyLfu => "tinylfu",
            PolicyKind::Custom(_) => "custom",
        }
    }
}

impl Debug for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lru" => Ok(PolicyKind::Lru),
            "s3fifo" | "s3-fifo" => Ok(PolicyKind::S3Fifo),
            "sieve" => Ok(PolicyKind::Sieve),
            "tinylfu" | "w-tinylfu" => Ok(PolicyKind::TinyLfu),
            other => Err(format!(
                "unknown eviction policy {other:?} (expected lru, s3fifo, sieve or tinylfu)"
            )),
        }
    }
}
