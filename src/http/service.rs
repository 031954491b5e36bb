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

use super::body::{drain_detached, CacheBody, OriginStream};
use super::future::ResponseFuture;
use super::layer::HttpConfig;
use super::policy::{self, RequestDirectives, RequestRule, Storability};
use super::range::{self, RangeAnswer};
use super::status::{self, CacheStatus};
use super::vary::{self, Vary};
use super::CACHE_STATUS;
use crate::cache::{Cache, Fetched, Fetcher, GetOptions, Lookup, Outcome, Verdict};
use crate::entry::{EntryBody, Metadata, StoredEntry};
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
        match policy::request_rule(req.method(), req.headers()) {
            RequestRule::Lookup { directives, head } => self.lookup(req, directives, head),
            RequestRule::Bypass(reason) => {
                self.cache.record_bypass();
                self.bypass(req, reason)
            }
        }
    }
}

impl<S> CacheService<S> {
    /// Takes the service that was driven to readiness, leaving a clone in its place.
    fn take_ready(&mut self) -> S
    where
        S: Clone,
    {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    /// A GET or HEAD the cache answers.
    fn lookup<B, ResB>(
        &mut self,
        req: Request<B>,
        directives: RequestDirectives,
        head: bool,
    ) -> ResponseFuture<S::Future, ResB, S::Error>
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
        let answer = Answer {
            cache: &self.cache,
            config: &self.config,
            head,
        };
        let found = match answer.fresh_hit(&key, &parts, &directives) {
            // A fresh hit in the first tier is answered here, before any origin request head,
            // fetcher or boxed future is built; the inner service keeps its readiness.
            Ok(res) => return ResponseFuture::ready(res),
            Err(found) => found,
        };
        let call = CachedCall {
            cache: self.cache.clone(),
            config: self.config.clone(),
            head,
            directives: Arc::new(directives),
        };
        let svc = self.take_ready();
        ResponseFuture::cached(Box::pin(call.run(svc, parts, body, key, found)))
    }

    /// A request the cache does not answer (its method or its directives): passed to the
    /// inner service; a successful unsafe one invalidates what it names.
    fn bypass<B, ResB>(
        &mut self,
        req: Request<B>,
        reason: &'static str,
    ) -> ResponseFuture<S::Future, ResB, S::Error>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
    {
        let status = self.config.cache_status.then(|| CacheStatus {
            fwd: Some(reason),
            ..Default::default()
        });
        let mut svc = self.take_ready();
        if !is_unsafe(req.method()) {
            return ResponseFuture::passthrough(svc.call(req), status);
        }
        let mut target = head_of(&req);
        target.method = Method::GET;
        let config = self.config.clone();
        let cache = self.cache.clone();
        let fut = svc.call(req);
        ResponseFuture::cached(Box::pin(async move {
            let res = fut.await?;
            // RFC 9111 §4.4: a successful unsafe request invalidates the target URI (and
            // same-origin Location / Content-Location), before the response is handed on, so
            // the client's next GET cannot see the old entry.
            if res.status().is_success() || res.status().is_redirection() {
                for key in invalidation_keys(&config, &target, res.headers()) {
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
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The keys an unsafe request invalidates (RFC 9111 §4.4): its target URI, and the
/// `Location` / `Content-Location` URIs of its response when they are on the same origin, each
/// keyed as a GET for it would be (so a custom key function is respected).
fn invalidation_keys(config: &HttpConfig, target: &Parts, res: &http::HeaderMap) -> Vec<String> {
    let mut keys = vec![(config.key_fn)(target)];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = res.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(uri) = same_origin_uri(target, v) else {
            tracing::debug!(
                location = v,
                "cross-origin or unparsable location not invalidated"
            );
            continue;
        };
        let mut parts = head_copy(target);
        parts.uri = uri;
        let key = (config.key_fn)(&parts);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// `reference` resolved against the request target, if it is on the same origin: a relative
/// reference always is; an absolute one when its authority is the target's (from the URI, or
/// `Host` for origin-form requests) and its scheme the target's (either of http/https when the
/// request did not say, as behind a TLS terminator).
fn same_origin_uri(target: &Parts, reference: &str) -> Option<Uri> {
    let base = &target.uri;
    let reference = reference.trim();
    let path = if reference.starts_with('/') && !reference.starts_with("//") {
        reference.to_owned()
    } else if reference.contains("://") {
        let abs: Uri = reference.parse().ok()?;
        let authority = base
            .authority()
            .map(|a| a.as_str())
            .or_else(|| target.headers.get(header::HOST)?.to_str().ok())?;
        let same_host = abs
            .authority()
            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(authority));
        let same_scheme = match (base.scheme_str(), abs.scheme_str()) {
            (Some(ours), Some(theirs)) => ours.eq_ignore_ascii_case(theirs),
            (None, Some(theirs)) => matches!(theirs, "http" | "https"),
            _ => false,
        };
        if !(same_host && same_scheme) {
            return None;
        }
        abs.path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned())
    } else if reference.starts_with("//") || reference.contains(':') {
        // Network-path or other-scheme references: not provably the same origin.
        return None;
    } else {
        // A relative path: resolve against the base path's directory (RFC 3986 §5.2.3).
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{reference}")
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// A copy of a request's head.
fn head_of<B>(req: &Request<B>) -> Parts {
    let mut parts = copy_head(req.method(), req.uri(), req.version(), req.headers())
        .unwrap_or_else(|| Request::new(()).into_parts().0);
    parts.extensions = req.extensions().clone();
    parts
}

/// What the origin fetcher hands back to the request that made it, beside the engine.
enum Side<ResB, E> {
    /// A response that must not be stored, passed through as it came.
    Response(Response<ResB>, &'static str),
    /// The inner service failed: its own error is returned to the caller.
    Error(E),
    /// The response varied: the primary key got a marker and this is the lookup of the
    /// variant the fill stored for the requesting client.
    Variant(Lookup),
    /// Validation failed (origin error, or this 5xx) and the stale entry was kept and served
    /// under `stale-if-error`.
    StaleIfError(Option<u16>),
}

/// The origin, as the engine sees it: the inner service called with the request's head.
struct OriginFetcher<S, B, ResB, E> {
    svc: S,
    parts: Parts,
    body: B,
    config: Arc<HttpConfig>,
    directives: Arc<RequestDirectives>,
    cache: Cache,
    /// The URL's primary key.
    primary: String,
    /// For a variant fill, the `Vary` field names the primary's marker recorded.
    variant_of: Option<Vec<String>>,
    side: oneshot::Sender<Side<ResB, E>>,
}

impl<S, B, ResB> Fetcher for OriginFetcher<S, B, ResB, S::Error>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Default + Send + 'static,
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
                directives,
                cache,
                primary,
                variant_of,
                side,
            } = self;
            // Kept to ask again without validators if a 304 names another representation.
            let unconditional = previous.as_ref().map(|_| head_copy(&parts));
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
            // RFC 5861 §4: a failed validation may be answered with the stale entry.
            let stale_ok = |prev: &Option<Arc<Metadata>>| {
                prev.as_ref()
                    .filter(|p| {
                        policy::stale_if_error(config.rules(), &directives, p, SystemTime::now())
                    })
                    .map(|p| Fetched::NotModified {
                        meta: Some((**p).clone()),
                    })
            };
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    if let Some(keep) = stale_ok(&previous) {
                        tracing::debug!("origin failed; serving stale-if-error");
                        let _ = side.send(Side::StaleIfError(None));
                        return Ok(keep);
                    }
                    let _ = side.send(Side::Error(e));
                    return Err("the origin service failed".into());
                }
            };
            if policy::is_error_status(res.status()) {
                if let Some(keep) = stale_ok(&previous) {
                    let _ = side.send(Side::StaleIfError(Some(res.status().as_u16())));
                    return Ok(keep);
                }
            }
            let mut res = res;
            if res.status() == StatusCode::NOT_MODIFIED {
                if let (Some(prev), Some(plain)) = (&previous, unconditional) {
                    if !policy::not_modified_selects(prev, res.headers()) {
                        // §4.3.4: a 304 whose strong validator we do not hold must not update
                        // our entry; the representation it names is fetched in full.
                        tracing::debug!("304 for another representation; fetching it in full");
                        let again = match poll_fn(|cx| svc.poll_ready(cx)).await {
                            Ok(()) => svc.call(Request::from_parts(plain, B::default())).await,
                            Err(e) => Err(e),
                        };
                        res = match again {
                            Ok(r) => r,
                            Err(e) => {
                                let _ = side.send(Side::Error(e));
                                return Err("the origin service failed".into());
                            }
                        };
                    }
                }
            }
            let now = SystemTime::now();
            if res.status() == StatusCode::NOT_MODIFIED {
                if let Some(prev) = &previous {
                    let mut meta = policy::merge_not_modified(
                        config.rules(),
                        &req_headers,
                        prev,
                        res.headers(),
                        requested_at,
                        now,
                    );
                    // A cookie a 304 sets is for this client alone: never stored.
                    if policy::refuses_set_cookie(
                        &config.mode,
                        config.share_set_cookie,
                        &meta.headers,
                    ) {
                        meta.headers.remove(header::SET_COOKIE);
                    }
                    return Ok(Fetched::NotModified { meta: Some(meta) });
                }
            }
            let vary = vary::parse(res.headers());
            if let Some(names) = &variant_of {
                if vary != Vary::Fields(names.clone()) {
                    // The origin changed what it varies on: forget the marker (and with it
                    // every variant) so the next request learns the new fields.
                    if let Err(e) = cache.delete(&primary).await {
                        tracing::debug!(error = %e, "could not drop a stale vary marker");
                    }
                    let _ = side.send(Side::Response(res, "vary-changed"));
                    return Ok(Fetched::Pass {
                        meta: Metadata::new(StatusCode::OK),
                        body: EntryBody::empty(),
                    });
                }
            }
            let decision =
                if policy::refuses_set_cookie(&config.mode, config.share_set_cookie, res.headers())
                {
                    Storability::Pass("set-cookie")
                } else {
                    policy::storability(
                        config.rules(),
                        &req_headers,
                        res.status(),
                        res.headers(),
                        requested_at,
                        now,
                    )
                };
            match decision {
                Storability::Store(mut meta) => {
                    // Framing-only lengths (the origin body knows its size, no header yet)
                    // still let the engine verify the body and Range/HEAD answer on a miss.
                    if meta.content_length.is_none() {
                        meta.content_length = res.body().size_hint().exact();
                    }
                    let body = EntryBody::from_stream(OriginStream::new(res.into_body()));
                    match (vary, &variant_of) {
                        (Vary::Fields(names), None) => {
                            // §4.1: store the response under its variant key and put a
                            // marker naming the fields at the primary key.
                            let marker = vary::marker(&names);
                            let Some((nonce, _)) = vary::read_marker(&marker) else {
                                return Err("vary marker could not be built".into());
                            };
                            let vkey = vary::variant_key(&primary, &nonce, &names, &req_headers);
                            let ready = move |_prev: Option<Arc<Metadata>>| async move {
                                Ok::<_, BoxError>(Fetched::Entry { meta, body })
                            };
                            let opts = GetOptions::default().revalidate(true);
                            match cache.get_with(&vkey, opts, ready).await {
                                Ok(lookup) => {
                                    let _ = side.send(Side::Variant(lookup));
                                }
                                Err(e) => tracing::debug!(error = %e, "variant fill failed"),
                            }
                            Ok(Fetched::Entry {
                                meta: marker,
                                body: EntryBody::empty(),
                            })
                        }
                        _ => Ok(Fetched::Entry { meta, body }),
                    }
                }
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
/// without the client's own conditionals and ranges, which a shared fill must not carry, and
/// without the client connection's hop-by-hop fields.
fn origin_parts(parts: &Parts) -> Parts {
    let mut out = copy_head(&Method::GET, &parts.uri, parts.version, &parts.headers)
        .unwrap_or_else(|| Request::new(()).into_parts().0);
    policy::strip_hop_by_hop(&mut out.headers);
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        out.headers.remove(name);
    }
    out.extensions = parts.extensions.clone();
    out
}

/// An origin fetcher and the channel its side results arrive on.
type FetcherAndSide<S, B, ResB> = (
    OriginFetcher<S, B, ResB, <S as Service<Request<B>>>::Error>,
    oneshot::Receiver<Side<ResB, <S as Service<Request<B>>>::Error>>,
);

/// One cache lookup through the layer.
struct CachedCall {
    cache: Cache,
    config: Arc<HttpConfig>,
    head: bool,
    directives: Arc<RequestDirectives>,
}

impl CachedCall {
    /// The engine options for this request: the HTTP freshness decision as the judge.
    fn options(&self) -> GetOptions {
        let config = self.config.clone();
        let directives = self.directives.clone();
        GetOptions::default()
            .only_cached(self.directives.only_if_cached || self.head)
            .judge(move |meta, now| {
                if vary::is_marker(meta) {
                    // A marker holds no response: always follow it to the variant.
                    Verdict::Fresh
                } else {
                    policy::verdict(config.rules(), &directives, meta, now)
                }
            })
    }

    fn fetcher<S, B, ResB>(
        &self,
        svc: S,
        parts: Parts,
        body: B,
        primary: &str,
        variant_of: Option<Vec<String>>,
    ) -> FetcherAndSide<S, B, ResB>
    where
        S: Service<Request<B>>,
    {
        let (side, rx) = oneshot::channel();
        let f = OriginFetcher {
            svc,
            parts,
            body,
            config: self.config.clone(),
            directives: self.directives.clone(),
            cache: self.cache.clone(),
            primary: primary.to_owned(),
            variant_of,
            side,
        };
        (f, rx)
    }

    fn answer(&self) -> Answer<'_> {
        Answer {
            cache: &self.cache,
            config: &self.config,
            head: self.head,
        }
    }

    /// The lookup of `key` for the request `parts`, `found` being what
    /// [`Answer::fresh_hit`] read from the first tier.
    async fn run<S, B, ResB>(
        self,
        svc: S,
        parts: Parts,
        body: B,
        key: String,
        found: Option<StoredEntry>,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        B: Default + Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let fallback = svc.clone();
        let origin = origin_parts(&parts);
        let (fetcher, mut rx) = self.fetcher(svc.clone(), head_copy(&origin), body, &key, None);
        let mut result = self
            .cache
            .get_found(&key, self.options(), fetcher, found)
            .await;
        // §4.1: a marker at the primary key sends the request on to its variant.
        let marker = result
            .as_ref()
            .ok()
            .and_then(|l| vary::read_marker(&l.meta));
        if let Some((nonce, names)) = marker {
            if let Ok(first) = result {
                // The marker's own (empty) body may be a fill: let it commit.
                if matches!(first.outcome, Outcome::Miss | Outcome::Coalesced) {
                    drain_detached(first.body);
                }
            }
            result = match rx.try_recv() {
                // This request's fill stored its variant already.
                Ok(Side::Variant(lookup)) => Ok(lookup),
                _ => {
                    let vkey = vary::variant_key(&key, &nonce, &names, &origin.headers);
                    let (fetcher, rx2) =
                        self.fetcher(svc, head_copy(&origin), B::default(), &key, Some(names));
                    rx = rx2;
                    self.cache.get_with(&vkey, self.options(), fetcher).await
                }
            };
        }
        match result {
            Ok(lookup) if lookup.outcome == Outcome::Pass => match rx.try_recv() {
                Ok(Side::Response(res, reason)) => Ok(self.answer().pass(res, reason)),
                Ok(Side::Error(e)) => Err(e),
                _ => Ok(self.answer().respond(lookup, &parts, None)),
            },
            Ok(lookup) => {
                let sie = match rx.try_recv() {
                    Ok(Side::StaleIfError(code)) => Some(code),
                    _ => None,
                };
                Ok(self.answer().respond(lookup, &parts, sie))
            }
            Err(Error::NotCached) if self.directives.only_if_cached => {
                // RFC 9111 §5.2.1.7: only-if-cached and nothing usable stored.
                let mut res = Response::new(CacheBody::empty());
                *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                self.answer().stamp(
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
        policy::strip_hop_by_hop(res.headers_mut());
        self.answer().stamp(
            &mut res,
            CacheStatus {
                fwd: Some(fwd),
                ..Default::default()
            },
        );
        Ok(res)
    }
}

/// What turns a lookup into a response: the parts of a request's context the answer needs,
/// borrowed, so the fresh-hit path builds nothing it does not send.
struct Answer<'a> {
    cache: &'a Cache,
    config: &'a HttpConfig,
    head: bool,
}

impl Answer<'_> {
    /// The response for a fresh hit in the first tier, if there is one; otherwise what was
    /// found there (to be handed to the full lookup, so it is not read twice).
    fn fresh_hit<ResB>(
        &self,
        key: &str,
        parts: &Parts,
        directives: &RequestDirectives,
    ) -> Result<Response<CacheBody<ResB>>, Option<StoredEntry>> {
        let judge = |meta: &Metadata, now| {
            if vary::is_marker(meta) {
                // Resolved below, through the variant's own key.
                Verdict::Validate
            } else {
                policy::verdict(self.config.rules(), directives, meta, now)
            }
        };
        match self.cache.lookup_now(key, judge) {
            Ok(lookup) => Ok(self.respond(lookup, parts, None)),
            Err(Some(found)) if vary::is_marker(&found.meta) => {
                // The URL varies: a fresh hit of this client's variant is answered just as
                // well. The marker itself goes to the full lookup otherwise.
                let Some((nonce, names)) = vary::read_marker(&found.meta) else {
                    return Err(Some(found));
                };
                let origin = origin_parts(parts);
                let vkey = vary::variant_key(key, &nonce, &names, &origin.headers);
                let judge = |meta: &Metadata, now| {
                    policy::verdict(self.config.rules(), directives, meta, now)
                };
                match self.cache.lookup_now(&vkey, judge) {
                    Ok(lookup) => Ok(self.respond(lookup, parts, None)),
                    Err(_) => Err(Some(found)),
                }
            }
            Err(found) => Err(found),
        }
    }

    fn pass<ResB>(&self, res: Response<ResB>, reason: &'static str) -> Response<CacheBody<ResB>> {
        let mut res = res.map(CacheBody::origin);
        if self.head {
            *res.body_mut() = CacheBody::empty();
        }
        policy::strip_hop_by_hop(res.headers_mut());
        tracing::debug!(reason, "response not stored");
        self.stamp(
            &mut res,
            CacheStatus {
                fwd: Some("uri-miss"),
                detail: Some(reason),
                ..Default::default()
            },
        );
        res
    }

    fn respond<ResB>(
        &self,
        lookup: Lookup,
        parts: &Parts,
        stale_if_error: Option<Option<u16>>,
    ) -> Response<CacheBody<ResB>> {
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
        if let Some(code) = stale_if_error {
            status.fwd = Some("stale");
            status.fwd_status = code;
            status.detail = Some("stale-if-error");
        }
        // A body that is also a fill in progress must be read to its end even when this
        // client needs none or part of it, or the fill is abandoned.
        let filling = matches!(outcome, Outcome::Miss | Outcome::Coalesced);
        let from_store = !matches!(outcome, Outcome::Pass);
        let age = from_store.then(|| status::age_header(meta.age(now).as_secs()));
        if from_store && policy::client_not_modified(&parts.headers, &meta) {
            if filling {
                drain_detached(body);
            }
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
            if let Some(age) = age {
                res.headers_mut().insert(header::AGE, age);
            }
            self.stamp(&mut res, status);
            return res;
        }
        let len = meta.content_length.or_else(|| body.remaining_len());
        let ranged = if self.head || !from_store {
            RangeAnswer::Full
        } else {
            range::evaluate(&parts.headers, &meta, len)
        };
        let mut res = match ranged {
            RangeAnswer::Full => {
                let mut res = Response::new(if self.head {
                    CacheBody::empty()
                } else {
                    CacheBody::cached(body, len)
                });
                *res.status_mut() = meta.status;
                *res.headers_mut() = meta.headers.clone();
                // The origin's length may have come from its framing alone; a HEAD answer
                // must still say how long the GET body is.
                if let (Some(len), false) =
                    (len, res.headers().contains_key(header::CONTENT_LENGTH))
                {
                    if !self.head || meta.status != StatusCode::NO_CONTENT {
                        res.headers_mut()
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    }
                }
                res
            }
            RangeAnswer::Partial { start, end, len } => {
                let take = end - start + 1;
                let mut res = Response::new(CacheBody::ranged(body, start, take, filling));
                *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                *res.headers_mut() = meta.headers.clone();
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(take));
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                res
            }
            RangeAnswer::Unsatisfiable { len } => {
                if filling {
                    drain_detached(body);
                }
                let mut res = Response::new(CacheBody::empty());
                *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
                    if let Some(v) = meta.headers.get(&name) {
                        res.headers_mut().insert(name, v.clone());
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                res
            }
        };
        if let Some(age) = age {
            res.headers_mut().insert(header::AGE, age);
        }
        self.stamp(&mut res, status);
        res
    }

    fn stamp<T>(&self, res: &mut Response<T>, status: CacheStatus) {
        self.config.rules().strip_targeted(res.headers_mut());
        if self.config.cache_status {
            res.headers_mut().insert(CACHE_STATUS, status.to_header());
        }
    }
}

/// A copy of a request head (`Parts` is not `Clone`, and a variant lookup needs a second
/// fetcher).
fn head_copy(parts: &Parts) -> Parts {
    let mut out = copy_head(&parts.method, &parts.uri, parts.version, &parts.headers)
        .unwrap_or_else(|| Request::new(()).into_parts().0);
    out.extensions = parts.extensions.clone();
    out
}

/// A fresh `Parts` with these fields (`Parts` can only be built through a `Request`).
fn copy_head(
    method: &Method,
    uri: &Uri,
    version: http::Version,
    headers: &http::HeaderMap,
) -> Option<Parts> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .version(version);
    if let Some(h) = builder.headers_mut() {
        *h = headers.clone();
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}
