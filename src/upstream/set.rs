//! The upstream as a whole: one or more endpoints (API servers of one control plane), the
//! settings every request to them shares, and which endpoint a new request tries first.
//!
//! Order of preference for a new request: endpoints whose breaker is closed and whose last
//! `/readyz` probe did not fail, taken round-robin; then the others in configured order (a
//! half-open one admits its trial requests; an open one refuses without a network attempt).
//! Ready (for the admin `/readyz`) while at least one endpoint answered within the readiness
//! window and its breaker is not open.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use prometheus_client::registry::Registry;

use super::{client::Endpoint, credentials::Credentials, metrics::UpstreamMetrics, pump::Budgets};
use crate::upstream::config::UpstreamConfig;

/// Everything the forwarder needs to reach the upstream.
pub struct Upstream {
    endpoints: Vec<Arc<Endpoint>>,
    /// To the response head when the client gives no `?timeout=`.
    pub(crate) request_timeout: Duration,
    /// The cap on a client's `?timeout=`.
    pub(crate) max_request_timeout: Duration,
    /// To the answer to an upgrade.
    pub(crate) upgrade_timeout: Duration,
    /// A long-running response that carries nothing for this long is ended.
    pub(crate) stream_idle_timeout: Option<Duration>,
    /// A response whose client read nothing for this long, its buffer full, is reset.
    pub(crate) stalled_stream_timeout: Duration,
    /// Bytes buffered per identity across its responses (`pump.rs`).
    pub(crate) budgets: Budgets,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) metrics: UpstreamMetrics,
    next: AtomicUsize,
    /// Whether this upstream serves requests (and so owns its endpoints' breaker gauges).
    in_service: Arc<AtomicBool>,
}

impl Upstream {
    /// One pool, breaker and health record per configured endpoint.
    pub fn new(cfg: &UpstreamConfig, credentials: Arc<Credentials>) -> Result<Upstream> {
        Self::with_metrics(cfg, credentials, UpstreamMetrics::default())
    }

    /// As `new`, counting into `metrics` (a configuration reload keeps the registered series).
    pub fn with_metrics(
        cfg: &UpstreamConfig,
        credentials: Arc<Credentials>,
        metrics: UpstreamMetrics,
    ) -> Result<Upstream> {
        let in_service = Arc::new(AtomicBool::new(false));
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|base| Endpoint::new(cfg, base, credentials.clone(), &metrics, in_service.clone()))
            .collect::<Result<Vec<_>>>()?;
        anyhow::ensure!(!endpoints.is_empty(), "upstream has no endpoint");
        Ok(Upstream {
            endpoints,
            request_timeout: cfg.request_timeout,
            max_request_timeout: cfg.max_request_timeout,
            upgrade_timeout: cfg.upgrade_timeout,
            stream_idle_timeout: cfg.stream_idle_timeout,
            stalled_stream_timeout: cfg.stalled_stream_timeout,
            budgets: Budgets::default(),
            credentials,
            metrics,
            next: AtomicUsize::new(0),
            in_service,
        })
    }

    /// Put this upstream in service (`on`: its breakers' states go to the
    /// `portcullis_upstream_breaker_state` gauge, now and at each transition) or out of it (a
    /// reload replaced it; its breakers, still finishing requests, no longer write the gauge).
    /// Until then — a reload's candidate — it writes no gauge.
    pub fn set_in_service(&self, on: bool) {
        self.in_service.store(on, Ordering::SeqCst);
        // Under each breaker's lock, which its transition hook also runs under: a transition
        // racing this call either sees the new flag or finished before the state is read —
        // so the gauge never ends on a state read before a transition (on), and no hook that
        // read the old flag writes after the next upstream published (off).
        let now = Instant::now();
        for e in &self.endpoints {
            e.breaker.with_state(now, |state| {
                if on {
                    self.metrics.publish_state(&e.name, state);
                }
            });
        }
    }

    /// Put the upstream's series (breaker state, transitions, throttling, fail-overs) in
    /// `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// The endpoints in configured order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoints in the order a new request tries them (see the module doc).
    pub fn candidates(&self) -> Vec<Arc<Endpoint>> {
        let now = Instant::now();
        let n = self.endpoints.len();
        if n == 1 {
            return self.endpoints.clone();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated = (0..n).map(|i| &self.endpoints[(start + i) % n]);
        let (mut first, rest): (Vec<_>, Vec<_>) = rotated.partition(|e| e.preferred(now));
        let mut rest: Vec<_> = rest.into_iter().cloned().collect();
        // The others in configured order, so a recovering endpoint gets its trial first.
        rest.sort_by_key(|e| self.endpoints.iter().position(|x| Arc::ptr_eq(x, e)));
        let mut out: Vec<Arc<Endpoint>> = first.drain(..).cloned().collect();
        out.extend(rest);
        out
    }

    /// Probe every endpoint's `/readyz` (concurrently); whether any is ready.
    pub async fn probe(&self) -> bool {
        let probes = self.endpoints.iter().map(|e| e.probe());
        futures_util::future::join_all(probes)
            .await
            .into_iter()
            .any(|ok| ok)
    }

    /// Whether at least one endpoint answered within `window` and is not refused by its
    /// breaker.
    pub fn healthy_within(&self, window: Duration) -> bool {
        let now = Instant::now();
        self.endpoints.iter().any(|e| e.ready(window, now))
    }

    /// Why each endpoint is not ready (empty when at least one is).
    pub fn not_ready(&self, window: Duration) -> Vec<String> {
        let now = Instant::now();
        if self.endpoints.iter().any(|e| e.ready(window, now)) {
            return Vec::new();
        }
        self.endpoints
            .iter()
            .map(|e| {
                let state = e.breaker.state(now);
                if state == super::breaker::State::Open {
                    format!("upstream circuit breaker open: {}", e.name)
                } else {
                    format!("upstream has not answered within {window:?}: {}", e.name)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{
        breaker::{Outcome, State},
        config::UpstreamToken,
    };

    /// The gauge follows the breaker in service only: a reload's candidate for the same
    /// endpoint (refused, or not yet swapped in) leaves it alone, and once the candidate is
    /// in service the replaced upstream's late transitions do.
    #[test]
    fn only_the_upstream_in_service_writes_the_breaker_gauge() {
        let ca = crate::test_pki::Ca::new("ca").unwrap();
        let cfg = UpstreamConfig::new(
            vec!["https://127.0.0.1:1".parse().unwrap()],
            vec![ca.cert.cert_der.clone()],
        );
        let metrics = UpstreamMetrics::default();
        let gauge = || {
            metrics
                .breaker_state
                .get_or_create(&UpstreamMetrics::endpoint("https://127.0.0.1:1"))
                .get()
        };
        let creds = || Credentials::load(&UpstreamToken::None).unwrap();
        let open = |u: &Upstream| {
            let b = &u.endpoints()[0].breaker;
            while b.state(Instant::now()) == State::Closed {
                b.admit(Instant::now()).unwrap().record(Outcome::Failure);
            }
        };
        let serving = Upstream::with_metrics(&cfg, creds(), metrics.clone()).unwrap();
        serving.set_in_service(true);
        open(&serving);
        assert_eq!(gauge(), State::Open.gauge());

        let candidate = Upstream::with_metrics(&cfg, creds(), metrics.clone()).unwrap();
        assert_eq!(
            gauge(),
            State::Open.gauge(),
            "a candidate changed the gauge"
        );

        serving.set_in_service(false);
        candidate.set_in_service(true);
        assert_eq!(gauge(), State::Closed.gauge());
        open(&candidate);
        assert_eq!(gauge(), State::Open.gauge());
        // The replaced upstream's breaker closes late: the gauge stays the candidate's.
        serving.endpoints()[0].breaker.probed(true, Instant::now());
        assert_eq!(
            serving.endpoints()[0].breaker.state(Instant::now()),
            State::Closed
        );
        assert_eq!(gauge(), State::Open.gauge());
    }
}
