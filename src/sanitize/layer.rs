//! The sanitize layer: is the body acceptable. The costliest check, so it runs last before the
//! network, after every cheaper refusal.
//!
//! What it accepts and refuses, with which status: `stage.rs` (size, encoding, media type,
//! strict parse, Pod Security, field rules). On the way in it replaces the request body with
//! the canonical bytes of what was judged; on the way out it adds its `Warning: 299` headers
//! (Pod Security warn mode, stripped fields). It tells the audit record what it did
//! (`portcullis.io/sanitize`, `portcullis.io/stripped-fields` — the strip rules' paths of
//! what was removed, `pod-security.kubernetes.io/enforce-policy` — one
//! `level:version`, as PodSecurity writes it: the policy that refused, else the stricter
//! enforced one; `portcullis.io/pod-security-enforce-policies` lists both where a namespace's
//! and a tenant's apply — and `audit-violations`, `requestObject` when the policy keeps
//! bodies) and counts
//! `portcullis_pod_security_violating_requests{mode}`.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

use super::{judge::PssSeen, stage, Sanitizer};
use crate::{
    audit::AuditRecord,
    authn::Identity,
    body::{Body, BoxError},
    k8s::{request::RequestInfo, Status},
    ratelimit::inflight::SharedPlace,
    refusal::{Refusal, UpstreamFailure},
    service::{self, Caller, ResponseFuture},
    telemetry::{metrics::ModeLabels, Metrics},
    upstream::Upstream,
};

#[derive(Clone)]
pub struct SanitizeLayer {
    sanitizer: Arc<Sanitizer>,
    /// For reading the current object of a patch (as the caller).
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    trust_forwarded_for: bool,
}

impl SanitizeLayer {
    pub fn new(
        sanitizer: Arc<Sanitizer>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        trust_forwarded_for: bool,
    ) -> SanitizeLayer {
        SanitizeLayer {
            sanitizer,
            upstream,
            metrics,
            trust_forwarded_for,
        }
    }
}

impl<S> Layer<S> for SanitizeLayer {
    type Service = SanitizeService<S>;
    fn layer(&self, inner: S) -> SanitizeService<S> {
        SanitizeService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct SanitizeService<S> {
    inner: S,
    layer: SanitizeLayer,
}

impl<S, B> Service<Request<B>> for SanitizeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let mut inner = self.inner.clone();
        let layer = self.layer.clone();
        service::boxed(async move {
            let Some(caller) = Caller::of(&req) else {
                return Ok(Refusal::Panic.respond());
            };
            let (info, identity) = (&caller.info, &caller.identity);
            let rec = req.extensions().get::<AuditRecord>().cloned();
            let outbound = caller.outbound(layer.trust_forwarded_for, None);
            let keep_body = rec
                .as_ref()
                .is_some_and(|r| r.with(|r| r.wants_request_body()));
            let (mut parts, incoming) = req.into_parts();
            let mut verdict = stage::Verdict {
                keep_body,
                ..stage::Verdict::default()
            };
            let to_check = stage::has_body_to_check(&parts, info);
            // A patch or update the proxy pins to the version it read may meet a concurrent
            // write (a controller's status update) and get 409: judged again on the new
            // version and sent again, as the API server's own `GuaranteedUpdate` retries an
            // unconditional write — kubectl does not retry a 409. Only for those verbs is the
            // request head kept for it.
            let head = (to_check && matches!(info.verb.as_str(), "patch" | "update"))
                .then(|| Head::of(&parts));
            let checked = if to_check {
                // Boxed: judging (collecting the body, perhaps fetching the current object) is
                // a future of about 9 KiB; inline, every request's future — reads included —
                // would carry that space and copy it at each move.
                Box::pin(stage::run(
                    &layer.sanitizer,
                    &layer.upstream,
                    info,
                    &mut parts,
                    incoming,
                    &outbound,
                    &mut verdict,
                ))
                .await
            } else {
                Ok(crate::body::boxed(incoming))
            };
            if let (Some(rec), Some(names)) = (rec.as_ref(), verdict.named.as_ref()) {
                rec.with(|r| r.request_names(names));
            }
            // The enforced policies are recorded where Pod Security got to the write, as
            // PodSecurity writes `enforce-policy` only where its admission got: the creates
            // and updates it judges (kept when something later refuses), and every pod write
            // in a namespace whose policies are all privileged (`privileged:latest`) — not
            // reads, deletes, or an update that changes nothing it checks.
            let evaluated = verdict.pss == PssSeen::Evaluated
                || matches!(&checked, Err(Refusal::PodSecurity(_)));
            let policy = match rec.as_ref() {
                Some(rec) if evaluated => {
                    let (first, all) = pss_policy(&layer.sanitizer, info, identity);
                    if let Some(all) = all {
                        rec.with(|r| r.annotate(PSS_POLICIES, all));
                    }
                    first
                }
                Some(_) if verdict.pss == PssSeen::PrivilegedPod => {
                    Some(PRIVILEGED_LATEST.to_owned())
                }
                _ => None,
            };
            let body = match checked {
                Ok(passed) => passed,
                Err(refusal) => {
                    let body = verdict.body.take();
                    return Ok(layer.refused(refusal, rec.as_ref(), policy, body, identity, info));
                }
            };
            layer.record(&mut verdict, rec.as_ref(), policy.clone(), identity, info);
            let mut resp = call_boxed(&mut inner, Request::from_parts(parts, body)).await?;
            for _ in 0..MAX_RETRIES {
                let (Some(raw), Some(head)) = (verdict.retry.take(), head.as_ref()) else {
                    break;
                };
                // Reading the 409 to its end would give the in-flight place back (the
                // forwarder holds it until the upstream answer is read): kept for the next try.
                if resp.status() != http::StatusCode::CONFLICT {
                    break;
                }
                let place = head.extensions.get::<SharedPlace>();
                let kept = place.and_then(SharedPlace::take);
                let Some(conflict) = own_pin_conflict(resp, verdict.pins).await else {
                    return Ok(Refusal::from(UpstreamFailure::Unreachable(
                        "the connection broke during the answer",
                    ))
                    .respond());
                };
                if let (Some(place), Some(kept), Ok(())) = (place, kept, &conflict) {
                    place.restore(kept);
                }
                resp = match conflict {
                    Err(other) => other,
                    Ok(_) => {
                        tracing::info!(path = %info.path, "a write pinned to the object judged met a concurrent write or delete; judging it again");
                        let mut parts = head.parts();
                        verdict = stage::Verdict {
                            keep_body,
                            ..stage::Verdict::default()
                        };
                        let checked = Box::pin(stage::run(
                            &layer.sanitizer,
                            &layer.upstream,
                            info,
                            &mut parts,
                            http_body_util::Full::new(raw),
                            &outbound,
                            &mut verdict,
                        ))
                        .await;
                        let body = match checked {
                            Ok(passed) => passed,
                            Err(refusal) => {
                                let body = verdict.body.take();
                                return Ok(layer.refused(
                                    refusal,
                                    rec.as_ref(),
                                    policy.clone(),
                                    body,
                                    identity,
                                    info,
                                ));
                            }
                        };
                        layer.record(&mut verdict, rec.as_ref(), policy.clone(), identity, info);
                        call_boxed(&mut inner, Request::from_parts(parts, body)).await?
                    }
                };
            }
            for w in stage::warning_headers(&verdict.warnings) {
                resp.headers_mut().append(http::header::WARNING, w);
            }
            Ok(resp)
        })
    }
}

/// Judged again and sent again at most this many times after a conflict (the API server's
/// `GuaranteedUpdate` has no bound, but meets no network between its tries).
const MAX_RETRIES: usize = 4;

/// What a request is sent with, kept to send a judged write again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Head {
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        }
    }

    fn parts(&self) -> http::request::Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = self.uri.clone();
        parts.version = self.version;
        parts.headers = self.headers.clone();
        parts.extensions = self.extensions.clone();
        parts
    }
}

/// `Ok` when `resp` is the API server's 409 on one of the proxy's own `pins`: the
/// optimistic-lock conflict ("the object has been modified") on the judged version, or the
/// judged object's uid finding no object (deleted since it was read). Not a server-side
/// apply's field-manager conflict, which is the client's to resolve. `Err` with the response
/// otherwise (rebuilt when its body had to be read); `None` if the body could not be read.
async fn own_pin_conflict(
    resp: Response<Body>,
    pins: super::judge::Pins,
) -> Option<Result<(), Response<Body>>> {
    if resp.status() != http::StatusCode::CONFLICT {
        return Some(Err(resp));
    }
    let (parts, body) = resp.into_parts();
    // A Status is small; a larger body is not the conflict looked for.
    let bytes = crate::upstream::fetch::collect_limited(body, 64 * 1024)
        .await
        .ok()?;
    let status: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    // The whole message, as the API server words it (`NewConflict`: "Operation cannot be
    // fulfilled on <resource> \"<name>\": <why>"), not a phrase in it: a field manager's name in
    // an apply conflict, a webhook's denial or a client's own uid can quote any words.
    let ours = status.as_ref().is_some_and(|s| {
        let message = s["message"].as_str().unwrap_or_default();
        let fulfilled = message.starts_with(Status::CONFLICT_PREFIX);
        s["reason"] == "Conflict"
            && fulfilled
            && ((pins.version
                && message
                    .strip_suffix(Status::OPTIMISTIC_LOCK)
                    .is_some_and(|m| m.ends_with(": ")))
                || (pins.uid
                    && message.contains(": uid mismatch: the provided object specified uid ")
                    && message.ends_with(", and no existing object was found")))
    });
    if ours {
        Some(Ok(()))
    } else {
        Some(Err(Response::from_parts(parts, crate::body::full(bytes))))
    }
}

/// The inner call as a boxed future: naming `S::Future` inside the async block above trips a
/// compiler limitation (rust-lang/rust#102211: `Send` "not general enough" for the body's
/// boxed error type).
fn call_boxed<S>(inner: &mut S, req: Request<Body>) -> ResponseFuture
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    service::boxed(inner.call(req))
}

impl SanitizeLayer {
    /// A refused body: counted (enforce), noted in the audit record (with the body as received
    /// when it was decoded and the policy records it), logged; the refusal's response.
    fn refused(
        &self,
        refusal: Refusal,
        rec: Option<&AuditRecord>,
        policy: Option<String>,
        body: Option<serde_json::Value>,
        identity: &Identity,
        info: &RequestInfo,
    ) -> Response<Body> {
        if matches!(refusal, Refusal::PodSecurity(_)) {
            self.pss_seen("enforce");
        }
        if let Some(rec) = rec {
            rec.with(|r| {
                r.annotate("portcullis.io/sanitize", "refused");
                if let Some(b) = body {
                    r.request_object(b);
                }
                // A Pod Security refusal names the policy that refused, as its message does
                // (where a namespace's and a tenant's both apply, that is one of the two).
                let policy = match &refusal {
                    Refusal::PodSecurity(d) => Some(d.policy.clone()),
                    _ => policy,
                };
                if let Some(p) = policy {
                    r.annotate("pod-security.kubernetes.io/enforce-policy", p);
                }
            });
        }
        let resp = refusal.respond();
        if let Some(r) = resp.extensions().get::<crate::refusal::Refused>() {
            tracing::info!(user = %identity.user, verb = %info.verb, path = %info.path, code = r.code, reason = %r.reason, "request body refused");
        }
        resp
    }

    /// A passed body: what the stage did goes into the audit record (moving the kept body
    /// there), audit and warn violations are logged and counted.
    fn record(
        &self,
        verdict: &mut stage::Verdict,
        rec: Option<&AuditRecord>,
        policy: Option<String>,
        identity: &Identity,
        info: &RequestInfo,
    ) {
        if let Some(rec) = rec {
            rec.with(|r| {
                if verdict.inspected {
                    r.annotate("portcullis.io/sanitize", "inspected");
                }
                if let Some(b) = verdict.body.take() {
                    r.request_object(b);
                }
                // The `requestObject` is what was forwarded: the fields a strip rule removed
                // are named, so the record shows the attempt (the client's `Warning` only
                // reaches the client).
                if !verdict.stripped.is_empty() {
                    r.annotate("portcullis.io/stripped-fields", verdict.stripped.join(","));
                }
                if let Some(why) = verdict.body_omitted.take() {
                    r.annotate("portcullis.io/request-object-omitted", why);
                }
                if let Some(p) = policy {
                    r.annotate("pod-security.kubernetes.io/enforce-policy", p);
                }
                // PodSecurity writes one text; a second policy's (a namespace's and a tenant's
                // both apply) goes with every text under the proxy's own key.
                if let Some(first) = verdict.audit.first() {
                    r.annotate("pod-security.kubernetes.io/audit-violations", first.clone());
                }
                if verdict.audit.len() > 1 {
                    r.annotate(
                        "portcullis.io/pod-security-audit-violations",
                        verdict.audit.join("; "),
                    );
                }
            });
        }
        if !verdict.audit.is_empty() {
            tracing::info!(user = %identity.user, path = %info.path, violations = ?verdict.audit, "pod security audit");
            self.pss_seen("audit");
        }
        if verdict.pss_warned {
            self.pss_seen("warn");
        }
    }

    fn pss_seen(&self, mode: &'static str) {
        self.metrics
            .pod_security
            .get_or_create(&ModeLabels { mode })
            .inc();
    }
}

/// Every enforced Pod Security policy of a write, where a namespace's and a tenant's both
/// apply (`restricted:v1.18, baseline:latest`, the stricter level first).
/// `pod-security.kubernetes.io/enforce-policy` keeps PodSecurity's format — one
/// `level:version` — for whatever parses it (review).
const PSS_POLICIES: &str = "portcullis.io/pod-security-enforce-policies";

/// PodSecurity's `enforce-policy` for a pod it let through as privileged: its shortcut for a
/// namespace whose levels are all privileged names the latest version, whatever is configured.
const PRIVILEGED_LATEST: &str = "privileged:latest";

/// `level:version` of the enforced Pod Security policy for this write, if any (the stricter
/// level's, where two apply), and the list of both when two apply. A pod judged under warn /
/// audit levels only names `privileged:latest`: PodSecurity names the enforce level it ran
/// with, privileged (for workload kinds it writes none).
fn pss_policy(
    s: &Sanitizer,
    info: &RequestInfo,
    id: &Identity,
) -> (Option<String>, Option<String>) {
    let Some(kind) = super::pss::PodBearing::from_group_resource(
        &info.api_group,
        &super::judge::resource_path(info),
    ) else {
        return (None, None);
    };
    let enforce = s.modes_for(&info.namespace, id.tenant.as_deref()).enforce;
    let first = enforce
        .first()
        .map(|p| p.to_string())
        .or_else(|| (kind == super::pss::PodBearing::Pod).then(|| PRIVILEGED_LATEST.to_owned()));
    (first, enforce.both())
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::{
        refusal::Refused,
        service::{
            testing::{calls, classified, counting, send, unreachable_upstream, TestBody},
            AuditId,
        },
    };

    fn layer() -> SanitizeLayer {
        SanitizeLayer::new(
            Arc::new(Sanitizer::default()),
            unreachable_upstream(),
            Arc::new(Metrics::new()),
            false,
        )
    }

    fn write(content_type: &str, body: &'static str) -> Request<TestBody> {
        let mut req = classified("POST", "/api/v1/namespaces/default/configmaps");
        req.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        *req.body_mut() = Full::new(bytes::Bytes::from_static(body.as_bytes()));
        req.extensions_mut()
            .insert(Arc::new(crate::authz::tests::id("alice", &[])));
        req.extensions_mut()
            .insert(AuditId(http::HeaderValue::from_static("id")));
        req
    }

    /// Only the API server's own wording of a conflict on one of the proxy's pins is retried:
    /// not the same words quoted by a field manager's name, a webhook, or a client's uid.
    #[tokio::test]
    async fn only_a_conflict_on_the_proxys_own_pin_is_retried() {
        let conflict = |message: &str| {
            let status = serde_json::json!({"kind": "Status", "status": "Failure",
                "reason": "Conflict", "code": 409, "message": message});
            let mut resp = Response::new(crate::body::full(status.to_string()));
            *resp.status_mut() = http::StatusCode::CONFLICT;
            resp
        };
        let both = crate::sanitize::judge::Pins {
            version: true,
            uid: true,
        };
        let modified = "Operation cannot be fulfilled on pods \"p1\": the object has been modified; please apply your changes to the latest version and try again";
        let gone = "Operation cannot be fulfilled on pods \"p1\": uid mismatch: the provided object specified uid u1, and no existing object was found";
        for (message, pins, retried) in [
            (modified, both, true),
            (gone, both, true),
            (modified, crate::sanitize::judge::Pins { uid: true, version: false }, false),
            (gone, crate::sanitize::judge::Pins { uid: false, version: true }, false),
            ("Apply failed with 1 conflict: conflict with \"uid mismatch: the provided object specified uid x, and no existing object was found\": .spec.replicas", both, false),
            ("admission webhook \"w\" denied the request: the object has been modified; please apply your changes to the latest version and try again", both, false),
            ("Operation cannot be fulfilled on pods \"p1\": uid mismatch: the provided object specified uid the object has been modified; please apply your changes to the latest version and try again, and no existing object was found", crate::sanitize::judge::Pins { uid: false, version: true }, false),
        ] {
            let got = own_pin_conflict(conflict(message), pins).await;
            assert_eq!(got.map(|r| r.is_ok()), Some(retried), "{message}");
        }
    }

    #[tokio::test]
    async fn a_body_it_cannot_read_is_refused_before_the_upstream() {
        let (inner, seen) = counting::<Body>();
        let resp = send(layer().layer(inner), write("text/plain", "hello")).await;
        assert_eq!(resp.status(), 415);
        assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "sanitize");
        let dup = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"}}"#;
        let (inner2, seen2) = counting::<Body>();
        let resp = send(layer().layer(inner2), write("application/json", dup)).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(calls(&seen) + calls(&seen2), 0);
    }

    #[tokio::test]
    async fn a_write_without_content_type_is_read_as_json_but_a_patch_is_refused() {
        let (inner, seen) = counting::<Body>();
        let mut req = write(
            "application/json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
        );
        req.headers_mut().remove("content-type");
        let resp = send(layer().layer(inner), req).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(calls(&seen), 1);
        // Strict parsing still applies.
        let (inner, seen) = counting::<Body>();
        let dup = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"}}"#;
        let mut req = write("application/json", dup);
        req.headers_mut().remove("content-type");
        assert_eq!(send(layer().layer(inner), req).await.status(), 400);
        let mut req = write("application/json", "{}");
        req.headers_mut().remove("content-type");
        *req.method_mut() = http::Method::PATCH;
        let (inner2, seen2) = counting::<Body>();
        assert_eq!(send(layer().layer(inner2), req).await.status(), 415);
        assert_eq!(calls(&seen) + calls(&seen2), 0);
    }

    #[tokio::test]
    async fn what_goes_on_is_the_canonical_json_of_what_was_judged() {
        let svc = layer().layer(tower::service_fn(|req: Request<Body>| async move {
            let len = req.headers()["content-length"].clone();
            let ct = req.headers()["content-type"].clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(ct, "application/json");
            assert_eq!(len, body.len().to_string().as_str());
            assert_eq!(
                &body[..],
                br#"{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap","metadata":{"name":"a"}}"#
            );
            Ok::<_, Infallible>(Response::new(crate::body::empty()))
        }));
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n";
        assert_eq!(
            send(svc, write("application/yaml", yaml)).await.status(),
            200
        );
    }
}
