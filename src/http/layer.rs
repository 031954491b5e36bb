//! [`CacheLayer`]: puts a [`Cache`] in front of any tower service.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use super::config::HttpConfig;
use super::headers::TargetHeaders;
use super::key::KeyMaker;
use super::policy::{PolicyMode, Targeted};
use super::service::CacheService;
use crate::cache::Cache;

/// The default of [`CacheLayerBuilder::origin_timeout`].
const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A tower [`Layer`] that caches the responses of the service it wraps.
///
/// Every service built from one layer (and from its clones) shares one [`Cache`]: state is
/// never silently duplicated.
///
/// ```
/// use axum::{routing::get, Router};
/// use daramjwee::{http::CacheLayer, Cache};
///
/// let cache = Cache::builder().build();
/// let app: Router = Router::new()
///     .route("/report", get(|| async { "expensive" }))
///     .layer(CacheLayer::new(cache));
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    cache: Cache,
    config: Arc<HttpConfig>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.cache)
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A layer with the default settings: shared-cache rules, the default key, `Cache-Status`
    /// headers on.
    pub fn new(cache: Cache) -> Self {
        CacheLayer::builder(cache).build()
    }

    /// Starts configuring a layer.
    pub fn builder(cache: Cache) -> CacheLayerBuilder {
        CacheLayerBuilder {
            cache,
            key: KeyMaker::Default,
            mode: PolicyMode::default(),
            cache_status: true,
            share_set_cookie: false,
            target_headers: TargetHeaders::default(),
            origin_timeout: DEFAULT_ORIGIN_TIMEOUT,
            targeted: Targeted::default(),
        }
    }

    /// The cache behind this layer.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Wraps `inner` (the same as [`Layer::layer`], callable without importing the trait).
    pub fn layer_service<S>(&self, inner: S) -> CacheService<S> {
        self.layer(inner)
    }

    /// A control handle (stats, purge, clear) for the cache behind this layer.
    pub fn handle(&self) -> super::CacheHandle {
        super::CacheHandle::new(self.cache.clone(), self.config.clone())
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService::from_parts(inner, self.cache.clone(), self.config.clone())
    }
}

/// Configures a [`CacheLayer`].
#[must_use]
pub struct CacheLayerBuilder {
    cache: Cache,
    key: KeyMaker,
    mode: PolicyMode,
    cache_status: bool,
    share_set_cookie: bool,
    target_headers: TargetHeaders,
    origin_timeout: Duration,
    targeted: Targeted,
}

impl std::fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl CacheLayerBuilder {
    /// Sets the key function (default [`default_key`](super::default_key)). It must put
    /// everything that selects a response into the key.
    pub fn key_fn(mut self, f: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.key = KeyMaker::Returns(Arc::new(f));
        self
    }

    /// Sets a key function that writes the key into the buffer it is given (empty), in place
    /// of [`key_fn`](Self::key_fn)'s new string per request: each service keeps its buffer, so
    /// a hit makes its key without an allocation. The same rules as for `key_fn` apply.
    ///
    /// ```
    /// use daramjwee::{http::CacheLayer, Cache};
    ///
    /// // One entry per path, whatever the host (a single-site origin).
    /// let layer = CacheLayer::builder(Cache::builder().build())
    ///     .key_writer(|parts, key| {
    ///         key.push_str(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));
    ///     })
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn key_writer(mut self, f: impl Fn(&Parts, &mut String) + Send + Sync + 'static) -> Self {
        self.key = KeyMaker::Writes(Arc::new(f));
        self
    }

    /// Sets the caching rules (default [`PolicyMode::Shared`]).
    pub fn policy(mut self, mode: PolicyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether responses carry a `Cache-Status` header (default true).
    pub fn cache_status_header(mut self, on: bool) -> Self {
        self.cache_status = on;
        self
    }

    /// Whether a shared cache may store responses that carry `Set-Cookie` and replay the
    /// cookie to other clients, as RFC 9111 allows (default **false**: such responses are
    /// passed through unstored). Turn it on only for origins that mark per-user responses
    /// `private` or `no-cache="Set-Cookie"`. Private mode always stores them.
    pub fn share_set_cookie(mut self, on: bool) -> Self {
        self.share_set_cookie = on;
        self
    }

    /// What to do with request fields that rewrite the target, host, scheme or method
    /// ([`TARGET_REWRITING`](super::TARGET_REWRITING)); default [`TargetHeaders::Key`].
    pub fn target_headers(mut self, what: TargetHeaders) -> Self {
        self.target_headers = what;
        self
    }

    /// The longest any call into the origin may take to answer with a response head (default
    /// 30 s). Past it the request is answered `504 Gateway Timeout` (or with a stale entry
    /// where `stale-if-error` allows), and followers of the fill share that answer.
    pub fn origin_timeout(mut self, timeout: Duration) -> Self {
        self.origin_timeout = timeout;
        self
    }

    /// Honours targeted cache-control fields (RFC 9213) such as `CDN-Cache-Control`, in
    /// [`PolicyMode::Shared`] only (default: none).
    ///
    /// `names` is the target list, most specific first. For each response, the first listed
    /// field that is present and a valid Structured Field Dictionary decides whether the
    /// response is stored and how long it stays fresh, and `Cache-Control` and `Expires` are
    /// then ignored for those decisions (they are still stored and sent to clients). A field
    /// that does not parse is ignored, as if absent. Names that are not valid field names
    /// can never match a response and are dropped with a warning. The other modes ignore
    /// targeted fields and pass them through.
    ///
    /// ```
    /// use daramjwee::{http::CacheLayer, Cache};
    ///
    /// let layer = CacheLayer::builder(Cache::builder().build())
    ///     .targeted_cache_control(["daramjwee-cache-control", "cdn-cache-control"])
    ///     .strip_targeted_fields(true)
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn targeted_cache_control(
        mut self,
        names: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        self.targeted.names = names
            .into_iter()
            .filter_map(|n| {
                let n = n.as_ref();
                let parsed = http::HeaderName::from_bytes(n.trim().as_bytes());
                if parsed.is_err() {
                    tracing::warn!(name = n, "not a field name; targeted field ignored");
                }
                parsed.ok()
            })
            .collect();
        self
    }

    /// Whether the fields of the [`targeted_cache_control`](Self::targeted_cache_control)
    /// list are removed from every response the layer sends (default false: RFC 9213 lets
    /// them travel on to caches further down). They are removed when a response is sent, not
    /// when it is stored: stored entries keep them, so the field that decided an entry's
    /// freshness also decides its revalidation, and turning this on or off needs no purge.
    /// Requests the layer bypasses (unsafe methods, `no-store` requests) are passed through
    /// untouched. Has no effect outside [`PolicyMode::Shared`].
    pub fn strip_targeted_fields(mut self, on: bool) -> Self {
        self.targeted.strip = on;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> CacheLayer {
        CacheLayer {
            cache: self.cache,
            config: Arc::new(HttpConfig {
                key: self.key,
                mode: self.mode,
                cache_status: self.cache_status,
                share_set_cookie: self.share_set_cookie,
                target_headers: self.target_headers,
                origin_timeout: self.origin_timeout,
                targeted: self.targeted,
            }),
        }
    }
}
