//! Exec / attach session recording: what was typed and what came back, for incident
//! responders, as an asciicast v2 file (`asciinema play` and `portcullis audit replay` play it).
//!
//! Off by default. A tenant or grant with `record_sessions: true` that allows an exec or
//! attach has it recorded (`authz::Authorizer::records_session` sets [`RecordSession`]); the
//! files go to `audit.session_recording.directory` (`config.rs`). For such a request the
//! upgrade forwarder (`upstream::upgrade`) calls [`prepare`] before anything goes upstream:
//! it creates `<Audit-ID>.cast` (mode 0600) — failing that, the request is refused with 503
//! `ServiceUnavailable` and never forwarded — and strips from the request what the recorder
//! could not read (`Sec-WebSocket-Extensions`, the `base64.channel.k8s.io` protocols). After
//! the 101 both byte streams of the splice are read by the protocol's parser (`websocket.rs`:
//! `v4`/`v5.channel.k8s.io`; `spdy.rs`: SPDY/3.1) into frames for a bounded writer
//! (`writer.rs`, never blocking the splice: a full queue drops and marks), which writes the
//! asciicast file (`cast.rs`: stdin `"i"`, stdout and stderr `"o"`, resizes `"r"`, markers
//! `"m"`, a size cap with a truncation marker past which output is no longer recorded, input
//! up to twice the cap — input past that ends the session). When the session ends, the session's
//! `ResponseComplete` audit event gets [`ANNOTATION`]: `{"file", "sha256", "bytes",
//! "truncated", "droppedFrames"}` (or `"error"` when the file could not be completed). A
//! direction whose frames stop being readable mid-session (reserved bits of an extension that
//! was never offered, an impossible length, an undecodable SPDY header block), or whose input
//! could not be recorded (the writer fell behind on input alone, the hard size limit), ends the
//! session — both connections closed, a marker in the file, `"error"` in the annotation —
//! rather than letting it go on unrecorded.

pub mod cast;
pub mod config;
pub mod spdy;
pub mod websocket;
mod writer;

use http::{header, HeaderMap, HeaderValue};

pub use config::{SessionRecordingConfig, SessionSettings};
pub use writer::{Feeder, Pending, Session};

/// The annotation on the session's `ResponseComplete` event.
pub const ANNOTATION: &str = "portcullis.io/session-recording";

/// The SHA-256 of `bytes` in lower-case hex, as the annotation gives it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::audit::chain::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Set on an allowed exec / attach request whose session is to be recorded.
#[derive(Debug, Clone, Copy)]
pub struct RecordSession;

/// The session's wire protocol, from the 101's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The binary channel protocols (`channel.k8s.io`, `v4.`, `v5.`); `stream_close`: v5's
    /// stream-close message (channel 255) is in use.
    WebSocket {
        stream_close: bool,
    },
    Spdy,
    /// Something the recorder cannot read: the session is ended, not run unrecorded (the
    /// file says why in a marker, the audit annotation in `error`).
    Unreadable(&'static str),
}

impl Protocol {
    /// The protocol the upstream switched to.
    pub fn of_101(h: &HeaderMap) -> Protocol {
        let get = |name| {
            h.get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        };
        let upgrade = get(header::UPGRADE);
        if upgrade.starts_with("spdy/3.1") {
            return Protocol::Spdy;
        }
        if upgrade != "websocket" {
            return Protocol::Unreadable("this upgrade protocol");
        }
        if h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
            return Protocol::Unreadable("a WebSocket extension");
        }
        let sub = get(header::SEC_WEBSOCKET_PROTOCOL);
        // No subprotocol is the binary channel protocol: the kubelet's exec / attach / port-
        // forward handlers map "" to it (`remotecommand/websocket.go`: `"": {Binary: true}`).
        if sub.is_empty() {
            return Protocol::WebSocket {
                stream_close: false,
            };
        }
        if !RECORDABLE_SUBPROTOCOLS.contains(&sub.as_str()) {
            return Protocol::Unreadable(
                "a WebSocket subprotocol other than the binary channel protocols",
            );
        }
        Protocol::WebSocket {
            stream_close: sub == "v5.channel.k8s.io",
        }
    }

    /// Each direction's parser; `stdin`: the request asked for stdin (without it the API
    /// server drops what the client sends on channel 0).
    fn directions(self, stdin: bool) -> (Direction, Direction) {
        match self {
            Protocol::WebSocket { stream_close } => {
                let channels = websocket::Channels {
                    stream_close,
                    stdin,
                };
                (
                    Direction::WebSocket(Box::new(websocket::Direction::new(true, channels))),
                    Direction::WebSocket(Box::new(websocket::Direction::new(false, channels))),
                )
            }
            Protocol::Spdy => {
                let (c, s) = spdy::pair();
                (Direction::Spdy(Box::new(c)), Direction::Spdy(Box::new(s)))
            }
            Protocol::Unreadable(_) => (Direction::None, Direction::None),
        }
    }
}

/// The parser of one direction.
pub enum Direction {
    WebSocket(Box<websocket::Direction>),
    Spdy(Box<spdy::Direction>),
    None,
}

impl Direction {
    pub(crate) fn broken(&self) -> bool {
        match self {
            Direction::WebSocket(d) => d.broken(),
            Direction::Spdy(d) => d.broken(),
            Direction::None => false,
        }
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<cast::Frame>) {
        match self {
            Direction::WebSocket(d) => d.feed(bytes, out),
            Direction::Spdy(d) => d.feed(bytes, out),
            Direction::None => {}
        }
    }
}

/// A session to record, prepared before its request goes upstream.
pub struct Recording {
    pub pending: Pending,
    /// Where the annotation goes when the session ends.
    pub at_end: crate::audit::record::EndAnnotations,
}

/// For a request marked [`RecordSession`] (with audit and `session_recording` configured):
/// its file, created now, and the request's offer narrowed by [`restrict_offer`]. `Err` when
/// the file cannot be created — the caller refuses the request; the error is also on the
/// request's audit event under [`ANNOTATION`].
pub fn prepare(parts: &mut http::request::Parts) -> Result<Option<Recording>, std::io::Error> {
    if parts.extensions.get::<RecordSession>().is_none() {
        return Ok(None);
    }
    let Some(rec) = parts.extensions.get::<crate::audit::AuditRecord>() else {
        return Ok(None);
    };
    let (settings, at_end) = rec.with(|r| (r.session_settings(), r.at_stream_end()));
    let Some(settings) = settings else {
        return Ok(None);
    };
    let audit_id = parts
        .extensions
        .get::<crate::service::AuditId>()
        .and_then(|a| a.0.to_str().ok())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let header = cast::Header {
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        title: parts.uri.path().to_owned(),
        command: crate::audit::record::exec_command(uri).join(" "),
    };
    let stdin = crate::k8s::request::Query::of(&parts.uri).flag("stdin");
    match Pending::create(&settings, audit_id, header, stdin) {
        Ok(pending) => {
            restrict_offer(&mut parts.headers);
            Ok(Some(Recording { pending, at_end }))
        }
        Err(err) => {
            tracing::error!(%err, dir = %settings.directory.display(), "session recording file could not be created; refusing the session");
            let value = serde_json::json!({"error": err.to_string()}).to_string();
            rec.with(|r| r.annotate(ANNOTATION, value));
            Err(err)
        }
    }
}

/// The binary channel protocols the recorder reads, by name (the kubelet's and the API
/// server's; their base64 variants — `base64.channel.k8s.io`, `v4.base64.channel.k8s.io` —
/// carry the channel as an ASCII digit and are not among them).
const RECORDABLE_SUBPROTOCOLS: [&str; 3] =
    ["channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"];

/// Offer the upstream only what the recorder can read: no WebSocket extensions (compressed
/// frames), only the binary channel protocols it knows.
pub fn restrict_offer(h: &mut HeaderMap) {
    h.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    crate::k8s::headers::retain_websocket_protocols(h, |p| {
        RECORDABLE_SUBPROTOCOLS.contains(&p.to_ascii_lowercase().as_str())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_offer_keeps_only_binary_channel_protocols() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "v5.channel.k8s.io, base64.channel.k8s.io, v4.base64.channel.k8s.io, v4.channel.k8s.io, x.channel.k8s.io",
            ),
        );
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        restrict_offer(&mut h);
        assert_eq!(
            h.get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(),
            "v5.channel.k8s.io, v4.channel.k8s.io"
        );
        assert!(!h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS));
    }

    #[test]
    fn the_101_names_the_parser() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        assert_eq!(
            Protocol::of_101(&h),
            Protocol::WebSocket { stream_close: true }
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("base64.channel.k8s.io"),
        );
        assert!(matches!(Protocol::of_101(&h), Protocol::Unreadable(_)));
        // The v4 base64 variant ends like the binary ones but carries ASCII channel digits.
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.base64.channel.k8s.io"),
        );
        assert!(matches!(Protocol::of_101(&h), Protocol::Unreadable(_)));
        // None (or an empty one): the binary channel protocol, as the kubelet takes it.
        let binary = Protocol::WebSocket {
            stream_close: false,
        };
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(""));
        assert_eq!(Protocol::of_101(&h), binary);
        h.remove(header::SEC_WEBSOCKET_PROTOCOL);
        assert_eq!(Protocol::of_101(&h), binary);
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(Protocol::of_101(&h), Protocol::Spdy);
    }
}
