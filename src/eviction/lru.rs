//! Least-recently-used eviction.

use super::list::{IdMap, List, Slab, NIL};
use super::EvictionPolicy;

/// Per-entry data of [`Lru`].
#[derive(Debug, Clone, Copy)]
struct LruEntry {
    id: u64,
    weight: u64,
}

/// Least recently used: evicts the entry whose last insert or hit is oldest.
///
/// A hit moves the entry to the head of the list, so unlike [`S3Fifo`](super::S3Fifo) and
/// [`Sieve`](super::Sieve) it writes two or three list links per hit. It is here as the baseline
/// and for workloads dominated by recency.
#[derive(Debug, Default)]
pub struct Lru {
    slab: Slab<LruEntry>,
    list: List,
    index: IdMap,
    weight: u64,
}

impl Lru {
    /// Creates an empty policy. LRU needs no capacity: it only orders entries.
    pub fn new() -> Self {
        Lru::default()
    }
}

impl EvictionPolicy for Lru {
    fn insert(&mut self, id: u64, weight: u64) {
        if let Some(&i) = self.index.get(&id) {
            let entry = self.slab.get_mut(i);
            self.weight = self.weight - entry.weight + weight;
            entry.weight = weight;
            self.slab.unlink(&mut self.list, i);
            self.slab.push_head(&mut self.list, i);
            return;
        }
        let i = self.slab.alloc(LruEntry { id, weight });
        self.slab.push_head(&mut self.list, i);
        self.index.insert(id, i);
        self.weight += weight;
    }

    fn touch(&mut self, id: u64) {
        if let Some(&i) = self.index.get(&id) {
            if self.list.head != i {
                self.slab.unlink(&mut self.list, i);
                self.slab.push_head(&mut self.list, i);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.index.remove(&id) {
            self.slab.unlink(&mut self.list, i);
            self.weight -= self.slab.get(i).weight;
            self.slab.release(i);
        }
    }

    fn evict(&mut self) -> Option<u64> {
        let i = self.list.tail;
        if i == NIL {
            return None;
        }
        let LruEntry { id, weight } = *self.slab.get(i);
        self.slab.unlink(&mut self.list, i);
        self.slab.release(i);
        self.index.remove(&id);
        self.weight -= weight;
        Some(id)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn weight(&self) -> u64 {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::list::model;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lru_random_ops_keep_accounting_and_drain_exactly(ops in model::ops()) {
            model::check(Lru::new(), &ops)?;
        }

        #[test]
        fn lru_store_never_exceeds_its_byte_capacity(ops in model::ops(), cap in 0u64..2000) {
            model::check_bounded(Lru::new(), cap, &ops)?;
        }
    }

    fn drain(p: &mut impl EvictionPolicy) -> Vec<u64> {
        std::iter::from_fn(|| p.evict()).collect()
    }

    #[test]
    fn lru_evicts_least_recently_used_first() {
        // Insert 1,2,3,4 (recency, newest first: 4 3 2 1). Touch 1 -> 1 4 3 2.
        // Touch 3 -> 3 1 4 2. Eviction takes the oldest end: 2, 4, 1, 3.
        let mut p = Lru::new();
        for id in 1..=4 {
            p.insert(id, 10);
        }
        p.touch(1);
        p.touch(3);
        assert_eq!(drain(&mut p), vec![2, 4, 1, 3]);
        assert!(p.is_empty());
        assert_eq!(p.weight(), 0);
    }

    #[test]
    fn lru_reinsert_refreshes_recency_and_weight() {
        // 1,2,3 inserted; re-inserting 1 with a new weight makes it the newest: order 1 3 2.
        let mut p = Lru::new();
        p.insert(1, 5);
        p.insert(2, 7);
        p.insert(3, 11);
        p.insert(1, 100);
        assert_eq!(p.len(), 3);
        assert_eq!(p.weight(), 118);
        assert_eq!(p.evict(), Some(2));
        assert_eq!(p.weight(), 111);
        assert_eq!(drain(&mut p), vec![3, 1]);
    }

    #[test]
    fn lru_remove_and_unknown_ids_keep_accounting() {
        let mut p = Lru::new();
        p.insert(1, 3);
        p.insert(2, 4);
        p.touch(99);
        p.remove(99);
        p.remove(1);
        p.remove(1);
        assert_eq!((p.len(), p.weight()), (1, 4));
        assert_eq!(drain(&mut p), vec![2]);
        assert_eq!(p.evict(), None);
    }

    #[test]
    fn slab_reuses_freed_slots() {
        let mut p = Lru::new();
        for round in 0..10u64 {
            for id in 0..100 {
                p.insert(round * 1000 + id, 1);
            }
            while p.evict().is_some() {}
        }
        assert!(p.slab.slots() <= 100);
    }
}
