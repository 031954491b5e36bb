//! The cost of a cache hit through the tower face, against a route that does no work at all.
//!
//! ```text
//! cargo bench --bench hit_path -- --measurement-time 3 --warm-up-time 1
//! ```
//!
//! One axum `Router`, three routes, each answering the same 1 KiB body:
//! - `/static`: returns static bytes (the floor: axum's own cost);
//! - `/cached`: burns ~1 ms of CPU (a calibrated, deterministic loop), then answers with
//!   `Cache-Control: max-age=3600`; wrapped in `CacheLayer` over a hot `MemStore`, so after the
//!   first request every request is a hot hit;
//! - `/uncached`: the same handler without the layer (what the cache saves).
//!
//! Each is driven two ways: in-process with `tower::ServiceExt::oneshot` on the router (a
//! current-thread runtime), and over real TCP on 127.0.0.1 with a keep-alive hyper client
//! (axum::serve and the client on one 2-worker runtime). Every request reads the whole body.
//!
//! Criterion's report comes first. Then, because a shared machine is noisy, a paired run
//! interleaves `/static` and `/cached` requests one by one (40 000 pairs in-process, 5 000 over
//! TCP; scale with env `HIT_PATH_PAIRS`, default 10000) and prints the median per-request time
//! of each and their ratio: the goal is a hit within 10% of the static route.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::Criterion;
use daramjwee::http::{CacheLayer, CACHE_STATUS};
use daramjwee::store::MemStore;
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

/// Counts allocations (alloc, alloc_zeroed, realloc) of the whole process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        std::alloc::System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        std::alloc::System.realloc(ptr, layout, size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY_LEN: usize = 1024;
static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];

/// Iterations of [`burn`] that take about 1 ms on this machine (set once, then fixed).
static BURN_ITERS: OnceLock<u64> = OnceLock::new();
/// How many times the handler behind the cache ran (once per router is the expectation).
static CACHED_RENDERS: AtomicU64 = AtomicU64::new(0);

/// Deterministic CPU work: `iters` rounds of xorshift the optimizer cannot skip.
fn burn(iters: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15u64);
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// Finds the iteration count that takes ~1 ms of CPU. Uses the fastest of 15 trials: on a
/// loaded machine the slower ones measure preemption, not work, and would shrink the burn.
fn calibrate() -> u64 {
    let probe = 300_000;
    burn(probe);
    let fastest = (0..15)
        .map(|_| {
            let t = Instant::now();
            burn(probe);
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    let per_iter = fastest.as_secs_f64() / probe as f64;
    ((1e-3 / per_iter) as u64).max(1)
}

/// The handler behind the cache.
async fn cached_route() -> impl IntoResponse {
    CACHED_RENDERS.fetch_add(1, Ordering::Relaxed);
    expensive().await
}

async fn expensive() -> impl IntoResponse {
    burn(*BURN_ITERS.get().expect("calibrated before serving"));
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        )],
        Bytes::from_static(&BODY),
    )
}

async fn static_bytes() -> Bytes {
    Bytes::from_static(&BODY)
}

fn router() -> Router {
    let cache = Cache::builder().hot(MemStore::new(64 << 20)).build();
    Router::new()
        .route("/static", get(static_bytes))
        .route("/cached", get(cached_route).layer(CacheLayer::new(cache)))
        .route("/uncached", get(expensive))
}

const PATHS: [(&str, &str); 3] = [
    ("static", "/static"),
    ("cached hit", "/cached"),
    ("uncached", "/uncached"),
];

/// One in-process request; returns the body length.
async fn call_in_process(router: &Router, uri: &Uri) -> usize {
    let req = Request::get(uri.clone())
        .body(Body::empty())
        .expect("request");
    let res = match router.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    debug_assert_eq!(res.status(), StatusCode::OK);
    res.into_body()
        .collect()
        .await
        .map_or(0, |b| b.to_bytes().len())
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One request over TCP on a kept-alive connection; returns the body length.
async fn call_tcp(client: &HttpClient, uri: &Uri) -> usize {
    let res = client.get(uri.clone()).await.expect("request over TCP");
    debug_assert_eq!(res.status(), StatusCode::OK);
    res.into_body()
        .collect()
        .await
        .map_or(0, |b| b.to_bytes().len())
}

/// Mean time per request of every timed criterion loop, by case.
static TALLIES: std::sync::Mutex<Vec<(String, u64, Duration)>> = std::sync::Mutex::new(Vec::new());

fn record(case: String, iters: u64, elapsed: Duration) {
    let mut t = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    match t.iter_mut().find(|(c, _, _)| *c == case) {
        Some((_, n, d)) => {
            *n += iters;
            *d += elapsed;
        }
        None => t.push((case, iters, elapsed)),
    }
}

/// Checks the setup: identical bytes everywhere, and the cached route is a hot hit.
async fn check<F, Fut>(mut call: F, label: &str)
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Option<String>, Bytes)>,
{
    for (_, path) in PATHS {
        let (status, _, body) = call(path).await;
        assert_eq!(status, StatusCode::OK, "{label} {path}");
        assert_eq!(&body[..], &BODY[..], "{label} {path}: body differs");
    }
    let (_, cache_status, _) = call("/cached").await;
    let cache_status = cache_status.unwrap_or_default();
    assert!(
        cache_status.contains("hit"),
        "{label}: /cached is not served as a hit: {cache_status:?}"
    );
    println!("{label}: /cached answers `Cache-Status: {cache_status}`");
}

fn bench(c: &mut Criterion) {
    let iters = calibrate();
    BURN_ITERS.set(iters).ok();
    let burn_time = (0..5)
        .map(|_| {
            let t = Instant::now();
            burn(iters);
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "calibrated CPU burn: {iters} iterations, {:.3} ms (fastest of 5 checks)",
        burn_time.as_secs_f64() * 1e3
    );

    // In-process: tower::ServiceExt::oneshot on the Router.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = router();
    rt.block_on(check(
        |path| {
            let app = app.clone();
            async move {
                let uri: Uri = format!("http://bench.local{path}").parse().expect("uri");
                let req = Request::get(uri).body(Body::empty()).expect("request");
                let res = app.oneshot(req).await.unwrap_or_else(|e| match e {});
                let cs = res
                    .headers()
                    .get(CACHE_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let status = res.status();
                let body = res.into_body().collect().await.expect("body").to_bytes();
                (status, cs, body)
            }
        },
        "in-process",
    ));
    {
        let mut g = c.benchmark_group("hit_path_in_process");
        for (name, path) in PATHS {
            let uri: Uri = format!("http://bench.local{path}").parse().expect("uri");
            if name == "uncached" {
                g.sample_size(20);
            } else {
                g.sample_size(100);
            }
            g.bench_function(name, |b| {
                b.to_async(&rt).iter_custom(|n| {
                    let (app, uri) = (&app, &uri);
                    async move {
                        let start = Instant::now();
                        for _ in 0..n {
                            black_box(call_in_process(app, uri).await);
                        }
                        let e = start.elapsed();
                        record(format!("in-process {name}"), n, e);
                        e
                    }
                })
            });
        }
        g.finish();
    }

    // Over TCP: axum::serve on 127.0.0.1 and a keep-alive hyper client.
    let tcp_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, client) = tcp_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        (addr, client)
    });
    tcp_rt.block_on(check(
        |path| {
            let client = client.clone();
            async move {
                let uri: Uri = format!("http://{addr}{path}").parse().expect("uri");
                let res = client.get(uri).await.expect("request");
                let cs = res
                    .headers()
                    .get(CACHE_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let status = res.status();
                let body = res.into_body().collect().await.expect("body").to_bytes();
                (status, cs, body)
            }
        },
        "tcp",
    ));
    {
        let mut g = c.benchmark_group("hit_path_tcp");
        for (name, path) in PATHS {
            let uri: Uri = format!("http://{addr}{path}").parse().expect("uri");
            if name == "uncached" {
                g.sample_size(20);
            } else {
                g.sample_size(100);
            }
            g.bench_function(name, |b| {
                b.to_async(&tcp_rt).iter_custom(|n| {
                    let (client, uri) = (&client, &uri);
                    async move {
                        let start = Instant::now();
                        for _ in 0..n {
                            black_box(call_tcp(client, uri).await);
                        }
                        let e = start.elapsed();
                        record(format!("tcp {name}"), n, e);
                        e
                    }
                })
            });
        }
        g.finish();
    }

    paired(&rt, &app, &tcp_rt, &client, addr);
}

/// Median per-request times of /static and /cached, requests interleaved one by one so that
/// the machine's background noise hits both alike.
fn paired(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    tcp_rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    addr: SocketAddr,
) {
    // `cargo test --all-targets` runs this binary without `--bench`: a short smoke run then.
    let benching = std::env::args().any(|a| a == "--bench");
    let scale: usize = std::env::var("HIT_PATH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 10_000 } else { 10 })
        .max(2);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\npaired run: /static and /cached requests interleaved one by one, median per request:"
    );
    println!(
        "{:<11} {:>7} {:>12} {:>12} {:>8}",
        "driver", "pairs", "static", "cached hit", "ratio"
    );

    let s_uri: Uri = "http://bench.local/static".parse().expect("uri");
    let c_uri: Uri = "http://bench.local/cached".parse().expect("uri");
    let pairs = scale * 4;
    let (mut s, mut h) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    let mut allocs = [0u64; 2];
    rt.block_on(async {
        for _ in 0..pairs {
            for (i, (uri, out)) in [(&s_uri, &mut s), (&c_uri, &mut h)].into_iter().enumerate() {
                let a = ALLOCS.load(Ordering::Relaxed);
                let t = Instant::now();
                black_box(call_in_process(app, uri).await);
                out.push(t.elapsed().as_secs_f64() * 1e6);
                allocs[i] += ALLOCS.load(Ordering::Relaxed) - a;
            }
        }
    });
    let (ms, mh) = (median(s), median(h));
    let per = |n: u64| n as f64 / pairs as f64;
    println!(
        "{:<11} {:>7} {:>10.2}µs {:>10.2}µs {:>8.3}   allocations/request: static {:.1}, cached hit {:.1}",
        "in-process",
        pairs,
        ms,
        mh,
        mh / ms,
        per(allocs[0]),
        per(allocs[1]),
    );

    let s_uri: Uri = format!("http://{addr}/static").parse().expect("uri");
    let c_uri: Uri = format!("http://{addr}/cached").parse().expect("uri");
    let pairs = scale / 2;
    let (mut s, mut h) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    tcp_rt.block_on(async {
        for _ in 0..pairs {
            for (uri, out) in [(&s_uri, &mut s), (&c_uri, &mut h)] {
                let t = Instant::now();
                black_box(call_tcp(client, uri).await);
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    });
    let (ms, mh) = (median(s), median(h));
    println!(
        "{:<11} {:>7} {:>10.2}µs {:>10.2}µs {:>8.3}",
        "tcp",
        pairs,
        ms,
        mh,
        mh / ms
    );
}

fn report() {
    let t = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    println!("\ncriterion loops, mean per request over all timed iterations (1 KiB body):");
    println!("{:<24} {:>12} {:>12}", "case", "µs/request", "requests");
    for (case, n, d) in t.iter() {
        println!(
            "{:<24} {:>12.2} {:>12}",
            case,
            d.as_secs_f64() * 1e6 / (*n).max(1) as f64,
            n
        );
    }
    println!(
        "the handler behind the cache ran {} time(s) for two routers",
        CACHED_RENDERS.load(Ordering::Relaxed)
    );
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
