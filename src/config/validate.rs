//! Turns the parsed schema into a typed [`Config`], collecting every problem with its key path
//! and a hint instead of stopping at the first.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::Uri;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::schema;
use crate::{
    kubeconfig::Kubeconfig,
    server::{tls, ServeOptions},
};

pub use super::problems::Problem;
use super::problems::{resolve, Problems, Wording};

/// How the proxy authenticates itself to the upstream, besides a client certificate.
#[derive(Debug, Clone)]
pub enum UpstreamToken {
    None,
    /// A fixed token (from a kubeconfig `token`).
    Static(String),
    /// A token file re-read when it changes.
    File(PathBuf),
}

/// Everything needed to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `https://host:port[/prefix]`.
    pub base: Uri,
    pub ca: Vec<CertificateDer<'static>>,
    pub tls_server_name: Option<String>,
    pub client_identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub token: UpstreamToken,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub token_reload_interval: Duration,
}

/// Client-certificate identity mapping.
#[derive(Debug, Clone)]
pub struct X509Identity {
    pub username_prefix: String,
    pub groups_prefix: String,
    pub allow_system_identities: bool,
}

/// The JWT authenticator (a newtype so `Config` can be `Debug`).
#[derive(Clone)]
pub struct Jwt(pub Arc<crate::authn::jwt::JwtAuthenticator>);

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.issuers()).finish()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub serve: ServeOptions,
    pub trust_forwarded_for: bool,
    pub admin_addr: SocketAddr,
    pub ready_window: Duration,
    pub upstream: UpstreamConfig,
    /// Client-certificate identity mapping (None: certificates are not requested).
    pub x509: Option<X509Identity>,
    pub client_cert_required: bool,
    /// JWT issuers (None: bearer tokens are refused).
    pub jwt: Option<Jwt>,
    pub authorizer: Arc<crate::authz::Authorizer>,
    /// Rate limits (None: no `rate_limits` section).
    pub limiter: Option<Limiter>,
    /// Request-body checks (always present; defaults when the section is absent).
    pub sanitizer: Arc<crate::sanitize::Sanitizer>,
    /// Audit policy and sinks (None: no `audit` section).
    pub audit: Option<super::audit::AuditSettings>,
    /// The `dangerous:` acknowledgements (logged at start).
    pub dangerous: schema::Dangerous,
}

/// The rate limiter (a newtype so `Config` can be `Debug`).
#[derive(Clone)]
pub struct Limiter(pub crate::ratelimit::RateLimiter);

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiter")
    }
}

impl Config {
    /// One line for logs and `check-config`.
    pub fn summary(&self) -> String {
        let mtls = match (&self.x509, self.client_cert_required) {
            (None, _) => "off",
            (Some(_), true) => "required",
            (Some(_), false) => "optional",
        };
        let issuers = self.jwt.as_ref().map_or(0, |j| j.0.issuers().count());
        let audit = match &self.audit {
            None => "audit off".to_string(),
            Some(a) => format!("audit {}", a.describe()),
        };
        format!(
            "listen {} (mTLS {mtls}, {issuers} JWT issuer(s)), admin {}, upstream {}, {audit}",
            self.listen_addr, self.admin_addr, self.upstream.base
        )
    }
}

/// Validate a parsed file. `base` is the folder relative paths are taken from; `env` looks up
/// environment variables (injected so tests need not touch the process environment).
pub fn build(
    file: &schema::File,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut c = Problems::new();

    // listen
    let listen_addr = c.addr("listen.address", &file.listen.address);
    let chain = c.certs("listen.tls.cert_file", &file.listen.tls.cert_file, base);
    let key = c.key("listen.tls.key_file", &file.listen.tls.key_file, base);
    let streams = file.listen.max_concurrent_streams.unwrap_or(250);
    if streams < 100 {
        c.err(
            "listen.max_concurrent_streams",
            format!("{streams} is below 100"),
            "kubectl and controllers multiplex many watches on one connection; use at least 100 (the API server's default)",
        );
    }
    let serve = ServeOptions {
        handshake_timeout: c.duration(
            "listen.handshake_timeout",
            file.listen.handshake_timeout.as_deref(),
            Duration::from_secs(10),
            Wording::General,
        ),
        header_read_timeout: c.duration(
            "listen.header_read_timeout",
            file.listen.header_read_timeout.as_deref(),
            Duration::from_secs(30),
            Wording::General,
        ),
        max_concurrent_streams: streams,
        grace: c.duration(
            "shutdown.grace",
            file.shutdown.grace.as_deref(),
            Duration::from_secs(30),
            Wording::General,
        ),
    };

    // authentication
    let authn = &file.authentication;
    if authn.client_certificates.is_none() && authn.jwt.is_empty() {
        c.err(
            "authentication",
            "no authentication method configured",
            "set authentication.client_certificates and/or authentication.jwt; the proxy never forwards anonymous requests",
        );
    }
    let mut required = false;
    let mut client_cas = tls::ClientCas::default();
    let x509 = authn.client_certificates.as_ref().map(|cc| {
        required = match cc.mode.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                c.err(
                    "authentication.client_certificates.mode",
                    format!("unknown mode {other:?}"),
                    "use required or optional",
                );
                true
            }
        };
        if required && !authn.jwt.is_empty() {
            c.err(
                "authentication.client_certificates.mode",
                "required, but JWT issuers are configured too",
                "clients with only a bearer token could not connect; use mode: optional",
            );
        }
        if cc.ca_files.is_empty() {
            c.err(
                "authentication.client_certificates.ca_files",
                "no CA bundle given",
                "list at least one PEM file of CAs that sign client certificates",
            );
        }
        for (i, f) in cc.ca_files.iter().enumerate() {
            if let Some(mut certs) = c.certs(
                &format!("authentication.client_certificates.ca_files[{i}]"),
                f,
                base,
            ) {
                client_cas.cas.append(&mut certs);
            }
        }
        for (i, f) in cc.crl_files.iter().enumerate() {
            let path = format!("authentication.client_certificates.crl_files[{i}]");
            if let Some(mut crls) = c.crls(&path, f, base) {
                client_cas.crls.append(&mut crls);
            }
        }
        X509Identity {
            username_prefix: cc.username_prefix.clone(),
            groups_prefix: cc.groups_prefix.clone(),
            allow_system_identities: cc.allow_system_identities,
        }
    });
    let cache = {
        let mut opts = crate::authn::jwt::CacheOptions::default();
        if let Some(tc) = &authn.token_cache {
            if let Some(n) = tc.max_entries {
                opts.max_entries = n;
            }
            opts.max_ttl = c.duration(
                "authentication.token_cache.max_ttl",
                tc.max_ttl.as_deref(),
                opts.max_ttl,
                Wording::General,
            );
        }
        opts
    };
    let jwt = if authn.jwt.is_empty() {
        None
    } else {
        match crate::authn::jwt::build(&authn.jwt, base, "authentication.jwt", cache) {
            Ok(j) => Some(Jwt(Arc::new(j))),
            Err(problems) => {
                c.append(problems);
                None
            }
        }
    };
    let authorizer = match crate::authz::build(&file.authorization, "authorization") {
        Ok(a) => Some(Arc::new(a)),
        Err(problems) => {
            c.append(problems);
            None
        }
    };
    let server_tls = match (chain, key) {
        (Some(chain), Some(key)) => {
            let auth = match (&x509, required) {
                (None, _) => tls::ClientAuth::None,
                (Some(_), _) if client_cas.cas.is_empty() => tls::ClientAuth::None,
                (Some(_), true) => tls::ClientAuth::Required(client_cas),
                (Some(_), false) => tls::ClientAuth::Optional(client_cas),
            };
            match tls::server_config(chain, key, auth) {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    c.err(
                        "listen.tls",
                        format!("{e:#}"),
                        "the certificate must match the key; CA files must hold CA certificates",
                    );
                    None
                }
            }
        }
        _ => None,
    };

    let limiter = match &file.rate_limits {
        None => None,
        Some(rl) => match crate::ratelimit::build(rl, "rate_limits") {
            Ok(l) => Some(Limiter(l)),
            Err(problems) => {
                c.append(problems);
                None
            }
        },
    };

    let sanitizer = match crate::sanitize::config::build(
        file.sanitize.as_ref().unwrap_or(&Default::default()),
        "sanitize",
    ) {
        Ok(s) => Some(Arc::new(s)),
        Err(problems) => {
            c.append(problems);
            None
        }
    };

    let audit = match &file.audit {
        None => None,
        Some(a) => match super::audit::build(a, base, "audit") {
            Ok(s) => Some(s),
            Err(problems) => {
                c.append(problems);
                None
            }
        },
    };

    check_dangerous(&mut c, file);

    // admin
    let admin_addr = c.addr("admin.address", &file.admin.address);
    let ready_window = c.duration(
        "admin.ready_window",
        file.admin.ready_window.as_deref(),
        Duration::from_secs(30),
        Wording::General,
    );

    // upstream
    let upstream = build_upstream(&mut c, &file.upstream, base, env);

    match (
        listen_addr,
        server_tls,
        admin_addr,
        upstream,
        authorizer,
        sanitizer,
    ) {
        (
            Some(listen_addr),
            Some(server_tls),
            Some(admin_addr),
            Some(upstream),
            Some(authorizer),
            Some(sanitizer),
        ) if c.is_empty() => Ok(Config {
            listen_addr,
            server_tls,
            serve,
            trust_forwarded_for: file.listen.trust_forwarded_for,
            admin_addr,
            ready_window,
            upstream,
            x509,
            client_cert_required: required,
            jwt,
            authorizer,
            limiter,
            sanitizer,
            audit,
            dangerous: file.dangerous.clone(),
        }),
        _ => Err(c.into_vec()),
    }
}

fn build_upstream(
    c: &mut Problems,
    u: &schema::Upstream,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<UpstreamConfig> {
    let connect_timeout = c.duration(
        "upstream.connect_timeout",
        u.connect_timeout.as_deref(),
        Duration::from_secs(5),
        Wording::General,
    );
    let request_timeout = c.duration(
        "upstream.request_timeout",
        u.request_timeout.as_deref(),
        Duration::from_secs(60),
        Wording::General,
    );
    let health_interval = c.duration(
        "upstream.health_interval",
        u.health_interval.as_deref(),
        Duration::from_secs(10),
        Wording::General,
    );
    let token_reload_interval = c.duration(
        "upstream.token_reload_interval",
        u.token_reload_interval.as_deref(),
        Duration::from_secs(10),
        Wording::General,
    );
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

    let (server, ca, mut tls_server_name, identity, token) = if let Some(url) = &u.url {
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
            Some(f) => {
                let p = resolve(base, f);
                match c.read_text(
                    "upstream.credentials.token_file",
                    &p,
                    "give a readable token file",
                ) {
                    Some(t) if !t.trim().is_empty() => UpstreamToken::File(p),
                    Some(_) => {
                        c.err(
                            "upstream.credentials.token_file",
                            format!("{} is empty", p.display()),
                            "the file must hold the proxy's bearer token",
                        );
                        UpstreamToken::None
                    }
                    None => UpstreamToken::None,
                }
            }
            None => UpstreamToken::None,
        };
        if identity.is_none() && matches!(token, UpstreamToken::None) && c.is_empty() {
            c.err(
                "upstream.credentials",
                "no credentials for the proxy itself",
                "set token_file or client_cert_file + client_key_file: the proxy impersonates callers and needs its own identity",
            );
        }
        (url.clone(), ca, u.tls_server_name.clone(), identity, token)
    } else if u.in_cluster {
        let host = env("KUBERNETES_SERVICE_HOST");
        let port = env("KUBERNETES_SERVICE_PORT");
        let dir = PathBuf::from(
            env("PORTCULLIS_SERVICE_ACCOUNT_DIR")
                .unwrap_or_else(|| "/var/run/secrets/kubernetes.io/serviceaccount".into()),
        );
        let (Some(host), Some(port)) = (host, port) else {
            c.err("upstream.in_cluster", "KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not set", "in_cluster only works inside a pod; use upstream.url or upstream.kubeconfig elsewhere");
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
        (
            format!("https://{host}:{port}"),
            ca,
            u.tls_server_name.clone(),
            None,
            UpstreamToken::File(token_path),
        )
    } else {
        let kc = u.kubeconfig.as_ref()?;
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
                    c.err(
                        "upstream.kubeconfig",
                        format!("certificate-authority: {e:#}"),
                        "",
                    );
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
                    c.err(
                        "upstream.kubeconfig",
                        format!("client credentials: {e:#}"),
                        "",
                    );
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
        (
            r.server,
            ca,
            r.tls_server_name.or(u.tls_server_name.clone()),
            identity,
            token,
        )
    };

    let base_uri = match server.parse::<Uri>() {
        Ok(uri)
            if uri.scheme_str() == Some("https")
                && uri.authority().is_some()
                && uri.query().is_none() =>
        {
            Some(uri)
        }
        Ok(_) => {
            c.err(
                "upstream.url",
                format!("{server:?} is not an https:// URL with a host"),
                "write e.g. https://10.0.0.1:6443; plain http is refused",
            );
            None
        }
        Err(e) => {
            c.err(
                "upstream.url",
                format!("{server:?} is not a URL: {e}"),
                "write e.g. https://10.0.0.1:6443",
            );
            None
        }
    };
    if let Some(name) = &tls_server_name {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            c.err(
                "upstream.tls_server_name",
                format!("{name:?} is not a DNS name or IP"),
                "",
            );
            tls_server_name = None;
        }
    }
    Some(UpstreamConfig {
        base: base_uri?,
        ca: ca?,
        tls_server_name,
        client_identity: identity,
        token,
        connect_timeout,
        request_timeout,
        health_interval,
        token_reload_interval,
    })
}

/// Options that weaken a guard need their `dangerous.*` acknowledgement (DESIGN decision 10).
fn check_dangerous(c: &mut Problems, file: &schema::File) {
    let d = &file.dangerous;
    use crate::sanitize::config::BinaryBodies;
    if let Some(s) = &file.sanitize {
        if !d.allow_uninspected_bodies {
            let hint = "set dangerous.allow_uninspected_bodies: true to accept bodies forwarded without strict parsing";
            if s.binary_bodies == Some(BinaryBodies::ForwardUnjudged) {
                c.err(
                    "sanitize.binary_bodies",
                    "forward-unjudged forwards protobuf / CBOR bodies unparsed",
                    hint,
                );
            }
            for (i, r) in s.resources.iter().enumerate() {
                if r.inspect == Some(false) {
                    c.err(
                        format!("sanitize.resources[{i}].inspect"),
                        "false forwards these bodies unparsed",
                        hint,
                    );
                }
                if r.binary_bodies == Some(BinaryBodies::ForwardUnjudged) {
                    c.err(
                        format!("sanitize.resources[{i}].binary_bodies"),
                        "forward-unjudged forwards protobuf / CBOR bodies unparsed",
                        hint,
                    );
                }
            }
        }
    }
    if let Some(a) = &file.audit {
        if !d.allow_audit_event_loss {
            for (i, s) in a.sinks.iter().enumerate() {
                if s.overflow == Some(super::audit::OverflowConfig::Drop) {
                    c.err(
                        format!("audit.sinks[{i}].overflow"),
                        "drop discards audit events when the queue is full",
                        "use overflow: block, or set dangerous.allow_audit_event_loss: true",
                    );
                }
            }
        }
    }
    if let Some(rl) = &file.rate_limits {
        if !d.allow_unlimited_on_backend_error
            && rl.redis.as_ref().is_some_and(|r| {
                r.on_backend_error == crate::ratelimit::config::OnBackendError::Allow
            })
        {
            c.err(
                "rate_limits.redis.on_backend_error",
                "allow enforces no limit while Redis is unreachable",
                "use local or deny, or set dangerous.allow_unlimited_on_backend_error: true",
            );
        }
    }
}
