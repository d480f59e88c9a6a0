//! HTTP/1.1 upgrades (WebSocket exec / attach / port-forward, SPDY/3.1): forwarded over a
//! fresh upstream connection, then spliced byte for byte.
//!
//! On `101 Switching Protocols` the 101 (with `Sec-WebSocket-*`, `X-Stream-Protocol-Version`,
//! `Connection` and `Upgrade`) goes to the client and both byte streams are copied until either
//! side closes; then both close. On any other answer that response is returned as it is — kubectl
//! needs a real HTTP error to fall back from WebSocket to SPDY — and the upstream connection is
//! dropped once the response body ends, never reused (CVE-2018-1002105). No timeout applies to
//! an established stream: interactive sessions live as long as their peers.

use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;

use super::{
    client::Upstream,
    forward::{prepare_headers, Guard, Outbound},
};
use crate::{
    body::{self, Body},
    k8s::headers,
    refusal::{Refusal, UpstreamFailure},
};

/// Forward an upgrade request. `parts` still carries the client connection's `OnUpgrade`.
pub async fn forward(
    up: &Upstream,
    mut parts: Parts,
    incoming: Body,
    ob: &Outbound<'_>,
    guard: Option<Guard>,
) -> Result<Response<Body>, Refusal> {
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(UpstreamFailure::NotUpgradable.into());
    };
    prepare_upgrade_request(up, &mut parts, ob)?;
    let mut resp = send_on_fresh_connection(up, parts, incoming).await?;

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        // Tell the client too: this exchange is over.
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(Response::from_parts(rparts, body::boxed(rbody)));
    }

    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (rparts, _) = resp.into_parts();
    tokio::spawn(splice(client_upgrade, upstream_upgrade, guard));
    // Pass the 101 with its headers (Connection/Upgrade included) to the client.
    Ok(Response::from_parts(rparts, body::empty()))
}

/// The request as the upstream gets it: forwarded headers, `Connection: Upgrade` and the
/// client's `Upgrade` back, the upstream's `Host`, and an origin-form URI.
fn prepare_upgrade_request(
    up: &Upstream,
    parts: &mut Parts,
    ob: &Outbound<'_>,
) -> Result<(), Refusal> {
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    let authority = match up.uri_for(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => return Err(UpstreamFailure::Unforwardable.into()),
    };
    prepare_headers(&mut parts.headers, up, ob);
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

/// Sends the request on a new HTTP/1.1 connection (with upgrades) that serves no other
/// request; the upstream's response head.
async fn send_on_fresh_connection(
    up: &Upstream,
    parts: Parts,
    incoming: Body,
) -> Result<Response<Incoming>, Refusal> {
    let io = match up.connect_for_upgrade().await {
        Ok(io) => io,
        Err(err) => {
            tracing::warn!(%err, "upstream connect for upgrade failed");
            return Err(UpstreamFailure::Unreachable("connection failed").into());
        }
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io)).await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "upstream handshake for upgrade failed");
                return Err(UpstreamFailure::Unreachable("handshake failed").into());
            }
        };
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "upstream upgrade connection ended with error");
        }
    });

    let resp = match sender
        .send_request(Request::from_parts(parts, incoming))
        .await
    {
        Ok(resp) => resp,
        Err(err) => {
            tracing::warn!(%err, "upstream upgrade request failed");
            return Err(
                UpstreamFailure::Unreachable("the connection broke before a response").into(),
            );
        }
    };
    up.mark_ok();
    // Whatever happens next, this connection serves no other request.
    drop(sender);
    Ok(resp)
}

/// Once both sides have upgraded, copies bytes both ways until either closes.
async fn splice(client_upgrade: OnUpgrade, upstream_upgrade: OnUpgrade, guard: Option<Guard>) {
    // Whatever the guard holds (a session permit) lives as long as the splice.
    let _guard = guard;
    let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(%err, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_up, to_client)) => tracing::debug!(to_up, to_client, "upgraded stream closed"),
        Err(err) => tracing::debug!(%err, "upgraded stream ended with error"),
    }
}
