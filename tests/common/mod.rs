//! Shared helpers for the integration tests: real TCP on 127.0.0.1 through hyper.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Serves `app` on 127.0.0.1:0 in the background and returns its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A complete response: status, headers, body (or the error that cut the body short).
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn body(&self) -> &Bytes {
        self.body.as_ref().expect("body complete")
    }
    pub fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
}

pub async fn get(client: &TestClient, addr: SocketAddr, path: &str) -> Got {
    send(client, addr, "GET", path, &[]).await
}

pub async fn send(
    client: &TestClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = match client.request(req.body(Empty::new()).unwrap()).await {
        Ok(res) => res,
        // The server aborted before the head was flushed: no status, an error body.
        Err(e) => {
            return Got {
                status: StatusCode::BAD_GATEWAY,
                headers: HeaderMap::new(),
                body: Err(e.to_string()),
            }
        }
    };
    let status = res.status();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Got {
        status,
        headers,
        body,
    }
}

/// A fetcher answered by the engine's test origin: counts its calls, answers `body` with its
/// declared length.
pub fn counting_origin(
    calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    body: impl Into<Bytes>,
) -> impl daramjwee::Fetcher {
    let calls = calls.clone();
    let body: Bytes = body.into();
    move |_prev: Option<std::sync::Arc<daramjwee::Metadata>>| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok::<_, daramjwee::BoxError>(daramjwee::Fetched::Entry {
            meta: daramjwee::Metadata::new(StatusCode::OK).with_content_length(body.len() as u64),
            body: daramjwee::EntryBody::from_bytes(body),
        }))
    }
}

/// A fetcher that must not be called: it fails the lookup if it is.
pub fn never() -> impl daramjwee::Fetcher {
    |_prev: Option<std::sync::Arc<daramjwee::Metadata>>| {
        std::future::ready(Err::<daramjwee::Fetched, daramjwee::BoxError>(
            "the origin must not be called".into(),
        ))
    }
}

/// Waits (up to 1 s) until `store` holds `key`, and panics if it never does: a fill, copy or
/// promotion commits a moment after the body its readers saw has ended.
pub async fn wait_stored(store: &dyn daramjwee::store::Store, key: &str) {
    for _ in 0..200 {
        if store.head(key).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{key} never appeared in {}", store.name());
}
