//! Toward the upstream API server: connection pool, the proxy's credentials, forwarding and
//! upgrade splicing.

pub mod client;
pub mod config;
pub mod credentials;
pub mod fetch;
pub mod forward;
pub mod service;
pub mod upgrade;

pub use client::Upstream;
pub use credentials::Credentials;
pub use forward::{forward, Guard, Outbound};
pub use service::{HoldWhileStreaming, StreamGuards, UpstreamService};
