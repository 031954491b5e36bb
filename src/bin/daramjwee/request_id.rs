//! Request ids: every request gets an `x-request-id` (the client's, or a new one), which is
//! forwarded upstream and returned on the response.
//!
//! What tower-http's `SetRequestId` and `PropagateRequestId` layers did, in one layer that
//! allocates nothing per request (amortized): a new id is cut from a block of ids shared by
//! the requests of one thread, and no `RequestId` extension is inserted into the request or the
//! response (nothing here reads one, and extensions never reach the wire; a response's first
//! insert cost three allocations).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The request id field.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bytes of ids allocated at once (about 180 ids).
const ID_BLOCK: usize = 4096;

thread_local! {
    /// The block new ids are cut from: each id is a shared slice of it (a reference count),
    /// and the block is freed when its last id is.
    static IDS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Request ids: a per-process prefix plus a counter, so ids are unique across restarts
/// without a UUID dependency.
#[derive(Clone, Debug)]
pub struct RequestIds {
    /// Hex, at most 16 characters.
    pub(super) prefix: Arc<str>,
    pub(super) next: Arc<AtomicU64>,
}

impl RequestIds {
    /// A generator whose prefix mixes the process id and the start time.
    pub fn new() -> RequestIds {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        RequestIds {
            prefix: format!("{:x}{:x}", std::process::id(), t & 0xffff_ffff).into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The next id, `prefix-n`.
    pub fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Rendered on the stack, without the formatting machinery: the prefix is cut to 32
        // bytes and `n` has at most 20 digits, so it always fits.
        let mut buf = [0u8; 64];
        let prefix = &self.prefix.as_bytes()[..self.prefix.len().min(32)];
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()] = b'-';
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        let at = prefix.len() + 1;
        buf[at..at + digits.len()].copy_from_slice(digits);
        let id = &buf[..at + digits.len()];
        let shared = IDS.try_with(|block| {
            let mut block = block.borrow_mut();
            if block.capacity() < id.len() {
                *block = BytesMut::with_capacity(ID_BLOCK);
            }
            block.extend_from_slice(id);
            block.split().freeze()
        });
        let bytes = shared.unwrap_or_else(|_| Bytes::copy_from_slice(id));
        // Hex digits, `-` and decimal digits: always a valid value.
        HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Sets `x-request-id` on requests that have none, and returns the request's id on responses
/// that have none.
#[derive(Clone, Debug)]
pub struct RequestIdLayer {
    ids: RequestIds,
}

impl RequestIdLayer {
    /// A layer making new ids with `ids`.
    pub fn new(ids: RequestIds) -> RequestIdLayer {
        RequestIdLayer { ids }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId {
            inner,
            ids: self.ids.clone(),
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct RequestId<S> {
    inner: S,
    ids: RequestIds,
}

impl<S, B, ResB> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // One lookup through `entry`, not a `get` then an `insert`: the name is hashed byte by
        // byte, as every name outside the standard set is.
        let id = match req.headers_mut().entry(X_REQUEST_ID) {
            http::header::Entry::Occupied(slot) => slot.get().clone(),
            http::header::Entry::Vacant(slot) => slot.insert(self.ids.make()).clone(),
        };
        RequestIdFuture {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project! {
    /// The response future of [`RequestId`].
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        // A response that names its own id (an origin's, stored with it) keeps it (one lookup,
        // as in `call`).
        if let (http::header::Entry::Vacant(slot), Some(id)) =
            (res.headers_mut().entry(X_REQUEST_ID), this.id.take())
        {
            slot.insert(id);
        }
        Poll::Ready(Ok(res))
    }
}
