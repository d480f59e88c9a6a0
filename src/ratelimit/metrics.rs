//! Rate-limit metrics (prometheus-client), registered under `<prefix>_ratelimit_`.
//!
//! Closed label sets only — never a user, group, tenant or address:
//!
//! * `ratelimit_decisions_total{class, outcome}`: class ∈ reads, writes, watches, sessions,
//!   identity_in_flight, unauthenticated, in_flight (the global `max_in_flight`), backend;
//!   outcome ∈ allowed, rejected, shadow_rejected.
//! * `ratelimit_stream_permits{kind}` (gauge): kind ∈ watches, sessions, identity_in_flight
//!   (requests of identities with an `in_flight` cap).
//! * `ratelimit_backend_errors_total{kind}`: kind ∈ timeout, error.
//! * `ratelimit_degraded_decisions_total{mode}`: mode ∈ local, deny, allow — decisions taken
//!   without Redis.
//! * `ratelimit_evicted_keys_total`, `ratelimit_tracked_keys` (gauge).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::streams::{StreamKind, KINDS};

/// What a decision concerned (the `class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Reads = 0,
    Writes = 1,
    Watches = 2,
    Sessions = 3,
    Unauthenticated = 4,
    InFlight = 5,
    Backend = 6,
    IdentityInFlight = 7,
}

impl Class {
    pub const ALL: [Class; 8] = [
        Class::Reads,
        Class::Writes,
        Class::Watches,
        Class::Sessions,
        Class::Unauthenticated,
        Class::InFlight,
        Class::Backend,
        Class::IdentityInFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Reads => "reads",
            Class::Writes => "writes",
            Class::Watches => "watches",
            Class::Sessions => "sessions",
            Class::Unauthenticated => "unauthenticated",
            Class::InFlight => "in_flight",
            Class::Backend => "backend",
            Class::IdentityInFlight => "identity_in_flight",
        }
    }
}

/// The `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed = 0,
    Rejected = 1,
    ShadowRejected = 2,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Rejected, Outcome::ShadowRejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Rejected => "rejected",
            Outcome::ShadowRejected => "shadow_rejected",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub class: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

/// Every rate-limit series. Counters are pre-resolved so a decision costs one atomic add.
#[derive(Clone)]
pub struct Metrics {
    decisions_family: Family<DecisionLabels, Counter>,
    decisions: Vec<Counter>,
    streams_family: Family<KindLabels, Gauge>,
    pub(crate) stream_gauges: [Gauge; KINDS],
    backend_errors_family: Family<KindLabels, Counter>,
    pub(crate) backend_timeouts: Counter,
    pub(crate) backend_failures: Counter,
    degraded_family: Family<ModeLabels, Counter>,
    pub(crate) degraded: [Counter; 3],
    pub(crate) evicted: Counter,
    pub(crate) tracked: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let decisions_family = Family::<DecisionLabels, Counter>::default();
        let mut decisions = Vec::with_capacity(Class::ALL.len() * Outcome::ALL.len());
        for c in Class::ALL {
            for o in Outcome::ALL {
                decisions.push(
                    decisions_family
                        .get_or_create(&DecisionLabels {
                            class: c.as_str(),
                            outcome: o.as_str(),
                        })
                        .clone(),
                );
            }
        }
        let streams_family = Family::<KindLabels, Gauge>::default();
        let stream_gauges = StreamKind::ALL.map(|k| {
            streams_family
                .get_or_create(&KindLabels { kind: k.as_str() })
                .clone()
        });
        let backend_errors_family = Family::<KindLabels, Counter>::default();
        let backend_timeouts = backend_errors_family
            .get_or_create(&KindLabels { kind: "timeout" })
            .clone();
        let backend_failures = backend_errors_family
            .get_or_create(&KindLabels { kind: "error" })
            .clone();
        let degraded_family = Family::<ModeLabels, Counter>::default();
        let degraded = ["local", "deny", "allow"]
            .map(|mode| degraded_family.get_or_create(&ModeLabels { mode }).clone());
        Metrics {
            decisions_family,
            decisions,
            streams_family,
            stream_gauges,
            backend_errors_family,
            backend_timeouts,
            backend_failures,
            degraded_family,
            degraded,
            evicted: Counter::default(),
            tracked: Gauge::default(),
        }
    }

    /// Register every series in `registry` (under a `ratelimit` sub-prefix).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ratelimit");
        r.register(
            "decisions",
            "Rate-limit decisions by class and outcome",
            self.decisions_family.clone(),
        );
        r.register(
            "stream_permits",
            "Concurrency permits held now, by kind",
            self.streams_family.clone(),
        );
        r.register(
            "backend_errors",
            "Rate-limit backend (Redis) calls that failed, by kind",
            self.backend_errors_family.clone(),
        );
        r.register(
            "degraded_decisions",
            "Decisions taken without the backend, by on_backend_error mode",
            self.degraded_family.clone(),
        );
        r.register(
            "evicted_keys",
            "Idle bucket keys evicted",
            self.evicted.clone(),
        );
        r.register(
            "tracked_keys",
            "Bucket keys tracked in memory after the last eviction sweep",
            self.tracked.clone(),
        );
    }

    #[inline]
    pub fn decision(&self, class: Class, outcome: Outcome) {
        if let Some(c) = self
            .decisions
            .get(class as usize * Outcome::ALL.len() + outcome as usize)
        {
            c.inc();
        }
    }

    /// Current value of one decision counter (tests, benches).
    pub fn decisions(&self, class: Class, outcome: Outcome) -> u64 {
        self.decisions
            .get(class as usize * Outcome::ALL.len() + outcome as usize)
            .map_or(0, Counter::get)
    }

    /// Degraded decisions so far, by mode index (local, deny, allow).
    pub fn degraded(&self) -> [u64; 3] {
        self.degraded.clone().map(|c| c.get())
    }

    /// Backend errors so far (timeouts + other errors).
    pub fn backend_errors(&self) -> u64 {
        self.backend_timeouts.get() + self.backend_failures.get()
    }

    /// Stream permits held now, (watches, sessions).
    pub fn stream_permits(&self) -> (i64, i64) {
        (self.stream_gauges[0].get(), self.stream_gauges[1].get())
    }

    /// Per-identity in-flight places held now (identities with an `in_flight` cap).
    pub fn identity_in_flight(&self) -> i64 {
        self.stream_gauges[2].get()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.get()
    }
}
