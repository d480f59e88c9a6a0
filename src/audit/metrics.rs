//! Prometheus export of the audit sinks' counters (`SinkCounters`, plain atomics) and of the
//! health of the sinks written on this replica.
//!
//! [`register`] adds a collector to the proxy's registry that reads the atomics at scrape time,
//! one series per sink labelled `sink="<name>"` (names come from config, not from clients, so
//! the series count is fixed). With the registry's `portcullis` prefix this gives:
//!
//! | series | meaning |
//! |---|---|
//! | `portcullis_audit_events_written_total` | events written / delivered |
//! | `portcullis_audit_events_dropped_total` | batch queue full, `overflow: drop` |
//! | `portcullis_audit_events_failed_total` | could not be written / delivered |
//! | `portcullis_audit_fsyncs_total` | `fdatasync` calls of the file sink |
//! | `portcullis_audit_checkpoints_total` | signed checkpoints written |
//! | `portcullis_audit_rotations_total` | file rotations |
//! | `portcullis_audit_retries_total` | webhook retries |
//! | `portcullis_audit_events_truncated_total` | webhook events sent without their objects (`max_event_size`) |
//! | `portcullis_audit_sink_healthy` | gauge, file and stdout sinks only: 1, or 0 while the last event write failed (`sink/health.rs`; a webhook's health only holds back writes while it fails — its failures show in `portcullis_audit_events_failed_total`) |

use std::sync::{atomic::Ordering, Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use super::sink::{Auditor, SinkCounters};

#[derive(Debug)]
struct AuditCollector {
    sinks: Vec<(String, Arc<SinkCounters>)>,
    /// The sinks written on this replica (file, stdout): the ones with a health to export.
    local: Vec<(String, Arc<SinkCounters>)>,
}

type Getter = fn(&SinkCounters) -> u64;

const SERIES: [(&str, &str, Getter); 8] = [
    (
        "audit_events_written",
        "Audit events written (file, stdout) or delivered (webhook)",
        |c| c.events_written.load(Ordering::Relaxed),
    ),
    (
        "audit_events_dropped",
        "Audit events dropped because a batch queue with overflow: drop was full",
        |c| c.events_dropped.load(Ordering::Relaxed),
    ),
    (
        "audit_events_failed",
        "Audit events that could not be written or delivered",
        |c| c.events_failed.load(Ordering::Relaxed),
    ),
    ("audit_fsyncs", "fdatasync calls of audit file sinks", |c| {
        c.fsyncs.load(Ordering::Relaxed)
    }),
    (
        "audit_checkpoints",
        "Signed audit checkpoints written",
        |c| c.checkpoints.load(Ordering::Relaxed),
    ),
    ("audit_rotations", "Audit file rotations", |c| {
        c.rotations.load(Ordering::Relaxed)
    }),
    ("audit_retries", "Audit webhook delivery retries", |c| {
        c.retries.load(Ordering::Relaxed)
    }),
    (
        "audit_events_truncated",
        "Audit events sent to a webhook without their request/response objects (max_event_size)",
        |c| c.events_truncated.load(Ordering::Relaxed),
    ),
];

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, get) in SERIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (sink, counters) in &self.sinks {
                let labels = [("sink", sink.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(get(counters)).encode(metric)?;
            }
        }
        if !self.local.is_empty() {
            let mut family = encoder.encode_descriptor(
                "audit_sink_healthy",
                "1 when the audit sink's last event write succeeded (or none was made), 0 while it failed (file and stdout sinks)",
                None,
                MetricType::Gauge,
            )?;
            for (sink, counters) in &self.local {
                let labels = [("sink", sink.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(i64::from(counters.health.healthy())).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// Export `auditor`'s sink counters through `registry`.
pub fn register(registry: &mut Registry, auditor: &Auditor) {
    let of = |s: &super::sink::SinkHandle| (s.name().to_string(), Arc::clone(s.counters()));
    let sinks = auditor.sinks().iter().map(of).collect();
    let local = auditor
        .sinks()
        .iter()
        .filter(|s| s.is_local())
        .map(of)
        .collect();
    registry.register_collector(Box::new(AuditCollector { sinks, local }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sink::{DeliveryMode, Overflow, SinkKind, SinkSpec};

    #[tokio::test]
    async fn counters_appear_in_the_exposition() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::audit::sink::FileSinkConfig::new(dir.path().join("audit.log"));
        cfg.max_size_bytes = 0;
        let a = Auditor::start(vec![SinkSpec {
            name: "file".into(),
            kind: SinkKind::File(cfg),
            mode: DeliveryMode::Batch {
                queue: 10,
                overflow: Overflow::Drop,
            },
        }])
        .unwrap();
        a.sinks()[0]
            .counters()
            .events_dropped
            .fetch_add(3, Ordering::Relaxed);
        let mut m = crate::telemetry::metrics::Metrics::new();
        register(&mut m.registry, &a);
        let text = m.render();
        assert!(
            text.contains("portcullis_audit_events_dropped_total{sink=\"file\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portcullis_audit_fsyncs counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portcullis_audit_sink_healthy gauge"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_audit_sink_healthy{sink=\"file\"} 1"),
            "{text}"
        );
        a.sinks()[0].counters().health.record(Err("disk full"));
        let text = m.render();
        assert!(
            text.contains("portcullis_audit_sink_healthy{sink=\"file\"} 0"),
            "{text}"
        );
    }
}
