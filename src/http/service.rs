//! [`CacheService`]: the middleware service.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tower_service::Service;

use super::answer::Answer;
use super::body::CacheBody;
use super::config::HttpConfig;
use super::future::ResponseFuture;
use super::headers::{append_to_key, has_target_rewriting, TargetHeaders, TARGET_REWRITING};
use super::invalidate::{invalidate, is_unsafe};
use super::key::{default_key_in, KeyMaker, KEY_BUF};
use super::lookup::CachedCall;
use super::origin::{call, OriginService};
use super::policy::{self, RequestDirectives, RequestRule};
use super::request::{copy_head, strip_target};
use super::status::CacheStatus;
use super::CACHE_STATUS;
use crate::cache::Cache;

/// The middleware service built by [`CacheLayer`](super::CacheLayer): answers GET and HEAD from
/// the cache when it can, and calls the inner service (the origin) otherwise.
///
/// Cache faults never become errors: the origin's response is served instead and the fault is
/// logged. The only errors returned are the inner service's own, so `Error = S::Error`.
///
/// # Readiness
///
/// The service is always ready: most requests are answered from the cache without the inner
/// service. Each call into the inner service (a fill, a pass-through, a fallback) drives a
/// clone of it to readiness right before calling it, under the layer's origin timeout, so a
/// `ConcurrencyLimit`, `Buffer` or `RateLimit` below the layer grants exactly one permit per
/// origin call and none is held by a request that does not call the origin. An error the inner
/// service reports from `poll_ready` is returned by the call that needed it.
///
/// # Request bodies
///
/// The request body type must be `Default`: a lookup may call the origin more than once (a
/// variant, a 304 naming another representation, a fallback), and GET and HEAD fills carry no
/// body. For a hyper server's `Incoming`, map the request body first, for example
/// `ServiceBuilder::new().map_request(|r: Request<Incoming>| r.map(axum::body::Body::new))`.
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
    config: Arc<HttpConfig>,
    /// Where a [`KeyWriter`](super::KeyWriter) writes each request's key: kept, so a hit's
    /// key costs no allocation.
    key_buf: String,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        // Not the buffer: it holds only the last request's key.
        CacheService::from_parts(self.inner.clone(), self.cache.clone(), self.config.clone())
    }
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
            key_buf: String::new(),
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

impl<S, B> Service<Request<B>> for CacheService<S>
where
    S: OriginService<B>,
    B: Default + Send + 'static,
{
    type Response = Response<CacheBody<S::ResBody>>;
    type Error = S::OriginError;
    type Future = ResponseFuture<S::ResBody, S::OriginError>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is driven per origin call (see the type's docs).
        Poll::Ready(Ok(()))
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
    /// A GET or HEAD the cache answers.
    fn lookup<B>(
        &mut self,
        req: Request<B>,
        directives: RequestDirectives,
        head: bool,
    ) -> ResponseFuture<S::ResBody, S::OriginError>
    where
        S: OriginService<B>,
        B: Default + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        let mut buf = [0u8; KEY_BUF];
        let key = key_of(&self.config, &parts, &mut buf, &mut self.key_buf);
        let answer = Answer {
            cache: &self.cache,
            config: &self.config,
            head,
        };
        let found = match answer.fresh_hit(&key, &parts, &directives) {
            // A fresh hit in the first tier is answered here, before any origin request head,
            // fetcher or boxed future is built.
            Ok(res) => return ResponseFuture::ready(res),
            Err(found) => found,
        };
        let call = CachedCall {
            cache: self.cache.clone(),
            config: self.config.clone(),
            head,
            directives: Arc::new(directives),
        };
        let svc = self.inner.clone();
        let key = key.into_owned();
        ResponseFuture::boxed(Box::pin(call.run(svc, parts, body, key, found)))
    }

    /// A request the cache does not answer (its method or its directives): passed to the
    /// inner service; a successful unsafe one invalidates what it names.
    fn bypass<B>(
        &mut self,
        req: Request<B>,
        reason: &'static str,
    ) -> ResponseFuture<S::ResBody, S::OriginError>
    where
        S: OriginService<B>,
        B: Send + 'static,
    {
        let status = self.config.cache_status.then(|| CacheStatus {
            fwd: Some(reason),
            ..Default::default()
        });
        let (mut parts, body) = req.into_parts();
        if self.config.target_headers == TargetHeaders::Strip {
            strip_target(&mut parts.headers);
        }
        // Invalidated as a GET for the same URL would be keyed.
        let target = is_unsafe(&parts.method).then(|| {
            let mut target = copy_head(&parts);
            target.method = http::Method::GET;
            target
        });
        let config = self.config.clone();
        let cache = self.cache.clone();
        let mut svc = self.inner.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let req = Request::from_parts(parts, body);
            let res = match call(&mut svc, req, config.origin_timeout).await {
                Ok(res) => res,
                Err(super::origin::OriginError::Service(e)) => return Err(e),
                Err(super::origin::OriginError::Timeout(after)) => {
                    let answer = Answer {
                        cache: &cache,
                        config: &config,
                        head: false,
                    };
                    return Ok(answer.origin_timed_out(after));
                }
            };
            let ok = res.status().is_success() || res.status().is_redirection();
            if let (Some(target), true) = (&target, ok) {
                invalidate(&cache, &config, target, res.headers()).await;
            }
            let mut res = res.map(CacheBody::origin);
            if let Some(s) = status {
                res.headers_mut().insert(CACHE_STATUS, s.to_header());
            }
            Ok(res)
        }))
    }
}

/// The most of a [`KeyWriter`](super::KeyWriter)'s buffer a service keeps between requests.
const KEY_TEXT_KEPT: usize = 4096;

/// The request's cache key: on the stack (`buf`) for the default key when it fits, in `text`
/// for a [`KeyWriter`](super::KeyWriter), so a hit builds no string; else a new string.
fn key_of<'b>(
    config: &HttpConfig,
    parts: &Parts,
    buf: &'b mut [u8; KEY_BUF],
    text: &'b mut String,
) -> Cow<'b, str> {
    // Fields that rewrite the target reach the origin: they must select the entry.
    let keyed = config.target_headers == TargetHeaders::Key && has_target_rewriting(&parts.headers);
    match &config.key {
        KeyMaker::Default if !keyed => {
            if let Some(key) = default_key_in(parts, buf) {
                return Cow::Borrowed(key);
            }
        }
        KeyMaker::Writes(write) => {
            if text.capacity() > KEY_TEXT_KEPT {
                // One very long key does not stay with the service.
                *text = String::new();
            }
            text.clear();
            write(parts, text);
            if keyed {
                append_to_key(text, &parts.headers, &TARGET_REWRITING);
            }
            return Cow::Borrowed(text.as_str());
        }
        _ => {}
    }
    let mut key = config.key.make(parts);
    if keyed {
        append_to_key(&mut key, &parts.headers, &TARGET_REWRITING);
    }
    Cow::Owned(key)
}
