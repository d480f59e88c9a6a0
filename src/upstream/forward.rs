//! Forwarding one request upstream and its response back, streamed both ways.
//!
//! Accepts any request the stages before it let through. Produces: the upstream's response
//! (status, headers minus hop-by-hop, body streamed as it arrives — watches and `logs -f` are
//! never buffered), or a Status: 502 `BadGateway` when no endpoint can be reached or one
//! breaks off before answering, 503 `ServiceUnavailable` when every endpoint's circuit breaker
//! refuses, 504 `Timeout` when a request that is not long-running gets no response head within
//! its deadline (`deadline.rs`), 503 `UpstreamBusy` when every connection is full at the
//! cap (`pool.rs`). Which endpoint, fail-over and the breaker: `send.rs`. A watch ends
//! cleanly when its endpoint dies, any other body with an error (`stream.rs`). Every body is read inline while its
//! client keeps up, through a bounded buffer once it stops, and reset when it stalls
//! (`pump.rs`). Upgrades go to `upgrade.rs`.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request, Response, Version};

use super::{
    deadline::deadline,
    metrics::UpstreamMetrics,
    pump,
    send::{send, Judged, Sent},
    stream, upgrade, Upstream,
};
use crate::{
    authn::Identity,
    body::{self, Body},
    k8s::headers,
    ratelimit::inflight::SharedPlace,
    refusal::{Refusal, UpstreamFailure},
};

/// What the forwarder needs to know about the caller.
pub struct Outbound<'a> {
    pub identity: &'a Arc<Identity>,
    pub audit_id: &'a HeaderValue,
    /// The TCP peer's IP (as the connection wrote it once).
    pub peer: &'a HeaderValue,
    pub trust_forwarded_for: bool,
    pub long_running: bool,
    /// A `proxy` request (verb or subresource): its answer may be a backend's, relayed.
    pub relays_backend: bool,
    /// A long-running answer that is not a watch and holds a stream permit (a followed log, a
    /// `proxy` stream): a client that pauses it (`kubectl logs -f | less`) is not reset after
    /// `stalled_stream_timeout` — the API server never times such a write out — only after
    /// [`PAUSED_READER_LIMIT`].
    pub pausable: bool,
    /// A watch: its body ends cleanly when the upstream breaks under it (`stream.rs`). Other
    /// long-running answers (a followed log, a log read whole, `proxy`, `/debug/pprof/`) are
    /// files or byte streams whose cut end must stay an error.
    pub ends_cleanly: bool,
    /// A followed log: with `upstream.stream_idle_timeout` it ends, with an error, once idle
    /// that long.
    pub follows_log: bool,
    /// Held for as long as the exchange lasts — until the response body ends or, for an
    /// upgrade, until the spliced connection closes (e.g. a concurrent-stream permit).
    pub guard: Option<Guard>,
}

/// How long a paused followed log or proxied stream keeps its buffer and upstream stream: a
/// day. A watch's client that stops reading is reset after `stalled_stream_timeout`, as the
/// API server's cache ends a watcher too slow to keep up; a log's is not in the API server
/// (its copy just blocks), so a pager left open is not cut. Such streams hold a stream permit
/// and run as long as they follow anyway, so a pause adds no new way to hold upstream slots
/// (the streams caps, when set, bound them); a log read whole, which holds no permit, is still
/// reset after `stalled_stream_timeout`.
pub const PAUSED_READER_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Anything whose drop releases a resource.
pub type Guard = Box<dyn Send + Sync + 'static>;

/// Rewrite client headers into upstream headers. Connection-named and hop-by-hop headers go
/// first, then every client identity header; only then are ours added.
pub fn prepare_headers(h: &mut HeaderMap, up: &Upstream, ob: &Outbound<'_>) -> Result<(), Refusal> {
    headers::strip_hop_by_hop(h);
    headers::strip_identity(h);
    headers::strip_bearer_protocols(h);
    h.remove(header::HOST);
    if let Some(auth) = up.credentials.authorization() {
        h.insert(header::AUTHORIZATION, (*auth).clone());
    }
    if ob.identity.impersonation_headers(h).is_err() {
        // Never sent without the caller's whole identity: it would run as someone else.
        tracing::error!(user = ?ob.identity.user, "the caller's identity cannot be sent as impersonation headers; request refused");
        return Err(UpstreamFailure::IdentityUnsendable.into());
    }
    h.insert(headers::AUDIT_ID, ob.audit_id.clone());
    headers::append_forwarded_for(h, ob.peer, ob.trust_forwarded_for);
    Ok(())
}

/// Forward `req` upstream (its body already checked by the sanitize stage).
pub async fn forward(
    up: &Upstream,
    req: Request<Body>,
    mut ob: Outbound<'_>,
) -> Result<Response<Body>, Refusal> {
    let (mut parts, incoming) = req.into_parts();
    let guard = ob.guard.take();
    let watched = Watched::of(&parts);
    // Only a long-running request (exec, attach, port-forward, proxy, a watch over WebSocket,
    // an aggregated API's WebSocket subresource) can be upgraded by the API server; on any
    // other the `Upgrade` is ignored there, so it goes the ordinary way (its hop-by-hop
    // headers stripped), deadline and pool included.
    if parts.version == Version::HTTP_11 && ob.long_running && headers::is_upgrade(&parts.headers) {
        // Boxed, like every rare path here: inline, its state would sit in every request's
        // future (see `pool::request`).
        return Box::pin(upgrade::forward(up, parts, incoming, &ob, guard, watched)).await;
    }
    let limit = deadline(
        &parts.uri,
        ob.long_running,
        up.request_timeout,
        up.max_request_timeout,
    );
    prepare_headers(&mut parts.headers, up, &ob)?;
    let judged = Judged {
        // A deadline the client's `?timeout=` made shorter than the operator's says nothing
        // about the API server.
        deadline_is_operators: limit.is_none_or(|d| d >= up.request_timeout),
        relays_backend: ob.relays_backend,
    };
    let Sent { resp, endpoint } = send(up, parts, incoming, limit, judged).await?;
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = answer_body(up, body, &endpoint, &ob, watched, guard);
    Ok(Response::from_parts(parts, body))
}

/// What the request's answer reports to as it streams: the audit record (a stalled-stream
/// reset) and the per-identity in-flight place (released once the answer is read).
pub struct Watched {
    pub on_stall: Option<super::Watcher>,
    pub place: Option<SharedPlace>,
}

impl Watched {
    /// Taken from the request's extensions (before the request is sent).
    pub fn of(parts: &http::request::Parts) -> Watched {
        Watched {
            on_stall: parts.extensions.get::<super::Watcher>().cloned(),
            place: parts.extensions.get::<SharedPlace>().cloned(),
        }
    }
}

/// An upstream answer's body as it goes to the client: a clean end and the idle timeout for a
/// stream that asks for them, the stalled-stream reset, the in-flight place and `guard` (a
/// stream permit, the `ResponseComplete` event) held as long as it. Every answer the API server
/// streams goes out this way — an upgrade it answered without switching included.
pub fn answer_body(
    up: &Upstream,
    mut body: Body,
    endpoint: &Arc<super::client::Endpoint>,
    ob: &Outbound<'_>,
    watched: Watched,
    guard: Option<Guard>,
) -> Body {
    if ob.ends_cleanly || (ob.follows_log && up.stream_idle_timeout.is_some()) {
        body = stream::ending_cleanly(
            body,
            endpoint.name.clone(),
            up.stream_idle_timeout,
            ob.ends_cleanly,
        );
    }
    // Outside the clean end: a stalled stream must end in an error (a reset), never look
    // complete. The report is built only when a pump starts (at once for a pausable
    // response). The endpoint's `Arc`, not its name: a name is copied only then.
    let (metrics, user, audit_id, endpoint) = (
        up.metrics.stalled.clone(),
        ob.identity.clone(),
        ob.audit_id.clone(),
        endpoint.clone(),
    );
    // The in-flight place goes when the upstream answer has been read (or dropped: a
    // stalled-stream reset), not when a client that reads nothing lets hyper send it — by a
    // pump, once what it read is charged to the identity's budget (`pump::Place`).
    let place = watched
        .place
        .map(|place| Box::new(place.on_drop()) as pump::Place);
    let pausable = ob.pausable;
    let stall = if pausable {
        PAUSED_READER_LIMIT.max(up.stalled_stream_timeout)
    } else {
        up.stalled_stream_timeout
    };
    let on_stall = watched.on_stall;
    // A pausable stream is pumped from its first byte: its bytes are framed as a pod writes
    // them, and h2 must not be left holding a window of tiny frames while a hand-off waits for
    // a sweep (`window.rs`).
    body = pump::decouple(body, &up.budgets, stall, pausable, place, move || {
        pump::StallReport {
            counter: metrics
                .get_or_create(&UpstreamMetrics::endpoint(&endpoint.name))
                .clone(),
            endpoint: endpoint.name.clone(),
            user: user.user.clone(),
            pausable,
            audit_id: audit_id.to_str().unwrap_or_default().to_owned(),
            on_stall,
        }
    });
    if let Some(guard) = guard {
        body = body::hold(body, guard);
    }
    body
}
