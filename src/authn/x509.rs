//! Client-certificate identity: CN → user, each O → group (Kubernetes x509 convention), with
//! the configured prefixes. rustls has already verified the chain against the configured CAs.
//!
//! The certificate's validity period is checked again on every request, as kube-apiserver's
//! x509 authenticator verifies the certificate on every request: a long-lived connection, or a
//! resumed TLS session (rustls resumes TLS 1.3 sessions without verifying the client's
//! certificate again; each resumption issues new tickets for the same chain), whose certificate
//! has expired since its handshake is refused (401) from then on, like a fresh one would be.

use std::collections::BTreeMap;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    identity::{Identity, Method},
    jwt::{Clock, SystemClock},
};
use crate::authn::config::X509Identity;

/// Why a certificate yields no identity (logged; the client only ever sees 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate cannot be parsed")]
    Unparsable,
    #[error("client certificate has no usable common name")]
    NoCommonName,
    #[error("identity {0:?} is reserved (system:) and not allowed by config")]
    Reserved(String),
    #[error("identity {0:?} contains characters that cannot travel in a header")]
    BadCharacters(String),
    #[error("client certificate is outside its validity period (notBefore {not_before}, notAfter {not_after}, Unix seconds)")]
    OutsideValidity { not_before: i64, not_after: i64 },
}

/// A certificate's validity period, in Unix seconds (both ends included, as RFC 5280 says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// `Err` unless `now` (Unix seconds) is within the period.
    pub fn check(&self, now: i64) -> Result<(), Rejected> {
        if (self.not_before..=self.not_after).contains(&now) {
            Ok(())
        } else {
            Err(Rejected::OutsideValidity {
                not_before: self.not_before,
                not_after: self.not_after,
            })
        }
    }

    /// [`check`](Self::check) against the system clock (the one JWT verification reads).
    pub fn check_now(&self) -> Result<(), Rejected> {
        let now = SystemClock.now().as_secs();
        self.check(i64::try_from(now).unwrap_or(i64::MAX))
    }
}

/// A connection's certificate, mapped once by its first request.
#[derive(Debug, Clone)]
pub struct CertIdentity {
    pub identity: std::sync::Arc<Identity>,
    pub validity: Validity,
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Map the verified leaf certificate to an identity; also its validity period.
pub fn identity(
    leaf: Option<&CertificateDer<'_>>,
    cfg: &X509Identity,
) -> Result<(Identity, Validity), Rejected> {
    let leaf = leaf.ok_or(Rejected::NoCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| Rejected::Unparsable)?;
    let validity = Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or(Rejected::NoCommonName)?;
    let user = format!("{}{}", cfg.username_prefix, cn);
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .filter(|s| !s.is_empty())
        .map(|o| format!("{}{}", cfg.groups_prefix, o))
        .collect();
    for name in std::iter::once(&user).chain(groups.iter()) {
        if !header_safe(name) {
            return Err(Rejected::BadCharacters(name.clone()));
        }
        if !cfg.allow_system_identities && name.starts_with("system:") {
            return Err(Rejected::Reserved(name.clone()));
        }
    }
    let identity = Identity {
        user,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: Method::ClientCertificate {
            fingerprint: fingerprint(leaf.as_ref()),
        },
    };
    Ok((identity, validity))
}

/// SHA-256 of the DER, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Ca;

    fn cfg(allow: bool) -> X509Identity {
        X509Identity {
            username_prefix: String::new(),
            groups_prefix: String::new(),
            allow_system_identities: allow,
        }
    }

    #[test]
    fn cn_and_o_become_user_and_groups() {
        let ca = Ca::new("t").unwrap();
        let c = ca.client_cert("alice", &["dev"]).unwrap();
        let (id, _) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["dev"]);
        let c = ca.client_cert("bob", &[]).unwrap();
        let (id, _) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
        assert_eq!((id.user.as_str(), id.groups.len()), ("bob", 0));
    }

    #[test]
    fn prefixes_apply_and_fingerprint_is_sha256_hex() {
        let ca = Ca::new("t").unwrap();
        let c = ca.client_cert("alice", &["dev"]).unwrap();
        let cfg = X509Identity {
            username_prefix: "cert:".into(),
            groups_prefix: "cert:".into(),
            allow_system_identities: false,
        };
        let (id, _) = identity(Some(&c.cert_der), &cfg).unwrap();
        assert_eq!(
            (id.user.as_str(), id.groups[0].as_str()),
            ("cert:alice", "cert:dev")
        );
        let Method::ClientCertificate { fingerprint } = id.method else {
            panic!("not a certificate identity")
        };
        assert_eq!(fingerprint.len(), 64);
    }

    #[test]
    fn system_identities_refused_unless_allowed() {
        let ca = Ca::new("t").unwrap();
        let c = ca.client_cert("mallory", &["system:masters"]).unwrap();
        assert_eq!(
            identity(Some(&c.cert_der), &cfg(false)).map(|(id, _)| id),
            Err(Rejected::Reserved("system:masters".into()))
        );
        assert!(identity(Some(&c.cert_der), &cfg(true)).is_ok());
    }

    #[test]
    fn missing_certificate_rejected() {
        assert_eq!(
            identity(None, &cfg(false)).map(|(id, _)| id),
            Err(Rejected::NoCertificate)
        );
    }

    #[test]
    fn the_validity_period_is_read_and_checked_inclusively() {
        let ca = Ca::new("t").unwrap();
        let c = ca.client_cert("alice", &[]).unwrap();
        let (_, v) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
        let now = i64::try_from(SystemClock.now().as_secs()).unwrap();
        assert!(v.not_before < now && now < v.not_after, "{v:?}");
        assert!(v.check_now().is_ok());
        assert!(v.check(v.not_before).is_ok() && v.check(v.not_after).is_ok());
        assert_eq!(
            v.check(v.not_after + 1),
            Err(Rejected::OutsideValidity {
                not_before: v.not_before,
                not_after: v.not_after
            })
        );
        assert!(v.check(v.not_before - 1).is_err());
    }
}
