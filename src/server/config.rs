//! The `listen:`, `admin:` and `shutdown:` sections validated: addresses, the listener's
//! certificate and key (loaded, as data), timeouts and stream limits ([`ServeOptions`]). The
//! YAML schema is in `config::schema`.
//!
//! Rejects, with the key path: bad addresses, unreadable or unparsable certificate / key files,
//! bad durations, fewer than 100 HTTP/2 streams per connection, and a certificate, key and
//! client CAs that rustls refuses together (`listen.tls`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{tls, ServeOptions};
use crate::{
    config::schema,
    problems::{Problems, Wording},
};

/// The listener's certificate chain and key, and how it treats client certificates.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub client_auth: tls::ClientAuth,
}

impl TlsSettings {
    /// The rustls server config (ALPN h2, http/1.1).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        tls::server_config(
            self.chain.clone(),
            self.key.clone_key(),
            self.client_auth.clone(),
        )
    }

    /// Rustls must accept the chain, key and client CAs together (checked while validating,
    /// so `check-config` reports it).
    pub fn check(&self, c: &mut Problems) {
        if let Err(e) = self.server_config() {
            c.err("listen.tls", format!("{e:#}"), TLS_HINT);
        }
    }
}

/// Hint for a TLS config rustls refuses.
pub const TLS_HINT: &str = "the certificate must match the key; CA files must hold CA certificates";

/// `listen:` (and `shutdown.grace`, which the listener applies).
pub struct Listen {
    pub addr: Option<SocketAddr>,
    pub chain: Option<Vec<CertificateDer<'static>>>,
    pub key: Option<PrivateKeyDer<'static>>,
    pub serve: ServeOptions,
}

/// Validate `listen:` and `shutdown:`. `base` resolves relative paths.
pub fn listen(c: &mut Problems, file: &schema::File, base: &std::path::Path) -> Listen {
    let l = &file.listen;
    let addr = c.addr("listen.address", &l.address);
    let chain = c.certs("listen.tls.cert_file", &l.tls.cert_file, base);
    let key = c.key("listen.tls.key_file", &l.tls.key_file, base);
    let streams = l.max_concurrent_streams.unwrap_or(250);
    if streams < 100 {
        c.err(
            "listen.max_concurrent_streams",
            format!("{streams} is below 100"),
            "kubectl and controllers multiplex many watches on one connection; use at least 100 (the API server's default)",
        );
    }
    let mut duration = |path: &str, value: &Option<String>, secs: u64| {
        c.duration(
            path,
            value.as_deref(),
            Duration::from_secs(secs),
            Wording::General,
        )
    };
    let serve = ServeOptions {
        handshake_timeout: duration("listen.handshake_timeout", &l.handshake_timeout, 10),
        header_read_timeout: duration("listen.header_read_timeout", &l.header_read_timeout, 30),
        max_concurrent_streams: streams,
        grace: duration("shutdown.grace", &file.shutdown.grace, 30),
    };
    Listen {
        addr,
        chain,
        key,
        serve,
    }
}

/// Validate `admin:`: its address and the readiness window.
pub fn admin(c: &mut Problems, a: &schema::Admin) -> (Option<SocketAddr>, Duration) {
    let addr = c.addr("admin.address", &a.address);
    let ready_window = c.duration(
        "admin.ready_window",
        a.ready_window.as_deref(),
        Duration::from_secs(30),
        Wording::General,
    );
    (addr, ready_window)
}
