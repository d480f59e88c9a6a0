//! Listeners: TLS setup, the accept loop, and the admin endpoints.

pub mod admin;
pub mod config;
pub mod serve;
pub mod tls;

pub use serve::{serve, serve_plain, ConnInfo, ServeOptions};
