//! Turns the parsed schema into a typed [`Config`], collecting every problem with its key path
//! and a hint instead of stopping at the first. Each section is validated in its concern's
//! folder (`server/config.rs`, `authn/config.rs`, `upstream/config.rs`, …); this file composes
//! them and checks the `dangerous:` acknowledgements, which span sections.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use super::{schema, Problem, Problems};
use crate::{
    authn::config::X509Identity,
    server::{config as server_config, ServeOptions},
    upstream::config::UpstreamConfig,
};

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
    pub audit: Option<crate::audit::config::AuditSettings>,
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
    let listen = server_config::listen(&mut c, file, base);
    let authn = &file.authentication;
    let certs = crate::authn::config::client_certificates(&mut c, authn, base);
    let cache = crate::authn::config::token_cache(&mut c, authn);
    let jwt = if authn.jwt.is_empty() {
        None
    } else {
        let built = crate::authn::jwt::build(&authn.jwt, base, "authentication.jwt", cache);
        c.take(built).map(|j| Jwt(Arc::new(j)))
    };
    let authorizer = c.take(crate::authz::build(&file.authorization, "authorization"));
    let server_tls = match (listen.chain, listen.key) {
        (Some(chain), Some(key)) => {
            let tls = server_config::TlsSettings {
                chain,
                key: Arc::new(key),
                client_auth: certs.client_auth,
            };
            match tls.server_config() {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    c.err("listen.tls", format!("{e:#}"), server_config::TLS_HINT);
                    None
                }
            }
        }
        _ => None,
    };
    let limiter = match &file.rate_limits {
        None => None,
        Some(rl) => c
            .take(crate::ratelimit::build(rl, "rate_limits"))
            .map(Limiter),
    };
    let default_sanitize = Default::default();
    let sanitize = file.sanitize.as_ref().unwrap_or(&default_sanitize);
    let sanitizer = c.take(crate::sanitize::config::build(sanitize, "sanitize"));
    let audit = match &file.audit {
        None => None,
        Some(a) => c.take(crate::audit::config::build(a, base, "audit")),
    };
    check_dangerous(&mut c, file);
    let (admin_addr, ready_window) = server_config::admin(&mut c, &file.admin);
    let upstream = crate::upstream::config::validate(&mut c, &file.upstream, base, env);
    let config = (|| {
        Some(Config {
            listen_addr: listen.addr?,
            server_tls: server_tls?,
            serve: listen.serve,
            trust_forwarded_for: file.listen.trust_forwarded_for,
            admin_addr: admin_addr?,
            ready_window,
            upstream: upstream?,
            x509: certs.x509,
            client_cert_required: certs.required,
            jwt,
            authorizer: Arc::new(authorizer?),
            limiter,
            sanitizer: Arc::new(sanitizer?),
            audit,
            dangerous: file.dangerous.clone(),
        })
    })();
    c.finish(config)
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
                if s.overflow == Some(crate::audit::config::OverflowConfig::Drop) {
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
