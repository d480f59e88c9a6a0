//! The classify layer: the one parse of the Kubernetes request (`k8s::request::classify`, a
//! port of the API server's RequestInfo rules). Every later decision reads its result.
//!
//! Accepts every request whose path parses; puts `Arc<RequestInfo>` in the request extensions,
//! tells the audit record, and puts [`Classified`] on the response for the metrics and audit
//! layers above. Rejects an ambiguous or malformed path (`%2F`, `//`, dot segments, NUL, …)
//! with 400 `BadRequest` (`Refusal::BadPath`), and a `Content-Type` holding a byte outside
//! visible ASCII with 400 `BadRequest` (`Refusal::BadHeader`): Go's HTTP servers pass such
//! bytes through and the API server reads the media type before the first `;` byte for byte,
//! so a reader here that took the value as text could skip what the API server acts on (a
//! server-side apply seen as a plain patch). No Kubernetes client sends one.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::{
    audit::AuditRecord,
    body::Body,
    k8s::request::classify,
    refusal::Refusal,
    service::{self, Classified, ResponseFuture},
};

#[derive(Clone, Copy, Default)]
pub struct ClassifyLayer;

impl<S> Layer<S> for ClassifyLayer {
    type Service = ClassifyService<S>;
    fn layer(&self, inner: S) -> ClassifyService<S> {
        ClassifyService { inner }
    }
}

#[derive(Clone)]
pub struct ClassifyService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ClassifyService<S>
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
        // `to_str` fails exactly on a byte outside visible ASCII (tab allowed).
        if let Some(v) = req.headers().get(http::header::CONTENT_TYPE) {
            if v.to_str().is_err() {
                return service::ready(
                    Refusal::BadHeader(
                        "Content-Type must be visible ASCII (a media type such as application/json)"
                            .into(),
                    )
                    .respond(),
                );
            }
        }
        let info = match classify(req.method(), req.uri(), req.headers()) {
            Ok(info) => Arc::new(info),
            Err(err) => return service::ready(Refusal::BadPath(err.to_string()).respond()),
        };
        if let Some(rec) = req.extensions().get::<AuditRecord>() {
            rec.with(|r| r.classified(info.clone()));
        }
        let classified = Classified {
            class: info.verb_class(),
            long_running: info.long_running,
        };
        req.extensions_mut().insert(info);
        let inner = self.inner.call(req);
        service::boxed(async move {
            let mut resp = inner.await?;
            resp.extensions_mut().insert(classified);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        k8s::request::RequestInfo,
        refusal::Refused,
        service::testing::{calls, counting, request, send, text, TestBody},
    };

    #[tokio::test]
    async fn an_ambiguous_path_is_refused_before_anything_below() {
        let (inner, seen) = counting::<TestBody>();
        let resp = send(
            ClassifyLayer.layer(inner),
            request("GET", "/api/v1/namespaces/default/pods/a%2Fb"),
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "classify");
        assert!(text(resp).await.contains("invalid request path"));
        assert_eq!(calls(&seen), 0, "the layers below never saw it");
    }

    /// A `Content-Type` byte outside visible ASCII: 400 before any layer below reads it (the
    /// authorization layer's apply check read such a value as "no media type", the sanitizer
    /// as an apply patch, and the API server applies it — a create past a patch-only grant).
    #[tokio::test]
    async fn a_content_type_that_is_not_ascii_is_refused_before_anything_below() {
        let (inner, seen) = counting::<TestBody>();
        let mut req = request("PATCH", "/apis/apps/v1/namespaces/a/deployments/new");
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_bytes(b"application/apply-patch+yaml; x=\xff").unwrap(),
        );
        let resp = send(ClassifyLayer.layer(inner), req).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "classify");
        assert!(text(resp)
            .await
            .contains("invalid request header: Content-Type"));
        assert_eq!(calls(&seen), 0, "the layers below never saw it");
    }

    #[tokio::test]
    async fn the_classification_travels_down_and_its_summary_up() {
        let svc = ClassifyLayer.layer(tower::service_fn(|req: Request<TestBody>| {
            let info = req.extensions().get::<Arc<RequestInfo>>().cloned();
            async move {
                let info = info.expect("classified");
                assert_eq!(
                    (info.verb.as_str(), info.resource.as_str()),
                    ("watch", "pods")
                );
                Ok::<_, Infallible>(Response::new(crate::body::empty()))
            }
        }));
        let resp = send(svc, request("GET", "/api/v1/namespaces/a/pods?watch=1")).await;
        let c = resp.extensions().get::<Classified>().copied().unwrap();
        assert_eq!((c.class, c.long_running), ("watch", true));
    }
}
