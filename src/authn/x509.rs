//! Client-certificate identity: CN → user, each O → group (Kubernetes x509 convention), with
//! the configured prefixes. rustls has already verified the chain against the configured CAs.

use std::collections::BTreeMap;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{Identity, Method};
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
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Map the verified leaf certificate to an identity.
pub fn identity(
    leaf: Option<&CertificateDer<'_>>,
    cfg: &X509Identity,
) -> Result<Identity, Rejected> {
    let leaf = leaf.ok_or(Rejected::NoCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| Rejected::Unparsable)?;
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
    Ok(Identity {
        user,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: Method::ClientCertificate {
            fingerprint: fingerprint(leaf.as_ref()),
        },
    })
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
        let id = identity(Some(&c.cert_der), &cfg(false)).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["dev"]);
        let c = ca.client_cert("bob", &[]).unwrap();
        let id = identity(Some(&c.cert_der), &cfg(false)).unwrap();
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
        let id = identity(Some(&c.cert_der), &cfg).unwrap();
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
            identity(Some(&c.cert_der), &cfg(false)),
            Err(Rejected::Reserved("system:masters".into()))
        );
        assert!(identity(Some(&c.cert_der), &cfg(true)).is_ok());
    }

    #[test]
    fn missing_certificate_rejected() {
        assert_eq!(identity(None, &cfg(false)), Err(Rejected::NoCertificate));
    }
}
