//! A client-side time bound on each request of the watch client.
//!
//! The watch client's requests are made by kube-runtime's watcher itself (so
//! `runtime::with_timeout` cannot wrap them): the response must begin within the bound, and a
//! response that is not a watch must also end within it.
//!
//! Without it, a LIST sent on a half-open connection (the server, or a NAT or proxy on the way,
//! lost the connection without a reset) waits forever: no read timeout is set (see
//! `config::resolve`), and the watcher's own idle timeout covers only the watch's event
//! stream. The shared watch then never lists again, and every await on it times out. With it,
//! the LIST fails after the bound, the watcher lists again (after its backoff) on a new
//! connection, and an await that times out meanwhile says why. A watch's body is left to the
//! watcher: its events come when they come, and it gives a silent one up after its server-side
//! timeout and a few seconds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::BoxError;

/// The error of a request that got no (whole) answer within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer(pub Duration);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer from the API server within {} ms (the request timeout)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for NoAnswer {}

/// The layer of `Bound`.
#[derive(Clone, Copy, Debug)]
pub struct BoundLayer(pub Duration);

impl<S> tower::Layer<S> for BoundLayer {
    type Service = Bound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bound {
            inner,
            limit: self.0,
        }
    }
}

/// Bounds each request: see the module.
#[derive(Clone, Debug)]
pub struct Bound<S> {
    inner: S,
    limit: Duration,
}

/// Whether a request is a watch (`watch=true` in its query, as kube-rs sends it).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for Bound<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<BoundBody<B>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let limit = self.limit;
        let watch = is_watch(req.uri());
        let response = self.inner.call(req);
        async move {
            let deadline = Instant::now() + limit;
            match tokio::time::timeout_at(deadline, response).await {
                Ok(Ok(res)) => {
                    let body_deadline = (!watch).then_some(deadline);
                    Ok(res.map(|body| BoundBody::new(body, body_deadline, limit)))
                }
                Ok(Err(e)) => Err(e.into()),
                Err(_elapsed) => Err(Box::new(NoAnswer(limit)) as BoxError),
            }
        }
        .boxed()
    }
}

/// A response body that fails with `NoAnswer` if it has not ended by its deadline (none: it
/// is passed through as it is).
pub struct BoundBody<B> {
    inner: Pin<Box<B>>,
    deadline: Option<Pin<Box<Sleep>>>,
    limit: Duration,
}

impl<B> BoundBody<B> {
    pub fn new(inner: B, deadline: Option<Instant>, limit: Duration) -> Self {
        BoundBody {
            inner: Box::pin(inner),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            limit,
        }
    }
}

impl<B> Body for BoundBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // What has arrived is delivered even at the deadline; only waiting past it fails.
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = self.limit;
        if let Some(sleep) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(NoAnswer(limit)))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tower::{Layer, Service, ServiceExt};

    type Frames = futures::stream::BoxStream<'static, Result<Frame<Bytes>, BoxError>>;

    /// A minimal `Body` over a stream of frames.
    struct StreamBody(Frames);

    impl Body for StreamBody {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.as_mut().poll_next(cx)
        }
    }

    async fn next_frame<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
        body: &mut B,
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    type Server = tower::util::BoxService<http::Request<()>, http::Response<StreamBody>, BoxError>;

    /// A service answering after `delay` with a body that stalls after its first frame.
    fn server(delay: Duration) -> Server {
        tower::util::BoxService::new(tower::service_fn(
            move |_req: http::Request<()>| async move {
                tokio::time::sleep(delay).await;
                let first = Ok::<_, BoxError>(Frame::data(Bytes::from("{")));
                let frames = futures::stream::iter([first])
                    .chain(futures::stream::pending())
                    .boxed();
                Ok::<_, BoxError>(http::Response::new(StreamBody(frames)))
            },
        ))
    }

    fn get(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_that_never_begins_fails_after_the_bound() {
        let mut svc = BoundLayer(Duration::from_secs(2)).layer(server(Duration::from_secs(3600)));
        let t0 = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get("/api/v1/namespaces/d/pods?labelSelector=a%3Db"))
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.downcast_ref::<NoAnswer>(),
            Some(&NoAnswer(Duration::from_secs(2)))
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        // A watch too: its response begins at once when the server is there.
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get(
                "/api/v1/namespaces/d/pods?watch=true&resourceVersion=1",
            ))
            .await
            .err()
            .unwrap();
        assert!(err.is::<NoAnswer>());
    }

    /// A LIST's body must end within the bound, counted from the request; a watch's body
    /// may stay quiet as long as it likes.
    #[tokio::test(start_paused = true)]
    async fn a_list_body_must_end_within_the_bound_a_watch_body_need_not() {
        let mut svc = BoundLayer(Duration::from_secs(2)).layer(server(Duration::from_secs(1)));
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get("/api/v1/namespaces/d/pods?labelSelector=a%3Db"))
            .await
            .unwrap();
        let mut body = res.into_body();
        let t0 = Instant::now();
        let first = next_frame(&mut body).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from("{"));
        let err = next_frame(&mut body).await.unwrap().err().unwrap();
        assert!(err.is::<NoAnswer>());
        // The bound counts from the request, a second before the response began.
        assert_eq!(t0.elapsed(), Duration::from_secs(1));

        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(
                "/api/v1/namespaces/d/pods?watch=true&resourceVersion=1",
            ))
            .await
            .unwrap();
        let mut body = res.into_body();
        next_frame(&mut body).await.unwrap().unwrap();
        let quiet = tokio::time::timeout(Duration::from_secs(600), next_frame(&mut body)).await;
        assert!(quiet.is_err(), "the watch's body was cut");
    }

    #[test]
    fn watches_are_told_by_their_query() {
        for (uri, watch) in [
            (
                "/api/v1/namespaces/d/pods?watch=true&resourceVersion=1",
                true,
            ),
            ("/api/v1/namespaces/d/pods?labelSelector=a&watch=1", true),
            (
                "/api/v1/namespaces/d/pods?labelSelector=watch%3Dtrue",
                false,
            ),
            ("/api/v1/namespaces/d/pods", false),
        ] {
            assert_eq!(is_watch(&uri.parse().unwrap()), watch, "{uri}");
        }
    }
}
