//! Authentication: who is calling — a client certificate (mTLS, mapped as Kubernetes x509
//! authentication does: CN → user, each O → a group) or a JWT bearer token from one of several
//! issuers (`jwt/`). `request.rs` decides which credential counts for a request.
//!
//! Every failure is a 401 `Unauthorized` Status that tells an attacker nothing: no credential
//! (a client certificate the mapping accepts wins over any bearer token sent with it, which
//! is then not read — kube's union authenticator's order), an empty or malformed bearer token, a token the verifier refuses, a certificate
//! without a CN, or — unless allowed in config — a user or group beginning with `system:`,
//! since the proxy's impersonate grant would otherwise hand out e.g. `system:masters`.
//! Certificates from unknown CAs, and expired ones, never get past the TLS handshake; a
//! certificate that expires later is refused (401) from then on, checked on every request
//! (`x509.rs`): on a connection kept open, and on a resumed TLS session, which rustls does not
//! verify again.

pub mod config;
pub mod identity;
pub mod impersonate;
pub mod jwt;
pub mod layer;
pub mod request;
pub mod x509;

pub use identity::Identity;
pub use layer::AuthnLayer;
