//! The audit layers: one `audit.k8s.io/v1` event per request, refusals included.
//!
//! [`AuditLayer`] starts the request's [`AuditRecord`] (the request line as received), puts it
//! in the request extensions for the layers below to fill in (with a
//! [`Watcher`](crate::upstream::Watcher) through which the upstream client records a
//! stalled-stream reset when the pump makes it, and that the request left the proxy), and
//! when the response comes back records the outcome (a [`Refused`] marker's stage and Status, or the status code) and emits
//! `ResponseComplete` once the answer is complete:
//!
//! * a refusal (no upstream body): before its head is released, as the answer is complete;
//! * an ordinary answer: after its last byte, by `complete.rs` (small answers are held whole;
//!   a longer one streams and only its last frame waits for the event);
//! * a long-running request whose stream started: `ResponseStarted` before the head, and
//!   `ResponseComplete` when the stream ends (a guard attached to the forwarder's
//!   [`StreamGuards`]); any other answer to an authenticated long-running request (a refused
//!   watch, an exec the API server answered 404) has its `ResponseStarted` too, before its
//!   `ResponseComplete`, as kube-apiserver's audit filter writes one whenever a long-running
//!   request's status is written;
//! * a request whose client went away before its head was released (hyper drops the request's
//!   future: the client reset its stream or closed its connection while the upstream was
//!   answering, or while the answer was read ahead or its event written): `ResponseComplete`
//!   all the same, from what the record holds, annotated `portcullis.io/response-aborted:
//!   client-gone` unless it was already taken — the upstream may have carried out the request.
//!
//! * a request whose handling panicked below: one `Panic` event from what the record holds
//!   (500, `InternalError`, `APIServer panic'd: …`, as kube-apiserver's audit filter writes
//!   it), and the 500 answer.
//!
//! [`ReceivedLayer`] emits `RequestReceived`.
//!
//! Rejects: only when a blocking-strict sink cannot make an event durable, so that no client
//! holds a complete answer whose event was lost: 503 + Retry-After (`Refusal::AuditUnavailable`)
//! for an answer whose head is still held (`RequestReceived`, `ResponseStarted`, a refusal, an
//! answer held whole) when nothing was forwarded or it was a read; 500 without Retry-After
//! (`Refusal::AuditUnrecorded`) when a forwarded request that is not a read may have been
//! carried out (a retry would run it again); a streamed answer is cut off before its end
//! instead. While a strict sink of this replica is failing, a request that is not a read and
//! whose `RequestReceived` the policy omits is refused (503) before it is forwarded. Without
//! an `audit:` section both layers pass requests through untouched.

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{
    complete,
    record::{self, CompleteOnDrop},
    Audit, AuditRecord, Recorder, Stage,
};
use crate::{
    body::Body,
    refusal::{Refusal, Refused},
    service::{self, AuditId, Classified, ResponseFuture},
    upstream::StreamGuards,
};

/// Starts, fills in and emits each request's event.
#[derive(Clone)]
pub struct AuditLayer {
    audit: Option<Arc<Audit>>,
    /// Whether the client's `X-Forwarded-For` chain goes into `sourceIPs`.
    trust_forwarded_for: bool,
}

impl AuditLayer {
    pub fn new(audit: Option<Arc<Audit>>, trust_forwarded_for: bool) -> AuditLayer {
        AuditLayer {
            audit,
            trust_forwarded_for,
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    layer: AuditLayer,
}

impl<S, B> Service<Request<B>> for AuditService<S>
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

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        let Some(audit) = &self.layer.audit else {
            return service::boxed(self.inner.call(req));
        };
        let rec = AuditRecord::new(start(audit.clone(), &req, self.layer.trust_forwarded_for));
        req.extensions_mut().insert(rec.clone());
        req.extensions_mut().insert(rec.watcher());
        // The layers below may panic while building their future (a synchronous check) as
        // well as while it runs: both are this request's `Panic` event.
        let inner = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(inner) => inner,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                return service::boxed(async move { Ok(panicked(rec, what).await) });
            }
        };
        let gone = ClientGone(Some(rec.clone()));
        service::boxed(async move {
            // A panic below is this request's one `Panic` event, with everything the record
            // holds (as kube-apiserver's audit filter records it), and the 500 — not a
            // `client-gone` completion here plus an anonymous event from the layer above.
            let resp = match futures_util::FutureExt::catch_unwind(AssertUnwindSafe(inner)).await {
                Ok(resp) => resp?,
                Err(panic) => {
                    gone.disarm();
                    let what = panic_message(panic.as_ref());
                    return Ok(panicked(rec, what).await);
                }
            };
            let resp = finish(rec, resp).await;
            gone.disarm();
            Ok(resp)
        })
    }
}

/// The `Panic` event of a request whose handling panicked below this layer, and its 500.
async fn panicked(rec: AuditRecord, what: String) -> Response<Body> {
    tracing::error!(panic = %what, "request handler panicked");
    rec.with(|r| r.panicked(&what));
    let _ = rec.emit(Stage::Panic).await;
    Refusal::Panic.respond()
}

/// A panic's message (`panic!` with a literal or a formatted one), empty for anything else.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Held by the request's future until its head is released: dropped before that (the client
/// went away and hyper dropped the future), it emits `ResponseComplete` as `client-gone`,
/// unless the event was already taken.
struct ClientGone(Option<AuditRecord>);

impl ClientGone {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        if let Some(rec) = self.0.take() {
            rec.aborted(record::ABORTED_CLIENT);
        }
    }
}

/// The event as the request arrived: id, request line, user agent, source addresses.
fn start<B>(audit: Arc<Audit>, req: &Request<B>, trust_forwarded_for: bool) -> Recorder {
    let mut ips: Vec<String> = Vec::new();
    // As the API server's `SourceIPs` (apimachinery `utilnet.SourceIPs`): every entry of the
    // first `X-Forwarded-For` header that is an IP, in order, repeats included; then
    // `X-Real-Ip` unless that IP is listed already; then the peer unless it is already the
    // *last* entry — so the last one is always the address the proxy saw, the one a client
    // cannot forge (the audit type's doc: all but the last can be).
    let mut seen: Vec<std::net::IpAddr> = Vec::new();
    if trust_forwarded_for {
        let ip_of = |text: &str| {
            text.trim()
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| ip.to_canonical())
        };
        if let Some(v) = req.headers().get("x-forwarded-for") {
            for ip in String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .filter_map(ip_of)
            {
                seen.push(ip);
                ips.push(ip.to_string());
            }
        }
        if let Some(ip) = req
            .headers()
            .get("x-real-ip")
            .and_then(|v| ip_of(&String::from_utf8_lossy(v.as_bytes())))
        {
            if !seen.contains(&ip) {
                seen.push(ip);
                ips.push(ip.to_string());
            }
        }
    }
    if let Some(conn) = service::conn(req) {
        if seen.last() != Some(&conn.peer.ip()) {
            // The IP's text, written once per connection (formatting it here cost ≈ 1.3 k
            // instructions per request).
            ips.push(match conn.peer_ip.to_str() {
                Ok(ip) => ip.to_owned(),
                Err(_) => conn.peer.ip().to_string(),
            });
        }
    }
    let id = req
        .extensions()
        .get::<AuditId>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| http::HeaderValue::from_static(""));
    Recorder::new(
        audit,
        &id,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        req.method(),
        req.headers().get(http::header::USER_AGENT),
        ips,
    )
    .on_connection(service::conn(req).cloned())
}

/// Response headers of the replaced answer that a strict-audit 503 carries on.
const KEPT_ON_AUDIT_FAILURE: [&str; 3] = ["ratelimit-policy", "ratelimit", "warning"];

/// Record the outcome and emit (see the module doc for when). In blocking-strict mode an
/// answer held whole is not released until its event is durable; if it cannot be, the answer
/// is 503.
async fn finish(rec: AuditRecord, mut resp: Response<Body>) -> Response<Body> {
    let long_running = resp
        .extensions()
        .get::<Classified>()
        .is_some_and(|c| c.long_running);
    let streams = resp.extensions_mut().remove::<StreamGuards>();
    let code = resp.status().as_u16();
    let stream_started = long_running && code < 300 && streams.is_some();
    let (wants_body, proxied, deletes, recorded, started_event, retry_safe, forwarded) =
        rec.with(|r| {
            if let Some(refused) = resp.extensions().get::<Refused>() {
                r.refused(refused);
            }
            r.status_code(code);
            if let (true, Some(streams)) = (stream_started, &streams) {
                // Emits ResponseComplete from the record as it is when the stream ends.
                streams.hold(Box::new(CompleteOnDrop::new(rec.clone())));
            }
            let eval = r.evaluate();
            (
                r.wants_response_body(),
                r.proxied(),
                r.deletes(),
                eval.records(Stage::ResponseComplete),
                // kube-apiserver writes `ResponseStarted` for every answer to a long-running
                // request its audit filter saw (a refused watch, a 404 exec too) — the filter sits
                // after authentication, so not for a request refused before it.
                long_running && r.is_authenticated() && eval.records(Stage::ResponseStarted),
                // Asked now: the event leaves the record when it is emitted.
                r.retry_safe(),
                r.has_left_the_proxy(),
            )
        });
    drop(streams);
    if !started_event && !recorded {
        // Nothing to write: the answer goes as it is.
        return resp;
    }
    let outcome = if stream_started {
        match rec.emit(Stage::ResponseStarted).await {
            Ok(()) => Ok(resp),
            Err(err) => Err((err, resp)),
        }
    } else {
        // Refusals (and streams that never started) are small answers: held whole.
        let wanted = if proxied {
            complete::Wanted::Nothing
        } else if wants_body && !long_running {
            complete::Wanted::Object
        } else if deletes {
            complete::Wanted::AnyStatus
        } else {
            complete::Wanted::Status
        };
        // Its ResponseStarted, if any, once its Status is read (`deliver`).
        complete::deliver(rec.clone(), resp, wanted, started_event).await
    };
    let (err, replaced) = match outcome {
        Ok(resp) => return resp,
        Err(failed) => failed,
    };
    // Forwarded (the upstream client marked it: an answer came, or a try may have reached the
    // API server) and not a read: the API server may have carried it out, so no retry is
    // invited.
    let refusal = if forwarded && !retry_safe {
        Refusal::AuditUnrecorded
    } else {
        Refusal::AuditUnavailable
    };
    tracing::error!(%err, code = refusal.status().code, "audit event could not be recorded; answer withheld");
    let mut refused = refusal.respond();
    if let Some(marker) = refused.extensions().get::<Refused>() {
        // ResponseComplete, still to come, tells what the client got.
        rec.with(|r| r.refused(marker));
    }
    if !stream_started {
        // A failed ResponseStarted left no ResponseComplete behind (a stream's comes when its
        // guard drops with the replaced answer): write it, so that the other sinks, which may
        // have taken ResponseStarted, learn the outcome — the API server always writes it.
        // After a failed ResponseComplete this finds it taken and does nothing.
        if let Err(err) = rec.complete().await {
            tracing::error!(%err, "audit ResponseComplete of the 503 could not be recorded");
        }
    }
    // What the layers below added on the way out (rate-limit state, Pod Security warnings)
    // still describes this request; the 503 keeps it.
    for name in KEPT_ON_AUDIT_FAILURE {
        for value in replaced.headers().get_all(name) {
            refused.headers_mut().append(name, value.clone());
        }
    }
    refused
}

/// Emits `RequestReceived` once the caller is authenticated (where kube-apiserver's audit
/// filter sits), when the policy records that stage; a strict sink that cannot take it refuses
/// the request before anything is judged or forwarded. When the policy omits that stage, an
/// audited request is refused here (503, `Retry-After`) while a strict sink of this replica is
/// failing ([`Recorder::held_back_by_audit`]): its `ResponseComplete` would fail after the API
/// server carried it out, or after a long answer had all but streamed.
#[derive(Clone, Copy, Default)]
pub struct ReceivedLayer;

impl<S> Layer<S> for ReceivedLayer {
    type Service = ReceivedService<S>;
    fn layer(&self, inner: S) -> ReceivedService<S> {
        ReceivedService { inner }
    }
}

#[derive(Clone)]
pub struct ReceivedService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ReceivedService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let Some(rec) = req.extensions().get::<AuditRecord>().cloned() else {
            return service::boxed(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        service::boxed(async move {
            if let Err(err) = rec.emit(Stage::RequestReceived).await {
                tracing::error!(%err, "audit event could not be recorded; answering 503");
                return Ok(Refusal::AuditUnavailable.respond());
            }
            if let Some(why) = rec.with(Recorder::held_back_by_audit) {
                tracing::warn!(%why, "a strict audit sink is failing; a write refused before forwarding");
                return Ok(Refusal::AuditUnavailable.respond());
            }
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        audit::{
            sink::{file::FileSinkConfig, DeliveryMode, SinkKind, SinkSpec},
            Auditor, Policy,
        },
        service::testing::{request, send, TestBody},
    };

    /// Audit to a file in `dir` (blocking: each event is written before the answer).
    fn audit(dir: &std::path::Path, policy: &str) -> Arc<Audit> {
        let auditor = Auditor::start(vec![SinkSpec {
            name: "file".into(),
            kind: SinkKind::File(FileSinkConfig {
                path: dir.join("audit.log"),
                max_size_bytes: 0,
                max_age_days: 0,
                max_backups: 0,
                signing_key: None,
                checkpoint_every_events: 0,
                checkpoint_interval: Duration::ZERO,
                checkpoint_copy: None,
            }),
            mode: DeliveryMode::Blocking,
        }])
        .unwrap();
        Arc::new(Audit {
            policy: Arc::new(Policy::from_yaml(policy).unwrap()),
            auditor: Arc::new(auditor),
            sessions: None,
        })
    }

    fn events(dir: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v["kind"] == "Event")
            .collect()
    }

    const METADATA: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

    #[tokio::test]
    async fn a_refusal_below_is_recorded_with_its_stage_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let svc = AuditLayer::new(Some(audit(dir.path(), METADATA)), false).layer(
            tower::service_fn(|_req: Request<TestBody>| async {
                Ok::<_, Infallible>(crate::refusal::forbidden_for_test("no"))
            }),
        );
        let resp = send(svc, request("GET", "/api/v1/pods")).await;
        assert_eq!(resp.status(), 403);
        let all = events(dir.path());
        assert_eq!(all.len(), 1, "{all:?}");
        let e = &all[0];
        assert_eq!(e["stage"], "ResponseComplete");
        assert_eq!(e["annotations"]["portcullis.io/rejected-by"], "authz");
        assert_eq!(e["responseStatus"]["code"], 403);
        assert_eq!(e["responseStatus"]["message"], "no");
        assert_eq!(e["sourceIPs"][0], "192.0.2.1");
    }

    /// A long-running request answered without a stream: kube-apiserver's audit filter writes
    /// `ResponseStarted` whenever a long-running request's status is written, refusals
    /// included, then `ResponseComplete`; a request refused before authentication (where that
    /// filter sits) has only its `ResponseComplete`.
    #[tokio::test]
    async fn a_refused_long_running_request_has_response_started_once_authenticated() {
        for authenticated in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let inner = tower::service_fn(move |req: Request<TestBody>| async move {
                let rec = req.extensions().get::<AuditRecord>().unwrap();
                if authenticated {
                    rec.with(|r| r.authenticated(&crate::authz::tests::id("alice", &[])));
                }
                Ok::<_, Infallible>(crate::refusal::forbidden_for_test("no"))
            });
            let svc = AuditLayer::new(Some(audit(dir.path(), METADATA)), false)
                .layer(crate::classify::ClassifyLayer.layer(inner));
            let resp = send(svc, request("GET", "/api/v1/pods?watch=true")).await;
            assert_eq!(resp.status(), 403);
            let all = events(dir.path());
            let stages: Vec<_> = all.iter().map(|e| e["stage"].as_str().unwrap()).collect();
            if authenticated {
                assert_eq!(stages, ["ResponseStarted", "ResponseComplete"], "{all:?}");
                assert_eq!(all[0]["responseStatus"]["code"], 403);
                assert_eq!(all[0]["responseStatus"]["message"], "no");
                assert_eq!(all[0]["verb"], "watch");
            } else {
                assert_eq!(stages, ["ResponseComplete"], "{all:?}");
            }
        }
    }

    #[tokio::test]
    async fn request_received_is_written_before_the_request_goes_further() {
        let dir = tempfile::tempdir().unwrap();
        let a = audit(dir.path(), METADATA);
        let log = dir.path().to_owned();
        let inner = tower::service_fn(move |_req: Request<TestBody>| {
            let seen = events(&log);
            async move {
                assert_eq!(seen.len(), 1);
                assert_eq!(seen[0]["stage"], "RequestReceived");
                Ok::<_, Infallible>(Response::new(crate::body::empty()))
            }
        });
        let svc = AuditLayer::new(Some(a), false).layer(ReceivedLayer.layer(inner));
        assert_eq!(send(svc, request("GET", "/api")).await.status(), 200);
        let stages: Vec<_> = events(dir.path())
            .iter()
            .map(|e| e["stage"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    }
}
