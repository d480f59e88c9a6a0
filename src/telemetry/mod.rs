//! Metrics and logs, and the metrics layer of the stack.

pub mod layer;
pub mod metrics;

pub use layer::MetricsLayer;
pub use metrics::Metrics;

/// Install the log subscriber: `RUST_LOG` filter (default `info`), to stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
