//! The read side of a body object: a stream that never ends cleanly unless it delivered exactly
//! the recorded number of bytes, and that fails instead of hanging when the backend stalls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::stream::BoxStream;

use super::ops::backend;
use crate::error::{Error, StoreError};

/// A body object's stream that fails (never ends cleanly) when it stalls longer than `idle`,
/// breaks, or turns out longer or shorter than `expected`.
///
/// The stall clock runs only while the consumer waits for a chunk, so a slow client is not taken
/// for a stalled backend. One timer is re-armed rather than a new `timeout` per chunk: backends
/// such as the local filesystem yield many small chunks.
pub(super) struct BodyStream {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    key: String,
    expected: u64,
    received: u64,
    idle: Duration,
    stall: Pin<Box<tokio::time::Sleep>>,
    /// Whether `stall` is armed for the chunk being waited for.
    waiting: bool,
    done: bool,
}

impl BodyStream {
    pub(super) fn new(
        inner: BoxStream<'static, object_store::Result<Bytes>>,
        key: String,
        expected: u64,
        idle: Duration,
    ) -> Self {
        BodyStream {
            inner,
            key,
            expected,
            received: 0,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.stall.as_mut().reset(deadline);
            this.waiting = true;
        }
        let polled = this.inner.as_mut().poll_next(cx);
        if polled.is_ready() {
            this.waiting = false;
        }
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if this.received > this.expected {
                    return this.fail(Error::TooLong {
                        expected: this.expected,
                    });
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = Error::Store(backend(&this.key, e));
                this.fail(e)
            }
            Poll::Ready(None) if this.received == this.expected => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                let e = Error::Truncated {
                    received: this.received,
                    expected: this.expected,
                };
                this.fail(e)
            }
            Poll::Pending => match this.stall.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let e = Error::Store(StoreError::Timeout {
                        key: this.key.clone(),
                        after: this.idle,
                    });
                    this.fail(e)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
