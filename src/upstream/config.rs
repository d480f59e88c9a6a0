//! The `upstream:` section validated into [`UpstreamConfig`]: where the API server is, how its
//! certificate is verified, and the proxy's own credentials toward it. Exactly one source:
//! `url` (with `ca_file` and `credentials`), `in_cluster` (the pod's service account) or
//! `kubeconfig` (a context's cluster and user). The YAML schema is `config::schema::Upstream`.
//!
//! Rejects, with the key path: zero or several sources, a missing or unreadable CA, half a
//! client certificate, an empty or unreadable token file, no credentials at all, a plain
//! `http://` or host-less URL, a kubeconfig that does not resolve, a bad `tls_server_name`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::Uri;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

/// A client certificate chain and its key.
pub type ClientIdentity = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

/// Everything needed to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `https://host:port[/prefix]`.
    pub base: Uri,
    pub ca: Vec<CertificateDer<'static>>,
    pub tls_server_name: Option<String>,
    pub client_identity: Option<ClientIdentity>,
    pub token: UpstreamToken,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub token_reload_interval: Duration,
}

/// What one source says about the upstream, before the URL and server name are checked.
struct Endpoint {
    server: String,
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
    let mut duration = |key: &str, value: &Option<String>, secs: u64| {
        let path = format!("upstream.{key}");
        c.duration(
            &path,
            value.as_deref(),
            Duration::from_secs(secs),
            Wording::General,
        )
    };
    let connect_timeout = duration("connect_timeout", &u.connect_timeout, 5);
    let request_timeout = duration("request_timeout", &u.request_timeout, 60);
    let health_interval = duration("health_interval", &u.health_interval, 10);
    let token_reload_interval = duration("token_reload_interval", &u.token_reload_interval, 10);
    let chosen = [u.url.is_some(), u.in_cluster, u.kubeconfig.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        c.err(
            "upstream",
            format!("{chosen} upstream sources given"),
            "set exactly one of upstream.url, upstream.in_cluster: true, upstream.kubeconfig",
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
    let e = if let Some(url) = &u.url {
        from_url(c, url, u, base)
    } else if u.in_cluster {
        in_cluster(c, u, base, env)?
    } else {
        from_kubeconfig(c, u.kubeconfig.as_ref()?, u, base)?
    };
    let base_uri = c.https_url("upstream.url", &e.server, UrlKind::ApiServer);
    let tls_server_name = e.tls_server_name.filter(|name| {
        let ok = rustls_pki_types::ServerName::try_from(name.as_str()).is_ok();
        if !ok {
            c.err(
                "upstream.tls_server_name",
                format!("{name:?} is not a DNS name or IP"),
                "",
            );
        }
        ok
    });
    Some(UpstreamConfig {
        base: base_uri?,
        ca: e.ca?,
        tls_server_name,
        client_identity: e.identity,
        token: e.token,
        connect_timeout,
        request_timeout,
        health_interval,
        token_reload_interval,
    })
}

/// `upstream.url` with `ca_file` and `credentials`.
fn from_url(c: &mut Problems, url: &str, u: &schema::Upstream, base: &Path) -> Endpoint {
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
        server: url.to_owned(),
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
        env("PORTCULLIS_SERVICE_ACCOUNT_DIR")
            .unwrap_or_else(|| "/var/run/secrets/kubernetes.io/serviceaccount".into()),
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
        server: format!("https://{host}:{port}"),
        ca,
        tls_server_name: u.tls_server_name.clone(),
        identity: None,
        token: UpstreamToken::File(token_path),
    })
}

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
        server: r.server,
        ca,
        tls_server_name: r.tls_server_name.or(u.tls_server_name.clone()),
        identity,
        token,
    })
}
