//! The pipeline's audit recorder: builds the one `audit.k8s.io/v1` event of a request as the
//! stages learn about it, asks the policy what to record, and emits it through the
//! [`Auditor`](crate::audit::Auditor) at the stages the apiserver uses.
//!
//! Field semantics follow the apiserver (`audit/request.go`): `auditID` is our `Audit-ID`,
//! `requestURI` the path and query as sent, `verb` the Kubernetes verb (the lower-cased method
//! for non-resource and unclassifiable requests), `user` the authenticated caller (empty when
//! authentication failed), `sourceIPs` the forwarded-for chain when trusted and the peer,
//! `objectRef` for resource requests, `responseStatus` the final status (with reason and
//! message when portcullis refused). Our own facts are annotations:
//!
//! | annotation | when |
//! |---|---|
//! | `authorization.k8s.io/decision` = `allow` / `forbid`, `authorization.k8s.io/reason` | after authorization |
//! | `portcullis.io/method` (`x509` / `jwt`), `portcullis.io/issuer`, `portcullis.io/token-id`, `portcullis.io/cert-fingerprint` | after authentication |
//! | `portcullis.io/tenant`, `portcullis.io/scope` (the token's scope, JSON) | when set |
//! | `portcullis.io/rejected-by` = classify / load-shed / authn / authz / ratelimit / sanitize / audit / upstream (the refusal table, `crate::refusal`) | when portcullis refused |
//! | `portcullis.io/ratelimit` = allowed / rejected / shadow-rejected | with rate limits configured |
//! | `portcullis.io/sanitize` = inspected / refused | for write bodies |
//! | `pod-security.kubernetes.io/enforce-policy`, `.../audit-violations` | as the apiserver's PodSecurity plugin writes them |
//! | `portcullis.io/exec-command` = the argv as a JSON array of strings (`["sh","-c","id"]`) | every `pods/exec` request, from its `command` parameters |
//! | `portcullis.io/response-aborted` = `stalled` / `client-gone` / `upstream-error` / `shutdown` | a `ResponseComplete` whose answer did not end normally (`shutdown`: a session still open when the shutdown grace ran out, ended by the proxy) |
//! | `portcullis.io/session-recording` = `{"file","sha256","bytes","truncated","droppedFrames"}` | a recorded exec / attach session's `ResponseComplete` (`audit::session`), via [`EndAnnotations`] |
//!
//! Never recorded: request headers (so no `Authorization`, no token), bodies below level
//! `Request`, and — with the default policy — any body of Secrets, ConfigMaps, TokenReviews
//! or TokenRequests.
//!
//! Stages: `RequestReceived` (when the policy records it, emitted by `audit::ReceivedLayer`),
//! `ResponseStarted` and `ResponseComplete` (by `audit::AuditLayer` and `audit::complete`:
//! after the answer's last byte; for a stream, when it ends), `Panic` (by the request-id
//! layer). `ResponseComplete` is taken once, by whichever end comes first. Where these sit in the
//! request's life is `crate::stack`'s to say.

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;
use serde_json::Value;

use crate::{
    audit::{
        event::ResponseStatus,
        sink::{pending::PendingGuard, Prepared},
        Attributes, AuditError, Auditor, Event, Level, MicroTime, ObjectNames, ObjectReference,
        Policy, RuleEvaluation, Stage, UserInfo,
    },
    authn::{identity::Method, Identity},
    json_depth::nests_deeper,
    k8s::request::RequestInfo,
    refusal::Refused,
};

/// The annotation holding an exec's argv.
pub const EXEC_COMMAND_ANNOTATION: &str = "portcullis.io/exec-command";

/// The `command` parameters of a request URI, in order, read as the API server reads them
/// (`k8s::request::Query`: Go's `URL.Query()`, `+` a space, a pair holding a raw `;` dropped)
/// — which is how it hands them to the kubelet. A pair Go drops must not show here as part of
/// the command (`echo+hi;` would hide what runs).
pub fn exec_command(request_uri: &str) -> Vec<String> {
    let Ok(uri) = request_uri.parse::<http::Uri>() else {
        return Vec::new();
    };
    crate::k8s::request::Query::of(&uri)
        .all("command")
        .map(str::to_owned)
        .collect()
}

/// Deepest request or response object kept in an event (the event adds a level or two around
/// it; JSON readers commonly stop at 128).
const MAX_OBJECT_DEPTH: usize = 100;

/// An event's `stageTimestamp`, as kube-apiserver's `processAuditEvent` sets it:
/// `RequestReceived` carries the time the request was received (so a policy reader can pair
/// it with `requestReceivedTimestamp`), every later stage the time it is written.
fn stage_timestamp(stage: Stage, received: MicroTime) -> MicroTime {
    if stage == Stage::RequestReceived {
        received
    } else {
        MicroTime::now()
    }
}

/// Longest `userAgent` logged (the API server's `maxUserAgentLength`), and what replaces the
/// rest.
const MAX_USER_AGENT: usize = 1024;
const USER_AGENT_TRUNCATED: &str = "...TRUNCATED";

/// The `User-Agent` as the API server logs it: cut after 1024 bytes with `...TRUNCATED`, bytes
/// that are not UTF-8 written as U+FFFD (as Go's JSON encoder does) rather than the whole
/// value dropped.
fn user_agent_as_logged(v: &HeaderValue) -> String {
    let bytes = v.as_bytes();
    if bytes.len() <= MAX_USER_AGENT {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::from_utf8_lossy(&bytes[..MAX_USER_AGENT]).into_owned();
    out.push_str(USER_AGENT_TRUNCATED);
    out
}

/// The audit policy and the running sinks.
pub struct Audit {
    pub policy: Arc<Policy>,
    pub auditor: Arc<Auditor>,
    /// `audit.session_recording` (None: sessions are never recorded).
    pub sessions: Option<Arc<crate::audit::session::SessionSettings>>,
}

/// Annotations known only when a stream ends (a session recording's file and digest): its
/// `ResponseComplete` event carries them. Shared by the stream's owner and the event's guard.
#[derive(Clone, Default)]
pub struct EndAnnotations(Arc<Mutex<Vec<(String, String)>>>);

impl EndAnnotations {
    /// Put `key` on the stream's `ResponseComplete` event (call before the stream's guards
    /// are dropped).
    pub fn annotate(&self, key: &str, value: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key.to_owned(), value));
    }
}

/// One request's event under construction.
pub struct Recorder {
    audit: Arc<Audit>,
    event: Event,
    eval: RuleEvaluation,
    evaluated: bool,
    /// The classified request, for policy evaluation.
    info: Option<Arc<RequestInfo>>,
    /// `ResponseComplete` was taken (it is emitted once, by whichever end comes first: the
    /// last frame, an abort, a stalled-stream reset, the end of a stream).
    completed: bool,
    /// The request may have reached the API server (marked by the upstream client).
    left_the_proxy: bool,
    /// Annotations known only when a stream ends (a session recording's digest).
    at_end: EndAnnotations,
    /// The request's connection, for the end of its shutdown grace (`ConnInfo::cutoff`): an
    /// answer cut after it was cut by the proxy's shutdown, not by the client
    /// ([`ABORTED_SHUTDOWN`]). Shared with the connection, not copied per request.
    conn: Option<Arc<crate::server::ConnInfo>>,
    /// This request's `ResponseComplete` is still to come until the record is gone (every
    /// holder that takes the event emits it, or hands it to a detached emit, before it lets
    /// the record go): the auditor's shutdown waits for it, so a request the drain cuts still
    /// has its event written before the sinks stop.
    _pending: PendingGuard,
}

impl crate::upstream::Watch for Mutex<Recorder> {
    fn left_the_proxy(&self) {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .left_the_proxy = true;
    }

    fn stalled(&self) {
        aborted(self, ABORTED_STALLED);
    }
}

/// The record shared by the layers of one request (a request extension): each layer adds what
/// it learned; the audit layer emits it. Locked only for short, synchronous updates.
#[derive(Clone)]
pub struct AuditRecord(Arc<Mutex<Recorder>>);

impl AuditRecord {
    pub fn new(rec: Recorder) -> AuditRecord {
        AuditRecord(Arc::new(Mutex::new(rec)))
    }

    /// Update the record. A panic elsewhere while it was locked leaves it usable: every
    /// update is a plain field write, never half-done in a way that matters to the event.
    pub fn with<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// What the upstream client tells this record through (this record, shared: no
    /// allocation): the request left the proxy, its stalled response was reset.
    pub fn watcher(&self) -> crate::upstream::Watcher {
        crate::upstream::Watcher(self.0.clone())
    }

    /// Emit the event at `stage` if the policy records it; `Err` only from a strict sink.
    pub async fn emit(&self, stage: Stage) -> Result<(), AuditError> {
        let Some((auditor, prepared)) = self.with(|r| r.prepared_for(stage)) else {
            return Ok(());
        };
        auditor.emit_prepared(prepared).await
    }

    /// The `ResponseComplete` event as it stands now, if not taken yet: a future that emits
    /// it (owning everything, so it may outlive the caller). `Err` only from a strict sink.
    pub fn complete(&self) -> impl std::future::Future<Output = Result<(), AuditError>> + Send {
        let taken = self.with(Recorder::take_complete);
        async move {
            match taken {
                Some((auditor, event)) => auditor.emit(event).await,
                None => Ok(()),
            }
        }
    }

    /// The answer ended abnormally (`how`: [`ABORTED_STALLED`], [`ABORTED_CLIENT`],
    /// [`ABORTED_UPSTREAM`]): unless `ResponseComplete` was already taken, annotate it and
    /// emit it now without waiting — nobody is left to answer.
    pub fn aborted(&self, how: &str) {
        aborted(&self.0, how);
    }
}

/// [`AuditRecord::aborted`] on the record's lock.
fn aborted(rec: &Mutex<Recorder>, how: &str) {
    let taken = {
        let mut r = rec.lock().unwrap_or_else(PoisonError::into_inner);
        if r.completed {
            return;
        }
        // Dropped past its connection's cutoff: the proxy's drain ended it, not the client.
        let how = if how == ABORTED_CLIENT && r.cut_by_shutdown() {
            ABORTED_SHUTDOWN
        } else {
            how
        };
        r.annotate(ABORTED_ANNOTATION, how);
        r.take_complete()
    };
    if let Some((auditor, event)) = taken {
        auditor.emit_detached(event);
    }
}

/// The annotation of a `ResponseComplete` whose answer did not end normally.
pub const ABORTED_ANNOTATION: &str = "portcullis.io/response-aborted";
/// The proxy reset the answer: its client read nothing for `upstream.stalled_stream_timeout`.
pub const ABORTED_STALLED: &str = "stalled";
/// The client went away (closed, reset its stream) before the last byte.
pub const ABORTED_CLIENT: &str = "client-gone";
/// The upstream broke off mid-body; the client's answer ended in an error.
pub const ABORTED_UPSTREAM: &str = "upstream-error";
/// The proxy ended the stream: it was still open when the shutdown grace ran out.
pub const ABORTED_SHUTDOWN: &str = "shutdown";

impl Recorder {
    /// Start recording: the request line as received.
    pub fn new(
        audit: Arc<Audit>,
        audit_id: &HeaderValue,
        request_uri: String,
        method: &http::Method,
        user_agent: Option<&HeaderValue>,
        source_ips: Vec<String>,
    ) -> Recorder {
        let now = MicroTime::now();
        let event = Event {
            audit_id: audit_id.to_str().unwrap_or_default().to_owned(),
            request_uri,
            verb: method.as_str().to_ascii_lowercase(),
            user_agent: user_agent.map(user_agent_as_logged).unwrap_or_default(),
            source_ips,
            request_received_timestamp: now,
            stage_timestamp: now,
            ..Event::blank(now)
        };
        Recorder {
            _pending: audit.auditor.pending_event(),
            audit,
            event,
            eval: RuleEvaluation {
                level: Level::None,
                omit_stages: Default::default(),
                omit_managed_fields: false,
            },
            evaluated: false,
            info: None,
            completed: false,
            left_the_proxy: false,
            at_end: EndAnnotations::default(),
            conn: None,
        }
    }

    /// The record of a request on `conn` (whose shutdown grace ends at its `cutoff`).
    pub fn on_connection(mut self, conn: Option<Arc<crate::server::ConnInfo>>) -> Recorder {
        self.conn = conn;
        self
    }

    /// Whether the request's connection is past its shutdown cutoff: what ends now, the
    /// proxy's drain ended.
    fn cut_by_shutdown(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.cutoff.is_reached())
    }

    /// The request was classified.
    pub fn classified(&mut self, info: Arc<RequestInfo>) {
        self.event.verb = info.audited_verb().to_owned();
        self.event.object_ref = ObjectReference::from_request(&info);
        if info.is_resource_request && info.resource == "pods" && info.subresource == "exec" {
            let argv = exec_command(&self.event.request_uri);
            // A list of strings always serializes.
            let json = serde_json::to_string(&argv).unwrap_or_default();
            self.event
                .annotations
                .insert(EXEC_COMMAND_ANNOTATION.to_owned(), json);
        }
        self.info = Some(info);
    }

    /// The caller was authenticated.
    pub fn authenticated(&mut self, id: &Identity) {
        self.event.user = UserInfo::from(id);
        let a = &mut self.event.annotations;
        match &id.method {
            Method::ClientCertificate { fingerprint } => {
                a.insert("portcullis.io/method".into(), "x509".into());
                a.insert("portcullis.io/cert-fingerprint".into(), fingerprint.clone());
            }
            Method::Jwt { issuer, token_id } => {
                a.insert("portcullis.io/method".into(), "jwt".into());
                a.insert("portcullis.io/issuer".into(), issuer.clone());
                if !token_id.is_empty() {
                    a.insert("portcullis.io/token-id".into(), token_id.clone());
                }
            }
        }
        if let Some(t) = &id.tenant {
            a.insert("portcullis.io/tenant".into(), t.clone());
        }
        if let Some(scope) = &id.scope {
            if let Ok(s) = serde_json::to_string(scope) {
                a.insert("portcullis.io/scope".into(), s);
            }
        }
    }

    /// The identity the caller impersonates (`kubectl --as`), recorded as the API server
    /// does: `user` stays the caller, `impersonatedUser` is whom the request runs as.
    pub fn impersonated(&mut self, id: &Identity) {
        self.event.impersonated_user = Some(UserInfo::from(id));
    }

    /// Evaluate the policy (once the user and the request are known, or at the end).
    pub fn evaluate(&mut self) -> RuleEvaluation {
        if !self.evaluated {
            let info = self.info.as_deref();
            let path = self.event.request_uri.split('?').next().unwrap_or_default();
            let attrs = match info {
                Some(info) => Attributes::from_request(
                    info,
                    &self.event.user.username,
                    &self.event.user.groups,
                ),
                None => Attributes {
                    user: &self.event.user.username,
                    groups: &self.event.user.groups,
                    verb: &self.event.verb,
                    path,
                    ..Attributes::default()
                },
            };
            self.eval = self.audit.policy.evaluate(&attrs);
            self.evaluated = true;
        }
        self.eval
    }

    /// Whether the request body should be kept for `requestObject`.
    pub fn wants_request_body(&self) -> bool {
        self.eval.level >= Level::Request
    }

    /// Whether the response body should be kept for `responseObject`.
    pub fn wants_response_body(&self) -> bool {
        self.eval.level >= Level::RequestResponse
    }

    /// Where annotations learned at the end of this request's stream go.
    pub fn at_stream_end(&self) -> EndAnnotations {
        self.at_end.clone()
    }

    /// The session-recording settings, when sessions may be recorded.
    pub fn session_settings(&self) -> Option<Arc<crate::audit::session::SessionSettings>> {
        self.audit.sessions.clone()
    }

    pub fn annotate(&mut self, key: &str, value: impl Into<String>) {
        self.event.annotations.insert(key.to_owned(), value.into());
    }

    /// The authorization decision, in the apiserver's annotation words.
    pub fn decision(&mut self, allowed: bool, reason: &str) {
        self.annotate(
            "authorization.k8s.io/decision",
            if allowed { "allow" } else { "forbid" },
        );
        if !reason.is_empty() {
            self.annotate("authorization.k8s.io/reason", reason);
        }
    }

    /// Portcullis refused the request (`by` is the refusing stage).
    pub fn refused(&mut self, refused: &Refused) {
        self.annotate("portcullis.io/rejected-by", refused.by);
        let mut rs = ResponseStatus::failure(refused.code, &refused.reason, &refused.message);
        rs.status = "Failure".to_owned();
        self.event.response_status = Some(rs);
    }

    /// The request body was decoded: its `metadata` completes `objectRef` where the URL left
    /// a field empty (`LogRequestObject`), at every level from `Metadata` up and whether or not
    /// the body itself is recorded.
    pub fn request_names(&mut self, names: &ObjectNames) {
        if let Some(r) = self.event.object_ref.as_mut() {
            r.complete_from(names);
        }
    }

    pub fn request_object(&mut self, v: Value) {
        self.event.request_object = self.within_depth(v, "request");
    }

    pub fn response_object(&mut self, v: Value) {
        self.event.response_object = self.within_depth(v, "response");
    }

    /// `v` unless it nests deeper than [`MAX_OBJECT_DEPTH`]: the event line around it must stay
    /// within what a JSON reader with serde_json's default limit (128 levels) reads — `audit
    /// verify` and `audit query` among them — or the signed line would read as not JSON.
    /// Left out with `portcullis.io/<which>-object-omitted` saying why.
    fn within_depth(&mut self, v: Value, which: &str) -> Option<Value> {
        if !nests_deeper(&v, MAX_OBJECT_DEPTH) {
            return Some(v);
        }
        self.event.annotations.insert(
            format!("portcullis.io/{which}-object-omitted"),
            format!("nested deeper than {MAX_OBJECT_DEPTH} levels"),
        );
        None
    }

    /// The handling panicked: `responseStatus` as kube-apiserver's audit filter writes it for
    /// a panic (500, `InternalError`, `APIServer panic'd: <what>`).
    pub fn panicked(&mut self, what: &str) {
        self.event.response_status = Some(ResponseStatus {
            code: 500,
            status: "Failure".into(),
            reason: "InternalError".into(),
            message: format!("APIServer panic'd: {what}"),
            ..ResponseStatus::default()
        });
    }

    /// The final status code (unless a refusal already set the status).
    pub fn status_code(&mut self, code: u16) {
        if self.event.response_status.is_none() {
            self.event.response_status = Some(ResponseStatus::code(code));
        }
    }

    /// `e` as the event of `stage`: its timestamp, cut to the policy's level.
    fn staged(&self, mut e: Event, stage: Stage) -> Event {
        e.stage = stage;
        e.stage_timestamp = stage_timestamp(stage, e.request_received_timestamp);
        e.limit_to_level(self.eval.level);
        if self.eval.omit_managed_fields {
            e.omit_managed_fields();
        }
        e
    }

    /// The event at `stage` and where to send it, if the policy records that stage. The
    /// request's `last` event moves the record's fields out instead of cloning them: nothing
    /// reads them afterwards (the policy's evaluation is kept; later setters change nothing sent).
    fn event_for(&mut self, stage: Stage, last: bool) -> Option<(Arc<Auditor>, Event)> {
        if !self.evaluate().records(stage) {
            return None;
        }
        let e = if last {
            // A blank in its place, not `Event::default()`: that reads the clock for nothing.
            let blank = Event::blank(self.event.request_received_timestamp);
            std::mem::replace(&mut self.event, blank)
        } else {
            self.event.clone()
        };
        Some((self.audit.auditor.clone(), self.staged(e, stage)))
    }

    /// A stage before the last (`RequestReceived`, `ResponseStarted`, `Panic`), serialized for
    /// its sinks if the policy records it and a sink exists. The record stays as it is, so the
    /// event is written from it in place rather than copied first (as `event_for` does),
    /// whenever staging it would change only its stage, timestamp and level: it holds no
    /// request or response object yet, which is the case at `RequestReceived`.
    fn prepared_for(&mut self, stage: Stage) -> Option<(Arc<Auditor>, Arc<Prepared>)> {
        if self.event.request_object.is_some() || self.event.response_object.is_some() {
            let (auditor, event) = self.event_for(stage, false)?;
            let prepared = auditor.prepare(&event)?;
            return Some((auditor, prepared));
        }
        if !self.evaluate().records(stage) {
            return None;
        }
        let e = &mut self.event;
        let kept = (e.stage, e.stage_timestamp, e.level);
        let at = stage_timestamp(stage, e.request_received_timestamp);
        (e.stage, e.stage_timestamp, e.level) = (stage, at, self.eval.level);
        let auditor = self.audit.auditor.clone();
        let prepared = auditor.prepare(&self.event);
        let e = &mut self.event;
        (e.stage, e.stage_timestamp, e.level) = kept;
        Some((auditor, prepared?))
    }

    /// The `ResponseComplete` event and where to send it, once: `None` if already taken or
    /// not recorded by the policy.
    fn take_complete(&mut self) -> Option<(Arc<Auditor>, Event)> {
        if self.completed {
            return None;
        }
        self.completed = true;
        let (auditor, mut event) = self.event_for(Stage::ResponseComplete, true)?;
        let late =
            std::mem::take(&mut *self.at_end.0.lock().unwrap_or_else(PoisonError::into_inner));
        event.annotations.extend(late);
        Some((auditor, event))
    }

    /// Whether authentication succeeded (the caller is known; `system:anonymous` included).
    pub fn is_authenticated(&self) -> bool {
        !self.event.user.username.is_empty()
    }

    /// Whether `ResponseComplete` was taken already.
    pub fn is_completed(&self) -> bool {
        self.completed
    }

    /// Whether the request may have reached the API server (told through `upstream::Watcher`).
    pub fn has_left_the_proxy(&self) -> bool {
        self.left_the_proxy
    }

    /// Whether the client may safely send the request again after an answer it did not get: a
    /// read (`get`, `list`, `watch`, a non-resource `HEAD` / `OPTIONS`), but not of a session or
    /// of a pod's, service's or node's own bytes (`exec`, `attach`, `portforward`, `proxy` — a
    /// WebSocket exec is a `get`); and a self-review (`kubectl auth can-i|whoami`, a create the
    /// proxy answers itself).
    pub fn retry_safe(&self) -> bool {
        if self.info.as_ref().is_some_and(|i| i.is_self_review()) {
            // `kubectl auth can-i|whoami`: a create the proxy answers itself, changing nothing.
            return true;
        }
        matches!(
            self.event.verb.as_str(),
            "get" | "list" | "watch" | "head" | "options"
        ) && !self.info.as_ref().is_some_and(|i| {
            matches!(
                i.subresource.as_str(),
                "exec" | "attach" | "portforward" | "proxy"
            )
        })
    }

    /// Why the request must not be forwarded now, if so: it is audited, its `RequestReceived`
    /// is not recorded (when it is, that event's own write decides before forwarding), and a
    /// `blocking-strict` sink of this replica is failing
    /// ([`Auditor::strict_failure`](super::Auditor::strict_failure)). Forwarded, a write would
    /// be carried out before its `ResponseComplete` failed — unrecorded, and answered with an
    /// error the client cannot tell from "not done" — and a read would hand its client all
    /// but the last frame of an answer too long to hold whole (a large list: the last frame
    /// waits for the event) with no event ever recorded. Reads are held back too, then: the
    /// refusal's own event is the write that finds the sink working again, and clients retry
    /// the 503 after its `Retry-After`.
    pub fn held_back_by_audit(&mut self) -> Option<String> {
        let eval = self.evaluate();
        if eval.level == Level::None || eval.records(Stage::RequestReceived) {
            return None;
        }
        self.audit.auditor.strict_failure()
    }

    /// Whether the request is a `delete` or `deletecollection`.
    pub fn deletes(&self) -> bool {
        matches!(self.event.verb.as_str(), "delete" | "deletecollection")
    }

    /// Whether the answer is a `proxy` subresource's (a pod's, service's or node's bytes).
    pub fn proxied(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.subresource == "proxy")
    }

    /// A Status the upstream answered with (a failure; a delete's success) fills
    /// `responseStatus` as the apiserver's `LogResponseObject` copies it (status, message,
    /// reason, details), at every level; the
    /// code stays the one answered (the API server's response writer sets it after). Only a
    /// `v1` `Status` counts — a custom resource of kind `Status` is not one. Anything else
    /// leaves it as it is.
    pub fn response_status_from(&mut self, body: &Value) {
        if body.get("kind").and_then(Value::as_str) != Some("Status")
            || body.get("apiVersion").and_then(Value::as_str) != Some("v1")
        {
            return;
        }
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // Bounded as the objects are: any upstream (an aggregated API) can answer a Status
        // whose details nest deep enough to make the event a line no JSON reader takes.
        let details = body
            .get("details")
            .filter(|d| !d.is_null())
            .cloned()
            .and_then(|d| self.within_depth(d, "response-status-details"));
        let rs = self
            .event
            .response_status
            .get_or_insert_with(ResponseStatus::default);
        rs.status = text("status");
        rs.message = text("message");
        rs.reason = text("reason");
        rs.details = details;
    }
}

/// For a long-running request whose head went out: emits the request's `ResponseComplete`
/// when dropped (the end of the stream: it is dropped with the response body or the upgrade
/// splice), with what the record holds then — unless a stalled-stream reset took it first.
/// The record it holds counts the event as still to come until then, so the auditor's
/// shutdown waits for a stream that ends while the proxy drains.
pub struct CompleteOnDrop {
    rec: AuditRecord,
}

impl CompleteOnDrop {
    pub fn new(rec: AuditRecord) -> CompleteOnDrop {
        CompleteOnDrop { rec }
    }
}

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        // The detached emit counts itself before the record (and its guard) goes. A stream
        // still open past its connection's cutoff was ended by the drain, as an upgraded one
        // cut then says.
        let taken = self.rec.with(|r| {
            if !r.completed && r.cut_by_shutdown() {
                r.annotate(ABORTED_ANNOTATION, ABORTED_SHUTDOWN);
            }
            r.take_complete()
        });
        if let Some((auditor, event)) = taken {
            auditor.emit_detached(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::{exec_command, user_agent_as_logged};

    /// Which answers a client may get `Retry-After` on when their event is lost: reads and
    /// self-reviews (answered by the proxy, nothing carried out), not writes nor sessions.
    #[test]
    fn retry_safe_requests_are_reads_and_self_reviews() {
        let audit = std::sync::Arc::new(crate::audit::Audit {
            policy: std::sync::Arc::new(
                crate::audit::Policy::from_yaml(
                    "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
                )
                .unwrap(),
            ),
            auditor: std::sync::Arc::new(crate::audit::Auditor::start(Vec::new()).unwrap()),
            sessions: None,
        });
        let safe = |method: &str, path: &str, upgrade: bool| {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            let uri: http::Uri = path.parse().unwrap();
            let mut headers = http::HeaderMap::new();
            if upgrade {
                headers.insert("connection", HeaderValue::from_static("Upgrade"));
                headers.insert("upgrade", HeaderValue::from_static("websocket"));
            }
            let info = crate::k8s::request::classify(&method, &uri, &headers).unwrap();
            let mut r = super::Recorder::new(
                audit.clone(),
                &HeaderValue::from_static("id"),
                path.into(),
                &method,
                None,
                Vec::new(),
            );
            r.classified(std::sync::Arc::new(info));
            r.retry_safe()
        };
        assert!(safe("GET", "/api/v1/namespaces/a/pods", false));
        assert!(safe("GET", "/api/v1/namespaces/a/pods/p", false));
        assert!(safe("GET", "/api/v1/pods?watch=1", false));
        assert!(safe("HEAD", "/healthz", false));
        assert!(safe(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            false
        ));
        assert!(safe(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            false
        ));
        assert!(!safe("POST", "/api/v1/namespaces/a/pods", false));
        assert!(!safe("DELETE", "/api/v1/namespaces/a/pods/p", false));
        assert!(!safe("PATCH", "/api/v1/namespaces/a/pods/p", false));
        assert!(!safe(
            "GET",
            "/api/v1/namespaces/a/pods/p/exec?command=sh",
            true
        ));
        assert!(!safe("GET", "/api/v1/namespaces/a/pods/p/proxy/", false));
    }

    /// Nesting is counted without recursion; an object too deep for the event's readers is
    /// left out with a note.
    #[tokio::test]
    async fn objects_too_deep_for_the_event_s_readers_are_left_out() {
        use serde_json::{json, Value};
        let deeper = crate::json_depth::nests_deeper;
        assert!(!deeper(&json!(1), 0));
        assert!(!deeper(&json!({"a": [1, {"b": []}]}), 4));
        assert!(deeper(&json!({"a": [1, {"b": []}]}), 3));
        let deep = |n: usize| (0..n).fold(json!(0), |v, _| json!([v]));
        assert!(deeper(&deep(500), 499) && !deeper(&deep(500), 500));
        let audit = std::sync::Arc::new(crate::audit::Audit {
            policy: std::sync::Arc::new(
                crate::audit::Policy::from_yaml(
                    "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n",
                )
                .unwrap(),
            ),
            auditor: std::sync::Arc::new(crate::audit::Auditor::start(Vec::new()).unwrap()),
            sessions: None,
        });
        let mut r = super::Recorder::new(
            audit,
            &HeaderValue::from_static("id"),
            "/api/v1/configmaps".into(),
            &http::Method::GET,
            None,
            Vec::new(),
        );
        r.response_object(deep(101));
        r.request_object(deep(100));
        r.response_status_from(&json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "code": 500, "details": deep(126)}));
        let line = serde_json::to_string(&r.event).unwrap();
        let back: Value = serde_json::from_str(&line).expect("the event reads back");
        assert_eq!(back["responseStatus"]["status"], "Failure");
        assert!(back["responseStatus"].get("details").is_none());
        assert_eq!(
            back["annotations"]["portcullis.io/response-status-details-object-omitted"],
            "nested deeper than 100 levels"
        );
        assert!(back.get("responseObject").is_none());
        assert_eq!(
            back["annotations"]["portcullis.io/response-object-omitted"],
            "nested deeper than 100 levels"
        );
        assert!(!deeper(&back["requestObject"], 100));
        assert!(deeper(&back["requestObject"], 99));
    }

    /// As the API server logs it: cut after 1024 bytes, a byte that is not UTF-8 replaced.
    #[test]
    fn the_user_agent_is_logged_as_the_api_server_logs_it() {
        let long = HeaderValue::from_bytes(&[b'a'; 1500]).unwrap();
        assert_eq!(
            user_agent_as_logged(&long),
            format!("{}...TRUNCATED", "a".repeat(1024))
        );
        let odd = HeaderValue::from_bytes(b"kubectl/\xff1").unwrap();
        assert_eq!(user_agent_as_logged(&odd), "kubectl/\u{fffd}1");
    }

    #[test]
    fn exec_command_is_the_decoded_command_parameters_in_order() {
        assert_eq!(
            exec_command("/api/v1/namespaces/a/pods/p/exec?command=sh&stdin=true&command=-c&command=echo+a%20b%26c&container=x"),
            ["sh", "-c", "echo a b&c"]
        );
        assert!(exec_command("/api/v1/namespaces/a/pods/p/exec").is_empty());
        // A pair with a raw `;` is dropped by the API server: it is not part of what runs.
        assert_eq!(
            exec_command(
                "/api/v1/namespaces/a/pods/p/exec?command=sh&command=-c&command=echo+hello;&command=cat+/etc/shadow"
            ),
            ["sh", "-c", "cat /etc/shadow"]
        );
    }
}
