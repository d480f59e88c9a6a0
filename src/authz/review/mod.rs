//! The self-review layer: `kubectl auth whoami`, `kubectl auth can-i` and `kubectl auth can-i
//! --list` answered by the proxy, never forwarded with the proxy's power (the API server would
//! answer for the proxy's own identity, or for whoever the proxy impersonates without the
//! proxy's grants and scope). `answer.rs` says what each review answers.
//!
//! Accepts a POST of a `SelfSubjectReview` (`authentication.k8s.io` v1 / v1beta1),
//! `SelfSubjectAccessReview` or `SelfSubjectRulesReview` (`authorization.k8s.io/v1`) by any
//! authenticated caller (authorization allows them to everyone; rate limits count them as
//! reads; the audit layer above records them), in JSON, YAML or kubectl's protobuf; answers
//! 201 with the review and its `status`, in JSON — or protobuf when the client accepts only
//! that. Only an allowed access review costs an upstream request (a SelfSubjectAccessReview
//! as the caller) — except `impersonate`, which the proxy alone decides (it impersonates with
//! its own right), reserved extras included. Rejects: a body over 1 MiB (413), not received in time (408), not
//! decodable (400 `BadRequest`, protobuf included, as kube-apiserver; a media type it does not
//! read: 415), an `Accept` that allows neither JSON nor protobuf (406), a malformed review
//! (400; an access review with neither or both attribute kinds: 422 `Invalid`).
//! Everything else passes through untouched.

pub mod answer;

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tower::{Layer, Service};

use super::Authorizer;
use crate::{
    body::{self, Body, BoxError},
    k8s::{review_proto, Status},
    refusal::{BodyRefusal, Refusal},
    sanitize::parse::{self, Limits},
    service::{self, Caller, ResponseFuture},
    upstream::{
        review::{access_review, Asker},
        Upstream,
    },
};

/// Largest review body read.
const MAX_REVIEW: usize = 1024 * 1024;
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

#[derive(Clone)]
pub struct ReviewLayer {
    authorizer: Arc<Authorizer>,
    upstream: Arc<Upstream>,
    trust_forwarded_for: bool,
}

impl ReviewLayer {
    pub fn new(
        authorizer: Arc<Authorizer>,
        upstream: Arc<Upstream>,
        trust_forwarded_for: bool,
    ) -> ReviewLayer {
        ReviewLayer {
            authorizer,
            upstream,
            trust_forwarded_for,
        }
    }
}

impl<S> Layer<S> for ReviewLayer {
    type Service = ReviewService<S>;
    fn layer(&self, inner: S) -> ReviewService<S> {
        ReviewService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ReviewService<S> {
    inner: S,
    layer: ReviewLayer,
}

impl<S, B> Service<Request<B>> for ReviewService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
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
        if !service::info(&req).is_some_and(|i| i.is_self_review()) {
            return service::boxed(self.inner.call(req));
        }
        let layer = self.layer.clone();
        service::boxed(async move {
            Ok(match layer.answer(req).await {
                Ok(resp) => resp,
                Err(refusal) => refusal.respond(),
            })
        })
    }
}

/// Whether the client takes JSON (or anything), else protobuf; `None`: neither.
fn wants_protobuf(h: &HeaderMap) -> Option<bool> {
    let accept: Vec<String> = h
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|r| !r.is_empty())
        .collect();
    if accept.is_empty()
        || accept
            .iter()
            .any(|r| matches!(r.as_str(), "application/json" | "application/*" | "*/*"))
    {
        Some(false)
    } else if accept.iter().any(|r| r == PROTOBUF) {
        Some(true)
    } else {
        None
    }
}

impl ReviewLayer {
    async fn answer<B>(&self, req: Request<B>) -> Result<Response<Body>, Refusal>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(caller) = Caller::of(&req) else {
            return Err(Refusal::Panic);
        };
        let protobuf_out = wants_protobuf(req.headers()).ok_or_else(|| {
            Refusal::BadReview(Box::new(Status::failure(
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf",
            )))
        })?;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = match tokio::time::timeout(
            self.upstream.request_timeout,
            Limited::new(req.into_body(), MAX_REVIEW).collect(),
        )
        .await
        {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BodyRefusal::TooLarge { limit: MAX_REVIEW }.into())
            }
            Ok(Err(e)) => return Err(BodyRefusal::Unreadable(e.to_string()).into()),
            Err(_) => return Err(BodyRefusal::NotReceived.into()),
        };
        let mut obj = decode(content_type.as_deref(), &bytes)?;
        let info = &caller.info;
        let kind = match info.resource.as_str() {
            "selfsubjectreviews" => "SelfSubjectReview",
            "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
            _ => "SelfSubjectRulesReview",
        };
        obj["apiVersion"] = json!(format!("{}/{}", info.api_group, info.api_version));
        obj["kind"] = json!(kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["creationTimestamp"] = Value::Null;
        let id = &caller.identity;
        obj["status"] = match kind {
            "SelfSubjectReview" => answer::whoami(id),
            "SelfSubjectAccessReview" => {
                let asked = answer::asked_request(&obj["spec"])?;
                let local = answer::local_decision(&self.authorizer, id, &asked);
                let upstream = if local.allowed && !answer::answered_locally(&asked) {
                    let ob = caller.outbound(self.trust_forwarded_for, None);
                    // The API server is asked about the request as the URL classifies it, as
                    // the proxy decided: kubectl's current namespace on a question about a
                    // cluster-scoped resource would make its RBAC answer for another request.
                    let mut spec = obj["spec"].clone();
                    if asked.is_resource_request {
                        let classified = answer::as_classified(&self.authorizer, &asked);
                        spec["resourceAttributes"]["namespace"] = json!(classified.namespace);
                    }
                    Some(access_review(&self.upstream, Asker::Caller(&ob), &spec).await)
                } else {
                    None
                };
                tracing::info!(user = %id.user, verb = %asked.verb, resource = %asked.resource, namespace = %asked.namespace, proxy = %local.reason, "access review");
                answer::access_status(&local, upstream)
            }
            _ => answer::rules(&self.authorizer, id, &obj["spec"])?,
        };
        let (bytes, content_type) = match protobuf_out.then(|| review_proto::encode(&obj)) {
            Some(Some(pb)) => (pb, PROTOBUF),
            _ => (parse::canonical_bytes(&obj), "application/json"),
        };
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = StatusCode::CREATED;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }
}

/// The review in `bytes`, by its media type (none: JSON, as kube-apiserver reads a body
/// without one).
fn decode(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, Refusal> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("application/json")
        .trim()
        .to_ascii_lowercase();
    let value = if essence == PROTOBUF {
        // 400, as kube-apiserver answers a body its decoder cannot read (`transformDecodeError`).
        review_proto::decode(bytes).map_err(|e| {
            Refusal::BadReview(Box::new(Status::bad_request(format!(
                "the protobuf review could not be decoded: {e}"
            ))))
        })?
    } else if essence == "application/json" || essence == "application/yaml" {
        parse::parse_body(&essence, bytes, &Limits::default())
            .map_err(|e| {
                Refusal::BadReview(Box::new(Status::bad_request(format!(
                    "the review could not be read: {e}"
                ))))
            })?
            .value
    } else {
        return Err(Refusal::BadReview(Box::new(Status::unsupported_media_type(
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, {PROTOBUF}"),
        ))));
    };
    if !value.is_object() {
        return Err(Refusal::BadReview(Box::new(Status::bad_request(
            "the body of the request was not an object",
        ))));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(wants_protobuf(&HeaderMap::new()), Some(false));
        assert_eq!(
            wants_protobuf(&accept(
                "application/vnd.kubernetes.protobuf, application/json"
            )),
            Some(false)
        );
        assert_eq!(
            wants_protobuf(&accept("application/vnd.kubernetes.protobuf")),
            Some(true)
        );
        assert_eq!(wants_protobuf(&accept("text/html")), None);
    }

    #[test]
    fn bodies() {
        assert!(decode(None, br#"{"spec": {}}"#).is_ok());
        assert!(decode(Some("application/yaml"), b"spec: {namespace: a}").is_ok());
        let s = decode(Some("text/plain"), b"x").unwrap_err().status();
        assert_eq!(s.code, 415);
        let s = decode(Some(PROTOBUF), b"nope").unwrap_err().status();
        assert_eq!(
            s.code, 400,
            "as kube-apiserver answers a body it cannot decode"
        );
        assert_eq!(decode(None, b"[1]").unwrap_err().status().code, 400);
    }
}
