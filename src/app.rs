//! `run(config, listeners, shutdown)`: what `serve`, `demo` and the tests all call. It builds
//! the live objects from the plain `Config` with [`Runtime::build`] (the one place that does),
//! starts their background tasks, and serves.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use tower::Service;

use crate::{
    config::{Config, UpstreamToken},
    server::{self, admin::Admin},
    shutdown::Shutdown,
    stack::{self, Runtime},
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
        crate::server::tls::install_crypto_provider();
        let server_tls = config.tls.server_config().context("listen.tls")?;
        let jwt = match &config.jwt {
            None => None,
            Some(settings) => Some(Arc::new(settings.build()?)),
        };
        let limiter = config
            .rate_limits
            .clone()
            .map(crate::ratelimit::RateLimiter::from_settings);
        let credentials = Credentials::load(&config.upstream.token)?;
        let upstream = Arc::new(Upstream::new(&config.upstream, credentials.clone())?);
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
            tracing,
        })
    }
}

/// Each `dangerous:` acknowledgement in use, logged at start.
fn warn_dangerous(config: &Config) {
    for (on, what) in [
        (config.dangerous.allow_uninspected_bodies, "dangerous.allow_uninspected_bodies: some write bodies may be forwarded without strict parsing"),
        (config.dangerous.allow_audit_event_loss, "dangerous.allow_audit_event_loss: audit events may be dropped under load"),
        (config.dangerous.allow_unlimited_on_backend_error, "dangerous.allow_unlimited_on_backend_error: no rate limit while Redis is down"),
    ] {
        if on {
            tracing::warn!("{what}");
        }
    }
}

/// Serve until `shutdown` fires, then drain in-flight requests for the configured grace.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<()> {
    let rt = Runtime::build(&config)?;
    let config = rt.config.clone();
    if let UpstreamToken::File(path) = &config.upstream.token {
        rt.credentials.spawn_reloader(
            path.clone(),
            config.upstream.token_reload_interval,
            shutdown.clone(),
        );
    }
    if let Some(limiter) = &rt.limiter {
        limiter.spawn_maintenance(shutdown.clone());
    }
    let selftest = rt.selftest.clone();
    spawn_probe(
        rt.upstream.clone(),
        config.upstream.health_interval,
        &shutdown,
        selftest.clone(),
    );

    // JWT keys: load now, then refresh on each issuer's interval (and on unknown kids, inside
    // the verifier). A failed first load is retried by the refresh task; readiness reports it.
    if let Some(jwt) = &rt.jwt {
        for (issuer, err) in jwt.refresh_all().await {
            tracing::warn!(%issuer, %err, "JWT keys not loaded yet");
        }
        jwt.spawn_refresh(shutdown.clone());
    }

    let admin = Arc::new(Admin {
        metrics: rt.metrics.clone(),
        upstream: rt.upstream.clone(),
        jwt: rt.jwt.clone(),
        ready_window: config.ready_window,
        selftest: Some(selftest),
    });
    let admin_task = tokio::spawn(server::serve_plain(
        listeners.admin,
        // Same limits, but its connections are not the proxy listener's series.
        server::ServeOptions {
            metrics: Default::default(),
            ..config.serve.clone()
        },
        move |req, _conn| {
            let admin = admin.clone();
            async move { admin.handle(&req).await }
        },
        shutdown.clone(),
    ));

    let proxy = stack::build(&rt);
    let audit_for_shutdown = rt.audit.clone();
    let tracing_for_shutdown = rt.tracing.clone();
    tracing::info!(summary = %config.summary(), "serving");
    server::serve(
        listeners.proxy,
        rt.server_tls.clone(),
        config.serve.clone(),
        move |mut req, conn| {
            req.extensions_mut().insert(conn);
            // A body a refusal leaves unread is drained, so the client sees the refusal.
            let req = req.map(crate::drain::DrainOnDrop::new);
            let mut proxy = proxy.clone();
            async move {
                match proxy.call(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        },
        shutdown,
    )
    .await;
    let _ = admin_task.await;
    if let Some(a) = &audit_for_shutdown {
        // Queued events, final checkpoints, sync.
        a.auditor.shutdown(std::time::Duration::from_secs(10)).await;
    }
    if let Some(t) = tracing_for_shutdown {
        // Export the spans still buffered; the SDK's shutdown blocks its caller.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Readiness: ask the upstream whether the proxy may impersonate (the self-test), then probe
/// its /readyz now and on an interval.
fn spawn_probe(
    upstream: Arc<Upstream>,
    interval: std::time::Duration,
    shutdown: &Shutdown,
    selftest: Arc<crate::upstream::selftest::SelfTest>,
) {
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        // Bounded: a silent upstream must not hold back the readiness probe.
        tokio::select! {
            _ = tokio::time::timeout(std::time::Duration::from_secs(5), selftest.run()) => {}
            _ = stop.wait() => return,
        }
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => { upstream.probe().await; }
                _ = stop.wait() => return,
            }
        }
    });
}
