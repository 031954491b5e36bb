//! Cache poisoning through the proxy (issue 14): whatever the upstream sees of a request is in
//! the key or set by the proxy. Each test sends an attack request, then a plain one, through the
//! binary's real listener, to an origin that echoes the fields frameworks build links and
//! routes from into a cacheable body.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use axum::routing;
use bytes::Bytes;
use proxy_common::{client, get, request, upstream, Proxy, TestClient};

/// The fields the origin echoes: every one a framework may read to build links or pick a
/// route, plus the proxy credentials that must never reach it.
const ECHOED: [&str; 9] = [
    "host",
    "x-forwarded-host",
    "forwarded",
    "x-forwarded-prefix",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "proxy-authorization",
    "x-secret",
];

async fn echo(
    State(calls): State<Arc<AtomicUsize>>,
    method: Method,
    h: HeaderMap,
) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let mut body = format!("method={method}");
    for name in ECHOED {
        let v = h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
        body.push_str(&format!(" {name}={v}"));
    }
    ([("cache-control", "max-age=60")], body)
}

async fn serve_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/{*rest}", routing::any(echo))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

/// What the origin answers a plain request when it sees `host` and nothing else.
fn clean_body(host: &str) -> String {
    let mut body = "method=GET".to_string();
    for name in ECHOED {
        let v = if name == "host" { host } else { "-" };
        body.push_str(&format!(" {name}={v}"));
    }
    body
}

/// Sends `attack` to `path`, then a plain request; returns (attack body, plain body).
async fn attack_then_plain(
    c: &TestClient,
    proxy: &Proxy,
    path: &str,
    attack: &[(&str, &str)],
) -> (String, String) {
    let url = format!("http://{}{path}", proxy.addr);
    let a = request(c, "GET", url.clone(), attack, Bytes::new()).await;
    let plain = request(c, "GET", url, &[], Bytes::new()).await;
    (a.text(), plain.text())
}

/// One attack per vector; `Host` is the proxy's own address unless the attack replaces it.
fn vectors() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("/v/host", vec![("host", "evil.example")]),
        ("/v/xfh", vec![("x-forwarded-host", "evil.example")]),
        (
            "/v/forwarded",
            vec![("forwarded", "host=evil.example;proto=https")],
        ),
        ("/v/prefix", vec![("x-forwarded-prefix", "/evil")]),
        ("/v/original", vec![("x-original-url", "/admin")]),
        ("/v/rewrite", vec![("x-rewrite-url", "/admin")]),
        ("/v/override", vec![("x-http-method-override", "DELETE")]),
        // `Connection` naming an end-to-end field makes it hop-by-hop: it must not cross either.
        (
            "/v/connection",
            vec![("connection", "x-secret"), ("x-secret", "1")],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_attack_field_poisons_what_a_plain_request_is_served() {
    let (oaddr, calls) = serve_echo().await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr), "--cold", "none"]);
    let c = client();
    // Every vector is tried before failing, so one run names each one that poisons.
    let mut poisoned = Vec::new();
    for (path, attack) in vectors() {
        let (_, plain) = attack_then_plain(&c, &proxy, path, &attack).await;
        if plain != clean_body(&oaddr.to_string()) {
            poisoned.push(format!("{path}: {plain}"));
        }
    }
    assert!(poisoned.is_empty(), "poisoned:\n{}", poisoned.join("\n"));
    // Nothing the attacks sent reached the origin, so each attack's response was the clean
    // one, stored once and served to the plain request.
    assert_eq!(calls.load(Ordering::SeqCst), vectors().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preserved_host_is_keyed_so_each_host_gets_its_own_entry() {
    let (oaddr, calls) = serve_echo().await;
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--cold",
        "none",
        "--preserve-host",
        "true",
    ]);
    let c = client();
    let (attack, plain) = attack_then_plain(&c, &proxy, "/p", &[("host", "Evil.Example")]).await;
    assert!(
        attack.contains(" host=evil.example x-forwarded-host=evil.example "),
        "{attack}"
    );
    let me = proxy.addr.to_string();
    let expected =
        clean_body(&me).replace(" x-forwarded-host=-", &format!(" x-forwarded-host={me}"));
    assert_eq!(plain, expected);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "two hosts, two entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_public_host_is_sent_whatever_host_the_client_names() {
    let (oaddr, calls) = serve_echo().await;
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--cold",
        "none",
        "--preserve-host",
        "true",
        "--public-host",
        "www.example",
    ]);
    let c = client();
    let (attack, plain) = attack_then_plain(&c, &proxy, "/p", &[("host", "evil.example")]).await;
    let expected =
        clean_body("www.example").replace(" x-forwarded-host=-", " x-forwarded-host=www.example");
    assert_eq!(attack, expected);
    assert_eq!(plain, expected);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one public host, one entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_fields_a_site_forwards_are_keyed() {
    let (oaddr, calls) = serve_echo().await;
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--cold",
        "none",
        "--forward-target-headers",
        "true",
    ]);
    let c = client();
    let (attack, plain) =
        attack_then_plain(&c, &proxy, "/p", &[("x-forwarded-prefix", "/evil")]).await;
    assert!(
        attack.contains(" x-forwarded-prefix=/evil "),
        "forwarded: {attack}"
    );
    assert_eq!(plain, clean_body(&oaddr.to_string()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_and_dropped_headers_never_reach_the_origin_on_a_fill() {
    let (oaddr, calls) = serve_echo().await;
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--cold",
        "none",
        "--drop-header",
        "X-Secret",
    ]);
    let c = client();
    let sent = [
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("x-secret", "s3cret"),
    ];
    let r = request(
        &c,
        "GET",
        format!("http://{}/creds", proxy.addr),
        &sent,
        Bytes::new(),
    )
    .await;
    assert!(
        r.cache_status().contains("fwd=uri-miss"),
        "{}",
        r.cache_status()
    );
    assert_eq!(r.text(), clean_body(&oaddr.to_string()));
    assert_eq!(get(&c, proxy.addr, "/creds").await.text(), r.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
