//! The `listen:`, `admin:` and `shutdown:` sections validated: addresses, the listener's
//! certificate and key (loaded, as data), timeouts and stream limits ([`ServeOptions`]). The
//! YAML schema is in `config::schema`.
//!
//! Rejects, with the key path: bad addresses, unreadable or unparsable certificate / key files,
//! bad or zero durations, fewer than 100 HTTP/2 streams per connection, a header limit outside
//! 16 KiB..=1 MiB, zero connection caps or a per-source cap above the listener's, and a
//! certificate, key and client CAs that rustls refuses together (`listen.tls`).

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

    /// The rustls server config and its client-certificate verifier, one instance shared
    /// (`Runtime::client_verifier`).
    pub fn listener(&self) -> anyhow::Result<tls::ListenerTls> {
        let verifier = tls::client_verifier(&self.client_auth)?;
        let config =
            tls::server_config_with(self.chain.clone(), self.key.clone_key(), verifier.clone())?;
        Ok((config, verifier))
    }

    /// The serving certificate's validity period (Unix seconds) when `now` is outside it:
    /// every client's handshake would fail ("certificate has expired" in kubectl).
    pub fn leaf_out_of_period(&self, now: i64) -> Option<(i64, i64)> {
        let leaf = super::anchors::Anchor::new(self.chain.first()?.clone());
        leaf.validity.filter(|_| !leaf.in_force(now))
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
    let serve = serve_options(c, file);
    Listen {
        addr,
        chain,
        key,
        serve,
    }
}

/// The listener's timeouts and limits ([`ServeOptions`]; defaults there).
fn serve_options(c: &mut Problems, file: &schema::File) -> ServeOptions {
    let l = &file.listen;
    let d = ServeOptions::default();
    let mut duration = |path: &str, value: &Option<String>, default: Duration| {
        let v = c.duration(path, value.as_deref(), default, Wording::General);
        if v.is_zero() {
            c.err(
                path,
                "0 would close every connection at once",
                "use a positive duration, e.g. 10s",
            );
        }
        v
    };
    let handshake_timeout = duration(
        "listen.handshake_timeout",
        &l.handshake_timeout,
        d.handshake_timeout,
    );
    let preface_timeout = duration(
        "listen.preface_timeout",
        &l.preface_timeout,
        d.preface_timeout,
    );
    let header_read_timeout = duration(
        "listen.header_read_timeout",
        &l.header_read_timeout,
        d.header_read_timeout,
    );
    let idle_timeout = duration("listen.idle_timeout", &l.idle_timeout, d.idle_timeout);
    let grace = c.duration(
        "shutdown.grace",
        file.shutdown.grace.as_deref(),
        d.grace,
        Wording::General,
    );
    let shutdown_delay = c.duration(
        "shutdown.delay",
        file.shutdown.delay.as_deref(),
        d.shutdown_delay,
        Wording::General,
    );
    if shutdown_delay > MAX_SHUTDOWN_DELAY {
        c.err(
            "shutdown.delay",
            format!("{shutdown_delay:?} is more than 10 minutes"),
            "a few seconds cover a load balancer's health checks, e.g. 5s",
        );
    }
    if grace.is_zero() {
        // Every request in flight would be cut at the signal, its `ResponseComplete` event
        // with it — a write already carried out upstream left unrecorded.
        c.err(
            "shutdown.grace",
            "0 would cut every request in flight at shutdown, unaudited",
            "use a positive duration, e.g. 30s (the default)",
        );
    }
    let streams = l.max_concurrent_streams.unwrap_or(d.max_concurrent_streams);
    if streams < 100 {
        c.err(
            "listen.max_concurrent_streams",
            format!("{streams} is below 100"),
            "kubectl and controllers multiplex many watches on one connection; use at least 100 (the API server's default)",
        );
    } else if streams > 1000 {
        // The per-connection bound on concurrent work (and on a client's share of the
        // listener): a typo with extra digits would all but remove it.
        c.err(
            "listen.max_concurrent_streams",
            format!("{streams} is above 1000"),
            "use at most 1000 (what aggregated API servers set; kube-apiserver's own default is 100); clients open another connection beyond it",
        );
    }
    let header_bytes = l.max_header_bytes.unwrap_or(d.max_header_bytes);
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&header_bytes) {
        c.err(
            "listen.max_header_bytes",
            format!("{header_bytes} is outside {MIN_HEADER_BYTES}..={MAX_HEADER_BYTES}"),
            "clients with large tokens send several KiB of headers; 65536 is the default, 1048576 Go's",
        );
    }
    let (max_connections, per_source) = connection_caps(c, l, &d);
    ServeOptions {
        handshake_timeout,
        preface_timeout,
        header_read_timeout,
        idle_timeout,
        max_concurrent_streams: streams,
        max_header_bytes: header_bytes,
        max_connections,
        max_connections_per_source: per_source,
        grace,
        shutdown_delay,
        metrics: Default::default(),
    }
}

/// Longest `shutdown.delay`.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(600);

/// `listen.max_connections` and `listen.max_connections_per_source`: positive, per source at
/// most the listener's.
fn connection_caps(c: &mut Problems, l: &schema::Listen, d: &ServeOptions) -> (usize, usize) {
    let max_connections = l.max_connections.unwrap_or(d.max_connections);
    let per_source = l
        .max_connections_per_source
        .unwrap_or(d.max_connections_per_source);
    if max_connections == 0 || per_source == 0 {
        c.err(
            if max_connections == 0 {
                "listen.max_connections"
            } else {
                "listen.max_connections_per_source"
            },
            "0 would refuse every connection",
            "use a positive count; per source at most max_connections",
        );
    } else if per_source > max_connections {
        c.err(
            "listen.max_connections_per_source",
            format!("{per_source} is above listen.max_connections ({max_connections})"),
            "a source cannot hold more connections than the listener; lower it or raise max_connections",
        );
    }
    (max_connections, per_source)
}

/// Below this, ordinary kubectl requests with a bearer token do not fit (hyper's HTTP/2 default).
const MIN_HEADER_BYTES: u32 = 16 * 1024;
/// Go's `http.DefaultMaxHeaderBytes`, what kube-apiserver accepts.
const MAX_HEADER_BYTES: u32 = 1024 * 1024;

/// Validate `admin:`: its address and the readiness window.
pub fn admin(c: &mut Problems, a: &schema::Admin) -> (Option<SocketAddr>, Duration) {
    let addr = c.addr("admin.address", &a.address);
    let ready_window = c.duration(
        "admin.ready_window",
        a.ready_window.as_deref(),
        Duration::from_secs(30),
        Wording::General,
    );
    if ready_window.is_zero() {
        c.err(
            "admin.ready_window",
            "0 would keep /readyz failing forever (no upstream answer is ever recent enough)",
            "use a positive duration, e.g. 30s (the default)",
        );
    }
    (addr, ready_window)
}
