//! Listeners: TLS setup, the accept loop, and the admin endpoints.

pub mod serve;
pub mod tls;

pub use serve::{serve, ConnInfo, ServeOptions};
