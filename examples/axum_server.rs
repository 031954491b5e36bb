//! An axum server with daramjwee in front of an expensive route.
//!
//! `/report` takes about 50 ms to render and says `Cache-Control: max-age=30` with an `ETag`, so
//! the cache keeps it for 30 seconds: the first request renders it, the next ones are served from
//! the hot memory tier. `/now` is not behind the cache.
//!
//! ```text
//! cargo run --example axum_server -- --demo   # serve, call itself a few times, print, exit
//! cargo run --example axum_server             # serve on 127.0.0.1:3000 (or $PORT)
//! curl -i http://127.0.0.1:3000/report        # look at the Cache-Status header
//! ```
//!
//! The demo mode (`--demo` or `DEMO=1`) binds an ephemeral port, makes requests to itself with a
//! hyper client and prints each response's `Cache-Status` and latency. It needs no outside service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use daramjwee::http::{CacheLayer, CACHE_STATUS};
use daramjwee::store::MemStore;
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How many times the expensive handler actually ran (the demo prints it).
#[derive(Clone, Default)]
struct Renders(Arc<AtomicU64>);

/// The expensive route: ~50 ms of work, then a response the cache may keep for 30 s.
async fn report(State(renders): State<Renders>) -> impl IntoResponse {
    let n = renders.0.fetch_add(1, Ordering::Relaxed) + 1;
    // Stands for a slow database query or template render.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = format!("quarterly report, rendered {n} time(s)\n");
    (
        [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=30"),
            ),
            (header::ETAG, HeaderValue::from_static("\"report-v1\"")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        body,
    )
}

/// An uncached route: changes on every request.
async fn now() -> String {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("now: {us} µs since the epoch\n")
}

fn app(cache: Cache, renders: Renders) -> Router {
    Router::new()
        // The layer wraps only this route; `/now` never touches the cache.
        .route("/report", get(report).layer(CacheLayer::new(cache)))
        .route("/now", get(now))
        .with_state(renders)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,daramjwee=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let demo =
        std::env::args().any(|a| a == "--demo") || std::env::var("DEMO").is_ok_and(|v| v == "1");

    // A 64 MiB hot tier in memory; add `.cold(...)` for a disk or object-storage tier.
    let cache = Cache::builder().hot(MemStore::new(64 << 20)).build();
    let renders = Renders::default();
    let router = app(cache.clone(), renders.clone());

    let port = if demo {
        0
    } else {
        std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000)
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;

    if !demo {
        tracing::info!("listening on http://{addr} (try /report and /now)");
        axum::serve(listener, router).await?;
        return Ok(());
    }

    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    run_demo(addr, &renders).await?;
    server.abort();
    cache.close(Duration::from_secs(1)).await?;
    Ok(())
}

/// Calls the server a few times and prints what the cache did.
async fn run_demo(
    addr: SocketAddr,
    renders: &Renders,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    println!("daramjwee demo: server on http://{addr}\n");
    println!(
        "{:<8} {:<7} {:>9}  {:<45} body",
        "path", "status", "latency", "cache-status"
    );
    let plan: [(&str, Option<&str>); 6] = [
        ("/report", None),
        ("/report", None),
        ("/report", None),
        ("/report", Some("\"report-v1\"")),
        ("/now", None),
        ("/now", None),
    ];
    for (path, if_none_match) in plan {
        let mut req = http::Request::get(format!("http://{addr}{path}"));
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let started = Instant::now();
        let res = client.request(req.body(Empty::new())?).await?;
        let status = res.status();
        let cache_status = res
            .headers()
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = res.into_body().collect().await?.to_bytes();
        let elapsed = started.elapsed();
        let label = match if_none_match {
            Some(_) => format!("{path}*"),
            None => path.to_owned(),
        };
        println!(
            "{:<8} {:<7} {:>7.1}ms  {:<45} {}",
            label,
            status.as_u16(),
            elapsed.as_secs_f64() * 1e3,
            cache_status,
            String::from_utf8_lossy(&body).trim_end()
        );
    }
    println!(
        "\n/report* carried If-None-Match: answered 304 from the cache.\n\
         The /report handler ran {} time(s) for 4 requests.",
        renders.0.load(Ordering::Relaxed)
    );
    Ok(())
}
