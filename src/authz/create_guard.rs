//! A write that could create is authorized as `create` too, as kube-apiserver does, with no
//! window in which an identity allowed to `patch` or `update` but not `create` can create:
//!
//! * a server-side apply (`application/apply-patch+yaml|cbor`, no subresource) creates an
//!   absent object (`handlers/patch.go`: the create path runs `withAuthorization` with verb
//!   `create`);
//! * either one through the `status` subresource of the kinds whose status strategy keeps
//!   `AllowCreateOnUpdate` — Services and PodDisruptionBudgets (`StatusREST.Update` passes
//!   `forceAllowCreate=false`; a PUT of `services/x/status` with a whole Service creates it,
//!   the create authorized on `services/status`); the object read and the uid precondition
//!   are the main object's;
//! * a PUT creates an absent object of the kinds whose update strategy allows create-on-update
//!   — Services, Endpoints, Events, Leases, PodDisruptionBudgets, LimitRanges, the four RBAC
//!   kinds, RuntimeClasses, admission policies … (`handlers/update.go` authorizes that path as
//!   `create`). The guard covers every PUT without a subresource, whatever its kind, so it
//!   needs no list of those kinds that could fall out of date; for other kinds it only costs
//!   the read below when the body carries no uid.
//!
//! The authorize layer marks such a request of a caller who may not `create` the object with
//! [`MustNotCreate`]. This layer, last before the network (after the body was judged), makes
//! the write carry the object's `metadata.uid`, a precondition the API server itself enforces
//! atomically inside the write: an apply naming a uid when no object exists fails `409
//! Conflict` ("uid mismatch …"), a PUT naming one fails `409` ("Precondition failed: UID in
//! precondition …", `rest.DefaultUpdatedObjectInfo` → storage preconditions), and a uid of
//! another object fails `422` / `409`. So an object deleted (or replaced) between a read and
//! the write is never created by it: no check-then-act race.
//!
//! * A PUT whose body already names a uid (kubectl edit / replace of a fetched object, client-go
//!   `Update`) is that precondition already: forwarded as sent, protobuf included, nothing read.
//!   An empty or null uid names none (the API server checks only a uid that is set), so such a
//!   body is treated as one without a uid, below, and its uid replaced.
//! * Otherwise the object is read as the caller: absent → 403 `Forbidden`, worded as a refused
//!   create (`services "web" is forbidden: User "ci-bot" cannot create resource "services" in
//!   API group "" in the namespace "team-a"`), nothing forwarded; present → forwarded with the
//!   object's uid set (an apply's own non-empty uid kept), as JSON (a protobuf PUT is
//!   converted to its JSON form, which the API server accepts for the same request; one that
//!   cannot be converted without loss is 415).
//!
//! Other refusals: the object cannot be read (403 when the caller may not `get` it, 503
//! otherwise, as the sanitize stage's reads); the body cannot be read back as an object, or its
//! `metadata` is not one (400, 415 for CBOR). Requests without the marker pass untouched.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::{Layer, Service};

use super::forbidden;
use crate::{
    body::{self, Body},
    k8s::request::RequestInfo,
    refusal::{BodyRefusal, Refusal},
    sanitize::{
        judge::Current,
        parse::{self, protobuf, Limits},
        stage::{parse_refusal, proto_refusal},
    },
    service::{self, Caller, ResponseFuture},
    upstream::{fetch, Upstream},
};

/// The request extension the authorize layer sets: this write must not create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MustNotCreate {
    /// A server-side apply.
    Apply,
    /// A PUT (no subresource).
    Update,
}

/// Largest body re-read (the sanitize stage capped it already; this only bounds memory for
/// resources it does not inspect).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Whether `content_type` is a server-side apply patch: read as bytes, as the API server's
/// patch handler does (the media type is what comes before the first `;`), so no byte after it
/// can make the value unreadable here and an apply still there (the classify layer refuses
/// such values first; this does not lean on it). Compared ignoring case and spaces: a value
/// the API server would refuse (415) is an apply here, which only makes the guard stricter.
pub fn is_apply(content_type: Option<&HeaderValue>) -> bool {
    let Some(v) = content_type else {
        return false;
    };
    let media = v
        .as_bytes()
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default();
    let media = media.trim_ascii();
    media.eq_ignore_ascii_case(b"application/apply-patch+yaml")
        || media.eq_ignore_ascii_case(b"application/apply-patch+cbor")
}

#[derive(Clone)]
pub struct CreateGuardLayer {
    upstream: Arc<Upstream>,
    trust_forwarded_for: bool,
    /// The sanitize stage's parse limits (`sanitize.max_depth`, …): the body it passed is
    /// read again here under the same ones.
    limits: Arc<Limits>,
}

impl CreateGuardLayer {
    pub fn new(
        upstream: Arc<Upstream>,
        trust_forwarded_for: bool,
        limits: Limits,
    ) -> CreateGuardLayer {
        CreateGuardLayer {
            upstream,
            trust_forwarded_for,
            limits: Arc::new(limits),
        }
    }
}

impl<S> Layer<S> for CreateGuardLayer {
    type Service = CreateGuardService<S>;
    fn layer(&self, inner: S) -> CreateGuardService<S> {
        CreateGuardService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CreateGuardService<S> {
    inner: S,
    layer: CreateGuardLayer,
}

impl<S> Service<Request<Body>> for CreateGuardService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let Some(&kind) = req.extensions().get::<MustNotCreate>() else {
            return service::boxed(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        let layer = self.layer.clone();
        service::boxed(async move {
            match layer.guard(req, kind).await {
                Ok(req) => call_boxed(&mut inner, req).await,
                Err(refusal) => Ok(refusal.respond()),
            }
        })
    }
}

/// The inner call as a boxed future (see `sanitize::layer::call_boxed`: rust-lang/rust#102211).
fn call_boxed<S>(inner: &mut S, req: Request<Body>) -> ResponseFuture
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    service::boxed(inner.call(req))
}

impl CreateGuardLayer {
    /// The write carrying the existing object's uid, or the refusal.
    async fn guard(
        &self,
        req: Request<Body>,
        kind: MustNotCreate,
    ) -> Result<Request<Body>, Refusal> {
        let Some(caller) = Caller::of(&req) else {
            return Err(Refusal::Panic);
        };
        let (mut parts, body) = req.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = tokio::time::timeout(self.upstream.request_timeout, read_all(body))
            .await
            .map_err(|_| Refusal::from(BodyRefusal::NotReceived))??;
        let sent = Sent::read(&content_type, bytes, kind, &caller.info, &self.limits)?;
        if kind == MustNotCreate::Update && sent.uid().is_some() {
            // The body's uid is already the API server's precondition.
            return Ok(Request::from_parts(parts, body::full(sent.bytes)));
        }
        let info = &caller.info;
        let ob = caller.outbound(self.trust_forwarded_for, None);
        let limit = fetch::limit(&self.upstream, &parts.uri);
        let uid = match fetch::current(&self.upstream, info, &ob, limit).await? {
            Current::Found(obj) => obj["metadata"]["uid"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            Current::Absent | Current::NotFetched => None,
        };
        let Some(uid) = uid else {
            let as_create = as_create(info);
            tracing::info!(user = %caller.identity.user, path = %info.path, "write would create; the caller may not create");
            return Err(Refusal::Forbidden(Box::new(forbidden(
                &caller.identity,
                &as_create,
                "",
            ))));
        };
        let (mut obj, converted) = sent.into_object(info, &self.limits)?;
        let Some(fields) = obj.as_object_mut() else {
            return Err(BodyRefusal::BadPatch("the body must be an object".into()).into());
        };
        let meta = fields.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return Err(BodyRefusal::BadPatch("metadata must be an object".into()).into());
        };
        // Without it, a delete between the read above and the write would let the write
        // create the object.
        crate::sanitize::judge::pin_uid(meta, json!(uid));
        let out = parse::canonical_bytes(&obj);
        if converted {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(Request::from_parts(parts, body::full(out)))
    }
}

/// The body as sent, and what is known of it.
struct Sent {
    bytes: bytes::Bytes,
    form: Form,
}

enum Form {
    /// JSON / YAML (or an apply patch), parsed.
    Parsed(Value),
    /// A protobuf PUT, its envelope opened (decoded only when it must be rewritten).
    Protobuf(protobuf::Envelope, Option<String>),
}

impl Sent {
    fn read(
        content_type: &str,
        bytes: bytes::Bytes,
        kind: MustNotCreate,
        info: &RequestInfo,
        limits: &Limits,
    ) -> Result<Sent, Refusal> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if kind == MustNotCreate::Update && essence == protobuf::MEDIA_TYPE {
            let env = protobuf::open(&bytes).map_err(|e| proto_refusal(info, e))?;
            let uid = protobuf::names(&env)
                .and_then(|n| n["metadata"]["uid"].as_str().map(str::to_owned))
                .filter(|u| !u.is_empty());
            return Ok(Sent {
                bytes,
                form: Form::Protobuf(env, uid),
            });
        }
        let parsed = parse::parse_body(content_type, &bytes, limits)
            .map_err(|e| parse_refusal(&e, kind == MustNotCreate::Apply))?
            .value;
        if !parsed.is_object() {
            let what = match kind {
                MustNotCreate::Apply => "an apply patch must be an object",
                MustNotCreate::Update => "the body of a PUT must be an object",
            };
            return Err(BodyRefusal::BadPatch(what.into()).into());
        }
        Ok(Sent {
            bytes,
            form: Form::Parsed(parsed),
        })
    }

    /// The uid the body names.
    fn uid(&self) -> Option<&str> {
        match &self.form {
            Form::Parsed(v) => v["metadata"]["uid"].as_str().filter(|u| !u.is_empty()),
            Form::Protobuf(_, uid) => uid.as_deref(),
        }
    }

    /// The body as a JSON object, and whether it was converted from protobuf.
    fn into_object(self, info: &RequestInfo, limits: &Limits) -> Result<(Value, bool), Refusal> {
        match self.form {
            Form::Parsed(v) => Ok((v, false)),
            Form::Protobuf(env, _) => protobuf::decode(env, limits)
                .map(|v| (v, true))
                .map_err(|e| proto_refusal(info, e)),
        }
    }
}

/// The (already judged) body, at most [`MAX_BODY`] bytes. Frame by frame rather than with
/// `Limited::collect`, whose boxed-error conversion trips rust-lang/rust#102211 here.
async fn read_all(mut body: Body) -> Result<bytes::Bytes, Refusal> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyRefusal::Unreadable(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Err(BodyRefusal::TooLarge { limit: MAX_BODY }.into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The create a write that may create is authorized as by the API server (`handlers/patch.go`,
/// `update.go`: verb `create`, the same attributes). A namespace is created cluster-wide —
/// `POST /api/v1/namespaces`, which the classifier places outside every namespace — although
/// its own path names it as its namespace: judged in that place, a rule limited to namespaces
/// (`t-*`) would let an apply create `t-new`, which a POST of the same namespace is refused;
/// and the refusal says "at the cluster scope", as the API server's does.
pub fn as_create(info: &RequestInfo) -> RequestInfo {
    let mut c = info.clone();
    c.verb = "create".into();
    if c.api_group.is_empty() && c.resource == "namespaces" {
        c.namespace.clear();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_pb::{
        api::core::v1 as core,
        apimachinery::pkg::{
            apis::meta::v1::ObjectMeta,
            runtime::{TypeMeta, Unknown},
        },
    };
    use prost::Message;

    fn protobuf_service(uid: Option<&str>) -> bytes::Bytes {
        let svc = core::Service {
            metadata: Some(ObjectMeta {
                name: Some("web".into()),
                namespace: Some("team-a".into()),
                uid: uid.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
            }),
            raw: Some(svc.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [b"k8s\0".to_vec(), u.encode_to_vec()].concat().into()
    }

    #[test]
    fn the_uid_a_put_body_names_is_found_in_every_form() {
        let update = MustNotCreate::Update;
        let json = |v: serde_json::Value| bytes::Bytes::from(v.to_string());
        let with = json(serde_json::json!({"metadata": {"name": "web", "uid": "u-1"}}));
        let sent = Sent::read(
            "application/json",
            with,
            update,
            &RequestInfo::default(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(sent.uid(), Some("u-1"));
        let without = json(serde_json::json!({"metadata": {"name": "web", "uid": ""}}));
        assert_eq!(
            Sent::read(
                "application/json",
                without,
                update,
                &RequestInfo::default(),
                &Limits::default()
            )
            .unwrap()
            .uid(),
            None
        );
        let yaml = bytes::Bytes::from_static(b"metadata: {name: web, uid: u-2}\n");
        assert_eq!(
            Sent::read(
                "application/yaml",
                yaml,
                update,
                &RequestInfo::default(),
                &Limits::default()
            )
            .unwrap()
            .uid(),
            Some("u-2")
        );
        let pb = "application/vnd.kubernetes.protobuf";
        let sent = Sent::read(
            pb,
            protobuf_service(Some("u-3")),
            update,
            &RequestInfo::default(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(sent.uid(), Some("u-3"));
        assert_eq!(
            Sent::read(
                pb,
                protobuf_service(None),
                update,
                &RequestInfo::default(),
                &Limits::default()
            )
            .unwrap()
            .uid(),
            None
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        let update = MustNotCreate::Update;
        let list = bytes::Bytes::from_static(b"[1, 2]");
        assert!(Sent::read(
            "application/json",
            list.clone(),
            update,
            &RequestInfo::default(),
            &Limits::default()
        )
        .is_err());
        assert!(Sent::read(
            "application/apply-patch+yaml",
            list,
            MustNotCreate::Apply,
            &RequestInfo::default(),
            &Limits::default()
        )
        .is_err());
        let garbage = bytes::Bytes::from_static(b"k8s\0\xff\xff");
        assert!(Sent::read(
            "application/vnd.kubernetes.protobuf",
            garbage,
            update,
            &RequestInfo::default(),
            &Limits::default()
        )
        .is_err());
    }

    #[test]
    fn apply_media_types() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_apply(Some(&v("application/apply-patch+yaml"))));
        assert!(is_apply(Some(&v(
            "Application/Apply-Patch+YAML; charset=utf-8"
        ))));
        assert!(is_apply(Some(&v("application/apply-patch+cbor"))));
        assert!(!is_apply(Some(&v("application/merge-patch+json"))));
        assert!(!is_apply(None));
        // A byte that is not UTF-8 after the `;`: the API server still applies it.
        let odd = HeaderValue::from_bytes(b"application/apply-patch+yaml; x=\xff").unwrap();
        assert!(is_apply(Some(&odd)));
    }
}
