//! Metrics, traces and logs: the metrics layer and the trace layers of the stack, the
//! OpenTelemetry tracer (`traces.rs`, `otlp_client.rs`), the `tracing:` / `log:` sections
//! (`config.rs`), and the log subscriber.

pub mod config;
pub mod layer;
pub mod metrics;
pub mod otlp_client;
pub mod span_layer;
pub mod span_queue;
pub(crate) mod throttled;
pub mod traces;

pub use config::LogFormat;
pub use layer::MetricsLayer;
pub use metrics::Metrics;
pub use span_layer::{traced, RequestSpanLayer, UpstreamSpanLayer};
pub use traces::Tracing;

/// Install the log subscriber: `RUST_LOG` filter (default `info`), to stderr, as text or one
/// JSON object a line. A line written while a request is served carries that request's log
/// span (`audit_id`, and `trace_id` when tracing is on): text as a `request{…}:` prefix, JSON
/// as the `span` object. Log lines name users, paths and reasons, never credentials.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
