//! The memory tier's weight estimate against the heap its entries really take, counted by a
//! global allocator that wraps the system's (this test binary's only test, so nothing else
//! allocates while it counts).

use bytes::Bytes;
use daramjwee::eviction::PolicyKind;
use daramjwee::store::{MemStore, Store};
use daramjwee::Metadata;
use http::{HeaderValue, StatusCode};

#[path = "../examples/support/live_heap.rs"]
mod live_heap;
use live_heap::LiveHeap;

#[global_allocator]
static GLOBAL: LiveHeap = LiveHeap;

/// The fields of a typical stored response.
const FIELDS: [(&str, &str); 6] = [
    ("content-type", "application/octet-stream"),
    ("etag", "\"1k-v1\""),
    ("cache-control", "public, max-age=3600"),
    ("content-length", "1024"),
    ("date", "Sat, 05 Dec 2026 10:17:07 GMT"),
    ("last-modified", "Sat, 05 Dec 2026 10:17:07 GMT"),
];

/// Stores `n` entries of a 1 KiB body with the first `fields` of [`FIELDS`]; returns the heap
/// they took and the bytes the store counts for them, each per entry.
async fn per_entry(n: u64, fields: usize, policy: PolicyKind) -> (u64, u64) {
    let store = MemStore::builder().capacity(4 << 30).policy(policy).build();
    let body = Bytes::from(vec![7u8; 1024]);
    let before = LiveHeap::bytes();
    for i in 0..n {
        let mut meta = Metadata::new(StatusCode::OK);
        for (name, value) in &FIELDS[..fields] {
            meta.headers.insert(*name, HeaderValue::from_static(value));
        }
        let key = format!("http://127.0.0.1:8080/obj/1k?u={i}-{}", 100_000_000 + i * 7);
        let mut w = store.put(&key, meta).await.unwrap();
        w.write(body.clone()).await.unwrap();
        w.commit().await.unwrap();
    }
    let heap = LiveHeap::bytes() - before;
    (heap / n, store.used_bytes().unwrap() / n)
}

/// What the store counts stays within 15% of the heap its entries take, with and without
/// headers, whatever the eviction policy: a tier given 1 GiB holds about 1 GiB. (Before the
/// estimate was measured, it counted 1,326 of 1,534 bytes for an entry without headers and
/// 1,691 of 2,327 with six, with S3-FIFO.)
#[tokio::test]
async fn the_memory_tier_counts_what_its_entries_take() {
    let policies = [
        PolicyKind::S3Fifo,
        PolicyKind::Lru,
        PolicyKind::Sieve,
        PolicyKind::TinyLfu,
    ];
    for policy in policies {
        for fields in [0, FIELDS.len()] {
            let name = policy.name();
            let (heap, counted) = per_entry(20_000, fields, policy.clone()).await;
            let ratio = counted as f64 / heap as f64;
            assert!(
                (0.85..=1.15).contains(&ratio),
                "{name}, {fields} fields: the store counts {counted} bytes per entry, the heap \
                 took {heap}"
            );
        }
    }
}
