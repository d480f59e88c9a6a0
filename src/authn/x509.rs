//! Client-certificate identity: CN → user, each O → group (Kubernetes x509 convention), with
//! the configured prefixes. rustls has already verified the chain against the configured CAs.
//!
//! kube-apiserver's x509 authenticator verifies the client's chain on every request, against
//! the CA bundle in force then. A connection outlives its handshake, so here:
//!
//! * The leaf's validity period is checked on every request: a long-lived connection, or a
//!   resumed TLS session (rustls resumes TLS 1.3 sessions without verifying the client's
//!   certificate again; each resumption issues new tickets for the same chain), whose
//!   certificate has expired since its handshake is refused (401) from then on, like a fresh
//!   one would be.
//! * The chain is verified again, once, by the first request a connection makes under a
//!   configuration other than the one whose listener accepted it (a reload since): against
//!   that configuration's client CAs and CRLs, at the current time. A connection whose CA a
//!   reload removed, or whose certificate a reloaded CRL revokes, is refused (401) from its
//!   next request on. The mapping (prefixes, reserved names) and the tenant are those of the
//!   configuration the request runs under, too. A refusal is kept like a mapping, so a refused
//!   connection's further requests cost no verification (nor does a client gain anything by
//!   sending them: the refusal stands for that configuration).
//! * The chain is also verified again once an intermediate certificate the client sent has
//!   expired (the earliest such `notAfter` is kept with the mapping): refused if that
//!   intermediate was on the path to a CA, served as before if it was a spare. Likewise once a
//!   client CA has expired since the chain was last verified: an expired CA anchors nothing
//!   (`server::anchors`), as in Go's verification. A resumed TLS session's chain was verified
//!   at a time not known, so it is verified again if any client CA has expired at all.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, Weak},
};

use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    identity::{Identity, Method},
    jwt::{Clock, SystemClock},
};
use crate::{authn::config::X509Identity, server::ConnInfo};

/// Why a certificate yields no identity (logged; the client only ever sees 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate cannot be parsed")]
    Unparsable,
    #[error("client certificate has no usable common name")]
    NoCommonName,
    /// More than one CN: Go (kube-apiserver, and the CSR tools that read subjects through
    /// Go) takes the last, others the first; neither is safe to guess.
    #[error("client certificate has more than one common name")]
    AmbiguousCommonName,
    /// A CN or O in a string type other than UTF8, Printable, IA5 or Numeric (a T61String,
    /// a BMPString): refused rather than a group silently dropped.
    #[error("client certificate has a {0} value in a string encoding the proxy does not read")]
    UndecodableName(&'static str),
    #[error("identity {0:?} is reserved (system:) and not allowed by config")]
    Reserved(String),
    #[error("identity {0:?} contains characters that cannot travel in a header")]
    BadCharacters(String),
    #[error("client certificate is outside its validity period (notBefore {not_before}, notAfter {not_after}, Unix seconds)")]
    OutsideValidity { not_before: i64, not_after: i64 },
    /// Verified again (after a reload, a CRL falling due, a CA or intermediate expiring) and
    /// refused by the client CAs or CRLs in force.
    #[error("client certificate chain refused by the client CAs or CRLs now in force: {0}")]
    ChainRefused(String),
    /// A reload left no client CA to verify the connection's chain against.
    #[error("client certificate cannot be verified: no client CAs are configured now")]
    NoClientCas,
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
}

/// A connection's certificate, mapped by its first request under one configuration.
#[derive(Debug, Clone)]
pub struct CertIdentity {
    /// The identity and the leaf's validity period, or why the chain or its mapping was
    /// refused: kept too, so a refused connection does not cost a verification per request.
    pub mapped: Result<(Arc<Identity>, Validity), Rejected>,
    /// The listener config of the configuration that mapped it ([`CertAuth::listener`]).
    pub under: Option<Weak<rustls::ServerConfig>>,
    /// The earliest `notAfter` (Unix seconds) of an intermediate the client sent, or
    /// `nextUpdate` of a client CRL, still ahead when this was mapped; past it the chain is
    /// verified again. Also the next client CA's `notAfter`.
    pub recheck_after: i64,
    /// When (Unix seconds) the chain was last verified under that configuration: by the
    /// handshake ([`ConnInfo::verified_at`]) or by authentication verifying it again.
    pub checked_at: i64,
}

/// How one configuration authenticates a connection's client certificate.
#[derive(Clone)]
pub struct CertAuth {
    /// CN / O → user / groups.
    pub mapping: X509Identity,
    /// This configuration's listener config: a connection it accepted had its chain verified
    /// by it. `None` only in tests that hand a connection in without a listener, whose chain
    /// is then taken as verified.
    pub listener: Option<Arc<rustls::ServerConfig>>,
    /// This configuration's client CAs and CRLs, for a connection accepted under another.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The earliest `nextUpdate` of those CRLs (Unix seconds; `i64::MAX`: none): past it a
    /// connection's chain is verified again, and refused until a reload brings a fresh CRL.
    pub crl_due: i64,
    /// The `notAfter` of each client CA, ascending ([`crate::server::tls::ClientCas::ca_expiries`]):
    /// an expired CA anchors nothing, so a chain verified before one expired is verified again
    /// after it.
    pub ca_expiries: Arc<[i64]>,
}

impl CertAuth {
    /// The identity of `conn`'s certificate (`chain`, leaf first) under this configuration at
    /// `now` (Unix seconds): mapped once per connection and configuration (`tenant_of` names
    /// its tenant), the chain verified again when the connection was accepted under another
    /// configuration or an intermediate it sent has expired since, and the leaf's validity
    /// period checked every time.
    pub fn identity(
        &self,
        conn: &ConnInfo,
        chain: &[CertificateDer<'static>],
        now: i64,
        tenant_of: impl FnOnce(&Identity) -> Option<String>,
    ) -> Result<Arc<Identity>, Rejected> {
        let here = self.listener.as_ref().map(Arc::as_ptr);
        // A `Weak` keeps its allocation, so a pointer it holds is never another config's.
        let is_here = |w: &Option<Weak<rustls::ServerConfig>>| w.as_ref().map(Weak::as_ptr) == here;
        // The mapping still current, else when the chain was last verified under this
        // configuration (by the handshake that accepted the connection, or again here).
        let (cached, checked_at) = match conn
            .cert_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| is_here(&c.under))
        {
            Some(c) if now <= c.recheck_after => (Some(c.mapped.clone()), c.checked_at),
            Some(c) => (None, c.checked_at),
            None if is_here(&conn.accepted_by) => (None, conn.verified_at),
            None => (None, i64::MIN),
        };
        let mapped = match cached {
            Some(mapped) => mapped,
            None => {
                let expiries = intermediate_expiries(chain);
                // Accepted under an earlier configuration, a certificate it sent has expired
                // since, or a client CA has expired since the chain was last verified (it may
                // have been the one anchoring it): verified as a new handshake would be now
                // (an expired intermediate or CA that is not on the path does not refuse it).
                let verify = !is_here(&conn.accepted_by)
                    || self.crl_due < now
                    || expiries.iter().any(|&t| t < now)
                    || self.ca_expiries.iter().any(|&t| checked_at <= t && t < now);
                let mapped = self.map(chain, verify, now, tenant_of);
                *conn
                    .cert_identity
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(CertIdentity {
                    mapped: mapped.clone(),
                    under: self.listener.as_ref().map(Arc::downgrade),
                    recheck_after: expiries
                        .into_iter()
                        .chain([self.crl_due])
                        .chain(self.ca_expiries.iter().copied())
                        .filter(|&t| t >= now)
                        .min()
                        .unwrap_or(i64::MAX),
                    checked_at: if verify { now } else { checked_at },
                });
                mapped
            }
        };
        let (id, validity) = mapped?;
        validity.check(now)?;
        Ok(id)
    }

    /// Verify the chain again if `verify`, then map it.
    fn map(
        &self,
        chain: &[CertificateDer<'static>],
        verify: bool,
        now: i64,
        tenant_of: impl FnOnce(&Identity) -> Option<String>,
    ) -> Result<(Arc<Identity>, Validity), Rejected> {
        if verify {
            self.verify_again(chain, now)?;
        }
        let (mut id, validity) = identity(chain.first(), &self.mapping)?;
        id.tenant = tenant_of(&id);
        Ok((Arc::new(id), validity))
    }

    /// Verify `chain` against this configuration's client CAs and CRLs at `now`.
    fn verify_again(&self, chain: &[CertificateDer<'static>], now: i64) -> Result<(), Rejected> {
        let verifier = self.verifier.as_ref().ok_or(Rejected::NoClientCas)?;
        let (leaf, intermediates) = chain.split_first().ok_or(Rejected::NoCertificate)?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        verifier
            .verify_client_cert(leaf, intermediates, at)
            .map(|_| ())
            .map_err(|e| Rejected::ChainRefused(e.to_string()))
    }
}

/// The `notAfter` of each certificate after the leaf (an unparsable one has none: the
/// verifier judges it).
fn intermediate_expiries(chain: &[CertificateDer<'static>]) -> Vec<i64> {
    chain
        .iter()
        .skip(1)
        .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .collect()
}

/// The system clock in Unix seconds (the one JWT verification reads).
pub fn now() -> i64 {
    i64::try_from(SystemClock.now().as_secs()).unwrap_or(i64::MAX)
}

fn header_safe(s: &str) -> bool {
    // No tab either: not a character of a certificate's names.
    !s.is_empty() && !s.contains('\t') && crate::authn::identity::forwards_intact(s)
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
    let mut cns = subject.iter_common_name();
    let cn = cns.next().ok_or(Rejected::NoCommonName)?;
    if cns.next().is_some() {
        return Err(Rejected::AmbiguousCommonName);
    }
    let cn = cn.as_str().map_err(|_| Rejected::UndecodableName("CN"))?;
    if cn.is_empty() {
        return Err(Rejected::NoCommonName);
    }
    let user = format!("{}{}", cfg.username_prefix, cn);
    let mut groups = Vec::new();
    for o in subject.iter_organization() {
        let o = o.as_str().map_err(|_| Rejected::UndecodableName("O"))?;
        if !o.is_empty() {
            groups.push(format!("{}{}", cfg.groups_prefix, o));
        }
    }
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
mod tests;
