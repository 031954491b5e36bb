//! Per-site header rules (issue 16), through the binary's real listener: request rules shape
//! what the upstream sees without changing the key; response rules shape every response sent,
//! hits included, without changing what is stored.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing;
use bytes::Bytes;
use proxy_common::{client, request, Proxy};

async fn echo(State(calls): State<Arc<AtomicUsize>>, h: HeaderMap) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let get = |n: &str| {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join("|")
    };
    let body = format!(
        "x-proto={} x-client={} x-debug={} x-tag={}",
        get("x-proto"),
        get("x-client"),
        get("x-debug"),
        get("x-tag"),
    );
    (
        [("cache-control", "max-age=60"), ("x-origin-secret", "s")],
        body,
    )
}

async fn serve_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/{*rest}", routing::get(echo))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_rules_apply_to_misses_and_hits_alike() {
    let (origin, calls) = serve_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rules.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
            [[site]]
            name = "web"
            upstream = "http://{origin}"
            cold = "none"
            request_headers = [
                {{ set = "x-proto", value = "https" }},
                {{ set = "x-client", value = "$client_addr" }},
                {{ remove = "x-debug" }},
                {{ append = "x-tag", value = "site=$site" }},
            ]
            response_headers = [
                {{ remove = "x-origin-secret" }},
                {{ set = "x-served-by", value = "$site" }},
                {{ append = "x-trace", value = "rid=$request_id" }},
            ]
            "#
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    let url = format!("http://{}/page", proxy.addr);
    let sent = [
        ("x-debug", "on"),
        ("x-tag", "client"),
        ("x-request-id", "r-1"),
    ];
    let miss = request(&c, "GET", url.clone(), &sent, Bytes::new()).await;
    assert_eq!(
        miss.text(),
        "x-proto=https x-client=127.0.0.1 x-debug= x-tag=client|site=web"
    );
    // Without `x-debug` (the header a rule removes) the request shares the entry: removing it
    // upstream did not split or change the key.
    let hit = request(&c, "GET", url, &[("x-request-id", "r-2")], Bytes::new()).await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.text(), miss.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for (r, id) in [(&miss, "r-1"), (&hit, "r-2")] {
        assert_eq!(r.headers["x-served-by"], "web");
        assert_eq!(r.headers["x-trace"], format!("rid={id}").as_str());
        assert!(!r.headers.contains_key("x-origin-secret"));
    }
}

#[test]
fn a_rule_on_a_framing_header_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[site]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\n\
         response_headers = [{ remove = \"content-length\" }]\n",
    )
    .unwrap();
    let (status, stderr) =
        proxy_common::run_to_exit(&["--check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("site `a`: response_headers: rule 1: `content-length` frames or routes"),
        "{stderr}"
    );
}
