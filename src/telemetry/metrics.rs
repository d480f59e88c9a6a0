//! Prometheus metrics (prometheus-client, text exposition on the admin listener).
//!
//! Label sets are closed: `verb_class` is one of read / write / watch / stream / nonresource
//! and `code` is the HTTP status for the statuses Kubernetes and this proxy answer with, its
//! class (`1xx` … `5xx`, `other`) for any other ([`code_label`]: a backend behind a `proxy`
//! subresource can answer any of 100–999), so no client input can grow the series count.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb_class: &'static str,
    pub code: &'static str,
}

/// The `code` label of a status (see the module doc).
pub fn code_label(status: u16) -> &'static str {
    macro_rules! known {
        ($($code:literal),*) => {
            match status {
                $($code => stringify!($code),)*
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            }
        };
    }
    known!(
        101, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408,
        409, 410, 411, 412, 413, 414, 415, 416, 417, 422, 426, 428, 429, 431, 500, 501, 502, 503,
        504, 505
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub verb_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The refusing stage (`crate::refusal::Refusal::rejected_by`, a closed set).
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// success / failure
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// enforce / warn / audit
    pub mode: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 18,
    ))
}

/// Every series the proxy exports. Later features register theirs in `registry` too.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ClassLabels, Histogram>,
    pub upstream_duration: Family<ClassLabels, Histogram>,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub upstream_healthy: Gauge<i64, AtomicI64>,
    /// Requests with Pod Security violations, by the mode that saw them.
    pub pod_security: Family<ModeLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    /// Configuration reloads (SIGHUP, file change), by result (`crate::reload`).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// 1 while the last reload was refused: the running configuration is not the file's, and
    /// what the refused edit changed (a removed grant, a revoked certificate) is not in force.
    pub config_reload_refused: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by verb class and HTTP status code",
            requests.clone(),
        );
        let request_duration = Family::<ClassLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Whole-request latency seen by the proxy (until the response body ended; long-running requests until the response head)",
            request_duration.clone(),
        );
        let upstream_duration = Family::<ClassLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response head",
            upstream_duration.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "in_flight_requests",
            "Requests being served now",
            in_flight.clone(),
        );
        let upstream_healthy = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "upstream_healthy",
            "1 if the upstream answered within the readiness window",
            upstream_healthy.clone(),
        );
        let pod_security = Family::<ModeLabels, Counter>::default();
        registry.register(
            "pod_security_violating_requests",
            "Writes that violated a Pod Security level, by mode (enforce: refused; warn: warned; audit: recorded)",
            pod_security.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests the proxy answered itself, by the stage that refused them",
            refusals.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result: success (swapped in) or failure (refused; the running configuration stays)",
            config_reloads.clone(),
        );
        let config_reload_refused = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "config_reload_refused",
            "1 while the last configuration reload was refused: the running configuration is older than the file, and nothing the refused edit changed is in force (alert when it stays 1)",
            config_reload_refused.clone(),
        );
        registry.register(
            "trace_export_failures",
            "Span batches the OTLP collector did not take (no answer within tracing.timeout, a connection or TLS failure, or a status other than 2xx)",
            super::otlp_client::EXPORT_FAILURES.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Sampled spans dropped before export because the exporter's queue was full (2048 spans waiting, or OTEL_BSP_MAX_QUEUE_SIZE: the collector is slow or unreachable)",
            super::span_queue::DROPPED.clone(),
        );
        Metrics {
            registry,
            config_reloads,
            config_reload_refused,
            pod_security,
            refusals,
            requests,
            request_duration,
            upstream_duration,
            in_flight,
            upstream_healthy,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
