//! The access log (issue 16), through the binary's real listener: one line per request, with
//! what the request was, how it ended, and where it was answered from.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::routing;
use bytes::Bytes;
use proxy_common::{client, request, upstream, Proxy};

async fn serve_origin() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/{*rest}",
        routing::get(|| async { ([("cache-control", "max-age=60")], vec![b'x'; 1000]) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The proxy in front of `origin` (memory tier only), logging to `log`, with `extra` flags.
fn logging_proxy(origin: std::net::SocketAddr, log: &Path, extra: &[&str]) -> Proxy {
    let upstream = upstream(origin);
    let mut args = vec![
        "--upstream",
        &upstream,
        "--cold",
        "none",
        "--access-log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// The log's lines once it holds `n` of them (bounded wait: the writer is another thread).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "log has {} lines: {text}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A miss (`req-1`), then requests (`req-2`, ...) until one is answered from the cache. A
/// request sent right after the miss's body may still join its fill (`collapsed`) rather than
/// hit the stored entry. Returns the hit's id and how many lines the log will hold.
async fn miss_then_hit(proxy: &Proxy) -> (String, usize) {
    let c = client();
    let url = format!("http://{}/a?x=1", proxy.addr);
    for n in 1..=100 {
        let id = format!("req-{n}");
        let r = request(
            &c,
            "GET",
            url.clone(),
            &[("x-request-id", &id)],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.body.len(), 1000);
        if n > 1 && r.cache_status().contains("; hit") {
            return (id, n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no hit in 100 requests");
}

/// The line of the request with this id: lines of different worker threads may be written
/// out of order (documented).
fn line_of<'a>(lines: &'a [String], id: &str) -> &'a str {
    let json = format!("\"request_id\":\"{id}\"");
    let combined = format!(" rid={id}");
    lines
        .iter()
        .find(|l| l.contains(&json) || l.ends_with(&combined))
        .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_record_each_request_with_its_cache_outcome() {
    let origin = serve_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.jsonl");
    let proxy = logging_proxy(origin, &log, &["--access-log-format", "json"]);
    let (hit_id, sent) = miss_then_hit(&proxy).await;
    let lines = wait_lines(&log, sent);
    assert_eq!(lines.len(), sent, "{lines:?}");
    let miss: serde_json::Value = serde_json::from_str(line_of(&lines, "req-1")).unwrap();
    let hit: serde_json::Value = serde_json::from_str(line_of(&lines, &hit_id)).unwrap();
    for (v, id) in [(&miss, "req-1"), (&hit, hit_id.as_str())] {
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/a?x=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1000);
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["request_id"], id);
        assert!(v["duration_ms"].as_f64().unwrap() > 0.0, "{v}");
    }
    assert!(
        miss["cache_status"]
            .as_str()
            .unwrap()
            .contains("fwd=uri-miss"),
        "{miss}"
    );
    assert!(miss["upstream_ms"].as_f64().unwrap() > 0.0, "{miss}");
    assert!(
        hit["cache_status"].as_str().unwrap().contains("; hit"),
        "{hit}"
    );
    assert!(
        hit["upstream_ms"].is_null(),
        "a hit never went upstream: {hit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_name_the_request_outcome_and_id() {
    let origin = serve_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = logging_proxy(origin, &log, &[]);
    let (hit_id, sent) = miss_then_hit(&proxy).await;
    let lines = wait_lines(&log, sent);
    let hit = line_of(&lines, &hit_id);
    assert!(hit.starts_with("127.0.0.1 - - ["), "{hit}");
    assert!(
        hit.contains("] \"GET /a?x=1 HTTP/1.1\" 200 1000 \"-\" \"-\" rt="),
        "{hit}"
    );
    assert!(hit.contains(" urt=- cs=\"daramjwee; hit"), "{hit}");
    let miss = line_of(&lines, "req-1");
    assert!(miss.contains(" cs=\"daramjwee; fwd=uri-miss"), "{miss}");
}

/// A graceful shutdown writes every line before the process exits: the writer batches lines
/// for up to 20 ms, and a proxy stopped right after its last response must not lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_when_the_proxy_stops_right_after_its_last_response() {
    let origin = serve_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut proxy = logging_proxy(origin, &log, &[]);
    let c = client();
    let n = 300;
    for i in 0..n {
        let url = format!("http://{}/a?i={i}", proxy.addr);
        let r = request(&c, "GET", url, &[], Bytes::new()).await;
        assert_eq!(r.body.len(), 1000);
    }
    drop(c);
    proxy.signal("-TERM");
    assert!(proxy.wait_exit().success(), "{}", proxy.stderr());
    // Read once, after the exit: nothing may still be on its way. Lines of different worker
    // threads may be written up to one batch apart out of order (documented), so the check is
    // that each request has exactly one line, the last one included.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seen: Vec<usize> = text
        .lines()
        .map(|l| {
            let i = l.split("/a?i=").nth(1).and_then(|r| r.split(' ').next());
            i.and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("not a line of this test: {l}"))
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{}", proxy.stderr());
}
