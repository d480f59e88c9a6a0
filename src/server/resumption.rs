//! TLS session resumption with client certificates: a resumed session is accepted only while
//! every certificate the client presented at its full handshake is still within its validity
//! period.
//!
//! Why: rustls (0.23) keeps TLS 1.3 resumption on by default (an in-memory cache of 256
//! sessions, two tickets per connection), and a resumed handshake does not verify the client's
//! certificates again: the chain comes back from the stored session. Each resumption issues new
//! tickets carrying the same chain, so a client that reconnects often enough could go on
//! resuming with a certificate that expired long ago. Go's TLS server, which kube-apiserver
//! uses, runs a resumed session's stored client certificates through its certificate checks
//! again (`processCertsFromClient` in `crypto/tls/handshake_server_tls13.go`); we check the
//! part that can change while the proxy's configuration does not: their validity period.
//!
//! Revocation needs no check here: CRLs are read at start and on reload, and every reload builds
//! a new server config, whose new session cache cannot resume the old sessions.
//!
//! Accepted: a full handshake (its chain was just verified), a resumed session without client
//! certificates, a resumed session whose certificates are all valid now. Refused: a resumed
//! session with a certificate that has expired or is not yet valid, or that no longer parses.
//! The connection is closed before any request is read (as a failed handshake would leave
//! it), logged, and counted in
//! `portcullis_listener_connections_closed_total{reason="resumed_certificate_expired"}`.

use rustls::{server::ServerConnection, HandshakeKind};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Whether the connection resumed a session with a client certificate that is not valid now.
pub fn resumed_with_invalid_certificate(session: &ServerConnection) -> bool {
    if session.handshake_kind() != Some(HandshakeKind::Resumed) {
        return false;
    }
    session.peer_certificates().is_some_and(|chain| {
        chain.iter().any(|der| {
            X509Certificate::from_der(der.as_ref())
                .map_or(true, |(_, cert)| !cert.validity().is_valid())
        })
    })
}
