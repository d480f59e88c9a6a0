//! A server-side apply that could create is authorized as `create` too, as kube-apiserver does
//! (`handlers/patch.go`: an apply patch's create path runs `withAuthorization` with verb
//! `create`), with no window in which a patch-only identity can create.
//!
//! The authorize layer marks an apply (`application/apply-patch+yaml|cbor`, no subresource)
//! whose caller may `patch` but not `create` the object with [`ApplyMustNotCreate`]. This
//! layer, last before the network (after the body was judged), then reads the object as the
//! caller and:
//!
//! * absent → 403 `Forbidden`, worded as a refused create (`deployments.apps "web" is
//!   forbidden: User "ci-bot" cannot create resource "deployments" in API group "apps" in the
//!   namespace "team-a"`); nothing is forwarded;
//! * present → forwards the apply with the object's `metadata.uid` added (a `uid` the client
//!   sent is kept). That is a precondition the API server itself enforces atomically inside
//!   the write: an apply naming a uid when no object exists fails `409 Conflict` ("uid
//!   mismatch: the provided object specified uid …, and no existing object was found"), and one
//!   naming another object's uid fails `422` (uid is immutable). So an object deleted (or
//!   replaced) between our read and the write is never created by this apply: no
//!   check-then-act race.
//!
//! Other refusals: the object cannot be read (403 when the caller may not `get` it, 503
//! otherwise, as the sanitize stage's reads); the body cannot be read back as an object (400,
//! 415 for CBOR). Requests without the marker pass untouched.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tower::{Layer, Service};

use super::forbidden;
use crate::{
    body::{self, Body},
    refusal::{BodyRefusal, Refusal},
    sanitize::{
        judge::Current,
        parse::{self, Limits},
    },
    service::{self, Caller, ResponseFuture},
    upstream::{fetch, Upstream},
};

/// The request extension the authorize layer sets: this apply must not create.
#[derive(Debug, Clone, Copy)]
pub struct ApplyMustNotCreate;

/// Largest apply body re-read (the sanitize stage capped it already; this only bounds memory
/// for resources it does not inspect).
const MAX_APPLY: usize = 64 * 1024 * 1024;

/// Whether `content_type` is a server-side apply patch.
pub fn is_apply(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/apply-patch+yaml" || v == "application/apply-patch+cbor")
}

#[derive(Clone)]
pub struct ApplyGuardLayer {
    upstream: Arc<Upstream>,
    trust_forwarded_for: bool,
}

impl ApplyGuardLayer {
    pub fn new(upstream: Arc<Upstream>, trust_forwarded_for: bool) -> ApplyGuardLayer {
        ApplyGuardLayer {
            upstream,
            trust_forwarded_for,
        }
    }
}

impl<S> Layer<S> for ApplyGuardLayer {
    type Service = ApplyGuardService<S>;
    fn layer(&self, inner: S) -> ApplyGuardService<S> {
        ApplyGuardService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApplyGuardService<S> {
    inner: S,
    layer: ApplyGuardLayer,
}

impl<S> Service<Request<Body>> for ApplyGuardService<S>
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
        if req.extensions().get::<ApplyMustNotCreate>().is_none() {
            return service::boxed(self.inner.call(req));
        }
        let mut inner = self.inner.clone();
        let layer = self.layer.clone();
        service::boxed(async move {
            match layer.guard(req).await {
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

impl ApplyGuardLayer {
    /// The apply with the existing object's uid, or the refusal.
    async fn guard(&self, req: Request<Body>) -> Result<Request<Body>, Refusal> {
        let Some(caller) = Caller::of(&req) else {
            return Err(Refusal::Panic);
        };
        let info = &caller.info;
        let ob = caller.outbound(self.trust_forwarded_for, None);
        let uid = match fetch::current(&self.upstream, info, &ob).await? {
            Current::Found(obj) => obj["metadata"]["uid"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            Current::Absent | Current::NotFetched => None,
        };
        let Some(uid) = uid else {
            let mut as_create = (**info).clone();
            as_create.verb = "create".into();
            tracing::info!(user = %caller.identity.user, path = %info.path, "apply would create; the caller may not create");
            return Err(Refusal::Forbidden(Box::new(forbidden(
                &caller.identity,
                &as_create,
                "",
            ))));
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
        let mut parsed = parse::parse_body(&content_type, &bytes, &Limits::default())
            .map_err(|e| match e {
                parse::ParseError::UnsupportedMediaType(_) => {
                    Refusal::from(BodyRefusal::UnknownFormat)
                }
                e => BodyRefusal::Parse {
                    message: e.to_string(),
                    field: e.field_path().map(str::to_owned),
                }
                .into(),
            })?
            .value;
        let Some(obj) = parsed.as_object_mut() else {
            return Err(BodyRefusal::BadPatch("an apply patch must be an object".into()).into());
        };
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("uid").or_insert_with(|| json!(uid));
        }
        let out = parse::canonical_bytes(&parsed);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(Request::from_parts(parts, body::full(out)))
    }
}

/// The (already judged) body, at most [`MAX_APPLY`] bytes. Frame by frame rather than with
/// `Limited::collect`, whose boxed-error conversion trips rust-lang/rust#102211 here.
async fn read_all(mut body: Body) -> Result<bytes::Bytes, Refusal> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyRefusal::Unreadable(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_APPLY {
                return Err(BodyRefusal::TooLarge { limit: MAX_APPLY }.into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
