//! [`CacheBody`]: the response body of [`CacheService`](super::CacheService), and the adapter that
//! turns an origin body into an engine stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::entry::EntryBody;
use crate::error::{BoxError, Error};

pin_project! {
    /// The response body of [`CacheService`](super::CacheService): the origin's own body passed
    /// through untouched, a body streamed by the cache (stored, or a fill shared by several
    /// requests), or nothing (HEAD, 304).
    ///
    /// A cache stream that fails part-way ends with an error, never with a clean end, so a
    /// server aborts the response instead of sending a truncated body as complete.
    pub struct CacheBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Origin { #[pin] body: B },
        Cached { body: EntryBody, remaining: Option<u64> },
        Ranged { body: Option<EntryBody>, skip: u64, take: u64, drain: bool },
        Empty,
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn origin(body: B) -> Self {
        CacheBody {
            inner: Inner::Origin { body },
        }
    }

    pub(crate) fn cached(body: EntryBody, len: Option<u64>) -> Self {
        CacheBody {
            inner: Inner::Cached {
                remaining: body.remaining_len().or(len),
                body,
            },
        }
    }

    /// Bytes `skip..skip + take` of `body`, sliced from the stream as it passes (no full
    /// read, no copy). With `drain`, the rest of the stream is read to its end in the
    /// background once the range is sent, so a fill this body follows is not abandoned.
    pub(crate) fn ranged(body: EntryBody, skip: u64, take: u64, drain: bool) -> Self {
        CacheBody {
            inner: Inner::Ranged {
                body: Some(body),
                skip,
                take,
                drain,
            },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        CacheBody {
            inner: Inner::Empty,
        }
    }
}

impl<B> Default for CacheBody<B> {
    fn default() -> Self {
        CacheBody::empty()
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Origin { .. } => f.write_str("CacheBody::Origin"),
            Inner::Cached { body, .. } => f.debug_tuple("CacheBody::Cached").field(body).finish(),
            Inner::Ranged { skip, take, .. } => f
                .debug_struct("CacheBody::Ranged")
                .field("skip", skip)
                .field("take", take)
                .finish(),
            Inner::Empty => f.write_str("CacheBody::Empty"),
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Origin { body } => body.poll_frame(cx).map_err(Into::into),
            InnerProj::Cached { body, remaining } => match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(chunk.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            InnerProj::Ranged {
                body,
                skip,
                take,
                drain,
            } => poll_range(body, skip, take, *drain, cx),
            InnerProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Origin { body } => body.is_end_stream(),
            // Only a memory body knows it is done without polling; a stream must be polled to
            // learn whether it ended cleanly.
            Inner::Cached { body, remaining } => {
                *remaining == Some(0) && body.remaining_len() == Some(0)
            }
            Inner::Ranged { take, .. } => *take == 0,
            Inner::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Origin { body } => body.size_hint(),
            Inner::Cached {
                remaining: Some(n), ..
            } => SizeHint::with_exact(*n),
            Inner::Cached { .. } => SizeHint::default(),
            Inner::Ranged { take, .. } => SizeHint::with_exact(*take),
            Inner::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The next frame of a ranged body: bytes `skip..skip + take` of `body`'s stream, sliced from
/// its chunks as they pass (see [`CacheBody::ranged`]).
fn poll_range(
    body: &mut Option<EntryBody>,
    skip: &mut u64,
    take: &mut u64,
    drain: bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        if *take == 0 {
            if let (Some(rest), true) = (body.take(), drain) {
                drain_detached(rest);
            }
            return Poll::Ready(None);
        }
        let Some(stream) = body.as_mut() else {
            return Poll::Ready(None);
        };
        let chunk = match Pin::new(stream).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => chunk,
            Poll::Ready(Some(Err(e))) => {
                *body = None;
                return Poll::Ready(Some(Err(Box::new(e))));
            }
            // The stream ended before the range did: the entry was shorter than its metadata
            // said. Fail rather than send a short 206 as complete.
            Poll::Ready(None) => {
                *body = None;
                *take = 0;
                return Poll::Ready(Some(Err("cached body shorter than its range".into())));
            }
            Poll::Pending => return Poll::Pending,
        };
        let n = chunk.len() as u64;
        if n <= *skip {
            *skip -= n;
            continue;
        }
        // Both bounds are below `chunk.len()`, so they fit in usize.
        let from = *skip as usize;
        let to = (*skip + *take).min(n) as usize;
        *skip = 0;
        *take -= (to - from) as u64;
        // Done: let go of the stream now, since a server stops polling (and may keep the body
        // around) once `is_end_stream` says so.
        if *take == 0 {
            if let (Some(rest), true) = (body.take(), drain) {
                drain_detached(rest);
            }
        }
        return Poll::Ready(Some(Ok(Frame::data(chunk.slice(from..to)))));
    }
}

/// Reads `body` to its end on a background task, discarding the bytes.
///
/// Used when a client needs only part of (or none of) a body that is also a fill in progress
/// (a range, a 304): a fill whose every reader has left is abandoned, and the entry the
/// client's request paid for would never be stored. The fill itself is bounded by the
/// engine's timeouts, so this task is too.
pub(crate) fn drain_detached(mut body: EntryBody) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = body.next().await {}
    });
}

pin_project! {
    /// Adapts an origin body into the engine's chunk stream: data frames pass, trailers are
    /// dropped (they are not cached), an error ends the stream with [`Error::Body`].
    pub(crate) struct OriginStream<B> {
        #[pin]
        body: B,
        received: u64,
        failed: bool,
    }
}

impl<B> OriginStream<B> {
    pub(crate) fn new(body: B) -> Self {
        OriginStream {
            body,
            received: 0,
            failed: false,
        }
    }
}

impl<B> Stream for OriginStream<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        *this.received += data.len() as u64;
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Error::Body {
                        received: *this.received,
                        source: e.into(),
                    })));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
