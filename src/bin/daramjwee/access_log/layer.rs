//! The tower layer that records each exchange: its future notes the response head, its body
//! counts the bytes sent and hands the record to the writer when the body is dropped (that is,
//! when the response is over, finished or not).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Buf;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use parking_lot::RwLock;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::writer::Sink;
use super::{Record, Text, UpstreamTimer};
use crate::proxy::ClientAddr;

/// The access log currently in use, or none: a reload swaps it for new requests while
/// in-flight ones finish logging to the one they started with.
#[derive(Clone, Debug, Default)]
pub struct AccessLogSwitch(Arc<RwLock<Option<Arc<Sink>>>>);

impl AccessLogSwitch {
    /// A switch starting with `sink`.
    pub fn new(sink: Option<Sink>) -> AccessLogSwitch {
        AccessLogSwitch(Arc::new(RwLock::new(sink.map(Arc::new))))
    }

    /// Logs new requests to `sink` (or nowhere) from now on.
    pub fn replace(&self, sink: Option<Sink>) {
        *self.0.write() = sink.map(Arc::new);
    }

    fn current(&self) -> Option<Arc<Sink>> {
        self.0.read().clone()
    }

    /// Lines the current log dropped because its writer was behind.
    pub fn dropped(&self) -> u64 {
        self.current().map_or(0, |s| s.dropped())
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

/// What is known of an exchange before its response: everything but the outcome.
#[derive(Debug)]
struct Pending {
    sink: Arc<Sink>,
    started: Instant,
    record: Record,
    timer: UpstreamTimer,
}

impl<S, B, ResB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<LoggedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let pending = self.switch.current().map(|sink| Pending::new(sink, &req));
        if let Some(p) = &pending {
            req.extensions_mut().insert(p.timer.clone());
        }
        ResponseFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

impl Pending {
    /// What the request says, noted before it is handed on.
    fn new<B>(sink: Arc<Sink>, req: &Request<B>) -> Pending {
        let h = req.headers();
        let record = Record {
            start: SystemTime::now(),
            client: req.extensions().get::<ClientAddr>().map(|c| c.0),
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
            request_id: Text::of(h.get("x-request-id")),
            referer: Text::of(h.get(header::REFERER)),
            user_agent: Text::of(h.get(header::USER_AGENT)),
        };
        Pending {
            sink,
            started: Instant::now(),
            record,
            timer: UpstreamTimer::default(),
        }
    }
}

pin_project! {
    /// The response future of [`AccessLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
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
            p.record.cache_status = Text::of(res.headers().get("cache-status"));
        }
        Poll::Ready(Ok(res.map(|inner| LoggedBody { inner, pending })))
    }
}

pin_project! {
    /// A response body that counts what it sends and logs the exchange when dropped.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
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
        self.record.duration = self.started.elapsed();
        self.record.upstream = self.timer.get();
        self.sink.offer(self.record);
    }
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
