//! S3-FIFO eviction (Yang et al., "FIFO queues are all you need for cache eviction", SOSP '23).
//!
//! Three FIFO queues: a small queue S holding about 10% of the capacity in bytes, where new
//! entries go; a main queue M for entries that proved themselves; and a ghost queue G that
//! remembers only the ids (and weights) of entries recently evicted from S. An entry
//! re-inserted while its id is in G goes straight to M. Each live entry has a 2-bit access
//! counter (capped at 3) that a hit increments; hits never reorder a queue.
//!
//! Eviction, one victim per call (the store calls again while it is over capacity):
//! - if S holds more than its share of bytes (or M is empty), the tail of S is examined: an
//!   entry hit at least once since insertion moves to the head of M and the next tail is
//!   examined; otherwise it is evicted and its id recorded in G;
//! - else the tail of M is examined: an entry with a non-zero counter is reinserted at the head
//!   of M with the counter decremented; otherwise it is evicted.
//!
//! G is bounded by the main queue's byte share, counting each ghost as at least one byte, so its
//! memory stays proportional to what the cache can hold. This module must never let a ghost id
//! count towards `len()` or `weight()`.

use std::collections::VecDeque;

use super::list::{IdHasherBuilder, List, Slab, NIL};
use super::EvictionPolicy;
use std::collections::HashMap;

/// Counter ceiling: two bits per entry, as in the paper.
const MAX_FREQ: u8 = 3;
/// Hits an entry needs while in S to be moved to M instead of evicted.
///
/// The paper's prose says "accessed at least once"; its listing says `freq > 1`. The replay
/// harness (`examples/replay.rs`, see docs/eviction.md) chose 1.
const MOVE_TO_MAIN_THRESHOLD: u8 = 1;
/// Share of the capacity, in tenths, that the small queue may hold.
const SMALL_TENTHS: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

#[derive(Debug, Clone, Copy)]
struct S3Entry {
    id: u64,
    weight: u64,
    freq: u8,
    queue: Queue,
}

/// Remembered ids of entries recently evicted from the small queue.
///
/// Removal on re-insert is lazy: the map forgets the id, and its stale queue record is
/// dropped when it reaches the front. Stale records still count towards `bytes`, which keeps
/// the queue's length bounded whatever the pattern of re-inserts.
#[derive(Debug, Default)]
struct Ghost {
    /// `(id, accounted bytes, sequence number)`, oldest first.
    fifo: VecDeque<(u64, u64, u64)>,
    /// Id to the sequence number of its newest record.
    live: HashMap<u64, u64, IdHasherBuilder>,
    bytes: u64,
    next_seq: u64,
}

impl Ghost {
    fn push(&mut self, id: u64, weight: u64, limit: u64) {
        let bytes = weight.max(1);
        if bytes > limit {
            return;
        }
        while self.bytes + bytes > limit {
            let Some((old, old_bytes, seq)) = self.fifo.pop_front() else {
                break;
            };
            self.bytes -= old_bytes;
            if self.live.get(&old) == Some(&seq) {
                self.live.remove(&old);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.fifo.push_back((id, bytes, seq));
        self.live.insert(id, seq);
        self.bytes += bytes;
    }

    /// Forgets `id`, returning whether it was remembered.
    fn take(&mut self, id: u64) -> bool {
        self.live.remove(&id).is_some()
    }
}

/// S3-FIFO: small, main and ghost FIFO queues with 2-bit access counters.
///
/// Built with the store's (or shard's) capacity in bytes, which sizes the small queue (10%)
/// and the ghost queue (90%). Hits cost one map lookup and one counter increment.
#[derive(Debug)]
pub struct S3Fifo {
    slab: Slab<S3Entry>,
    small: List,
    main: List,
    index: HashMap<u64, usize, IdHasherBuilder>,
    ghost: Ghost,
    small_weight: u64,
    main_weight: u64,
    small_target: u64,
    ghost_limit: u64,
}

impl S3Fifo {
    /// Creates an empty policy for a store of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        let small_target = capacity / 10 * SMALL_TENTHS;
        S3Fifo {
            slab: Slab::default(),
            small: List::default(),
            main: List::default(),
            index: HashMap::default(),
            ghost: Ghost::default(),
            small_weight: 0,
            main_weight: 0,
            small_target,
            ghost_limit: capacity - small_target,
        }
    }

    fn list_mut(&mut self, q: Queue) -> (&mut Slab<S3Entry>, &mut List) {
        match q {
            Queue::Small => (&mut self.slab, &mut self.small),
            Queue::Main => (&mut self.slab, &mut self.main),
        }
    }

    fn add_weight(&mut self, q: Queue, w: u64) {
        match q {
            Queue::Small => self.small_weight += w,
            Queue::Main => self.main_weight += w,
        }
    }

    fn sub_weight(&mut self, q: Queue, w: u64) {
        match q {
            Queue::Small => self.small_weight -= w,
            Queue::Main => self.main_weight -= w,
        }
    }

    /// Unlinks slot `i` from its queue and frees it; the caller handles the index map.
    fn drop_slot(&mut self, i: usize) -> S3Entry {
        let entry = *self.slab.get(i);
        let (slab, list) = self.list_mut(entry.queue);
        slab.unlink(list, i);
        slab.release(i);
        self.sub_weight(entry.queue, entry.weight);
        entry
    }

    /// Evicts from the small queue's tail, promoting hit entries to main on the way.
    /// `None` once the small queue is empty.
    fn evict_small(&mut self) -> Option<u64> {
        loop {
            let i = self.small.tail;
            if i == NIL {
                return None;
            }
            let entry = *self.slab.get(i);
            if entry.freq >= MOVE_TO_MAIN_THRESHOLD {
                self.slab.unlink(&mut self.small, i);
                self.small_weight -= entry.weight;
                let moved = self.slab.get_mut(i);
                moved.queue = Queue::Main;
                moved.freq = 0;
                self.slab.push_head(&mut self.main, i);
                self.main_weight += entry.weight;
                continue;
            }
            self.drop_slot(i);
            self.index.remove(&entry.id);
            self.ghost.push(entry.id, entry.weight, self.ghost_limit);
            return Some(entry.id);
        }
    }

    /// Evicts from the main queue's tail, giving entries with credit another lap.
    /// `None` only when the main queue is empty.
    fn evict_main(&mut self) -> Option<u64> {
        // Terminates: each reinsertion spends one unit of a counter, and counters only grow on hits.
        loop {
            let i = self.main.tail;
            if i == NIL {
                return None;
            }
            let entry = self.slab.get_mut(i);
            if entry.freq > 0 {
                entry.freq -= 1;
                self.slab.unlink(&mut self.main, i);
                self.slab.push_head(&mut self.main, i);
                continue;
            }
            let entry = self.drop_slot(i);
            self.index.remove(&entry.id);
            return Some(entry.id);
        }
    }
}

impl EvictionPolicy for S3Fifo {
    fn insert(&mut self, id: u64, weight: u64) {
        if let Some(&i) = self.index.get(&id) {
            // A write to a live entry: keep its place, account the new weight, count a hit.
            let entry = *self.slab.get(i);
            self.sub_weight(entry.queue, entry.weight);
            self.add_weight(entry.queue, weight);
            let e = self.slab.get_mut(i);
            e.weight = weight;
            e.freq = (e.freq + 1).min(MAX_FREQ);
            return;
        }
        let queue = if self.ghost.take(id) {
            Queue::Main
        } else {
            Queue::Small
        };
        let i = self.slab.alloc(S3Entry {
            id,
            weight,
            freq: 0,
            queue,
        });
        let (slab, list) = self.list_mut(queue);
        slab.push_head(list, i);
        self.add_weight(queue, weight);
        self.index.insert(id, i);
    }

    fn touch(&mut self, id: u64) {
        if let Some(&i) = self.index.get(&id) {
            let e = self.slab.get_mut(i);
            e.freq = (e.freq + 1).min(MAX_FREQ);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.index.remove(&id) {
            self.drop_slot(i);
        }
    }

    fn evict(&mut self) -> Option<u64> {
        if self.small_weight > self.small_target || self.main.len == 0 {
            if let Some(id) = self.evict_small() {
                return Some(id);
            }
        }
        self.evict_main()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn weight(&self) -> u64 {
        self.small_weight + self.main_weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::list::model;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn s3fifo_random_ops_keep_accounting_and_drain_exactly(ops in model::ops(), cap in 0u64..2000) {
            model::check(S3Fifo::new(cap), &ops)?;
        }

        #[test]
        fn s3fifo_store_never_exceeds_its_byte_capacity(ops in model::ops(), cap in 0u64..2000) {
            model::check_bounded(S3Fifo::new(cap), cap, &ops)?;
        }
    }

    fn drain(p: &mut impl EvictionPolicy) -> Vec<u64> {
        std::iter::from_fn(|| p.evict()).collect()
    }

    #[test]
    fn s3fifo_one_hit_wonders_leave_from_small_first() {
        // Capacity 100 bytes: small target 10. Insert 1..=5 (weight 10 each) into S; S = 50 > 10.
        // Touch 2 and 4. evict #1: tail of S is 1 (freq 0) -> evicted (to ghost).
        // evict #2: S = 40 > 10: tail 2 has freq 1 -> moves to M (freq reset); 3 -> evicted.
        // evict #3: S = 20 > 10: tail 4 -> moves to M; 5 -> evicted. S empty.
        // evict #4: S = 0, M = [2, 4] (tail first), both freq 0: 2 then 4.
        let mut p = S3Fifo::new(100);
        for id in 1..=5 {
            p.insert(id, 10);
        }
        p.touch(2);
        p.touch(4);
        assert_eq!(drain(&mut p), vec![1, 3, 5, 2, 4]);
    }

    #[test]
    fn s3fifo_ghost_hit_inserts_into_main() {
        // Capacity 100: S target 10. Insert 1, 2 (weight 10). evict -> 1 (S = 20 > 10, freq 0),
        // 1 goes to ghost. Re-insert 1: it is in ghost, so it goes to M.
        // Now S = [2] (10 bytes, not over target) and M = [1]: evict takes M's tail = 1 first,
        // even though 2 is older, then 2 from S once M is empty.
        let mut p = S3Fifo::new(100);
        p.insert(1, 10);
        p.insert(2, 10);
        assert_eq!(p.evict(), Some(1));
        p.insert(1, 10);
        assert_eq!(p.slab.get(p.index[&1]).queue, Queue::Main);
        assert_eq!(drain(&mut p), vec![1, 2]);
    }

    #[test]
    fn s3fifo_main_reinserts_while_counter_lasts() {
        // Capacity 100. Put 1, 2, 3 in M via the ghost (insert, evict, re-insert).
        // M (tail first) = 1 2 3. Touch 1 twice (freq 2), 2 once (freq 1).
        // evict: 1 freq 2 -> 1, to head: 2 3 1. 2 freq 1 -> 0, to head: 3 1 2. 3 freq 0 -> evict 3.
        // evict: 1 freq 1 -> 0, to head: 2 1. 2 freq 0 -> evict 2. Then 1.
        let mut p = S3Fifo::new(100);
        for id in 1..=3 {
            p.insert(id, 10);
        }
        p.insert(100, 80); // S = 110 > 10: forces the three out through S.
        assert_eq!(p.evict(), Some(1));
        assert_eq!(p.evict(), Some(2));
        assert_eq!(p.evict(), Some(3));
        p.remove(100);
        for id in 1..=3 {
            p.insert(id, 10);
        }
        assert_eq!(p.small.len, 0);
        assert_eq!(p.main.len, 3);
        p.touch(1);
        p.touch(1);
        p.touch(2);
        assert_eq!(drain(&mut p), vec![3, 2, 1]);
    }

    #[test]
    fn s3fifo_counter_caps_at_three() {
        // One entry in M touched 10 times keeps only 3 credits: behind it, 2 and 3 enter M at
        // the head. M (tail first) = 1 2 3 with 1 at freq 3.
        // evict: 1 (3->2) to head: 2 3 1; 2 freq 0 -> evicted. evict: 3 evicted.
        // evict: 1 (2->1), 1 (1->0), 1 evicted. Had the counter not been capped, the order
        // would be the same but the point is the cap holds: check the counter directly.
        let mut p = S3Fifo::new(100);
        for id in 1..=3 {
            p.insert(id, 10);
        }
        p.insert(100, 80);
        for _ in 0..3 {
            p.evict();
        }
        p.remove(100);
        for id in 1..=3 {
            p.insert(id, 10);
        }
        for _ in 0..10 {
            p.touch(1);
        }
        assert_eq!(p.slab.get(p.index[&1]).freq, MAX_FREQ);
        assert_eq!(drain(&mut p), vec![2, 3, 1]);
    }

    #[test]
    fn s3fifo_weights_track_queues() {
        let mut p = S3Fifo::new(1000);
        p.insert(1, 300);
        p.insert(2, 200);
        p.insert(1, 50); // re-insert updates the weight in place
        assert_eq!((p.len(), p.weight()), (2, 250));
        assert_eq!(p.small_weight, 250);
        p.touch(1);
        // S = 250 > 100: 1 (hit) moves to M, 2 is evicted.
        assert_eq!(p.evict(), Some(2));
        assert_eq!((p.small_weight, p.main_weight), (0, 50));
        p.remove(1);
        assert_eq!((p.len(), p.weight()), (0, 0));
        assert!(p.ghost.live.contains_key(&2));
    }

    #[test]
    fn s3fifo_ghost_is_bounded_by_main_share() {
        // Capacity 100: ghost holds at most 90 accounted bytes, so at most 90 unit-weight ids.
        let mut p = S3Fifo::new(100);
        for id in 0..1000 {
            p.insert(id, 1);
            while p.weight() > 100 {
                p.evict();
            }
        }
        assert!(p.ghost.fifo.len() <= 90, "{}", p.ghost.fifo.len());
        assert!(p.ghost.live.len() <= 90);
        assert!(p.ghost.bytes <= 90);
    }

    #[test]
    fn s3fifo_zero_capacity_still_evicts_everything() {
        let mut p = S3Fifo::new(0);
        p.insert(1, 5);
        p.insert(2, 0);
        p.touch(1);
        let mut got = drain(&mut p);
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(p.weight(), 0);
    }
}
