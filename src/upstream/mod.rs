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
pub(crate) mod one_way;
pub mod pool;
pub mod pump;
pub mod review;
pub mod selftest;
pub mod send;
pub mod service;
pub mod set;
pub mod stream;
pub mod upgrade;
pub mod window;

pub use client::Endpoint;

/// A request extension through which the upstream client tells the request's owner (the audit
/// record) what only it sees: that the request may have reached the API server (a try not
/// known to have stayed in the proxy — so an answer withheld afterwards invites no retry of a
/// write the API server may have carried out), and that the pump reset its stalled response.
/// The owner itself behind the trait: no allocation per request.
#[derive(Clone)]
pub struct Watcher(pub std::sync::Arc<dyn Watch>);

/// See [`Watcher`].
pub trait Watch: Send + Sync {
    /// The request may have reached the API server (called once per try).
    fn left_the_proxy(&self);
    /// The pump reset the request's stalled response (called once).
    fn stalled(&self);
}
pub use credentials::Credentials;
pub use forward::{forward, Guard, Outbound};
pub use service::{HoldWhileStreaming, StreamGuards, UpstreamService};
pub use set::Upstream;
