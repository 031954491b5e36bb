//! The tower layer in front of an axum origin, over real TCP.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, get as fetch, send, serve};
use daramjwee::http::{CacheLayer, PolicyMode};
use daramjwee::Cache;

#[derive(Default)]
struct Origin {
    calls: AtomicUsize,
    body_bytes: AtomicUsize,
    conditional: AtomicUsize,
    version: AtomicUsize,
}

type Shared = Arc<Origin>;

fn origin_app(origin: Shared) -> Router {
    Router::new()
        .route("/static", get(static_route))
        .route("/etag", get(etag_route))
        .route("/private", get(private_route))
        .route("/swr", get(swr_route))
        .route("/fail-mid", get(fail_mid_route))
        .route("/slow", get(slow_route))
        .route("/item", get(item_route).post(item_post))
        .route("/{*rest}", get(echo_route))
        .with_state(origin)
}

async fn static_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let body = "hello, cache";
    o.body_bytes.fetch_add(body.len(), Ordering::SeqCst);
    ([("cache-control", "max-age=60"), ("etag", "\"s1\"")], body).into_response()
}

async fn etag_route(State(o): State<Shared>, headers: HeaderMap) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("if-none-match").is_some_and(|v| v == "\"e1\"") {
        o.conditional.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::NOT_MODIFIED,
            [("cache-control", "max-age=0"), ("etag", "\"e1\"")],
        )
            .into_response();
    }
    let body = vec![b'e'; 100_000];
    o.body_bytes.fetch_add(body.len(), Ordering::SeqCst);
    ([("cache-control", "max-age=0"), ("etag", "\"e1\"")], body).into_response()
}

async fn private_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    ([("cache-control", "private, max-age=60")], "mine").into_response()
}

async fn swr_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let v = o.version.fetch_add(1, Ordering::SeqCst);
    (
        [("cache-control", "max-age=1, stale-while-revalidate=60")],
        format!("v{v}"),
    )
        .into_response()
}

async fn fail_mid_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![b'x'; 1000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "origin died",
        )),
    ];
    (
        [("cache-control", "max-age=60")],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

async fn slow_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let stream = futures_util::stream::unfold(0u32, |i| async move {
        if i == 20 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, Infallible>(Bytes::from(vec![b'a' + (i % 26) as u8; 4096])),
            i + 1,
        ))
    });
    (
        [("cache-control", "max-age=60"), ("content-length", "81920")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn item_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let v = o.version.load(Ordering::SeqCst);
    ([("cache-control", "max-age=60")], format!("item v{v}")).into_response()
}

async fn item_post(State(o): State<Shared>) -> Response {
    o.version.fetch_add(1, Ordering::SeqCst);
    "updated".into_response()
}

async fn echo_route(State(o): State<Shared>, uri: axum::http::Uri) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    ([("cache-control", "max-age=60")], uri.to_string()).into_response()
}

async fn setup(mode: PolicyMode) -> (std::net::SocketAddr, Shared, Cache) {
    let origin = Shared::default();
    let cache = Cache::builder().build();
    let layer = CacheLayer::builder(cache.clone()).policy(mode).build();
    let addr = serve(origin_app(origin.clone()).layer(layer)).await;
    (addr, origin, cache)
}

#[tokio::test]
async fn miss_then_hit_serves_identical_bytes() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let first = fetch(&c, addr, "/static").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body(), "hello, cache");
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    let second = fetch(&c, addr, "/static").await;
    assert_eq!(second.body(), first.body());
    assert!(
        second.cache_status().starts_with("daramjwee; hit"),
        "{}",
        second.cache_status()
    );
    assert!(second.cache_status().contains("detail=memory"));
    assert_eq!(second.header("etag"), "\"s1\"");
    assert!(second.headers.contains_key("age"));
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn origin_is_called_once_for_sequential_requests() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    for _ in 0..25 {
        assert_eq!(fetch(&c, addr, "/static").await.body(), "hello, cache");
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn not_modified_revalidation_moves_no_body() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let first = fetch(&c, addr, "/etag").await;
    assert_eq!(first.body().len(), 100_000);
    for _ in 0..3 {
        let again = fetch(&c, addr, "/etag").await;
        assert_eq!(again.body(), first.body());
        assert!(
            again.cache_status().contains("fwd=stale; fwd-status=304"),
            "{}",
            again.cache_status()
        );
    }
    // One full body from the origin; three 304s with no body.
    assert_eq!(origin.body_bytes.load(Ordering::SeqCst), 100_000);
    assert_eq!(origin.conditional.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn origin_error_mid_body_reaches_the_client_and_leaves_no_entry() {
    let (addr, origin, cache) = setup(PolicyMode::Shared).await;
    let c = client();
    let got = fetch(&c, addr, "/fail-mid").await;
    assert!(got.body.is_err(), "a body cut short must not look complete");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let key = format!("http://{addr}/fail-mid");
    assert!(cache
        .tier_store(0)
        .unwrap()
        .head(&key)
        .await
        .unwrap()
        .is_none());
    let _ = fetch(&c, addr, "/fail-mid").await;
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn client_disconnect_mid_body_leaves_no_entry() {
    let (addr, origin, cache) = setup(PolicyMode::Shared).await;
    let c = client();
    let req = http::Request::get(format!("http://{addr}/slow"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = c.request(req).await.unwrap();
    let mut body = res.into_body();
    use http_body_util::BodyExt;
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The fill notices that its only reader left and gives up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let key = format!("http://{addr}/slow");
    assert!(cache
        .tier_store(0)
        .unwrap()
        .head(&key)
        .await
        .unwrap()
        .is_none());
    let full = fetch(&c, addr, "/slow").await;
    assert_eq!(full.body().len(), 81920);
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_in_background() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    assert_eq!(fetch(&c, addr, "/swr").await.body(), "v0");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = fetch(&c, addr, "/swr").await;
    assert_eq!(stale.body(), "v0");
    assert!(
        stale.cache_status().contains("hit"),
        "{}",
        stale.cache_status()
    );
    for _ in 0..100 {
        if origin.calls.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fetch(&c, addr, "/swr").await.body(), "v1");
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn private_responses_are_not_stored_by_a_shared_cache() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(fetch(&c, addr, "/private").await.body(), "mine");
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn authorized_request_is_not_stored_for_others() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let a = send(
        &c,
        addr,
        "GET",
        "/static",
        &[("authorization", "Bearer alice")],
    )
    .await;
    assert_eq!(a.body(), "hello, cache");
    let b = fetch(&c, addr, "/static").await;
    assert!(
        b.cache_status().contains("fwd=uri-miss"),
        "{}",
        b.cache_status()
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn successful_post_invalidates_the_target_uri() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    assert_eq!(fetch(&c, addr, "/item").await.body(), "item v0");
    assert_eq!(fetch(&c, addr, "/item").await.body(), "item v0");
    let post = send(&c, addr, "POST", "/item", &[]).await;
    assert_eq!(post.body(), "updated");
    assert_eq!(fetch(&c, addr, "/item").await.body(), "item v1");
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_is_served_from_a_stored_get() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    fetch(&c, addr, "/static").await;
    let head = send(&c, addr, "HEAD", "/static", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body().is_empty());
    assert!(
        head.cache_status().contains("hit"),
        "{}",
        head.cache_status()
    );
    assert_eq!(head.header("content-length"), "12");
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_conditional_request_is_answered_304_from_cache() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    fetch(&c, addr, "/static").await;
    let cond = send(&c, addr, "GET", "/static", &[("if-none-match", "W/\"s1\"")]).await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);
    assert!(cond.body().is_empty());
    assert_eq!(cond.header("etag"), "\"s1\"");
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_no_store_bypasses_the_cache() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    fetch(&c, addr, "/static").await;
    let b = send(&c, addr, "GET", "/static", &[("cache-control", "no-store")]).await;
    assert!(
        b.cache_status().contains("fwd=request"),
        "{}",
        b.cache_status()
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn special_characters_and_very_long_keys_are_cached_separately() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let long = format!("/{}", "x".repeat(8000));
    let paths = [
        "/a%20b?q=%C3%BC&x=1",
        "/a%20b?q=%C3%BC&x=2",
        "/..%2F..%2Fetc%2Fpasswd",
        long.as_str(),
    ];
    for p in paths {
        let first = fetch(&c, addr, p).await;
        let second = fetch(&c, addr, p).await;
        assert_eq!(first.body(), second.body());
        assert!(
            second.cache_status().contains("hit"),
            "{p}: {}",
            second.cache_status()
        );
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), paths.len());
}

#[tokio::test]
async fn only_if_cached_miss_is_a_504() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let got = send(
        &c,
        addr,
        "GET",
        "/static",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_requests_for_one_key_make_one_origin_call() {
    let (addr, origin, _) = setup(PolicyMode::Shared).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { fetch(&c, addr, "/slow").await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap().body().clone());
    }
    assert!(bodies.iter().all(|b| b.len() == 81920 && b == &bodies[0]));
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn origin_trusting_mode_stores_without_cache_headers() {
    let origin = Shared::default();
    let cache = Cache::builder().build();
    let layer = CacheLayer::builder(cache)
        .policy(PolicyMode::OriginTrusting {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        })
        .build();
    let app = Router::new()
        .route(
            "/plain",
            get(|State(o): State<Shared>| async move {
                o.calls.fetch_add(1, Ordering::SeqCst);
                "no headers"
            }),
        )
        .with_state(origin.clone())
        .layer(layer);
    let addr = serve(app).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(fetch(&c, addr, "/plain").await.body(), "no headers");
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}
