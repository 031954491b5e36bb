//! Stampede protection: one origin fetch per key, and every follower streams the fill.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, get as fetch, serve};
use daramjwee::http::CacheLayer;
use daramjwee::{Cache, EntryBody, Error, Fetched, GetOptions, Metadata, Outcome};
use http::StatusCode;
use http_body_util::BodyExt;

const CHUNK: usize = 4096;
const CHUNKS: u32 = 32;

fn chunk(i: u32) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; CHUNK])
}

fn expected_body() -> Vec<u8> {
    (0..CHUNKS).flat_map(|i| chunk(i).to_vec()).collect()
}

/// A slow origin: 32 chunks of 4 KiB, 15 ms apart; `/fail` dies after 8 chunks.
fn slow_origin(calls: Arc<AtomicUsize>) -> Router {
    async fn slow(State(calls): State<Arc<AtomicUsize>>) -> Response {
        calls.fetch_add(1, Ordering::SeqCst);
        let stream = futures_util::stream::unfold(0u32, |i| async move {
            if i == CHUNKS {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
            Some((Ok::<_, Infallible>(chunk(i)), i + 1))
        });
        (
            [
                ("cache-control", "max-age=60"),
                ("content-length", &(CHUNK * CHUNKS as usize).to_string()),
            ],
            Body::from_stream(stream),
        )
            .into_response()
    }
    async fn fail(State(calls): State<Arc<AtomicUsize>>) -> Response {
        calls.fetch_add(1, Ordering::SeqCst);
        let stream = futures_util::stream::unfold(0u32, |i| async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            if i == 8 {
                return Some((Err(std::io::Error::other("origin died")), i + 1));
            }
            if i > 8 {
                return None;
            }
            Some((Ok(chunk(i)), i + 1))
        });
        ([("cache-control", "max-age=60")], Body::from_stream(stream)).into_response()
    }
    Router::new()
        .route("/slow", get(slow))
        .route("/fail", get(fail))
        .with_state(calls)
}

async fn setup() -> (std::net::SocketAddr, Arc<AtomicUsize>, Cache) {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = Cache::builder().build();
    let app = slow_origin(calls.clone()).layer(CacheLayer::new(cache.clone()));
    (serve(app).await, calls, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_make_one_origin_call() {
    let (addr, calls, _) = setup().await;
    let c = client();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { fetch(&c, addr, "/slow").await })
        })
        .collect();
    let expected = expected_body();
    let mut collapsed = 0;
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.body().as_ref(), expected.as_slice());
        if got.cache_status().contains("collapsed") {
            collapsed += 1;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(collapsed > 0, "followers must be reported as collapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_full_bodies_when_the_leader_disconnects() {
    let (addr, calls, _) = setup().await;
    let c = client();
    let leader = c
        .request(
            http::Request::get(format!("http://{addr}/slow"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let followers: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { fetch(&c, addr, "/slow").await })
        })
        .collect();
    // The leader reads one chunk and goes away.
    let mut body = leader.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let expected = expected_body();
    for f in followers {
        assert_eq!(f.await.unwrap().body().as_ref(), expected.as_slice());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_failure_mid_body_errors_every_follower_and_stores_nothing() {
    let (addr, calls, cache) = setup().await;
    let c = client();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { fetch(&c, addr, "/fail").await })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.body.is_err(),
            "no follower may see a clean end of a failed fill"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let key = format!("http://{addr}/fail");
    assert!(cache
        .tier_store(0)
        .unwrap()
        .head(&key)
        .await
        .unwrap()
        .is_none());
}

fn slow_entry(calls: Arc<AtomicUsize>) -> impl daramjwee::Fetcher {
    move |_prev: Option<Arc<Metadata>>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        let stream = futures_util::stream::unfold(0u32, |i| async move {
            if i == CHUNKS {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok::<_, Error>(chunk(i)), i + 1))
        });
        Ok::<_, daramjwee::BoxError>(Fetched::Entry {
            meta: Metadata::new(StatusCode::OK),
            body: EntryBody::from_stream(stream),
        })
    }
}

#[tokio::test]
async fn a_stuck_fill_does_not_block_the_key_after_the_lock_age() {
    let cache = Cache::builder()
        .lock_age(Duration::from_millis(100))
        .lock_wait(Duration::from_millis(100))
        .build();
    let stuck = cache.clone();
    tokio::spawn(async move {
        let _ = stuck
            .get("k", |_| {
                std::future::pending::<Result<Fetched, daramjwee::BoxError>>()
            })
            .await;
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Within the lock age: a follower waits `lock_wait`, then fetches on its own.
    let calls = Arc::new(AtomicUsize::new(0));
    let waited = cache.get("k", slow_entry(calls.clone())).await.unwrap();
    assert_eq!(waited.outcome, Outcome::Pass);
    assert_eq!(waited.body.collect().await.unwrap(), expected_body());
    tokio::time::sleep(Duration::from_millis(120)).await;
    // Past the lock age: a new fill leads and stores.
    let fresh = cache.get("k", slow_entry(calls.clone())).await.unwrap();
    assert_eq!(fresh.outcome, Outcome::Miss);
    assert_eq!(fresh.body.collect().await.unwrap(), expected_body());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_late_follower_past_the_retained_start_reads_the_stored_entry() {
    let cache = Cache::builder()
        .follower_retain(2 * CHUNK as u64)
        .stream_window(4 * CHUNK as u64)
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = cache.get("k", slow_entry(calls.clone())).await.unwrap();
    let reader = tokio::spawn(leader.body.collect());
    // Let the fill get past the retained start.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let late = cache.get("k", slow_entry(calls.clone())).await.unwrap();
    assert_eq!(late.body.collect().await.unwrap(), expected_body());
    assert_eq!(reader.await.unwrap().unwrap(), expected_body());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn background_refreshes_are_coalesced_per_key() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get("k", slow_entry(calls.clone()))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let mut accepted = 0;
    for _ in 0..10 {
        if cache.schedule_refresh("k", slow_entry(calls.clone())) {
            accepted += 1;
        }
    }
    assert!(accepted >= 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "ten refresh requests, one refresh"
    );
}

#[tokio::test]
async fn concurrent_cold_hits_promote_once() {
    let cold = Arc::new(daramjwee::store::MemStore::new(16 << 20));
    let cache = Cache::builder()
        .hot(daramjwee::store::MemStore::new(16 << 20))
        .tier(cold.clone(), None)
        .build();
    {
        use daramjwee::store::Store;
        let mut w = cold.put("k", Metadata::new(StatusCode::OK)).await.unwrap();
        for i in 0..CHUNKS {
            w.write(chunk(i)).await.unwrap();
        }
        w.commit().await.unwrap();
    }
    let lookups = futures_util::future::join_all(
        (0..10).map(|_| cache.get_with("k", GetOptions::default(), slow_entry(Arc::default()))),
    )
    .await;
    for l in lookups {
        let l = l.unwrap();
        assert_eq!(
            l.outcome,
            Outcome::Hit {
                tier: 1,
                stale: false
            }
        );
        assert_eq!(l.body.collect().await.unwrap(), expected_body());
    }
    assert_eq!(cache.stats().promotions, 1);
}
