//! The reload half of `Runtime::build` (`app.rs`): what a new runtime takes over from the one
//! it replaces instead of building it again, and why.
//!
//! - **Metrics registry**: one for the life of the process, so counters do not restart; every
//!   new object counts into the families registered at start.
//! - **Audit sinks**: a file sink owns its file, hash chain and checkpoints, so two cannot
//!   run side by side; the sinks stay, the policy is the new one. Sink changes are refused by
//!   `fixed` (restart to apply); a webhook sink's receiver, read from its kubeconfig, is
//!   re-pointed by `reloader` after the swap when it changed.
//! - **Tracer**: kept while `tracing:` is unchanged (the CA file's bytes included), so spans
//!   keep one exporter and its connection; a changed section builds a new one — a rotated
//!   collector CA must not hold back a reload that revokes access.
//! - **Upstream** (pools, breakers, health): kept when its settings — including the CA and
//!   client certificate read from disk — are unchanged, so a reload opens no new connections
//!   and readiness carries over; the token file is re-read into the same credentials
//!   (`reloader`). Otherwise a new one is built, counting into the same series, and probed
//!   before the swap.
//! - **Rate limits**: `RateLimiter::reconfigured` (buckets of unchanged quotas, open-stream
//!   counts).
//! - **JWT key stores** of issuers whose remote key source is fetched as before
//!   (`JwtAuthenticator::adopt_key_stores`, in `app.rs`): the keys they hold, so the reload
//!   needs no fetch for them and an identity provider that is down blocks no unrelated reload.
//!
//! Everything else — listener TLS (certificate, client CAs, CRLs), the other JWT issuers and
//! keys (local key files are read again), grants and tenants, sanitize rules, the audit policy
//! — is the new build's.

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::{
    authn::jwt::JwtAuthenticator,
    config::Config,
    problems::BuildProblems,
    stack::Runtime,
    upstream::{config::UpstreamConfig, Credentials, Upstream},
};

/// The runtime for `config` beside `prev`; `tls` and `jwt` were built by the caller (the same
/// code as at start).
pub(crate) fn rebuild(
    config: &Config,
    prev: &Runtime,
    (server_tls, client_verifier): crate::server::tls::ListenerTls,
    jwt: Option<Arc<JwtAuthenticator>>,
) -> Result<Runtime> {
    // `fixed` refuses these before the build; a caller that skipped it must not half-apply.
    let limiter = match (&config.rate_limits, &prev.limiter) {
        (Some(settings), Some(old)) => Some(old.reconfigured(settings.clone())),
        (None, None) => None,
        _ => bail!("rate_limits: adding or removing the section needs a restart"),
    };
    let audit = match (&config.audit, &prev.audit) {
        (Some(settings), Some(old)) => {
            if !super::fixed::same_sinks(Some(settings), prev.config.audit.as_ref()) {
                bail!("audit.sinks: changing the sinks needs a restart");
            }
            Some(Arc::new(crate::audit::Audit {
                policy: settings.policy.clone(),
                auditor: old.auditor.clone(),
                sessions: settings.sessions.clone(),
            }))
        }
        (None, None) => None,
        _ => bail!("audit: adding or removing the section needs a restart"),
    };
    let (upstream, credentials) = if same_upstream(&prev.config.upstream, &config.upstream) {
        (prev.upstream.clone(), prev.credentials.clone())
    } else {
        let credentials = Credentials::load(&config.upstream.token)
            .map_err(|e| BuildProblems::at("upstream", e))?;
        let upstream = Upstream::with_metrics(
            &config.upstream,
            credentials.clone(),
            prev.upstream.metrics.clone(),
        )
        .map_err(|e| BuildProblems::at("upstream", e))?;
        (Arc::new(upstream), credentials)
    };
    // A new self-test for the new upstream and rights, reporting into the same gauge series.
    let selftest = Arc::new(prev.selftest.renewed(
        upstream.clone(),
        crate::upstream::selftest::rights_for(config),
        config.upstream.health_interval,
    ));
    let tracing = if format!("{:?}", prev.config.tracing) == format!("{:?}", config.tracing) {
        prev.tracing.clone()
    } else {
        match &config.tracing {
            None => None,
            Some(settings) => Some(Arc::new(
                crate::telemetry::Tracing::start(settings)
                    .map_err(|e| BuildProblems::at("tracing", e))?,
            )),
        }
    };
    crate::app::warn_dangerous(config);
    let mut config = config.clone();
    // The listener (and its series) outlives the configuration.
    config.serve.metrics = prev.config.serve.metrics.clone();
    Ok(Runtime {
        authorizer: config.authorization.clone(),
        sanitizer: config.sanitize.clone(),
        config: Arc::new(config),
        upstream,
        credentials,
        selftest,
        metrics: prev.metrics.clone(),
        audit,
        limiter,
        jwt,
        server_tls,
        client_verifier,
        tracing,
    })
}

/// Whether two upstream settings describe the same connections: every field, the CA and
/// client certificate as read from disk, and the client key's bytes (its `Debug` hides them).
pub(crate) fn same_upstream(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    let key = |c: &UpstreamConfig| {
        c.client_identity
            .as_ref()
            .map(|(_, k)| k.secret_der().to_vec())
    };
    format!("{a:?}") == format!("{b:?}") && key(a) == key(b)
}
