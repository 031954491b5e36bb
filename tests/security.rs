//! Hostile and careless requests: one client's response must never reach another client it was
//! not meant for.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{client, send, serve};
use daramjwee::http::CacheLayer;
use daramjwee::Cache;

/// An origin that reflects request headers into its body: the worst case for poisoning.
fn reflecting_origin(calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/page",
            get(
                |State(c): State<Arc<AtomicUsize>>, h: HeaderMap| async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
                    ([("cache-control", "max-age=60")], format!("host={host}")).into_response()
                },
            ),
        )
        .route(
            "/lang",
            get(
                |State(c): State<Arc<AtomicUsize>>, h: HeaderMap| async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let lang = h
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    (
                        [("cache-control", "max-age=60"), ("vary", "accept-language")],
                        format!("lang={lang}"),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/session",
            get(
                |State(c): State<Arc<AtomicUsize>>, h: HeaderMap| async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let user = h
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("anonymous")
                        .to_owned();
                    (
                        [
                            ("cache-control", "max-age=60"),
                            ("set-cookie", "session=secret"),
                        ],
                        format!("user={user}"),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(calls)
}

async fn setup() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = reflecting_origin(calls.clone()).layer(CacheLayer::new(Cache::builder().build()));
    (serve(app).await, calls)
}

#[tokio::test]
async fn host_is_part_of_the_key_so_one_vhost_never_serves_another() {
    let (addr, calls) = setup().await;
    let c = client();
    let a = send(&c, addr, "GET", "/page", &[("host", "a.test")]).await;
    let b = send(&c, addr, "GET", "/page", &[("host", "b.test")]).await;
    let a2 = send(&c, addr, "GET", "/page", &[("host", "A.TEST")]).await;
    assert_eq!(a.body(), "host=a.test");
    assert_eq!(b.body(), "host=b.test");
    // Host names are case-insensitive: the same entry.
    assert_eq!(a2.body(), "host=a.test");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_varied_header_cannot_poison_other_clients() {
    let (addr, calls) = setup().await;
    let c = client();
    let evil = send(&c, addr, "GET", "/lang", &[("accept-language", "<script>")]).await;
    assert_eq!(evil.body(), "lang=<script>");
    let normal = send(&c, addr, "GET", "/lang", &[("accept-language", "en")]).await;
    assert_eq!(normal.body(), "lang=en");
    let normal2 = send(&c, addr, "GET", "/lang", &[("accept-language", "en")]).await;
    assert_eq!(normal2.body(), "lang=en");
    assert!(
        normal2.cache_status().contains("hit"),
        "{}",
        normal2.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_response_setting_a_cookie_is_never_served_to_another_client() {
    let (addr, calls) = setup().await;
    let c = client();
    let alice = send(&c, addr, "GET", "/session", &[("authorization", "alice")]).await;
    assert_eq!(alice.body(), "user=alice");
    let anon = send(&c, addr, "GET", "/session", &[]).await;
    assert_eq!(anon.body(), "user=anonymous");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
