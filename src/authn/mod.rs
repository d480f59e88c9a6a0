//! Authentication: who is calling. Today: client certificates (mTLS), mapped as Kubernetes
//! x509 authentication does (CN → user, each O → a group).
//!
//! Accepts a request whose connection presented a client certificate that rustls verified
//! against `authentication.client_certificates.ca_files`. Rejects with 401 `Unauthorized`
//! (a message that tells an attacker nothing): no certificate (in `optional` mode), a
//! certificate without a CN, or — unless `allow_system_identities` — a user or group beginning
//! with `system:`, since the proxy's impersonate grant would otherwise hand out e.g.
//! `system:masters`.

pub mod identity;
pub mod jwt;
pub mod x509;

pub use identity::Identity;
