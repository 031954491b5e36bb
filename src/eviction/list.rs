//! The index-based list every built-in policy shares: a slab of nodes (a `Vec` with a free
//! list) linked by indices, and a map from entry id to slab index, so every operation is O(1)
//! without one allocation per entry. It must never panic on ids it does not know: unknown ids
//! are ignored, as the `EvictionPolicy` trait promises.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Index of "no node": the end of a list, or a hand that points nowhere.
pub(super) const NIL: usize = usize::MAX;

/// One slot of a [`Slab`]: intrusive links plus the policy's per-entry data.
#[derive(Debug, Clone, Copy)]
struct Node<T> {
    /// Towards the head (newer end) of the list the node is on.
    prev: usize,
    /// Towards the tail (older end).
    next: usize,
    value: T,
}

/// A doubly linked list threaded through a [`Slab`]: just its ends and its length.
///
/// Head is the newest end, tail the oldest; every policy here inserts at the head.
#[derive(Debug, Clone, Copy)]
pub(super) struct List {
    pub(super) head: usize,
    pub(super) tail: usize,
    pub(super) len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

/// Node storage for one or more [`List`]s: freed slots are reused, so a long-running store does
/// not grow the vector beyond its peak number of live entries.
#[derive(Debug, Clone)]
pub(super) struct Slab<T> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            nodes: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Copy> Slab<T> {
    /// Slots allocated, live or free (tests check it stays at the peak of live entries).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Stores `value` in an unlinked slot and returns its index.
    pub(super) fn alloc(&mut self, value: T) -> usize {
        let node = Node {
            prev: NIL,
            next: NIL,
            value,
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Returns slot `i` (already unlinked) to the free list.
    pub(super) fn release(&mut self, i: usize) {
        self.free.push(i);
    }

    pub(super) fn get(&self, i: usize) -> &T {
        &self.nodes[i].value
    }

    pub(super) fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.nodes[i].value
    }

    /// The neighbour of `i` towards the head, or [`NIL`].
    pub(super) fn newer(&self, i: usize) -> usize {
        self.nodes[i].prev
    }

    /// Links the unlinked node `i` at the head of `list`.
    pub(super) fn push_head(&mut self, list: &mut List, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = list.head;
        if list.head == NIL {
            list.tail = i;
        } else {
            self.nodes[list.head].prev = i;
        }
        list.head = i;
        list.len += 1;
    }

    /// Unlinks node `i`, which must be on `list`.
    pub(super) fn unlink(&mut self, list: &mut List, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        self.nodes[i].prev = NIL;
        self.nodes[i].next = NIL;
        list.len -= 1;
    }
}

/// Hasher for entry ids: a keyed 64-bit finaliser instead of SipHash, because a hit costs one
/// map lookup and SipHash would dominate it.
///
/// The per-map random key (taken from std's `RandomState`) means an attacker who can choose
/// ids cannot precompute ids that collide in the map's low bits.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdHasherBuilder {
    key: u64,
}

impl Default for IdHasherBuilder {
    fn default() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6461_7261_6d6a_7765);
        IdHasherBuilder { key: h.finish() }
    }
}

impl BuildHasher for IdHasherBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.key }
    }
}

/// See [`IdHasherBuilder`].
#[derive(Debug, Clone, Copy)]
pub(super) struct IdHasher {
    state: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // murmur3's fmix64: every input bit affects every output bit.
        let mut x = self.state;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this crate never uses; still correct.
        for &b in bytes {
            self.state = (self.state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.state ^= id;
    }
}

/// Map from entry id to slab index.
pub(super) type IdMap = HashMap<u64, usize, IdHasherBuilder>;

/// A model-based check shared by every policy's property test.
#[cfg(test)]
pub(super) mod model {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use crate::eviction::EvictionPolicy;

    /// One call on a policy. Ids come from a small range so that hits, re-inserts and removals of
    /// live ids are common.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Insert(u64, u64),
        Touch(u64),
        Remove(u64),
        Evict,
    }

    pub(crate) fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0u64..48, 0u64..200).prop_map(|(id, w)| Op::Insert(id, w)),
            3 => (0u64..48).prop_map(Op::Touch),
            1 => (0u64..48).prop_map(Op::Remove),
            2 => Just(Op::Evict),
        ];
        proptest::collection::vec(op, 0..400)
    }

    /// Replays `ops` on `policy` and on a map of live ids, checking after every step that
    /// `len()` and `weight()` agree with the map and that victims are live ids; then drains the
    /// policy and checks every live id comes out exactly once.
    pub(crate) fn check(mut policy: impl EvictionPolicy, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut live: HashMap<u64, u64> = HashMap::new();
        for op in ops {
            match *op {
                Op::Insert(id, w) => {
                    policy.insert(id, w);
                    live.insert(id, w);
                }
                Op::Touch(id) => policy.touch(id),
                Op::Remove(id) => {
                    policy.remove(id);
                    live.remove(&id);
                }
                Op::Evict => match policy.evict() {
                    Some(id) => prop_assert!(live.remove(&id).is_some(), "evicted dead id {id}"),
                    None => prop_assert!(live.is_empty(), "evict gave None with live ids"),
                },
            }
            prop_assert_eq!(policy.len(), live.len());
            prop_assert_eq!(policy.weight(), live.values().sum::<u64>());
            prop_assert_eq!(policy.is_empty(), live.is_empty());
        }
        let mut drained: Vec<u64> = std::iter::from_fn(|| policy.evict()).collect();
        drained.sort_unstable();
        let mut expected: Vec<u64> = live.keys().copied().collect();
        expected.sort_unstable();
        prop_assert_eq!(drained, expected);
        prop_assert_eq!((policy.len(), policy.weight()), (0, 0));
        Ok(())
    }

    /// Replays `ops` as a store of `cap` bytes drives a policy: an insert heavier than the whole
    /// store is refused, any other insert (or weight update) is followed by evictions while the
    /// policy is over `cap`, and victims leave the store. After every step the policy's weight
    /// is within `cap` and equals the store's sum of live weights exactly.
    pub(crate) fn check_bounded(
        mut policy: impl EvictionPolicy,
        cap: u64,
        ops: &[Op],
    ) -> Result<(), TestCaseError> {
        let mut live: HashMap<u64, u64> = HashMap::new();
        for op in ops {
            match *op {
                Op::Insert(id, w) if w <= cap => {
                    policy.insert(id, w);
                    live.insert(id, w);
                }
                Op::Insert(..) => {}
                Op::Touch(id) => policy.touch(id),
                Op::Remove(id) => {
                    policy.remove(id);
                    live.remove(&id);
                }
                Op::Evict => {
                    if let Some(id) = policy.evict() {
                        prop_assert!(live.remove(&id).is_some(), "evicted dead id {id}");
                    }
                }
            }
            while policy.weight() > cap {
                let victim = policy.evict();
                prop_assert!(victim.is_some(), "over capacity with nothing to evict");
                let id = victim.unwrap_or_default();
                prop_assert!(live.remove(&id).is_some(), "evicted dead id {id}");
            }
            prop_assert!(policy.weight() <= cap);
            prop_assert_eq!(policy.weight(), live.values().sum::<u64>());
            prop_assert_eq!(policy.len(), live.len());
        }
        Ok(())
    }
}
