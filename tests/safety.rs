//! Safe in front of real traffic (issue 14): no poisoning through unkeyed request fields, no
//! deadlock with limiting middleware below the layer, no retry storm against a failing origin,
//! no write when a stale entry is served on error, no proxy credentials crossing the cache.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use daramjwee::http::{CacheLayer, CacheService, PolicyMode, TARGET_REWRITING};
use daramjwee::store::MemStore;
use daramjwee::Cache;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder, ServiceExt};

fn cache() -> Cache {
    Cache::builder().hot(MemStore::new(16 << 20)).build()
}

/// An origin that builds its body from the request fields a framework would trust behind a
/// proxy, as Rails, Django or Express do when they make links.
fn echoing_origin(calls: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(get(move |req: AxumRequest| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut body = format!(
                "{} {} host={:?}",
                req.method(),
                req.uri(),
                req.headers().get("host")
            );
            for name in &TARGET_REWRITING {
                if let Some(v) = req.headers().get(name) {
                    body.push_str(&format!(" {name}={v:?}"));
                }
            }
            for name in ["proxy-authorization", "x-secret-hop"] {
                if req.headers().contains_key(name) {
                    body.push_str(&format!(" LEAKED {name}"));
                }
            }
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("proxy-authenticate", "Basic realm=\"origin\"")
                .body(Body::from(body))
                .unwrap()
        }
    }))
}

async fn body_of<B>(res: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    res.into_body().collect().await.unwrap().to_bytes()
}

fn req(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(path).header("host", "shop.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

// Every target-rewriting field, and the Host itself: an attack request followed by a plain one
// for the same URL gets a body made for the plain request.
#[tokio::test]
async fn no_unkeyed_request_field_poisons_what_other_clients_read() {
    let mut vectors: Vec<(String, &str)> = TARGET_REWRITING
        .iter()
        .map(|n| (n.as_str().to_owned(), "evil.example"))
        .collect();
    vectors.push(("host".into(), "evil.example"));
    for (i, (name, value)) in vectors.iter().enumerate() {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = echoing_origin(calls.clone()).layer(CacheLayer::new(cache()));
        let path = format!("/page/{i}");
        let attack = if name == "host" {
            Request::get(&path)
                .header("host", *value)
                .body(Body::empty())
                .unwrap()
        } else {
            req(&path, &[(name.as_str(), value)])
        };
        let _ = body_of(app.clone().oneshot(attack).await.unwrap()).await;
        let plain = app.clone().oneshot(req(&path, &[])).await.unwrap();
        let body = body_of(plain).await;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("evil"), "{name}: poisoned: {text}");
        assert!(text.contains("shop.example"), "{name}: {text}");
    }
}

// With `TargetHeaders::Strip`, the origin never sees the fields at all.
#[tokio::test]
async fn stripped_target_fields_never_reach_the_origin() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::builder(cache())
        .target_headers(daramjwee::http::TargetHeaders::Strip)
        .build();
    let app = echoing_origin(calls.clone()).layer(layer);
    let res = app
        .oneshot(req(
            "/s",
            &[
                ("x-forwarded-host", "evil.example"),
                ("x-original-url", "/admin"),
            ],
        ))
        .await
        .unwrap();
    let text = String::from_utf8(body_of(res).await.to_vec()).unwrap();
    assert!(!text.contains("evil") && !text.contains("admin"), "{text}");
}

#[tokio::test]
async fn proxy_credentials_never_cross_the_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = echoing_origin(calls.clone()).layer(CacheLayer::new(cache()));
    let creds = [
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("connection", "x-secret-hop"),
        ("x-secret-hop", "1"),
    ];
    let miss = app.clone().oneshot(req("/c", &creds)).await.unwrap();
    assert!(!miss.headers().contains_key("proxy-authenticate"));
    let text = String::from_utf8(body_of(miss).await.to_vec()).unwrap();
    assert!(!text.contains("LEAKED"), "{text}");
    let hit = app.oneshot(req("/c", &[])).await.unwrap();
    assert!(!hit.headers().contains_key("proxy-authenticate"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Sends `n` concurrent GETs for `paths` through clones of `svc`, each caller driving
/// readiness then calling, as hyper and axum do; fails if any takes longer than 10 s.
async fn concurrent_gets<S>(svc: S, paths: Vec<String>) -> Vec<(StatusCode, Bytes)>
where
    S: Service<Request<Body>, Response = Response<daramjwee::http::CacheBody<Body>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let mut s = svc.clone();
            tokio::spawn(async move {
                let res = s.ready().await.unwrap().call(req(&p, &[])).await.unwrap();
                let status = res.status();
                (status, body_of(res).await)
            })
        })
        .collect();
    let all = futures_util::future::join_all(tasks);
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("requests through the limited origin never completed (deadlock)")
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// A counted origin whose answers must be revalidated each time (ETag, max-age=0).
fn revalidating_origin(calls: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(get(move |req: AxumRequest| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let path = req.uri().path().to_owned();
            let cc = if path.starts_with("/stale") {
                "max-age=0"
            } else {
                "max-age=60"
            };
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                return Response::builder()
                    .status(304)
                    .header("etag", "\"v1\"")
                    .header("cache-control", cc)
                    .body(Body::empty())
                    .unwrap();
            }
            Response::builder()
                .header("etag", "\"v1\"")
                .header("cache-control", cc)
                .body(Body::from(path))
                .unwrap()
        }
    }))
}

/// Misses on 8 keys, hits on them, and revalidations of 4 others, all concurrent, through
/// `svc` (the layer above a limiting middleware).
async fn exercise_limited<S>(svc: S, calls: &AtomicUsize)
where
    S: Service<Request<Body>, Response = Response<daramjwee::http::CacheBody<Body>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    let keys: Vec<String> = (0..8).map(|i| format!("/k/{i}")).collect();
    let got = concurrent_gets(svc.clone(), keys.clone()).await;
    for (i, (status, body)) in got.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(body, &keys[i]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    let hits = concurrent_gets(svc.clone(), keys.clone()).await;
    assert!(hits.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(calls.load(Ordering::SeqCst), 8, "hits call the origin");
    let stale: Vec<String> = (0..4).map(|i| format!("/stale/{i}")).collect();
    concurrent_gets(svc.clone(), stale.clone()).await;
    let again = concurrent_gets(svc, stale.clone()).await;
    for (i, (status, body)) in again.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(body, &stale[i]);
    }
}

#[tokio::test]
async fn concurrency_limit_below_the_layer_never_deadlocks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache()))
        .concurrency_limit(1)
        .service(revalidating_origin(calls.clone()));
    exercise_limited(svc, &calls).await;
}

#[tokio::test]
async fn buffer_below_the_layer_never_deadlocks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache()))
        .buffer(1)
        .concurrency_limit(1)
        .service(revalidating_origin(calls.clone()));
    exercise_limited(svc, &calls).await;
}

#[tokio::test]
async fn rate_limit_below_the_layer_never_deadlocks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache()))
        .buffer(64)
        .rate_limit(1000, Duration::from_secs(1))
        .service(revalidating_origin(calls.clone()));
    exercise_limited(svc, &calls).await;
}

/// An origin service that fails (a transport error) after `delay`, counting its calls.
#[derive(Clone)]
struct FailingOrigin {
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Service<Request<Body>> for FailingOrigin {
    type Response = Response<Body>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Response<Body>, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "origin down",
            ))
        })
    }
}

// A burst of 100 requests for one key while the origin fails: its followers share the failure
// instead of each calling the origin again.
#[tokio::test]
async fn a_failing_origin_is_called_at_most_twice_by_a_burst() {
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = FailingOrigin {
        calls: calls.clone(),
        delay: Duration::from_millis(100),
    };
    let svc: CacheService<FailingOrigin> = CacheLayer::new(cache()).layer_service(origin);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let s = svc.clone();
            tokio::spawn(async move { s.oneshot(req("/down", &[])).await.map(|r| r.status()) })
        })
        .collect();
    let results = futures_util::future::join_all(tasks).await;
    let mut errors = 0;
    for r in results {
        match r.unwrap() {
            Ok(status) => assert!(status.is_server_error(), "{status}"),
            Err(_) => errors += 1,
        }
    }
    assert!(errors >= 1, "the leader gets the origin's own error");
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 2, "a burst of 100 made {n} origin calls");
}

// Every call into the origin is bounded: one that never answers is a 504, for the leader and
// for its followers.
#[tokio::test(start_paused = true)]
async fn an_origin_that_never_answers_is_cut_off_by_the_origin_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let origin = tower::service_fn(move |_req: Request<Body>| {
        c2.fetch_add(1, Ordering::SeqCst);
        async move {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    });
    let layer = CacheLayer::builder(cache())
        .origin_timeout(Duration::from_secs(2))
        .build();
    let svc = layer.layer_service(origin);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let s = svc.clone();
            tokio::spawn(async move { s.oneshot(req("/hang", &[])).await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// RFC 5861 §4: serving a stale entry because the origin failed changes nothing stored, and is
// counted as stale-on-error, not as a revalidation.
#[tokio::test]
async fn serving_stale_on_error_writes_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let origin = Router::new().route(
        "/s",
        get(move || {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { 200 } else { 503 };
                Response::builder()
                    .status(status)
                    .header("cache-control", "max-age=1, stale-if-error=600")
                    .body(Body::from(if n == 0 { "good" } else { "down" }))
                    .unwrap()
            }
        }),
    );
    let cache = cache();
    let app = origin.layer(
        CacheLayer::builder(cache.clone())
            .policy(PolicyMode::Shared)
            .build(),
    );
    assert_eq!(
        body_of(app.clone().oneshot(req("/s", &[])).await.unwrap()).await,
        "good"
    );
    let key = "http://shop.example/s";
    let hot = cache.tier_store(0).unwrap().clone();
    common::wait_stored(hot.as_ref(), key).await;
    let before = hot.head(key).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let res = app.clone().oneshot(req("/s", &[])).await.unwrap();
        let cs = res.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(
            cs.contains("stale-if-error") && cs.contains("fwd-status=503"),
            "{cs}"
        );
        assert_eq!(body_of(res).await, "good");
    }
    let after = hot.head(key).await.unwrap().unwrap();
    assert_eq!(after.stored_at, before.stored_at, "the entry was rewritten");
    let stats = cache.stats();
    assert_eq!(stats.revalidated, 0);
    assert_eq!(stats.stale_on_error, 3);
}

// The engine's side of the same promises, through its public API.

#[tokio::test]
async fn a_panicking_fetcher_is_reported_as_a_panic() {
    let cache = cache();
    let res = cache
        .get("k", |_| async {
            if true {
                panic!("boom");
            }
            Err("unreachable".into())
        })
        .await;
    assert!(matches!(res, Err(daramjwee::Error::Panicked)), "{res:?}");
}

#[tokio::test]
async fn followers_of_a_failed_fill_share_its_failure_without_fetching() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let fetcher = move |_prev: Option<Arc<daramjwee::Metadata>>| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err::<daramjwee::Fetched, daramjwee::BoxError>("origin down".into())
                };
                cache.get("k", fetcher).await.map(|_| ())
            })
        })
        .collect();
    let mut own = 0;
    let mut shared = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(daramjwee::Error::Fetch(e)) => {
                assert_eq!(e.to_string(), "origin down");
                own += 1;
            }
            Err(daramjwee::Error::FillAbandoned(daramjwee::FillError::Origin)) => shared += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((own, shared), (1, 19));
}

#[tokio::test]
async fn a_stale_answer_serves_the_stored_entry_and_writes_nothing() {
    let cache = Cache::builder()
        .hot(MemStore::new(1 << 20))
        .default_ttl(Duration::ZERO)
        .build();
    let first = cache
        .get("k", |_| async {
            Ok(daramjwee::Fetched::Entry {
                meta: daramjwee::Metadata::new(StatusCode::OK),
                body: daramjwee::EntryBody::from_bytes("kept"),
            })
        })
        .await
        .unwrap();
    assert_eq!(first.body.collect().await.unwrap(), "kept");
    let hot = cache.tier_store(0).unwrap().clone();
    common::wait_stored(hot.as_ref(), "k").await;
    let before = hot.head("k").await.unwrap().unwrap().stored_at;
    let opts = daramjwee::GetOptions::default().revalidate(true);
    let got = cache
        .get_with(
            "k",
            opts,
            |prev: Option<Arc<daramjwee::Metadata>>| async move {
                assert!(prev.is_some(), "the stored entry's metadata is offered");
                Ok(daramjwee::Fetched::Stale {
                    status: Some(StatusCode::SERVICE_UNAVAILABLE),
                })
            },
        )
        .await
        .unwrap();
    assert_eq!(
        got.outcome,
        daramjwee::Outcome::StaleOnError {
            tier: 0,
            status: Some(503)
        }
    );
    assert_eq!(got.body.collect().await.unwrap(), "kept");
    assert_eq!(hot.head("k").await.unwrap().unwrap().stored_at, before);
    assert_eq!(cache.stats().stale_on_error, 1);
}
