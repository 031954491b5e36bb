//! Heap allocations per cached 1 KiB hit through the whole proxy (hyper's server, the request-id,
//! access-log and trace layers, the router and the cache layer), against a bare hyper server
//! answering the same bytes, both over one kept-alive TCP connection. Counts are deterministic,
//! unlike timings on a shared machine, so this is the number to watch for the hit path.
//!
//! ```text
//! cargo test --release --features proxy --bin daramjwee hit_allocs -- --ignored --nocapture
//! HIT_ALLOC_SITES=1 cargo test ...   # also prints a backtrace per allocation of one hit
//! ```
//!
//! `HIT_ALLOCS_REQUESTS` sets how many requests are counted (default 2000): two runs under
//! `valgrind --tool=callgrind` with different counts give the instructions per request.
//! `HIT_ALLOCS_CASE=bare|off|on` measures only the bare server, the proxy, or the proxy with
//! its access log on.
//!
//! The client is a raw socket reading into one reused buffer, so it allocates nothing per
//! request: what is counted is the server's work (plus the runtime's, on one thread).

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::access_log::AccessLogSwitch;
use crate::config::{Cli, Settings};
use crate::server::{serve, Router, ServeOptions, Site};

/// Counts the process's allocations; records where they come from while [`TRACING`] is set.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static SITES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());

thread_local! {
    static TRACING: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Notes one allocation, with its backtrace when tracing (not for the tracer's own).
fn note() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let tracing = TRACING.try_with(Cell::get).unwrap_or(false);
    if tracing && !INSIDE.try_with(|i| i.replace(true)).unwrap_or(true) {
        let bt = Backtrace::force_capture();
        SITES.lock().unwrap_or_else(|e| e.into_inner()).push(bt);
        let _ = INSIDE.try_with(|i| i.set(false));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts (and, when
// tracing, captures a backtrace, guarded against reentry by a thread-local flag).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        std::alloc::System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        note();
        std::alloc::System.realloc(ptr, layout, size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY: [u8; 1024] = [b'x'; 1024];

/// What the bench's origin (`examples/origin.rs`) sends with `/obj/1k`.
fn object_response() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(&BODY)));
    let h = res.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static("\"1k-v1\""));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    res
}

/// A bare hyper server (HTTP/1.1 and h2c, as the proxy's listener) answering every request
/// with [`object_response`]: the floor, and the proxy's origin.
async fn bare_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(object_response())
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// The proxy as the bench runs it (memory hot tier, no cold tier, request ids on) in front of
/// `origin`, with the access log off, or on and writing to `log`.
async fn proxy(
    origin: std::net::SocketAddr,
    log: Option<&std::path::Path>,
) -> std::net::SocketAddr {
    use clap::Parser;
    let upstream = format!("http://{origin}");
    let cli = Cli::parse_from([
        "daramjwee",
        "--upstream",
        &upstream,
        "--hot",
        "memory:64MiB",
        "--cold",
        "none",
        "--admin",
        "off",
    ]);
    let settings = Settings::load(&cli).unwrap();
    let workers = daramjwee::WorkerRuntime::new(1);
    let site = Site::open(settings.sites[0].clone(), &workers)
        .await
        .unwrap();
    let router = Router::new(vec![Arc::new(site)]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ServeOptions {
        drain: Duration::from_secs(1),
        request_ids: settings.request_ids,
        access_log: AccessLogSwitch::new(log.map(|path| {
            let settings = crate::access_log::AccessLogSettings {
                destination: crate::access_log::Destination::File(path.to_owned()),
                format: crate::access_log::Format::Combined,
            };
            crate::access_log::start(&settings).unwrap()
        })),
        tls: None,
        trace_requests: false,
    };
    tokio::spawn(serve(listener, router, std::future::pending(), opts));
    addr
}

/// One GET on a kept-alive connection, read whole into `buf`; returns the response head.
async fn get(conn: &mut TcpStream, req: &[u8], buf: &mut [u8]) -> usize {
    conn.write_all(req).await.unwrap();
    let mut len = 0;
    loop {
        let n = conn.read(&mut buf[len..]).await.unwrap();
        assert!(n > 0, "connection closed");
        len += n;
        let Some(head) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        if len >= head + 4 + BODY.len() {
            assert_eq!(len, head + 4 + BODY.len(), "one response at a time");
            return head + 4;
        }
    }
}

/// Allocations per request to `addr`, after a warm-up (the miss and the fill).
async fn per_request(addr: std::net::SocketAddr, label: &str) -> f64 {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let req = format!("GET /obj/1k HTTP/1.1\r\nhost: {addr}\r\nuser-agent: bench\r\n\r\n");
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..200 {
        get(&mut conn, req.as_bytes(), &mut buf).await;
        // Lets the fill commit before hits are counted.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let head = get(&mut conn, req.as_bytes(), &mut buf).await;
    println!(
        "{label}:\n{}",
        String::from_utf8_lossy(&buf[..head]).trim_end()
    );
    let n: u32 = std::env::var("HIT_ALLOCS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        get(&mut conn, req.as_bytes(), &mut buf).await;
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    if std::env::var_os("HIT_ALLOC_SITES").is_some() {
        TRACING.with(|t| t.set(true));
        get(&mut conn, req.as_bytes(), &mut buf).await;
        TRACING.with(|t| t.set(false));
        let sites = std::mem::take(&mut *SITES.lock().unwrap());
        for (i, bt) in sites.iter().enumerate() {
            println!("---- {label}: allocation {i}\n{bt}");
        }
    }
    per
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it with --ignored --nocapture (and --release)"]
async fn hit_allocs() {
    let origin = bare_server().await;
    let proxy_off = proxy(origin, None).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy_on = proxy(origin, Some(&dir.path().join("access.log"))).await;
    // HIT_ALLOCS_CASE=bare|off|on measures one server only (for callgrind runs).
    let case = std::env::var("HIT_ALLOCS_CASE").ok();
    let wanted = |name: &str| case.as_deref().is_none_or(|c| c == name);
    let mut floor = 0.0;
    let (mut hit, mut logged) = (0.0, 0.0);
    if wanted("bare") {
        floor = per_request(origin, "bare hyper").await;
    }
    if wanted("off") {
        hit = per_request(proxy_off, "proxy hit").await;
    }
    if wanted("on") {
        logged = per_request(proxy_on, "proxy hit, access log on").await;
    }
    println!(
        "allocations per request: bare hyper {floor:.2}, proxy hit {hit:.2}, \
         with the access log {logged:.2}"
    );
    assert!(
        hit < 40.0,
        "the hit path allocates much more than it used to: {hit}"
    );
}
