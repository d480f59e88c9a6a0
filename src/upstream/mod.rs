//! Toward the upstream API server: its endpoints (connection pool, health, circuit breaker
//! each), the proxy's credentials, which endpoint a request goes to and when it fails over,
//! timeouts, forwarding and upgrade splicing.

pub mod breaker;
pub mod client;
pub mod config;
pub mod connector;
pub mod credentials;
pub mod deadline;
pub mod fetch;
pub mod forward;
pub mod h2conn;
pub mod idle;
pub mod metrics;
pub mod pool;
pub mod pump;
pub mod review;
pub mod selftest;
pub mod send;
pub mod service;
pub mod set;
pub mod stream;
pub mod upgrade;

pub use client::Endpoint;
pub use credentials::Credentials;
pub use forward::{forward, Guard, Outbound};
pub use service::{HoldWhileStreaming, StreamGuards, UpstreamService};
pub use set::Upstream;
