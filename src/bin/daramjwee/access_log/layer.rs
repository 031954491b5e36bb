//! The tower layer that records each exchange: the request's fields are rendered into a
//! draft of the line when it arrives, its future adds the response head's, its body counts
//! the bytes sent and finishes the line for the writer when the body is dropped (that is,
//! when the response is over, finished or not).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use daramjwee::http::CACHE_STATUS;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::format::{Draft, End, RequestFields};
use super::writer::Sink;
use super::{Format, UpstreamTimer};
use crate::proxy::ClientConn;
use crate::request_id::X_REQUEST_ID;
use crate::server::ReqBody;
use crate::swap::Swap;

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
/// only that thread writes, not the log's, which every thread shares (see `swap::Swap`).
#[derive(Debug)]
struct LogHandle(Arc<Sink>);

/// What is known of an exchange before it is over: the line's draft and the counts.
#[derive(Debug)]
struct Pending {
    /// None only while the box waits for reuse ([`Pending::recycle`]).
    sink: Option<Arc<LogHandle>>,
    /// The sink's format, which the draft is rendered in.
    format: Format,
    started: Instant,
    /// The request's timer, if the listener gave it one ([`ClientConn`]).
    timer: Option<UpstreamTimer>,
    status: StatusCode,
    /// Body bytes sent so far.
    bytes: u64,
    /// The request's fields and the response's `Cache-Status`, rendered.
    draft: Draft,
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
    /// What the request says, rendered before it is handed on.
    fn new(sink: Arc<LogHandle>, req: &Request<ReqBody>) -> Box<Pending> {
        let conn = req.body().client_conn();
        let format = sink.0.format();
        let (sink, timer) = (Some(sink), conn.map(|c| c.upstream.clone()));
        let (started, status) = (Instant::now(), StatusCode::OK);
        let mut pending = match Pending::reused() {
            Some(mut p) => {
                (p.sink, p.format, p.started, p.timer) = (sink, format, started, timer);
                (p.status, p.bytes) = (status, 0);
                p
            }
            None => Box::new(Pending {
                sink,
                format,
                started,
                timer,
                status,
                bytes: 0,
                draft: Draft::new(),
            }),
        };
        // Rendered in the box, not moved into it.
        pending.draft.request(format, &request_fields(req, conn));
        pending
    }

    /// This thread's spare box, if it has one: the last one a finished line left.
    fn reused() -> Option<Box<Pending>> {
        SPARE.try_with(Cell::take).ok().flatten()
    }

    /// Keeps this (finished) box as this thread's spare, for the next request's record: a
    /// freed and allocated box cost more than the rest of its line's bookkeeping (malloc's
    /// slow path for half a kilobyte). One spare at most: they are taken one by one.
    fn recycle(mut self: Box<Pending>) {
        self.sink = None;
        self.timer = None;
        // Dropped here if the thread is going away, or had one already (a line's value
        // longer than the draft keeps inline is freed now too: no spare holds a large one).
        self.draft.clear();
        let _ = SPARE.try_with(|spare| spare.set(Some(self)));
    }
}

thread_local! {
    /// See [`Pending::recycle`].
    static SPARE: Cell<Option<Box<Pending>>> = const { Cell::new(None) };
}

/// What the log takes from the request.
fn request_fields<'a, B>(req: &'a Request<B>, conn: Option<&ClientConn>) -> RequestFields<'a> {
    // One pass over the headers instead of three lookups; the first value of each wins, as
    // `HeaderMap::get` would have it.
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
            *slot = Some(value.as_bytes());
        }
    }
    RequestFields {
        client: conn.map(|c| c.addr),
        method: req.method(),
        target: req.uri().path_and_query().map(|t| t.as_str().as_bytes()),
        version: req.version(),
        request_id,
        referer,
        user_agent,
    }
}

pin_project! {
    /// The response future of [`AccessLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Boxed: the draft is about 0.5 KiB, and the response (its body included) is moved
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
            p.status = res.status();
            // `get`, not a scan of the response's headers: the scan cost more (measured).
            let cache_status = res.headers().get(CACHE_STATUS).map(HeaderValue::as_bytes);
            p.draft.cache_status(p.format, cache_status);
        }
        Poll::Ready(Ok(res.map(|inner| LoggedBody { inner, pending })))
    }
}

pin_project! {
    /// A response body that counts what it sends and logs the exchange when dropped.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        // Boxed: the draft is about 0.5 KiB, and the response (its body included) is moved
        // several times on its way out; a box costs less than those copies.
        pending: Option<Box<Pending>>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.finish();
                p.recycle();
            }
        }
    }
}

impl Pending {
    /// Completes the line and hands it to the writer. By reference: moving the draft out of
    /// its box would copy it.
    fn finish(&self) {
        let now = Instant::now();
        let duration = now.saturating_duration_since(self.started);
        let end = End {
            start: wall_clock(now, duration),
            status: self.status,
            bytes: self.bytes,
            duration,
            upstream: self.timer.as_ref().and_then(UpstreamTimer::get),
        };
        if let Some(sink) = &self.sink {
            sink.0.log(&self.draft, &end);
        }
    }
}

/// The wall-clock time `ago` before `now` (a monotonic reading just taken), from a pair of
/// readings (monotonic, wall) this thread takes at most once a second: a record needs one
/// monotonic reading at each end, and no wall-clock reading of its own. From `now` rather than
/// from the start: `now - anchor` is needed anyway to see whether the anchor is stale, so this
/// costs one `Instant` subtraction (the dearest step) fewer than placing the start itself.
fn wall_clock(now: Instant, ago: Duration) -> SystemTime {
    thread_local! {
        static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    const REFRESH: Duration = Duration::from_secs(1);
    let (since, wall) = ANCHOR
        .try_with(|a| {
            let anchored = a.get().and_then(|(mono, wall)| {
                let since = now.checked_duration_since(mono)?;
                (since < REFRESH).then_some((since, wall))
            });
            anchored.unwrap_or_else(|| {
                let wall = SystemTime::now();
                a.set(Some((now, wall)));
                (Duration::ZERO, wall)
            })
        })
        .unwrap_or_else(|_| (Duration::ZERO, SystemTime::now()));
    let at = match since.checked_sub(ago) {
        Some(after) => wall.checked_add(after),
        None => wall.checked_sub(ago.saturating_sub(since)),
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
                p.bytes += data.remaining() as u64;
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
