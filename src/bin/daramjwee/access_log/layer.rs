//! The tower layer that records each exchange: its future notes the response head, its body
//! counts the bytes sent and renders the line for the writer when the body is dropped (that
//! is, when the response is over, finished or not).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use daramjwee::http::CACHE_STATUS;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::writer::Sink;
use super::{Record, Text, UpstreamTimer};
use crate::server::{ReqBody, Swap, X_REQUEST_ID};

/// The access log currently in use, or none: a reload swaps it for new requests while
/// in-flight ones finish logging to the one they started with.
#[derive(Clone, Debug, Default)]
pub struct AccessLogSwitch(Swap<Option<Arc<Sink>>>);

impl AccessLogSwitch {
    /// A switch starting with `sink`.
    pub fn new(sink: Option<Sink>) -> AccessLogSwitch {
        AccessLogSwitch(Swap::new(sink.map(Arc::new)))
    }

    /// Logs new requests to `sink` (or nowhere) from now on.
    pub fn replace(&self, sink: Option<Sink>) {
        self.0.replace(sink.map(Arc::new));
    }

    fn current(&self) -> Option<Arc<Sink>> {
        self.0.get()
    }

    /// Lines the current log dropped because its writer was behind.
    pub fn dropped(&self) -> u64 {
        self.current().map_or(0, |s| s.dropped())
    }

    /// Writes out every line the current log holds, waiting up to `timeout` (see
    /// [`Sink::flush`]). True when there is no log.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        self.current().is_none_or(|s| s.flush(timeout))
    }
}

/// Logs every exchange of the service it wraps to the current [`Sink`], or passes them
/// through untouched when the log is off. One type either way: tower's `Either` would need
/// both arms to answer with the same body type.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    switch: AccessLogSwitch,
}

impl AccessLogLayer {
    /// A layer writing to whatever `switch` holds when each request arrives.
    pub fn new(switch: AccessLogSwitch) -> AccessLogLayer {
        AccessLogLayer { switch }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            switch: self.switch.clone(),
        }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    switch: AccessLogSwitch,
}

/// One thread's hold on a log. Requests served on that thread clone this `Arc`, whose count
/// only that thread writes, not the log's, which every thread shares (see `server::Swap`).
#[derive(Debug)]
struct LogHandle(Arc<Sink>);

/// What is known of an exchange before its response: everything but the outcome.
#[derive(Debug)]
struct Pending {
    sink: Arc<LogHandle>,
    started: Instant,
    record: Record,
    /// The request's timer, if the listener gave it one ([`ClientConn`]).
    timer: Option<UpstreamTimer>,
}

impl<S, ResB> Service<Request<ReqBody>> for AccessLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResB>>,
{
    type Response = Response<LoggedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let pending = self.switch.0.with(
            |log| log.clone().map(|sink| Arc::new(LogHandle(sink))),
            |handle| handle.clone().map(|handle| Pending::new(handle, &req)),
        );
        ResponseFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

impl Pending {
    /// What the request says, noted before it is handed on.
    fn new(sink: Arc<LogHandle>, req: &Request<ReqBody>) -> Box<Pending> {
        let conn = req.body().client_conn();
        // One pass over the headers instead of three lookups; the first value of each wins,
        // as `HeaderMap::get` would have it.
        let (mut request_id, mut referer, mut user_agent) = (None, None, None);
        for (name, value) in req.headers() {
            let slot = if name == header::USER_AGENT {
                &mut user_agent
            } else if name == header::REFERER {
                &mut referer
            } else if name == X_REQUEST_ID {
                &mut request_id
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(Text::new(value.as_bytes()));
            }
        }
        let record = Record {
            // Set when the record is finished, from `started` (one clock read fewer).
            start: SystemTime::UNIX_EPOCH,
            client: conn.map(|c| c.addr),
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map(|t| Text::new(t.as_str().as_bytes())),
            version: req.version(),
            status: http::StatusCode::OK,
            bytes: 0,
            duration: Default::default(),
            upstream: None,
            cache_status: None,
            request_id,
            referer,
            user_agent,
        };
        Box::new(Pending {
            sink,
            started: Instant::now(),
            record,
            timer: conn.map(|c| c.upstream.clone()),
        })
    }
}

pin_project! {
    /// The response future of [`AccessLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Boxed: the record is about 0.5 KiB, and the response (its body included) is moved
        // several times on its way out; a box costs less than those copies.
        pending: Option<Box<Pending>>,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<LoggedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let mut pending = this.pending.take();
        if let Some(p) = pending.as_mut() {
            p.record.status = res.status();
            p.record.cache_status = Text::of(res.headers().get(CACHE_STATUS));
        }
        Poll::Ready(Ok(res.map(|inner| LoggedBody { inner, pending })))
    }
}

pin_project! {
    /// A response body that counts what it sends and logs the exchange when dropped.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        // Boxed: the record is about 0.5 KiB, and the response (its body included) is moved
        // several times on its way out; a box costs less than those copies.
        pending: Option<Box<Pending>>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.finish();
            }
        }
    }
}

impl Pending {
    /// Completes the record and hands it to the writer.
    fn finish(mut self) {
        let now = Instant::now();
        self.record.duration = now.saturating_duration_since(self.started);
        self.record.start = wall_clock(self.started, now);
        self.record.upstream = self.timer.as_ref().and_then(UpstreamTimer::get);
        self.sink.0.offer(&self.record);
    }
}

/// The wall-clock time of `at`, from a pair of readings (monotonic, wall) this thread takes
/// at most once a second: a record needs one monotonic reading at each end, and no wall-clock
/// reading of its own. `now` is a monotonic reading just taken, at or after `at`.
fn wall_clock(at: Instant, now: Instant) -> SystemTime {
    thread_local! {
        static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    const REFRESH: Duration = Duration::from_secs(1);
    let (mono, wall) = ANCHOR
        .try_with(|a| match a.get() {
            Some(pair) if now.saturating_duration_since(pair.0) < REFRESH => pair,
            _ => {
                let pair = (now, SystemTime::now());
                a.set(Some(pair));
                pair
            }
        })
        .unwrap_or_else(|_| (now, SystemTime::now()));
    let at = match at.checked_duration_since(mono) {
        Some(after) => wall.checked_add(after),
        None => wall.checked_sub(mono.saturating_duration_since(at)),
    };
    at.unwrap_or(wall)
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(f)), Some(p)) = (&frame, this.pending.as_mut()) {
            if let Some(data) = f.data_ref() {
                p.record.bytes += data.remaining() as u64;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
