//! Targeted cache control (RFC 9213) through the binary's real listener: `CDN-Cache-Control` is
//! honoured by default, a site's own field comes first, and both can be kept from clients.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing;
use bytes::Bytes;
use proxy_common::{client, request, Proxy};

/// `/cdn`: `Cache-Control: no-store` for browsers, `CDN-Cache-Control: max-age=60` for us.
/// `/own`: our own field says `no-store`, the CDN field says store.
async fn origin(State(calls): State<Arc<AtomicUsize>>, uri: axum::http::Uri) -> impl IntoResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    let own = if uri.path() == "/own" {
        "no-store"
    } else {
        "max-age=60"
    };
    (
        [
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
            ("daramjwee-cache-control", own),
        ],
        format!("call {n}"),
    )
}

async fn serve() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/{*rest}", routing::get(origin))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

fn config(dir: &std::path::Path, origin: SocketAddr, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("site.toml");
    let text = format!(
        "[[site]]\nname = \"web\"\nupstream = \"http://{origin}\"\ncold = \"none\"\n{extra}\n"
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_is_honoured_by_default_and_passed_on() {
    let (origin, calls) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), origin, "");
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    let url = format!("http://{}/cdn", proxy.addr);
    let miss = request(&c, "GET", url.clone(), &[], Bytes::new()).await;
    assert_eq!(miss.text(), "call 0");
    let mut hit = request(&c, "GET", url.clone(), &[], Bytes::new()).await;
    for _ in 0..50 {
        if hit.cache_status().contains("; hit") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        hit = request(&c, "GET", url.clone(), &[], Bytes::new()).await;
    }
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.text(), "call 0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not stripped by default: caches further down may use it too (RFC 9213 §2.1).
    assert_eq!(hit.headers["cdn-cache-control"], "max-age=60");
    assert_eq!(hit.headers["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_own_field_comes_first_and_targeted_fields_can_be_stripped() {
    let (origin, calls) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "targeted_field = \"Daramjwee-Cache-Control\"\nstrip_targeted = true";
    let cfg = config(dir.path(), origin, extra);
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    let url = format!("http://{}/own", proxy.addr);
    for n in 0..2 {
        let got = request(&c, "GET", url.clone(), &[], Bytes::new()).await;
        assert_eq!(got.text(), format!("call {n}"), "our field says no-store");
        assert!(!got.headers.contains_key("cdn-cache-control"));
        assert!(!got.headers.contains_key("daramjwee-cache-control"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_targeted_field_that_is_not_a_field_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cfg = config(dir.path(), addr, "targeted_field = \"bad name\"");
    let (status, stderr) = proxy_common::run_to_exit(&["--check", cfg.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("targeted_field"), "{stderr}");
}
