//! The admin listener: `/healthz`, `/livez` (the process serves), `/readyz` (config loaded, at
//! least one upstream endpoint answered within `admin.ready_window` and its circuit breaker is
//! not open, some way to authenticate works — client certificates are configured, or a JWT
//! issuer has keys (one identity provider down at a cold start must not take every replica,
//! and every other user, out of service) — and the upstream lets the proxy impersonate what it
//! must (`upstream::selftest`, re-asked here when stale), and no `blocking-strict` audit sink
//! written on this replica (file, stdout) failed its last write within `admin.ready_window`
//! (`audit::sink::health`: such a replica refuses every audited request with 503; a webhook
//! sink's failure is shared by every replica and never fails readiness); 503 otherwise, with
//! the reasons, one per line), and `/metrics` (Prometheus text). Anything else is a plain 404.
//! Plain HTTP, loopback by default.

use std::{sync::Arc, time::Duration};

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::{
    body::{self, Body},
    telemetry::Metrics,
    upstream::Upstream,
};

/// State the admin endpoints read.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    pub jwt: Option<Arc<crate::authn::jwt::JwtAuthenticator>>,
    /// Client certificates are accepted (then issuers without keys do not fail readiness).
    pub client_certificates: bool,
    pub ready_window: Duration,
    /// The impersonation self-test (None: not run, e.g. in unit tests).
    pub selftest: Option<Arc<crate::upstream::selftest::SelfTest>>,
    /// The audit sinks (None: audit off).
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// The shutdown signal: once it fired, `/readyz` fails (during `shutdown.delay` the
    /// listener still serves, so load balancers stop sending before it closes).
    pub terminating: crate::shutdown::Shutdown,
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    s: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut r = Response::new(body::full(s.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

impl Admin {
    /// Answer one admin request.
    pub async fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n",
            );
        }
        match req.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok"),
            "/readyz" => {
                // Ready while at least one endpoint is (answered lately, breaker not open).
                let mut problems = self.upstream.not_ready(self.ready_window);
                if self.terminating.is_fired() {
                    problems.insert(0, "shutting down".to_owned());
                }
                self.metrics
                    .upstream_healthy
                    .set(problems.is_empty() as i64);
                if let Some(jwt) = &self.jwt {
                    let missing = jwt.issuers_not_ready();
                    // Unready only when nobody could authenticate: an issuer without keys
                    // refuses its own tokens (logged by its key refresh), others still work.
                    if !self.client_certificates && missing.len() == jwt.issuer_count() {
                        for issuer in missing {
                            problems.push(format!("no keys loaded for JWT issuer {issuer}"));
                        }
                    }
                }
                if let Some(t) = &self.selftest {
                    problems.extend(t.not_ready().await);
                }
                if let Some(a) = &self.audit {
                    // A failing strict local sink refuses every audited request here, however
                    // healthy the upstream; only sinks of this replica count (see `not_ready`).
                    problems.extend(a.not_ready(self.ready_window));
                }
                if problems.is_empty() {
                    text(StatusCode::OK, "text/plain; charset=utf-8", "ok")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        problems.join("\n") + "\n",
                    )
                }
            }
            "/metrics" => {
                self.metrics
                    .upstream_healthy
                    .set(self.upstream.healthy_within(self.ready_window) as i64);
                text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.render(),
                )
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            ),
        }
    }
}
