//! One upstream endpoint (an API server of the control plane): its connection pool, its
//! upgrade connector, its health (the last answer, the last `/readyz` probe) and its circuit
//! breaker.
//!
//! Normal requests go through the endpoint's [`Pool`] of HTTP/2 connections (ALPN h2; a
//! server that only speaks HTTP/1.1 gets hyper's pooled HTTP/1.1 client).
//! Upgrades (exec / attach / port-forward) never use the pool: each gets a fresh TLS
//! connection with ALPN `http/1.1` only, which is dropped unless the upstream answers 101
//! (see `upgrade.rs`, CVE-2018-1002105).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use http::{uri::PathAndQuery, Uri};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    breaker::{Breaker, State},
    credentials::Credentials,
    metrics::UpstreamMetrics,
    pool::{Pool, PoolSettings},
};
use crate::{server::tls, upstream::config::UpstreamConfig};

/// One API server: everything the forwarder needs to reach it, and what it knows of its health.
pub struct Endpoint {
    /// The URL as configured (`https://host:port`), for messages and metric labels.
    pub name: String,
    base: Uri,
    pool: Pool,
    upgrade_tls: TlsConnector,
    server_name: ServerName<'static>,
    host_port: String,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) breaker: Arc<Breaker>,
    started: Instant,
    /// Milliseconds since `started` of the last upstream answer (0 = never).
    last_ok_ms: AtomicU64,
    /// The last `/readyz` probe failed (cleared by the next success or any answer).
    probe_failed: AtomicBool,
    /// A task is probing this endpoint while its breaker is open.
    recovering: AtomicBool,
}

impl Endpoint {
    /// Build the pooled client and the upgrade connector for `base` from validated config.
    pub fn new(
        cfg: &UpstreamConfig,
        base: &Uri,
        credentials: Arc<Credentials>,
        metrics: &UpstreamMetrics,
        in_service: Arc<AtomicBool>,
    ) -> Result<Arc<Endpoint>> {
        let roots = cfg.ca.clone();
        let identity = cfg
            .client_identity
            .as_ref()
            .map(|(chain, key)| (chain.clone(), key.clone_key()));
        let authority = base
            .authority()
            .context("upstream URL has no host")?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = match &cfg.tls_server_name {
            Some(n) => ServerName::try_from(n.clone()).context("upstream tls_server_name")?,
            None => ServerName::try_from(host.to_string()).context("upstream host")?,
        };
        let host_port = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(443)
        );
        let pooled_tls = tls::client_config(
            roots.clone(),
            identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key())),
            &[b"h2", b"http/1.1"],
        )?;
        let upgrade_tls = tls::client_config(roots, identity, &[b"http/1.1"])?;
        let pool = Pool::new(
            Arc::new(pooled_tls),
            server_name.clone(),
            host_port.clone(),
            PoolSettings {
                streams_per_connection: cfg.streams_per_connection as usize,
                max_connections: cfg.max_connections_per_endpoint as usize,
                connect_timeout: cfg.connect_timeout,
                handshake_timeout: cfg.tls_handshake_timeout,
                idle_timeout: cfg.idle_connection_timeout,
            },
        );
        let name = format!("https://{authority}");
        Ok(Arc::new(Endpoint {
            breaker: Breaker::new(
                cfg.breaker.clone(),
                metrics.on_transition(&name, in_service),
            ),
            name,
            base: base.clone(),
            pool,
            upgrade_tls: TlsConnector::from(Arc::new(upgrade_tls)),
            server_name,
            host_port,
            connect_timeout: cfg.connect_timeout,
            handshake_timeout: cfg.tls_handshake_timeout,
            credentials,
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            probe_failed: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
        }))
    }

    /// The upstream URI for a client path and query (the base URL's path is a prefix).
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        upstream_uri(&self.base, path_and_query)
    }

    /// The endpoint's connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A fresh TLS connection with ALPN `http/1.1`, for one upgrade attempt (TCP and TLS each
    /// within their timeout).
    pub async fn connect_for_upgrade(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.host_port))
            .await
            .map_err(|_| timed_out("connect timed out"))??;
        tcp.set_nodelay(true)?;
        // An upgraded session (exec, port-forward) reads the API server with no deadline: an
        // API server that vanished silently would hold it, and its session permit, for ever.
        crate::server::serve::keep_alive(&tcp);
        let tls = self.upgrade_tls.connect(self.server_name.clone(), tcp);
        tokio::time::timeout(self.handshake_timeout, tls)
            .await
            .map_err(|_| timed_out("TLS handshake timed out"))?
    }

    /// Record that the upstream answered (any response the breaker does not count as a
    /// failure, `send::answered`; not the 401 refusing the proxy's own credentials; the
    /// probe's only on success).
    pub fn mark_ok(&self) {
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        self.last_ok_ms.store(ms, Ordering::Relaxed);
        self.probe_failed.store(false, Ordering::Relaxed);
    }

    /// Preferred for new requests: breaker closed and the last probe did not fail.
    pub fn preferred(&self, now: Instant) -> bool {
        self.breaker.state(now) == State::Closed && !self.probe_failed.load(Ordering::Relaxed)
    }

    /// Ready for `/readyz`: answered within `window` and its breaker is not open.
    pub fn ready(&self, window: Duration, now: Instant) -> bool {
        self.healthy_within(window) && self.breaker.state(now) != State::Open
    }

    /// Probe `/readyz` until the breaker closes, starting when it allows the next trial: the
    /// active half of recovery (trial requests are the passive half). One task per endpoint;
    /// it ends when the breaker closes or the endpoint is dropped (a new configuration).
    pub fn spawn_recovery(self: &Arc<Self>) {
        if self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Endpoint> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(ep) = weak.upgrade() else { return };
                let Some(at) = ep.breaker.next_probe() else {
                    if ep.breaker.state(Instant::now()) == State::Closed {
                        ep.recovering.store(false, Ordering::Release);
                        return;
                    }
                    // Half-open: a trial request is deciding; look again shortly.
                    drop(ep);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                drop(ep);
                tokio::time::sleep_until(at.into()).await;
                let Some(ep) = weak.upgrade() else { return };
                if ep.breaker.next_probe().is_some_and(|t| t <= Instant::now()) {
                    ep.probe().await;
                }
            }
        });
    }

    /// Whether the upstream answered within `window`.
    pub fn healthy_within(&self, window: Duration) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        last != 0
            && self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(last))
                <= window
    }

    /// Probe the upstream's `/readyz` with the proxy's own credentials; marks it healthy on 200
    /// and tells the breaker either way.
    pub async fn probe(&self) -> bool {
        let ok = self.probe_once().await;
        self.probe_failed.store(!ok, Ordering::Relaxed);
        self.breaker.probed(ok, Instant::now());
        ok
    }

    async fn probe_once(&self) -> bool {
        let Ok(uri) = self.uri_for(Some(&PathAndQuery::from_static("/readyz"))) else {
            return false;
        };
        let mut req = http::Request::get(uri);
        if let Some(auth) = self.credentials.authorization() {
            req = req.header(http::header::AUTHORIZATION, (*auth).clone());
        }
        let Ok(req) = req.body(crate::body::empty()) else {
            return false;
        };
        let limit = self.connect_timeout + self.handshake_timeout;
        match tokio::time::timeout(limit, self.pool.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                self.mark_ok();
                true
            }
            Ok(Ok(resp)) => {
                tracing::warn!(endpoint = %self.name, status = %resp.status(), "upstream /readyz not ready");
                false
            }
            Ok(Err(err)) => {
                tracing::warn!(endpoint = %self.name, err = %err, "upstream /readyz unreachable");
                false
            }
            Err(_) => {
                tracing::warn!(endpoint = %self.name, "upstream /readyz timed out");
                false
            }
        }
    }
}

/// The URI toward `base`: HTTPS, its authority, and its path (if any) as a prefix of the
/// client's path and query.
fn upstream_uri(base: &Uri, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let pq = match path_and_query {
        // The usual base URL has no path: the client's path and query go as they are (a clone
        // shares their bytes). Formatting and parsing them again, with the authority, had cost
        // ≈ 1.6 k instructions per request (callgrind).
        Some(pq) if prefix.is_empty() => pq.clone(),
        Some(pq) => PathAndQuery::try_from(format!("{prefix}{}", pq.as_str()))?,
        None => PathAndQuery::try_from(format!("{prefix}/"))?,
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(pq);
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use http::{uri::PathAndQuery, Uri};

    use super::upstream_uri;

    /// The upstream URI for `base` and a client path and query, as text.
    fn upstream(base: &str, pq: Option<&'static str>) -> String {
        let base: Uri = base.parse().unwrap();
        let pq = pq.map(PathAndQuery::from_static);
        upstream_uri(&base, pq.as_ref()).unwrap().to_string()
    }

    #[test]
    fn the_client_path_and_query_go_to_the_base_authority_over_https() {
        assert_eq!(
            upstream(
                "https://10.0.0.1:6443",
                Some("/api/v1/namespaces/a/pods?labelSelector=app%3Dweb&watch=1")
            ),
            "https://10.0.0.1:6443/api/v1/namespaces/a/pods?labelSelector=app%3Dweb&watch=1"
        );
        assert_eq!(
            upstream("https://kube.example:443/", Some("/version")),
            "https://kube.example:443/version"
        );
        assert_eq!(
            upstream("https://10.0.0.1:6443", None),
            "https://10.0.0.1:6443/"
        );
    }

    #[test]
    fn a_base_path_prefixes_the_client_path() {
        for base in [
            "https://lb.example/k8s/east",
            "https://lb.example/k8s/east/",
        ] {
            assert_eq!(
                upstream(base, Some("/api?timeout=32s")),
                "https://lb.example/k8s/east/api?timeout=32s"
            );
            assert_eq!(upstream(base, None), "https://lb.example/k8s/east/");
        }
    }
}

#[cfg(test)]
mod keep_alive_tests {
    use std::{
        sync::{atomic::AtomicBool, Arc},
        time::Duration,
    };

    use super::Endpoint;
    use crate::upstream::{
        config::UpstreamConfig, credentials::Credentials, metrics::UpstreamMetrics,
    };

    /// The upstream connection of an upgraded session has TCP keep-alive, as accepted client
    /// connections do: nothing else would notice an API server that vanished silently under
    /// an exec or port-forward (no deadline on those).
    #[tokio::test]
    async fn an_upgrade_connection_has_tcp_keep_alive() {
        crate::server::tls::install_crypto_provider();
        let ca = crate::test_pki::Ca::new("t").unwrap();
        let leaf = ca.server_cert(&["127.0.0.1"]).unwrap();
        let server = crate::server::tls::server_config(
            vec![leaf.cert_der.clone()],
            leaf.key(),
            crate::server::tls::ClientAuth::None,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tls);
        });
        let cfg = UpstreamConfig::new(
            vec![format!("https://{addr}").parse().unwrap()],
            vec![ca.cert.cert_der.clone()],
        );
        let ep = Endpoint::new(
            &cfg,
            &cfg.endpoints[0],
            Arc::new(Credentials::default()),
            &UpstreamMetrics::default(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let tls = ep.connect_for_upgrade().await.unwrap();
        let sock = socket2::SockRef::from(tls.get_ref().0);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
    }
}
