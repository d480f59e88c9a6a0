//! The innermost service of the stack: forward the request (already judged) upstream as the
//! caller, and hand back the upstream's answer.
//!
//! Reads from the request extensions: `Arc<RequestInfo>`, `Arc<Identity>`, `AuditId`,
//! `Arc<ConnInfo>` (all set by the layers above; a request without an identity is never
//! forwarded — it answers 500, which would be a bug in the stack's order) and a
//! [`HoldWhileStreaming`] resource. For a long-running request everything held lives in a
//! [`StreamGuards`] owned by the response body or the upgrade splice, and a handle to it goes
//! up in the response extensions so the audit layer can attach its end-of-stream event.
//!
//! Rejects: 400 (the URI cannot be rebased), 502 `BadGateway`, 503 `ServiceUnavailable` (every
//! endpoint's circuit breaker refuses; the audit event gets `portcullis.io/breaker`), 504
//! `Timeout` — see `forward.rs`, `send.rs` and `upgrade.rs`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower::Service;

use super::{forward, Guard, Upstream};
use crate::{
    audit::AuditRecord,
    body::Body,
    refusal::Refusal,
    service::{self, Caller, ResponseFuture},
    telemetry::{metrics::ClassLabels, Metrics},
};

/// A resource a layer wants held for as long as the exchange lasts (a concurrent-stream
/// permit): released when the response body ends or the upgrade splice closes.
#[derive(Clone)]
pub struct HoldWhileStreaming(pub Arc<dyn Send + Sync>);

/// Everything that lives as long as one stream, released together (in the order held) when
/// the last handle is dropped.
#[derive(Clone, Default)]
pub struct StreamGuards(Arc<Mutex<Vec<Guard>>>);

impl StreamGuards {
    /// Keep `guard` until the stream ends.
    pub fn hold(&self, guard: Guard) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(guard);
    }
}

/// The audit annotation on a breaker refusal: `<state> <endpoint>` for each endpoint refusing.
pub const BREAKER_ANNOTATION: &str = "portcullis.io/breaker";

/// Forwards with the proxy's credentials and the caller's impersonation headers.
#[derive(Clone)]
pub struct UpstreamService {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    trust_forwarded_for: bool,
}

impl UpstreamService {
    pub fn new(
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        trust_forwarded_for: bool,
    ) -> UpstreamService {
        UpstreamService {
            upstream,
            metrics,
            trust_forwarded_for,
        }
    }
}

impl Service<Request<Body>> for UpstreamService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> ResponseFuture {
        let this = self.clone();
        service::boxed(async move {
            let Some(caller) = Caller::of(&req) else {
                tracing::error!("a request reached the upstream without its facts");
                return Ok(Refusal::Panic.respond());
            };
            let info = &caller.info;
            let streams = info.long_running.then(StreamGuards::default);
            let held = req.extensions_mut().remove::<HoldWhileStreaming>();
            if let (Some(s), Some(held)) = (&streams, held) {
                s.hold(Box::new(held));
            }
            let guard = streams.clone().map(|s| Box::new(s) as Guard);
            let audit = req.extensions().get::<AuditRecord>().cloned();
            let mut outbound = caller.outbound(this.trust_forwarded_for, guard);
            let follow_log = info.subresource == "log" && info.is_follow_log(req.uri());
            outbound.ends_cleanly = info.verb == "watch";
            outbound.follows_log = follow_log;
            // Only streams that hold a stream permit (`ratelimit::decision`: a followed log, a
            // session, a `proxy` stream), which already run as long as they like: a log read
            // whole or `/debug/pprof/` holds none, and a day's pause of many of them would
            // hold the upstream connections' stream slots for everyone.
            outbound.pausable = info.verb != "watch"
                && info.is_resource_request
                && info.long_running
                && (info.subresource != "log" || follow_log);
            let started = Instant::now();
            let result = forward(&this.upstream, req, outbound).await;
            this.metrics
                .upstream_duration
                .get_or_create(&ClassLabels {
                    verb_class: info.verb_class(),
                })
                .observe(started.elapsed().as_secs_f64());
            Ok(match result {
                Ok(mut resp) => {
                    if let Some(s) = streams {
                        resp.extensions_mut().insert(s);
                    }
                    resp
                }
                Err(refusal) => {
                    if let (Refusal::BreakerOpen(b), Some(rec)) = (&refusal, &audit) {
                        let states: Vec<String> = b
                            .endpoints
                            .iter()
                            .map(|(n, s)| format!("{s} {n}"))
                            .collect();
                        rec.with(|r| r.annotate(BREAKER_ANNOTATION, states.join(", ")));
                    }
                    refusal.respond()
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        refusal::Refused,
        service::{
            testing::{classified, send, text, unreachable_upstream},
            AuditId,
        },
    };

    fn dead_upstream() -> UpstreamService {
        UpstreamService::new(unreachable_upstream(), Arc::new(Metrics::new()), false)
    }

    fn with_facts(req: Request<crate::service::testing::TestBody>) -> Request<Body> {
        let (mut parts, _) = req.into_parts();
        parts
            .extensions
            .insert(Arc::new(crate::authz::tests::id("alice", &[])));
        parts
            .extensions
            .insert(AuditId(http::HeaderValue::from_static("id")));
        Request::from_parts(parts, crate::body::empty())
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502_status() {
        let resp = send(
            dead_upstream(),
            with_facts(classified("GET", "/api/v1/pods")),
        )
        .await;
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "upstream");
        assert!(text(resp)
            .await
            .contains("the upstream API server could not be reached: connection failed"));
    }

    #[tokio::test]
    async fn a_request_without_an_identity_is_never_forwarded() {
        let req = classified("GET", "/api/v1/pods");
        let (parts, _) = req.into_parts();
        let resp = send(
            dead_upstream(),
            Request::from_parts(parts, crate::body::empty()),
        )
        .await;
        assert_eq!(resp.status(), 500);
    }
}
