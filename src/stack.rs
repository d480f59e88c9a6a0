//! THE request pipeline, top to bottom. This is the only place that knows the order of the
//! stages; each stage lives in its own module and either hands a value to the next stage or
//! ends the request with a `metav1.Status`.
//!
//! | # | stage | rejects with |
//! |---|---|---|
//! | 1 | request id: a fresh `Audit-ID` (a client's is never trusted); a panic below is caught | 500 + `Panic` event |
//! | 2 | audit (`auditing::Recorder`): the one audit.k8s.io/v1 event, filled in by every stage below, refusals included; emitted before the response head is released | 503 when a blocking-strict sink cannot record it |
//! | 2 | metrics: in-flight gauge, latency and count on the way out | — |
//! | 3 | classify: the one parse of the Kubernetes request (`k8s::request`) | 400 BadRequest |
//! | 4 | load shed: global in-flight cap, not long-running requests (`ratelimit`) | 503 + Retry-After |
//! | 5 | authenticate: client certificate or JWT → `Identity` with tenant (`authn`); an address that keeps failing is refused first | 401 / 429 |
//! | 6 | authorize: config grants ∩ token scope, deny by default (`authz`) | 403 Forbidden |
//! | 7 | rate limit: per-identity read/write buckets, concurrent-stream permits (`ratelimit`) | 429 + Retry-After |
//! | 8 | sanitize: body size, encoding, media type, strict parse, Pod Security, field rules (`sanitize::stage`) | 400 / 403 / 404 / 408 / 413 / 415 / 422 / 503 |
//! | 9 | forward: header hygiene, impersonation, pooled h2 or upgrade splice (`upstream`) | 502 / 504 |
//!
//! Why this order: the id comes first so every outcome can be correlated; metrics wrap
//! everything so rejections are counted; classification is pure and cheap and every later
//! decision reads it; authentication precedes anything that spends upstream resources.
//! Authorization reads the one classification, so path tricks cannot make it judge a different
//! request from the one forwarded. Audit wraps everything so every outcome is recorded with its final
//! status; the circuit breaker will slot in before forwarding (`shared/DESIGN.md`). Sanitizing comes last before forwarding because it is the
//! costliest check (it reads and parses the body, and may read the current object upstream),
//! and a request refused by an earlier stage should not pay for it. Rate limiting follows
//! authentication because the bucket key *is* the identity, and authorization because a request
//! we refuse anyway should not spend the caller's quota.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::{
    audit::Stage,
    auditing::Recorder,
    authn, authz,
    body::{Body, BoxError},
    config::Config,
    k8s::{request::classify, Status},
    sanitize,
    server::ConnInfo,
    telemetry::{
        metrics::{ClassLabels, RequestLabels},
        Metrics,
    },
    upstream::{self, Outbound, Upstream},
};

/// The proxy: configuration, the upstream, metrics. Cheap to share.
pub struct Proxy {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    /// Audit policy and sinks (None: not configured).
    pub audit: Option<Arc<crate::auditing::Audit>>,
}

impl Proxy {
    /// Serve one request through every stage. A panic below is caught here: the client gets
    /// a 500 Status and the audit log a `Panic` event.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<Body> {
        use futures_util::FutureExt;
        // 1. request id
        let audit_id = new_audit_id();
        // Kept for the panic path only: a `Uri` clone shares its bytes, no allocation.
        let uri = req.uri().clone();
        let method = req.method().clone();
        let me = self.clone();
        let peer = conn.peer;
        let id = audit_id.clone();
        match std::panic::AssertUnwindSafe(me.handle_inner(req, conn, id))
            .catch_unwind()
            .await
        {
            Ok(resp) => resp,
            Err(_) => {
                let request_uri = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                tracing::error!(%peer, uri = %request_uri, "request handler panicked");
                if let Some(audit) = &self.audit {
                    let mut rec = Recorder::new(
                        audit.clone(),
                        &audit_id,
                        request_uri,
                        &method,
                        None,
                        vec![peer.ip().to_string()],
                    );
                    rec.status_code(500);
                    let _ = rec.emit(Stage::Panic, None).await;
                }
                let mut resp =
                    Status::internal("the proxy failed to handle this request").into_response();
                resp.headers_mut().insert("audit-id", audit_id);
                resp
            }
        }
    }

    async fn handle_inner(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
        audit_id: HeaderValue,
    ) -> Response<Body> {
        // 2 (audit). the event starts with the request line as received
        let mut rec = self.audit.as_ref().map(|a| {
            let mut ips: Vec<String> = Vec::new();
            if self.config.trust_forwarded_for {
                for v in req.headers().get_all("x-forwarded-for") {
                    if let Ok(v) = v.to_str() {
                        ips.extend(
                            v.split(',')
                                .map(|x| x.trim().to_owned())
                                .filter(|x| !x.is_empty()),
                        );
                    }
                }
            }
            ips.push(conn.peer.ip().to_string());
            Recorder::new(
                a.clone(),
                &audit_id,
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                req.method(),
                req.headers().get(http::header::USER_AGENT),
                ips,
            )
        });
        let mut info_slot: Option<crate::k8s::request::RequestInfo> = None;
        // Set for long-running requests whose stream started: emits ResponseComplete at its end.
        let mut stream_started = false;
        // 2. metrics
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let mut class = "nonresource";
        let mut long_running = false;
        let limiter = self.config.limiter.as_ref().map(|l| &l.0);
        let peer_ip = conn.peer.ip();
        // Held until the response body ends: this request's place under the in-flight cap.
        let mut in_flight = None;
        let mut rate_limit_headers = None;
        // Our own `Warning` headers (Pod Security warn mode, stripped fields).
        let mut warnings: Vec<String> = Vec::new();

        let response = 'pipeline: {
            // 3. classify
            let info: &crate::k8s::request::RequestInfo =
                match classify(req.method(), req.uri(), req.headers()) {
                    Ok(info) => info_slot.insert(info),
                    Err(err) => {
                        break 'pipeline refuse(
                            &mut rec,
                            "classify",
                            Status::bad_request(format!("invalid request path: {err}")),
                        );
                    }
                };
            if let Some(r) = rec.as_mut() {
                r.classified(info);
            }
            class = info.verb_class();
            long_running = info.long_running;

            // 4. load shed: the global in-flight cap (long-running requests have stream caps)
            if let (Some(l), false) = (limiter, long_running) {
                match l.try_in_flight() {
                    Ok(guard) => in_flight = Some(guard),
                    Err(rejection) => break 'pipeline reject(&mut rec, "load-shed", rejection),
                }
            }

            // 5. authenticate — unless this address keeps failing (checked before any
            //    signature work, so floods of bad tokens cannot burn CPU)
            if let Some(rejection) = limiter.and_then(|l| l.source_blocked(peer_ip)) {
                break 'pipeline reject(&mut rec, "authn", rejection);
            }
            let identity =
                match authn::request::authenticate(&self.config, req.headers(), &conn).await {
                    Ok(id) => id,
                    Err(why) => {
                        tracing::info!(peer = %conn.peer, %why, "authentication failed");
                        if let Some(l) = limiter {
                            l.record_auth_failure(peer_ip);
                        }
                        break 'pipeline refuse(&mut rec, "authn", Status::unauthorized());
                    }
                };
            if let Some(r) = rec.as_mut() {
                r.authenticated(&identity);
                r.evaluate(Some(info));
            }

            // 6. authorize: grants ∩ token scope, deny by default
            let decision = self.config.authorizer.authorize(&identity, info);
            if let Some(r) = rec.as_mut() {
                r.decision(decision.allowed, &decision.reason);
            }
            if !decision.allowed {
                tracing::info!(user = %identity.user, verb = %info.verb, path = %info.path, reason = %decision.reason, "forbidden");
                // The apiserver's wording; only a scope denial says why (it helps the token's
                // holder and reveals nothing about policy).
                let why = if decision.reason == authz::engine::OUTSIDE_SCOPE {
                    authz::engine::OUTSIDE_SCOPE
                } else {
                    ""
                };
                break 'pipeline refuse(
                    &mut rec,
                    "authz",
                    authz::forbidden_status(&identity, info, why),
                );
            }

            // 7. rate limit: per-identity buckets, concurrent-stream permits
            let mut guard: Option<upstream::Guard> = None;
            if let Some(l) = limiter {
                match l.check_async(&identity, info, req.uri()).await {
                    Ok(admission) => {
                        if let Some(r) = rec.as_mut() {
                            r.annotate("portcullis.io/ratelimit", "allowed");
                        }
                        rate_limit_headers = admission.rate_limit;
                        if let Some(permit) = admission.permit {
                            guard = Some(Box::new(permit));
                        }
                    }
                    Err(rejection) => {
                        if let Some(r) = rec.as_mut() {
                            r.annotate("portcullis.io/ratelimit", "rejected");
                        }
                        break 'pipeline reject(&mut rec, "ratelimit", rejection);
                    }
                }
            }

            // RequestReceived, when the policy records it: a strict sink that cannot take it
            // refuses the request before anything is forwarded.
            if let Some(r) = rec.as_mut() {
                if let Err(err) = r.emit(Stage::RequestReceived, Some(info)).await {
                    break 'pipeline audit_failed(&mut rec, &err);
                }
            }

            let mut outbound = Outbound {
                identity: &identity,
                audit_id: &audit_id,
                peer: conn.peer.ip(),
                trust_forwarded_for: self.config.trust_forwarded_for,
                long_running,
                guard: None,
            };

            // 8. sanitize: size, encoding, media type, strict parse, Pod Security, field rules
            let (mut parts, incoming) = req.into_parts();
            let keep_body = rec.as_ref().is_some_and(|r| r.wants_request_body());
            let checked = sanitize::stage::run(
                &self.config.sanitizer,
                &self.upstream,
                info,
                &mut parts,
                incoming,
                &outbound,
                keep_body,
            )
            .await;
            let body = match checked {
                Ok((body, mut verdict)) => {
                    if let Some(r) = rec.as_mut() {
                        if verdict.inspected {
                            r.annotate("portcullis.io/sanitize", "inspected");
                        }
                        if let Some(b) = verdict.body.take() {
                            r.request_object(b);
                        }
                        if let Some(p) = pss_policy(&self.config.sanitizer, info, &identity) {
                            r.annotate("pod-security.kubernetes.io/enforce-policy", p);
                        }
                        if !verdict.audit.is_empty() {
                            r.annotate(
                                "pod-security.kubernetes.io/audit-violations",
                                verdict.audit.join("; "),
                            );
                        }
                    }
                    if !verdict.audit.is_empty() {
                        tracing::info!(user = %identity.user, path = %info.path, violations = ?verdict.audit, "pod security audit");
                        self.pss_seen("audit");
                    }
                    if verdict.pss_warned {
                        self.pss_seen("warn");
                    }
                    warnings = verdict.warnings;
                    body
                }
                Err(status) => {
                    if status.message.contains("violates PodSecurity") {
                        self.pss_seen("enforce");
                    }
                    if let Some(r) = rec.as_mut() {
                        r.annotate("portcullis.io/sanitize", "refused");
                        if let Some(p) = pss_policy(&self.config.sanitizer, info, &identity) {
                            r.annotate("pod-security.kubernetes.io/enforce-policy", p);
                        }
                    }
                    tracing::info!(user = %identity.user, verb = %info.verb, path = %info.path, code = status.code, reason = %status.reason, "request body refused");
                    break 'pipeline refuse(&mut rec, "sanitize", *status);
                }
            };

            // 9. forward. A long-running stream carries a guard that writes its
            //    ResponseComplete event when the stream ends.
            let completion = if long_running {
                rec.as_mut().and_then(|r| r.complete_on_drop(Some(info)))
            } else {
                None
            };
            outbound.guard = match (guard, completion) {
                (None, None) => None,
                (g, c) => Some(Box::new((g, c))),
            };
            let upstream_started = Instant::now();
            let resp =
                upstream::forward(&self.upstream, Request::from_parts(parts, body), outbound).await;
            self.metrics
                .upstream_duration
                .get_or_create(&ClassLabels { verb_class: class })
                .observe(upstream_started.elapsed().as_secs_f64());
            stream_started = long_running && resp.status().as_u16() < 300;
            resp
        };

        // The event: ResponseStarted + (at the stream's end) ResponseComplete for streams,
        // ResponseComplete now for everything else. In blocking-strict mode the response
        // is not released until its event is durable; if it cannot be, the answer is 503.
        let response = match rec.as_mut() {
            None => response,
            Some(r) => {
                r.status_code(response.status().as_u16());
                let (stage, response) = if stream_started {
                    (Stage::ResponseStarted, response)
                } else {
                    let response = if r.wants_response_body() && !long_running {
                        let (resp, obj) = crate::auditing::capture_response(response).await;
                        if let Some(obj) = obj {
                            r.response_object(obj);
                        }
                        resp
                    } else {
                        response
                    };
                    (Stage::ResponseComplete, response)
                };
                match r.emit(stage, info_slot.as_ref()).await {
                    Ok(()) => response,
                    Err(err) => audit_failed(&mut rec, &err),
                }
            }
        };

        let (mut parts, body) = response.into_parts();
        parts.headers.insert("audit-id", audit_id);
        if let Some(state) = &rate_limit_headers {
            state.apply(&mut parts.headers);
        }
        for w in sanitize::stage::warning_headers(&warnings) {
            parts.headers.append(http::header::WARNING, w);
        }
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                verb_class: class,
                code: parts.status.as_u16(),
            })
            .inc();
        let done = Done {
            metrics: self.metrics.clone(),
            class,
            started,
            _in_flight: in_flight,
        };
        if long_running {
            // Streams are measured to their response head; their lifetime is not latency.
            drop(done);
            return Response::from_parts(parts, body);
        }
        Response::from_parts(
            parts,
            crate::body::boxed(Timed {
                inner: body,
                done: Some(done),
            }),
        )
    }
}

/// Record a refusal and render it.
fn refuse(rec: &mut Option<Recorder>, stage: &'static str, status: Status) -> Response<Body> {
    if let Some(r) = rec.as_mut() {
        r.refused(stage, &status);
    }
    status.into_response()
}

/// Record a rate-limit refusal and render it (with its headers).
fn reject(
    rec: &mut Option<Recorder>,
    stage: &'static str,
    rejection: impl Into<Box<crate::ratelimit::Rejection>>,
) -> Response<Body> {
    let rejection: Box<crate::ratelimit::Rejection> = rejection.into();
    if let Some(r) = rec.as_mut() {
        r.refused(stage, &rejection.status);
    }
    rejection.into_response()
}

/// A strict audit sink could not record the event: the client gets 503, not an unaudited answer.
fn audit_failed(rec: &mut Option<Recorder>, err: &crate::audit::AuditError) -> Response<Body> {
    tracing::error!(%err, "audit event could not be recorded; answering 503");
    let status =
        Status::service_unavailable("the request could not be audited; try again later", 1);
    if let Some(r) = rec.as_mut() {
        r.refused("audit", &status);
    }
    status.into_response()
}

/// `level:version` of the enforced Pod Security policy for this write, if any.
fn pss_policy(
    s: &crate::sanitize::Sanitizer,
    info: &crate::k8s::request::RequestInfo,
    id: &crate::authn::Identity,
) -> Option<String> {
    crate::sanitize::pss::PodBearing::from_group_resource(
        &info.api_group,
        &crate::sanitize::judge::resource_path(info),
    )?;
    s.modes_for(&info.namespace, id.tenant.as_deref())
        .enforce
        .map(|p| format!("{}:{}", p.level, p.version))
}

impl Proxy {
    fn pss_seen(&self, mode: &'static str) {
        self.metrics
            .pod_security
            .get_or_create(&crate::telemetry::metrics::ModeLabels { mode })
            .inc();
    }
}

/// Records whole-request latency and leaves the in-flight gauge when dropped.
struct Done {
    metrics: Arc<Metrics>,
    class: &'static str,
    started: Instant,
    /// The request's place under the global in-flight cap, released with the body.
    _in_flight: Option<crate::ratelimit::InFlightGuard>,
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

/// A random UUIDv4 from aws-lc-rs' system CSPRNG, as the value of `Audit-ID`.
fn new_audit_id() -> HeaderValue {
    use aws_lc_rs::rand::SecureRandom;
    const FALLBACK: HeaderValue = HeaderValue::from_static("00000000-0000-4000-8000-000000000000");
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The CSPRNG failing is not something a request can fix; a fixed id keeps serving.
        return FALLBACK;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0x0f) as usize];
        o += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(FALLBACK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn audit_ids_are_uuid_v4_and_distinct() {
        let a = super::new_audit_id();
        let b = super::new_audit_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
