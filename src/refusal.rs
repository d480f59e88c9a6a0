//! Every way the proxy itself ends a request, and the one table that turns each into its
//! answer.
//!
//! A layer that refuses returns a [`Refusal`]; [`Refusal::respond`] renders it: the
//! `metav1.Status` body (so kubectl prints `Error from server (<Reason>): <message>`), the HTTP
//! status, `Retry-After` (with `details.retryAfterSeconds`, the only form client-go honours),
//! rate-limit headers, and a [`Refused`] marker in the response extensions that tells the layers
//! above who refused (the audit `portcullis.io/rejected-by` annotation, the refusal metric, the
//! failed-credentials counter). No other module builds a refusal `Status`.
//!
//! | variant | HTTP | reason | rejected-by |
//! |---|---|---|---|
//! | `BadPath` | 400 | BadRequest | classify |
//! | `BadHeader` (a `Content-Type` with bytes outside visible ASCII) | 400 | BadRequest | classify |
//! | `Overloaded` (global in-flight cap) | 503 + Retry-After | ServiceUnavailable | load-shed |
//! | `SourceBlocked` (address keeps failing authentication) | 429 + Retry-After | TooManyRequests | authn |
//! | `Unauthenticated` | 401 | Unauthorized | authn |
//! | `BadImpersonation` (`Impersonate-Group/Uid/Extra` without a user, or an unreadable value) | 400 | BadRequest | authn |
//! | `BadReview` (a self-review body that does not decode, or an access review that asks about neither or both attribute kinds) | 400 / 422 / 415 / 406 | BadRequest / Invalid / UnsupportedMediaType / NotAcceptable | review |
//! | `Forbidden` | 403 | Forbidden | authz |
//! | `RateLimited` | 429 / 503 + Retry-After | TooManyRequests / ServiceUnavailable | ratelimit |
//! | `Body` (size, encoding, media type, parse, patch, field rules) | 400 / 403 / 404 / 408 / 413 / 415 / 422 / 500 / 503 | as the apiserver | sanitize |
//! | `PodSecurity` | 403 | Forbidden, in PodSecurity admission's words (+ one cause per field) | sanitize |
//! | `AuditUnavailable` (nothing was carried out, or only a read) | 503 + Retry-After | ServiceUnavailable | audit |
//! | `AuditUnrecorded` (forwarded, not a read: it may have been carried out) | 500, no Retry-After | InternalError | audit |
//! | `Upstream` | 400 / 500 / 502 / 503 | BadRequest / InternalError (an identity that cannot be sent) / BadGateway / ServiceUnavailable (refused unprocessed, `Retry-After: 1`) | upstream |
//! | `Timeout` | 504 | Timeout | upstream |
//! | `BreakerOpen` (every endpoint's circuit breaker refuses; no network attempt) | 503 + Retry-After | ServiceUnavailable | upstream |
//! | `UpstreamBusy` (every endpoint's connections are at their stream limit and at the connection cap) | 503 + Retry-After | ServiceUnavailable | upstream |
//! | `Panic` | 500 | InternalError | panic |

use http::{header, HeaderValue, Response, StatusCode};

use crate::{
    authn::request::Failure,
    body::{self, Body},
    k8s::{
        status::{StatusCause, StatusDetails},
        Status,
    },
    ratelimit::{decision::RejectionKind, Rejection},
};

/// Why the proxy ended a request itself.
#[derive(Debug)]
pub enum Refusal {
    /// The path is ambiguous or malformed (`%2F`, `//`, dot segments, NUL, …).
    BadPath(String),
    /// A header every stage must read the same way is unreadable (not visible ASCII).
    BadHeader(String),
    /// The global in-flight cap is reached.
    Overloaded(Box<Rejection>),
    /// The source address keeps failing authentication; refused before any signature work.
    SourceBlocked(Box<Rejection>),
    /// No credential, or one that does not verify (the reason is logged, never sent).
    Unauthenticated(Failure),
    /// `Impersonate-*` headers the API server would refuse as malformed (400).
    BadImpersonation(String),
    /// A self-review (`kubectl auth whoami|can-i`) the proxy cannot read: the Status to send.
    BadReview(Box<Status>),
    /// No grant allows it, or the token's scope excludes it.
    Forbidden(Box<Forbidden>),
    /// A per-identity bucket or stream cap (or the limiter's backend) refused it.
    RateLimited(Box<Rejection>),
    /// The request body was refused.
    Body(BodyRefusal),
    /// The object the write produces violates an enforced Pod Security level.
    PodSecurity(Box<PodSecurityDenial>),
    /// A blocking-strict audit sink could not make the event durable — before the request
    /// was forwarded, or after a read was: sending it again is safe.
    AuditUnavailable,
    /// A blocking-strict audit sink could not make the event of a forwarded request that is
    /// not a read durable: the API server may have carried it out, so the answer invites no
    /// retry (client-go retries a 5xx only with `Retry-After`; a create retried would run
    /// twice, unrecorded).
    AuditUnrecorded,
    /// The upstream could not be reached or the request could not be forwarded.
    Upstream(UpstreamFailure),
    /// No response head from the upstream within `upstream.request_timeout` (or the client's
    /// `?timeout=`).
    Timeout,
    /// Every upstream endpoint's circuit breaker refuses (open, or half-open with its trial
    /// requests taken): answered without touching the network.
    BreakerOpen(Box<BreakerOpen>),
    /// Every endpoint's upstream connections carry their full share of streams and the
    /// endpoint is at `upstream.max_connections_per_endpoint`: refused before any network
    /// attempt, so the client retries instead of queueing behind long-running watches.
    UpstreamBusy,
    /// A bug: the handler panicked.
    Panic,
}

/// A 403, worded as kube-apiserver's (`authz::forbidden` builds the words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub message: String,
    pub name: String,
    pub group: String,
    /// The resource (plural), as the apiserver puts it in `details.kind`.
    pub resource: String,
}

/// A 422 `Invalid`: `<Kind>[.group] "<name>" is invalid: …` with one cause per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: String,
    pub group: String,
    pub name: String,
    pub causes: Vec<StatusCause>,
}

/// A write an enforced Pod Security level refuses: the 403 kube-apiserver's PodSecurity
/// admission gives a Pod (`apierrors.NewForbidden(resource, name, "violates PodSecurity
/// \"<level>:<version>\": <detail>")`), e.g. `pods "x" is forbidden: violates PodSecurity
/// "restricted:latest": privileged (container "c" must not set securityContext.privileged=true)`.
/// For the other pod-bearing kinds (which the API server only warns about) the same shape,
/// naming the pod template that failed: `deployments.apps "web" is forbidden: violates
/// PodSecurity "restricted:latest" in spec.template: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSecurityDenial {
    /// The resource (plural), as in `details.kind`.
    pub resource: String,
    pub group: String,
    /// Empty for a `generateName` create (the API server would name the generated name,
    /// which only it knows).
    pub name: String,
    /// `level:version`, e.g. `restricted:latest`.
    pub policy: String,
    /// PodSecurity's `ForbiddenDetail`: `reason (detail), reason (detail), …`.
    pub detail: String,
    /// The pod template's path for a kind other than Pod, e.g. `spec.template`.
    pub template: Option<String>,
    /// One cause per offending field (ours: PodSecurity's own Status has none).
    pub causes: Vec<StatusCause>,
}

impl PodSecurityDenial {
    fn status(&self) -> Status {
        let nonempty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let mut qualified = self.resource.clone();
        if !self.group.is_empty() {
            qualified = format!("{qualified}.{}", self.group);
        }
        let subject = if self.name.is_empty() {
            qualified
        } else {
            format!("{qualified} {:?}", self.name)
        };
        let place = self
            .template
            .as_ref()
            .map(|t| format!(" in {t}"))
            .unwrap_or_default();
        let mut s = Status::forbidden(format!(
            "{subject} is forbidden: violates PodSecurity {:?}{place}: {}",
            self.policy, self.detail
        ));
        s.details = Some(StatusDetails {
            name: nonempty(&self.name),
            group: nonempty(&self.group),
            kind: nonempty(&self.resource),
            causes: self.causes.clone(),
            ..Default::default()
        });
        s
    }
}

/// The sanitize stage's refusals.
#[derive(Debug)]
pub enum BodyRefusal {
    /// `Content-Length` or the streamed bytes exceed the cap.
    TooLarge { limit: usize },
    /// The body did not arrive within the request timeout.
    NotReceived,
    /// The body could not be read (the client broke off).
    Unreadable(String),
    /// A `Content-Encoding` other than identity on an inspected body.
    Encoded(String),
    /// No, or an unknown, media type; or a patch type on create / an object type on patch.
    /// `patch`: the request is a PATCH, whose answer lists the patch types (as the API
    /// server's patch handler); any other lists the object types.
    UnknownFormat { patch: bool },
    /// Protobuf / CBOR where something would judge the body.
    CannotJudge {
        media_type: String,
        resource: String,
    },
    /// A protobuf body that cannot be converted to its JSON form without loss (a kind not
    /// converted, a field the conversion does not know): judging it would miss what the API
    /// server stores.
    Unconvertible { resource: String, reason: String },
    /// The strict parse failed (duplicate key, depth, YAML anchors, …).
    Parse {
        message: String,
        field: Option<String>,
    },
    /// A patch of an object that does not exist.
    PatchTargetMissing {
        resource: String,
        group: String,
        name: String,
    },
    /// A patch whose own `resourceVersion` precondition names another version than the one it
    /// was judged on: the API server would apply it to an object nobody judged, or refuse it.
    StalePrecondition {
        resource: String,
        group: String,
        name: String,
    },
    /// A patch that could not be judged because the current object was not read (a bug guard).
    Unjudged,
    /// The patch itself is malformed (the message names the patch type).
    BadPatch(String),
    /// The patch does not apply to the current object.
    PatchDoesNotApply(String),
    /// A name that makes no path.
    PatchTarget(String),
    /// A patch (or update) of a collection, which names no object: no route takes that
    /// method there, so the API server answers 405 (go-restful's, through
    /// `NewGenericServerResponse`).
    NoObjectName,
    /// The current object could not be read to judge the patch.
    CurrentUnavailable(String),
    /// The caller may not read the current object the patch is judged on.
    CurrentForbidden(String),
    /// A field rule denies the body.
    FieldRules(Box<Invalid>),
    /// An upgrade request (exec, attach, port-forward) that announces a body.
    UpgradeBody,
}

/// Why forwarding failed before any upstream answer.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// Connect, TLS or handshake failure, or the connection broke before a response.
    Unreachable(&'static str),
    /// The request URI cannot be rebased onto the upstream.
    Unforwardable,
    /// The API server answered 401 to a request carrying the proxy's own credentials (a
    /// revoked or expired token, a deleted ServiceAccount): the caller's credentials were
    /// fine, so its client must not be told to log in again.
    CredentialsRefused,
    /// The same on an upgrade (exec, attach, port-forward): the API server writes the node's
    /// non-101 answer through, so the 401 may also be the kubelet refusing the API server's.
    UpgradeUnauthorized,
    /// An upgrade was requested on a connection hyper cannot upgrade.
    NotUpgradable,
    /// The API server refused the request unprocessed (its GOAWAY crossed it) while its body
    /// was still arriving from the client: nothing was carried out; the client may send it
    /// again.
    RefusedUnprocessed,
    /// The caller's identity cannot be sent as impersonation headers (a bug: every identity
    /// source refuses such names): refused rather than sent as someone else.
    IdentityUnsendable,
    /// A session to be recorded was switched to a protocol the recorder cannot read (what it
    /// is): ended instead of running unrecorded.
    Unrecordable(&'static str),
}

/// The endpoints that refused, and when the first of them admits a request again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// (endpoint URL, breaker state) for each endpoint, in the order tried.
    pub endpoints: Vec<(String, &'static str)>,
    /// Whole seconds to the next probe (at least 1).
    pub retry_after: u32,
}

/// Put in a refused response's extensions: who refused, and the Status sent.
#[derive(Debug, Clone)]
pub struct Refused {
    pub by: &'static str,
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// True for a failed credential (the per-address failure counter counts it).
    pub unauthenticated: bool,
}

const ACCEPTED: &str = "application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
/// What kube-apiserver's 415 lists for an object body (its serializers' media types).
const OBJECT_TYPES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";
/// The patch types, in the order the API server registers them. Its handler lists them this
/// way for a custom resource (which has no strategic merge); for a built-in one its router
/// answers a bare `415: Unsupported Media Type` (both read in its source, not run): the
/// proxy's `Status` names them instead.
const PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

impl Refusal {
    /// The stage that refused: the audit `portcullis.io/rejected-by` annotation and the
    /// `by` label of `portcullis_refusals_total` (a closed set).
    pub fn rejected_by(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) | Refusal::BadHeader(_) => "classify",
            Refusal::Overloaded(_) => "load-shed",
            Refusal::SourceBlocked(_)
            | Refusal::Unauthenticated(_)
            | Refusal::BadImpersonation(_) => "authn",
            Refusal::BadReview(_) => "review",
            Refusal::Forbidden(_) => "authz",
            Refusal::RateLimited(_) => "ratelimit",
            Refusal::Body(_) | Refusal::PodSecurity(_) => "sanitize",
            Refusal::AuditUnavailable | Refusal::AuditUnrecorded => "audit",
            Refusal::Upstream(_)
            | Refusal::Timeout
            | Refusal::BreakerOpen(_)
            | Refusal::UpstreamBusy => "upstream",
            Refusal::Panic => "panic",
        }
    }

    /// The `metav1.Status` the client gets.
    pub fn status(&self) -> Status {
        match self {
            Refusal::BadPath(err) => Status::bad_request(format!("invalid request path: {err}")),
            Refusal::BadHeader(err) => Status::bad_request(format!("invalid request header: {err}")),
            Refusal::Overloaded(r) | Refusal::SourceBlocked(r) | Refusal::RateLimited(r) => {
                r.status()
            }
            Refusal::Unauthenticated(_) => Status::unauthorized(),
            Refusal::BadImpersonation(m) => Status::bad_request(m.clone()),
            Refusal::BadReview(s) => (**s).clone(),
            Refusal::Forbidden(f) => {
                let nonempty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
                let mut s = Status::forbidden(f.message.clone());
                s.details = Some(StatusDetails {
                    name: nonempty(&f.name),
                    group: nonempty(&f.group),
                    kind: nonempty(&f.resource),
                    ..Default::default()
                });
                s
            }
            Refusal::Body(b) => b.status(),
            Refusal::PodSecurity(i) => i.status(),
            Refusal::AuditUnavailable => {
                Status::service_unavailable("the request could not be audited; try again later", 1)
            }
            Refusal::AuditUnrecorded => Status::internal(
                "the API server answered, but the request's audit event could not be recorded, so its answer is withheld; the request may have been carried out: check before sending it again",
            ),
            Refusal::Upstream(UpstreamFailure::Unreachable(why)) => Status::bad_gateway(format!(
                "the upstream API server could not be reached: {why}"
            )),
            Refusal::Upstream(UpstreamFailure::UpgradeUnauthorized) => Status::bad_gateway(
                "the upstream answered this upgrade with 401: the API server did not accept the proxy's credentials, or the node's kubelet did not accept the API server's"
                    .to_owned(),
            ),
            Refusal::Upstream(UpstreamFailure::CredentialsRefused) => Status::bad_gateway(
                "the upstream API server did not accept the proxy's credentials (401): its token or certificate must be renewed",
            ),
            Refusal::Upstream(UpstreamFailure::Unforwardable) => {
                Status::bad_request("request URI cannot be forwarded")
            }
            Refusal::Upstream(UpstreamFailure::NotUpgradable) => {
                Status::bad_request("this connection cannot be upgraded")
            }
            Refusal::Upstream(UpstreamFailure::RefusedUnprocessed) => Status::service_unavailable(
                "the API server closed its connection before it processed the request (nothing was carried out); send it again",
                1,
            ),
            Refusal::Upstream(UpstreamFailure::IdentityUnsendable) => Status::internal(
                "the caller's identity cannot be sent to the API server; the request was not forwarded",
            ),
            Refusal::Upstream(UpstreamFailure::Unrecordable(what)) => Status::bad_gateway(format!(
                "the upstream API server switched this session to {what}, which the session recorder cannot read; a recorded session does not run unrecorded"
            )),
            Refusal::Timeout => Status::timeout(),
            Refusal::BreakerOpen(b) => {
                let which = match b.endpoints.as_slice() {
                    [(name, state)] => {
                        format!("the upstream API server {name} is unavailable (circuit breaker {state})")
                    }
                    many => format!(
                        "every upstream API server is unavailable ({})",
                        many.iter()
                            .map(|(n, s)| format!("{n}: circuit breaker {s}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                Status::service_unavailable(
                    format!("{which}; next probe in {}s", b.retry_after),
                    b.retry_after,
                )
            }
            Refusal::UpstreamBusy => Status::service_unavailable(
                "every connection to the upstream API server is carrying its maximum number of streams; try again later",
                1,
            ),
            Refusal::Panic => Status::internal("the proxy failed to handle this request"),
        }
    }

    /// The whole answer: Status body, code, `Retry-After`, rate-limit headers, and the
    /// [`Refused`] marker for the layers above.
    pub fn respond(self) -> Response<Body> {
        let status = self.status();
        let marker = Refused {
            by: self.rejected_by(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            unauthenticated: matches!(self, Refusal::Unauthenticated(_)),
        };
        let mut resp = render(status);
        if let Refusal::Overloaded(r) | Refusal::SourceBlocked(r) | Refusal::RateLimited(r) = &self
        {
            for (name, value) in &r.headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
        resp.extensions_mut().insert(marker);
        resp
    }
}

impl Invalid {
    fn status(&self) -> Status {
        Status::invalid(&self.kind, &self.group, &self.name, self.causes.clone())
    }
}

impl BodyRefusal {
    fn status(&self) -> Status {
        match self {
            BodyRefusal::TooLarge { limit } => Status::too_large(*limit),
            BodyRefusal::NotReceived => Status::failure(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                "the request body was not received in time",
            ),
            BodyRefusal::Unreadable(e) => {
                Status::bad_request(format!("the request body could not be read: {e}"))
            }
            BodyRefusal::Encoded(enc) => Status::unsupported_media_type(format!(
                "Content-Encoding {enc:?} is not accepted: portcullis inspects request bodies and needs them unencoded"
            )),
            BodyRefusal::UnknownFormat { patch } => Status::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                if *patch { PATCH_TYPES } else { OBJECT_TYPES }
            )),
            BodyRefusal::CannotJudge { media_type, resource } => Status::unsupported_media_type(format!(
                "portcullis cannot judge a body of type {media_type} for {resource}: send JSON or YAML (kubectl apply -f, kubectl create -f) - accepted media types include: {ACCEPTED}"
            )),
            BodyRefusal::Unconvertible { resource, reason } => Status::unsupported_media_type(format!(
                "portcullis cannot judge this protobuf body for {resource}: {reason} (kubectl apply -f and kubectl create -f send JSON)"
            )),
            BodyRefusal::Parse { message, field } => {
                let mut st = Status::bad_request(format!("the request body was refused: {message}"));
                if let Some(field) = field {
                    st.details = Some(StatusDetails {
                        causes: vec![StatusCause {
                            reason: "FieldValueInvalid".into(),
                            message: message.clone(),
                            field: field.clone(),
                        }],
                        ..Default::default()
                    });
                }
                st
            }
            BodyRefusal::PatchTargetMissing { resource, group, name } => {
                Status::not_found(resource, group, name)
            }
            BodyRefusal::StalePrecondition { resource, group, name } => {
                Status::conflict(resource, group, name)
            }
            BodyRefusal::Unjudged => Status::internal(
                "portcullis could not judge this patch without the current object",
            ),
            BodyRefusal::BadPatch(m) | BodyRefusal::PatchTarget(m) => Status::bad_request(m.clone()),
            BodyRefusal::NoObjectName => Status::failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
            BodyRefusal::PatchDoesNotApply(m) => {
                Status::failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m.clone())
            }
            BodyRefusal::CurrentUnavailable(m) => Status::service_unavailable(m.clone(), 1),
            BodyRefusal::CurrentForbidden(m) => Status::forbidden(m.clone()),
            BodyRefusal::FieldRules(i) => i.status(),
            BodyRefusal::UpgradeBody => Status::bad_request(
                "an upgrade request (exec, attach, port-forward) must not carry a body",
            ),
        }
    }
}

impl Rejection {
    /// The Status of a rate-limit refusal (429 or 503, always with a retry hint).
    pub fn status(&self) -> Status {
        match self.kind {
            RejectionKind::TooManyRequests => Status::failure(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                self.message.clone(),
            )
            .with_retry_after(self.retry_after),
            RejectionKind::Unavailable => {
                Status::service_unavailable(self.message.clone(), self.retry_after)
            }
        }
    }

    /// The HTTP response: Status JSON, `Retry-After`, and the extra headers.
    pub fn into_response(self) -> Response<Body> {
        Refusal::RateLimited(Box::new(self)).respond()
    }
}

impl From<BodyRefusal> for Refusal {
    fn from(b: BodyRefusal) -> Self {
        Refusal::Body(b)
    }
}

impl From<UpstreamFailure> for Refusal {
    fn from(u: UpstreamFailure) -> Self {
        Refusal::Upstream(u)
    }
}

/// Render a Status as an HTTP response with the headers kube-apiserver puts on its errors: JSON
/// body, `Content-Type: application/json`, `X-Content-Type-Options: nosniff` (its
/// `responsewriters`), `Cache-Control: no-cache, private` (its `WithCacheControl` filter, so no
/// HTTP cache — kubectl's included — keeps a refusal meant for one moment or one caller), and
/// `Retry-After` when a retry hint is set. Also what the sandbox API server uses for its own
/// errors.
pub fn render(status: Status) -> Response<Body> {
    let retry = status.details.as_ref().and_then(|d| d.retry_after_seconds);
    let mut resp = Response::new(body::full(status.to_json()));
    *resp.status_mut() = status.status_code();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Some(secs) = retry.filter(|s| *s > 0) {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// A 403 authorization refusal saying `message`, for tests of the layers above.
#[cfg(test)]
pub(crate) fn forbidden_for_test(message: &str) -> http::Response<crate::body::Body> {
    Refusal::Forbidden(Box::new(Forbidden {
        message: message.into(),
        name: String::new(),
        group: String::new(),
        resource: String::new(),
    }))
    .respond()
}

#[cfg(test)]
mod tests;
