//! A bounded soak: the layer (memory hot tier + disk tier) in front of a local origin, over
//! loopback, under a mix of hits, misses, revalidations and purges. Prints RSS, live heap bytes
//! (counted by a wrapping allocator) and open file descriptors over time; exits non-zero on any
//! wrong body, error, or fd leak. RSS that grows while the live heap stays flat is the
//! allocator keeping freed pages, not a leak.
//!
//! ```sh
//! SOAK_SECS=600 SOAK_CLIENTS=64 cargo run --release --example soak
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use daramjwee::http::CacheLayer;
use daramjwee::store::{FileStore, MemStore};
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};

const KEYS: u64 = 2000;

#[path = "support/live_heap.rs"]
mod live_heap;
use live_heap::LiveHeap;

/// Counts live heap bytes (allocated minus freed) of the whole process.
#[global_allocator]
static GLOBAL: LiveHeap = LiveHeap;

/// Live heap, in KiB.
fn heap_kib() -> u64 {
    LiveHeap::bytes() >> 10
}

fn body_of(n: u64) -> Vec<u8> {
    let len = 1024 + (n * 7919) % (256 * 1024);
    (0..len).map(|i| (n.wrapping_mul(31) + i) as u8).collect()
}

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let clients: u64 = std::env::var("SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir()?;
    let cache = Cache::builder()
        .hot(MemStore::new(64 << 20))
        .tier(
            Arc::new(
                FileStore::builder(dir.path())
                    .capacity(256 << 20)
                    .open()
                    .await?,
            ),
            None,
        )
        .build();
    let layer = CacheLayer::new(cache.clone());
    let handle = layer.handle();
    let origin_calls = Arc::new(AtomicU64::new(0));
    let oc = origin_calls.clone();
    let app = Router::new()
        .route(
            "/obj/{n}",
            get(move |Path(n): Path<u64>, headers: http::HeaderMap| {
                let oc = oc.clone();
                async move {
                    oc.fetch_add(1, Ordering::Relaxed);
                    let etag = format!("\"{n}\"");
                    if headers
                        .get("if-none-match")
                        .is_some_and(|v| v == etag.as_str())
                    {
                        return (http::StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
                    }
                    (
                        [("cache-control", "max-age=2".to_owned()), ("etag", etag)],
                        body_of(n),
                    )
                        .into_response()
                }
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    // Warm the connection pool before the baseline.
    let _ = client.get(format!("http://{addr}/obj/0").parse()?).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss0, fd0) = (status("VmRSS:"), fds());
    println!(
        "start: rss {} KiB, heap {} KiB, fds {fd0}, {clients} clients for {secs} s",
        rss0,
        heap_kib()
    );

    let deadline = Instant::now() + Duration::from_secs(secs);
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let purges = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (client, requests, errors, purges, handle) = (
            client.clone(),
            requests.clone(),
            errors.clone(),
            purges.clone(),
            handle.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Skewed: small keys are hot.
                let n = (x % KEYS) * (x % KEYS) / KEYS;
                let url = format!("http://{addr}/obj/{n}");
                if x % 100 == 0 {
                    let _ = handle.purge_url(&url).await;
                    purges.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let ok = match client.get(url.parse().unwrap()).await {
                    Ok(res) => match res.into_body().collect().await {
                        Ok(b) => b.to_bytes().as_ref() == body_of(n).as_slice(),
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The baseline is the warmed state: every client connected, the tiers filling.
    let warm = Arc::new(parking_lot::Mutex::new(None::<(u64, usize)>));
    let reporter = {
        let (requests, warm) = (requests.clone(), warm.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(10).min(deadline - Instant::now())).await;
                warm.lock().get_or_insert((status("VmRSS:"), fds()));
                println!(
                    "t={:>4}s requests {:>9} rss {:>7} KiB heap {:>7} KiB fds {}",
                    start.elapsed().as_secs(),
                    requests.load(Ordering::Relaxed),
                    status("VmRSS:"),
                    heap_kib(),
                    fds()
                );
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    reporter.await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, fd1) = (status("VmRSS:"), fds());
    let (rss_warm, fd_warm) = warm.lock().unwrap_or((rss0, fd0));
    let stats = cache.stats();
    let (reqs, errs) = (
        requests.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "end: rss {rss1} KiB (idle start {rss0}, warm {rss_warm}, peak {} KiB), heap {} KiB, fds {fd1} \
         (idle start {fd0}, warm {fd_warm}), requests {reqs}, \
         wrong or failed {errs}, purges {}, origin calls {}, hits {:?}, revalidated {}",
        status("VmHWM:"),
        heap_kib(),
        purges.load(Ordering::Relaxed),
        origin_calls.load(Ordering::Relaxed),
        stats.hits,
        stats.revalidated,
    );
    // Connections come and go; a leak shows as growth well past the warm count.
    if errs > 0 || fd1 > fd_warm + clients as usize {
        eprintln!("soak FAILED");
        std::process::exit(1);
    }
    println!("soak passed");
    Ok(())
}
