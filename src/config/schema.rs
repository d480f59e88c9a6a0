//! The YAML schema, exactly as written by operators. Every struct rejects unknown keys. The
//! top-level sections are here; `authorization`, `rate_limits`, `sanitize`, `audit` and the JWT
//! issuer entries have their schema next to their validation in their concern's `config.rs`.
//!
//! Values that need checking beyond their YAML type (durations, URLs, addresses, files) are
//! kept as strings / paths here and turned into typed values by each concern's validator
//! (composed by `validate.rs`), so that one run
//! of `check-config` can report *every* such error at once with its key path. Only YAML
//! syntax errors, unknown keys and wrong YAML types stop at the first error (serde's model).

use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Listen,
    #[serde(default)]
    pub admin: Admin,
    pub upstream: Upstream,
    pub authentication: Authentication,
    /// Grants, tenants and public URLs (absent: deny everything but discovery).
    #[serde(default)]
    pub authorization: crate::authz::AuthorizationConfig,
    /// Per-identity rate limits, stream caps, the global in-flight cap (absent: none).
    #[serde(default)]
    pub rate_limits: Option<crate::ratelimit::RateLimitsConfig>,
    /// Request-body checks: size caps, strict parsing, Pod Security, field rules (absent:
    /// 3 MiB cap and strict parsing of every write, no Pod Security, no field rules).
    #[serde(default)]
    pub sanitize: Option<crate::sanitize::SanitizeConfig>,
    /// audit.k8s.io/v1 events: policy file, signing key, sinks (absent: no audit).
    #[serde(default)]
    pub audit: Option<crate::audit::config::AuditConfig>,
    #[serde(default)]
    pub shutdown: Shutdown,
    /// OpenTelemetry traces (absent: off; see `telemetry::config`).
    #[serde(default)]
    pub tracing: Option<crate::telemetry::config::TracingConfig>,
    /// The proxy's log lines (absent: text).
    #[serde(default)]
    pub log: crate::telemetry::config::LogConfig,
    /// Explicit acknowledgements for options that weaken a guard (DESIGN decision 10).
    #[serde(default)]
    pub dangerous: Dangerous,
}

/// `dangerous:` — each key allows one kind of weakening; without it, the weakening option is a
/// config error naming this key. Every one that is used is logged as a warning at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dangerous {
    /// Allows `sanitize.binary_bodies: forward-unjudged` and `sanitize.resources[].inspect:
    /// false` / `binary_bodies: forward-unjudged`: bodies forwarded without strict parsing.
    #[serde(default)]
    pub allow_uninspected_bodies: bool,
    /// Allows audit sinks with `overflow: drop`: events may be lost under load.
    #[serde(default)]
    pub allow_audit_event_loss: bool,
    /// Allows `rate_limits.redis.on_backend_error: allow`: no limit while Redis is down.
    #[serde(default)]
    pub allow_unlimited_on_backend_error: bool,
    /// Allows `allow_system_identities: true` on client certificates or a JWT issuer: names
    /// such as `system:masters` reach the API server, which skips RBAC for that group.
    #[serde(default)]
    pub allow_system_identities: bool,
}

/// `listen:` — the client-facing TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `host:port`, e.g. `0.0.0.0:6443`.
    pub address: String,
    pub tls: ServerTls,
    /// Time allowed for a TLS handshake (default `10s`).
    #[serde(default)]
    pub handshake_timeout: Option<String>,
    /// Time after the handshake for the HTTP/2 preface or the first request (default `10s`).
    #[serde(default)]
    pub preface_timeout: Option<String>,
    /// Time allowed for an HTTP/1.1 request head, the slowloris guard (default `30s`).
    #[serde(default)]
    pub header_read_timeout: Option<String>,
    /// A connection with no open request is closed after this (default `90s`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Concurrent HTTP/2 streams per client connection (default 250, at least 100).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Largest request head in bytes, HTTP/1.1 and HTTP/2 (default 65536).
    #[serde(default)]
    pub max_header_bytes: Option<u32>,
    /// Open client connections on the listener (default 10000).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Open client connections from one source address, IPv6 by /64 (default 1000).
    #[serde(default)]
    pub max_connections_per_source: Option<usize>,
    /// Keep the client's own `X-Forwarded-For` entries and append the peer (default false:
    /// they are dropped and only the real peer address is sent).
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

/// Certificate and key files of a TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `admin:` — health and metrics, plain HTTP, loopback by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` (default `127.0.0.1:9090`).
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// How recently the upstream must have answered for `/readyz` to pass (default `30s`).
    #[serde(default)]
    pub ready_window: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: default_admin_address(),
            ready_window: None,
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:9090".to_string()
}

/// `upstream:` — the Kubernetes API server and the proxy's own credentials toward it.
/// Exactly one of `url`, `in_cluster`, `kubeconfig` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `https://host:port` of the API server.
    #[serde(default)]
    pub url: Option<String>,
    /// Several API servers of one control plane (HA), instead of `url`: each gets its own
    /// connection pool, health probe and circuit breaker; same `ca_file` and `credentials`.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// PEM bundle of CAs that sign the API server's certificate (with `url`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the API server's certificate against, when it differs from the URL host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// The proxy's own credentials (with `url`).
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Use the pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token and ca.crt.
    #[serde(default)]
    pub in_cluster: bool,
    /// Use a kubeconfig file's cluster and user.
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigRef>,
    /// TCP + TLS connect timeout (default `5s`).
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Time to the response head for requests that are not long-running (default `60s`, as
    /// the API server's `--request-timeout`). Long-running requests have none.
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// How often the upstream's `/readyz` is probed for the proxy's own readiness (default `10s`).
    #[serde(default)]
    pub health_interval: Option<String>,
    /// How often a bearer-token file is checked for a rotated token (default `10s`).
    #[serde(default)]
    pub token_reload_interval: Option<String>,
    /// TLS handshake toward the upstream, after the TCP connect (default `5s`).
    #[serde(default)]
    pub tls_handshake_timeout: Option<String>,
    /// The most a client's `?timeout=` may ask for (default: `request_timeout`).
    #[serde(default)]
    pub max_request_timeout: Option<String>,
    /// To the API server's answer to an upgrade (exec, attach, port-forward, a `proxy`
    /// WebSocket: the 101 or a refusal; default `2m`, the kubelet's default runtime request
    /// timeout).
    #[serde(default)]
    pub upgrade_timeout: Option<String>,
    /// End a long-running response (watch, `logs -f`) that carried no bytes for this long
    /// (default: none, streams live as long as their peers).
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
    /// Reset a response stream whose client read nothing for this long while the proxy held
    /// its full buffer (default `60s`).
    #[serde(default)]
    pub stalled_stream_timeout: Option<String>,
    /// HTTP/2 streams one upstream connection carries before another is opened (default
    /// `100`, what kube-apiserver advertises in SETTINGS_MAX_CONCURRENT_STREAMS).
    #[serde(default)]
    pub streams_per_connection: Option<u32>,
    /// Upstream HTTP/2 connections per endpoint (default `16`); past them a request that
    /// finds every stream taken is refused with 503 + Retry-After.
    #[serde(default)]
    pub max_connections_per_endpoint: Option<u32>,
    /// Close an upstream connection past the first after it carried no stream for this long
    /// (default `90s`, client-go's `IdleConnTimeout`).
    #[serde(default)]
    pub idle_connection_timeout: Option<String>,
    /// The circuit breaker of each endpoint (on by default).
    #[serde(default)]
    pub breaker: Option<Breaker>,
}

/// `upstream.breaker:` — when an endpoint is considered down and refused without a network
/// attempt, and when it is tried again.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Open after this many failures in a row (default `5`).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Open when failures / requests within `window` reach this ratio (default `0.5`) …
    #[serde(default)]
    pub failure_ratio: Option<f64>,
    /// … once at least this many requests were seen in the window (default `20`).
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// The sliding window of the ratio (default `10s`).
    #[serde(default)]
    pub window: Option<String>,
    /// How long an open breaker refuses before the next probe / trial request (default `5s`).
    #[serde(default)]
    pub open_for: Option<String>,
    /// Trial requests admitted at once while half-open (default `1`).
    #[serde(default)]
    pub half_open_requests: Option<u32>,
}

/// The proxy's credentials toward the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// A file holding a bearer token; re-read when it changes (projected tokens rotate).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A client certificate (PEM) for mTLS to the upstream.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// `upstream.kubeconfig:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigRef {
    pub path: PathBuf,
    /// Context to use (default: the file's `current-context`).
    #[serde(default)]
    pub context: Option<String>,
}

/// `authentication:` — who the caller is. At least one method must be configured. A request
/// with a verified client certificate is that certificate's identity (as kube-apiserver, x509
/// before tokens); otherwise its `Authorization: Bearer` token must verify against one of the
/// `jwt` issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    #[serde(default)]
    pub client_certificates: Option<ClientCertificates>,
    /// JWT issuers (see `authn::jwt::config` and config/portcullis.yaml).
    #[serde(default)]
    pub jwt: Vec<crate::authn::jwt::IssuerConfig>,
    #[serde(default)]
    pub token_cache: Option<TokenCache>,
}

/// `authentication.token_cache:` — verified tokens kept to skip signature checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCache {
    /// Most tokens kept (default 10000; 0 disables the cache).
    #[serde(default)]
    pub max_entries: Option<usize>,
    /// Longest an entry is trusted, whatever its `exp` (default `10m`).
    #[serde(default)]
    pub max_ttl: Option<String>,
}

/// `authentication.client_certificates:` — mTLS identity, as Kubernetes x509 auth does it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificates {
    /// PEM bundles of CAs whose client certificates are accepted.
    pub ca_files: Vec<PathBuf>,
    /// PEM CRLs; when given, a client certificate must be covered by its issuer's CRL and not be
    /// listed in it (unknown revocation status is refused).
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// `required` (handshake fails without a valid certificate) or `optional` (requests
    /// without one get 401). Default `required`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Prepended to the certificate's CN to form the user name (default empty).
    #[serde(default)]
    pub username_prefix: String,
    /// Prepended to each O to form a group name (default empty).
    #[serde(default)]
    pub groups_prefix: String,
    /// Users or groups beginning with `system:` are refused unless this is true.
    #[serde(default)]
    pub allow_system_identities: bool,
}

/// `shutdown:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// How long in-flight requests may finish after SIGTERM/SIGINT (default `30s`).
    #[serde(default)]
    pub grace: Option<String>,
    /// How long the proxy keeps accepting after SIGTERM/SIGINT, `/readyz` failing, before the
    /// drain begins (default `0s`), so load balancers stop sending first.
    #[serde(default)]
    pub delay: Option<String>,
}
