//! Listeners: TLS setup, the accept loop, connection caps and timeouts, and the admin endpoints.

pub mod admin;
pub mod anchors;
pub mod config;
mod conn;
pub mod limits;
mod linger;
pub mod metrics;
pub mod serve;
pub mod tls;

pub use metrics::ListenerMetrics;
pub use serve::{serve, serve_live, serve_plain, ConnInfo, ServeOptions};
