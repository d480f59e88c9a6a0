//! portcullis — a security reverse proxy in front of the Kubernetes API server.
//!
//! See `ARCHITECTURE.md` for the life of a request and the module map.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod body;
pub mod classify;
pub mod config;
pub mod drain;
pub mod json_depth;
pub mod k8s;
pub mod kubeconfig;
pub mod problems;
pub mod ratelimit;
pub mod read_tap;
pub mod refusal;
pub mod reload;
pub mod request_id;
pub mod sanitize;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
#[cfg(test)]
mod test_pki;
pub mod upstream;
pub mod write_batch;
