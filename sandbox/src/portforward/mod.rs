//! `pods/portforward`: what `kubectl port-forward` speaks, ending at an echo / HTTP service
//! behind every port of a sandbox pod (`echo.rs`).
//!
//! Accepts, on `GET` or `POST` of an existing pod:
//! * `Upgrade: websocket` with subprotocol `SPDY/3.1+portforward.k8s.io` — SPDY/3.1 tunnelled
//!   in WebSocket binary messages (kubectl ≥ 1.31 tries this first; `tunnel.rs`);
//! * `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io` (or none, as
//!   old clients send) — the classic upgrade kubectl falls back to;
//! * `Upgrade: websocket` with `v4.channel.k8s.io` or `channel.k8s.io` and `?ports=` — the
//!   channel protocol of the Python client (`channels.rs`).
//!
//! The first two answer `101` and run a SPDY session (`session.rs`, framer in `spdy.rs`).
//! Rejects: an unknown pod (404 `NotFound`), a request that is not an upgrade or offers no
//! known WebSocket subprotocol (400 `BadRequest`), a channel request without ports, with a
//! port that is not 1-65535 or with more than [`channels::MAX_PORTS`] (400), SPDY protocol
//! versions it does not speak (403 `Forbidden`, like the kubelet's handshake). The base64
//! channel protocols are not served (400).

mod channels;
use portcullis::k8s::spdy_dictionary as dictionary;
mod echo;
mod session;
pub mod spdy;
pub(crate) mod tunnel;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role},
    WebSocketStream,
};

use super::{discovery, rest::Query, IntoResponse as _, Sandbox};
use portcullis::{body::Body, k8s::Status};

/// The SPDY subprotocol of port-forward.
const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel subprotocols served (binary), in order of preference.
const CHANNEL_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io"];

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
    Spdy {
        negotiated: bool,
    },
    Tunnel {
        accept: String,
    },
    Channels {
        accept: String,
        protocol: &'static str,
        ports: Vec<u16>,
    },
}

/// `?ports=80,443` or `?ports=80&ports=443`.
fn ports(q: &Query) -> Result<Vec<u16>, Status> {
    let mut out = Vec::new();
    for p in q.all("ports").iter().flat_map(|v| v.split(',')) {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => out.push(n),
            _ => {
                return Err(Status::bad_request(format!(
                    "invalid port {p:?}: must be 1-65535"
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(Status::bad_request("query parameter \"ports\" is required"));
    }
    if out.len() > channels::MAX_PORTS {
        return Err(Status::bad_request(format!(
            "at most {} ports per request",
            channels::MAX_PORTS
        )));
    }
    Ok(out)
}

fn mode(h: &HeaderMap, q: &Query) -> Result<Mode, Status> {
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
        let accept = derive_accept_key(key.as_bytes());
        if has(h, header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL) {
            return Ok(Mode::Tunnel { accept });
        }
        if let Some(protocol) = CHANNEL_PROTOCOLS
            .iter()
            .find(|p| has(h, header::SEC_WEBSOCKET_PROTOCOL, p))
        {
            return Ok(Mode::Channels {
                accept,
                protocol,
                ports: ports(q)?,
            });
        }
        return Err(Status::bad_request(format!(
            "no supported Sec-WebSocket-Protocol for port-forward; the sandbox speaks {TUNNEL_PROTOCOL}, {} (or SPDY/3.1)",
            CHANNEL_PROTOCOLS.join(", ")
        )));
    }
    Err(Status::bad_request("Upgrade request required"))
}

/// Handle a port-forward request for `ns/pod`.
pub fn serve(
    sb: &Sandbox,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    q: &Query,
) -> Response<Body> {
    if !matches!(*req.method(), http::Method::GET | http::Method::POST) {
        return super::rest::method_not_allowed();
    }
    let mode = match mode(req.headers(), q) {
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
    let kind = match &mode {
        Mode::Spdy { .. } => None,
        Mode::Tunnel { .. } => Some(None),
        Mode::Channels { ports, .. } => Some(Some(ports.clone())),
    };
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => return tracing::debug!(%err, "port-forward upgrade failed"),
        };
        let Some(channel_ports) = kind else {
            let (rx, tx) = tunnel::raw(io);
            return session::run(rx, tx, namespace, name).await;
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        match channel_ports {
            Some(ports) => channels::run(ws, namespace, name, ports).await,
            None => {
                let (rx, tx) = tunnel::websocket(ws);
                session::run(rx, tx, namespace, name).await;
            }
        }
    });
    let mut resp = Response::new(portcullis::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match &mode {
        Mode::Spdy { negotiated } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if *negotiated {
                h.insert(
                    "x-stream-protocol-version",
                    HeaderValue::from_static(PROTOCOL),
                );
            }
        }
        Mode::Tunnel { accept } | Mode::Channels { accept, .. } => {
            let protocol = match &mode {
                Mode::Channels { protocol, .. } => *protocol,
                _ => TUNNEL_PROTOCOL,
            };
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const WS: &[(&str, &str)] = &[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn ws(protocols: &'static str) -> HeaderMap {
        let mut h = headers(WS);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocols),
        );
        h
    }

    fn code(r: Result<Mode, Status>) -> u16 {
        match r {
            Ok(_) => 101,
            Err(s) => s.status_code().as_u16(),
        }
    }

    #[test]
    fn spdy_negotiates_portforward_or_nothing() {
        let q = Query::parse(None);
        let spdy = |version: Option<&'static str>| {
            let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
            if let Some(v) = version {
                h.append("x-stream-protocol-version", HeaderValue::from_static(v));
            }
            h
        };
        assert!(matches!(
            mode(&spdy(Some("portforward.k8s.io")), &q),
            Ok(Mode::Spdy { negotiated: true })
        ));
        assert!(matches!(
            mode(&spdy(None), &q),
            Ok(Mode::Spdy { negotiated: false })
        ));
        let refused = mode(&spdy(Some("v2.portforward.k8s.io")), &q);
        assert_eq!(code(refused), 403);
    }

    #[test]
    fn websocket_subprotocols_and_ports() {
        let none = Query::parse(None);
        let two = Query::parse(Some("ports=80,5432"));
        assert!(matches!(
            mode(&ws("SPDY/3.1+portforward.k8s.io"), &none),
            Ok(Mode::Tunnel { .. })
        ));
        match mode(&ws("v5.channel.k8s.io, v4.channel.k8s.io"), &two) {
            Ok(Mode::Channels {
                protocol, ports, ..
            }) => assert_eq!((protocol, ports), ("v4.channel.k8s.io", vec![80, 5432])),
            _ => panic!("channels expected"),
        }
        assert_eq!(code(mode(&ws("v4.channel.k8s.io"), &none)), 400);
        let bad = Query::parse(Some("ports=0"));
        assert_eq!(code(mode(&ws("v4.channel.k8s.io"), &bad)), 400);
        let many = Query::parse(Some(&format!("ports={}", vec!["1"; 129].join(","))));
        assert_eq!(code(mode(&ws("v4.channel.k8s.io"), &many)), 400);
        assert_eq!(code(mode(&ws("base64.channel.k8s.io"), &two)), 400);
        assert_eq!(code(mode(&headers(&WS[..2]), &two)), 400, "no key");
        assert_eq!(code(mode(&HeaderMap::new(), &two)), 400, "no upgrade");
    }
}
