//! Origins that break HTTP/1 framing: a raw TCP origin writes bad chunked encoding, a
//! `Content-Length` larger than what it sends, or bytes that are not HTTP at all. The cache
//! layer wraps a hyper-util legacy `Client` (as the proxy binary does), served over real TCP.
//! The client must see an error (a 5xx or an aborted body, never a clean response with wrong
//! bytes), nothing may be stored (the next request reaches the origin again), and caching must
//! work once the origin answers properly.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use common::{client, get as fetch, TestClient};
use daramjwee::http::CacheLayer;
use daramjwee::{BoxError, Cache};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the raw origin answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// A valid, cacheable response.
    Good = 0,
    /// Chunked encoding with an invalid hex chunk size after the first chunk.
    BadChunk = 1,
    /// `Content-Length: 100000`, 1 000 bytes, then the connection closes.
    ShortBody = 2,
    /// Bytes that are not an HTTP response at all.
    Garbage = 3,
    /// An HTTP-looking status line with an invalid status code.
    BadStatus = 4,
}

fn good_body() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

fn response(mode: Mode) -> Vec<u8> {
    let mut out = Vec::new();
    match mode {
        Mode::Good => {
            let body = good_body();
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&body);
        }
        Mode::BadChunk => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            out.extend_from_slice(b"400\r\n");
            out.extend_from_slice(&good_body()[..0x400]);
            out.extend_from_slice(b"\r\nzz9\r\nnot a chunk\r\n0\r\n\r\n");
        }
        Mode::ShortBody => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 100000\r\n\r\n",
            );
            out.extend_from_slice(&good_body()[..1_000]);
        }
        Mode::Garbage => {
            out.extend_from_slice(
                b"\x00\x01SSH-2.0-OpenSSH_9.6\r\n\xff\xfe garbage, not HTTP\r\n\r\n",
            );
        }
        Mode::BadStatus => {
            out.extend_from_slice(
                b"HTTP/1.1 2x0 OK\r\ncache-control: max-age=600\r\ncontent-length: 5\r\n\r\nhello",
            );
        }
    }
    out
}

/// A hand-written origin: reads one request head per connection, writes the bytes of the
/// current mode, closes. Counts the requests it read.
struct RawOrigin {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    requests: Arc<AtomicUsize>,
}

async fn raw_origin(mode: Mode) -> RawOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mode = Arc::new(AtomicU8::new(mode as u8));
    let requests = Arc::new(AtomicUsize::new(0));
    let (m, r) = (mode.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (m, r) = (m.clone(), r.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                let mode = match m.load(Ordering::SeqCst) {
                    0 => Mode::Good,
                    1 => Mode::BadChunk,
                    2 => Mode::ShortBody,
                    3 => Mode::Garbage,
                    _ => Mode::BadStatus,
                };
                let _ = sock.write_all(&response(mode)).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    RawOrigin {
        addr,
        mode,
        requests,
    }
}

/// The cache layer over a hyper-util client pointed at `origin`, served on 127.0.0.1.
/// A client error (no response head) becomes a 502, as a reverse proxy answers.
async fn serve_cache(cache: Cache, origin: SocketAddr) -> SocketAddr {
    let upstream_client: TestClient = client();
    let upstream = tower::service_fn(move |req: Request<axum::body::Body>| {
        let c = upstream_client.clone();
        async move {
            let uri = format!("http://{origin}{}", req.uri().path());
            let up = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
            Ok::<_, Infallible>(match c.request(up).await {
                Ok(res) => res.map(|b| b.map_err(BoxError::from).boxed()),
                Err(e) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(
                        Full::new(Bytes::from(format!("upstream: {e}")))
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                    .unwrap(),
            })
        }
    });
    let svc = tower::Layer::layer(&CacheLayer::new(cache), upstream);
    let app = Router::new().fallback_service(svc);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

async fn assert_not_stored(cache: &Cache, key: &str) {
    // A failed fill is dropped at once; give a (wrongly) committing one the chance to show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hot = cache.tier_store(0).unwrap();
    assert!(hot.head(key).await.unwrap().is_none(), "{key} was stored");
}

/// One bad mode: two requests, both errors and both at the origin; then the origin is fixed
/// and the response is cached.
async fn bad_framing_is_an_error_and_never_stored(mode: Mode) {
    let origin = raw_origin(mode).await;
    let cache = Cache::builder()
        .idle_timeout(Duration::from_secs(5))
        .build();
    let addr = serve_cache(cache.clone(), origin.addr).await;
    let key = format!("http://{addr}/doc");
    let c = client();
    for round in 1..=2 {
        let got = fetch(&c, addr, "/doc").await;
        let clean_ok = got.status.is_success() && got.body.is_ok();
        assert!(
            !clean_ok,
            "{mode:?}: a broken origin response reached the client as a clean {} with {} bytes",
            got.status,
            got.body.as_ref().map_or(0, |b| b.len())
        );
        if matches!(mode, Mode::Garbage | Mode::BadStatus) {
            // No response head could be parsed: the proxy's 502.
            assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{mode:?}");
        } else {
            // The head was valid and already forwarded: the body must abort, not end cleanly.
            assert!(got.body.is_err(), "{mode:?}: body ended cleanly");
        }
        assert_not_stored(&cache, &key).await;
        assert_eq!(
            origin.requests.load(Ordering::SeqCst),
            round,
            "{mode:?}: request {round} did not reach the origin"
        );
    }

    // The origin is fixed: the next response is served whole and cached.
    origin.mode.store(Mode::Good as u8, Ordering::SeqCst);
    let miss = fetch(&c, addr, "/doc").await;
    assert_eq!(miss.status, StatusCode::OK, "{mode:?}");
    assert_eq!(miss.body().as_ref(), good_body().as_slice(), "{mode:?}");
    let mut hit = fetch(&c, addr, "/doc").await;
    for _ in 0..50 {
        if hit.cache_status().contains("hit") {
            break;
        }
        // The fill commits just after the last byte went out.
        tokio::time::sleep(Duration::from_millis(10)).await;
        hit = fetch(&c, addr, "/doc").await;
    }
    assert!(
        hit.cache_status().contains("hit"),
        "{mode:?}: {}",
        hit.cache_status()
    );
    assert_eq!(hit.body().as_ref(), good_body().as_slice(), "{mode:?}");
    assert_eq!(
        origin.requests.load(Ordering::SeqCst),
        3,
        "{mode:?}: the good response was not cached"
    );
}

#[tokio::test]
async fn an_invalid_chunk_size_mid_body_is_an_error_and_stores_nothing() {
    bad_framing_is_an_error_and_never_stored(Mode::BadChunk).await;
}

#[tokio::test]
async fn a_body_shorter_than_content_length_is_an_error_and_stores_nothing() {
    bad_framing_is_an_error_and_never_stored(Mode::ShortBody).await;
}

#[tokio::test]
async fn garbage_instead_of_http_is_a_502_and_stores_nothing() {
    bad_framing_is_an_error_and_never_stored(Mode::Garbage).await;
}

#[tokio::test]
async fn an_invalid_status_line_is_a_502_and_stores_nothing() {
    bad_framing_is_an_error_and_never_stored(Mode::BadStatus).await;
}
