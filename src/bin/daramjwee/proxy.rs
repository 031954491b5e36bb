//! The origin service: a pooled hyper client that forwards a request to one upstream.
//!
//! [`Upstream`] is what the cache layer wraps. It rewrites the request for the upstream
//! (URI, `Host`, `X-Forwarded-*`, hop-by-hop headers), streams the request body through, and
//! turns every transport failure into a response (502 when the upstream cannot be reached or
//! breaks the exchange, 504 when it does not answer in time) so the proxy never drops a client
//! connection because of the upstream. It must never buffer a body and never cache anything:
//! caching decisions belong to the layer in front of it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use daramjwee::BoxError;
use http::header::{self, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use tower::Service;

use crate::access_log::UpstreamTimer;
use crate::config::SiteSettings;
use crate::forwarding::{client_host_value, Forwarding};
use crate::header_rules::{HeaderRules, RuleContext};
use crate::request_id::X_REQUEST_ID;
use crate::route::Route;
use crate::tls::{self, TlsError};
use daramjwee::http::strip_hop_by_hop;

/// The body the upstream client sends: any request body, boxed once.
pub type UpstreamReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// A response body from [`Upstream`]: the upstream's own stream (regrouped), or a short error
/// text. The stream is boxed (one allocation per upstream response): unboxed, its 120 bytes
/// would set the size of every response the cache layer answers, hits included, and be
/// copied each time a layer passes a response on.
pub type ProxyBody = Either<Pin<Box<Coalesce<Incoming>>>, Full<Bytes>>;

/// Largest chunk [`Coalesce`] builds.
const COALESCE_MAX: usize = 256 << 10;

pin_project! {
    /// The upstream body regrouped into chunks of up to 256 KiB from whatever is ready now.
    ///
    /// hyper hands a client body over in read-buffer slices (as small as 8 KiB); the cache stores
    /// the chunks it is given and every hit replays them as frames, so small chunks would cost
    /// every later hit a write per slice. Only bytes already received are grouped: a chunk is
    /// handed on as soon as the upstream has nothing more ready, so streaming latency (and a
    /// slow origin's followers) never wait for a chunk to fill.
    pub struct Coalesce<B: Body> {
        #[pin]
        inner: B,
        // The first chunk, kept uncopied until a second one arrives.
        first: Option<Bytes>,
        buf: BytesMut,
        // A frame (trailers) or error that arrived behind buffered data. Boxed: it is rare,
        // and this body is moved through every layer of a response.
        held: Option<Box<Result<Frame<Bytes>, B::Error>>>,
        inner_done: bool,
    }
}

impl<B: Body> Coalesce<B> {
    /// Wraps an upstream body.
    pub fn new(inner: B) -> Coalesce<B> {
        Coalesce {
            inner,
            first: None,
            buf: BytesMut::new(),
            held: None,
            inner_done: false,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Coalesce<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        fn take(first: &mut Option<Bytes>, buf: &mut BytesMut) -> Option<Bytes> {
            if !buf.is_empty() {
                Some(buf.split().freeze())
            } else {
                first.take()
            }
        }
        loop {
            let buffered = this.first.as_ref().map_or(0, Bytes::len) + this.buf.len();
            if buffered >= COALESCE_MAX {
                let chunk = take(this.first, this.buf);
                return Poll::Ready(chunk.map(|c| Ok(Frame::data(c))));
            }
            if buffered == 0 {
                if let Some(held) = this.held.take() {
                    return Poll::Ready(Some(*held));
                }
            }
            if *this.inner_done || this.held.is_some() {
                return Poll::Ready(take(this.first, this.buf).map(|c| Ok(Frame::data(c))));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if let Some(first) = this.first.take() {
                            this.buf.reserve(first.len() + data.len());
                            this.buf.extend_from_slice(&first);
                            this.buf.extend_from_slice(&data);
                        } else if this.buf.is_empty() {
                            *this.first = Some(data);
                        } else {
                            this.buf.extend_from_slice(&data);
                        }
                    }
                    Err(frame) => *this.held = Some(Box::new(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => *this.held = Some(Box::new(Err(e))),
                Poll::Ready(None) => *this.inner_done = true,
                Poll::Pending => {
                    return match take(this.first, this.buf) {
                        Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
                        None => Poll::Pending,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none()
            && self.buf.is_empty()
            && self.held.is_none()
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = (self.first.as_ref().map_or(0, Bytes::len) + self.buf.len()) as u64;
        if self.inner_done {
            return SizeHint::with_exact(buffered);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + buffered);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

/// What the listener knows of a request's client. It travels in the request's body
/// ([`ReqBody`](crate::server::ReqBody)), not its extensions (the first of which costs three
/// allocations), and the router binds it to the site's [`Upstream`] for the request's call.
#[derive(Clone, Debug)]
pub struct ClientConn {
    /// The client's address, for `X-Forwarded-For` and the access log.
    pub addr: SocketAddr,
    /// Whether the client connected over TLS: the upstream is told `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// Where the upstream client notes its time to a response head, for the access log.
    pub upstream: UpstreamTimer,
}

impl ClientConn {
    /// A plain-HTTP client at `addr`.
    pub fn new(addr: SocketAddr) -> ClientConn {
        ClientConn {
            addr,
            tls: false,
            upstream: UpstreamTimer::default(),
        }
    }
}

/// The origin service of one site: forwards requests to its upstream through a pooled client.
/// Cloned for every request the cache passes on, so its state sits behind one `Arc`.
///
/// A clone serves one client's request: [`Upstream::set_client_conn`] binds the client's
/// connection before the cache layer is called, and every clone the layer makes for that
/// request (its fill, a fallback, a background revalidation) sends that client's
/// `X-Forwarded-*` fields and notes its upstream time.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
    conn: Option<ClientConn>,
}

struct UpstreamInner {
    client: Client<HttpsConnector<HttpConnector>, UpstreamReqBody>,
    route: Arc<Route>,
    forwarding: Arc<Forwarding>,
    rules: HeaderRules,
    site: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("route", &self.inner.route)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client for `site`'s upstream, with its connect and response-head timeouts; over TLS
    /// (SNI from the upstream's host, HTTP/2 when the upstream offers ALPN `h2`) when the
    /// upstream is `https`.
    pub fn new(
        site: &SiteSettings,
        route: Arc<Route>,
        forwarding: Arc<Forwarding>,
    ) -> Result<Upstream, TlsError> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(site.connect_timeout));
        conn.set_nodelay(true);
        // The TLS connector below takes `https` URIs to this connector first.
        conn.enforce_http(false);
        let builder = HttpsConnectorBuilder::new();
        let builder = if site.upstream.scheme == Scheme::HTTPS {
            builder
                .with_tls_config(tls::client_config(site.ca_file.as_deref())?)
                .https_only()
        } else {
            // Never used for a handshake: an `http` site's requests all name `http` URIs.
            builder
                .with_tls_config(tls::empty_config()?)
                .https_or_http()
        };
        let https = builder.enable_all_versions().wrap_connector(conn);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Upstream {
            inner: Arc::new(UpstreamInner {
                client,
                route,
                forwarding,
                rules: site.request_rules.clone(),
                site: site.name.as_str().into(),
                timeout: site.upstream_timeout,
            }),
            conn: None,
        })
    }

    /// Binds the connection of the client this service (and the clones made from it) serves.
    pub fn set_client_conn(&mut self, conn: Option<ClientConn>) {
        self.conn = conn;
    }
}

impl<B> Service<Request<B>> for Upstream
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client is always ready: it queues on the pool, not here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let up = &self.inner;
        let conn = self.conn.as_ref();
        let timer = conn.map(|c| c.upstream.clone());
        let mut req = rewrite(&up.route, &up.forwarding, conn, req);
        if !up.rules.is_empty() {
            apply_rules(&up.rules, &up.site, conn, &mut req);
        }
        let started = Instant::now();
        let fut = up.client.request(req);
        let timeout = up.timeout;
        let authority = up.route.authority().clone();
        Box::pin(async move {
            let res = match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(res)) => res,
                Ok(Err(e)) => {
                    let what = if tls::tls_cause(&e).is_some() {
                        "TLS failed with"
                    } else if e.is_connect() {
                        "cannot connect to"
                    } else {
                        "failed talking to"
                    };
                    tracing::warn!(upstream = ?authority, error = %error_chain(&e), "{what} upstream");
                    return Ok(error_response(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "daramjwee: {what} upstream {}: {}\n",
                            show(&authority),
                            error_chain(&e)
                        ),
                    ));
                }
                Err(_) => {
                    tracing::warn!(upstream = ?authority, ?timeout, "upstream timed out");
                    return Ok(error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "daramjwee: upstream {} sent no response within {timeout:?}\n",
                            show(&authority)
                        ),
                    ));
                }
            };
            if let Some(t) = timer {
                t.set(started.elapsed());
            }
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                Either::Left(Box::pin(Coalesce::new(body))),
            ))
        })
    }
}

/// Rewrites a client request, already sanitized by [`Forwarding::sanitize`], into the
/// upstream request; `conn` is the client's connection, if known.
fn rewrite<B>(
    route: &Route,
    forwarding: &Forwarding,
    conn: Option<&ClientConn>,
    req: Request<B>,
) -> Request<UpstreamReqBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let client_host = client_host_value(&parts);
    let uri = route.upstream_url(parts.uri.path_and_query());
    parts.uri = Uri::try_from(uri).unwrap_or_else(|_| {
        // Only reachable with a path hyper already accepted; fall back to the upstream root.
        Uri::from_maybe_shared(Bytes::from(route.origin().to_owned() + "/")).unwrap_or_default()
    });
    // The upstream leg is always HTTP/1.1, whatever the client spoke.
    parts.version = Version::HTTP_11;
    // Requests the layer makes itself (fills, revalidations) carry a copy of a sanitized
    // head; stripping again is cheap and keeps this function safe on its own.
    strip_hop_by_hop(&mut parts.headers);
    let client = conn.map(|c| c.addr);
    let tls = conn.is_some_and(|c| c.tls);
    forwarding.set_upstream_headers(
        &mut parts.headers,
        client_host,
        route.authority(),
        (client, tls),
    );
    let body = body.map_err(Into::into).boxed_unsync();
    Request::from_parts(parts, body)
}

/// The site's request rules, on the request about to be sent upstream.
fn apply_rules<B>(
    rules: &HeaderRules,
    site: &str,
    conn: Option<&ClientConn>,
    req: &mut Request<B>,
) {
    let request_id = req.headers().get(X_REQUEST_ID).cloned();
    let cx = RuleContext {
        client: conn.map(|c| c.addr),
        request_id: request_id.as_ref(),
        site,
    };
    rules.apply(req.headers_mut(), &cx);
}

/// A short plain-text error that no cache stores.
pub fn error_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn show(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("?")
}

/// The error and its causes on one line: hyper-util's top-level message alone ("client
/// error (Connect)") does not say what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Settings};
    use clap::Parser;

    fn site(args: &[&str]) -> (Route, Forwarding) {
        let mut v = vec!["daramjwee"];
        v.extend_from_slice(args);
        let s = Settings::load(&Cli::parse_from(v)).unwrap();
        (Route::new(&s.sites[0]), Forwarding::new(&s.sites[0]))
    }

    #[test]
    fn request_is_rewritten_for_the_upstream() {
        let (r, f) = site(&["--upstream", "http://10.0.0.1:3000/base/"]);
        let req = Request::get("/a/b?c=1")
            .header(header::HOST, "front.example")
            .header(header::CONNECTION, "keep-alive")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let conn = ClientConn::new("127.0.0.2:5000".parse().unwrap());
        let out = rewrite(&r, &f, Some(&conn), req);
        assert_eq!(out.uri(), "http://10.0.0.1:3000/base/a/b?c=1");
        assert_eq!(out.headers()[header::HOST], "10.0.0.1:3000");
        assert_eq!(out.headers()["x-forwarded-for"], "127.0.0.2");
        assert_eq!(out.headers()["x-forwarded-proto"], "http");
        assert!(!out.headers().contains_key("x-forwarded-host"));
        assert!(!out.headers().contains_key(header::CONNECTION));
        assert_eq!(out.version(), Version::HTTP_11);
    }

    /// A body that yields `chunks`, with a pending poll after every `pending_every` chunks.
    fn chunked(
        chunks: Vec<Bytes>,
        pending_every: usize,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let mut i = 0usize;
        let mut pending = false;
        let mut chunks = std::collections::VecDeque::from(chunks);
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            if pending_every > 0 && i > 0 && i % pending_every == 0 && !pending {
                pending = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            pending = false;
            i += 1;
            Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c))))
        }))
    }

    async fn frames<B: Body<Data = Bytes>>(body: B) -> Vec<usize>
    where
        B::Error: std::fmt::Debug,
    {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                out.push(d.len());
            }
        }
        out
    }

    #[tokio::test]
    async fn coalesce_groups_ready_chunks_up_to_the_limit() {
        let chunks = vec![Bytes::from(vec![1u8; 16 << 10]); 40];
        let sizes = frames(Coalesce::new(chunked(chunks, 0))).await;
        assert_eq!(sizes, vec![256 << 10, 256 << 10, 128 << 10]);
    }

    #[tokio::test]
    async fn coalesce_hands_on_what_it_has_when_the_upstream_pauses() {
        let chunks = vec![Bytes::from(vec![1u8; 1000]); 6];
        let sizes = frames(Coalesce::new(chunked(chunks, 2))).await;
        assert_eq!(sizes, vec![2000, 2000, 2000]);
    }

    #[tokio::test]
    async fn coalesce_passes_an_error_after_the_data_before_it() {
        let stream = futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Err(std::io::Error::other("cut")),
        ]);
        let mut body = std::pin::pin!(Coalesce::new(http_body_util::StreamBody::new(stream)));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        assert!(body.frame().await.unwrap().is_err());
    }
}
