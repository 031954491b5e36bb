//! `CacheLayer` with `PolicyMode::Private` as a client-side cache: around a hyper client and
//! around `reqwest::Client` (through `examples/support/reqwest_service.rs`), calling an axum
//! origin over real TCP on 127.0.0.1. The origin counts its calls, its conditional answers and
//! the body bytes it sent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use bytes::Bytes;
use daramjwee::http::{key_with_headers, CacheLayer, CacheService, PolicyMode};
use daramjwee::store::MemStore;
use daramjwee::Cache;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};

#[path = "../examples/support/reqwest_service.rs"]
mod reqwest_service;
use reqwest_service::ReqwestService;

/// How long one exchange may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(10);

// ---- the origin ------------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    calls: AtomicUsize,
    /// 304 answers to a matching `If-None-Match`.
    not_modified: AtomicUsize,
    /// Body bytes sent in 200 answers.
    body_bytes: AtomicUsize,
}

#[derive(Clone, Default)]
struct Origin(Arc<Counts>);

impl Origin {
    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }
    fn not_modified(&self) -> usize {
        self.0.not_modified.load(Ordering::SeqCst)
    }
    fn body_bytes(&self) -> usize {
        self.0.body_bytes.load(Ordering::SeqCst)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/fresh", routing::get(fresh))
            .route("/swr", routing::get(swr))
            .route("/negotiate", routing::get(negotiate))
            .route("/me", routing::get(me))
            .route("/me-vary", routing::get(me_vary))
            .route("/no-store", routing::get(no_store))
            .route("/cookie", routing::get(cookie))
            .route("/aged-mr", routing::get(aged_must_revalidate))
            .route("/always-check", routing::get(always_check))
            .route("/aged", routing::get(aged))
            .route("/aged-sie", routing::get(aged_stale_if_error))
            .with_state(self.clone())
    }

    /// Counts a call and answers `body` with `headers`, or `304` when the request's
    /// `If-None-Match` names `etag`.
    fn respond(
        &self,
        req: &HeaderMap,
        etag: &str,
        headers: &[(&'static str, &str)],
        body: String,
    ) -> Response {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let mut h = HeaderMap::new();
        h.insert("etag", HeaderValue::from_str(etag).unwrap());
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        if req.get("if-none-match").is_some_and(|v| v == etag) {
            self.0.not_modified.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::NOT_MODIFIED, h).into_response();
        }
        self.0.body_bytes.fetch_add(body.len(), Ordering::SeqCst);
        (h, body).into_response()
    }
}

const BODY: &str = "the squirrel's winter stash, 1 KiB of it soon";

async fn fresh(State(o): State<Origin>, h: HeaderMap) -> Response {
    o.respond(
        &h,
        "\"f1\"",
        &[("cache-control", "max-age=60")],
        BODY.into(),
    )
}

async fn swr(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [("cache-control", "max-age=0, stale-while-revalidate=60")];
    o.respond(&h, "\"s1\"", &cc, BODY.into())
}

async fn negotiate(State(o): State<Origin>, h: HeaderMap) -> Response {
    let json = h.get("accept").is_some_and(|v| v == "application/json");
    let body = if json { r#"{"stash":3}"# } else { "stash: 3" };
    let etag = if json { "\"n-json\"" } else { "\"n-text\"" };
    let cc = [("cache-control", "max-age=60"), ("vary", "accept")];
    o.respond(&h, etag, &cc, body.into())
}

fn user(h: &HeaderMap) -> String {
    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
    format!("hello {}", auth.unwrap_or("nobody"))
}

async fn me(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [("cache-control", "private, max-age=60")];
    o.respond(&h, "\"me\"", &cc, user(&h))
}

async fn me_vary(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [
        ("cache-control", "private, max-age=60"),
        ("vary", "authorization"),
    ];
    o.respond(&h, "\"mev\"", &cc, user(&h))
}

async fn no_store(State(o): State<Origin>, h: HeaderMap) -> Response {
    o.respond(&h, "\"ns\"", &[("cache-control", "no-store")], BODY.into())
}

async fn cookie(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [
        ("cache-control", "max-age=60"),
        ("set-cookie", "session=abc"),
    ];
    o.respond(&h, "\"ck\"", &cc, BODY.into())
}

/// 60 s stale on arrival and never to be used stale.
async fn aged_must_revalidate(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [
        ("cache-control", "max-age=60, must-revalidate"),
        ("age", "120"),
    ];
    o.respond(&h, "\"mr\"", &cc, BODY.into())
}

/// Stored, but validated before every use.
async fn always_check(State(o): State<Origin>, h: HeaderMap) -> Response {
    o.respond(&h, "\"ac\"", &[("cache-control", "no-cache")], BODY.into())
}

/// Already 60 s stale on arrival (`Age` 120 against `max-age` 60), no stale permission.
async fn aged(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [("cache-control", "max-age=60"), ("age", "120")];
    o.respond(&h, "\"a1\"", &cc, BODY.into())
}

/// 60 s stale on arrival, usable for an hour when the origin fails.
async fn aged_stale_if_error(State(o): State<Origin>, h: HeaderMap) -> Response {
    let cc = [
        ("cache-control", "max-age=60, stale-if-error=3600"),
        ("age", "120"),
    ];
    o.respond(&h, "\"a2\"", &cc, BODY.into())
}

/// Serves the origin on 127.0.0.1:0; aborting the handle closes the listener.
async fn serve(origin: &Origin) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = origin.router();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, task)
}

// ---- the client side -------------------------------------------------------------------------

type Hyper = Client<HttpConnector, Empty<Bytes>>;

/// A hyper client that opens a connection per request, so an origin that stopped listening
/// is unreachable at once (no idle pooled connection to its old accept loop).
fn hyper_client() -> Hyper {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn private_layer() -> CacheLayer {
    let cache = Cache::builder().hot(MemStore::new(16 << 20)).build();
    CacheLayer::builder(cache)
        .policy(PolicyMode::Private)
        .build()
}

fn private_cache<S>(inner: S) -> CacheService<S> {
    private_layer().layer_service(inner)
}

/// A whole response.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn is_hit(&self) -> bool {
        self.header("cache-status").contains("; hit")
    }
}

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within {BOUND:?}"),
    }
}

/// GETs `url` through `svc` with `headers` and reads the whole body.
async fn call<S, B>(svc: &S, url: &str, headers: &[(&str, &str)]) -> Result<Answer, S::Error>
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).unwrap();
    let res = bounded(url, svc.clone().oneshot(req)).await?;
    let (parts, body) = res.into_parts();
    let body = bounded(url, body.collect()).await.expect("a whole body");
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.to_bytes(),
    })
}

/// [`call`] for a call that must succeed.
async fn get<S, B>(svc: &S, url: &str, headers: &[(&str, &str)]) -> Answer
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    call(svc, url, headers).await.expect("the call succeeds")
}

/// Polls `cond` every 10 ms for up to [`BOUND`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Waits until `n` entries were committed: the body a caller reads ends a moment before its
/// fill commits, and a request in between follows the fill instead of hitting the entry.
async fn committed<S>(svc: &CacheService<S>, n: u64) {
    eventually("commit", || svc.cache().stats().fills_committed >= n).await
}

// ---- miss, hit, revalidation -------------------------------------------------------------------

#[tokio::test]
async fn hyper_client_miss_then_hit() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/fresh");

    let miss = get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let hit = get(&svc, &url, &[]).await;
    assert_eq!(
        (miss.status, &miss.body[..]),
        (StatusCode::OK, BODY.as_bytes())
    );
    assert!(!miss.is_hit(), "{}", miss.header("cache-status"));
    assert!(hit.is_hit(), "{}", hit.header("cache-status"));
    assert_eq!(hit.body, BODY);
    assert_eq!(hit.header("etag"), "\"f1\"");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn reqwest_client_miss_then_hit() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(ReqwestService::new(reqwest::Client::new()));
    let url = format!("http://{addr}/fresh");

    let miss = get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let hit = get(&svc, &url, &[]).await;
    assert_eq!(miss.body, BODY);
    assert!(hit.is_hit(), "{}", hit.header("cache-status"));
    assert_eq!(hit.body, BODY);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn reqwest_client_revalidates_with_a_304_on_request_no_cache() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(ReqwestService::new(reqwest::Client::new()));
    let url = format!("http://{addr}/fresh");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let checked = get(&svc, &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(checked.status, StatusCode::OK);
    assert_eq!(checked.body, BODY);
    assert_eq!(origin.not_modified(), 1);
    assert_eq!(
        origin.body_bytes(),
        BODY.len(),
        "the body crossed the wire once"
    );
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_revalidates_in_the_background_with_a_304() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/swr");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let stale = get(&svc, &url, &[]).await;
    assert_eq!(stale.body, BODY);
    assert!(stale.is_hit(), "{}", stale.header("cache-status"));
    eventually("background 304", || origin.not_modified() == 1).await;
    assert_eq!(origin.calls(), 2);
    assert_eq!(origin.body_bytes(), BODY.len(), "a 304 moves no body");
}

// ---- Vary and per-user responses ---------------------------------------------------------------

#[tokio::test]
async fn vary_accept_keeps_one_variant_per_accept_value() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/negotiate");
    let (json, text) = ([("accept", "application/json")], [("accept", "text/plain")]);

    let a = get(&svc, &url, &json).await;
    committed(&svc, 2).await; // a Vary fill commits the variant and the URL's marker
    let b = get(&svc, &url, &text).await;
    committed(&svc, 3).await; // the second variant reuses the marker
    let a2 = get(&svc, &url, &json).await;
    let b2 = get(&svc, &url, &text).await;
    assert_eq!(
        (&a.body[..], &a2.body[..]),
        (&br#"{"stash":3}"#[..], &br#"{"stash":3}"#[..])
    );
    assert_eq!(
        (&b.body[..], &b2.body[..]),
        (&b"stash: 3"[..], &b"stash: 3"[..])
    );
    assert!(a2.is_hit() && b2.is_hit());
    assert_eq!(origin.calls(), 2);
}

/// RFC 9211 §2.2: a URL with stored variants, none selected by this request, is a
/// `fwd=vary-miss`.
#[tokio::test]
async fn a_request_no_stored_variant_matches_is_reported_fwd_vary_miss() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/negotiate");

    get(&svc, &url, &[("accept", "application/json")]).await;
    committed(&svc, 2).await;
    let other = get(&svc, &url, &[("accept", "text/plain")]).await;
    assert_eq!(other.body, "stash: 3");
    let status = other.header("cache-status");
    assert!(status.contains("fwd=vary-miss"), "{status}");
}

#[tokio::test]
async fn vary_authorization_keeps_each_users_private_response_apart() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/me-vary");
    let (alice, bob) = (
        [("authorization", "Bearer alice")],
        [("authorization", "Bearer bob")],
    );

    assert_eq!(get(&svc, &url, &alice).await.body, "hello Bearer alice");
    committed(&svc, 2).await;
    assert_eq!(get(&svc, &url, &bob).await.body, "hello Bearer bob");
    committed(&svc, 3).await; // the second variant reuses the marker
    let alice_hit = get(&svc, &url, &alice).await;
    let bob_hit = get(&svc, &url, &bob).await;
    assert_eq!(alice_hit.body, "hello Bearer alice");
    assert_eq!(bob_hit.body, "hello Bearer bob");
    assert!(alice_hit.is_hit() && bob_hit.is_hit());
    assert_eq!(origin.calls(), 2);
}

/// What a browser cache stores: a `private` answer to an authorised request.
#[tokio::test]
async fn private_mode_stores_private_answers_to_authorized_requests() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/me");
    let alice = [("authorization", "Bearer alice")];

    get(&svc, &url, &alice).await;
    committed(&svc, 1).await;
    let hit = get(&svc, &url, &alice).await;
    assert!(hit.is_hit(), "{}", hit.header("cache-status"));
    assert_eq!(hit.body, "hello Bearer alice");
    assert_eq!(origin.calls(), 1);
}

/// One private cache serving several users, against an origin that does not say `Vary`:
/// keying on `Authorization` keeps them apart.
#[tokio::test]
async fn keying_on_authorization_keeps_users_apart_when_the_origin_does_not_vary() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let cache = Cache::builder().hot(MemStore::new(16 << 20)).build();
    let layer = CacheLayer::builder(cache)
        .policy(PolicyMode::Private)
        .key_fn(key_with_headers(["authorization"]))
        .build();
    let svc = layer.layer_service(hyper_client());
    let url = format!("http://{addr}/me");
    let (alice, bob) = (
        [("authorization", "Bearer alice")],
        [("authorization", "Bearer bob")],
    );

    get(&svc, &url, &alice).await;
    committed(&svc, 1).await;
    let bob_first = get(&svc, &url, &bob).await;
    committed(&svc, 2).await;
    let alice_hit = get(&svc, &url, &alice).await;
    assert_eq!(bob_first.body, "hello Bearer bob");
    assert_eq!(alice_hit.body, "hello Bearer alice");
    assert!(alice_hit.is_hit());
    assert_eq!(origin.calls(), 2);
}

/// A key writer (the key written into the service's reused buffer) keys as a key function
/// does: users stay apart, and one service instance that writes a short key after a longer
/// one serves each user their own body.
#[tokio::test]
async fn a_key_writer_keeps_users_apart_across_reused_buffers() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let cache = Cache::builder().hot(MemStore::new(16 << 20)).build();
    let layer = CacheLayer::builder(cache)
        .policy(PolicyMode::Private)
        .key_writer(|parts, key| {
            key.push_str(&daramjwee::http::default_key(parts));
            if let Some(user) = parts.headers.get("authorization") {
                key.push(' ');
                key.push_str(user.to_str().unwrap_or("-"));
            }
        })
        .build();
    let svc = layer.layer_service(hyper_client());
    let url = format!("http://{addr}/me");
    let users = ["Bearer a-much-longer-user-name", "Bearer b"];

    for (n, user) in (1..).zip(users) {
        get(&svc, &url, &[("authorization", user)]).await;
        committed(&svc, n).await;
    }
    // One instance: its buffer holds the previous request's key when the next is written.
    let mut one = svc.clone();
    for _ in 0..2 {
        for user in users {
            let req = Request::get(&url)
                .header("authorization", user)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let res = one.ready().await.unwrap().call(req).await.unwrap();
            let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
            assert!(status.contains("hit"), "{status}");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("hello {user}"));
        }
    }
    assert_eq!(origin.calls(), 2);
    // The handle keys a URL with the same writer (no `Authorization` there).
    assert_eq!(layer.handle().key_for(&url).unwrap(), url);
}

/// A browser keeps a response that sets a cookie; a private cache belongs to that user.
#[tokio::test]
async fn private_mode_stores_a_response_that_sets_a_cookie() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/cookie");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let hit = get(&svc, &url, &[]).await;
    assert!(hit.is_hit(), "{}", hit.header("cache-status"));
    assert_eq!(hit.header("set-cookie"), "session=abc");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn no_store_responses_are_never_stored() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/no-store");

    for _ in 0..2 {
        let got = get(&svc, &url, &[]).await;
        assert_eq!(got.body, BODY);
        assert!(!got.is_hit());
    }
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn a_no_cache_response_is_validated_before_every_use() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/always-check");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    for _ in 0..2 {
        assert_eq!(get(&svc, &url, &[]).await.body, BODY);
    }
    assert_eq!(origin.not_modified(), 2);
    assert_eq!(
        origin.body_bytes(),
        BODY.len(),
        "the body crossed the wire once"
    );
}

// ---- request directives ------------------------------------------------------------------------

#[tokio::test]
async fn request_no_cache_and_max_age_zero_revalidate_with_the_origin() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/fresh");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let no_cache = get(&svc, &url, &[("cache-control", "no-cache")]).await;
    let max_age_0 = get(&svc, &url, &[("cache-control", "max-age=0")]).await;
    assert_eq!(no_cache.body, BODY);
    assert_eq!(max_age_0.body, BODY);
    assert_eq!(origin.not_modified(), 2);
    assert_eq!(origin.body_bytes(), BODY.len());
}

/// RFC 9211 §2.2: `fwd=request` when a fresh stored response could have been used but the
/// request's directives (`no-cache`, `max-age=0`) sent it to the origin; `fwd=stale` is for a
/// stale one.
#[tokio::test]
async fn a_validation_the_request_forced_is_reported_fwd_request() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/fresh");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let forced = get(&svc, &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(origin.not_modified(), 1);
    let status = forced.header("cache-status");
    assert!(status.contains("fwd=request"), "{status}");
}

#[tokio::test]
async fn request_no_store_bypasses_and_stores_nothing() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/fresh");

    let bypass = get(&svc, &url, &[("cache-control", "no-store")]).await;
    let after = get(&svc, &url, &[]).await;
    assert_eq!(bypass.body, BODY);
    assert!(
        !after.is_hit(),
        "nothing was stored: {}",
        after.header("cache-status")
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn request_max_stale_serves_a_stale_entry_without_asking_the_origin() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/aged");

    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let tolerant = get(&svc, &url, &[("cache-control", "max-stale=3600")]).await;
    assert_eq!(tolerant.body, BODY);
    assert!(tolerant.is_hit(), "{}", tolerant.header("cache-status"));
    assert_eq!(origin.calls(), 1);

    let strict = get(&svc, &url, &[]).await;
    assert_eq!(strict.body, BODY);
    assert_eq!(
        origin.not_modified(),
        1,
        "without max-stale the stale entry is validated"
    );
}

#[tokio::test]
async fn only_if_cached_answers_504_when_absent_and_the_entry_when_present() {
    let origin = Origin::default();
    let (addr, _srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}/fresh");
    let only = [("cache-control", "only-if-cached")];

    let absent = get(&svc, &url, &only).await;
    assert_eq!(absent.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls(), 0);
    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    let present = get(&svc, &url, &only).await;
    assert_eq!(present.status, StatusCode::OK);
    assert_eq!(present.body, BODY);
    assert_eq!(origin.calls(), 1);
}

// ---- offline -----------------------------------------------------------------------------------

/// Fills `path`, then stops the origin and checks it no longer accepts connections.
async fn fill_then_go_offline(path: &str) -> (CacheService<Hyper>, String) {
    let origin = Origin::default();
    let (addr, srv) = serve(&origin).await;
    let svc = private_cache(hyper_client());
    let url = format!("http://{addr}{path}");
    assert_eq!(get(&svc, &url, &[]).await.body, BODY);
    committed(&svc, 1).await;
    srv.abort();
    let _ = srv.await;
    assert!(
        call(&hyper_client(), &url, &[]).await.is_err(),
        "the origin is down"
    );
    (svc, url)
}

#[tokio::test]
async fn offline_serves_stale_within_the_responses_stale_if_error() {
    let (svc, url) = fill_then_go_offline("/aged-sie").await;
    let got = get(&svc, &url, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
}

#[tokio::test]
async fn offline_serves_stale_within_the_clients_max_stale() {
    let (svc, url) = fill_then_go_offline("/aged").await;
    let got = get(&svc, &url, &[("cache-control", "max-stale=3600")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
}

#[tokio::test]
async fn offline_serves_stale_within_the_requests_stale_if_error() {
    let (svc, url) = fill_then_go_offline("/aged").await;
    let got = get(&svc, &url, &[("cache-control", "stale-if-error=3600")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
}

#[tokio::test]
async fn reqwest_client_offline_serves_stale_within_stale_if_error() {
    let origin = Origin::default();
    let (addr, srv) = serve(&origin).await;
    // No idle pooled connection may outlive the origin's accept loop.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let svc = private_cache(ReqwestService::new(client));
    let url = format!("http://{addr}/aged-sie");
    get(&svc, &url, &[]).await;
    committed(&svc, 1).await;
    srv.abort();
    let _ = srv.await;

    let got = get(&svc, &url, &[]).await;
    assert_eq!(
        (got.status, &got.body[..]),
        (StatusCode::OK, BODY.as_bytes())
    );
    assert!(got.header("cache-status").contains("stale-if-error"));
    assert_eq!(origin.calls(), 1);
}

/// RFC 9111 §5.2.2.2: a `must-revalidate` response is never used stale, whatever the client
/// tolerates; disconnected, the cache answers an error (504).
#[tokio::test]
async fn offline_max_stale_does_not_override_must_revalidate() {
    let (svc, url) = fill_then_go_offline("/aged-mr").await;
    if let Ok(got) = call(&svc, &url, &[("cache-control", "max-stale=3600")]).await {
        assert_ne!(
            got.status,
            StatusCode::OK,
            "served stale: {}",
            got.header("cache-status")
        );
    }
}

/// RFC 9111 §4.2.4 and §5.2.2.2: the request's `stale-if-error` does not lift the response's
/// `must-revalidate` either.
#[tokio::test]
async fn offline_request_stale_if_error_does_not_override_must_revalidate() {
    let (svc, url) = fill_then_go_offline("/aged-mr").await;
    if let Ok(got) = call(&svc, &url, &[("cache-control", "stale-if-error=3600")]).await {
        assert_ne!(
            got.status,
            StatusCode::OK,
            "served stale: {}",
            got.header("cache-status")
        );
    }
}

/// Without a stale permission the client's own connection error comes back: nothing stale is
/// passed off as current.
#[tokio::test]
async fn offline_without_stale_permission_is_the_clients_error() {
    let (svc, url) = fill_then_go_offline("/aged").await;
    let err = call(&svc, &url, &[]).await.err();
    let err = err.expect("the connection error, not a stale answer");
    assert!(err.is_connect(), "{err:?}");
}
