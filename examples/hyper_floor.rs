//! hyper alone, answering every request with the bytes and header fields of a daramjwee hit
//! on the origin's 1 KiB object: no router, no cache. The pinned part of `benches/proxy`
//! measures it as the floor of a server built on hyper (the same `hyper-util` server builder
//! as the proxy's, HTTP/1.1 and h2), so the proxy's CPU per hit minus this one's is the
//! proxy's own work.
//!
//! ```text
//! cargo run --release --example hyper_floor -- 127.0.0.1:3001
//! ```
//!
//! Any path gets the same 1 KiB answer. It prints `listening on http://ADDR` once it accepts
//! connections.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The fields of a memory-tier hit as the proxy sends them (`date` is added by hyper).
const FIELDS: [(header::HeaderName, &str); 6] = [
    (header::CONTENT_TYPE, "application/octet-stream"),
    (header::ETAG, "\"1k-v1\""),
    (header::CACHE_CONTROL, "public, max-age=86400"),
    (header::AGE, "0"),
    (
        header::HeaderName::from_static("cache-status"),
        "daramjwee; hit; ttl=86400; detail=memory",
    ),
    (
        header::HeaderName::from_static("x-request-id"),
        "4ace3b03c833-2",
    ),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".into());
    // The origin's 1 KiB object (`examples/origin.rs`).
    let body = Bytes::from((0..1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (builder, body) = (builder.clone(), body.clone());
        let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
            let mut res = Response::new(Full::new(body.clone()));
            for (name, value) in FIELDS {
                res.headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            std::future::ready(Ok::<_, Infallible>(res))
        });
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
