//! Large bodies for the tests of placement by size: an origin that streams objects of any size
//! (with or without `Content-Length`) without holding them, and a client that checks every
//! byte as it arrives without holding them either. Shared by `large_objects.rs` and
//! `proxy_large.rs`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};

pub const MIB: u64 = 1 << 20;
/// The size of each generated chunk, and of the blocks the pattern repeats in.
const BLOCK: usize = 64 * 1024;

/// Block `i` of every object: a fixed pseudo-random block with `i` written in its first 8
/// bytes, so a dropped, repeated or reordered block never compares equal.
fn block(base: &[u8], i: u64) -> Bytes {
    let mut b = base.to_vec();
    b[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(b)
}

fn base_block() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Origin calls, per route kind.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Origin {
    calls: Calls,
    base: Arc<Vec<u8>>,
}

/// `/cl/{mib}`: an object of `mib` MiB with `Content-Length`; `/chunked/{mib}`: the same
/// without (chunked); `/slow/{mib}`: chunked, 1 ms between blocks. All cacheable for an hour.
pub fn origin() -> (Router, Calls) {
    let calls = Calls::default();
    let state = Origin {
        calls: calls.clone(),
        base: Arc::new(base_block()),
    };
    let app = Router::new()
        .route("/cl/{mib}", get(sized))
        .route("/chunked/{mib}", get(chunked))
        .route("/slow/{mib}", get(slow))
        .with_state(state);
    (app, calls)
}

fn stream(o: &Origin, mib: u64, pause: Option<Duration>) -> Body {
    o.calls.0.fetch_add(1, Ordering::SeqCst);
    let base = o.base.clone();
    let blocks = mib * MIB / BLOCK as u64;
    let s = futures_util::stream::unfold(0u64, move |i| {
        let base = base.clone();
        async move {
            if i == blocks {
                return None;
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            Some((Ok::<_, std::io::Error>(block(&base, i)), i + 1))
        }
    });
    Body::from_stream(s)
}

fn cacheable(body: Body, len: Option<u64>) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    res
}

async fn sized(State(o): State<Origin>, Path(mib): Path<u64>) -> Response {
    cacheable(stream(&o, mib, None), Some(mib * MIB))
}

async fn chunked(State(o): State<Origin>, Path(mib): Path<u64>) -> Response {
    cacheable(stream(&o, mib, None), None)
}

async fn slow(State(o): State<Origin>, Path(mib): Path<u64>) -> Response {
    cacheable(stream(&o, mib, Some(Duration::from_millis(1))), None)
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

/// What a checked GET saw.
pub struct Checked {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Bytes received, all equal to the pattern (the check panics at the first wrong one).
    pub len: u64,
}

impl Checked {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// GETs `path` and checks every byte against the pattern as it streams; stops after `limit`
/// bytes when given (the response is then dropped: a client that goes away).
pub async fn get_checked(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    limit: Option<u64>,
) -> Checked {
    let uri = format!("http://{addr}{path}");
    let req = http::Request::get(uri).body(Empty::new()).unwrap();
    let res = client.request(req).await.expect("response head");
    let (parts, mut body) = res.into_parts();
    let base = base_block();
    let mut pos: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body complete");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        check(&base, pos, &data);
        pos += data.len() as u64;
        if limit.is_some_and(|l| pos >= l) {
            break;
        }
    }
    Checked {
        status: parts.status,
        headers: parts.headers,
        len: pos,
    }
}

/// Checks that `data`, found at offset `pos` of an object, matches the pattern there.
fn check(base: &[u8], pos: u64, data: &[u8]) {
    let mut at = pos;
    let mut rest = data;
    while !rest.is_empty() {
        let i = at / BLOCK as u64;
        let off = (at % BLOCK as u64) as usize;
        let n = rest.len().min(BLOCK - off);
        let want = block(base, i);
        assert!(
            rest[..n] == want[off..off + n],
            "wrong bytes at offset {at} (block {i})"
        );
        at += n as u64;
        rest = &rest[n..];
    }
}
