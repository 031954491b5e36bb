//! daramjwee as a client-side cache: `CacheLayer` with `PolicyMode::Private` around a hyper
//! client and around `reqwest::Client`.
//!
//! ```text
//! cargo run --example client
//! ```
//!
//! It starts a small axum origin on 127.0.0.1:0 (it counts what it renders), then sends the
//! same requests through both clients and prints each answer's `Cache-Status`: a miss, a hit, a
//! conditional check answered `304` (no body moved), a background revalidation
//! (`stale-while-revalidate`), variants per `Accept` and per `Authorization`, the request
//! directives a client sends, and an offline read of a stale entry once the origin is gone. It
//! needs no outside service.
//!
//! A private cache belongs to one user: it stores `private` answers and answers to requests with
//! `Authorization`, as a browser does. A process that calls an API for several users gives each
//! one its own cache, or keys on the credentials (`key_with_headers(["authorization"])`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use daramjwee::http::{CacheLayer, PolicyMode, CACHE_STATUS};
use daramjwee::store::MemStore;
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};

#[path = "support/reqwest_service.rs"]
mod reqwest_service;
use reqwest_service::ReqwestService;

/// What the origin did: full renders, and `304 Not Modified` answers (no body).
#[derive(Clone, Default)]
struct Renders {
    full: Arc<AtomicU64>,
    not_modified: Arc<AtomicU64>,
}

/// Answers `304` to a matching `If-None-Match`, else renders a body.
fn answer(renders: &Renders, req: &HeaderMap, etag: &'static str, cc: &'static str) -> Response {
    let headers = [("etag", etag), ("cache-control", cc)];
    if req.get("if-none-match").is_some_and(|v| v == etag) {
        renders.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let n = renders.full.fetch_add(1, Ordering::Relaxed) + 1;
    let body = format!("acorns 3, walnuts 5 (render #{n})");
    (headers, body).into_response()
}

/// A price list that may be kept 60 s, then used an hour longer if the origin is down.
async fn prices(State(renders): State<Renders>, req: HeaderMap) -> Response {
    answer(
        &renders,
        &req,
        "\"prices-v1\"",
        "max-age=60, stale-if-error=3600",
    )
}

/// Stale at once, usable for a minute while it is revalidated in the background.
async fn rates(State(renders): State<Renders>, req: HeaderMap) -> Response {
    answer(
        &renders,
        &req,
        "\"rates-v1\"",
        "max-age=0, stale-while-revalidate=60",
    )
}

/// One URL, two representations: `Vary: accept` makes the cache keep both.
async fn quote(State(renders): State<Renders>, req: HeaderMap) -> Response {
    renders.full.fetch_add(1, Ordering::Relaxed);
    let json = req.get("accept").is_some_and(|v| v == "application/json");
    let body = if json { r#"{"acorns":3}"# } else { "acorns: 3" };
    ([("cache-control", "max-age=60"), ("vary", "accept")], body).into_response()
}

/// Per-user and `private`: a private cache keeps it, one variant per `Authorization`.
async fn me(State(renders): State<Renders>, req: HeaderMap) -> Response {
    renders.full.fetch_add(1, Ordering::Relaxed);
    let who = req.get("authorization").and_then(|v| v.to_str().ok());
    let body = format!("hello, {}", who.unwrap_or("stranger"));
    let headers = [
        ("cache-control", "private, max-age=60"),
        ("vary", "authorization"),
    ];
    (headers, body).into_response()
}

/// Serves the origin; the handle stops it (the "offline" step).
async fn start_origin(renders: Renders) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/prices", get(prices))
        .route("/rates", get(rates))
        .route("/quote", get(quote))
        .route("/me", get(me))
        .with_state(renders);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (addr, task)
}

/// A private cache over `client`: one user's cache, as a browser keeps.
fn private_cache<S>(client: S) -> daramjwee::http::CacheService<S> {
    let cache = Cache::builder().hot(MemStore::new(64 << 20)).build();
    let layer = CacheLayer::builder(cache)
        .policy(PolicyMode::Private)
        .build();
    layer.layer_service(client)
}

/// Sends one GET through `svc` and prints status, `Cache-Status` and body.
async fn show<S, B>(svc: &S, label: &str, url: &str, cache_control: Option<&str>)
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Display,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let cc = cache_control.map(|v| ("cache-control", v));
    show_with(svc, label, url, cc.as_slice()).await
}

/// [`show`] with any request headers.
async fn show_with<S, B>(svc: &S, label: &str, url: &str, headers: &[(&str, &str)])
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Display,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let mut req = http::Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::new()).expect("a valid request");
    let res = match svc.clone().oneshot(req).await {
        Ok(res) => res,
        Err(e) => return println!("{label:<28} error: {e}"),
    };
    let status = res.status();
    let cache_status = res.headers().get(CACHE_STATUS).cloned();
    let body = match res.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    };
    let cache_status = cache_status.as_ref().and_then(|v| v.to_str().ok());
    println!(
        "{label:<28} {:<4} {:<44} {body}",
        status.as_u16(),
        cache_status.unwrap_or("-")
    );
}

/// The same conversation through any client service.
async fn conversation<S, B>(svc: &S, url: &str)
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Display,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let steps = [
        ("first request", None),
        ("again", None),
        ("no-cache", Some("no-cache")),
        ("max-age=0", Some("max-age=0")),
        ("only-if-cached", Some("only-if-cached")),
        ("no-store (bypass)", Some("no-store")),
    ];
    for (label, cache_control) in steps {
        show(svc, label, url, cache_control).await;
        // A caller's body ends a moment before its fill or revalidation commits; a request
        // sent in between follows it ("collapsed") instead of reading the entry. The demo
        // lets each step settle so the output shows one behaviour per line.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `Vary` per `Accept` and per `Authorization`: each request is answered with its own variant.
async fn vary<S, B>(svc: &S, addr: SocketAddr)
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Display,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let (quote, me) = (format!("http://{addr}/quote"), format!("http://{addr}/me"));
    let steps: [(&str, &str, (&str, &str)); 6] = [
        ("Accept: json", &quote, ("accept", "application/json")),
        ("Accept: text", &quote, ("accept", "text/plain")),
        ("Accept: json again", &quote, ("accept", "application/json")),
        ("Authorization: alice", &me, ("authorization", "alice")),
        ("Authorization: bob", &me, ("authorization", "bob")),
        (
            "Authorization: alice again",
            &me,
            ("authorization", "alice"),
        ),
    ];
    for (label, url, header) in steps {
        show_with(svc, label, url, &[header]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let renders = Renders::default();
    let (addr, origin) = start_origin(renders.clone()).await;
    let url = format!("http://{addr}/prices");
    println!("origin on http://{addr}\n");

    println!("-- hyper_util::client::legacy::Client --");
    let hyper = Client::builder(TokioExecutor::new())
        // A fresh connection per request, so the offline step below really finds no origin.
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let hyper = private_cache(hyper);
    conversation(&hyper, &url).await;

    let rates = format!("http://{addr}/rates");
    show(&hyper, "stale-while-revalidate", &rates, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    show(&hyper, "stale, revalidated behind", &rates, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let not_modified = renders.not_modified.load(Ordering::Relaxed);
    println!("the origin has answered 304 (no body) {not_modified} time(s)");

    vary(&hyper, addr).await;

    println!("\n-- reqwest::Client (through ReqwestService) --");
    let reqwest = private_cache(ReqwestService::new(reqwest::Client::new()));
    conversation(&reqwest, &url).await;
    let absent = format!("http://{addr}/prices?page=2");
    show(
        &reqwest,
        "only-if-cached, not stored",
        &absent,
        Some("only-if-cached"),
    )
    .await;

    println!("\n-- origin stopped --");
    origin.abort();
    let _ = origin.await;
    show(
        &hyper,
        "max-age=0 (stale-if-error)",
        &url,
        Some("max-age=0"),
    )
    .await;
    // Never stored: no stale permission helps, the client's own error comes back.
    show(
        &hyper,
        "max-stale, never stored",
        &absent,
        Some("max-stale=3600"),
    )
    .await;
    println!(
        "\nthe origin rendered {} body(ies) and answered {} 304(s)",
        renders.full.load(Ordering::Relaxed),
        renders.not_modified.load(Ordering::Relaxed)
    );
}
