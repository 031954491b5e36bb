//! Unit tests of the parent module.

use std::collections::{HashMap as StdHashMap, VecDeque};

use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};

use super::*;

/// First in, first out; ignores hits. Independent of the crate's real policies.
#[derive(Debug, Default)]
struct TestFifo {
    queue: VecDeque<u64>,
    weights: StdHashMap<u64, u64>,
}

impl EvictionPolicy for TestFifo {
    fn insert(&mut self, id: u64, weight: u64) {
        if self.weights.insert(id, weight).is_none() {
            self.queue.push_back(id);
        }
    }
    fn touch(&mut self, _id: u64) {}
    fn remove(&mut self, id: u64) {
        if self.weights.remove(&id).is_some() {
            self.queue.retain(|&q| q != id);
        }
    }
    fn evict(&mut self) -> Option<u64> {
        let id = self.queue.pop_front()?;
        self.weights.remove(&id);
        Some(id)
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn weight(&self) -> u64 {
        self.weights.values().sum()
    }
}

/// A policy that tracks nothing and never names a victim (like an unfinished one).
#[derive(Debug, Default)]
struct NeverEvicts;

impl EvictionPolicy for NeverEvicts {
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

fn fifo() -> PolicyKind {
    PolicyKind::Custom(Arc::new(|_cap| Box::new(TestFifo::default())))
}

fn one_shard(capacity: u64) -> MemStore {
    MemStore::builder()
        .capacity(capacity)
        .shards(1)
        .max_object_size(capacity)
        .policy(fifo())
        .build()
}

fn meta() -> Metadata {
    Metadata::new(StatusCode::OK)
}

/// Weight of an entry with `meta()` and no headers.
fn weight(key: &str, body: usize) -> u64 {
    ENTRY_OVERHEAD + key.len() as u64 + body as u64
}

async fn put_bytes(store: &MemStore, key: &str, body: &[u8]) -> Result<(), StoreError> {
    let mut w = store.put(key, meta()).await?;
    w.write(Bytes::copy_from_slice(body)).await?;
    w.commit().await
}

async fn get_bytes(store: &MemStore, key: &str) -> Option<Bytes> {
    let entry = store.get(key).await.expect("memory get never fails")?;
    Some(entry.body.collect().await.expect("memory body never fails"))
}

/// Checks the shard counters against the slots they describe.
fn assert_accounting(store: &MemStore, in_flight: u64) {
    let mut reserved = 0;
    for shard in store.inner.shards.iter() {
        let shard = shard.0.lock();
        let sum: u64 = shard.index.values().map(|s| s.weight).sum();
        assert_eq!(shard.committed, sum, "committed bytes match the slots");
        assert!(shard.used() <= shard.capacity, "shard within capacity");
        reserved += shard.reserved;
    }
    assert_eq!(reserved, in_flight, "reservations match writers in flight");
    assert!(store.used_bytes().unwrap() <= store.capacity());
}

#[tokio::test]
async fn committed_entry_reads_back_byte_for_byte() {
    let store = one_shard(1 << 20);
    let big = Bytes::from(vec![7u8; 100_000]);
    let mut w = store.put("k", meta().with_etag("\"v1\"")).await.unwrap();
    w.write(Bytes::from_static(b"head-")).await.unwrap();
    w.write(big.clone()).await.unwrap();
    w.write(Bytes::from_static(b"-tail")).await.unwrap();
    assert_eq!(w.written(), 100_010);
    w.commit().await.unwrap();

    let mut expected = b"head-".to_vec();
    expected.extend_from_slice(&big);
    expected.extend_from_slice(b"-tail");
    let entry = store.try_get_now("k").unwrap().unwrap().unwrap();
    assert_eq!(entry.meta.etag.as_deref(), Some("\"v1\""));
    assert_eq!(entry.body.collect().await.unwrap(), expected);
    assert_eq!(get_bytes(&store, "k").await.unwrap(), expected);
    assert_eq!(store.len(), Some(1));
    assert!(store.try_get_now("other").unwrap().unwrap().is_none());
    assert_eq!(store.name(), "memory");
}

#[tokio::test]
async fn hits_share_large_chunks_without_copying() {
    let store = one_shard(1 << 20);
    let big = Bytes::from(vec![1u8; 2 * BLOCK]);
    let mut w = store.put("k", meta()).await.unwrap();
    w.write(big.clone()).await.unwrap();
    w.commit().await.unwrap();
    for _ in 0..2 {
        let mut body = store.get("k").await.unwrap().unwrap().body;
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(
            chunk.as_ptr(),
            big.as_ptr(),
            "hit serves the stored allocation"
        );
    }
}

#[tokio::test]
async fn small_chunks_are_coalesced_into_blocks() {
    let store = one_shard(1 << 20);
    let mut w = store.put("k", meta()).await.unwrap();
    for i in 0..1000u32 {
        w.write(Bytes::from(vec![(i % 251) as u8; 100]))
            .await
            .unwrap();
    }
    w.commit().await.unwrap();
    let body = store.get("k").await.unwrap().unwrap().body;
    let chunks: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
    let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
    assert_eq!(lens, vec![BLOCK, 100_000 - BLOCK]);
    let all: Vec<u8> = chunks.concat();
    let expected: Vec<u8> = (0..1000u32)
        .flat_map(|i| std::iter::repeat_n((i % 251) as u8, 100))
        .collect();
    assert_eq!(all, expected);
}

#[tokio::test]
async fn dropped_writer_leaves_no_entry_and_frees_its_reservation() {
    let store = one_shard(1 << 20);
    let mut w = store.put("k", meta()).await.unwrap();
    w.write(Bytes::from(vec![0u8; 5000])).await.unwrap();
    assert_eq!(store.used_bytes(), Some(weight("k", 5000)));
    assert!(
        store.get("k").await.unwrap().is_none(),
        "nothing visible before commit"
    );
    drop(w);
    assert_eq!(store.used_bytes(), Some(0));
    assert_eq!(store.len(), Some(0));
    assert!(store.get("k").await.unwrap().is_none());

    let mut w = store.put("k", meta()).await.unwrap();
    w.write(Bytes::from_static(b"x")).await.unwrap();
    w.abort().await.unwrap();
    assert_eq!(store.used_bytes(), Some(0));
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn capacity_holds_with_writes_in_flight() {
    let capacity = 20_000;
    let store = one_shard(capacity);
    let mut open: Vec<Box<dyn StoreWriter>> = Vec::new();
    // Reservation each open writer should hold.
    let mut open_weights: Vec<u64> = Vec::new();
    let mut rng_state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for i in 0..500u64 {
        let key = format!("key-{}", next() % 40);
        match next() % 4 {
            0 if open.len() < 3 => {
                // Hold a writer open across later operations.
                if let Ok(mut w) = store.put(&key, meta()).await {
                    let n = (next() % 3000) as usize;
                    if w.write(Bytes::from(vec![1u8; n])).await.is_ok() {
                        open.push(w);
                        open_weights.push(weight(&key, n));
                    }
                }
            }
            1 if !open.is_empty() => {
                let w = open.remove(0);
                open_weights.remove(0);
                if i % 2 == 0 {
                    let _ = w.commit().await;
                }
            }
            _ => {
                let n = (next() % 6000) as usize;
                let _ = put_bytes(&store, &key, &vec![2u8; n]).await;
            }
        }
        let used = store.used_bytes().unwrap();
        assert!(
            used <= capacity,
            "op {i}: used {used} > capacity {capacity}"
        );
        assert_accounting(&store, open_weights.iter().sum());
    }
    drop(open);
    assert_accounting(&store, 0);
    assert!(store.evictions() > 0);
}

#[tokio::test]
async fn eviction_follows_the_policy_order() {
    // Room for exactly three 1000-byte entries.
    let store = one_shard(3 * weight("a", 1000));
    for key in ["a", "b", "c"] {
        put_bytes(&store, key, &[0u8; 1000]).await.unwrap();
    }
    assert_eq!(store.evictions(), 0);
    // A hit does not save "a" under FIFO.
    assert!(get_bytes(&store, "a").await.is_some());
    put_bytes(&store, "d", &[0u8; 1000]).await.unwrap();
    assert!(
        get_bytes(&store, "a").await.is_none(),
        "oldest evicted first"
    );
    assert_eq!(store.evictions(), 1);
    put_bytes(&store, "e", &[0u8; 1000]).await.unwrap();
    assert!(get_bytes(&store, "b").await.is_none());
    for key in ["c", "d", "e"] {
        assert!(get_bytes(&store, key).await.is_some(), "{key} kept");
    }
    assert_eq!(store.evictions(), 2);
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn capacity_holds_even_when_the_policy_never_picks_a_victim() {
    let store = MemStore::builder()
        .capacity(10_000)
        .shards(1)
        .max_object_size(10_000)
        .policy(PolicyKind::Custom(Arc::new(|_| Box::new(NeverEvicts))))
        .build();
    for i in 0..20 {
        put_bytes(&store, &format!("k{i}"), &[0u8; 2000])
            .await
            .unwrap();
        assert!(store.used_bytes().unwrap() <= 10_000);
    }
    assert_eq!(store.len(), Some(4));
    assert_eq!(store.evictions(), 16);
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn oversized_object_is_rejected_and_leaves_no_trace() {
    let store = MemStore::builder()
        .capacity(1 << 20)
        .shards(1)
        .max_object_size(10_000)
        .policy(fifo())
        .build();
    put_bytes(&store, "keep", b"kept").await.unwrap();
    let before = store.used_bytes().unwrap();

    let mut w = store.put("big", meta()).await.unwrap();
    w.write(Bytes::from(vec![0u8; 6000])).await.unwrap();
    let err = w.write(Bytes::from(vec![0u8; 6000])).await.unwrap_err();
    match &err {
        StoreError::TooLarge { key, size, limit } => {
            assert_eq!(key, "big");
            assert_eq!((*size, *limit), (12_000, 10_000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        store.used_bytes(),
        Some(before),
        "reservation released at once"
    );
    // The writer stays refused.
    assert!(w.write(Bytes::from_static(b"x")).await.is_err());
    assert!(matches!(w.commit().await, Err(StoreError::TooLarge { .. })));
    assert!(store.get("big").await.unwrap().is_none());
    assert_eq!(store.len(), Some(1));
    assert_eq!(store.used_bytes(), Some(before));

    // A declared length over the limit is refused up front.
    let declared = meta().with_content_length(20_000);
    assert!(matches!(
        store.put("big", declared).await.map(|_| ()),
        Err(StoreError::TooLarge { size: 20_000, .. })
    ));
    assert_eq!(get_bytes(&store, "keep").await.unwrap(), "kept");
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn object_larger_than_its_shard_is_rejected_without_evicting() {
    let store = MemStore::builder()
        .capacity(8_000)
        .shards(2)
        .max_object_size(1 << 20)
        .policy(fifo())
        .build();
    assert_eq!(store.shard_count(), 2);
    put_bytes(&store, "small", b"s").await.unwrap();
    let err = put_bytes(&store, "huge", &[0u8; 5000]).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { limit: 4000, .. }));
    assert!(
        get_bytes(&store, "small").await.is_some(),
        "nothing evicted in vain"
    );
    assert_eq!(store.evictions(), 0);
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn writer_is_refused_when_other_writers_hold_the_room() {
    let cap = 2 * weight("a", 3000);
    let store = one_shard(cap);
    let mut a = store.put("a", meta()).await.unwrap();
    a.write(Bytes::from(vec![0u8; 3000])).await.unwrap();
    let mut b = store.put("b", meta()).await.unwrap();
    b.write(Bytes::from(vec![0u8; 3000])).await.unwrap();
    assert_eq!(store.used_bytes(), Some(cap));
    assert!(
        store.put("c", meta()).await.is_err(),
        "no room for even the metadata"
    );
    drop(b);
    a.commit().await.unwrap();
    assert_eq!(store.used_bytes(), Some(weight("a", 3000)));
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn commit_with_wrong_declared_length_is_rejected() {
    let store = one_shard(1 << 20);
    let mut w = store
        .put("k", meta().with_content_length(10))
        .await
        .unwrap();
    w.write(Bytes::from_static(b"short")).await.unwrap();
    assert!(matches!(
        w.commit().await,
        Err(StoreError::Corrupt { ref key, .. }) if key == "k"
    ));
    assert!(store.get("k").await.unwrap().is_none());
    assert_eq!(store.used_bytes(), Some(0));
}

#[tokio::test]
async fn commit_replaces_the_previous_entry_and_releases_its_bytes() {
    let store = one_shard(1 << 20);
    put_bytes(&store, "k", &[1u8; 5000]).await.unwrap();
    let old = store.get("k").await.unwrap().unwrap();
    put_bytes(&store, "k", b"new").await.unwrap();
    assert_eq!(get_bytes(&store, "k").await.unwrap(), "new");
    assert_eq!(store.used_bytes(), Some(weight("k", 3)));
    assert_eq!(store.len(), Some(1));
    // A reader that started before the swap still sees the whole old body.
    assert_eq!(old.body.collect().await.unwrap(), vec![1u8; 5000]);
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn update_metadata_swaps_metadata_and_keeps_body() {
    let store = one_shard(1 << 20);
    let mut w = store
        .put("k", meta().with_etag("\"v1\"").with_content_length(4))
        .await
        .unwrap();
    w.write(Bytes::from_static(b"body")).await.unwrap();
    w.commit().await.unwrap();

    let mut headers = http::HeaderMap::new();
    headers.insert("x-version", HeaderValue::from_static("2"));
    let new_meta = meta()
        .with_etag("\"v2\"")
        .with_headers(headers)
        .with_content_length(999);
    assert!(store.update_metadata("k", new_meta).await.unwrap());

    let entry = store.get("k").await.unwrap().unwrap();
    assert_eq!(entry.meta.etag.as_deref(), Some("\"v2\""));
    assert_eq!(entry.meta.headers["x-version"], "2");
    assert_eq!(entry.meta.content_length, Some(4), "stored length kept");
    assert_eq!(entry.body.collect().await.unwrap(), "body");
    let head = store.head("k").await.unwrap().unwrap();
    assert_eq!(head.etag.as_deref(), Some("\"v2\""));
    // The weight follows the new headers.
    let expected = weight("k", 4) + 4 + ("x-version".len() as u64 + 1 + HEADER_OVERHEAD);
    assert_eq!(store.used_bytes(), Some(expected));

    assert!(!store.update_metadata("absent", meta()).await.unwrap());
    assert!(store.head("absent").await.unwrap().is_none());
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn delete_removes_the_entry_and_its_bytes() {
    let store = one_shard(1 << 20);
    put_bytes(&store, "a", b"one").await.unwrap();
    put_bytes(&store, "b", b"two").await.unwrap();
    store.delete("a").await.unwrap();
    store.delete("never-there").await.unwrap();
    assert!(get_bytes(&store, "a").await.is_none());
    assert_eq!(get_bytes(&store, "b").await.unwrap(), "two");
    assert_eq!(store.used_bytes(), Some(weight("b", 3)));
    assert_eq!(store.len(), Some(1));
    assert_eq!(store.evictions(), 0, "a delete is not an eviction");
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn clear_empties_the_store_but_keeps_writes_in_flight() {
    let store = MemStore::builder()
        .capacity(1 << 20)
        .shards(4)
        .policy(fifo())
        .build();
    for i in 0..50 {
        put_bytes(&store, &format!("k{i}"), b"v").await.unwrap();
    }
    let mut w = store.put("pending", meta()).await.unwrap();
    w.write(Bytes::from_static(b"later")).await.unwrap();
    store.clear().await.unwrap();
    assert_eq!(store.len(), Some(0));
    assert_eq!(store.used_bytes(), Some(weight("pending", 5)));
    w.commit().await.unwrap();
    assert_eq!(get_bytes(&store, "pending").await.unwrap(), "later");
    assert_eq!(store.len(), Some(1));
    assert_accounting(&store, 0);
}

#[tokio::test]
async fn hash_collision_never_serves_another_keys_body() {
    let store = MemStore::with_fixed_id(1 << 20, fifo());
    put_bytes(&store, "alpha", b"alpha-body").await.unwrap();
    assert!(
        store.get("beta").await.unwrap().is_none(),
        "same id, other key: miss"
    );
    assert!(store.try_get_now("beta").unwrap().unwrap().is_none());
    assert!(store.head("beta").await.unwrap().is_none());
    assert!(!store.update_metadata("beta", meta()).await.unwrap());
    store.delete("beta").await.unwrap();
    assert_eq!(get_bytes(&store, "alpha").await.unwrap(), "alpha-body");

    put_bytes(&store, "beta", b"beta-body").await.unwrap();
    assert_eq!(get_bytes(&store, "beta").await.unwrap(), "beta-body");
    assert!(
        get_bytes(&store, "alpha").await.is_none(),
        "replaced, not mixed up"
    );
    assert_eq!(store.len(), Some(1));
    assert_eq!(store.used_bytes(), Some(weight("beta", 9)));
    assert_accounting(&store, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_keep_accounting_consistent() {
    let store = Arc::new(
        MemStore::builder()
            .capacity(200_000)
            .shards(4)
            .max_object_size(20_000)
            .policy(fifo())
            .build(),
    );
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut hits = 0u32;
            for i in 0..400u64 {
                let key = format!("k{}", (i * 7 + t * 13) % 64);
                if (i + t) % 3 == 0 {
                    if let Some(entry) = store.try_get_now(&key).unwrap().unwrap() {
                        let body = entry.body.collect().await.unwrap();
                        // Every body is filled with one byte derived from its key.
                        let tag = key[1..].parse::<u8>().unwrap();
                        assert!(body.iter().all(|&b| b == tag), "body of {key} intact");
                        hits += 1;
                    }
                } else {
                    let tag = key[1..].parse::<u8>().unwrap();
                    let len = 500 + ((i * 31 + t) % 15_000) as usize;
                    let mut w = match store.put(&key, meta()).await {
                        Ok(w) => w,
                        Err(_) => continue,
                    };
                    let mut ok = true;
                    for piece in vec![tag; len].chunks(4096) {
                        if w.write(Bytes::copy_from_slice(piece)).await.is_err() {
                            ok = false;
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    if ok && i % 5 != 0 {
                        let _ = w.commit().await;
                    }
                }
                assert!(store.used_bytes().unwrap() <= 200_000);
            }
            hits
        }));
    }
    let mut hits = 0;
    for task in tasks {
        hits += task.await.unwrap();
    }
    assert!(hits > 0);
    assert!(store.len().unwrap() > 0);
    assert_accounting(&store, 0);
}

#[test]
fn default_shards_can_hold_a_maximal_object() {
    let store = MemStore::new(256 * 1024 * 1024);
    let shard_capacity = store.capacity() / store.shard_count() as u64;
    assert!(shard_capacity >= 2 * store.max_object_size());
    assert_eq!(store.max_object_size(), 16 * 1024 * 1024);
    let tiny = MemStore::new(100_000);
    assert_eq!(tiny.shard_count(), 1);
}

/// Header values that are slices of a larger buffer (as hyper parses them out of its read
/// buffer) are copied when stored, and by a metadata update: the store holds no reference to
/// the buffer, which it does not account for. Values, their order and sensitivity are kept.
#[tokio::test]
async fn stored_header_values_do_not_pin_the_buffer_they_were_parsed_from() {
    let store = one_shard(1 << 20);
    let buffer = Bytes::from(vec![b'a'; 64 * 1024]);
    let sliced = |range: std::ops::Range<usize>| {
        HeaderValue::from_maybe_shared(buffer.slice(range)).expect("ASCII")
    };
    let mut m = meta();
    m.headers.append("x-one", sliced(0..3));
    m.headers.append("x-two", sliced(10..12));
    let mut secret = sliced(20..24);
    secret.set_sensitive(true);
    m.headers.append("x-one", secret);
    m.headers.append("x-four", sliced(40..41));
    let room = |h: &http::HeaderMap| h.capacity() >= h.keys_len() + crate::entry::HEADER_ROOM;
    assert!(
        !room(&m.headers),
        "this map has no room for an answer's fields"
    );
    let mut w = store.put("k", m).await.unwrap();
    w.write(Bytes::from_static(b"body")).await.unwrap();
    w.commit().await.unwrap();
    assert!(
        buffer.is_unique(),
        "the stored entry holds on to the buffer"
    );

    let got = store.get("k").await.unwrap().expect("stored");
    let fields: Vec<(String, Vec<u8>, bool)> = got
        .meta
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
        .collect();
    assert_eq!(
        fields,
        [
            ("x-one".to_owned(), b"aaa".to_vec(), false),
            ("x-one".to_owned(), b"aaaa".to_vec(), true),
            ("x-two".to_owned(), b"aa".to_vec(), false),
            ("x-four".to_owned(), b"a".to_vec(), false),
        ]
    );

    // A map without room for what an answer adds was rebuilt with it.
    assert!(room(&got.meta.headers));

    // A map that has the room (as the engine's have) keeps it, its values copied in place.
    let mut refreshed = meta();
    refreshed.headers = http::HeaderMap::with_capacity(16);
    refreshed.headers.append("x-three", sliced(30..35));
    assert!(store.update_metadata("k", refreshed).await.unwrap());
    assert!(
        buffer.is_unique(),
        "the updated entry holds on to the buffer"
    );
    let got = store.get("k").await.unwrap().unwrap();
    assert_eq!(got.meta.headers["x-three"], "aaaaa");
    assert!(room(&got.meta.headers));
}
