//! Sites, the request router, and the proxy listener with graceful shutdown.
//!
//! Each site owns a [`Cache`] and an [`Upstream`]; the caches' background work runs on one
//! [`WorkerRuntime`], each site a group of it with its own weight and queue. The router picks a site per request (by
//! `Host`, then by the longest path prefix) and calls the site's cache service. The listener
//! speaks HTTP/1.1 and h2c (prior knowledge) on one port, and on shutdown stops accepting, lets
//! in-flight exchanges finish within a bound, and then returns. Nothing here parses cache
//! headers: that is the layer's job.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use daramjwee::eviction::PolicyKind;
use daramjwee::http::{CacheBody, CacheLayer, CacheService, TargetHeaders};
use daramjwee::store::{FileStore, MemStore, Store};
use daramjwee::StoreError;
use daramjwee::{Cache, WorkerRuntime};
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::util::MapResponse;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::classify::{NeverClassifyEos, ServerErrorsFailureClass};
use tower_http::trace::{ResponseBody, TraceLayer};

use crate::access_log::{AccessLogLayer, AccessLogSwitch};
use crate::config::{SiteSettings, TierSpec};
use crate::forwarding::{client_authority, Forwarding};
use crate::header_rules::RuleContext;
use crate::proxy::{ClientConn, ProxyBody, Upstream};
use crate::request_id::{RequestIdLayer, RequestIds, X_REQUEST_ID};
use crate::route::Route;
use crate::swap::Swap;
use crate::tls::TlsError;
use tokio_rustls::TlsAcceptor;

mod purger;
pub use purger::Purger;

pin_project_lite::pin_project! {
    /// The request body every service in the proxy sees: the client's body and connection, or
    /// none. It must implement `Default` because the cache layer sends fills with an empty
    /// body. An enum rather than a boxed body, so a request costs no allocation for it.
    ///
    /// The client's connection travels here rather than in the request's extensions: the
    /// first extension costs a request three allocations (the map, its table, the boxed
    /// value) and as many frees, about 900 instructions of a 1 KiB hit's 24,000 (callgrind
    /// over the `hit_allocs` harness), while a hit needs the connection only in the proxy's
    /// own layers. The router hands it to the upstream service ([`ThreadSites::route`]).
    #[project = ReqBodyProj]
    #[derive(Debug, Default)]
    pub enum ReqBody {
        /// The body the client sent, and its connection (taken by the router).
        Client {
            #[pin] body: Incoming,
            conn: Option<ClientConn>,
        },
        /// No body (a request the cache layer makes itself).
        #[default]
        Empty,
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ReqBodyProj::Client { body, .. } => body.poll_frame(cx),
            ReqBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Client { body, .. } => body.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Client { body, .. } => body.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

impl ReqBody {
    /// The client's connection, until the router takes it.
    pub fn client_conn(&self) -> Option<&ClientConn> {
        match self {
            ReqBody::Client { conn, .. } => conn.as_ref(),
            ReqBody::Empty => None,
        }
    }

    fn take_client_conn(&mut self) -> Option<ClientConn> {
        match self {
            ReqBody::Client { conn, .. } => conn.take(),
            ReqBody::Empty => None,
        }
    }
}

/// The response body of the router: a site's response, or the router's own short text.
pub type RouterBody = Either<CacheBody<ProxyBody>, Full<Bytes>>;

/// One site: its settings, cache, rewrite rules, and the cache service in front of its upstream.
pub struct Site {
    /// Validated settings.
    pub settings: SiteSettings,
    /// The site's cache (also reached by the admin endpoints).
    pub cache: Cache,
    /// How the admin endpoints purge it: locally, or through the shared bucket.
    pub purger: Purger,
    route: Arc<Route>,
    forwarding: Arc<Forwarding>,
    svc: CacheService<Upstream>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.settings.name)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// Opens the site's tiers and builds its service; its background work is a group of
    /// `workers` with the site's weight and queue.
    pub async fn open(settings: SiteSettings, workers: &WorkerRuntime) -> Result<Site, SiteError> {
        let (cache, purger) = open_cache(&settings, workers).await?;
        Site::with_cache(settings, cache, purger)
    }

    /// The site's service around an existing cache (a reload that kept the site's tiers).
    pub fn with_cache(
        settings: SiteSettings,
        cache: Cache,
        purger: Purger,
    ) -> Result<Site, SiteError> {
        let route = Arc::new(Route::new(&settings));
        let forwarding = Arc::new(Forwarding::new(&settings));
        let (key_route, key_fwd) = (route.clone(), forwarding.clone());
        let layer = CacheLayer::builder(cache.clone())
            .policy(settings.mode.clone())
            .key_writer(move |parts, key| key_fwd.write_key(&key_route, parts, key))
            // The router sanitizes every request before the layer sees it
            // (`Forwarding::sanitize`) and `Forwarding::write_key` keys what it lets through, so
            // the layer must neither key these fields a second time nor strip what the site
            // opted to forward. Written into the service's buffer: a hit allocates no key.
            .target_headers(TargetHeaders::Forward)
            .targeted_cache_control(settings.targeted.iter().map(|n| n.as_str()))
            .strip_targeted_fields(settings.strip_targeted)
            .build();
        let upstream =
            Upstream::new(&settings, route.clone(), forwarding.clone()).map_err(|source| {
                SiteError::Tls {
                    upstream: settings.upstream.to_string(),
                    source,
                }
            })?;
        let svc = layer.layer(upstream);
        Ok(Site {
            settings,
            cache,
            purger,
            route,
            forwarding,
            svc,
        })
    }

    /// The cache key of a request to this site (what `/purge?path=` deletes), after the
    /// fields the site does not forward are removed, as for a proxied request.
    pub fn key_for(&self, parts: &mut Parts) -> String {
        self.forwarding.sanitize(&mut parts.headers);
        self.forwarding.key(&self.route, parts)
    }
}

/// Why a site could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file tier's directory could not be opened.
    #[error("cannot open file tier {}: {source}", dir.display())]
    FileTier {
        /// The directory.
        dir: std::path::PathBuf,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// An object store tier could not be built.
    #[cfg(feature = "object-store")]
    #[error("cannot open object store tier {url}: {source}")]
    ObjectTier {
        /// The store's URL.
        url: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The shared purge log of an object store tier could not be started.
    #[cfg(feature = "object-store")]
    #[error("cannot start the purge log of {url}: {source}")]
    PurgeLog {
        /// The store's URL.
        url: String,
        /// The log's error (boxed: it is large, and start-up errors are rare).
        #[source]
        source: Box<daramjwee::store::PurgeError>,
    },
    /// The build has no object store support (the configuration check refuses this first).
    #[cfg(not(feature = "object-store"))]
    #[error("object store tier {url}: not compiled into this build")]
    NoObjectStore {
        /// The store's URL.
        url: String,
    },
    /// The upstream's TLS client could not be built.
    #[error("upstream {upstream}: {source}")]
    Tls {
        /// The upstream.
        upstream: String,
        /// What failed.
        #[source]
        source: TlsError,
    },
}

/// Opens one tier. `max_object`: the largest object it keeps; unset, a memory tier keeps a
/// sixteenth of its size (the store's default) and a file tier half, so it always has room for
/// two of its largest objects.
async fn open_tier(
    spec: &TierSpec,
    policy: &PolicyKind,
    max_object: Option<u64>,
) -> Result<Arc<dyn Store>, SiteError> {
    Ok(match spec {
        TierSpec::Memory(bytes) => Arc::new(
            MemStore::builder()
                .capacity(*bytes)
                .max_object_size(max_object.unwrap_or(*bytes / 16))
                .policy(policy.clone())
                .build(),
        ),
        TierSpec::File(dir, bytes) => Arc::new(
            FileStore::builder(dir.clone())
                .capacity(*bytes)
                .max_object_size(max_object.unwrap_or(*bytes / 2))
                .policy(policy.clone())
                .open()
                .await
                .map_err(|source| SiteError::FileTier {
                    dir: dir.clone(),
                    source,
                })?,
        ),
        #[cfg(feature = "object-store")]
        TierSpec::Object(url) => Arc::new(open_bucket(url)?),
        #[cfg(not(feature = "object-store"))]
        TierSpec::Object(url) => return Err(SiteError::NoObjectStore { url: url.clone() }),
    })
}

/// Whether two settings of a site build the same cache (tiers, eviction, coalescing, its
/// share of the background runtime): then a reload keeps the cache and its contents.
pub fn same_cache(a: &SiteSettings, b: &SiteSettings) -> bool {
    (a.hot == b.hot && a.cold == b.cold && a.eviction.name() == b.eviction.name())
        && a.placement == b.placement
        && (a.weight, a.queue, a.idle_timeout) == (b.weight, b.queue, b.idle_timeout)
        && (a.lock_age, a.lock_wait) == (b.lock_age, b.lock_wait)
        && (a.stream_window, a.follower_retain) == (b.stream_window, b.follower_retain)
}

/// Opens a site's tiers and builds its cache, a weighted group of `workers`.
async fn open_cache(
    settings: &SiteSettings,
    workers: &WorkerRuntime,
) -> Result<(Cache, Purger), SiteError> {
    let mut builder = Cache::builder()
        .name(settings.name.clone())
        .worker_pool(workers.group(settings.weight, settings.queue))
        .idle_timeout(settings.idle_timeout)
        .cold_fill(settings.placement.cold_fill);
    if let Some(age) = settings.lock_age {
        builder = builder.lock_age(age);
    }
    if let Some(wait) = settings.lock_wait {
        builder = builder.lock_wait(wait);
    }
    if let Some(window) = settings.stream_window {
        builder = builder.stream_window(window);
    }
    if let Some(retain) = settings.follower_retain {
        builder = builder.follower_retain(retain);
    }
    let placement = &settings.placement;
    let hot = open_tier(&settings.hot, &settings.eviction, placement.hot_max_object).await?;
    builder = builder.tier(hot, None);
    #[cfg(feature = "object-store")]
    if let Some(TierSpec::Object(url)) = &settings.cold {
        // A shared bucket: purges go through its log, so they reach every instance.
        let bucket = open_bucket(url)?;
        let cache = builder.tier(Arc::new(bucket.clone()), None).build();
        let purger = Purger::shared(cache.clone(), bucket)
            .await
            .map_err(|source| SiteError::PurgeLog {
                url: url.clone(),
                source: Box::new(source),
            })?;
        return Ok((cache, purger));
    }
    if let Some(cold) = &settings.cold {
        let max_object = placement.cold_max_object;
        builder = builder.tier(open_tier(cold, &settings.eviction, max_object).await?, None);
    }
    let cache = builder.build();
    Ok((cache.clone(), Purger::local(cache)))
}

#[cfg(feature = "object-store")]
fn open_bucket(url: &str) -> Result<daramjwee::store::BucketStore, SiteError> {
    daramjwee::store::BucketStore::from_url(url)
        .and_then(|b| b.build())
        .map_err(|source| SiteError::ObjectTier {
            url: url.to_owned(),
            source,
        })
}

/// The sites of one configuration, in the order written.
pub type Sites = Arc<[Arc<Site>]>;

/// Picks a site per request and calls it. Its sites can be replaced while it serves (a
/// reload): each request routes on the set current when it arrives and keeps its site until
/// it is done.
#[derive(Clone, Debug)]
pub struct Router {
    /// Read through each thread's copy, so a request reads the sites without writing a line
    /// another core reads (`swap`).
    sites: Swap<Sites>,
}

impl Router {
    /// A router over `sites` (at least one).
    pub fn new(sites: Vec<Arc<Site>>) -> Router {
        Router {
            sites: Swap::new(sites.into()),
        }
    }

    /// The current sites, in configuration order.
    pub fn sites(&self) -> Sites {
        self.sites.get()
    }

    /// Routes new requests to `sites` from now on (in every clone of this router); returns
    /// the sites it replaced.
    pub fn replace(&self, sites: Vec<Arc<Site>>) -> Sites {
        self.sites.replace(sites.into())
    }

    /// The site a request goes to (see [`pick_site`]).
    pub fn pick(&self, parts: &Parts) -> Option<Arc<Site>> {
        let sites = self.sites();
        pick_site(&sites, &parts.uri, &parts.headers).map(|at| sites[at].clone())
    }
}

/// The site a request goes to: among the sites whose host (if any) and prefix match, one with
/// a host beats one without, then the longest prefix wins. Its place in `sites`.
fn pick_site(sites: &Sites, uri: &http::Uri, headers: &http::HeaderMap) -> Option<usize> {
    // Read only when some site names a host: most configurations name none.
    let host = std::cell::OnceCell::new();
    let path = uri.path();
    sites
        .iter()
        .enumerate()
        .filter(|(_, s)| match &s.settings.host {
            // Configured hosts are lower-case (see `config`).
            Some(h) => host
                .get_or_init(|| request_host(uri, headers))
                .is_some_and(|r| r.eq_ignore_ascii_case(h)),
            None => true,
        })
        .filter(|(_, s)| prefix_matches(&s.settings.prefix, path))
        .max_by_key(|(_, s)| (s.settings.host.is_some(), s.settings.prefix.len()))
        .map(|(at, _)| at)
}

/// The request's host without a port, as sent (compare it ignoring ASCII case): the one
/// [`client_authority`] reads for keying and forwarding too. Borrowed, so routing allocates
/// nothing.
fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    let raw = client_authority(uri, headers)?;
    Some(match raw.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(ip, _)| ip),
        None => raw.split_once(':').map_or(raw, |(host, _)| host),
    })
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl Service<Request<ReqBody>> for Router {
    type Response = Response<RouterBody>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call asks its site's service for readiness itself (`ThreadSites::route`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut req = Some(req);
        self.sites
            .with(ThreadSites::new, |here| here.route(&mut req))
    }
}

/// One thread's copy of the current sites, with its own clone of each site's cache service:
/// a request calls that clone in place, instead of cloning the service (every reference count
/// in it, the upstream's, the cache's) into a `Oneshot` and dropping it afterwards. Made again
/// by the thread's first request after a reload ([`Swap::with`]).
struct ThreadSites {
    sites: Sites,
    services: std::cell::RefCell<Vec<CacheService<Upstream>>>,
}

impl ThreadSites {
    fn new(sites: &Sites) -> ThreadSites {
        ThreadSites {
            sites: sites.clone(),
            services: std::cell::RefCell::new(sites.iter().map(|s| s.svc.clone()).collect()),
        }
    }

    /// Routes the request in `slot` (always `Some`): an `Option` so the closure of
    /// [`Swap::with`] captures a reference to it, not the request itself, which `with` would
    /// move twice more (about 160 instructions of `memcpy` per request, callgrind).
    fn route(&self, slot: &mut Option<Request<ReqBody>>) -> RouterFuture {
        // Decided on the request whole: taking it apart and putting it together again would
        // copy it twice (about 300 bytes each time).
        let Some(mut req) = slot.take() else {
            return RouterFuture::NotFound;
        };
        let Some(at) = pick_site(&self.sites, req.uri(), req.headers()) else {
            return RouterFuture::NotFound;
        };
        let site = &self.sites[at];
        // Before the cache layer: what the site does not forward must not reach the key, the
        // stored request head, or the upstream.
        site.forwarding.sanitize(req.headers_mut());
        let conn = req.body_mut().take_client_conn();
        let respond = (!site.settings.response_rules.is_empty()).then(|| {
            Box::new(Respond {
                site: site.clone(),
                client: conn.as_ref().map(|c| c.addr),
                request_id: req.headers().get(X_REQUEST_ID).cloned(),
            })
        });
        // Bound for this call only: the cache layer calls the upstream through a clone of it
        // (a fill, a fallback, a background revalidation), which keeps the connection; a hit
        // makes no clone.
        let call = match self.services.try_borrow_mut() {
            Ok(mut services) => {
                let svc = &mut services[at];
                svc.get_mut().set_client_conn(conn);
                let call = call_when_ready(svc, req);
                svc.get_mut().set_client_conn(None);
                call
            }
            // Only from a call made inside another (never done here): a clone of its own.
            Err(_) => {
                let mut svc = site.svc.clone();
                svc.get_mut().set_client_conn(conn);
                call_when_ready(&mut svc, req)
            }
        };
        RouterFuture::Site { call, respond }
    }
}

/// The future of [`call_when_ready`]: the service's own, or a clone's that waits for
/// readiness first. The clone's is boxed: it holds the service and the request, and the
/// proxy's own stack never makes it, so unboxed it would only make every request's future
/// larger, and each move of it longer (the router's future: 464 bytes unboxed, 240 with this
/// and its response rules boxed).
type ReadyCall<S, R> =
    futures_util::future::Either<<S as Service<R>>::Future, Pin<Box<Oneshot<S, R>>>>;

/// Calls `svc` in place when it is ready now (every service of the proxy's stack always is:
/// each layer passes its inner service's readiness, and the router and the cache service are
/// always ready); otherwise a clone waits for readiness on its own, as tower's contract asks.
/// Readiness is asked with a waker nothing wakes.
fn call_when_ready<S, R>(svc: &mut S, req: R) -> ReadyCall<S, R>
where
    S: Service<R> + Clone,
{
    use futures_util::future::Either as E;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => E::Left(svc.call(req)),
        _ => E::Right(Box::pin(svc.clone().oneshot(req))),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Router`]: a site's call, or the router's own 404. Not boxed,
    /// so routing a request allocates nothing.
    #[project = RouterFutureProj]
    pub enum RouterFuture {
        /// A site's cache service, called once; its response rules, if it has any (boxed:
        /// most sites have none, and every move of the future would copy the room for them).
        Site {
            #[pin] call: ReadyCall<CacheService<Upstream>, Request<ReqBody>>,
            respond: Option<Box<Respond>>,
        },
        /// No site matches the request.
        NotFound,
    }
}

impl Future for RouterFuture {
    type Output = Result<Response<RouterBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouterFutureProj::Site { call, respond } => {
                let mut res = std::task::ready!(call.poll(cx))?;
                if let Some(r) = respond.take() {
                    r.apply(res.headers_mut());
                }
                Poll::Ready(Ok(res.map(Either::Left)))
            }
            RouterFutureProj::NotFound => {
                let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(
                    b"daramjwee: no site is configured for this host and path\n",
                ))));
                *res.status_mut() = StatusCode::NOT_FOUND;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Poll::Ready(Ok(res))
            }
        }
    }
}

/// What a site's response rules may name, captured from the request (only for a site that
/// has such rules).
#[derive(Debug)]
pub struct Respond {
    site: Arc<Site>,
    client: Option<std::net::SocketAddr>,
    request_id: Option<HeaderValue>,
}

impl Respond {
    fn apply(self, headers: &mut http::HeaderMap) {
        let cx = RuleContext {
            client: self.client,
            request_id: self.request_id.as_ref(),
            site: &self.site.settings.name,
        };
        self.site.settings.response_rules.apply(headers, &cx);
    }
}

/// How [`serve`] runs the listener.
pub struct ServeOptions {
    /// How long in-flight exchanges may take to finish after shutdown begins.
    pub drain: Duration,
    /// Whether each request gets an `x-request-id` (the client's, or a new one), forwarded
    /// upstream and returned on the response.
    pub request_ids: bool,
    /// Where each exchange is logged, if anywhere (swappable by a reload).
    pub access_log: AccessLogSwitch,
    /// TLS on the listener (HTTPS with ALPN `h2` and `http/1.1`), or plain HTTP and h2c. Its
    /// certificate comes from a [`CertResolver`](crate::tls::CertResolver) a reload swaps.
    pub tls: Option<TlsAcceptor>,
    /// Whether each request runs through tower-http's `Trace` (a span, and events at `debug`).
    /// `main` sets it when the log filter lets `tower_http` debug events through
    /// (`RUST_LOG=tower_http=debug`): otherwise the layer costs a hit three clock reads and a
    /// span nothing records (1,284 of its 27,142 instructions, callgrind over the `hit_allocs`
    /// harness; 3% of its CPU), and its one event at the default level, an error line for
    /// every 5xx, repeats what the access log and the upstream's own warnings say.
    pub trace_requests: bool,
}

/// One connection's copy of the service stack, called in place. hyper calls a connection's
/// service through `&self`; the usual bridge clones the whole stack for every request, which
/// writes every shared reference count in it (the sites, the access log, the request ids) from
/// whichever core serves the request. The lock is the connection's own: on HTTP/1 it is never
/// contended, on h2 only by the connection's own streams, and it is held only while `call`
/// builds the response future.
struct ConnService<S> {
    state: parking_lot::Mutex<ConnState<S>>,
}

/// What a [`ConnService`] keeps under its lock.
struct ConnState<S> {
    /// The connection's own clone of the layer stack.
    svc: S,
    /// What each request's [`ClientConn`] says; its timer is reused while no earlier request
    /// still holds it (on HTTP/1, always), so a request allocates no timer of its own.
    conn: ClientConn,
}

impl<S> ConnService<S> {
    fn new(svc: S, peer: std::net::SocketAddr, tls: bool) -> ConnService<S> {
        let mut conn = ClientConn::new(peer);
        conn.tls = tls;
        ConnService {
            state: parking_lot::Mutex::new(ConnState { svc, conn }),
        }
    }

    /// Calls the stack with `req` and the connection's [`ClientConn`], in place when it is
    /// ready ([`call_when_ready`]).
    fn call(&self, req: Request<Incoming>) -> ReadyCall<S, Request<ReqBody>>
    where
        S: Service<Request<ReqBody>, Error = Infallible> + Clone,
    {
        let mut state = self.state.lock();
        let ConnState { svc, conn } = &mut *state;
        conn.upstream.reuse();
        let req = req.map(|body| ReqBody::Client {
            body,
            conn: Some(conn.clone()),
        });
        call_when_ready(svc, req)
    }
}

/// A response body that went through tower-http's `Trace`.
type TracedBody = ResponseBody<RouterBody, NeverClassifyEos<ServerErrorsFailureClass>>;

/// The one response body type of [`routes`], traced or not.
type RoutesBody = Either<TracedBody, RouterBody>;

/// `router`, behind tower-http's `Trace` when `traced` (see [`ServeOptions::trace_requests`]),
/// with one response body type either way (the body maps are closures, called directly, not
/// through function pointers).
fn routes(
    router: Router,
    traced: bool,
) -> impl Service<
    Request<ReqBody>,
    Response = Response<RoutesBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    if traced {
        let traced = TraceLayer::new_for_http().layer(router);
        tower::util::Either::Left(MapResponse::new(traced, |r: Response<TracedBody>| {
            r.map(Either::Left)
        }))
    } else {
        tower::util::Either::Right(MapResponse::new(router, |r: Response<RouterBody>| {
            r.map(Either::Right)
        }))
    }
}

/// How long a client may take to finish the TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the proxy on `listener` until `shutdown` resolves, then waits up to `opts.drain`
/// for in-flight exchanges. Returns how many connections were still open when it gave up.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    opts: ServeOptions,
) -> usize {
    let ServeOptions {
        drain,
        request_ids,
        access_log,
        tls,
        trace_requests,
    } = opts;
    let stack = ServiceBuilder::new()
        // First: the id is logged, and the response gets it whatever happens below.
        .option_layer(request_ids.then(|| RequestIdLayer::new(RequestIds::new())))
        // Before the rest: the time logged includes them.
        .layer(AccessLogLayer::new(access_log))
        .service(routes(router, trace_requests));
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = accept(&listener, shutdown.as_mut()).await {
        let stack = ConnService::new(stack.clone(), peer, tls.is_some());
        let hsvc = hyper::service::service_fn(move |req: Request<Incoming>| stack.call(req));
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let Some(acceptor) = tls.clone() else {
            tokio::spawn(async move {
                let conn = builder.serve_connection(TokioIo::new(stream), hsvc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's task, bounded, so a slow client never
        // holds up the accept loop.
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            let conn = builder.serve_connection(TokioIo::new(stream), hsvc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open, ?drain, "stopped accepting; draining connections");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open.max(1),
    }
}

/// The next connection, with `TCP_NODELAY` set, or `None` once `shutdown` resolves (checked
/// first). A failed accept (out of file descriptors and the like) is logged, and the next is
/// tried after a pause instead of spinning.
async fn accept(
    listener: &TcpListener,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
