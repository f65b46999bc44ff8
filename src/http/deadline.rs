//! The per-request deadline (60 s by default): 503 when a handler takes
//! longer.
//!
//! tower-http's `TimeoutLayer` polls its timer before the request future,
//! so every request registers a timer in the runtime's timer wheel, and the
//! registration wakes the I/O driver (an eventfd write) even when the
//! handler answers at once, which node routes always do. This layer polls
//! the request first (`tokio::time::timeout` does): a timer is registered
//! only for a request that actually waits.

use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::FutureExt;
use futures_util::future::Map;
use tokio::time::Timeout;
use tokio::time::error::Elapsed;
use tower::{Layer, Service};

/// Answers `status` (with an empty body, which the problem renderer fills)
/// when the inner service has not answered within `after`.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    after: Duration,
}

impl DeadlineLayer {
    pub fn new(after: Duration) -> Self {
        DeadlineLayer { after }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            after: self.after,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    after: Duration,
}

type Finish<E> = fn(Result<Result<Response<Body>, E>, Elapsed>) -> Result<Response<Body>, E>;

fn finish<E>(r: Result<Result<Response<Body>, E>, Elapsed>) -> Result<Response<Body>, E> {
    r.unwrap_or_else(|_| {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok(resp)
    })
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Map<Timeout<S::Future>, Finish<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        tokio::time::timeout(self.after, self.inner.call(req)).map(finish as Finish<S::Error>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn slow(
        delay: Duration,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible> + Clone
    {
        tower::service_fn(move |_req: Request<Body>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("done")))
        })
    }

    #[tokio::test]
    async fn late_answers_are_503_and_prompt_ones_pass() {
        let late = DeadlineLayer::new(Duration::from_millis(20))
            .layer(slow(Duration::from_secs(5)))
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        let prompt = DeadlineLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::from_millis(1)))
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(prompt.status(), StatusCode::OK);
        let instant = DeadlineLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::ZERO))
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(instant.status(), StatusCode::OK);
    }
}
