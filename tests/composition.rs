//! `CacheLayer` composed with tower and tower-http middleware, above and below it, over real
//! TCP. Each test counts origin calls in the handler and checks the bytes and headers clients
//! get. Every exchange is bounded (`bounded`), so a stack that deadlocks fails instead of hanging.
//! `docs/composition.md` is the table these tests pin.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, send, serve, Got, TestClient};
use daramjwee::http::{CacheLayer, PolicyMode};
use daramjwee::store::MemStore;
use daramjwee::{BoxError, Cache};
use http_body_util::{BodyExt, Empty};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, RequestId};

/// How long any one exchange may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(10);

/// A compressible body, well above tower-http's 32-byte compression threshold.
fn text() -> String {
    "Squirrels bury acorns and come back for them in winter. ".repeat(40)
}

/// The origin: every handler counts its calls.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/text", get(text_route))
            .route("/slow", get(slow_route))
            .route("/slowish", get(slowish_route))
            .route("/flaky", get(flaky_route))
            .route("/echo-id", get(echo_id_route))
            .with_state(self.clone())
    }
}

async fn text_route(State(o): State<Origin>) -> impl IntoResponse {
    o.calls.fetch_add(1, Ordering::SeqCst);
    (
        [
            ("cache-control", "max-age=60"),
            ("content-type", "text/plain"),
        ],
        text(),
    )
}

async fn slow_route(State(o): State<Origin>) -> impl IntoResponse {
    o.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    ([("cache-control", "max-age=60")], "too late")
}

async fn slowish_route(State(o): State<Origin>) -> impl IntoResponse {
    o.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ([("cache-control", "max-age=60")], text())
}

/// Answers 503 on odd calls and a cacheable 200 on even ones: one retry succeeds.
async fn flaky_route(State(o): State<Origin>) -> Response<Body> {
    let n = o.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n % 2 == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    ([("cache-control", "max-age=60")], "second time lucky").into_response()
}

/// Echoes the request's `x-request-id` in its response, as a service behind
/// `PropagateRequestIdLayer` would.
async fn echo_id_route(State(o): State<Origin>, headers: HeaderMap) -> impl IntoResponse {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let mut h = HeaderMap::new();
    h.insert("cache-control", "max-age=60".parse().unwrap());
    if let Some(id) = headers.get("x-request-id") {
        h.insert("x-request-id", id.clone());
    }
    (h, "id echo")
}

fn cache_layer() -> CacheLayer {
    CacheLayer::new(Cache::builder().hot(MemStore::new(16 << 20)).build())
}

/// A layer and a handle on its cache, for [`committed`].
fn layer_and_cache() -> (CacheLayer, Cache) {
    let layer = cache_layer();
    let cache = layer.cache().clone();
    (layer, cache)
}

/// Waits until `n` entries were committed: a client's body ends a moment before the fill
/// commits, and a request in between follows the fill instead of hitting the entry.
async fn committed(cache: &Cache, n: u64) {
    bounded("commit", async {
        while cache.stats().fills_committed < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Serves a whole stack (it must be what axum accepts as a service) on 127.0.0.1:0.
async fn serve_stack<S>(stack: S) -> SocketAddr
where
    S: tower::Service<Request<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    serve(Router::new().fallback_service(stack)).await
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within {BOUND:?} (a deadlock in the stack?)"),
    }
}

async fn fetch(c: &TestClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    bounded(path, send(c, addr, "GET", path, headers)).await
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("one gzip layer around UTF-8 text");
    out
}

fn is_hit(got: &Got) -> bool {
    got.cache_status().contains("; hit")
}

#[tokio::test]
async fn compression_below_the_cache_stores_one_variant_per_accept_encoding() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(tower_http::compression::CompressionLayer::new())
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());
    let gzip = [("accept-encoding", "gzip")];

    let first = fetch(&c, addr, "/text", &gzip).await;
    committed(&cache, 2).await;
    let again = fetch(&c, addr, "/text", &gzip).await;
    let plain = fetch(&c, addr, "/text", &[]).await;
    committed(&cache, 3).await;
    let plain_again = fetch(&c, addr, "/text", &[]).await;

    for got in [&first, &again] {
        assert_eq!(got.header("content-encoding"), "gzip");
        // One gunzip gives the text: the stored variant is not compressed a second time.
        assert_eq!(gunzip(got.body()), text());
    }
    assert!(first.header("vary").contains("accept-encoding"));
    for got in [&plain, &plain_again] {
        assert_eq!(got.header("content-encoding"), "");
        assert_eq!(got.body(), text().as_bytes());
    }
    assert!(
        is_hit(&again) && is_hit(&plain_again),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.calls(), 2, "one origin call per encoding");
}

#[tokio::test]
async fn compression_above_the_cache_compresses_the_stored_identity_body_per_response() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(layer)
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let gz = fetch(&c, addr, "/text", &[("accept-encoding", "gzip")]).await;
    committed(&cache, 1).await;
    let plain = fetch(&c, addr, "/text", &[]).await;
    let gz_hit = fetch(&c, addr, "/text", &[("accept-encoding", "gzip")]).await;

    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gunzip(gz.body()), text());
    // The identity request is a hit on the same entry: what is stored is the identity body.
    assert!(is_hit(&plain), "{}", plain.cache_status());
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.body(), text().as_bytes());
    assert!(is_hit(&gz_hit));
    assert_eq!(gunzip(gz_hit.body()), text());
    assert_eq!(origin.calls(), 1);
}

/// Both at once: the layer above sees a response already encoded and leaves it alone.
#[tokio::test]
async fn compression_above_and_below_the_cache_compresses_once() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(layer)
        .layer(tower_http::compression::CompressionLayer::new())
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());
    let gzip = [("accept-encoding", "gzip")];

    let miss = fetch(&c, addr, "/text", &gzip).await;
    committed(&cache, 2).await;
    let hit = fetch(&c, addr, "/text", &gzip).await;
    for got in [&miss, &hit] {
        assert_eq!(got.header("content-encoding"), "gzip");
        assert_eq!(gunzip(got.body()), text());
    }
    assert!(is_hit(&hit));
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn decompression_above_a_private_client_cache_decodes_stored_gzip_per_response() {
    use tower::ServiceExt;
    let origin = Origin::default();
    let compressed_origin = ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new())
        .service(origin.router());
    let addr = serve_stack(compressed_origin).await;
    let cache_layer = CacheLayer::builder(Cache::builder().build())
        .policy(PolicyMode::Private)
        .build();
    let cache = cache_layer.cache().clone();
    let client_stack = ServiceBuilder::new()
        .layer(tower_http::decompression::DecompressionLayer::new())
        .layer(cache_layer)
        .service(client());

    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = Request::get(format!("http://{addr}/text"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = bounded("client", client_stack.clone().oneshot(req))
            .await
            .unwrap();
        let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
        let body = bounded("body", res.into_body().collect()).await.unwrap();
        seen.push((status, body.to_bytes()));
        // The origin says `Vary: accept-encoding`: the variant and the URL's marker.
        committed(&cache, 2).await;
    }
    for (_, body) in &seen {
        assert_eq!(body, text().as_bytes());
    }
    assert!(seen[1].0.contains("; hit"), "{}", seen[1].0);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn tower_http_timeout_below_the_cache_answers_without_storing_the_timeout() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(200),
        ))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let first = fetch(&c, addr, "/slow", &[]).await;
    let second = fetch(&c, addr, "/slow", &[]).await;
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(second.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls(), 2, "a timeout is not a response to store");

    fetch(&c, addr, "/text", &[]).await;
    committed(&cache, 1).await;
    let text_hit = fetch(&c, addr, "/text", &[]).await;
    assert!(is_hit(&text_hit));
    assert_eq!(text_hit.body(), text().as_bytes());
    assert_eq!(origin.calls(), 3);
}

/// The wrong order for an origin timeout, pinned: a timeout above the cache drops the only
/// reader of the fill it led, the engine abandons an orphaned fill (docs/RELIABILITY.md), so an
/// origin slower than the timeout is never stored and every request reaches it.
#[tokio::test]
async fn tower_http_timeout_above_the_cache_shorter_than_the_origin_abandons_every_fill() {
    let origin = Origin::default();
    let layer = cache_layer();
    let cache = layer.cache().clone();
    let stack = ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(100),
        ))
        .layer(layer)
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    for _ in 0..2 {
        let cut = fetch(&c, addr, "/slowish", &[]).await;
        assert_eq!(cut.status, StatusCode::GATEWAY_TIMEOUT);
        // Past the origin's 300 ms: a detached fill would have committed by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(origin.calls(), 2);
    assert_eq!(cache.stats().fills_committed, 0);
}

/// `tower::timeout` fails with an error: below the cache the layer hands it up unchanged
/// (`Error = S::Error`), and a `HandleErrorLayer` above turns it into a response.
#[tokio::test]
async fn tower_timeout_below_the_cache_needs_handle_error_above_it() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: BoxError| async move {
            (StatusCode::GATEWAY_TIMEOUT, format!("origin: {err}"))
        }))
        .layer(layer)
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            200,
        )))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let slow = fetch(&c, addr, "/slow", &[]).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    let first = fetch(&c, addr, "/text", &[]).await;
    committed(&cache, 1).await;
    let hit = fetch(&c, addr, "/text", &[]).await;
    assert_eq!(first.body(), text().as_bytes());
    assert_eq!(hit.body(), text().as_bytes());
    assert!(is_hit(&hit));
    assert_eq!(origin.calls(), 2);
}

/// Sends `paths` at once and checks every body is the text.
async fn concurrent_text(c: &TestClient, addr: SocketAddr, paths: &[&str]) {
    let all = paths.iter().map(|p| fetch(c, addr, p, &[]));
    for got in futures_util::future::join_all(all).await {
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body(), text().as_bytes());
    }
}

#[tokio::test]
async fn concurrency_limit_of_one_below_the_cache_serves_misses_and_hits() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    concurrent_text(&c, addr, &["/text"]).await;
    committed(&cache, 1).await;
    concurrent_text(&c, addr, &["/text?a", "/text?b", "/text?c", "/text"]).await;
    committed(&cache, 4).await;
    let hit = fetch(&c, addr, "/text?b", &[]).await;
    assert!(is_hit(&hit));
    assert_eq!(origin.calls(), 4, "one call per distinct key");
}

/// The limit is for origin calls: a hit is answered while a slow miss holds the only permit.
#[tokio::test]
async fn concurrency_limit_below_the_cache_does_not_hold_hits_behind_a_slow_miss() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());
    concurrent_text(&c, addr, &["/text"]).await;
    committed(&cache, 1).await;

    let slow = tokio::spawn({
        let c = c.clone();
        async move { send(&c, addr, "GET", "/slow", &[]).await }
    });
    bounded("the slow origin call", async {
        while origin.calls() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await; // the slow call now holds the only permit
    let hit = fetch(&c, addr, "/text", &[]).await;
    assert!(is_hit(&hit));
    assert_eq!(hit.body(), text().as_bytes());
    slow.abort();
}

#[tokio::test]
async fn buffer_below_the_cache_serves_concurrent_misses_once_each() {
    let origin = Origin::default();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: BoxError| async move {
            (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }))
        .layer(cache_layer())
        .layer(tower::buffer::BufferLayer::new(8))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let paths = ["/text?a", "/text?b", "/text?a", "/text?b", "/text?c"];
    concurrent_text(&c, addr, &paths).await;
    concurrent_text(&c, addr, &paths).await;
    assert_eq!(origin.calls(), 3, "one call per distinct key, coalesced");
}

/// `RateLimit` is not `Clone`, so it sits behind a `Buffer`. Hits never reach it: ten of them
/// are answered although the limit allows two origin calls per minute.
#[tokio::test]
async fn rate_limit_below_the_cache_is_spent_on_misses_only() {
    let origin = Origin::default();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: BoxError| async move {
            (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }))
        .layer(cache_layer())
        .layer(tower::buffer::BufferLayer::new(8))
        .layer(tower::limit::RateLimitLayer::new(
            2,
            Duration::from_secs(60),
        ))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    concurrent_text(&c, addr, &["/text?a", "/text?b"]).await;
    for _ in 0..5 {
        concurrent_text(&c, addr, &["/text?a", "/text?b"]).await;
    }
    assert_eq!(origin.calls(), 2);
}

/// Retries a `503` once; clones only what a fill sends (GET or HEAD without a body).
#[derive(Clone)]
struct RetryUnavailable {
    left: usize,
}

impl tower::retry::Policy<Request<Body>, Response<Body>, Infallible> for RetryUnavailable {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<Body>, Infallible>,
    ) -> Option<Self::Future> {
        let unavailable = matches!(result, Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE);
        (unavailable && self.left > 0).then(|| {
            self.left -= 1;
            std::future::ready(())
        })
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        // A body cannot be cloned; the fills the cache sends have none.
        let mut copy = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(Body::empty())
            .ok()?;
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }
}

#[tokio::test]
async fn retry_below_the_cache_is_one_fill_for_every_waiting_client() {
    let origin = Origin::default();
    let layer = cache_layer();
    let cache = layer.cache().clone();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(tower::retry::RetryLayer::new(RetryUnavailable { left: 1 }))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let three = (0..3).map(|_| fetch(&c, addr, "/flaky", &[]));
    for got in futures_util::future::join_all(three).await {
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body(), "second time lucky");
    }
    committed(&cache, 1).await;
    let hit = fetch(&c, addr, "/flaky", &[]).await;
    assert!(is_hit(&hit));
    assert_eq!(origin.calls(), 2, "one 503 and its retry");
    assert_eq!(cache.stats().fills_committed, 1);
}

/// A `TraceLayer` response callback that counts the responses it sees, whatever their body.
#[derive(Clone, Default)]
struct CountResponses(Arc<AtomicUsize>);

impl<B> tower_http::trace::OnResponse<B> for CountResponses {
    fn on_response(self, _: &Response<B>, _: Duration, _: &tracing::Span) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn trace_layers_see_every_request_above_and_origin_calls_below() {
    let (above, below) = (CountResponses::default(), CountResponses::default());
    let origin = Origin::default();
    let stack = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(above.clone()))
        .layer(cache_layer())
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(below.clone()))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    for _ in 0..3 {
        let got = fetch(&c, addr, "/text", &[]).await;
        assert_eq!(got.body(), text().as_bytes());
    }
    assert_eq!(above.0.load(Ordering::SeqCst), 3);
    assert_eq!(below.0.load(Ordering::SeqCst), 1);
    assert_eq!(origin.calls(), 1);
}

/// Numbers requests 1, 2, 3, ...
#[derive(Clone, Default)]
struct Sequential(Arc<AtomicU64>);

impl MakeRequestId for Sequential {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Some(RequestId::new(n.to_string().parse().unwrap()))
    }
}

#[tokio::test]
async fn request_ids_set_and_propagated_above_the_cache_are_each_requests_own() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            Sequential::default(),
        ))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(layer)
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let first = fetch(&c, addr, "/text", &[]).await;
    committed(&cache, 1).await;
    let second = fetch(&c, addr, "/text", &[]).await;
    let own = fetch(&c, addr, "/text", &[("x-request-id", "client-7")]).await;
    assert_eq!(first.header("x-request-id"), "1");
    assert!(is_hit(&second));
    assert_eq!(second.header("x-request-id"), "2");
    assert_eq!(own.header("x-request-id"), "client-7");
    assert_eq!(origin.calls(), 1);
}

/// The wrong order, pinned: an origin (or a `PropagateRequestIdLayer` below the cache) that
/// echoes the id makes it part of the stored response, and `PropagateRequestIdLayer` above
/// keeps a response's own id. The second client gets the first one's id.
#[tokio::test]
async fn request_id_echoed_below_the_cache_is_replayed_to_later_clients() {
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            Sequential::default(),
        ))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(layer)
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let first = fetch(&c, addr, "/echo-id", &[]).await;
    committed(&cache, 1).await;
    let second = fetch(&c, addr, "/echo-id", &[]).await;
    assert_eq!(first.header("x-request-id"), "1");
    assert!(is_hit(&second));
    assert_eq!(second.header("x-request-id"), "1", "the stored id, not 2");
}

#[tokio::test]
async fn map_response_body_on_both_sides_stores_and_replays_the_mapped_bytes() {
    let shout = |b: Body| {
        Body::new(b.map_frame(|f| f.map_data(|d: Bytes| Bytes::from(d.to_ascii_uppercase()))))
    };
    let origin = Origin::default();
    let (layer, cache) = layer_and_cache();
    let stack = ServiceBuilder::new()
        .layer(tower_http::map_response_body::MapResponseBodyLayer::new(
            Body::new,
        ))
        .layer(layer)
        .layer(tower_http::map_response_body::MapResponseBodyLayer::new(
            shout,
        ))
        .service(origin.router());
    let (addr, c) = (serve_stack(stack).await, client());

    let miss = fetch(&c, addr, "/text", &[]).await;
    committed(&cache, 1).await;
    let hit = fetch(&c, addr, "/text", &[]).await;
    let loud = text().to_ascii_uppercase();
    assert_eq!(miss.body(), loud.as_bytes());
    assert_eq!(hit.body(), loud.as_bytes());
    assert!(is_hit(&hit));
    assert_eq!(origin.calls(), 1);
}
