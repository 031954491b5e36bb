//! [`CacheService`]: the middleware service.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::sync::oneshot;
use tower_service::Service;

use super::body::{CacheBody, OriginStream};
use super::future::ResponseFuture;
use super::layer::HttpConfig;
use super::policy::{self, RequestRule, Storability};
use super::status::CacheStatus;
use super::CACHE_STATUS;
use crate::cache::{Cache, Fetched, Fetcher, GetOptions, Lookup, Outcome};
use crate::entry::{EntryBody, Metadata};
use crate::error::{BoxError, Error};

/// The middleware service built by [`CacheLayer`](super::CacheLayer): answers GET and HEAD from
/// the cache when it can, and calls the inner service (the origin) otherwise.
///
/// Cache faults never become errors: the origin's response is served instead and the fault is
/// logged. The only errors returned are the inner service's own, so `Error = S::Error`.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
    config: Arc<HttpConfig>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<S> CacheService<S> {
    pub(crate) fn from_parts(inner: S, cache: Cache, config: Arc<HttpConfig>) -> Self {
        CacheService {
            inner,
            cache,
            config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The cache this service uses.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<S, B, ResB> Service<Request<B>> for CacheService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let rule = policy::request_rule(req.method(), req.headers());
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let status = |fwd| {
            self.config.cache_status.then(|| CacheStatus {
                fwd: Some(fwd),
                ..Default::default()
            })
        };
        if let RequestRule::Bypass(_) = rule {
            self.cache.record_bypass();
        }
        match rule {
            RequestRule::Bypass(reason) if is_unsafe(req.method()) => {
                let keys = invalidation_keys(&self.config, &req);
                let cache = self.cache.clone();
                let status = status(reason);
                let fut = svc.call(req);
                ResponseFuture::cached(Box::pin(async move {
                    let res = fut.await?;
                    // RFC 9111 §4.4: a successful unsafe request invalidates the target URI
                    // (and same-origin Location / Content-Location), before the response is
                    // handed on, so the client's next GET cannot see the old entry.
                    if res.status().is_success() || res.status().is_redirection() {
                        let mut keys = keys;
                        keys.extend(location_keys(&res, &keys));
                        for key in keys {
                            if let Err(e) = cache.delete(&key).await {
                                tracing::warn!(error = %e, "invalidation after unsafe request failed");
                            }
                        }
                    }
                    let mut res = res.map(CacheBody::origin);
                    if let Some(s) = status {
                        res.headers_mut().insert(CACHE_STATUS, s.to_header());
                    }
                    Ok(res)
                }))
            }
            RequestRule::Bypass(reason) => {
                ResponseFuture::passthrough(svc.call(req), status(reason))
            }
            RequestRule::Lookup {
                revalidate,
                no_stale,
                only_if_cached,
                head,
            } => {
                let opts = GetOptions::default()
                    .revalidate(revalidate)
                    .no_stale(no_stale)
                    .only_cached(only_if_cached || head);
                let call = CachedCall {
                    cache: self.cache.clone(),
                    config: self.config.clone(),
                    head,
                    only_if_cached,
                };
                ResponseFuture::cached(Box::pin(call.run(svc, req, opts)))
            }
        }
    }
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The keys an unsafe request to this URI invalidates: the URI as GET would key it.
fn invalidation_keys<B>(config: &HttpConfig, req: &Request<B>) -> Vec<String> {
    let mut parts = head_of(req);
    parts.method = Method::GET;
    vec![(config.key_fn)(&parts)]
}

/// Keys of `Location` and `Content-Location` when they are on the same origin as `keys[0]`.
fn location_keys<ResB>(res: &Response<ResB>, keys: &[String]) -> Vec<String> {
    let Some(base) = keys.first() else {
        return Vec::new();
    };
    let Ok(base_uri) = base.parse::<Uri>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = res.headers().get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = v.parse::<Uri>() else { continue };
        let same_origin = match uri.authority() {
            None => true,
            Some(a) => Some(a) == base_uri.authority() && uri.scheme() == base_uri.scheme(),
        };
        if !same_origin {
            continue;
        }
        let (Some(scheme), Some(auth)) = (base_uri.scheme_str(), base_uri.authority()) else {
            continue;
        };
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let key = format!("{scheme}://{auth}{pq}");
        if !out.contains(&key) && !keys.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// A copy of a request's head (`Parts` itself cannot be built from outside `http`).
fn head_of<B>(req: &Request<B>) -> Parts {
    let mut builder = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(req.version());
    if let Some(h) = builder.headers_mut() {
        *h = req.headers().clone();
    }
    let (mut parts, ()) = builder
        .body(())
        .map(Request::into_parts)
        .unwrap_or_else(|_| Request::new(()).into_parts());
    parts.extensions = req.extensions().clone();
    parts
}

/// What the origin fetcher hands back to the request that made it, beside the engine.
enum Side<ResB, E> {
    /// A response that must not be stored, passed through as it came.
    Response(Response<ResB>, &'static str),
    /// The inner service failed: its own error is returned to the caller.
    Error(E),
}

/// The origin, as the engine sees it: the inner service called with the request's head.
struct OriginFetcher<S, B, ResB, E> {
    svc: S,
    parts: Parts,
    body: B,
    config: Arc<HttpConfig>,
    side: oneshot::Sender<Side<ResB, E>>,
}

impl<S, B, ResB> Fetcher for OriginFetcher<S, B, ResB, S::Error>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    #[allow(clippy::manual_async_fn)]
    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl std::future::Future<Output = Result<Fetched, BoxError>> + Send + 'static {
        async move {
            let OriginFetcher {
                mut svc,
                mut parts,
                body,
                config,
                side,
            } = self;
            if let Some(prev) = &previous {
                if let Some(etag) = prev
                    .etag
                    .as_deref()
                    .and_then(|e| HeaderValue::from_str(e).ok())
                {
                    parts.headers.insert(header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = prev.last_modified {
                    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(lm)) {
                        parts.headers.insert(header::IF_MODIFIED_SINCE, v);
                    }
                }
            }
            let req_headers = parts.headers.clone();
            let requested_at = SystemTime::now();
            let res = match poll_fn(|cx| svc.poll_ready(cx)).await {
                Ok(()) => svc.call(Request::from_parts(parts, body)).await,
                Err(e) => Err(e),
            };
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    let _ = side.send(Side::Error(e));
                    return Err("the origin service failed".into());
                }
            };
            let now = SystemTime::now();
            if res.status() == StatusCode::NOT_MODIFIED {
                if let Some(prev) = &previous {
                    let meta = policy::merge_not_modified(
                        &config.mode,
                        &req_headers,
                        prev,
                        res.headers(),
                        requested_at,
                        now,
                    );
                    return Ok(Fetched::NotModified { meta: Some(meta) });
                }
            }
            match policy::storability(
                &config.mode,
                &req_headers,
                res.status(),
                res.headers(),
                requested_at,
                now,
            ) {
                Storability::Store(meta) => Ok(Fetched::Entry {
                    meta,
                    body: EntryBody::from_stream(OriginStream::new(res.into_body())),
                }),
                Storability::Pass(reason) => {
                    let meta = Metadata::new(res.status());
                    let _ = side.send(Side::Response(res, reason));
                    Ok(Fetched::Pass {
                        meta,
                        body: EntryBody::empty(),
                    })
                }
            }
        }
    }
}

/// The request head sent to the origin on a fill: always a GET (a HEAD is answered from it),
/// without the client's own conditionals and ranges, which a shared fill must not carry.
fn origin_parts(parts: &Parts) -> Parts {
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers.clone();
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
        ] {
            h.remove(name);
        }
    }
    let (mut out, ()) = builder
        .body(())
        .map(Request::into_parts)
        .unwrap_or_else(|_| Request::new(()).into_parts());
    out.extensions = parts.extensions.clone();
    out
}

/// One cache lookup through the layer.
struct CachedCall {
    cache: Cache,
    config: Arc<HttpConfig>,
    head: bool,
    only_if_cached: bool,
}

impl CachedCall {
    async fn run<S, B, ResB>(
        self,
        svc: S,
        req: Request<B>,
        opts: GetOptions,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        B: Default + Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let key = (self.config.key_fn)(&parts);
        let fallback = svc.clone();
        let (tx, mut rx) = oneshot::channel();
        let fetcher = OriginFetcher {
            svc,
            parts: origin_parts(&parts),
            body,
            config: self.config.clone(),
            side: tx,
        };
        let span = tracing::debug_span!("daramjwee.lookup", key_len = key.len());
        let result = {
            let _e = span.enter();
            drop(_e);
            self.cache.get_with(&key, opts, fetcher).await
        };
        match result {
            Ok(lookup) if lookup.outcome == Outcome::Pass => match rx.try_recv() {
                Ok(Side::Response(res, reason)) => Ok(self.pass(res, reason)),
                Ok(Side::Error(e)) => Err(e),
                Err(_) => Ok(self.respond(lookup, &parts)),
            },
            Ok(lookup) => Ok(self.respond(lookup, &parts)),
            Err(Error::NotCached) if self.only_if_cached => {
                // RFC 9111 §5.2.1.7: only-if-cached and nothing usable stored.
                let mut res = Response::new(CacheBody::empty());
                *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                self.stamp(
                    &mut res,
                    CacheStatus {
                        fwd: Some("miss"),
                        ..Default::default()
                    },
                );
                Ok(res)
            }
            Err(e) => {
                if let Ok(Side::Error(err)) = rx.try_recv() {
                    return Err(err);
                }
                if !matches!(e, Error::NotCached) {
                    tracing::warn!(error = %e, "cache lookup failed; serving from the origin");
                }
                let fwd = if matches!(e, Error::NotCached) {
                    "uri-miss"
                } else {
                    "bypass"
                };
                self.origin_direct(fallback, parts, fwd).await
            }
        }
    }

    /// Calls the origin directly, without the cache (HEAD misses and fail-open).
    async fn origin_direct<S, B, ResB>(
        &self,
        mut svc: S,
        parts: Parts,
        fwd: &'static str,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<B>, Response = Response<ResB>>,
        B: Default,
    {
        poll_fn(|cx| svc.poll_ready(cx)).await?;
        let res = svc.call(Request::from_parts(parts, B::default())).await?;
        let mut res = res.map(CacheBody::origin);
        self.stamp(
            &mut res,
            CacheStatus {
                fwd: Some(fwd),
                ..Default::default()
            },
        );
        Ok(res)
    }

    fn pass<ResB>(&self, res: Response<ResB>, reason: &'static str) -> Response<CacheBody<ResB>> {
        let mut res = res.map(CacheBody::origin);
        if self.head {
            *res.body_mut() = CacheBody::empty();
        }
        let _ = reason;
        self.stamp(
            &mut res,
            CacheStatus {
                fwd: Some("uri-miss"),
                ..Default::default()
            },
        );
        res
    }

    fn respond<ResB>(&self, lookup: Lookup, parts: &Parts) -> Response<CacheBody<ResB>> {
        let now = SystemTime::now();
        let Lookup {
            outcome,
            meta,
            body,
        } = lookup;
        let mut status = CacheStatus {
            ttl: policy::ttl_seconds(&meta, now),
            ..Default::default()
        };
        match outcome {
            Outcome::Hit { tier, .. } => {
                status.hit = true;
                status.detail = Some(self.cache.tier_name(tier));
            }
            Outcome::NotModified => status.hit = true,
            Outcome::Miss => {
                status.fwd = Some("uri-miss");
                status.stored = true;
            }
            Outcome::Coalesced => {
                status.fwd = Some("uri-miss");
                status.collapsed = true;
            }
            Outcome::Revalidated { tier } => {
                status.fwd = Some("stale");
                status.fwd_status = Some(304);
                status.detail = Some(self.cache.tier_name(tier));
            }
            Outcome::Pass => status.fwd = Some("uri-miss"),
        }
        let from_store = !matches!(outcome, Outcome::Pass);
        if from_store && policy::client_not_modified(&parts.headers, &meta) {
            let mut res = Response::new(CacheBody::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [
                header::ETAG,
                header::LAST_MODIFIED,
                header::CACHE_CONTROL,
                header::CONTENT_LOCATION,
                header::DATE,
                header::EXPIRES,
                header::VARY,
            ] {
                for v in meta.headers.get_all(&name) {
                    res.headers_mut().append(name.clone(), v.clone());
                }
            }
            self.stamp(&mut res, status);
            return res;
        }
        let len = meta.content_length.or_else(|| body.remaining_len());
        let mut res = Response::new(if self.head {
            CacheBody::empty()
        } else {
            CacheBody::cached(body, len)
        });
        *res.status_mut() = meta.status;
        *res.headers_mut() = meta.headers.clone();
        // The origin's length may have come from its framing alone; a HEAD answer must still
        // say how long the GET body is.
        if let (Some(len), false) = (len, res.headers().contains_key(header::CONTENT_LENGTH)) {
            if !self.head || meta.status != StatusCode::NO_CONTENT {
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        if from_store {
            let age = meta.age(now).as_secs();
            res.headers_mut()
                .insert(header::AGE, HeaderValue::from(age));
        }
        self.stamp(&mut res, status);
        res
    }

    fn stamp<T>(&self, res: &mut Response<T>, status: CacheStatus) {
        if self.config.cache_status {
            res.headers_mut().insert(CACHE_STATUS, status.to_header());
        }
    }
}
