//! The metrics layer: the outermost, so every answer is counted: refusals, and a panic below
//! as the 500 the request-id layer makes of it.
//!
//! Accepts everything, rejects nothing. Counts `portcullis_requests_total{verb_class,code}`
//! with the final status, `portcullis_refusals_total{by}` for the proxy's own answers, holds
//! `portcullis_in_flight_requests` from arrival to the end of the response body, and observes
//! `portcullis_request_duration_seconds{verb_class}` to the end of the body (long-running
//! requests to their response head: a stream's lifetime is not latency).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use super::{
    metrics::{code_label, ClassLabels, RefusalLabels, RequestLabels},
    Metrics,
};
use crate::{
    body::{Body, BoxError},
    refusal::Refused,
    service::{self, Classified, ResponseFuture},
};

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        self.metrics.in_flight.inc();
        let mut done = Done {
            metrics: self.metrics.clone(),
            class: "nonresource",
            started: Instant::now(),
        };
        // Outermost: a panic below is already the request-id layer's 500 (marked refused by
        // `panic`) when it gets here, so it is counted like any other answer.
        let inner = self.inner.call(req);
        service::boxed(async move {
            let resp = inner.await?;
            let classified = resp.extensions().get::<Classified>().copied();
            done.class = classified.map_or("nonresource", |c| c.class);
            let m = &done.metrics;
            m.requests
                .get_or_create(&RequestLabels {
                    verb_class: done.class,
                    code: code_label(resp.status().as_u16()),
                })
                .inc();
            if let Some(r) = resp.extensions().get::<Refused>() {
                m.refusals.get_or_create(&RefusalLabels { by: r.by }).inc();
            }
            if classified.is_some_and(|c| c.long_running) {
                // Streams are measured to their response head.
                drop(done);
                return Ok(resp);
            }
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                crate::body::boxed(Timed {
                    inner: body,
                    done: Some(done),
                }),
            ))
        })
    }
}

/// Records whole-request latency and leaves the in-flight gauge when dropped (also when the
/// request is abandoned or panics before it is answered).
struct Done {
    metrics: Arc<Metrics>,
    class: &'static str,
    started: Instant,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics
            .request_duration
            .get_or_create(&ClassLabels {
                verb_class: self.class,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that reports to [`Done`] when it ends or is dropped.
struct Timed {
    inner: Body,
    done: Option<Done>,
}

impl http_body::Body for Timed {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done.take();
        }
        polled
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
    use crate::{
        refusal::Refusal,
        service::testing::{request, send, text, TestBody},
    };

    #[tokio::test]
    async fn refusals_are_counted_with_their_final_status_and_the_gauge_drops_at_body_end() {
        let metrics = Arc::new(Metrics::new());
        let svc = MetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |_req: Request<TestBody>| async { Ok::<_, Infallible>(Refusal::Timeout.respond()) },
        ));
        let resp = send(svc, request("GET", "/version")).await;
        assert_eq!(resp.status(), 504);
        assert_eq!(metrics.in_flight.get(), 1, "the body is still being sent");
        let _ = text(resp).await;
        assert_eq!(metrics.in_flight.get(), 0);
        let code = metrics
            .requests
            .get_or_create(&RequestLabels {
                verb_class: "nonresource",
                code: "504",
            })
            .get();
        let refused = metrics
            .refusals
            .get_or_create(&RefusalLabels { by: "upstream" })
            .get();
        assert_eq!((code, refused), (1, 1));
    }

    /// With audit off nothing but the request-id layer answers a panic: it makes it a 500,
    /// and the metrics layer above it (as in `stack.rs`) counts it as one, refused by `panic`.
    #[tokio::test]
    async fn a_panic_below_is_counted_as_its_500() {
        let metrics = Arc::new(Metrics::new());
        let svc = MetricsLayer::new(metrics.clone()).layer(
            crate::request_id::RequestIdLayer::new(None).layer(tower::service_fn(
                |_req: Request<TestBody>| async move {
                    if true {
                        panic!("a bug below");
                    }
                    Ok::<_, Infallible>(Response::new(crate::body::empty()))
                },
            )),
        );
        let resp = send(svc, request("GET", "/version")).await;
        assert_eq!(resp.status(), 500);
        // The 500's body, sent like any answer's, ends the request's time in flight.
        let _ = text(resp).await;
        let text = metrics.render();
        assert!(
            text.contains("portcullis_requests_total{verb_class=\"nonresource\",code=\"500\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_refusals_total{by=\"panic\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.in_flight.get(), 0);
    }

    /// A backend behind a `proxy` subresource can answer any status from 100 to 999: the
    /// statuses Kubernetes uses keep their own series, any other counts under its class.
    #[tokio::test]
    async fn any_status_a_backend_invents_lands_in_a_closed_set_of_series() {
        let metrics = Arc::new(Metrics::new());
        for status in 100..=999u16 {
            let svc = MetricsLayer::new(metrics.clone()).layer(tower::service_fn(
                move |_req: Request<TestBody>| async move {
                    let mut resp = Response::new(crate::body::empty());
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                },
            ));
            let _ = text(send(svc, request("GET", "/version")).await).await;
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("portcullis_requests_total{"))
            .count();
        assert!(series <= 50, "{series} series:\n{text}");
        for (code, want) in [("200", 1.0), ("599", 0.0), ("5xx", 94.0), ("other", 400.0)] {
            let line = text.lines().find(|l| {
                l.starts_with("portcullis_requests_total{")
                    && l.contains(&format!("code=\"{code}\""))
            });
            let n: f64 = line.map_or(0.0, |l| {
                l.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0.0)
            });
            assert_eq!(n, want, "{code}");
        }
    }
}
