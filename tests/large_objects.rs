//! Placement by size (issue 20), through the layer over real TCP: a body goes to the highest
//! tier that keeps a body of its size, a body of unknown length outgrows the hot tier into the
//! cold one without a second fetch, a body too large for every tier streams unstored and is
//! counted, and what a lower tier holds that the hot tier cannot is served from there.

mod common;
mod large_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::serve;
use daramjwee::http::CacheLayer;
use daramjwee::store::{FileStore, MemStore, Store};
use daramjwee::Cache;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use large_common::{get_checked, origin, Calls, TestClient, MIB};

/// The hot tier keeps bodies up to 4 MiB (64 MiB / 16).
const HOT_BYTES: u64 = 64 * MIB;

struct Setup {
    addr: SocketAddr,
    calls: Calls,
    cache: Cache,
    hot: Arc<MemStore>,
    cold: Arc<FileStore>,
    client: TestClient,
    _dir: tempfile::TempDir,
}

/// The layer over the test origin: a 64 MiB memory hot tier, a file cold tier of `cold_bytes`.
async fn setup(cold_bytes: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let hot = Arc::new(MemStore::builder().capacity(HOT_BYTES).build());
    let cold = Arc::new(open_cold(dir.path(), cold_bytes).await);
    let cache = Cache::builder()
        .tier(hot.clone(), None)
        .tier(cold.clone(), None)
        .build();
    let (app, calls) = origin();
    let addr = serve(app.layer(CacheLayer::new(cache.clone()))).await;
    Setup {
        addr,
        calls,
        cache,
        hot,
        cold,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _dir: dir,
    }
}

async fn open_cold(dir: &Path, bytes: u64) -> FileStore {
    FileStore::builder(dir)
        .capacity(bytes)
        .open()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `store` holds the entry for `path` (a fill commits a moment after
/// its readers saw the end of the body).
async fn wait_for(store: &dyn Store, addr: SocketAddr, path: &str) {
    for _ in 0..1000 {
        if store.head(&key(addr, path)).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never appeared in {}", store.name());
}

/// The cache's stats once `fills_by_tier` reads `want` (or after 5 s, for the assertion to
/// show): a fill is counted when its commit returns, a moment after the entry is visible in
/// the store (the directory's `fsync` comes in between).
async fn stats_once_filled(cache: &Cache, want: &[u64]) -> daramjwee::CacheStats {
    for _ in 0..500 {
        if cache.stats().fills_by_tier == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cache.stats()
}

/// The layer's default key for a GET of `path`.
fn key(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// A miss that lands in the cold tier, then hits served from there (never promoted), with one
/// origin call and every byte checked.
async fn lands_in_cold(path: &str, size: u64) {
    let s = setup(4 << 30).await;
    let miss = get_checked(&s.client, s.addr, path, None).await;
    assert_eq!((miss.status.as_u16(), miss.len), (200, size));
    assert!(
        miss.cache_status().contains("stored"),
        "{}",
        miss.cache_status()
    );
    wait_for(&*s.cold, s.addr, path).await;
    assert!(s.hot.head(&key(s.addr, path)).await.unwrap().is_none());
    for _ in 0..2 {
        let hit = get_checked(&s.client, s.addr, path, None).await;
        assert_eq!(hit.len, size);
        let status = hit.cache_status();
        assert!(
            status.contains("; hit;") && status.ends_with("detail=file"),
            "{status}"
        );
    }
    assert_eq!(s.calls.get(), 1);
    let stats = stats_once_filled(&s.cache, &[0, 1]).await;
    assert_eq!(stats.fills_by_tier, vec![0, 1], "{stats:?}");
    assert_eq!(stats.fills_committed, 1);
    assert_eq!(
        (stats.promotions, stats.store_errors, stats.too_large),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_declared_100_mib_body_goes_to_the_cold_tier() {
    lands_in_cold("/cl/100", 100 * MIB).await;
}

#[tokio::test]
async fn a_chunked_100_mib_body_outgrows_the_hot_tier_into_the_cold_one() {
    lands_in_cold("/chunked/100", 100 * MIB).await;
}

#[tokio::test]
async fn one_gib_with_and_without_length_is_cached_in_the_cold_tier() {
    lands_in_cold("/cl/1024", 1024 * MIB).await;
    lands_in_cold("/chunked/1024", 1024 * MIB).await;
}

#[tokio::test]
async fn a_small_chunked_body_is_kept_hot_and_cold_without_a_copy() {
    let s = setup(1 << 30).await;
    let miss = get_checked(&s.client, s.addr, "/chunked/1", None).await;
    assert_eq!(miss.len, MIB);
    wait_for(&*s.cold, s.addr, "/chunked/1").await;
    wait_for(&*s.hot, s.addr, "/chunked/1").await;
    let hit = get_checked(&s.client, s.addr, "/chunked/1", None).await;
    let status = hit.cache_status();
    assert!(
        status.contains("; hit;") && status.ends_with("detail=memory"),
        "{status}"
    );
    let stats = stats_once_filled(&s.cache, &[1, 1]).await;
    // Both tiers were written by the fill itself: one commit each, no background copy.
    assert_eq!(stats.fills_by_tier, vec![1, 1], "{stats:?}");
    assert_eq!((s.calls.get(), stats.store_errors), (1, 0));
}

/// A 1 GiB object, larger than every tier (cold: 512 MiB), with and without a declared length.
#[tokio::test]
async fn a_body_larger_than_every_tier_streams_unstored_and_is_counted() {
    let s = setup(512 * MIB).await;
    for (path, round) in [("/cl/1024", 1), ("/chunked/1024", 2)] {
        let got = get_checked(&s.client, s.addr, path, None).await;
        assert_eq!(got.len, 1024 * MIB);
        if path.starts_with("/cl") {
            // Known at the start: the response says so (RFC 9211 allows a detail).
            assert!(
                got.cache_status().contains("detail=too-large"),
                "{}",
                got.cache_status()
            );
            assert!(!got.cache_status().contains("stored"));
        }
        let again = get_checked(&s.client, s.addr, path, Some(MIB)).await;
        assert!(again.cache_status().contains("fwd=uri-miss"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = s.cache.stats();
        assert!(stats.too_large >= round, "{stats:?}");
        assert_eq!(
            (stats.fills_committed, stats.store_errors),
            (0, 0),
            "{stats:?}"
        );
    }
    assert_eq!(s.calls.get(), 4);
    assert!(s.cold.is_empty().unwrap() && s.hot.is_empty().unwrap());
}

#[tokio::test]
async fn a_client_gone_while_the_body_outgrows_the_hot_tier_stores_nothing() {
    let s = setup(1 << 30).await;
    // 20 MiB of the 100: the hot tier (4 MiB) has refused it, the cold one is taking it.
    let part = get_checked(&s.client, s.addr, "/slow/100", Some(20 * MIB)).await;
    assert!(part.len >= 20 * MIB && part.len < 100 * MIB);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = s.cache.stats();
    assert_eq!(stats.fills_committed, 0, "{stats:?}");
    assert_eq!(stats.fills_failed, 1, "{stats:?}");
    assert!(s.cold.is_empty().unwrap() && s.hot.is_empty().unwrap());
    // Nothing half-written is ever served: the next request fetches again, whole.
    let whole = get_checked(&s.client, s.addr, "/slow/100", None).await;
    assert_eq!((whole.len, s.calls.get()), (100 * MIB, 2));
}

#[tokio::test]
async fn followers_of_a_large_fill_stream_it_with_one_origin_call() {
    let s = setup(1 << 30).await;
    let reads = (0..4).map(|_| get_checked(&s.client, s.addr, "/slow/64", None));
    let got = futures_util::future::join_all(reads).await;
    for g in &got {
        assert_eq!(g.len, 64 * MIB);
    }
    let collapsed = got
        .iter()
        .filter(|g| g.cache_status().contains("collapsed"))
        .count();
    assert_eq!((s.calls.get(), collapsed), (1, 3));
    wait_for(&*s.cold, s.addr, "/slow/64").await;
    let stats = stats_once_filled(&s.cache, &[0, 1]).await;
    assert_eq!(stats.fills_by_tier, vec![0, 1], "{stats:?}");
}

/// Through the engine, writing through: each tier that keeps the body's size takes it as it
/// streams, and the lookup says which tier is the highest.
#[tokio::test]
async fn written_through_a_body_goes_to_every_tier_that_keeps_its_size() {
    use daramjwee::{ColdFill, Storing};
    let dir = tempfile::tempdir().unwrap();
    let hot = MemStore::builder()
        .capacity(MIB)
        .max_object_size(64 * 1024)
        .build();
    let cache = Cache::builder()
        .hot(hot)
        .cold(open_cold(dir.path(), 64 * MIB).await)
        .cold_fill(ColdFill::WriteThrough)
        .build();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for (key, size, storing, by_tier) in [
        ("small", 10_000, Storing::Tier(0), vec![1, 1]),
        ("large", 200_000, Storing::Tier(1), vec![1, 2]),
    ] {
        let body = vec![7u8; size];
        let miss = cache
            .get(key, common::counting_origin(&calls, body.clone()))
            .await
            .unwrap();
        assert_eq!(miss.storing, storing);
        assert_eq!(miss.body.collect().await.unwrap(), body);
        let stats = stats_once_filled(&cache, &by_tier).await;
        assert_eq!(stats.fills_by_tier, by_tier, "{key}: {stats:?}");
        assert_eq!((stats.store_errors, stats.too_large), (0, 0));
    }
}
