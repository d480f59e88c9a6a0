//! The `upstream:` section validated into [`UpstreamConfig`]: where the API server is, how its
//! certificate is verified, and the proxy's own credentials toward it. Exactly one source:
//! `url` or `urls` (several API servers of one control plane; with `ca_file` and
//! `credentials`), `in_cluster` (the pod's service account) or `kubeconfig` (a context's cluster
//! and user) — the last two give one endpoint. Also the timeouts and the circuit breaker
//! (`breaker:`). The YAML schema is `config::schema::Upstream`.
//!
//! Rejects, with the key path: zero or several sources, an empty or repeated `urls`, a missing
//! or unreadable CA, half a client certificate, an empty or unreadable token file, no
//! credentials at all, a plain `http://` or host-less URL, a kubeconfig that does not resolve,
//! a bad `tls_server_name`, a zero timeout, breaker numbers out of range.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::Uri;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::breaker::BreakerSettings;
use crate::{
    config::schema,
    kubeconfig::Kubeconfig,
    problems::{resolve, Problems, UrlKind, Wording},
    server::tls,
};

/// How the proxy authenticates itself to the upstream, besides a client certificate.
#[derive(Debug, Clone)]
pub enum UpstreamToken {
    None,
    /// A fixed token (from a kubeconfig `token`).
    Static(String),
    /// A token file re-read when it changes.
    File(PathBuf),
}

/// `upstream.upgrade_timeout` when not set: the kubelet's default `--runtime-request-timeout`,
/// which bounds the container runtime call an exec or attach waits on before its 101.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(120);
/// A client certificate chain and its key.
pub type ClientIdentity = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

/// Everything needed to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// One or more `https://host:port[/prefix]`, in configured order (never empty).
    pub endpoints: Vec<Uri>,
    pub ca: Vec<CertificateDer<'static>>,
    pub tls_server_name: Option<String>,
    pub client_identity: Option<ClientIdentity>,
    pub token: UpstreamToken,
    /// TCP connect.
    pub connect_timeout: Duration,
    /// TLS handshake, after the TCP connect.
    pub tls_handshake_timeout: Duration,
    /// To the response head, for a request that is not long-running and has no `?timeout=`.
    pub request_timeout: Duration,
    /// The cap on a client's `?timeout=`.
    pub max_request_timeout: Duration,
    /// To the answer to an upgrade (the 101 or a refusal; `upgrade.rs`).
    pub upgrade_timeout: Duration,
    /// A long-running response that carries no bytes for this long is ended (None: never).
    pub stream_idle_timeout: Option<Duration>,
    /// A response stream whose client read nothing for this long, with its buffer full, is
    /// reset (`pump.rs`).
    pub stalled_stream_timeout: Duration,
    /// HTTP/2 streams per upstream connection before another is opened (`pool.rs`).
    pub streams_per_connection: u32,
    /// Upstream HTTP/2 connections per endpoint.
    pub max_connections_per_endpoint: u32,
    /// An upstream connection past the first that carried no stream for this long is closed
    /// (`pool.rs`).
    pub idle_connection_timeout: Duration,
    pub health_interval: Duration,
    pub token_reload_interval: Duration,
    pub breaker: BreakerSettings,
}

impl UpstreamConfig {
    /// Defaults for everything but where the endpoints are and who signs their certificates
    /// (tests and benches build configs this way).
    pub fn new(endpoints: Vec<Uri>, ca: Vec<CertificateDer<'static>>) -> UpstreamConfig {
        UpstreamConfig {
            endpoints,
            ca,
            tls_server_name: None,
            client_identity: None,
            token: UpstreamToken::None,
            connect_timeout: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            max_request_timeout: Duration::from_secs(60),
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            stream_idle_timeout: None,
            stalled_stream_timeout: Duration::from_secs(60),
            streams_per_connection: 100,
            max_connections_per_endpoint: 16,
            idle_connection_timeout: Duration::from_secs(90),
            health_interval: Duration::from_secs(10),
            token_reload_interval: Duration::from_secs(10),
            breaker: BreakerSettings::default(),
        }
    }
}

/// What one source says about the upstream, before the URLs and server name are checked.
struct Endpoint {
    servers: Vec<String>,
    ca: Option<Vec<CertificateDer<'static>>>,
    tls_server_name: Option<String>,
    identity: Option<ClientIdentity>,
    token: UpstreamToken,
}

/// Validate `upstream:`. `base` resolves relative paths; `env` looks up environment variables
/// (for `in_cluster`).
pub fn validate(
    c: &mut Problems,
    u: &schema::Upstream,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<UpstreamConfig> {
    let mut duration = |key: &str, value: &Option<String>, default: Duration| {
        let path = format!("upstream.{key}");
        c.duration(&path, value.as_deref(), default, Wording::General)
    };
    let secs = Duration::from_secs;
    let connect_timeout = duration("connect_timeout", &u.connect_timeout, secs(5));
    let tls_handshake_timeout =
        duration("tls_handshake_timeout", &u.tls_handshake_timeout, secs(5));
    let request_timeout = duration("request_timeout", &u.request_timeout, secs(60));
    let max_request_timeout = duration(
        "max_request_timeout",
        &u.max_request_timeout,
        request_timeout,
    );
    let upgrade_timeout = duration(
        "upgrade_timeout",
        &u.upgrade_timeout,
        DEFAULT_UPGRADE_TIMEOUT,
    );
    let health_interval = duration("health_interval", &u.health_interval, secs(10));
    let token_reload_interval =
        duration("token_reload_interval", &u.token_reload_interval, secs(10));
    let stalled_stream_timeout = duration(
        "stalled_stream_timeout",
        &u.stalled_stream_timeout,
        secs(60),
    );
    let idle_connection_timeout = duration(
        "idle_connection_timeout",
        &u.idle_connection_timeout,
        secs(90),
    );
    let stream_idle_timeout = u
        .stream_idle_timeout
        .as_deref()
        .and_then(|v| c.parse_duration("upstream.stream_idle_timeout", v, Wording::General));
    let mut count = |key: &str, value: Option<u32>, default: u32, hint: &str| {
        let v = value.unwrap_or(default);
        if v == 0 {
            c.err(format!("upstream.{key}"), "must be more than 0", hint);
        }
        v
    };
    let streams_per_connection = count(
        "streams_per_connection",
        u.streams_per_connection,
        100,
        "kube-apiserver advertises 100 concurrent streams per connection",
    );
    let max_connections_per_endpoint = count(
        "max_connections_per_endpoint",
        u.max_connections_per_endpoint,
        16,
        "e.g. 16",
    );
    for (key, d) in [
        ("connect_timeout", Some(connect_timeout)),
        ("stalled_stream_timeout", Some(stalled_stream_timeout)),
        ("idle_connection_timeout", Some(idle_connection_timeout)),
        ("tls_handshake_timeout", Some(tls_handshake_timeout)),
        ("request_timeout", Some(request_timeout)),
        ("max_request_timeout", Some(max_request_timeout)),
        ("upgrade_timeout", Some(upgrade_timeout)),
        ("stream_idle_timeout", stream_idle_timeout),
        ("health_interval", Some(health_interval)),
        // A zero interval would make the token re-read task's timer panic.
        ("token_reload_interval", Some(token_reload_interval)),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            c.err(
                format!("upstream.{key}"),
                "must be more than 0",
                "give a duration such as 5s",
            );
        }
    }
    if max_request_timeout < request_timeout {
        c.err(
            "upstream.max_request_timeout",
            "is less than upstream.request_timeout",
            "the cap on ?timeout= must be at least the default timeout",
        );
    }
    let breaker = super::breaker::validate(c, u.breaker.as_ref());
    let chosen = [
        u.url.is_some(),
        u.urls.is_some(),
        u.in_cluster,
        u.kubeconfig.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        c.err(
            "upstream",
            format!("{chosen} upstream sources given"),
            "set exactly one of upstream.url, upstream.urls, upstream.in_cluster: true, upstream.kubeconfig",
        );
        return None;
    }
    if (u.in_cluster || u.kubeconfig.is_some()) && (u.ca_file.is_some() || u.credentials.is_some())
    {
        c.err(
            "upstream.credentials",
            "ca_file and credentials only go with upstream.url",
            "in_cluster and kubeconfig bring their own CA and credentials",
        );
    }
    let (e, key) = if let Some(url) = &u.url {
        (from_url(c, vec![url.clone()], u, base), "upstream.url")
    } else if let Some(urls) = &u.urls {
        (from_url(c, urls.clone(), u, base), "upstream.urls")
    } else if u.in_cluster {
        (in_cluster(c, u, base, env)?, "upstream.url")
    } else {
        (
            from_kubeconfig(c, u.kubeconfig.as_ref()?, u, base)?,
            "upstream.url",
        )
    };
    let endpoints = endpoint_uris(c, key, &e.servers);
    let tls_server_name = e.tls_server_name.filter(|name| {
        let ok = rustls_pki_types::ServerName::try_from(name.as_str()).is_ok();
        if !ok {
            c.err(
                "upstream.tls_server_name",
                format!("{name:?} is not a DNS name or IP"),
                "write the name the API server's certificate carries, e.g. kubernetes.default.svc",
            );
        }
        ok
    });
    if let Some(ca) = &e.ca {
        usable_tls(c, u, ca, e.identity.as_ref());
    }
    Some(UpstreamConfig {
        endpoints: endpoints?,
        ca: e.ca?,
        tls_server_name,
        client_identity: e.identity,
        token: e.token,
        connect_timeout,
        tls_handshake_timeout,
        request_timeout,
        max_request_timeout,
        upgrade_timeout,
        stream_idle_timeout,
        stalled_stream_timeout,
        streams_per_connection,
        max_connections_per_endpoint,
        idle_connection_timeout,
        health_interval,
        token_reload_interval,
        breaker,
    })
}

/// The upstream TLS client is built here as at start, so `check-config` (and a reload)
/// reports what `serve` would refuse — a CA bundle that makes no trust anchor, a client
/// certificate whose key is not its own — at the key that holds it.
fn usable_tls(
    c: &mut Problems,
    u: &schema::Upstream,
    ca: &[CertificateDer<'static>],
    identity: Option<&ClientIdentity>,
) {
    let (ca_key, identity_key) = if u.in_cluster {
        ("upstream.in_cluster", "upstream.in_cluster")
    } else if u.kubeconfig.is_some() {
        ("upstream.kubeconfig", "upstream.kubeconfig")
    } else {
        ("upstream.ca_file", "upstream.credentials.client_key_file")
    };
    if let Err(e) = crate::server::tls::client_config(ca.to_vec(), None, &[]) {
        c.err(
            ca_key,
            format!("the CA bundle is not usable: {e:#}"),
            "give the PEM bundle of CA certificates that signs the API server's certificate",
        );
        return;
    }
    if let Some((chain, key)) = identity {
        if let Err(e) = crate::server::tls::client_config(
            ca.to_vec(),
            Some((chain.clone(), key.clone_key())),
            &[],
        ) {
            c.err(
                identity_key,
                format!("{e:#}"),
                "give the private key of the client certificate (the pair must match)",
            );
        }
    }
}

/// Each server as an `https://` URI: at least one, none twice.
fn endpoint_uris(c: &mut Problems, key: &str, servers: &[String]) -> Option<Vec<Uri>> {
    if servers.is_empty() {
        c.err(
            key,
            "is empty",
            "list at least one https:// URL of an API server",
        );
        return None;
    }
    let mut out: Vec<Uri> = Vec::with_capacity(servers.len());
    for (i, s) in servers.iter().enumerate() {
        let path = if servers.len() > 1 || key.ends_with('s') {
            format!("{key}[{i}]")
        } else {
            key.to_owned()
        };
        let uri = c.https_url(&path, s, UrlKind::ApiServer)?;
        if out.iter().any(|u| u.authority() == uri.authority()) {
            c.err(
                path,
                format!("{s} is listed twice"),
                "list each API server once",
            );
            return None;
        }
        out.push(uri);
    }
    Some(out)
}

/// `upstream.url` / `upstream.urls` with `ca_file` and `credentials`.
fn from_url(c: &mut Problems, servers: Vec<String>, u: &schema::Upstream, base: &Path) -> Endpoint {
    let ca = match &u.ca_file {
        Some(f) => c.certs("upstream.ca_file", f, base),
        None => {
            c.err(
                "upstream.ca_file",
                "missing",
                "give the PEM bundle that signs the API server certificate",
            );
            None
        }
    };
    let creds = u.credentials.clone().unwrap_or(schema::Credentials {
        token_file: None,
        client_cert_file: None,
        client_key_file: None,
    });
    let identity = match (&creds.client_cert_file, &creds.client_key_file) {
        (Some(cf), Some(kf)) => {
            let chain = c.certs("upstream.credentials.client_cert_file", cf, base);
            let key = c.key("upstream.credentials.client_key_file", kf, base);
            chain.zip(key).map(|(ch, k)| (ch, Arc::new(k)))
        }
        (None, None) => None,
        _ => {
            c.err(
                "upstream.credentials",
                "client_cert_file and client_key_file go together",
                "set both or neither",
            );
            None
        }
    };
    let token = match &creds.token_file {
        Some(f) => token_file(c, &resolve(base, f)),
        None => UpstreamToken::None,
    };
    if identity.is_none() && matches!(token, UpstreamToken::None) && c.is_empty() {
        c.err(
            "upstream.credentials",
            "no credentials for the proxy itself",
            "set token_file or client_cert_file + client_key_file: the proxy impersonates callers and needs its own identity",
        );
    }
    Endpoint {
        servers,
        ca,
        tls_server_name: u.tls_server_name.clone(),
        identity,
        token,
    }
}

/// `upstream.credentials.token_file`: readable and not empty.
fn token_file(c: &mut Problems, p: &Path) -> UpstreamToken {
    let path = "upstream.credentials.token_file";
    match c.read_text(path, p, "give a readable token file") {
        Some(t) if !t.trim().is_empty() => UpstreamToken::File(p.to_path_buf()),
        Some(_) => {
            c.err(
                path,
                format!("{} is empty", p.display()),
                "the file must hold the proxy's bearer token",
            );
            UpstreamToken::None
        }
        None => UpstreamToken::None,
    }
}

/// `upstream.in_cluster`: KUBERNETES_SERVICE_HOST/PORT, the service account's CA and token.
fn in_cluster(
    c: &mut Problems,
    u: &schema::Upstream,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Endpoint> {
    let host = env("KUBERNETES_SERVICE_HOST");
    let port = env("KUBERNETES_SERVICE_PORT");
    let dir = PathBuf::from(
        env("PORTCULLIS_SERVICE_ACCOUNT_DIR").unwrap_or_else(|| SERVICE_ACCOUNT_DIR.into()),
    );
    let (Some(host), Some(port)) = (host, port) else {
        c.err(
            "upstream.in_cluster",
            "KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not set",
            "in_cluster only works inside a pod; use upstream.url or upstream.kubeconfig elsewhere",
        );
        return None;
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let ca = c.certs("upstream.in_cluster", &dir.join("ca.crt"), base);
    let token_path = dir.join("token");
    if std::fs::metadata(&token_path).is_err() {
        c.err(
            "upstream.in_cluster",
            format!("cannot read {}", token_path.display()),
            "mount the service-account token (automountServiceAccountToken)",
        );
    }
    Some(Endpoint {
        servers: vec![format!("https://{host}:{port}")],
        ca,
        tls_server_name: u.tls_server_name.clone(),
        identity: None,
        token: UpstreamToken::File(token_path),
    })
}

/// Where a pod's service-account token and cluster CA are mounted (overridden by
/// `PORTCULLIS_SERVICE_ACCOUNT_DIR`).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `upstream.kubeconfig`: a context's server, CA, and token or client certificate.
fn from_kubeconfig(
    c: &mut Problems,
    kc: &schema::KubeconfigRef,
    u: &schema::Upstream,
    base: &Path,
) -> Option<Endpoint> {
    let path = resolve(base, &kc.path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolved = Kubeconfig::load(&path).and_then(|k| k.resolve(kc.context.as_deref(), &dir));
    let r = match resolved {
        Ok(r) => r,
        Err(e) => {
            c.err("upstream.kubeconfig", format!("{e:#}"), "point at a kubeconfig whose context has a server, a CA and a token or client certificate");
            return None;
        }
    };
    let ca = match &r.ca_pem {
        Some(pem) => match tls::certs_from_pem(pem) {
            Ok(certs) => Some(certs),
            Err(e) => {
                let message = format!("certificate-authority: {e:#}");
                c.err("upstream.kubeconfig", message, "");
                None
            }
        },
        None => {
            c.err(
                "upstream.kubeconfig",
                "the cluster has no certificate-authority",
                "the proxy verifies the API server; add certificate-authority[-data]",
            );
            None
        }
    };
    let identity = match (&r.client_cert_pem, &r.client_key_pem) {
        (Some(cp), Some(kp)) => match (tls::certs_from_pem(cp), tls::key_from_pem(kp)) {
            (Ok(ch), Ok(k)) => Some((ch, Arc::new(k))),
            (Err(e), _) | (_, Err(e)) => {
                let message = format!("client credentials: {e:#}");
                c.err("upstream.kubeconfig", message, "");
                None
            }
        },
        _ => None,
    };
    let token = match (r.token, r.token_file) {
        (Some(t), _) => UpstreamToken::Static(t),
        (None, Some(f)) => UpstreamToken::File(f),
        (None, None) => UpstreamToken::None,
    };
    Some(Endpoint {
        servers: vec![r.server],
        ca,
        tls_server_name: r.tls_server_name.or(u.tls_server_name.clone()),
        identity,
        token,
    })
}
