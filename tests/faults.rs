//! Faults: failing and hanging stores, hanging origins. The cache fails open: the client gets
//! the origin's correct body or a clear error, nothing wrong is stored, and the cache recovers
//! when the fault clears. The fault-injecting store is the one mock here.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, get as fetch, serve};
use daramjwee::http::CacheLayer;
use daramjwee::store::{MemStore, Store, StoreWriter};
use daramjwee::{Cache, Metadata, StoreError, StoredEntry};

/// A memory store that fails (or hangs) on demand.
#[derive(Debug)]
struct FaultStore {
    inner: MemStore,
    fail: AtomicBool,
    hang: AtomicBool,
}

impl FaultStore {
    fn new() -> Self {
        FaultStore {
            inner: MemStore::new(16 << 20),
            fail: AtomicBool::new(false),
            hang: AtomicBool::new(false),
        }
    }
    async fn gate(&self, key: &str) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::io(key, std::io::Error::other("disk full")));
        }
        Ok(())
    }
}

struct FaultWriter {
    inner: Box<dyn StoreWriter>,
    store: Arc<FaultStore>,
    key: String,
}

#[async_trait]
impl StoreWriter for FaultWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.store.gate(&self.key).await?;
        self.inner.write(chunk).await
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.store.gate(&self.key).await?;
        self.inner.commit().await
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
}

#[derive(Debug, Clone)]
struct Faulty(Arc<FaultStore>);

#[async_trait]
impl Store for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        self.0.gate(key).await?;
        self.0.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        self.0.gate(key).await?;
        self.0.inner.head(key).await
    }
    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        self.0.gate(key).await?;
        Ok(Box::new(FaultWriter {
            inner: self.0.inner.put(key, meta).await?,
            store: self.0.clone(),
            key: key.to_owned(),
        }))
    }
    async fn update_metadata(&self, key: &str, meta: Metadata) -> Result<bool, StoreError> {
        self.0.gate(key).await?;
        self.0.inner.update_metadata(key, meta).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.gate(key).await?;
        self.0.inner.delete(key).await
    }
    async fn clear(&self) -> Result<(), StoreError> {
        self.0.inner.clear().await
    }
}

fn origin(calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/doc",
            get(|State(calls): State<Arc<AtomicUsize>>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=60")], vec![b'd'; 50_000]).into_response()
            }),
        )
        .route(
            "/hang",
            get(|State(calls): State<Arc<AtomicUsize>>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let first = futures_util::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"start"))
                });
                let never = futures_util::stream::pending();
                let body = Body::from_stream(futures_util::StreamExt::chain(first, never));
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(body)
                    .unwrap()
            }),
        )
        .with_state(calls)
}

#[tokio::test]
async fn a_failing_store_fails_open_and_recovers_when_the_fault_clears() {
    let store = Arc::new(FaultStore::new());
    store.fail.store(true, Ordering::SeqCst);
    let cache = Cache::builder().hot(Faulty(store.clone())).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = serve(origin(calls.clone()).layer(CacheLayer::new(cache.clone()))).await;
    let c = client();
    for _ in 0..3 {
        let got = fetch(&c, addr, "/doc").await;
        assert_eq!(got.status, http::StatusCode::OK);
        assert_eq!(got.body().as_ref(), vec![b'd'; 50_000].as_slice());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "nothing could be stored");
    assert!(cache.stats().store_errors >= 3, "{:?}", cache.stats());

    store.fail.store(false, Ordering::SeqCst);
    fetch(&c, addr, "/doc").await;
    let hit = fetch(&c, addr, "/doc").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.body().as_ref(), vec![b'd'; 50_000].as_slice());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_hanging_store_is_cut_off_by_the_operation_timeout() {
    let store = Arc::new(FaultStore::new());
    store.hang.store(true, Ordering::SeqCst);
    let cache = Cache::builder()
        .hot(Faulty(store.clone()))
        .op_timeout(Duration::from_millis(100))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = serve(origin(calls.clone()).layer(CacheLayer::new(cache.clone()))).await;
    let got = fetch(&client(), addr, "/doc").await;
    assert_eq!(got.body().as_ref(), vec![b'd'; 50_000].as_slice());
    assert!(cache.stats().store_errors >= 1);
}

#[tokio::test]
async fn a_hanging_origin_body_ends_in_an_error_and_stores_nothing() {
    let cache = Cache::builder()
        .idle_timeout(Duration::from_millis(200))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = serve(origin(calls.clone()).layer(CacheLayer::new(cache.clone()))).await;
    let got = fetch(&client(), addr, "/hang").await;
    assert!(got.body.is_err(), "a stalled fill must not end cleanly");
    let key = format!("http://{addr}/hang");
    assert!(cache
        .tier_store(0)
        .unwrap()
        .head(&key)
        .await
        .unwrap()
        .is_none());
}
