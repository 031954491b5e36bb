//! [`ResponseFuture`]: the future returned by [`CacheService`](super::CacheService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::CacheBody;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`CacheService`](super::CacheService).
    ///
    /// A fresh hit is ready at once, with nothing boxed; every request that needs the origin
    /// (a fill, a revalidation, a pass-through) runs as one boxed future, which drives the
    /// origin's readiness itself.
    pub struct ResponseFuture<ResB, E> {
        #[pin]
        kind: Kind<ResB, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<ResB, E> {
        Boxed {
            fut: BoxFuture<Result<Response<CacheBody<ResB>>, E>>,
        },
        Ready {
            res: Option<Response<CacheBody<ResB>>>,
        },
    }
}

impl<ResB, E> ResponseFuture<ResB, E> {
    /// A response known at once (a fresh hit).
    pub(crate) fn ready(res: Response<CacheBody<ResB>>) -> Self {
        ResponseFuture {
            kind: Kind::Ready { res: Some(res) },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture<Result<Response<CacheBody<ResB>>, E>>) -> Self {
        ResponseFuture {
            kind: Kind::Boxed { fut },
        }
    }
}

impl<ResB, E> Future for ResponseFuture<ResB, E> {
    type Output = Result<Response<CacheBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Boxed { fut } => fut.as_mut().poll(cx),
            KindProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}
