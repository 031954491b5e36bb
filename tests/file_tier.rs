//! The disk tier under the engine and the layer: restarts, corruption, two persistent tiers.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{client, counting_origin, get as fetch, never, serve, wait_stored};
use daramjwee::http::CacheLayer;
use daramjwee::store::{FileStore, MemStore, Store};
use daramjwee::{Cache, ColdFill, Outcome};

async fn open(dir: &Path) -> FileStore {
    FileStore::builder(dir)
        .capacity(64 << 20)
        .open()
        .await
        .unwrap()
}

fn entry_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("objects"), &mut out);
    out
}

#[tokio::test]
async fn restart_of_a_file_store_keeps_entries() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    {
        let cache = Cache::builder().hot(open(dir.path()).await).build();
        let miss = cache
            .get("k", counting_origin(&calls, body.clone()))
            .await
            .unwrap();
        assert_eq!(miss.body.collect().await.unwrap(), body);
        cache.close(Duration::from_secs(1)).await.unwrap();
    }
    let cache = Cache::builder().hot(open(dir.path()).await).build();
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(
        hit.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(hit.body.collect().await.unwrap(), body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_persistent_tiers_restarted_keep_their_entries() {
    let hot_dir = tempfile::tempdir().unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let cold = Arc::new(open(cold_dir.path()).await);
        let cache = Cache::builder()
            .hot(open(hot_dir.path()).await)
            .tier(cold.clone(), None)
            .cold_fill(ColdFill::WriteThrough)
            .build();
        let miss = cache
            .get("k", counting_origin(&calls, b"both tiers".to_vec()))
            .await
            .unwrap();
        assert_eq!(miss.body.collect().await.unwrap(), "both tiers");
        wait_stored(cold.as_ref(), "k").await;
    }
    // Only the cold tier survives in the second life: the entry comes back from it.
    std::fs::remove_dir_all(hot_dir.path().join("objects")).unwrap();
    let cache = Cache::builder()
        .hot(open(hot_dir.path()).await)
        .tier(Arc::new(open(cold_dir.path()).await), None)
        .build();
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(
        hit.outcome,
        Outcome::Hit {
            tier: 1,
            stale: false
        }
    );
    assert_eq!(hit.body.collect().await.unwrap(), "both tiers");
    wait_stored(cache.tier_store(0).unwrap().as_ref(), "k").await;
    let again = cache.get("k", never()).await.unwrap();
    assert_eq!(
        again.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn background_cold_fill_copies_the_committed_hot_entry() {
    let cold_dir = tempfile::tempdir().unwrap();
    let cold = Arc::new(open(cold_dir.path()).await);
    let cache = Cache::builder()
        .hot(MemStore::new(16 << 20))
        .tier(cold.clone(), None)
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let body = vec![7u8; 100_000];
    cache
        .get("k", counting_origin(&calls, body.clone()))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    wait_stored(cold.as_ref(), "k").await;
    let stored = cold.get("k").await.unwrap().unwrap();
    assert_eq!(stored.body.collect().await.unwrap(), body);
}

#[tokio::test]
async fn corrupted_file_on_disk_is_a_miss_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/doc",
            get(|State(calls): State<Arc<AtomicUsize>>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=60")], vec![b'z'; 200_000]).into_response()
            }),
        )
        .with_state(calls.clone());
    let cache = Cache::builder().hot(open(dir.path()).await).build();
    let addr = serve(app.layer(CacheLayer::new(cache.clone()))).await;
    let c = client();
    let first = fetch(&c, addr, "/doc").await;
    assert_eq!(first.body().len(), 200_000);
    let key = format!("http://{addr}/doc");
    wait_stored(cache.tier_store(0).unwrap().as_ref(), &key).await;

    // Flip one byte in the middle of the stored body.
    let files = entry_files(dir.path());
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();

    // The corrupt entry is never served as a complete body: either the read fails, or the
    // entry is dropped and the origin answers.
    let second = fetch(&c, addr, "/doc").await;
    if let Ok(body) = &second.body {
        assert_eq!(body.as_ref(), vec![b'z'; 200_000].as_slice());
    }
    let third = fetch(&c, addr, "/doc").await;
    assert_eq!(third.body().as_ref(), vec![b'z'; 200_000].as_slice());
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the corrupt entry must not keep being served"
    );
}
