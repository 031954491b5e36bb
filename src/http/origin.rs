//! The origin, as the engine sees it: the inner service called with a fill's request head.
//!
//! One fill is one [`OriginFetcher::fetch`]: add the stored entry's validators, call the origin
//! (readiness and call under one timeout), fall back to the stale entry where `stale-if-error`
//! allows, resolve a 304, and classify the response (store it, store it as a variant, or pass
//! it through). What must reach the caller as it is, the origin's own response or error, is
//! the fetcher's [`Origin::Pass`] and [`Origin::Error`]: the engine hands both back.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::body::OriginStream;
use super::config::HttpConfig;
use super::policy::{self, RequestDirectives, Storability};
use super::request::copy_head;
use super::vary::{self, Vary};
use crate::cache::{Cache, Fetched, Origin};
use crate::entry::{EntryBody, Metadata};
use crate::error::{BoxError, FillError};

/// The bounds the layer needs of the origin service, written once. Every service that meets
/// them has it; there is nothing to implement.
pub trait OriginService<B>:
    Service<
        Request<B>,
        Response = Response<Self::ResBody>,
        Error = Self::OriginError,
        Future = Self::OriginFuture,
    > + Clone
    + Send
    + 'static
{
    /// The origin's response body.
    type ResBody: Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The error of the origin's response body.
    type BodyError: Into<BoxError>;
    /// The origin's error.
    type OriginError: Send + 'static;
    /// The origin's response future.
    type OriginFuture: Future<Output = Result<Response<Self::ResBody>, Self::OriginError>>
        + Send
        + 'static;
}

impl<S, B, ResB> OriginService<B> for S
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type ResBody = ResB;
    type BodyError = ResB::Error;
    type OriginError = S::Error;
    type OriginFuture = S::Future;
}

/// Why an origin call gave no response.
#[derive(Debug)]
pub(crate) enum OriginError<E> {
    /// The inner service's own error.
    Service(E),
    /// No response head within the layer's origin timeout.
    Timeout(Duration),
}

/// A response the fill does not store, handed back to the request as it came.
pub(crate) struct Passed<ResB> {
    pub(crate) res: Response<ResB>,
    pub(crate) reason: &'static str,
}

/// Drives `svc` to readiness and calls it, both under `timeout`: one readiness per call, so no
/// permit of a limiting middleware below is ever held for a call that is not made.
pub(crate) async fn call<S, B>(
    svc: &mut S,
    req: Request<B>,
    timeout: Duration,
) -> Result<Response<S::ResBody>, OriginError<S::OriginError>>
where
    S: OriginService<B>,
{
    let call = async {
        poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(req).await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(res) => res.map_err(OriginError::Service),
        Err(_) => Err(OriginError::Timeout(timeout)),
    }
}

/// What a fill needs to know of the request it fetches for.
pub(crate) struct FillRequest {
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) directives: Arc<RequestDirectives>,
    pub(crate) cache: Cache,
    /// The URL's primary key.
    pub(crate) primary: String,
    /// For a variant fill, the `Vary` field names the primary's marker recorded.
    pub(crate) variant_of: Option<Vec<String>>,
}

/// The origin, as the engine sees it: the inner service called with a fill's request head.
pub(crate) struct OriginFetcher<S, B> {
    pub(crate) svc: S,
    pub(crate) head: Parts,
    pub(crate) body: B,
    pub(crate) fill: FillRequest,
}

impl<S, B> Origin for OriginFetcher<S, B>
where
    S: OriginService<B>,
    B: Default + Send + 'static,
{
    type Pass = Passed<S::ResBody>;
    type Error = OriginError<S::OriginError>;

    fn failure(error: &Self::Error) -> FillError {
        match error {
            OriginError::Service(_) => FillError::Origin,
            OriginError::Timeout(after) => FillError::OriginTimeout(*after),
        }
    }

    #[allow(clippy::manual_async_fn)]
    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched<Self::Pass>, Self::Error>> + Send + 'static {
        async move {
            let OriginFetcher {
                mut svc,
                mut head,
                body,
                fill,
            } = self;
            // Kept to ask again without validators if a 304 names another representation.
            let unconditional = previous.as_ref().map(|_| copy_head(&head));
            if let Some(prev) = &previous {
                add_validators(&mut head, prev);
            }
            let req_headers = head.headers.clone();
            let requested_at = SystemTime::now();
            let timeout = fill.config.origin_timeout;
            let res = call(&mut svc, Request::from_parts(head, body), timeout).await;
            let res = match (res, &previous) {
                (Ok(res), _) => res,
                (Err(e), Some(prev)) if fill.stale_ok(prev) => {
                    tracing::debug!("origin failed; serving stale-if-error");
                    drop(e);
                    return Ok(Fetched::Stale { status: None });
                }
                (Err(e), _) => return Err(e),
            };
            let stale_ok = previous.as_deref().is_some_and(|p| fill.stale_ok(p));
            if stale_ok && policy::is_error_status(res.status()) {
                return Ok(Fetched::Stale {
                    status: Some(res.status()),
                });
            }
            let res = match (res.status(), &previous, unconditional) {
                (StatusCode::NOT_MODIFIED, Some(prev), Some(plain))
                    if !policy::not_modified_selects(prev, res.headers()) =>
                {
                    // §4.3.4: a 304 whose strong validator we do not hold must not update our
                    // entry; the representation it names is fetched in full.
                    tracing::debug!("304 for another representation; fetching it in full");
                    let req = Request::from_parts(plain, B::default());
                    call(&mut svc, req, timeout).await?
                }
                _ => res,
            };
            let sent = Sent {
                headers: req_headers,
                at: requested_at,
            };
            Ok(fill.classify(res, previous.as_deref(), &sent).await)
        }
    }
}

/// The request as it went to the origin: what the response is judged against.
struct Sent {
    headers: http::HeaderMap,
    at: SystemTime,
}

/// Adds the stored entry's validators (RFC 9111 §4.3.1).
fn add_validators(head: &mut Parts, prev: &Metadata) {
    if let Some(etag) = prev
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        head.headers.insert(header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = prev.last_modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(lm)) {
            head.headers.insert(header::IF_MODIFIED_SINCE, v);
        }
    }
}

impl FillRequest {
    /// RFC 5861 §4: whether a failed validation may be answered with the stale entry.
    fn stale_ok(&self, prev: &Metadata) -> bool {
        policy::stale_if_error(
            self.config.rules(),
            &self.directives,
            prev,
            SystemTime::now(),
        )
    }

    /// What to do with the origin's response: a 304 refreshes the stored entry; otherwise it
    /// is stored (as a variant when it varies), or passed through.
    async fn classify<ResB>(
        &self,
        res: Response<ResB>,
        previous: Option<&Metadata>,
        sent: &Sent,
    ) -> Fetched<Passed<ResB>>
    where
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let now = SystemTime::now();
        if let (StatusCode::NOT_MODIFIED, Some(prev)) = (res.status(), previous) {
            return Fetched::NotModified {
                meta: Some(self.merge_304(prev, res.headers(), sent, now)),
            };
        }
        let vary = vary::parse(res.headers());
        if let Some(names) = &self.variant_of {
            if vary != Vary::Fields(names.clone()) {
                // The origin changed what it varies on: forget the marker (and with it every
                // variant) so the next request learns the new fields.
                if let Err(e) = self.cache.delete(&self.primary).await {
                    tracing::debug!(error = %e, "could not drop a stale vary marker");
                }
                return Fetched::Pass(Passed {
                    res,
                    reason: "vary-changed",
                });
            }
        }
        let mut meta = match self.storability(&res, sent, now) {
            Storability::Store(meta) => meta,
            Storability::Pass(reason) => return Fetched::Pass(Passed { res, reason }),
        };
        // Framing-only lengths (the origin body knows its size, no header yet) still let the
        // engine verify the body and answer Range/HEAD on a miss.
        if meta.content_length.is_none() {
            meta.content_length = res.body().size_hint().exact();
        }
        let body = EntryBody::from_stream(OriginStream::new(res.into_body()));
        match (vary, &self.variant_of) {
            // §4.1: the response goes under its variant key, and a marker naming the fields
            // under the primary key; the engine stores both in one fill.
            (Vary::Fields(names), None) => {
                let marker = vary::marker(&names);
                let nonce = vary::read_marker(&marker)
                    .map(|(n, _)| n)
                    .unwrap_or_default();
                let key = vary::variant_key(&self.primary, &nonce, &names, &sent.headers);
                Fetched::Variant {
                    key,
                    marker,
                    meta,
                    body,
                }
            }
            _ => Fetched::Entry { meta, body },
        }
    }

    /// The metadata a 304 leaves: the stored entry's, updated from the 304's fields.
    fn merge_304(
        &self,
        prev: &Metadata,
        headers_304: &http::HeaderMap,
        sent: &Sent,
        now: SystemTime,
    ) -> Metadata {
        let config = &self.config;
        let mut meta = policy::merge_not_modified(
            config.rules(),
            &sent.headers,
            prev,
            headers_304,
            sent.at,
            now,
        );
        // A cookie a 304 sets is for this client alone: never stored.
        if policy::refuses_set_cookie(&config.mode, config.share_set_cookie, &meta.headers) {
            meta.headers.remove(header::SET_COOKIE);
        }
        meta
    }

    fn storability<ResB>(&self, res: &Response<ResB>, sent: &Sent, now: SystemTime) -> Storability {
        let config = &self.config;
        if policy::refuses_set_cookie(&config.mode, config.share_set_cookie, res.headers()) {
            return Storability::Pass("set-cookie");
        }
        policy::storability(
            config.rules(),
            &sent.headers,
            res.status(),
            res.headers(),
            sent.at,
            now,
        )
    }
}
