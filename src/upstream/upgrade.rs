//! HTTP/1.1 upgrades (WebSocket exec / attach / port-forward, SPDY/3.1): forwarded over a
//! fresh upstream connection, then spliced byte for byte.
//!
//! On `101 Switching Protocols` the 101 (with `Sec-WebSocket-*`, `X-Stream-Protocol-Version`,
//! `Connection` and `Upgrade`) goes to the client and both byte streams are copied until either
//! side closes; then both close (as kube-apiserver's `UpgradeAwareHandler`: the other
//! direction does not run on after a half-close). On any other answer that response is returned as it is — kubectl
//! needs a real HTTP error to fall back from WebSocket to SPDY — and the upstream connection is
//! dropped once the response body ends, never reused (CVE-2018-1002105). An established stream
//! has no deadline (interactive sessions live as long as their peers); with
//! `upstream.stream_idle_timeout` set it ends once neither side sent a byte for that long
//! (`idle.rs`), and both connections close.
//!
//! An upgrade request that announces a body (`Transfer-Encoding`, a `Content-Length` other
//! than 0) is refused with 400 `BadRequest` before anything goes upstream: the API server would
//! read those bytes on the hijacked connection as the session's first frames.
//!
//! The endpoint: the first in `Upstream::candidates` order whose breaker admits it and that
//! accepts a TLS connection (nothing of the request is sent before that, so trying the next
//! one is safe); every breaker refusing is a 503 `BreakerOpen`, no endpoint reachable a 502.
//!
//! A session to be recorded (`audit::session`) gets its file before anything goes upstream —
//! a file that cannot be created is a 503 `ServiceUnavailable` (`AuditUnavailable`), never an
//! unrecorded session — and the splice reads both byte streams along into it; the recording's
//! annotation is set before the splice's guards (the `ResponseComplete` event) are dropped. An
//! upstream that switches a recorded session to a protocol the recorder cannot read (a
//! `base64.` or unknown subprotocol, an extension, another upgrade) gets no splice: the client
//! gets 502 `BadGateway` and the annotation an `error`.

use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;

use super::{
    client::Endpoint,
    forward::{answer_body, prepare_headers, Guard, Outbound, Watched},
    idle::Activity,
    one_way,
    send::{answered, breaker_open, outcome_of, report, Judged},
    Upstream,
};
use crate::{
    audit::session,
    body::{self, Body},
    k8s::headers,
    read_tap::CheckedTap,
    refusal::{BodyRefusal, Refusal, UpstreamFailure},
};
use std::{sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Forward an upgrade request. `parts` still carries the client connection's `OnUpgrade`.
pub async fn forward(
    up: &Upstream,
    mut parts: Parts,
    incoming: Body,
    ob: &Outbound<'_>,
    guard: Option<Guard>,
    watched: Watched,
) -> Result<Response<Body>, Refusal> {
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(UpstreamFailure::NotUpgradable.into());
    };
    // The API server hijacks the connection on an upgrade, and bytes of a body it did not read
    // would be read there as the first frames of the session — past the recorder, which reads
    // only what follows the 101. No client sends one: refused (400), and nothing of the
    // client's body goes upstream.
    if carries_body(&parts.headers) {
        return Err(BodyRefusal::UpgradeBody.into());
    }
    drop(incoming);
    let recording = match session::prepare(&mut parts) {
        Ok(r) => r,
        Err(_) => return Err(Refusal::AuditUnavailable),
    };
    // The client's path, before it is rebased onto the endpoint's URL (for the breaker).
    let path = parts.uri.path().to_owned();
    // A session outliving its connection's shutdown grace ends itself then (`Cutoff`), noted
    // on its event.
    let ending = Ending {
        cutoff: parts
            .extensions
            .get::<Arc<crate::server::ConnInfo>>()
            .map(|c| c.cutoff.clone())
            .unwrap_or_default(),
        record: parts.extensions.get::<crate::audit::AuditRecord>().cloned(),
    };
    let (ep, permit, io) = connect(up).await?;
    prepare_upgrade_request(up, &ep, &mut parts, ob)?;
    // The answer to an upgrade (the 101, or a refusal) comes once the kubelet has started
    // the exec or attach in the container runtime (or the backend of a `proxy` answered);
    // one that never comes must not hold the request and its session permit for ever:
    // `upgrade_timeout`, then 504.
    let sent = tokio::time::timeout(
        up.upgrade_timeout,
        send_on_fresh_connection(io, parts, body::empty()),
    )
    .await;
    let mut resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(Unanswered {
            refusal,
            unreadable,
        })) => {
            // An answer that could not be read (too many headers, not HTTP) on a `proxy`
            // upgrade is the backend's, written through by the API server: neutral, or any
            // caller whose pod answers so could open every breaker.
            let outcome = if unreadable && ob.relays_backend {
                super::breaker::Outcome::Neutral
            } else {
                super::breaker::Outcome::Failure
            };
            report(&ep, permit, outcome);
            return Err(refusal);
        }
        Err(_) => {
            // Neutral for the breaker: the wait is the kubelet's and the container runtime's
            // (or a proxied backend's), which says nothing of the API server's own health.
            tracing::warn!(endpoint = %ep.name, "upstream gave no answer to an upgrade in time");
            report(&ep, permit, super::breaker::Outcome::Neutral);
            return Err(Refusal::Timeout);
        }
    };
    if resp.status() == StatusCode::UNAUTHORIZED && !ob.relays_backend {
        // As on the ordinary path (`send.rs`): only the proxy's own credentials travel
        // upstream — a 502, not a 401 that makes kubectl and exec plugins ask the user to log
        // in again; neutral, and no sign of health. The API server writes the node's non-101
        // answer through, so the 401 may also be the kubelet refusing the API server's
        // credentials: the message names both.
        tracing::error!(endpoint = %ep.name, "the upstream answered an upgrade with 401 (the proxy's credentials, or the kubelet refusing the API server's)");
        report(&ep, permit, super::breaker::Outcome::Neutral);
        return Err(UpstreamFailure::UpgradeUnauthorized.into());
    }
    let outcome = match resp.status() {
        StatusCode::SWITCHING_PROTOCOLS => super::breaker::Outcome::Success,
        // Long-running: no deadline; a `proxy` upgrade may relay a backend's 5xx.
        status => outcome_of(
            status,
            resp.headers(),
            &path,
            Judged {
                deadline_is_operators: true,
                relays_backend: ob.relays_backend,
            },
            &ep,
            &up.metrics,
        ),
    };
    answered(&ep, permit, outcome);

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        // Tell the client too: this exchange is over.
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        // An answer that is not a switch may still stream (a watch asked with an `Upgrade`
        // the API server ignores): it goes out as on the ordinary path — the stalled-stream
        // reset, the idle timeout and clean end, the guard (a stream permit, the
        // `ResponseComplete` event) held as long as its body.
        let out = answer_body(up, body::boxed(rbody), &ep, ob, watched, guard);
        return Ok(Response::from_parts(rparts, out));
    }

    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (rparts, _) = resp.into_parts();
    let recording = recording.map(|r| (r, session::Protocol::of_101(&rparts.headers)));
    if let Some((rec, session::Protocol::Unreadable(what))) = recording {
        // The offer was narrowed to what the recorder reads; an upstream that switched to
        // something else anyway gets no splice: the session ends here, its upgraded
        // connection dropped unused.
        tracing::warn!(
            what,
            "a recorded session switched to a protocol the recorder cannot read; refused"
        );
        let written = rec
            .pending
            .start(session::Protocol::Unreadable(what))
            .finish()
            .await;
        let mut value: serde_json::Value =
            serde_json::from_str(&written).unwrap_or_else(|_| serde_json::json!({}));
        value["error"] = format!("{what} cannot be recorded; the session was refused").into();
        rec.at_end.annotate(session::ANNOTATION, value.to_string());
        return Err(UpstreamFailure::Unrecordable(what).into());
    }
    tokio::spawn(splice(
        client_upgrade,
        upstream_upgrade,
        guard,
        up.stream_idle_timeout,
        recording,
        ending,
    ));
    // Pass the 101 with its headers (Connection/Upgrade included) to the client.
    Ok(Response::from_parts(rparts, body::empty()))
}

/// Whether a request head announces a body: any `Transfer-Encoding`, or a `Content-Length`
/// other than 0.
fn carries_body(h: &http::HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0")
}

/// The request as the upstream gets it: forwarded headers, `Connection: Upgrade` and the
/// client's `Upgrade` back, the upstream's `Host`, and an origin-form URI.
fn prepare_upgrade_request(
    up: &Upstream,
    ep: &Endpoint,
    parts: &mut Parts,
    ob: &Outbound<'_>,
) -> Result<(), Refusal> {
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    let authority = match ep.uri_for(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => return Err(UpstreamFailure::Unforwardable.into()),
    };
    prepare_headers(&mut parts.headers, up, ob)?;
    // Hop-by-hop hygiene removed them; an upgrade needs exactly these two back.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(u) = upgrade_to {
        parts.headers.insert(header::UPGRADE, u);
    }
    if let Some(a) = authority
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, a);
    }
    // Origin-form on a direct HTTP/1.1 connection.
    parts.uri = match authority.path_and_query() {
        Some(pq) => match pq.as_str().parse() {
            Ok(u) => u,
            Err(_) => return Err(UpstreamFailure::Unforwardable.into()),
        },
        None => http::Uri::from_static("/"),
    };
    Ok(())
}

/// A fresh connection to the first endpoint that admits the request and accepts it.
async fn connect(
    up: &Upstream,
) -> Result<(Arc<Endpoint>, super::breaker::Permit, TlsStream<TcpStream>), Refusal> {
    let mut refused = Vec::new();
    let mut retry_after = Duration::MAX;
    let mut unreachable = false;
    for ep in up.candidates() {
        let permit = match ep.breaker.admit(std::time::Instant::now()) {
            Ok(p) => p,
            Err(r) => {
                refused.push((ep.name.clone(), r.state.name()));
                retry_after = retry_after.min(r.retry_after);
                continue;
            }
        };
        match ep.connect_for_upgrade().await {
            Ok(io) => return Ok((ep, permit, io)),
            Err(err) => {
                tracing::warn!(endpoint = %ep.name, %err, "upstream connect for upgrade failed");
                report(&ep, permit, super::breaker::Outcome::Failure);
                unreachable = true;
            }
        }
    }
    if unreachable {
        return Err(UpstreamFailure::Unreachable("connection failed").into());
    }
    Err(breaker_open(refused, retry_after))
}

/// No response head: the refusal for the client, and whether an answer came that could not
/// be read (rather than none).
struct Unanswered {
    refusal: Refusal,
    unreadable: bool,
}

/// Response headers read on the upgrade connection. hyper's default (100) is below what a
/// backend behind a `proxy` upgrade may send through the API server, which copies the
/// backend's answer as it is.
const UPGRADE_MAX_HEADERS: usize = 1000;

/// Sends the request on a new HTTP/1.1 connection (with upgrades) that serves no other
/// request; the upstream's response head.
async fn send_on_fresh_connection(
    io: TlsStream<TcpStream>,
    parts: Parts,
    incoming: Body,
) -> Result<Response<Incoming>, Unanswered> {
    let handshake = hyper::client::conn::http1::Builder::new()
        .max_headers(UPGRADE_MAX_HEADERS)
        .handshake::<_, Body>(TokioIo::new(io))
        .await;
    let (mut sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(%err, "upstream handshake for upgrade failed");
            return Err(Unanswered {
                refusal: UpstreamFailure::Unreachable("handshake failed").into(),
                unreadable: false,
            });
        }
    };
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "upstream upgrade connection ended with error");
        }
    });

    if let Some(w) = parts.extensions.get::<super::Watcher>() {
        w.0.left_the_proxy();
    }
    let resp = match sender
        .send_request(Request::from_parts(parts, incoming))
        .await
    {
        Ok(resp) => resp,
        Err(err) => {
            tracing::warn!(%err, "upstream upgrade request failed");
            return Err(Unanswered {
                refusal: UpstreamFailure::Unreachable("the connection broke before a response")
                    .into(),
                unreadable: err.is_parse() || err.is_parse_too_large(),
            });
        }
    };
    // Whatever happens next, this connection serves no other request.
    drop(sender);
    Ok(resp)
}

/// What ends a session besides its two sides: the end of its connection's shutdown grace,
/// and the record its `ResponseComplete` is written from (to say so there).
struct Ending {
    cutoff: crate::shutdown::Cutoff,
    record: Option<crate::audit::AuditRecord>,
}

impl Ending {
    /// Resolves at the cutoff, having noted on the event that the shutdown ended the session.
    async fn cut(self) {
        self.cutoff.reached().await;
        tracing::info!("session still open at the end of the shutdown grace; ended");
        if let Some(rec) = &self.record {
            rec.with(|r| {
                r.annotate(
                    crate::audit::record::ABORTED_ANNOTATION,
                    crate::audit::record::ABORTED_SHUTDOWN,
                )
            });
        }
    }
}

/// Longest wait for a session's recording to be finished (written, synced) once the session
/// ended: a hung file system must not hold the session's place under the stream caps, its
/// `ResponseComplete` and the shutdown for ever. Within the auditor's 5 s wait for streams
/// ending at shutdown, so a session cut at the end of the grace still has its event written.
const RECORDING_FINISH_WAIT: Duration = Duration::from_secs(4);

/// Once both sides have upgraded, copies bytes both ways until either closes (or, with an
/// idle timeout, until neither side sent anything for that long, or the shutdown grace ends),
/// recording the session when asked to.
async fn splice(
    client_upgrade: OnUpgrade,
    upstream_upgrade: OnUpgrade,
    guard: Option<Guard>,
    idle: Option<Duration>,
    recording: Option<(session::Recording, session::Protocol)>,
    ending: Ending,
) {
    // Whatever the guard holds (a session permit, the `ResponseComplete` event) lives as long
    // as the splice.
    let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(%err, "upgrade did not complete");
            return;
        }
    };
    let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    let cut = ending.cut();
    match recording {
        None => {
            tokio::select! {
                () = copy(client, upstream, idle) => {}
                () = cut => {}
            }
        }
        Some((recording, protocol)) => {
            let session = recording.pending.start(protocol);
            let (mut from_client, mut from_upstream) = session.feeders();
            // A read holding a frame the recorder cannot read is withheld, not passed on.
            let client = CheckedTap::new(client, move |b: &[u8]| {
                from_client.feed(b);
                !from_client.broken()
            });
            let upstream = CheckedTap::new(upstream, move |b: &[u8]| {
                from_upstream.feed(b);
                !from_upstream.broken()
            });
            // A direction whose frames can no longer be read ends the session (dropping the
            // copy closes both connections) rather than letting it go on unrecorded.
            let unreadable = session.unreadable();
            // Both taps (and their feeders) are gone once this returns: the file can end.
            tokio::select! {
                () = copy(client, upstream, idle) => {}
                () = unreadable => {
                    tracing::warn!("a recorded session sent a frame the recorder cannot read; session ended");
                }
                () = cut => {}
            }
            let value = session.finish_within(Some(RECORDING_FINISH_WAIT)).await;
            recording.at_end.annotate(session::ANNOTATION, value);
        }
    }
    drop(guard);
}

/// The copy itself, with or without the idle watchdog.
async fn copy<C, U>(client: C, upstream: U, idle: Option<Duration>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let copied = match idle {
        // No idle timeout: the plain copy, with nothing noted per read.
        None => both_ways(client, upstream).await,
        Some(idle) => {
            let activity = Activity::new();
            tokio::select! {
                copied = both_ways(activity.watch(client), activity.watch(upstream)) => copied,
                () = activity.idle_for(idle) => {
                    tracing::debug!(?idle, "upgraded stream idle; closing both sides");
                    return;
                }
            }
        }
    };
    match copied {
        Ok(Spliced::ClientEnded(n)) => {
            tracing::debug!(to_up = n, "client closed the upgraded stream")
        }
        Ok(Spliced::UpstreamEnded(n)) => {
            tracing::debug!(to_client = n, "upstream closed the upgraded stream")
        }
        Err(err) => tracing::debug!(%err, "upgraded stream ended with error"),
    }
}

/// Which side ended a splice, and the bytes copied from it.
enum Spliced {
    ClientEnded(u64),
    UpstreamEnded(u64),
}

/// Bytes each way until either side ends its stream (or fails); the other side's write half is
/// then closed in order (TLS `close_notify`, FIN) and both connections are dropped: as
/// kube-apiserver's `UpgradeAwareHandler`, which returns once one direction's copy ends and
/// closes both. A half-close that let the other direction run on would keep the session — its
/// place under the stream caps, its recording, its `ResponseComplete` — for as long as a
/// client that ignores the end keeps its connection. Neither direction holds a copy buffer
/// between polls unless its writer pushed back (`one_way`): an idle session holds none.
async fn both_ways<C, U>(client: C, upstream: U) -> std::io::Result<Spliced>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut upstream_rx, mut upstream_tx) = tokio::io::split(upstream);
    let ended = tokio::select! {
        up = one_way::copy(&mut client_rx, &mut upstream_tx) => {
            let n = up?;
            upstream_tx.shutdown().await?;
            Spliced::ClientEnded(n)
        }
        down = one_way::copy(&mut upstream_rx, &mut client_tx) => {
            let n = down?;
            Spliced::UpstreamEnded(n)
        }
    };
    // The client's side closes in order either way: its `close_notify` and FIN, then (the
    // listener's lingering close) what it still sends is read and dropped for a moment, so
    // stdin still in flight does not reset away the session's last frames.
    client_tx.shutdown().await?;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either side ending its stream ends the session — the other side is closed even while
    /// its peer keeps its end open (as kube-apiserver's `UpgradeAwareHandler`; a half-close
    /// would let the other direction run on as long as that peer liked) — after what was sent
    /// before the end got through.
    #[tokio::test]
    async fn a_session_ends_when_either_side_ends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for upstream_ends in [true, false] {
            let (client, mut client_peer) = tokio::io::duplex(64);
            let (upstream, mut upstream_peer) = tokio::io::duplex(64);
            let session = tokio::spawn(both_ways(client, upstream));
            client_peer.write_all(b"in").await.unwrap();
            let mut two = [0u8; 2];
            upstream_peer.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"in");
            let (ender, other) = if upstream_ends {
                (&mut upstream_peer, &mut client_peer)
            } else {
                (&mut client_peer, &mut upstream_peer)
            };
            ender.write_all(b"last").await.unwrap();
            ender.shutdown().await.unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(5), session)
                .await
                .expect("the session outlived one side's end")
                .unwrap()
                .unwrap();
            assert_eq!(matches!(ended, Spliced::UpstreamEnded(_)), upstream_ends);
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut rest))
                .await
                .expect("the other side was not closed")
                .unwrap();
            assert_eq!(rest, b"last");
        }
    }
}
