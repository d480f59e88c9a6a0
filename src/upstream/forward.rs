//! Forwarding one request upstream and its response back, streamed both ways.
//!
//! Accepts any request the stages before it let through. Produces: the upstream's response
//! (status, headers minus hop-by-hop, body streamed as it arrives — watches and `logs -f` are
//! never buffered), or a Status: 502 `BadGateway` when the upstream cannot be reached or
//! breaks off before answering, 504 `Timeout` when a request that is not long-running gets no
//! response head within `upstream.request_timeout`. Upgrades go to `upgrade.rs`.

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderValue, Request, Response, Version};

use super::{client::Upstream, upgrade};
use crate::{
    authn::Identity,
    body::{self, Body},
    k8s::headers,
    refusal::{Refusal, UpstreamFailure},
};

/// What the forwarder needs to know about the caller.
pub struct Outbound<'a> {
    pub identity: &'a Identity,
    pub audit_id: &'a HeaderValue,
    pub peer: IpAddr,
    pub trust_forwarded_for: bool,
    pub long_running: bool,
    /// Held for as long as the exchange lasts — until the response body ends or, for an
    /// upgrade, until the spliced connection closes (e.g. a concurrent-stream permit).
    pub guard: Option<Guard>,
}

/// Anything whose drop releases a resource.
pub type Guard = Box<dyn Send + Sync + 'static>;

/// Rewrite client headers into upstream headers. Connection-named and hop-by-hop headers go
/// first, then every client identity header; only then are ours added.
pub fn prepare_headers(h: &mut HeaderMap, up: &Upstream, ob: &Outbound<'_>) {
    headers::strip_hop_by_hop(h);
    headers::strip_identity(h);
    h.remove(header::HOST);
    if let Some(auth) = up.credentials.authorization() {
        h.insert(header::AUTHORIZATION, (*auth).clone());
    }
    ob.identity.impersonation_headers(h);
    h.insert("audit-id", ob.audit_id.clone());
    headers::append_forwarded_for(h, ob.peer, ob.trust_forwarded_for);
}

/// Forward `req` upstream (its body already checked by the sanitize stage).
pub async fn forward(
    up: &Upstream,
    req: Request<Body>,
    mut ob: Outbound<'_>,
) -> Result<Response<Body>, Refusal> {
    let (mut parts, incoming) = req.into_parts();
    let guard = ob.guard.take();
    if parts.version == Version::HTTP_11 && headers::is_upgrade(&parts.headers) {
        return upgrade::forward(up, parts, incoming, &ob, guard).await;
    }
    let uri = match up.uri_for(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => return Err(UpstreamFailure::Unforwardable.into()),
    };
    prepare_headers(&mut parts.headers, up, &ob);
    parts.uri = uri;
    // The pooled client picks h2 or HTTP/1.1 per connection; it expects HTTP/1.1 here.
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, incoming);

    let sent = up.pool().request(out);
    let result = if ob.long_running {
        Ok(sent.await)
    } else {
        tokio::time::timeout(up.request_timeout, sent).await
    };
    match result {
        Ok(Ok(resp)) => {
            up.mark_ok();
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            let body = match guard {
                Some(guard) => body::hold(body::boxed(body), guard),
                None => body::boxed(body),
            };
            Ok(Response::from_parts(parts, body))
        }
        Ok(Err(err)) => {
            tracing::warn!(err = %err, source = ?std::error::Error::source(&err), "upstream request failed");
            Err(UpstreamFailure::Unreachable(describe(&err)).into())
        }
        Err(_) => Err(Refusal::Timeout),
    }
}

/// A short, non-leaky description of a client error.
fn describe(err: &hyper_util::client::legacy::Error) -> &'static str {
    if err.is_connect() {
        "connection failed"
    } else {
        "the connection broke before a response"
    }
}
