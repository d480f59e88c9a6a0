//! Turns the parsed schema into a typed [`Config`], collecting every problem with its key path
//! and a hint instead of stopping at the first. Each section is validated in its concern's
//! folder (`server/config.rs`, `authn/config.rs`, `upstream/config.rs`, …); this file composes
//! them and checks the `dangerous:` acknowledgements, which span sections.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use super::{schema, Problem, Problems};
use crate::{
    audit::config::AuditSettings,
    authn::config::{JwtSettings, X509Identity},
    authz::AuthzPolicy,
    ratelimit::Settings as RateLimitSettings,
    sanitize::SanitizePolicy,
    server::{
        config::{self as server_config, TlsSettings},
        ServeOptions,
    },
    upstream::config::UpstreamConfig,
};

/// The validated configuration: plain data only (addresses, durations, loaded certificates
/// and keys, compiled policies). The live objects — rustls config, rate limiter, JWT
/// authenticator, upstream client, audit sinks — are built from it by `stack::Runtime::build`
/// (in `app.rs`), so a new configuration can be validated and built beside the running one.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// The listener's certificate, key and client-certificate policy.
    pub tls: TlsSettings,
    pub serve: ServeOptions,
    pub trust_forwarded_for: bool,
    pub admin_addr: SocketAddr,
    pub ready_window: Duration,
    pub upstream: UpstreamConfig,
    /// Client-certificate identity mapping (None: certificates are not requested).
    pub x509: Option<X509Identity>,
    pub client_cert_required: bool,
    /// JWT issuers (None: bearer tokens are refused).
    pub jwt: Option<JwtSettings>,
    /// Grants and tenants, compiled.
    pub authorization: Arc<AuthzPolicy>,
    /// Rate limits (None: no `rate_limits` section).
    pub rate_limits: Option<RateLimitSettings>,
    /// Request-body checks (always present; defaults when the section is absent).
    pub sanitize: Arc<SanitizePolicy>,
    /// Audit policy and sinks (None: no `audit` section).
    pub audit: Option<AuditSettings>,
    /// OpenTelemetry traces (None: no `tracing` section, no spans).
    pub tracing: Option<crate::telemetry::config::TracingSettings>,
    /// `log.format`.
    pub log_format: crate::telemetry::config::LogFormat,
    /// The `dangerous:` acknowledgements (logged at start).
    pub dangerous: schema::Dangerous,
}

impl Config {
    /// One line for logs and `check-config`.
    pub fn summary(&self) -> String {
        let mtls = match (&self.x509, self.client_cert_required) {
            (None, _) => "off",
            (Some(_), true) => "required",
            (Some(_), false) => "optional",
        };
        let issuers = self.jwt.as_ref().map_or(0, |j| j.issuers.len());
        let audit = match &self.audit {
            None => "audit off".to_string(),
            Some(a) => format!("audit {}", a.describe()),
        };
        format!(
            "listen {} (mTLS {mtls}, {issuers} JWT issuer(s)), admin {}, upstream {}, {audit}",
            self.listen_addr,
            self.admin_addr,
            self.upstream
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
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
    let jwt = crate::authn::config::jwt(&mut c, authn, base, cache);
    let authorization = c.take(crate::authz::build(&file.authorization, "authorization"));
    let tls = match (listen.chain, listen.key) {
        (Some(chain), Some(key)) => {
            let tls = TlsSettings {
                chain,
                key: Arc::new(key),
                client_auth: certs.client_auth,
            };
            tls.check(&mut c);
            Some(tls)
        }
        _ => None,
    };
    let rate_limits = match &file.rate_limits {
        None => None,
        Some(rl) => c.take(crate::ratelimit::config::validate(rl, "rate_limits")),
    };
    let default_sanitize = Default::default();
    let sanitize = file.sanitize.as_ref().unwrap_or(&default_sanitize);
    let sanitize = c.take(crate::sanitize::config::build(sanitize, "sanitize"));
    let audit = match &file.audit {
        None => None,
        Some(a) => c.take(crate::audit::config::build(a, base, "audit")),
    };
    let tracing = match &file.tracing {
        None => None,
        Some(t) => c.take(crate::telemetry::config::build(t, base, "tracing")),
    };
    check_dangerous(&mut c, file);
    check_session_recording(&mut c, file);
    check_tenant_names(&mut c, file);
    let (admin_addr, ready_window) = server_config::admin(&mut c, &file.admin);
    let upstream = crate::upstream::config::validate(&mut c, &file.upstream, base, env);
    let config = (|| {
        Some(Config {
            listen_addr: listen.addr?,
            tls: tls?,
            serve: listen.serve,
            trust_forwarded_for: file.listen.trust_forwarded_for,
            admin_addr: admin_addr?,
            ready_window,
            upstream: upstream?,
            x509: certs.x509,
            client_cert_required: certs.required,
            jwt,
            authorization: Arc::new(authorization?),
            rate_limits,
            sanitize: Arc::new(sanitize?),
            audit,
            tracing,
            log_format: file.log.format.unwrap_or_default(),
            dangerous: file.dangerous.clone(),
        })
    })();
    c.finish(config)
}

/// Tenant names outside `authorization` must name a tenant of `authorization.tenants`: a
/// caller's tenant comes only from there, so a misspelt name (`team_a` for `team-a`), or one
/// left behind when a reload renames the tenant, would silently take that tenant's Pod
/// Security, field rules or rate limits away.
fn check_tenant_names(c: &mut Problems, file: &schema::File) {
    let known: std::collections::HashSet<&str> = file
        .authorization
        .tenants
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let mut check = |key: String, name: &str| {
        if !known.contains(name) {
            c.err(
                key,
                format!("{name:?} is not the name of a tenant in authorization.tenants"),
                "use a tenant's name as written in authorization.tenants[].name, or remove the entry",
            );
        }
    };
    if let Some(s) = &file.sanitize {
        if let Some(ps) = &s.pod_security {
            for name in ps.tenants.keys() {
                check(format!("sanitize.pod_security.tenants.{name}"), name);
            }
        }
        for (i, r) in s.field_rules.iter().enumerate() {
            for (j, name) in r.tenants.iter().flatten().enumerate() {
                if name != "*" {
                    check(format!("sanitize.field_rules[{i}].tenants[{j}]"), name);
                }
            }
        }
    }
    if let Some(r) = &file.rate_limits {
        for name in r.tenants.keys() {
            check(format!("rate_limits.tenants.{name}"), name);
        }
    }
}

/// `record_sessions` on a tenant or grant needs somewhere to put the recordings.
fn check_session_recording(c: &mut Problems, file: &schema::File) {
    let configured = file
        .audit
        .as_ref()
        .is_some_and(|a| a.session_recording.is_some());
    if configured {
        return;
    }
    let authz = &file.authorization;
    let tenants = authz.tenants.iter().map(|t| ("tenants", t.record_sessions));
    let grants = authz.grants.iter().map(|g| ("grants", g.record_sessions));
    let mut index = std::collections::HashMap::new();
    for (list, on) in tenants.chain(grants) {
        let i = index.entry(list).or_insert(0usize);
        if on {
            c.err(
                format!("authorization.{list}[{i}].record_sessions"),
                "sessions cannot be recorded without audit.session_recording",
                "add audit.session_recording: {directory: DIR} (an audit section is needed), or remove record_sessions",
            );
        }
        *i += 1;
    }
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
                    "forward-unjudged forwards CBOR bodies unparsed",
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
                        "forward-unjudged forwards CBOR bodies unparsed",
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
    if !d.allow_system_identities {
        let hint = "remove it, or set dangerous.allow_system_identities: true";
        let what =
            "lets an identity named system:… (system:masters skips RBAC) reach the API server";
        if file
            .authentication
            .client_certificates
            .as_ref()
            .is_some_and(|cc| cc.allow_system_identities)
        {
            c.err(
                "authentication.client_certificates.allow_system_identities",
                what,
                hint,
            );
        }
        for (i, issuer) in file.authentication.jwt.iter().enumerate() {
            if issuer.allow_system_identities {
                c.err(
                    format!("authentication.jwt[{i}].allow_system_identities"),
                    what,
                    hint,
                );
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
