//! [`ResponseFuture`]: the future returned by [`CacheService`](super::CacheService).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use super::body::CacheBody;
use super::status::CacheStatus;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`CacheService`](super::CacheService).
    ///
    /// Requests the cache does not handle (other methods, `no-store`) poll the inner service's
    /// future directly; a fresh hit is ready at once; other lookups run as one boxed future.
    pub struct ResponseFuture<F, ResB, E> {
        #[pin]
        kind: Kind<F, ResB, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, ResB, E> {
        Passthrough {
            #[pin]
            fut: F,
            status: Option<HeaderValue>,
        },
        Cached {
            fut: BoxFuture<Result<Response<CacheBody<ResB>>, E>>,
        },
        Ready {
            res: Option<Response<CacheBody<ResB>>>,
        },
    }
}

impl<F, ResB, E> ResponseFuture<F, ResB, E> {
    pub(crate) fn passthrough(fut: F, status: Option<CacheStatus>) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough {
                fut,
                status: status.map(|s| s.to_header()),
            },
        }
    }

    /// A response known at once (a fresh hit).
    pub(crate) fn ready(res: Response<CacheBody<ResB>>) -> Self {
        ResponseFuture {
            kind: Kind::Ready { res: Some(res) },
        }
    }

    pub(crate) fn cached(fut: BoxFuture<Result<Response<CacheBody<ResB>>, E>>) -> Self {
        ResponseFuture {
            kind: Kind::Cached { fut },
        }
    }
}

impl<F, ResB, E> Future for ResponseFuture<F, ResB, E>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<CacheBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { fut, status } => {
                let res = ready!(fut.poll(cx))?;
                let mut res = res.map(CacheBody::origin);
                if let Some(s) = status.take() {
                    res.headers_mut().insert(super::CACHE_STATUS, s);
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Cached { fut } => fut.as_mut().poll(cx),
            KindProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}
