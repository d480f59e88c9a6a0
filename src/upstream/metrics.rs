//! The upstream's own series, registered in the proxy's registry by `Runtime::build`:
//!
//! | series | labels | meaning |
//! |---|---|---|
//! | `portcullis_upstream_breaker_state` | endpoint | 0 closed, 1 open, 2 half-open |
//! | `portcullis_upstream_breaker_transitions_total` | endpoint, to | state changes |
//! | `portcullis_upstream_throttled_total` | endpoint | 429 answers of the API server (passed on, not a failure) |
//! | `portcullis_upstream_failovers_total` | endpoint | requests sent on to another endpoint after this one failed: a safe request after a connect or transport error, any request this endpoint could not be sent to |
//! | `portcullis_upstream_stalled_streams_total` | endpoint | responses reset because their client read nothing for `stalled_stream_timeout` |
//! | `portcullis_upstream_busy_total` | endpoint | requests that found every connection full at the connection cap |
//!
//! `endpoint` is a configured URL, so the label sets are closed. A reload that drops an
//! endpoint drops its series ([`UpstreamMetrics::forget`]): a breaker gauge left at "open"
//! for an API server no longer configured would keep an alert firing. A request the old
//! configuration is still finishing may count into a dropped counter again once (it comes
//! back from 0; Prometheus' `rate` reads that as a reset).

use std::sync::{
    atomic::{AtomicBool, AtomicI64, Ordering},
    Arc,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::breaker::{OnTransition, State};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub endpoint: String,
    pub to: &'static str,
}

/// The families; cheap to clone (they share their series).
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    pub breaker_state: Family<EndpointLabels, Gauge<i64, AtomicI64>>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub throttled: Family<EndpointLabels, Counter>,
    pub failovers: Family<EndpointLabels, Counter>,
    pub stalled: Family<EndpointLabels, Counter>,
    pub busy: Family<EndpointLabels, Counter>,
}

impl UpstreamMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_breaker_state",
            "Circuit breaker state per upstream endpoint: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
        registry.register(
            "upstream_breaker_transitions",
            "Circuit breaker state changes per upstream endpoint, by the state entered",
            self.transitions.clone(),
        );
        registry.register(
            "upstream_throttled",
            "429 answers of the upstream API server (passed on unchanged; not breaker failures)",
            self.throttled.clone(),
        );
        registry.register(
            "upstream_failovers",
            "Requests sent to another endpoint after this one failed (safe ones after a connect or transport error, any one that could not be sent)",
            self.failovers.clone(),
        );
        registry.register(
            "upstream_stalled_streams",
            "Responses reset because their client read nothing for upstream.stalled_stream_timeout",
            self.stalled.clone(),
        );
        registry.register(
            "upstream_busy",
            "Requests refused because every connection to this endpoint carried its maximum of streams",
            self.busy.clone(),
        );
    }

    /// Set `endpoint`'s breaker gauge to `state` (an upstream put in service publishes its
    /// breakers' states).
    pub fn publish_state(&self, endpoint: &str, state: State) {
        self.breaker_state
            .get_or_create(&Self::endpoint(endpoint))
            .set(state.gauge());
    }

    /// Drop every series of `endpoint` (a reload removed it from the configuration).
    pub fn forget(&self, endpoint: &str) {
        let labels = Self::endpoint(endpoint);
        self.breaker_state.remove(&labels);
        for family in [&self.throttled, &self.failovers, &self.stalled, &self.busy] {
            family.remove(&labels);
        }
        for to in [State::Closed, State::Open, State::HalfOpen] {
            self.transitions.remove(&TransitionLabels {
                endpoint: endpoint.to_owned(),
                to: to.name(),
            });
        }
    }

    pub fn endpoint(name: &str) -> EndpointLabels {
        EndpointLabels {
            endpoint: name.to_owned(),
        }
    }

    /// The breaker's transition hook for `endpoint`: gauge, counter, a log line. The gauge is
    /// written only while `in_service` is set ([`crate::upstream::Upstream::set_in_service`]):
    /// a reload builds a candidate upstream whose endpoints share the series, and a candidate
    /// that is refused — or the upstream a reload replaced — must not overwrite the state of
    /// the breaker actually serving requests.
    pub fn on_transition(&self, endpoint: &str, in_service: Arc<AtomicBool>) -> OnTransition {
        let this = Arc::new(self.clone());
        let name = endpoint.to_owned();
        Box::new(move |from: State, to: State| {
            if in_service.load(Ordering::SeqCst) {
                this.breaker_state
                    .get_or_create(&Self::endpoint(&name))
                    .set(to.gauge());
            }
            this.transitions
                .get_or_create(&TransitionLabels {
                    endpoint: name.clone(),
                    to: to.name(),
                })
                .inc();
            tracing::warn!(endpoint = %name, from = from.name(), to = to.name(), "upstream circuit breaker");
        })
    }
}
