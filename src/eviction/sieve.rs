//! Sieve (stub: being written).
use super::EvictionPolicy;

/// Sieve eviction.
#[derive(Debug, Default)]
pub struct Sieve {}

impl Sieve {
    /// Creates the policy.
    pub fn new() -> Self {
        Sieve {}
    }
}

impl EvictionPolicy for Sieve {
    fn insert(&mut self, _id: u64, _weight: u64) {}
    fn touch(&mut self, _id: u64) {}
    fn remove(&mut self, _id: u64) {}
    fn evict(&mut self) -> Option<u64> {
        None
    }
    fn len(&self) -> usize {
        0
    }
    fn weight(&self) -> u64 {
        0
    }
}
