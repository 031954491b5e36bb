//! Lru (stub: being written).
use super::EvictionPolicy;

/// Lru eviction.
#[derive(Debug, Default)]
pub struct Lru {}

impl Lru {
    /// Creates the policy.
    pub fn new() -> Self {
        Lru {}
    }
}

impl EvictionPolicy for Lru {
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
