//! THE request pipeline, outermost first: the only place that knows the order. Each layer
//! lives in the folder of its concern, with a module doc saying what it accepts and refuses
//! with which status; every refusal is rendered by one table, `crate::refusal`.
//!
//! Why this order, in one line per layer below. Facts travel between layers as typed request
//! extensions (`crate::service`), never re-parsed.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::{
    audit::{Audit, AuditLayer, ReceivedLayer},
    authn::{jwt::JwtAuthenticator, request::Authenticator, AuthnLayer},
    authz::{create_guard::CreateGuardLayer, review::ReviewLayer, Authorizer, AuthzLayer},
    body::{Body, BoxError},
    classify::ClassifyLayer,
    config::Config,
    ratelimit::{LoadShedLayer, RateLimitLayer, RateLimiter, SourceBlockLayer},
    request_id::RequestIdLayer,
    sanitize::{SanitizeLayer, Sanitizer},
    service::ResponseFuture,
    telemetry::{traced, Metrics, MetricsLayer, RequestSpanLayer, Tracing, UpstreamSpanLayer},
    upstream::{Credentials, Upstream, UpstreamService},
};

/// The live objects the stack is built from, made from a `Config` by `Runtime::build`
/// (`app.rs`), once per configuration.
pub struct Runtime {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    /// The proxy's own credentials toward the upstream (a token file is re-read on an interval
    /// by the configuration's tasks, `reload::live`, and at every reload).
    pub credentials: Arc<Credentials>,
    /// May the proxy impersonate what it sends? (asked at start and from `/readyz`)
    pub selftest: Arc<crate::upstream::selftest::SelfTest>,
    pub metrics: Arc<Metrics>,
    /// Audit policy and sinks (None: not configured).
    pub audit: Option<Arc<Audit>>,
    /// Rate limits (None: not configured).
    pub limiter: Option<RateLimiter>,
    /// JWT issuers and their key stores (None: bearer tokens are refused).
    pub jwt: Option<Arc<JwtAuthenticator>>,
    pub authorizer: Arc<Authorizer>,
    pub sanitizer: Arc<Sanitizer>,
    /// The listener's TLS config.
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The verifier `server_tls`'s handshakes use, kept for authentication to verify again the
    /// chain of a connection an earlier configuration accepted (None: no client certificates).
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// OpenTelemetry traces (None: no `tracing` section; the trace layers only pass through).
    pub tracing: Option<Arc<Tracing>>,
}

/// Build the stack. Cheap to clone; holds no global state, so a new configuration builds a new
/// one beside the old.
pub fn build<B>(
    rt: &Runtime,
) -> impl Service<Request<B>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>
       + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let c = &rt.config;
    let limiter = rt.limiter.clone();
    // Each `traced(name, layer, on)` gives that layer its own child span of the request span
    // (see `telemetry::span_layer`); with tracing off it only passes the request on.
    let on = rt.tracing.is_some();
    ServiceBuilder::new()
        // 0. Metrics wrap everything, so every answer is counted with its final status: the
        //    refusals below and the 500 the request-id layer makes of a panic (the metrics
        //    layer catches none itself: under the request-id layer, a panic with audit off
        //    would go uncounted).
        .layer(MetricsLayer::new(rt.metrics.clone()))
        // 1. A fresh Audit-ID, so every outcome can be correlated; a panic anywhere below is
        //    caught here (500 + Panic event).
        .layer(RequestIdLayer::new(rt.audit.clone()))
        // 2. The request's log span (Audit-ID, trace id) and, when tracing is on, its trace.
        .layer(RequestSpanLayer::new(rt.tracing.clone()))
        // 3. One audit event per request, filled in by the layers below; it sees the final
        //    answer (refusals included) and can hold it until the event is durable.
        .layer(traced(
            "audit",
            AuditLayer::new(rt.audit.clone(), c.trust_forwarded_for),
            on,
        ))
        // 4. The one parse of the Kubernetes request: pure and cheap, and every later decision
        //    reads it, so path tricks cannot make a guard judge a different request.
        .layer(ClassifyLayer)
        // 5. Load shed before any crypto; long-running requests have stream caps instead.
        .layer(traced("load_shed", LoadShedLayer::new(limiter.clone()), on))
        // 6. Addresses that keep failing authentication are refused before signature work.
        .layer(traced(
            "source_block",
            SourceBlockLayer::new(limiter.clone()),
            on,
        ))
        // 7. Identity before anything spends upstream resources.
        .layer(traced(
            "authn",
            AuthnLayer::new(Authenticator {
                x509: c.x509.clone().map(|mapping| crate::authn::x509::CertAuth {
                    mapping,
                    listener: Some(rt.server_tls.clone()),
                    verifier: rt.client_verifier.clone(),
                    crl_due: rt.config.tls.client_auth.crl_due(),
                    ca_expiries: rt.config.tls.client_auth.ca_expiries().into(),
                }),
                jwt: rt.jwt.clone(),
                authorizer: rt.authorizer.clone(),
            }),
            on,
        ))
        // 7b. RequestReceived once the caller is known, where kube-apiserver's audit filter
        //     sits (after authentication, before impersonation, APF and authorization): a
        //     refused request has its RequestReceived too, without the decision that came
        //     after; a strict sink failing here refuses before anything is judged, read or
        //     forwarded.
        .layer(traced("audit_received", ReceivedLayer, on))
        // 8. Keyed by identity, before authorization, where kube-apiserver's APF sits: a
        //    request refused below spends its quota too, so a job looping on 403s slows down
        //    like one looping on reads instead of costing authorization and two audit events
        //    at whatever rate it sends.
        .layer(traced("rate_limit", RateLimitLayer::new(limiter), on))
        // 9. Grants ∩ token scope, on the classification above; deny by default.
        .layer(traced("authz", AuthzLayer::new(rt.authorizer.clone()), on))
        // 10. The self-reviews (`kubectl auth whoami|can-i`) are answered here, never
        //     forwarded with the proxy's power: after authorization (which lets everyone ask),
        //     rate limits (a read) and RequestReceived, before any body judging.
        .layer(traced(
            "review",
            ReviewLayer::new(
                rt.authorizer.clone(),
                rt.upstream.clone(),
                c.trust_forwarded_for,
            ),
            on,
        ))
        // 11. The costliest check (reads, parses, may fetch the current object) last before
        //     the network, so earlier refusals never pay for it.
        .layer(traced(
            "sanitize",
            SanitizeLayer::new(
                rt.sanitizer.clone(),
                rt.upstream.clone(),
                rt.metrics.clone(),
                c.trust_forwarded_for,
            ),
            on,
        ))
        // 11a. A server-side apply or a PUT by a caller without `create` is forwarded only
        //      with the existing object's uid, which the API server enforces: it cannot
        //      create. Last, on the judged body, so the precondition is what goes out.
        .layer(traced(
            "create_guard",
            CreateGuardLayer::new(
                rt.upstream.clone(),
                c.trust_forwarded_for,
                rt.sanitizer.limits.clone(),
            ),
            on,
        ))
        // 11b. The `upstream` span, and its `traceparent` / `tracestate` on the forwarded
        //      request (the client's own were removed at 2).
        .layer(UpstreamSpanLayer::new(on))
        // 12. Forward as the caller (impersonation), pooled h2 or an upgrade splice, to an
        //     endpoint its circuit breaker admits (inside: the breaker picks the endpoint).
        .service(UpstreamService::new(
            rt.upstream.clone(),
            rt.metrics.clone(),
            c.trust_forwarded_for,
        ))
}
