//! The connection to the upstream API server.
//!
//! Normal requests go through a pooled hyper client that negotiates h2 by ALPN (one h2
//! connection carries many concurrent requests and watches) and falls back to HTTP/1.1.
//! Upgrades (exec / attach / port-forward) never use the pool: each gets a fresh TLS
//! connection with ALPN `http/1.1` only, which is dropped unless the upstream answers 101
//! (see `upgrade.rs`, CVE-2018-1002105).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use http::{uri::PathAndQuery, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::credentials::Credentials;
use crate::{body::Body, server::tls, upstream::config::UpstreamConfig};

/// Everything the forwarder needs to reach the upstream.
pub struct Upstream {
    base: Uri,
    pool: Client<HttpsConnector<HttpConnector>, Body>,
    upgrade_tls: TlsConnector,
    server_name: ServerName<'static>,
    host_port: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) credentials: Arc<Credentials>,
    started: Instant,
    /// Milliseconds since `started` of the last upstream answer (0 = never).
    last_ok_ms: AtomicU64,
}

impl Upstream {
    /// Build the pooled client and the upgrade connector from validated config.
    pub fn new(cfg: &UpstreamConfig, credentials: Arc<Credentials>) -> Result<Upstream> {
        let roots = tls::root_store(cfg.ca.clone())?;
        let identity = cfg
            .client_identity
            .as_ref()
            .map(|(chain, key)| (chain.clone(), key.clone_key()));
        let authority = cfg
            .base
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

        // hyper-rustls sets ALPN itself (h2, http/1.1) and insists the list starts empty.
        let pooled_tls = tls::client_config(
            roots.clone(),
            identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key())),
            &[],
        )?;
        let upgrade_tls = tls::client_config(roots, identity, &[b"http/1.1"])?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(pooled_tls)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name.clone()))
            .enable_all_versions()
            .wrap_connector(http);
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .build(https);
        Ok(Upstream {
            base: cfg.base.clone(),
            pool,
            upgrade_tls: TlsConnector::from(Arc::new(upgrade_tls)),
            server_name,
            host_port,
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            credentials,
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
        })
    }

    /// The upstream URI for a client path and query (the base URL's path is a prefix).
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let prefix = self.base.path().trim_end_matches('/');
        let pq = path_and_query.map(PathAndQuery::as_str).unwrap_or("/");
        Uri::builder()
            .scheme("https")
            .authority(
                self.base
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or_default(),
            )
            .path_and_query(format!("{prefix}{pq}"))
            .build()
    }

    /// The pooled client.
    pub fn pool(&self) -> &Client<HttpsConnector<HttpConnector>, Body> {
        &self.pool
    }

    /// A fresh TLS connection with ALPN `http/1.1`, for one upgrade attempt.
    pub async fn connect_for_upgrade(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let connect = async {
            let tcp = TcpStream::connect(&self.host_port).await?;
            tcp.set_nodelay(true)?;
            self.upgrade_tls
                .connect(self.server_name.clone(), tcp)
                .await
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Record that the upstream answered (any HTTP response counts as reachable).
    pub fn mark_ok(&self) {
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        self.last_ok_ms.store(ms, Ordering::Relaxed);
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

    /// Probe the upstream's `/readyz` with the proxy's own credentials; marks it healthy on 200.
    pub async fn probe(&self) -> bool {
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
        match tokio::time::timeout(self.connect_timeout * 2, self.pool.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                self.mark_ok();
                true
            }
            Ok(Ok(resp)) => {
                tracing::warn!(status = %resp.status(), "upstream /readyz not ready");
                false
            }
            Ok(Err(err)) => {
                tracing::warn!(err = %err, "upstream /readyz unreachable");
                false
            }
            Err(_) => {
                tracing::warn!("upstream /readyz timed out");
                false
            }
        }
    }
}
