//! S3Fifo (stub: being written).
use super::EvictionPolicy;

/// S3Fifo eviction.
#[derive(Debug, Default)]
pub struct S3Fifo {}

impl S3Fifo {
    /// Creates the policy.
    pub fn new(_capacity: u64) -> Self {
        S3Fifo {}
    }
}

impl EvictionPolicy for S3Fifo {
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
