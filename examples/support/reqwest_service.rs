//! A tower [`Service`] over `reqwest::Client`, so `CacheLayer` can wrap it.
//!
//! reqwest's own `Service` impl takes `reqwest::Request`; the cache speaks `http::Request`. This
//! adapter converts at the edge with reqwest's own conversions (`TryFrom<http::Request<_>>`,
//! `From<reqwest::Response> for http::Response<_>`) and nothing else: headers, status and the
//! streaming body pass through unchanged. Shared by `examples/client.rs` and
//! `tests/client_cache.rs`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tower::Service;

/// `CacheLayer`'s inner service for a `reqwest::Client`.
#[derive(Clone, Debug, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client` (clones share its connection pool).
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest queues nothing in front of its pool: it is always ready, as its own
        // `Service<reqwest::Request>` impl says.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let req = reqwest::Request::try_from(req.map(reqwest::Body::wrap))?;
            let res = client.execute(req).await?;
            Ok(http::Response::from(res))
        })
    }
}
