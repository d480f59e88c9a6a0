//! The outermost layer but metrics: a fresh `Audit-ID` for every request, and the catch for a
//! panic below.
//!
//! Accepts everything. Puts [`AuditId`] in the request extensions (a client's `Audit-ID` is
//! never trusted; the forwarder sends ours upstream) and the same value as the `Audit-ID`
//! response header, refusals included. A panic anywhere below answers 500 `InternalError`
//! (`Refusal::Panic`) and writes a `Panic` audit event with the request line, instead of
//! dropping the connection.

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::{
    audit::{Audit, Recorder, Stage},
    body::Body,
    refusal::Refusal,
    service::{self, AuditId, ResponseFuture},
};

mod id;

/// Adds the request id; catches panics (and records them when audit is on).
#[derive(Clone)]
pub struct RequestIdLayer {
    audit: Option<Arc<Audit>>,
}

impl RequestIdLayer {
    pub fn new(audit: Option<Arc<Audit>>) -> RequestIdLayer {
        RequestIdLayer { audit }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> RequestIdService<S> {
        RequestIdService {
            inner,
            audit: self.audit.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestIdService<S> {
    inner: S,
    audit: Option<Arc<Audit>>,
}

impl<S, B> Service<Request<B>> for RequestIdService<S>
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
        let audit_id = id::new_audit_id();
        req.extensions_mut().insert(AuditId(audit_id.clone()));
        // Kept for the panic path only: a `Uri` clone shares its bytes, no allocation.
        let uri = req.uri().clone();
        let method = req.method().clone();
        let peer = service::conn(&req).map(|c| c.peer);
        let audit = self.audit.clone();
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        service::boxed(async move {
            let outcome = match called {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            let mut resp = match outcome {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                // Boxed: the rare path's state would otherwise sit in every request's future.
                Err(_) => Box::pin(panicked(audit, &audit_id, &uri, &method, peer)).await,
            };
            resp.headers_mut()
                .insert(crate::k8s::headers::AUDIT_ID, audit_id);
            Ok(resp)
        })
    }
}

/// The 500 for a panic, and its `Panic` audit event.
async fn panicked(
    audit: Option<Arc<Audit>>,
    audit_id: &HeaderValue,
    uri: &http::Uri,
    method: &http::Method,
    peer: Option<std::net::SocketAddr>,
) -> Response<Body> {
    let request_uri = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
    // The path only: a query can carry secrets (an exec's `command=mysql -p…`). The audit
    // event keeps the whole `requestURI`, as the API server's does.
    tracing::error!(peer = %peer_text, path = %uri.path(), "request handler panicked");
    if let Some(audit) = audit {
        let ips = peer.map(|p| vec![p.ip().to_string()]).unwrap_or_default();
        let mut rec = Recorder::new(audit, audit_id, request_uri, method, None, ips);
        rec.status_code(500);
        let _ = crate::audit::AuditRecord::new(rec).emit(Stage::Panic).await;
    }
    Refusal::Panic.respond()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::testing::{request, send, text, TestBody};

    #[tokio::test]
    async fn every_answer_carries_the_id_the_layers_below_saw() {
        let svc = RequestIdLayer::new(None).layer(tower::service_fn(|req: Request<TestBody>| {
            let id = req.extensions().get::<AuditId>().map(|a| a.0.clone());
            async move {
                let mut resp = Response::new(crate::body::empty());
                resp.extensions_mut().insert(id);
                Ok::<_, Infallible>(resp)
            }
        }));
        let mut req = request("GET", "/api");
        req.headers_mut()
            .insert("audit-id", HeaderValue::from_static("client-chosen"));
        let resp = send(svc, req).await;
        let seen = resp.extensions().get::<Option<HeaderValue>>().cloned();
        let sent = resp.headers()["audit-id"].clone();
        assert_eq!(seen, Some(Some(sent.clone())));
        assert_ne!(sent, "client-chosen");
        assert_eq!(sent.len(), 36);
    }

    #[tokio::test]
    async fn a_panic_below_answers_500_with_the_id() {
        let svc = RequestIdLayer::new(None).layer(tower::service_fn(
            |_req: Request<TestBody>| async move {
                if true {
                    panic!("a bug below");
                }
                Ok::<_, Infallible>(Response::new(crate::body::empty()))
            },
        ));
        let resp = send(svc, request("GET", "/api")).await;
        assert_eq!(resp.status(), 500);
        assert!(resp.headers().contains_key("audit-id"));
        let body = text(resp).await;
        assert!(body.contains(r#""reason":"InternalError""#), "{body}");
        assert!(
            body.contains("the proxy failed to handle this request"),
            "{body}"
        );
    }
}
