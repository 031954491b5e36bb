//! The `daramjwee` binary as a process, in front of an axum origin on 127.0.0.1.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxy_common::{client, get, post, request, run_to_exit, upstream, Proxy, TestClient};

// ---------------------------------------------------------------------------------------------
// The origin

#[derive(Default)]
struct Origin {
    calls: AtomicUsize,
    conditional: AtomicUsize,
    slow_started: AtomicUsize,
    hang_started: AtomicUsize,
    /// The `X-Forwarded-For` of each request to `/swr`, in order.
    swr_forwarded_for: std::sync::Mutex<Vec<String>>,
}

type Shared = Arc<Origin>;

const SLOW_CHUNKS: usize = 10;
const SLOW_CHUNK: usize = 32 << 10;

fn origin_app(origin: Shared, tag: &'static str) -> Router {
    Router::new()
        .route("/static", routing::get(static_route))
        .route("/etag", routing::get(etag_route))
        .route("/slow", routing::get(slow_route))
        .route("/headers", routing::get(headers_route))
        .route("/swr", routing::get(swr_route))
        .route("/upload", routing::post(upload_route))
        .route("/hang", routing::get(hang_route))
        .route(
            "/{*rest}",
            routing::get(move |State(o): State<Shared>| async move {
                o.calls.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=60")], tag)
            }),
        )
        .with_state(origin)
}

async fn static_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    (
        [("cache-control", "max-age=60"), ("etag", "\"s1\"")],
        "hello, proxy",
    )
        .into_response()
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
    (
        [("cache-control", "max-age=0"), ("etag", "\"e1\"")],
        vec![b'e'; 50_000],
    )
        .into_response()
}

/// Stale at once but servable while it is revalidated in the background; notes the
/// `X-Forwarded-For` of every request, and answers a matching `If-None-Match` with a 304.
async fn swr_route(State(o): State<Shared>, headers: HeaderMap) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    o.swr_forwarded_for
        .lock()
        .unwrap()
        .push(xff.unwrap_or("-").to_string());
    let fields = [
        ("cache-control", "max-age=0, stale-while-revalidate=60"),
        ("etag", "\"w1\""),
    ];
    if headers.get("if-none-match").is_some_and(|v| v == "\"w1\"") {
        o.conditional.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, fields).into_response();
    }
    (fields, "swr body").into_response()
}

/// A body that arrives in chunks over about a second, so it is still in flight when the test
/// sends SIGTERM.
async fn slow_route(State(o): State<Shared>) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    o.slow_started.fetch_add(1, Ordering::SeqCst);
    let stream = futures_util::stream::unfold(0usize, |i| async move {
        if i == SLOW_CHUNKS {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![b's'; SLOW_CHUNK])),
            i + 1,
        ))
    });
    ([("cache-control", "no-store")], Body::from_stream(stream)).into_response()
}

/// Echoes the forwarding headers it received.
async fn headers_route(headers: HeaderMap) -> Response {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let body = format!(
        "host={} xff={} xfh={} xfp={} conn-token={} rid={}",
        get("host"),
        get("x-forwarded-for"),
        get("x-forwarded-host"),
        get("x-forwarded-proto"),
        get("x-hop"),
        get("x-request-id"),
    );
    ([("cache-control", "no-store")], body).into_response()
}

async fn upload_route(State(o): State<Shared>, body: Bytes) -> Response {
    o.calls.fetch_add(1, Ordering::SeqCst);
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    format!("len={} sum={sum}", body.len()).into_response()
}

async fn hang_route(State(o): State<Shared>) -> Response {
    o.hang_started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
    "too late".into_response()
}

async fn serve_origin(tag: &'static str) -> (SocketAddr, Shared) {
    let origin = Shared::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = origin_app(origin.clone(), tag);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, origin)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_reports_cache_status_and_calls_origin_once() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let first = get(&c, proxy.addr, "/static").await;
    let second = get(&c, proxy.addr, "/static").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "hello, proxy");
    assert_eq!(second.body, "hello, proxy");
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert!(second.cache_status().contains("detail=memory"));
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
    assert!(first.headers.contains_key("x-request-id"));
}

/// tower-http's per-request `Trace` runs only when the log filter asks for its debug events;
/// either way the exchange is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_tracing_follows_the_log_filter() {
    let (oaddr, _origin) = serve_origin("o").await;
    for (filter, traced) in [("info", false), ("info,tower_http=debug", true)] {
        let proxy = Proxy::start_logging(&["--upstream", &upstream(oaddr)], filter);
        let c = client();
        for _ in 0..2 {
            let r = get(&c, proxy.addr, "/static").await;
            assert_eq!(
                (r.status, r.body.as_ref()),
                (StatusCode::OK, &b"hello, proxy"[..])
            );
        }
        // The events are written before the response's last frame is sent; give stderr's
        // reader a moment all the same.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let finished = |p: &Proxy| p.stderr().matches("finished processing request").count();
        while traced && finished(&proxy) < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expected = if traced { 2 } else { 0 };
        assert_eq!(finished(&proxy), expected, "{filter}: {}", proxy.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_is_served_from_the_cache() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let h2: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let a = get(&h2, proxy.addr, "/static").await;
    let b = get(&h2, proxy.addr, "/static").await;
    assert_eq!(b.body, "hello, proxy");
    assert!(a.cache_status().contains("fwd=uri-miss"));
    assert!(b.cache_status().contains("; hit"), "{}", b.cache_status());
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_is_revalidated_with_its_etag() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let first = get(&c, proxy.addr, "/etag").await;
    let second = get(&c, proxy.addr, "/etag").await;
    assert_eq!(first.body.len(), 50_000);
    assert_eq!(second.body, first.body);
    assert_eq!(origin.conditional.load(Ordering::SeqCst), 1);
    assert!(
        second.cache_status().contains("fwd=stale")
            && second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
}

/// The client's connection reaches every request the cache makes for it, a background
/// revalidation included (it travels with the upstream service the cache clones, not in the
/// request's extensions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_revalidation_forwards_the_clients_address() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let first = get(&c, proxy.addr, "/swr").await;
    let second = get(&c, proxy.addr, "/swr").await;
    assert_eq!(second.body, first.body);
    assert_eq!(second.body, "swr body");
    assert!(
        second.cache_status().contains("; hit"),
        "served stale while revalidating: {}",
        second.cache_status()
    );
    for _ in 0..100 {
        if origin.conditional.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.conditional.load(Ordering::SeqCst), 1, "revalidated");
    let seen = origin.swr_forwarded_for.lock().unwrap().clone();
    assert_eq!(seen, ["127.0.0.1", "127.0.0.1"], "fill, then revalidation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_through_admin_forces_a_refetch() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    get(&c, proxy.addr, "/static").await;
    assert!(get(&c, proxy.addr, "/static")
        .await
        .cache_status()
        .contains("; hit"));

    let purged = post(&c, proxy.admin, "/purge?path=/static", Bytes::new()).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert!(
        purged.text().contains(&format!("http://{oaddr}/static")),
        "{}",
        purged.text()
    );
    let after = get(&c, proxy.addr, "/static").await;
    assert!(
        after.cache_status().contains("fwd=uri-miss"),
        "{}",
        after.cache_status()
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);

    // The same by key, percent-encoded, on the named site.
    let key = format!("http%3A%2F%2F{oaddr}%2Fstatic");
    let purged = post(
        &c,
        proxy.admin,
        &format!("/purge?key={key}&site=default"),
        Bytes::new(),
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    get(&c, proxy.addr, "/static").await;
    assert_eq!(origin.calls.load(Ordering::SeqCst), 3);

    let missing = post(&c, proxy.admin, "/purge", Bytes::new()).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_metrics_and_healthz_report_the_cache() {
    let (oaddr, _origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    get(&c, proxy.addr, "/static").await;
    get(&c, proxy.addr, "/static").await;
    get(&c, proxy.addr, "/static").await;

    let stats = get(&c, proxy.admin, "/stats").await;
    let v: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    let site = &v["sites"]["default"];
    assert_eq!(site["misses"], 1, "{v}");
    assert_eq!(site["hits"], 2, "{v}");
    assert_eq!(site["tiers"][0]["store"], "memory");
    assert_eq!(site["tiers"][1]["store"], "file");

    let metrics = get(&c, proxy.admin, "/metrics").await.text();
    assert!(
        metrics.contains("daramjwee_stats_misses_total{site=\"default\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("daramjwee_stats_hits_total{site=\"default\",tier=\"0\",store=\"memory\"} 2"));
    // The engine's own metrics, through the Prometheus recorder, labelled by site.
    let engine_hits = metrics
        .lines()
        .find(|l| {
            l.starts_with("daramjwee_requests_total{")
                && l.contains("cache=\"default\"")
                && l.contains("outcome=\"hit\"")
                && l.contains("tier=\"memory\"")
        })
        .unwrap_or_else(|| panic!("no engine hit counter in:\n{metrics}"));
    assert!(engine_hits.ends_with(" 2"), "{engine_hits}");

    let health = get(&c, proxy.admin, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_response_finish_then_exits_zero() {
    let (oaddr, origin) = serve_origin("o").await;
    let mut proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let res = c
        .request(
            http::Request::get(format!("http://{}/slow", proxy.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    // The first chunk is here: the exchange is in flight.
    let mut received = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            break data.len();
        }
    };
    assert_eq!(origin.slow_started.load(Ordering::SeqCst), 1);
    proxy.signal("-TERM");
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the in-flight body completes after SIGTERM");
        if let Ok(data) = frame.into_data() {
            assert!(data.iter().all(|&b| b == b's'));
            received += data.len();
        }
    }
    assert_eq!(received, SLOW_CHUNKS * SLOW_CHUNK);
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    assert!(proxy.stderr().contains("SIGTERM received"));
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown_when_a_response_never_comes() {
    let (oaddr, origin) = serve_origin("o").await;
    let mut proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--upstream-timeout",
        "10m",
        "--drain-timeout",
        "200ms",
    ]);
    let c = client();
    let url = format!("http://{}/hang", proxy.addr);
    let pending = tokio::spawn(async move {
        c.request(
            http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    });
    // Wait until the proxy holds the request (the origin's hang has begun) before signalling.
    let mut held = false;
    for _ in 0..1000 {
        if origin.hang_started.load(Ordering::SeqCst) == 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held, "the request never reached the origin");
    proxy.signal("-TERM");
    // The hang lasts 120 s; the process must exit on its own long before the 30 s bound.
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("drain timeout reached"),
        "{}",
        proxy.stderr()
    );
    assert!(
        pending.await.unwrap().is_err(),
        "the hung exchange is cut, not answered"
    );
}

#[test]
fn check_flag_prints_the_resolved_configuration_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_daramjwee"))
        .args([
            "--upstream",
            "http://127.0.0.1:9/base",
            "--check",
            "--cold",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("site default: host=* prefix=/ upstream=http://127.0.0.1:9/base hot=memory:256MiB cold=none eviction=s3fifo"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&["--upstream", &upstream(dead)]);
    let c = client();
    let r = get(&c, proxy.addr, "/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().contains("cannot connect to upstream"),
        "{}",
        r.text()
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    drop(proxy);

    let (oaddr, _origin) = serve_origin("o").await;
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream(oaddr),
        "--upstream-timeout",
        "300ms",
    ]);
    let r = get(&c, proxy.addr, "/hang").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.text().contains("sent no response within"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_dropped() {
    let (oaddr, _origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let r = request(
        &c,
        "GET",
        format!("http://{}/headers", proxy.addr),
        &[
            ("host", "front.example"),
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-request-id", "client-7"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        r.text(),
        format!("host={oaddr} xff=127.0.0.1 xfh=- xfp=http conn-token=- rid=client-7")
    );
    assert_eq!(r.headers["x-request-id"], "client-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_forwarded_and_returned_unless_turned_off() {
    let (oaddr, _origin) = serve_origin("o").await;
    let c = client();
    let on = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let r = get(&c, on.addr, "/headers").await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert!(r.text().ends_with(&format!(" rid={id}")), "{}", r.text());
    let next = get(&c, on.addr, "/headers").await;
    assert_ne!(next.headers["x-request-id"], id.as_str(), "ids are unique");

    let off = Proxy::start(&["--upstream", &upstream(oaddr), "--request-ids", "false"]);
    let r = get(&c, off.addr, "/headers").await;
    assert!(!r.headers.contains_key("x-request-id"));
    assert!(r.text().ends_with(" rid=-"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_streams_to_the_origin_uncached() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let r1 = post(&c, proxy.addr, "/upload", Bytes::from(body.clone())).await;
    let r2 = post(&c, proxy.addr, "/upload", Bytes::from(body)).await;
    assert_eq!(r1.text(), format!("len=300000 sum={sum}"));
    assert_eq!(r2.text(), r1.text());
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_route_by_prefix_to_their_own_upstream_and_cache() {
    let (a, origin_a) = serve_origin("from-a").await;
    let (b, origin_b) = serve_origin("from-b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sites.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
            [defaults]
            hot = "memory:8MiB"
            cold = "none"

            [[site]]
            name = "a"
            prefix = "/a"
            strip_prefix = true
            upstream = "http://{a}"

            [[site]]
            name = "b"
            upstream = "http://{b}"
            policy = "origin-trusting"
            ttl = "10s"
            "#
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    assert_eq!(get(&c, proxy.addr, "/a/x").await.text(), "from-a");
    assert_eq!(get(&c, proxy.addr, "/a/x").await.text(), "from-a");
    assert_eq!(get(&c, proxy.addr, "/ax").await.text(), "from-b");
    assert_eq!(get(&c, proxy.addr, "/b/y").await.text(), "from-b");
    assert_eq!(origin_a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(origin_b.calls.load(Ordering::SeqCst), 2);

    let v: serde_json::Value =
        serde_json::from_slice(&get(&c, proxy.admin, "/stats").await.body).unwrap();
    assert_eq!(v["sites"]["a"]["hits"], 1, "{v}");
    assert_eq!(v["sites"]["b"]["hits"], 0, "{v}");
    assert_eq!(v["sites"]["b"]["misses"], 2, "{v}");
}

/// Polls `/stats` (bounded) until `site` has committed `n` fills.
async fn wait_fills(c: &TestClient, admin: SocketAddr, site: &str, n: u64) -> serde_json::Value {
    for _ in 0..1000 {
        let v: serde_json::Value =
            serde_json::from_slice(&get(c, admin, "/stats").await.body).unwrap();
        if v["sites"][site]["fills_committed"].as_u64() >= Some(n) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("site `{site}` never committed {n} fills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_sites_share_one_background_runtime() {
    let (a, origin_a) = serve_origin("from-a").await;
    let (b, origin_b) = serve_origin("from-b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weighted.toml");
    // Default cold tiers (files under --data-dir): each hot fill is copied down by a
    // background task, so both sites' groups of the shared runtime must run work.
    std::fs::write(
        &cfg,
        format!(
            r#"
            workers = 2

            [defaults]
            hot = "memory:8MiB"
            queue = 64

            [[site]]
            name = "a"
            prefix = "/a"
            strip_prefix = true
            upstream = "http://{a}"
            weight = 3

            [[site]]
            name = "b"
            upstream = "http://{b}"
            queue = 16
            "#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daramjwee"))
        .args(["--config", cfg.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("workers = 2 (shared by all sites)"), "{text}");
    assert!(
        text.contains("site a: ") && text.contains("weight=3 queue=64"),
        "{text}"
    );
    assert!(
        text.contains("site b: ") && text.contains("weight=1 queue=16"),
        "{text}"
    );

    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    for i in 0..4 {
        assert_eq!(
            get(&c, proxy.addr, &format!("/a/x{i}")).await.text(),
            "from-a"
        );
        assert_eq!(
            get(&c, proxy.addr, &format!("/y{i}")).await.text(),
            "from-b"
        );
    }
    // Four hot fills and four background cold copies per site.
    let v = wait_fills(&c, proxy.admin, "a", 8).await;
    let v_b = wait_fills(&c, proxy.admin, "b", 8).await;
    assert_eq!(v["sites"]["a"]["dropped_tasks"], 0, "{v}");
    assert_eq!(v_b["sites"]["b"]["dropped_tasks"], 0, "{v_b}");
    assert_eq!(get(&c, proxy.addr, "/a/x0").await.text(), "from-a");
    assert_eq!(origin_a.calls.load(Ordering::SeqCst), 4);
    assert_eq!(origin_b.calls.load(Ordering::SeqCst), 4);
}

#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_cold_tier_serves_after_a_restart() {
    let (oaddr, origin) = serve_origin("o").await;
    let cold = tempfile::tempdir().unwrap();
    let url = format!("file://{}", cold.path().display());
    let args = [
        "--upstream",
        &upstream(oaddr),
        "--hot",
        "memory:8MiB",
        "--cold",
        &url,
    ];
    let c = client();
    {
        let mut proxy = Proxy::start(&args);
        let first = get(&c, proxy.addr, "/static").await;
        assert!(first.cache_status().contains("fwd=uri-miss"));
        // Wait (bounded) for the background copy into the cold tier to commit.
        let mut copied = false;
        for _ in 0..1000 {
            let v: serde_json::Value =
                serde_json::from_slice(&get(&c, proxy.admin, "/stats").await.body).unwrap();
            if v["sites"]["default"]["fills_committed"].as_u64() >= Some(2) {
                copied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(copied, "the cold copy never committed");
        proxy.signal("-TERM");
        assert_eq!(proxy.wait_exit().code(), Some(0));
    }
    let proxy = Proxy::start(&args);
    let again = get(&c, proxy.addr, "/static").await;
    assert_eq!(again.body, "hello, proxy");
    assert!(
        again.cache_status().contains("; hit") && again.cache_status().contains("detail=object"),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[[site]]\nname = \"a\"\nupstrem = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let weight0 = dir.path().join("weight0.toml");
    std::fs::write(
        &weight0,
        "[[site]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\nweight = 0\n",
    )
    .unwrap();
    let site_workers = dir.path().join("site-workers.toml");
    std::fs::write(
        &site_workers,
        "[[site]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\nworkers = 8\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "no upstream"),
        (
            vec!["--upstream".into(), "ftp://x".into()],
            "expected http[s]://",
        ),
        (
            vec![
                "--upstream".into(),
                "http://h".into(),
                "--hot".into(),
                "memory:lots".into(),
            ],
            "hot: `memory:lots`",
        ),
        (
            vec![
                "--upstream".into(),
                "http://h".into(),
                "--cold".into(),
                "nosuch://bucket".into(),
            ],
            "cold: `nosuch://bucket`",
        ),
        (
            vec![
                "--upstream".into(),
                "http://h".into(),
                "--eviction".into(),
                "fifo".into(),
            ],
            "eviction: `fifo` is not one of lru, s3fifo, sieve, tinylfu",
        ),
        (
            vec!["--config".into(), typo.to_str().unwrap().into()],
            "upstrem",
        ),
        (
            vec![
                "--config".into(),
                dir.path().join("absent.toml").to_str().unwrap().into(),
            ],
            "cannot read",
        ),
        (vec!["--no-such-flag".into()], "--no-such-flag"),
        (
            vec!["--config".into(), weight0.to_str().unwrap().into()],
            "site `a`: weight: 0 is not in 1..=1000",
        ),
        (
            vec!["--config".into(), site_workers.to_str().unwrap().into()],
            "set `workers = N` at the top level",
        ),
        (
            vec![
                "--upstream".into(),
                "http://h".into(),
                "--workers".into(),
                "0".into(),
            ],
            "workers: 0 is not in 1..=1024",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected `{expect}` in:\n{stderr}"
        );
    }
}

/// A listener that cannot be bound stops the start with the address and the system's reason,
/// for the proxy's listener and the admin one alike; exit status 1 (2 is for configuration).
#[test]
fn a_listener_that_cannot_be_bound_is_named_with_its_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let common = [
        "--upstream",
        "http://127.0.0.1:1",
        "--hot",
        "memory:16MiB",
        "--cold",
        "none",
        "--data-dir",
        data,
    ];
    for (flags, expect) in [
        (
            ["--listen", addr.as_str(), "--admin", "off"],
            format!("cannot listen on {addr}: "),
        ),
        (
            ["--listen", "127.0.0.1:0", "--admin", addr.as_str()],
            format!("cannot listen on {addr} (admin): "),
        ),
    ] {
        let mut args = common.to_vec();
        args.extend_from_slice(&flags);
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&expect),
            "expected `{expect}` in:\n{stderr}"
        );
        assert!(
            stderr.to_lowercase().contains("address already in use"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn admin_endpoints_are_not_reachable_on_the_public_listener() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    get(&c, proxy.addr, "/static").await;
    // The public listener forwards these paths to the upstream (whose catch-all answers with
    // its tag); it never answers them itself.
    for path in ["/stats", "/metrics", "/healthz"] {
        let got = get(&c, proxy.addr, path).await;
        assert_eq!(got.text(), "o", "{path} must come from the upstream");
    }
    let purge = post(&c, proxy.addr, "/purge?key=/static", Bytes::new()).await;
    assert_ne!(purge.status, StatusCode::OK);
    let after = get(&c, proxy.addr, "/static").await;
    assert!(
        after.cache_status().contains("hit"),
        "the public purge must not purge"
    );
    assert_eq!(origin.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn purge_by_prefix_through_admin_removes_every_key_under_it() {
    let (oaddr, origin) = serve_origin("o").await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    for p in ["/a/1", "/a/2", "/b/1"] {
        get(&c, proxy.addr, p).await;
        assert!(get(&c, proxy.addr, p)
            .await
            .cache_status()
            .contains("; hit"));
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 3);
    let prefix = format!("http%3A%2F%2F{oaddr}%2Fa%2F");
    let purged = post(
        &c,
        proxy.admin,
        &format!("/purge?prefix={prefix}"),
        Bytes::new(),
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    for p in ["/a/1", "/a/2"] {
        assert!(get(&c, proxy.addr, p)
            .await
            .cache_status()
            .contains("fwd=uri-miss"));
    }
    assert!(get(&c, proxy.addr, "/b/1")
        .await
        .cache_status()
        .contains("; hit"));
    assert_eq!(origin.calls.load(Ordering::SeqCst), 5);
}
