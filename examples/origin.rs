//! A local origin for trying the proxy and for the benches: fixed objects with ETag and
//! max-age, a slow object, and a call counter.
//!
//! ```text
//! cargo run --release --example origin -- 127.0.0.1:3000 [max-age-seconds]
//! ```
//!
//! - `GET /obj/{1k,64k,1m,16m}[?anything]`: that many bytes, `ETag`, `Cache-Control: max-age`;
//!   answers `If-None-Match` with 304. The query is ignored, so `?r=N` makes a fresh cache key
//!   for the same object.
//! - `GET /slow/1m[?anything]`: 1 MiB sent as 16 chunks over about one second.
//! - `GET /calls`: how many object requests were served (304s included), as plain text.
//!
//! It prints `origin listening on http://ADDR` once it accepts connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

struct Origin {
    calls: AtomicU64,
    max_age: u64,
    objects: Vec<(&'static str, Bytes)>,
}

fn object(size: usize) -> Bytes {
    // Non-uniform content so a truncated or shifted body does not compare equal by accident.
    Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let max_age: u64 = match args.next() {
        Some(s) => s.parse()?,
        None => 3600,
    };
    let origin = Arc::new(Origin {
        calls: AtomicU64::new(0),
        max_age,
        objects: vec![
            ("1k", object(1 << 10)),
            ("64k", object(64 << 10)),
            ("1m", object(1 << 20)),
            ("16m", object(16 << 20)),
        ],
    });
    let app = Router::new()
        .route("/obj/{size}", get(obj))
        .route("/slow/1m", get(slow))
        .route("/calls", get(calls))
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("origin listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn obj(
    State(o): State<Arc<Origin>>,
    Path(size): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((name, body)) = o.objects.iter().find(|(n, _)| *n == size) else {
        return (StatusCode::NOT_FOUND, "no such object\n").into_response();
    };
    o.calls.fetch_add(1, Ordering::Relaxed);
    let etag = format!("\"{name}-v1\"");
    let cc = format!("public, max-age={}", o.max_age);
    if headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (
            StatusCode::NOT_MODIFIED,
            [("etag", etag), ("cache-control", cc)],
        )
            .into_response();
    }
    (
        [
            ("etag", etag),
            ("cache-control", cc),
            ("content-type", "application/octet-stream".into()),
        ],
        body.clone(),
    )
        .into_response()
}

async fn slow(State(o): State<Arc<Origin>>) -> Response {
    o.calls.fetch_add(1, Ordering::Relaxed);
    let chunk = object(64 << 10);
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let chunk = chunk.clone();
        async move {
            if i == 16 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(1000 / 16)).await;
            }
            Some((Ok::<_, std::io::Error>(chunk), i + 1))
        }
    });
    (
        [
            ("etag", "\"slow-v1\"".to_string()),
            ("cache-control", format!("public, max-age={}", o.max_age)),
            ("content-length", (1u32 << 20).to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn calls(State(o): State<Arc<Origin>>) -> String {
    format!("{}\n", o.calls.load(Ordering::Relaxed))
}
