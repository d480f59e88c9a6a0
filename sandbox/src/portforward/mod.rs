//! `pods/portforward`: what `kubectl port-forward` speaks, ending at an echo / HTTP service
//! behind every port of a sandbox pod (`echo.rs`).
//!
//! Accepts, on `GET` or `POST` of an existing pod:
//! * `Upgrade: websocket` with subprotocol `SPDY/3.1+portforward.k8s.io` — SPDY/3.1 tunnelled
//!   in WebSocket binary messages (kubectl ≥ 1.31 tries this first; `tunnel.rs`);
//! * `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io` (or none, as
//!   old clients send) — the classic upgrade kubectl falls back to.
//!
//! Both answer `101` and run a SPDY session (`session.rs`, framer in `spdy.rs`). Rejects:
//! an unknown pod (404 `NotFound`), a request that is not an upgrade or offers no known
//! WebSocket subprotocol (400 `BadRequest`), SPDY protocol versions it does not speak (403
//! `Forbidden`, like the kubelet's handshake). The plain WebSocket channel protocol
//! (`portforward.k8s.io` / `v4.channel.k8s.io` without SPDY) is not served (400).

mod dictionary;
mod echo;
mod session;
pub mod spdy;
mod tunnel;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role},
    WebSocketStream,
};

use super::{discovery, IntoResponse as _, Sandbox};
use portcullis::{body::Body, k8s::Status};

/// The SPDY subprotocol of port-forward.
const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

fn tokens<'a>(h: &'a HeaderMap, name: &'a header::HeaderName) -> impl Iterator<Item = &'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    tokens(h, &name).any(|t| t.eq_ignore_ascii_case(token))
}

/// How the client wants to talk.
enum Mode {
    Spdy { negotiated: bool },
    Tunnel { accept: String },
}

fn mode(h: &HeaderMap) -> Result<Mode, Status> {
    let upgrade = has(h, header::CONNECTION, "upgrade");
    if upgrade && has(h, header::UPGRADE, "SPDY/3.1") {
        let version = header::HeaderName::from_static("x-stream-protocol-version");
        let offered: Vec<&str> = tokens(h, &version).filter(|t| !t.is_empty()).collect();
        if !offered.is_empty() && !offered.contains(&PROTOCOL) {
            return Err(Status::forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PROTOCOL}\"]"
            )));
        }
        return Ok(Mode::Spdy {
            negotiated: !offered.is_empty(),
        });
    }
    if upgrade && has(h, header::UPGRADE, "websocket") {
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(Status::bad_request("missing Sec-WebSocket-Key"));
        };
        if !has(h, header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL) {
            return Err(Status::bad_request(format!(
                "no supported Sec-WebSocket-Protocol for port-forward; the sandbox speaks {TUNNEL_PROTOCOL} (or SPDY/3.1)"
            )));
        }
        return Ok(Mode::Tunnel {
            accept: derive_accept_key(key.as_bytes()),
        });
    }
    Err(Status::bad_request("Upgrade request required"))
}

/// Handle a port-forward request for `ns/pod`.
pub fn serve(sb: &Sandbox, mut req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
    if !matches!(*req.method(), http::Method::GET | http::Method::POST) {
        return super::rest::method_not_allowed();
    }
    let mode = match mode(req.headers()) {
        Ok(m) => m,
        Err(s) => return s.into_response(),
    };
    let Some(def) = discovery::find("", "v1", "pods") else {
        return Status::internal("pods not in catalogue").into_response();
    };
    if let Err(s) = sb.store().get(def, Some(ns), pod) {
        return s.into_response();
    }
    let (namespace, name) = (ns.to_string(), pod.to_string());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunnelled = matches!(mode, Mode::Tunnel { .. });
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => return tracing::debug!(%err, "port-forward upgrade failed"),
        };
        if tunnelled {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let (rx, tx) = tunnel::websocket(ws);
            session::run(rx, tx, namespace, name).await;
        } else {
            let (rx, tx) = tunnel::raw(io);
            session::run(rx, tx, namespace, name).await;
        }
    });
    let mut resp = Response::new(portcullis::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match mode {
        Mode::Spdy { negotiated } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if negotiated {
                h.insert(
                    "x-stream-protocol-version",
                    HeaderValue::from_static(PROTOCOL),
                );
            }
        }
        Mode::Tunnel { accept } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(TUNNEL_PROTOCOL),
            );
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
        }
    }
    resp
}
