//! `run(config, listeners, shutdown)`: what `serve`, `demo` and the tests all call. It builds
//! the live objects from the plain `Config` with [`Runtime::build`] (the one place that does;
//! a reload rebuilds through the same code, [`Runtime::rebuild`]), puts them in force
//! (`crate::reload::Live`, which starts their background tasks), and serves.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::{
    config::Config,
    problems::BuildProblems,
    server::{self, admin::Admin},
    shutdown::Shutdown,
    stack::Runtime,
    telemetry::Metrics,
    upstream::{Credentials, Upstream},
};

/// Bound sockets for the proxy and the admin endpoints.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Bind the addresses named in the config.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        Ok(Listeners {
            proxy: TcpListener::bind(config.listen_addr)
                .await
                .with_context(|| format!("listen.address {}: cannot bind", config.listen_addr))?,
            admin: TcpListener::bind(config.admin_addr)
                .await
                .with_context(|| format!("admin.address {}: cannot bind", config.admin_addr))?,
        })
    }
}

impl Runtime {
    /// Build the live objects from a validated config: the listener's rustls config, the JWT
    /// authenticator, the rate limiter, the upstream client and its credentials, the metrics
    /// registry, the audit sinks (started). No background task is spawned here; `run` starts
    /// them. A failure names the key path it comes from.
    pub fn build(config: &Config) -> Result<Runtime> {
        Self::build_next(config, None)
    }

    /// The same build for a configuration reload, beside `prev` (which keeps serving the
    /// requests that hold it). Everything is built anew from `config` — certificates, CA
    /// bundles, CRLs, JWKS files, the audit policy and the upstream token re-read — except what
    /// must outlive one configuration (`crate::reload::carry`): the metrics registry, the audit
    /// sinks, the tracer, the upstream when its settings did not change, the rate-limit state
    /// whose quota did not change, and the key store of a remote JWT issuer fetched as before. Settings that cannot change live are refused before
    /// this (`crate::reload::fixed`).
    pub fn rebuild(config: &Config, prev: &Runtime) -> Result<Runtime> {
        Self::build_next(config, Some(prev))
    }

    fn build_next(config: &Config, prev: Option<&Runtime>) -> Result<Runtime> {
        crate::server::tls::install_crypto_provider();
        let (server_tls, client_verifier) = config
            .tls
            .listener()
            .map_err(|e| BuildProblems::at("listen.tls", e))?;
        let jwt = match &config.jwt {
            None => None,
            Some(settings) => {
                let mut jwt =
                    crate::authn::jwt::config::authenticator(settings).map_err(BuildProblems)?;
                if let (Some(prev_jwt), Some(prev_settings)) = (
                    prev.and_then(|p| p.jwt.as_deref()),
                    prev.and_then(|p| p.config.jwt.as_ref()),
                ) {
                    jwt.adopt_key_stores(prev_jwt, |url| {
                        settings.fetches_keys_as(prev_settings, url)
                    });
                }
                Some(Arc::new(jwt))
            }
        };
        if let Some(prev) = prev {
            return crate::reload::carry::rebuild(config, prev, (server_tls, client_verifier), jwt);
        }
        let limiter = config
            .rate_limits
            .clone()
            .map(crate::ratelimit::RateLimiter::from_settings);
        let credentials = Credentials::load(&config.upstream.token)
            .map_err(|e| BuildProblems::at("upstream", e))?;
        let upstream = Arc::new(
            Upstream::new(&config.upstream, credentials.clone())
                .map_err(|e| BuildProblems::at("upstream", e))?,
        );
        let mut metrics = Metrics::new();
        upstream.register_metrics(&mut metrics.registry);
        let selftest = Arc::new(crate::upstream::selftest::SelfTest::new(
            upstream.clone(),
            crate::upstream::selftest::rights_for(config),
            config.upstream.health_interval,
            &mut metrics.registry,
        ));
        if let Some(limiter) = &limiter {
            limiter.metrics().register(&mut metrics.registry);
        }
        warn_dangerous(config);
        let tracing = match &config.tracing {
            None => None,
            Some(settings) => Some(Arc::new(crate::telemetry::Tracing::start(settings)?)),
        };
        let audit = match &config.audit {
            None => None,
            Some(settings) => {
                let auditor = Arc::new(crate::audit::Auditor::start(settings.sink_specs())?);
                crate::audit::metrics::register(&mut metrics.registry, &auditor);
                Some(Arc::new(crate::audit::Audit {
                    policy: settings.policy.clone(),
                    auditor,
                    sessions: settings.sessions.clone(),
                }))
            }
        };
        // The client-facing listener's connection series, fresh for each runtime.
        let mut config = config.clone();
        config.serve.metrics = crate::server::ListenerMetrics::default();
        config.serve.metrics.register(&mut metrics.registry);
        Ok(Runtime {
            authorizer: config.authorization.clone(),
            sanitizer: config.sanitize.clone(),
            config: Arc::new(config),
            upstream,
            credentials,
            selftest,
            metrics: Arc::new(metrics),
            audit,
            limiter,
            jwt,
            server_tls,
            client_verifier,
            tracing,
        })
    }
}

/// Each `dangerous:` acknowledgement in use, a grant whose wildcards reach impersonation, a CA
/// outside its validity period, a CRL past due: logged at start (and at each reload).
pub(crate) fn warn_dangerous(config: &Config) {
    for (on, what) in [
        (config.dangerous.allow_uninspected_bodies, "dangerous.allow_uninspected_bodies: some write bodies may be forwarded without strict parsing"),
        (config.dangerous.allow_audit_event_loss, "dangerous.allow_audit_event_loss: audit events may be dropped under load"),
        (config.dangerous.allow_unlimited_on_backend_error, "dangerous.allow_unlimited_on_backend_error: no rate limit while Redis is down"),
        (config.dangerous.allow_system_identities, "dangerous.allow_system_identities: identities named system:… may reach the API server"),
    ] {
        if on {
            tracing::warn!("{what}");
        }
    }
    for rule in config.authorization.wildcard_impersonation() {
        tracing::warn!("{rule}");
    }
    if let Some(jwt) = &config.jwt {
        let x509 = config
            .x509
            .as_ref()
            .map(|x| (x.username_prefix.as_str(), x.groups_prefix.as_str()));
        for shared in jwt.shared_prefixes(x509) {
            tracing::warn!("{shared}");
        }
    }
    if let crate::server::tls::ClientAuth::Optional(c)
    | crate::server::tls::ClientAuth::Required(c) = &config.tls.client_auth
    {
        crate::server::anchors::warn_out_of_period(
            "authentication.client_certificates.ca_files",
            &c.cas,
        );
    }
    crate::server::anchors::warn_out_of_period(
        "upstream (ca_file, the kubeconfig's certificate-authority, or the in-cluster ca.crt)",
        &config.upstream.ca,
    );
    if let Some((not_before, not_after)) = config.tls.leaf_out_of_period(crate::authn::x509::now())
    {
        tracing::warn!(
            not_before,
            not_after,
            "listen.tls.cert_file: the serving certificate is outside its validity period; clients refuse every handshake until it is renewed"
        );
    }
    let due = config.tls.client_auth.crl_due();
    if due < time::OffsetDateTime::now_utc().unix_timestamp() {
        tracing::warn!(
            next_update = due,
            "authentication.client_certificates.crl_files: a CRL is past its nextUpdate; the client certificates it covers are refused until a fresh one is loaded"
        );
    }
}

/// Serve until `shutdown` fires, then drain in-flight requests for the configured grace.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<()> {
    run_with(config, listeners, shutdown, None).await
}

/// [`run`], reloading the configuration as `reload` says (`crate::reload`; None: never).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
    reload: Option<crate::reload::Options>,
) -> Result<()> {
    // The signal fails `/readyz` at once; the listeners close and the drain begins
    // `shutdown.delay` later (kube-apiserver's `--shutdown-delay-duration`): load balancers
    // and kube-proxy stop sending to this replica before it refuses connections.
    let signal = shutdown;
    let shutdown = delayed(signal.clone(), config.serve.shutdown_delay);
    let rt = Runtime::build(&config)?;

    // JWT keys: load now, then refresh on each issuer's interval (and on unknown kids, inside
    // the verifier). A failed first load is retried by the refresh task; readiness reports it.
    if let Some(jwt) = &rt.jwt {
        for (issuer, err) in jwt.refresh_all().await {
            tracing::warn!(%issuer, %err, "JWT keys not loaded yet");
        }
    }
    // The runtime in force, swapped whole by a reload; starts its background tasks.
    let live = Arc::new(crate::reload::Live::new(rt, shutdown.clone()));
    let config = live.config();
    if let Some(opts) = reload {
        crate::reload::spawn(live.clone(), opts, shutdown.clone());
    }

    // The admin listener outlives the drain: `/metrics` shows the streams and audit backlog
    // still draining, `/readyz` says 503 throughout. It stops once the audit sinks have.
    let (admin_stop, admin_shutdown) = crate::shutdown::channel();
    let admin_live = live.clone();
    let admin_task = tokio::spawn(server::serve_plain(
        listeners.admin,
        // Same limits, but its connections are not the proxy listener's series.
        server::ServeOptions {
            metrics: Default::default(),
            ..config.serve.clone()
        },
        move |req, _conn| {
            let admin = admin_of(&admin_live.current().rt, signal.clone());
            async move { admin.handle(&req).await }
        },
        admin_shutdown,
    ));

    tracing::info!(summary = %config.summary(), "serving");
    let proxy_live = live.clone();
    let drained = server::serve_live(
        listeners.proxy,
        live.tls(),
        config.serve.clone(),
        move |mut req, conn| {
            req.extensions_mut().insert(conn);
            // A body a refusal leaves unread is drained, so the client sees the refusal —
            // unless the client has not started sending it (`Expect: 100-continue`).
            let awaits_continue = req.version() == http::Version::HTTP_11
                && req
                    .headers()
                    .get(http::header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let req = req.map(|body| match awaits_continue {
                true => crate::drain::DrainOnDrop::awaiting_continue(body),
                false => crate::drain::DrainOnDrop::new(body),
            });
            // The configuration in force now serves this request to its end.
            let fut = proxy_live.call(req);
            async move {
                match fut.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        },
        shutdown,
    )
    .await;
    // Carried across reloads, so the current generation holds the ones started at start.
    let current = live.current();
    if let Some(a) = &current.rt.audit {
        // Queued events, final checkpoints, sync.
        a.auditor
            .shutdown_after_drain(std::time::Duration::from_secs(10), drained)
            .await;
    }
    if let Some(t) = current.rt.tracing.clone() {
        // Export the spans still buffered; the SDK's shutdown blocks its caller.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    admin_stop.fire();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// `signal`, fired `delay` after it fires (at once without a delay).
fn delayed(signal: Shutdown, delay: std::time::Duration) -> Shutdown {
    if delay.is_zero() {
        return signal;
    }
    let (trigger, delayed) = crate::shutdown::channel();
    tokio::spawn(async move {
        let mut signal = signal;
        signal.wait().await;
        tracing::info!(
            ?delay,
            "shutting down: /readyz fails; still accepting until the delay ends"
        );
        tokio::time::sleep(delay).await;
        trigger.fire();
    });
    delayed
}

/// The admin endpoints over the runtime in force; `/readyz` fails once `terminating` fired.
fn admin_of(rt: &Runtime, terminating: Shutdown) -> Admin {
    Admin {
        metrics: rt.metrics.clone(),
        upstream: rt.upstream.clone(),
        jwt: rt.jwt.clone(),
        client_certificates: !matches!(
            rt.config.tls.client_auth,
            crate::server::tls::ClientAuth::None
        ),
        ready_window: rt.config.ready_window,
        selftest: Some(rt.selftest.clone()),
        audit: rt.audit.as_ref().map(|a| a.auditor.clone()),
        terminating,
    }
}
