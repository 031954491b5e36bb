//! SIEVE eviction (Zhang et al., "SIEVE is Simpler than LRU", NSDI '24).
//!
//! One FIFO queue, a visited bit per entry and a hand. A hit only sets the bit, so reads never
//! reorder the queue. To evict, the hand walks from the tail (oldest) towards the head (newest),
//! clearing visited bits, and evicts the first unvisited entry; it then stays where it stopped,
//! and wraps to the tail when it passes the head. Weights are only accounted, never used to
//! choose: the store evicts again while it is still over its byte capacity.
//! This module must never reorder entries on a hit.

use super::list::{IdMap, List, Slab, NIL};
use super::EvictionPolicy;

#[derive(Debug, Clone, Copy)]
struct SieveEntry {
    id: u64,
    weight: u64,
    visited: bool,
}

/// SIEVE: a FIFO with a moving hand and one visited bit per entry.
///
/// Hits cost one map lookup and one bit write. New entries that are never hit again are
/// evicted after one pass of the hand, which makes SIEVE resist scans better than LRU.
#[derive(Debug, Default)]
pub struct Sieve {
    slab: Slab<SieveEntry>,
    list: List,
    index: IdMap,
    /// Next candidate for eviction; [`NIL`] means "start from the tail".
    hand: usize,
    weight: u64,
}

impl Sieve {
    /// Creates an empty policy. SIEVE needs no capacity: it only orders entries.
    pub fn new() -> Self {
        Sieve {
            hand: NIL,
            ..Sieve::default()
        }
    }

    fn unlink(&mut self, i: usize) {
        if self.hand == i {
            self.hand = self.slab.newer(i);
        }
        self.slab.unlink(&mut self.list, i);
    }
}

impl EvictionPolicy for Sieve {
    fn insert(&mut self, id: u64, weight: u64) {
        if let Some(&i) = self.index.get(&id) {
            // A re-insert is a write to a live entry: account the new weight and count it as a hit.
            let entry = self.slab.get_mut(i);
            self.weight = self.weight - entry.weight + weight;
            entry.weight = weight;
            entry.visited = true;
            return;
        }
        let i = self.slab.alloc(SieveEntry {
            id,
            weight,
            visited: false,
        });
        self.slab.push_head(&mut self.list, i);
        self.index.insert(id, i);
        self.weight += weight;
    }

    fn touch(&mut self, id: u64) {
        if let Some(&i) = self.index.get(&id) {
            self.slab.get_mut(i).visited = true;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.index.remove(&id) {
            self.unlink(i);
            self.weight -= self.slab.get(i).weight;
            self.slab.release(i);
        }
    }

    fn evict(&mut self) -> Option<u64> {
        if self.list.len == 0 {
            return None;
        }
        let mut i = if self.hand == NIL {
            self.list.tail
        } else {
            self.hand
        };
        // Terminates within one lap plus one step: every visited bit passed is cleared.
        loop {
            let entry = self.slab.get_mut(i);
            if !entry.visited {
                break;
            }
            entry.visited = false;
            i = match self.slab.newer(i) {
                NIL => self.list.tail,
                newer => newer,
            };
        }
        let SieveEntry { id, weight, .. } = *self.slab.get(i);
        self.hand = self.slab.newer(i);
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
        fn sieve_random_ops_keep_accounting_and_drain_exactly(ops in model::ops()) {
            model::check(Sieve::new(), &ops)?;
        }

        #[test]
        fn sieve_store_never_exceeds_its_byte_capacity(ops in model::ops(), cap in 0u64..2000) {
            model::check_bounded(Sieve::new(), cap, &ops)?;
        }
    }

    fn drain(p: &mut impl EvictionPolicy) -> Vec<u64> {
        std::iter::from_fn(|| p.evict()).collect()
    }

    #[test]
    fn sieve_hand_skips_visited_and_stays_put() {
        // Queue, tail (oldest) first: 1 2 3 4 5. Visited: 1, 2, 4.
        // evict #1: hand starts at tail. 1 visited -> clear, 2 visited -> clear, 3 unvisited:
        //   evict 3; hand moves to 4 (its newer neighbour).
        // evict #2: 4 visited -> clear, 5 unvisited: evict 5; hand = NIL (5 was the head).
        // evict #3: hand wraps to tail: 1 (cleared earlier) is evicted, hand -> 2.
        // Then 2, then 4 (both cleared).
        let mut p = Sieve::new();
        for id in 1..=5 {
            p.insert(id, 1);
        }
        p.touch(1);
        p.touch(2);
        p.touch(4);
        assert_eq!(drain(&mut p), vec![3, 5, 1, 2, 4]);
    }

    #[test]
    fn sieve_new_entries_go_behind_the_hand() {
        // Queue 1 2 3 (tail first), 1 and 2 visited. evict -> clears 1, 2, evicts 3; hand=NIL.
        // Insert 4 at the head: 1 2 4. Touch 1 again. Next evict wraps to the tail:
        // 1 visited -> clear, 2 unvisited -> evict 2. Hand now at 4: evict 4, then 1.
        let mut p = Sieve::new();
        for id in 1..=3 {
            p.insert(id, 1);
        }
        p.touch(1);
        p.touch(2);
        assert_eq!(p.evict(), Some(3));
        p.insert(4, 1);
        p.touch(1);
        assert_eq!(drain(&mut p), vec![2, 4, 1]);
    }

    #[test]
    fn sieve_remove_under_the_hand_moves_the_hand() {
        // Queue 1 2 3 4; 1 visited. evict: clear 1, evict 2, hand -> 3.
        // Removing 3 (under the hand) must move the hand to 4, not leave it dangling:
        // next evict takes 4, then wraps to 1.
        let mut p = Sieve::new();
        for id in 1..=4 {
            p.insert(id, 2);
        }
        p.touch(1);
        assert_eq!(p.evict(), Some(2));
        p.remove(3);
        assert_eq!((p.len(), p.weight()), (2, 4));
        assert_eq!(drain(&mut p), vec![4, 1]);
    }

    #[test]
    fn sieve_all_visited_evicts_oldest_after_one_lap() {
        let mut p = Sieve::new();
        for id in 1..=3 {
            p.insert(id, 1);
            p.touch(id);
        }
        assert_eq!(p.evict(), Some(1));
    }

    #[test]
    fn sieve_reinsert_updates_weight_and_marks_visited() {
        let mut p = Sieve::new();
        p.insert(1, 10);
        p.insert(2, 20);
        p.insert(1, 15);
        assert_eq!((p.len(), p.weight()), (2, 35));
        // 1 is visited through the re-insert, so 2 goes first.
        assert_eq!(drain(&mut p), vec![2, 1]);
        assert_eq!(p.weight(), 0);
    }
}
