//! What every layer of the stack (`crate::stack`) shares: the boxed response future, and the
//! typed per-request facts that travel in request and response extensions.
//!
//! Request extensions, in the order the layers add them: `Arc<ConnInfo>` (the connection,
//! from the accept loop), [`AuditId`] (request id), `AuditRecord` (audit, when configured),
//! `Arc<RequestInfo>` (classify), `Arc<Identity>` (authn), `HoldWhileStreaming` (rate limit: a
//! stream permit). Response extensions: [`Classified`] (classify, for metrics and audit),
//! `Refused` (any refusal, see `crate::refusal`), `StreamGuards` (the forwarder, for a stream).

use std::{any::Any, convert::Infallible, future::Future, pin::Pin, sync::Arc};

use http::{HeaderValue, Request, Response};

use crate::{body::Body, k8s::request::RequestInfo, server::ConnInfo};

/// The future every layer returns. Layers never fail: a refusal is a response.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// This request's `Audit-ID` (ours; a client's is never trusted).
#[derive(Debug, Clone)]
pub struct AuditId(pub HeaderValue);

/// What the classification said, on the response for the layers above classify.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    /// `read`, `write`, `watch`, `stream` or `nonresource`: the metric label.
    pub class: &'static str,
    pub long_running: bool,
}

/// The classified request (set by the classify layer).
pub fn info<B>(req: &Request<B>) -> Option<&Arc<RequestInfo>> {
    req.extensions().get::<Arc<RequestInfo>>()
}

/// The connection the request came on (set by the accept loop glue in `app`).
pub fn conn<B>(req: &Request<B>) -> Option<&Arc<ConnInfo>> {
    req.extensions().get::<Arc<ConnInfo>>()
}

/// The facts every request that goes upstream carries (set by request id, the accept loop,
/// classify and authenticate), owned so they outlive the request they were read from.
#[derive(Clone)]
pub struct Caller {
    pub info: Arc<RequestInfo>,
    pub identity: Arc<crate::authn::Identity>,
    pub audit_id: AuditId,
    pub conn: Arc<ConnInfo>,
}

impl Caller {
    /// The facts of `req`; `None` when a layer that sets one did not run (a bug in the order).
    pub fn of<B>(req: &Request<B>) -> Option<Caller> {
        let ext = req.extensions();
        Some(Caller {
            info: ext.get::<Arc<RequestInfo>>()?.clone(),
            identity: ext.get::<Arc<crate::authn::Identity>>()?.clone(),
            audit_id: ext.get::<AuditId>()?.clone(),
            conn: ext.get::<Arc<ConnInfo>>()?.clone(),
        })
    }

    /// What the forwarder (and a read of the current object) needs to act as this caller.
    pub fn outbound(
        &self,
        trust_forwarded_for: bool,
        guard: Option<crate::upstream::Guard>,
    ) -> crate::upstream::Outbound<'_> {
        crate::upstream::Outbound {
            identity: &self.identity,
            audit_id: &self.audit_id.0,
            peer: &self.conn.peer_ip,
            trust_forwarded_for,
            long_running: self.info.long_running,
            relays_backend: self.info.verb == "proxy" || self.info.subresource == "proxy",
            // Set by the upstream service, which has the request's query (`follow`).
            pausable: false,
            // Set by the upstream service, which has the request's query (`follow`).
            ends_cleanly: false,
            // Set by the upstream service, which has the request's query (`follow`).
            follows_log: false,
            guard,
        }
    }
}

/// Box a future as a [`ResponseFuture`]. A future that already is one (a layer handing on its
/// inner service's future) is returned as it is: boxing it again would cost an allocation and
/// an extra indirect call on every poll, once per layer and request.
pub fn boxed<F>(f: F) -> ResponseFuture
where
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut slot = Some(f);
    if let Some(same) = (&mut slot as &mut dyn Any).downcast_mut::<Option<ResponseFuture>>() {
        if let Some(fut) = same.take() {
            return fut;
        }
    }
    match slot {
        Some(f) => Box::pin(f),
        // Only taken above, where it returned; deny by default all the same.
        None => ready(crate::refusal::Refusal::Panic.respond()),
    }
}

/// An immediate answer (a refusal).
pub fn ready(resp: Response<Body>) -> ResponseFuture {
    Box::pin(std::future::ready(Ok(resp)))
}

/// Helpers for driving one layer alone over a `tower::service_fn` inner service.
#[cfg(test)]
pub mod testing {
    use std::{
        convert::Infallible,
        net::SocketAddr,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use tower::{Service, ServiceExt};

    use crate::{
        body::{self, Body},
        k8s::request::classify,
        server::ConnInfo,
    };

    pub type TestBody = Full<Bytes>;

    /// A request as the accept loop hands it over (from `peer`, no client certificate).
    pub fn request_from(peer: &str, method: &str, uri: &str) -> Request<TestBody> {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        req.extensions_mut()
            .insert(Arc::new(ConnInfo::new(peer, None, true)));
        req
    }

    /// [`request_from`] 192.0.2.1.
    pub fn request(method: &str, uri: &str) -> Request<TestBody> {
        request_from("192.0.2.1:40000", method, uri)
    }

    /// [`request`], classified as the classify layer would.
    pub fn classified(method: &str, uri: &str) -> Request<TestBody> {
        let mut req = request(method, uri);
        let info = classify(req.method(), req.uri(), req.headers()).unwrap();
        req.extensions_mut().insert(Arc::new(info));
        req
    }

    /// An inner service answering 200 `ok`; the counter says how many requests reached it.
    pub fn counting<B: Send + 'static>() -> (
        impl Service<
                Request<B>,
                Response = Response<Body>,
                Error = Infallible,
                Future: Send + 'static,
            > + Clone
            + Send
            + 'static,
        Arc<AtomicUsize>,
    ) {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let svc = tower::service_fn(move |_req: Request<B>| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(body::full("ok"))) }
        });
        (svc, seen)
    }

    /// Send one request through `svc`.
    pub async fn send<S, B>(svc: S, req: Request<B>) -> Response<Body>
    where
        S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    {
        match svc.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// The body as text.
    pub async fn text(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    pub fn calls(seen: &AtomicUsize) -> usize {
        seen.load(Ordering::SeqCst)
    }

    /// An upstream client for a port nothing listens on (127.0.0.1:9).
    pub fn unreachable_upstream() -> Arc<crate::upstream::Upstream> {
        use crate::config::{UpstreamConfig, UpstreamToken};
        use std::time::Duration;
        crate::server::tls::install_crypto_provider();
        let cfg = UpstreamConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(3600),
            token_reload_interval: Duration::from_secs(3600),
            ..UpstreamConfig::new(vec!["https://127.0.0.1:9".parse().unwrap()], vec![])
        };
        let credentials = crate::upstream::Credentials::load(&UpstreamToken::None).unwrap();
        Arc::new(crate::upstream::Upstream::new(&cfg, credentials).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(f: &ResponseFuture) -> *const u8 {
        let r: &(dyn Future<Output = Result<Response<Body>, Infallible>> + Send) = &**f;
        (r as *const (dyn Future<Output = Result<Response<Body>, Infallible>> + Send)).cast::<u8>()
    }

    #[tokio::test]
    async fn boxed_hands_on_a_response_future_without_boxing_it_again() {
        let inner = ready(Response::new(crate::body::empty()));
        let before = address(&inner);
        let outer = boxed(inner);
        assert_eq!(
            address(&outer),
            before,
            "the same allocation, not a box around it"
        );
        let resp = outer.await.unwrap_or_else(|never| match never {});
        assert_eq!(resp.status(), http::StatusCode::OK);
    }

    #[tokio::test]
    async fn boxed_boxes_any_other_future() {
        let resp = boxed(async { Ok(Response::new(crate::body::empty())) })
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(resp.status(), http::StatusCode::OK);
    }
}
