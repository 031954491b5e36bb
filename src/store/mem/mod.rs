//! The in-memory store: a byte-bounded, sharded map from keys to shared entries.
//!
//! It exists to make hot hits cheap: a hit clones two `Arc`s under a short shard lock and streams
//! the body as shared `Bytes` without copying ([`Store::try_get_now`] answers synchronously).
//! It must never exceed its byte capacity — writes in progress count against it as they grow — and
//! it must never expose a partial entry or serve one key's body for another key.
//!
//! # Layout
//!
//! Keys are hashed once with a `foldhash` state seeded per store: several times cheaper than
//! std's SipHash on a URL, and a key a client chose can at worst collide with another, which
//! is told apart (below). The 64-bit hash picks the shard (from its high bits), is the entry's
//! id in the shard's index and in its [`EvictionPolicy`], and the slot keeps the full key, so
//! two keys whose hashes collide are told apart: a lookup with the wrong key is a miss and a
//! commit under a colliding key replaces the other entry.
//!
//! Each shard is a `parking_lot::Mutex` around its index, its own policy instance and its byte
//! counters. Locks are held for map and policy operations only, never across an `.await`, and
//! evicted bodies are dropped after the lock is released.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use foldhash::quality::RandomState;
use http::HeaderValue;
use parking_lot::Mutex;

use super::{Store, StoreWriter};
use crate::entry::{with_header_room, EntryBody, Metadata, StoredEntry, HEADER_ROOM};
use crate::error::StoreError;
use crate::eviction::{EvictionPolicy, PolicyKind};

/// Fixed per-entry cost charged on top of the body and the key: the slot, the `Metadata` struct,
/// its `Arc`, the index bucket and the policy's node. Measured with a counting allocator: 50,000
/// entries of a 1 KiB body and a 47-byte key, no headers, took 1,534 bytes of heap each
/// (the default policy; 2026-12-05), 464 more than body and key.
const ENTRY_OVERHEAD: u64 = 464;

/// Per-header cost on top of the name and value bytes: the `HeaderMap` bucket, its index slot
/// and the `HeaderValue` handle. Measured as above: six headers added 104 bytes each beyond
/// their names and values.
const HEADER_OVERHEAD: u64 = 104;

/// Small chunks are copied into blocks of up to this many bytes (see [`MemWriter::push_chunk`]).
const BLOCK: usize = 64 * 1024;

/// Default capacity of [`MemStore::builder`] when none is given.
const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

/// With the default sharding, no shard is smaller than this (tiny shards evict too eagerly).
const MIN_SHARD_BYTES: u64 = 256 * 1024;

/// Upper bound of the default shard count.
const MAX_DEFAULT_SHARDS: usize = 64;

/// Upper bound of an explicit shard count (past this, shards only cost memory and accuracy).
const MAX_SHARDS: usize = 4096;

/// A byte-bounded, sharded in-memory [`Store`] with zero-copy hits.
///
/// Capacity counts committed entries *and* writes in progress: a writer reserves its bytes in its
/// shard as it writes, evicting committed entries (chosen by the shard's [`EvictionPolicy`]) to
/// make room. An entry weighs its body bytes, plus its key length, plus an estimate for its
/// metadata (a fixed 464 bytes plus, per header, its name and value lengths and 104 bytes; both
/// measured). What it weighs is what it holds: small body chunks and all header values are
/// copied into buffers of the entry's own, so no entry keeps alive a larger buffer it was cut
/// from (a socket's read buffer, say).
///
/// ```
/// use daramjwee::store::{MemStore, Store};
/// use daramjwee::Metadata;
///
/// # tokio_test_block_on(async {
/// let store = MemStore::new(16 * 1024 * 1024);
/// let mut w = store.put("k", Metadata::new(http::StatusCode::OK)).await?;
/// w.write(bytes::Bytes::from_static(b"hello")).await?;
/// w.commit().await?;
///
/// let hit = store.try_get_now("k").unwrap()?.unwrap();
/// assert_eq!(hit.body.collect().await.unwrap(), "hello");
/// # Ok::<_, daramjwee::StoreError>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct MemStore {
    inner: Arc<Inner>,
}

/// Builder for [`MemStore`].
///
/// ```
/// use daramjwee::eviction::PolicyKind;
/// use daramjwee::store::MemStore;
///
/// let store = MemStore::builder()
///     .capacity(256 * 1024 * 1024)
///     .max_object_size(8 * 1024 * 1024)
///     .policy(PolicyKind::Sieve)
///     .build();
/// assert_eq!(store.capacity(), 256 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemStoreBuilder {
    capacity: Option<u64>,
    shards: Option<usize>,
    policy: PolicyKind,
    max_object_size: Option<u64>,
}

impl MemStoreBuilder {
    /// Total capacity in bytes (default 64 MiB).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// Number of shards (clamped to 1..=4096).
    ///
    /// More shards mean less lock contention, but each shard is an independent slice of the
    /// capacity (`capacity / shards`) with its own policy: an object must fit in one shard, and
    /// eviction is only shard-locally optimal. The default is about four shards per core, reduced
    /// until every shard can hold two objects of [`max_object_size`](Self::max_object_size) (so
    /// one maximal object never has to empty a whole shard) and is at least 256 KiB. quick_cache
    /// and foyer size their shards the same way. If you set both and a shard is smaller than
    /// `max_object_size`, the shard size is the effective per-object limit.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.clamp(1, MAX_SHARDS));
        self
    }

    /// Eviction policy; each shard builds its own instance (default [`PolicyKind::S3Fifo`]).
    pub fn policy(mut self, policy: PolicyKind) -> Self {
        self.policy = policy;
        self
    }

    /// Largest body, in bytes, the store accepts (default: capacity / 16). Larger writes fail
    /// with [`StoreError::TooLarge`].
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        self.max_object_size = Some(bytes);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemStore {
        let capacity = self.capacity.unwrap_or(DEFAULT_CAPACITY);
        let max_object_size = self.max_object_size.unwrap_or(capacity / 16);
        let shards = self
            .shards
            .unwrap_or_else(|| default_shards(capacity, max_object_size));
        let shard_capacity = capacity / shards as u64;
        let shard_list = (0..shards)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    index: HashMap::default(),
                    policy: self.policy.build(shard_capacity),
                    capacity: shard_capacity,
                    committed: 0,
                    reserved: 0,
                    warned_policy: false,
                }))
            })
            .collect();
        MemStore {
            inner: Arc::new(Inner {
                shards: shard_list,
                hasher: KeyHasher::Random(RandomState::default()),
                capacity,
                shard_capacity,
                max_object_size,
                policy: self.policy,
                evictions: AtomicU64::new(0),
            }),
        }
    }
}

fn default_shards(capacity: u64, max_object_size: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = (cores * 4).next_power_of_two().min(MAX_DEFAULT_SHARDS);
    let per_shard = max_object_size.saturating_mul(2).max(MIN_SHARD_BYTES);
    let fits = usize::try_from(capacity / per_shard).unwrap_or(usize::MAX);
    wanted.min(fits).max(1)
}

struct Inner {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: KeyHasher,
    capacity: u64,
    shard_capacity: u64,
    max_object_size: u64,
    policy: PolicyKind,
    evictions: AtomicU64,
}

/// Keeps each shard's lock on its own cache line so that shards don't contend through false
/// sharing.
#[repr(align(128))]
struct Padded<T>(T);

enum KeyHasher {
    Random(RandomState),
    /// Every key gets the same id: lets tests force hash collisions.
    #[cfg(test)]
    Fixed(u64),
}

impl KeyHasher {
    fn id(&self, key: &str) -> u64 {
        match self {
            KeyHasher::Random(state) => state.hash_one(key),
            #[cfg(test)]
            KeyHasher::Fixed(id) => *id,
        }
    }
}

/// The index is keyed by ids that are already hashes, so it only needs to spread them: the
/// shard was picked from the id's high bits, and the multiply moves the free low bits up to
/// where hashbrown reads its control tags.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

type Index = HashMap<u64, Slot, BuildHasherDefault<IdHasher>>;

struct Slot {
    key: Box<str>,
    meta: Arc<Metadata>,
    body: Arc<[Bytes]>,
    body_len: u64,
    weight: u64,
}

struct Shard {
    index: Index,
    policy: Box<dyn EvictionPolicy>,
    capacity: u64,
    /// Sum of the weights of committed entries.
    committed: u64,
    /// Sum of the reservations of writers in progress.
    reserved: u64,
    warned_policy: bool,
}

impl Shard {
    fn used(&self) -> u64 {
        self.committed + self.reserved
    }

    /// Evicts committed entries until `extra` more bytes fit. Returns whether they do; the
    /// evicted slots go to `graveyard` so their bodies are freed after the lock is released.
    fn make_room(&mut self, extra: u64, graveyard: &mut Vec<Slot>) -> bool {
        while self.used().saturating_add(extra) > self.capacity {
            match self.evict_one() {
                Some(slot) => graveyard.push(slot),
                None => return false,
            }
        }
        true
    }

    fn evict_one(&mut self) -> Option<Slot> {
        // A policy may return ids we no longer hold; skip those, but never loop forever.
        let mut budget = self.policy.len() + 1;
        while budget > 0 {
            budget -= 1;
            let Some(id) = self.policy.evict() else { break };
            if let Some(slot) = self.index.remove(&id) {
                self.committed -= slot.weight;
                return Some(slot);
            }
        }
        // The policy lost track of entries we hold (a faulty custom policy). Capacity is the
        // invariant that matters, so evict an arbitrary entry rather than overflow.
        let id = *self.index.keys().next()?;
        if !self.warned_policy {
            self.warned_policy = true;
            tracing::warn!(
                policy_len = self.policy.len(),
                entries = self.index.len(),
                "eviction policy has no victim while the shard holds entries; evicting arbitrarily"
            );
        }
        self.policy.remove(id);
        let slot = self.index.remove(&id)?;
        self.committed -= slot.weight;
        Some(slot)
    }
}

/// `meta` with its header values copied into one allocation of the entry's own, their order
/// and sensitivity kept. A value parsed by hyper is a slice of its connection's read buffer
/// (8 KiB or more): kept as it is, a stored entry would pin that whole buffer while the store
/// counts only the value's bytes, as [`MemWriter::push_chunk`] explains for bodies. Measured
/// through the proxy: 100,000 entries of 1 KiB took about 9 KiB of memory each.
///
/// The values are replaced in place, so the map keeps the room for what an answer adds that
/// the engine gives it (`policy::storable_headers`); a map without that room (from a store
/// user's own code, or grown by a refresh) is rebuilt with it, so no hit has to.
fn own_header_bytes(mut meta: Metadata) -> Metadata {
    let len = meta.headers.values().map(|v| v.len()).sum();
    let mut block = Vec::with_capacity(len);
    for value in meta.headers.values() {
        block.extend_from_slice(value.as_bytes());
    }
    let block = Bytes::from(block);
    let mut at = 0;
    for value in meta.headers.values_mut() {
        let bytes = block.slice(at..at + value.len());
        at += value.len();
        // The bytes of a valid value are valid; the original stays if not.
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(bytes) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
    if meta.headers.capacity() < meta.headers.keys_len() + HEADER_ROOM {
        // The clone keeps the index's room, not the spare field slots.
        meta.headers = with_header_room(&meta.headers).clone();
    }
    meta
}

/// Estimated weight of an entry's metadata (see [`MemStore`]).
fn meta_weight(meta: &Metadata) -> u64 {
    let headers: u64 = meta
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len()) as u64 + HEADER_OVERHEAD)
        .sum();
    let etag = meta.etag.as_ref().map_or(0, |e| e.len() as u64);
    ENTRY_OVERHEAD + headers + etag
}

impl MemStore {
    /// A store of `capacity_bytes` with the default shards, policy and object size limit.
    pub fn new(capacity_bytes: u64) -> MemStore {
        MemStore::builder().capacity(capacity_bytes).build()
    }

    /// A builder to configure shards, policy and object size limit.
    pub fn builder() -> MemStoreBuilder {
        MemStoreBuilder::default()
    }

    /// Total capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Largest body accepted, in bytes (the shard capacity may be the tighter limit).
    pub fn max_object_size(&self) -> u64 {
        self.inner.max_object_size
    }

    /// Number of entries evicted to make room so far (not counting deletes, replacements or
    /// [`clear`](Store::clear)).
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// A store where every key gets the same id, to exercise collision handling.
    #[cfg(test)]
    fn with_fixed_id(capacity: u64, policy: PolicyKind) -> MemStore {
        let mut store = MemStore::builder()
            .capacity(capacity)
            .shards(1)
            .max_object_size(capacity)
            .policy(policy)
            .build();
        Arc::get_mut(&mut store.inner)
            .expect("a fresh store is not shared")
            .hasher = KeyHasher::Fixed(42);
        store
    }

    fn lookup(&self, key: &str) -> Option<StoredEntry> {
        let (id, shard) = self.inner.locate(key);
        let mut shard = self.inner.shards[shard].0.lock();
        let slot = shard.index.get(&id).filter(|slot| &*slot.key == key)?;
        let entry = StoredEntry::new(slot.meta.clone(), EntryBody::from_chunks(slot.body.clone()));
        shard.policy.touch(id);
        Some(entry)
    }
}

impl Inner {
    fn locate(&self, key: &str) -> (u64, usize) {
        let id = self.hasher.id(key);
        // Lemire's multiply-shift range reduction on the high half: uniform for any shard
        // count, and it leaves the low bits free for the shard's own hash table.
        let shard = (((id >> 32) * self.shards.len() as u64) >> 32) as usize;
        (id, shard)
    }

    fn count_evictions(&self, graveyard: &[Slot]) {
        if !graveyard.is_empty() {
            self.evictions
                .fetch_add(graveyard.len() as u64, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore")
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .field("max_object_size", &self.inner.max_object_size)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for MemStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.lookup(key))
    }

    fn try_get_now(&self, key: &str) -> Option<Result<Option<StoredEntry>, StoreError>> {
        Some(Ok(self.lookup(key)))
    }

    fn object_size_limit(&self) -> Option<u64> {
        Some(self.inner.max_object_size.min(self.inner.shard_capacity))
    }

    async fn head(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        let (id, shard) = self.inner.locate(key);
        let meta = {
            let shard = self.inner.shards[shard].0.lock();
            match shard.index.get(&id) {
                Some(slot) if &*slot.key == key => slot.meta.clone(),
                _ => return Ok(None),
            }
        };
        Ok(Some(Metadata::clone(&meta)))
    }

    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        let limit = self.inner.max_object_size;
        if let Some(declared) = meta.content_length.filter(|&len| len > limit) {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size: declared,
                limit,
            });
        }
        let meta = own_header_bytes(meta);
        let (id, shard) = self.inner.locate(key);
        let mut writer = MemWriter {
            inner: self.inner.clone(),
            shard,
            id,
            key: key.to_owned(),
            meta: Arc::new(meta),
            chunks: Vec::new(),
            block: Vec::new(),
            body_len: 0,
            reserved: 0,
            failed: None,
        };
        let fixed = key.len() as u64 + meta_weight(&writer.meta);
        writer.reserve(fixed)?;
        Ok(Box::new(writer))
    }

    async fn update_metadata(&self, key: &str, meta: Metadata) -> Result<bool, StoreError> {
        let meta = own_header_bytes(meta);
        let (id, shard_no) = self.inner.locate(key);
        let new_fixed = key.len() as u64 + meta_weight(&meta);
        let mut meta = Arc::new(meta);
        let mut graveyard = Vec::new();
        let old_meta;
        {
            let mut guard = self.inner.shards[shard_no].0.lock();
            let shard = &mut *guard;
            let Some(slot) = shard.index.get_mut(&id).filter(|slot| &*slot.key == key) else {
                return Ok(false);
            };
            if meta.content_length != slot.meta.content_length {
                // Unique, so this mutates in place without cloning.
                Arc::make_mut(&mut meta).content_length = slot.meta.content_length;
            }
            let weight = slot.body_len + new_fixed;
            let old_weight = std::mem::replace(&mut slot.weight, weight);
            old_meta = std::mem::replace(&mut slot.meta, meta);
            shard.committed = shard.committed - old_weight + weight;
            shard.policy.insert(id, weight);
            // Bigger headers may push the shard over; the policy may even pick this entry.
            shard.make_room(0, &mut graveyard);
        }
        self.inner.count_evictions(&graveyard);
        drop(old_meta);
        drop(graveyard);
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (id, shard_no) = self.inner.locate(key);
        let removed = {
            let mut shard = self.inner.shards[shard_no].0.lock();
            if shard.index.get(&id).is_some_and(|slot| &*slot.key == key) {
                let slot = shard.index.remove(&id);
                if let Some(slot) = &slot {
                    shard.committed -= slot.weight;
                    shard.policy.remove(id);
                }
                slot
            } else {
                None
            }
        };
        drop(removed);
        Ok(())
    }

    fn used_bytes(&self) -> Option<u64> {
        Some(self.inner.shards.iter().map(|s| s.0.lock().used()).sum())
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            // Dropped after the lock is released, like every removal here.
            let gone: Vec<Slot> = {
                let mut shard = shard.0.lock();
                let ids: Vec<u64> = shard
                    .index
                    .iter()
                    .filter(|(_, slot)| slot.key.starts_with(prefix))
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| {
                        let slot = shard.index.remove(&id)?;
                        shard.committed -= slot.weight;
                        shard.policy.remove(id);
                        Some(slot)
                    })
                    .collect()
            };
            removed += gone.len() as u64;
        }
        Ok(removed)
    }

    fn evictions(&self) -> Option<u64> {
        Some(MemStore::evictions(self))
    }

    fn len(&self) -> Option<u64> {
        Some(
            self.inner
                .shards
                .iter()
                .map(|s| s.0.lock().index.len() as u64)
                .sum(),
        )
    }

    async fn clear(&self) -> Result<(), StoreError> {
        for shard in self.inner.shards.iter() {
            let fresh_policy = self.inner.policy.build(self.inner.shard_capacity);
            let (old_index, old_policy) = {
                let mut shard = shard.0.lock();
                shard.committed = 0;
                (
                    std::mem::take(&mut shard.index),
                    std::mem::replace(&mut shard.policy, fresh_policy),
                )
            };
            drop(old_index);
            drop(old_policy);
        }
        Ok(())
    }
}

/// A write in progress: holds its chunks privately and its bytes as a reservation in its shard.
struct MemWriter {
    inner: Arc<Inner>,
    shard: usize,
    id: u64,
    key: String,
    meta: Arc<Metadata>,
    chunks: Vec<Bytes>,
    /// The block small chunks are being copied into.
    block: Vec<u8>,
    body_len: u64,
    /// Bytes reserved in the shard (key + metadata estimate + body so far).
    reserved: u64,
    /// Set once the entry was refused: `(size, limit)` for the `TooLarge` error.
    failed: Option<(u64, u64)>,
}

impl MemWriter {
    fn too_large(&self, size: u64, limit: u64) -> StoreError {
        StoreError::TooLarge {
            key: self.key.clone(),
            size,
            limit,
        }
    }

    /// Reserves `n` more bytes in the shard, evicting committed entries if needed. On failure
    /// the writer gives up: its reservation and buffers are released.
    fn reserve(&mut self, n: u64) -> Result<(), StoreError> {
        let mut graveyard = Vec::new();
        let outcome = {
            let mut shard = self.inner.shards[self.shard].0.lock();
            let others = shard.reserved - self.reserved;
            let limit = shard.capacity.saturating_sub(others);
            let size = self.reserved + n;
            // Fail before evicting anything that could not make enough room anyway.
            if size > limit || !shard.make_room(n, &mut graveyard) {
                shard.reserved -= self.reserved;
                self.reserved = 0;
                Err((size, limit))
            } else {
                shard.reserved += n;
                self.reserved += n;
                Ok(())
            }
        };
        self.inner.count_evictions(&graveyard);
        drop(graveyard);
        outcome.map_err(|(size, limit)| self.fail(size, limit))
    }

    fn fail(&mut self, size: u64, limit: u64) -> StoreError {
        tracing::debug!(key = %self.key, size, limit, "memory store refuses entry: too large");
        self.failed = Some((size, limit));
        self.chunks = Vec::new();
        self.block = Vec::new();
        self.too_large(size, limit)
    }

    /// Buffers a chunk. Chunks under [`BLOCK`] bytes are copied into blocks: a small `Bytes` is
    /// often a slice of a much larger buffer (a socket read buffer, a decoder's output), and
    /// keeping it would pin that whole allocation while we account only for the slice. Chunks
    /// of [`BLOCK`] bytes or more are kept as they are: they are at least a sizeable fraction of
    /// whatever buffer backs them (producers size buffers near what they hand out), and copying
    /// them would double peak memory and cost bandwidth on the largest bodies for little gain.
    fn push_chunk(&mut self, chunk: Bytes) {
        if chunk.len() >= BLOCK {
            self.seal_block();
            self.chunks.push(chunk);
            return;
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (BLOCK - self.block.len()).min(rest.len());
            let needed = self.block.len() + take;
            if needed > self.block.capacity() {
                // Grow by doubling but never past one block, and to the declared length when
                // it is known, so a sealed block rarely carries slack.
                let declared_rest = self
                    .meta
                    .content_length
                    .map(|cl| cl.saturating_sub(self.body_len) as usize + self.block.len());
                let target = (self.block.capacity() * 2)
                    .max(needed)
                    .max(declared_rest.unwrap_or(0))
                    .min(BLOCK)
                    .max(needed);
                self.block.reserve_exact(target - self.block.len());
            }
            self.block.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.block.len() == BLOCK {
                self.seal_block();
            }
        }
    }

    fn seal_block(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let len = self.block.len();
        let sealed = if self.block.capacity() - len <= len / 8 {
            Bytes::from(std::mem::take(&mut self.block))
        } else {
            // Too much slack would be pinned unaccounted: copy to an exact-size buffer.
            let exact = Bytes::copy_from_slice(&self.block);
            self.block.clear();
            exact
        };
        self.chunks.push(sealed);
    }
}

#[async_trait]
impl StoreWriter for MemWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if let Some((size, limit)) = self.failed {
            return Err(self.too_large(size, limit));
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        let body_len = self.body_len + n;
        if body_len > self.inner.max_object_size {
            let limit = self.inner.max_object_size;
            self.release();
            return Err(self.fail(body_len, limit));
        }
        // Reserve before buffering, so the bytes are accounted before we hold them.
        self.reserve(n)?;
        self.body_len = body_len;
        self.push_chunk(chunk);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some((size, limit)) = self.failed {
            return Err(self.too_large(size, limit));
        }
        if let Some(declared) = self.meta.content_length {
            if declared != self.body_len {
                return Err(StoreError::Corrupt {
                    key: std::mem::take(&mut self.key),
                    reason: format!(
                        "body has {} bytes but {declared} were declared",
                        self.body_len
                    ),
                });
            }
        }
        self.seal_block();
        // Build the slot before taking the lock: only the swap happens under it.
        let body: Arc<[Bytes]> = std::mem::take(&mut self.chunks).into();
        let meta = self.meta.clone();
        let weight = self.reserved;
        let slot = Slot {
            key: std::mem::take(&mut self.key).into_boxed_str(),
            meta,
            body,
            body_len: self.body_len,
            weight,
        };
        let id = self.id;
        let replaced = {
            let mut shard = self.inner.shards[self.shard].0.lock();
            shard.reserved -= weight;
            self.reserved = 0;
            let replaced = shard.index.insert(id, slot);
            if let Some(old) = &replaced {
                shard.committed -= old.weight;
                // A replacement is a new entry for the policy, not a hit on the old one.
                shard.policy.remove(id);
            }
            shard.committed += weight;
            shard.policy.insert(id, weight);
            replaced
        };
        drop(replaced);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.body_len
    }
}

impl MemWriter {
    fn release(&mut self) {
        if self.reserved > 0 {
            let mut shard = self.inner.shards[self.shard].0.lock();
            shard.reserved -= self.reserved;
            self.reserved = 0;
        }
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
