//! CAs as Go's x509 verification uses them (kube-apiserver's x509 authenticator, and client-go
//! toward the API server): a CA certificate outside its validity period anchors nothing.
//!
//! rustls' webpki checks the dates of every certificate on a path except the trust anchor's,
//! so an expired CA left in a bundle would go on vouching for every certificate it signed, and
//! a CA whose `notBefore` is still ahead would already vouch for them. Go checks the root's
//! dates like any other certificate's on the chain (`isValid` in crypto/x509's `verify.go`),
//! so kube-apiserver refuses such a client chain and kubectl such an API server. [`InForce`]
//! wraps the webpki verifier, on both sides: for client certificates (`ca_files`) and for the
//! servers the proxy connects to (the API server, JWKS endpoints, the OTLP collector, the
//! audit webhook). A verification at time `now` (the handshake's, or authentication's when it
//! verifies an open connection's chain again) uses only the CAs in force at `now`. A chain
//! that only a CA outside its period would accept is refused with a `CertificateError::Other`
//! that says so (logged; the TLS alert is `bad_certificate`; on an open client connection the
//! client gets 401, toward the API server the request gets the unreachable-upstream 502).
//!
//! Accepts: whatever the inner verifier accepts with the CAs in force. A server's
//! CertificateRequest names every configured client CA, as Go's server sends its whole
//! `ClientCAs` pool.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A CA certificate and its validity period (Unix seconds, both ends included, as RFC 5280
/// says; `None`: its dates could not be read, so it is always in force — webpki then judges
/// the certificate itself, as before).
#[derive(Debug, Clone)]
pub struct Anchor {
    pub cert: CertificateDer<'static>,
    pub validity: Option<(i64, i64)>,
}

impl Anchor {
    pub fn new(cert: CertificateDer<'static>) -> Anchor {
        let validity = X509Certificate::from_der(cert.as_ref()).ok().map(|(_, c)| {
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        });
        Anchor { cert, validity }
    }

    /// Whether the CA anchors chains at `now` (Unix seconds).
    pub fn in_force(&self, now: i64) -> bool {
        self.validity
            .is_none_or(|(from, until)| (from..=until).contains(&now))
    }

    /// The CA's `notAfter`, when its dates could be read.
    pub fn not_after(&self) -> Option<i64> {
        self.validity.map(|(_, until)| until)
    }

    /// The certificate's subject, for a log line.
    pub fn subject(&self) -> String {
        X509Certificate::from_der(self.cert.as_ref())
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_else(|_| "(unparsable certificate)".to_owned())
    }
}

/// Builds the inner verifier for a set of CAs (never empty).
type Build<V> = dyn Fn(Vec<CertificateDer<'static>>) -> Result<Arc<V>> + Send + Sync;

/// Which CAs are in force (by position), and their verifier (`None`: no CA).
type Subset<V> = (Vec<bool>, Option<Arc<V>>);

/// A verifier (`V`: rustls' client- or server-certificate verifier) that trusts only the CAs
/// in force at the time it verifies.
pub struct InForce<V: ?Sized> {
    anchors: Vec<Anchor>,
    /// Built with every CA: used while all are in force (no lock, no allocation), and for
    /// what does not depend on the CAs (signatures, schemes, the CA names sent).
    all: Arc<V>,
    build: Box<Build<V>>,
    /// The verifier of the last subset used. Rebuilt only when a CA's period starts or ends,
    /// so a handshake costs a lock and a comparison then.
    subset: Mutex<Option<Subset<V>>>,
}

impl<V: ?Sized> std::fmt::Debug for InForce<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InForce")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl<V: ?Sized> InForce<V> {
    /// `build` makes the webpki verifier of a set of CAs; it is called here with all of them.
    pub fn new(anchors: Vec<Anchor>, build: Box<Build<V>>) -> Result<InForce<V>> {
        let all = build(anchors.iter().map(|a| a.cert.clone()).collect())?;
        Ok(InForce {
            anchors,
            all,
            build,
            subset: Mutex::new(None),
        })
    }

    /// The verifier for the CAs in force at `now`, `None` when none is.
    fn at(&self, now: i64) -> Result<Option<Arc<V>>, rustls::Error> {
        if self.anchors.iter().all(|a| a.in_force(now)) {
            return Ok(Some(self.all.clone()));
        }
        let key: Vec<bool> = self.anchors.iter().map(|a| a.in_force(now)).collect();
        let mut subset = self.subset.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, v)) = subset.as_ref() {
            if *k == key {
                return Ok(v.clone());
            }
        }
        let cas: Vec<_> = self
            .anchors
            .iter()
            .zip(&key)
            .filter(|(_, &on)| on)
            .map(|(a, _)| a.cert.clone())
            .collect();
        let verifier = if cas.is_empty() {
            None
        } else {
            // The same options with fewer CAs: this cannot fail where building with all of
            // them succeeded, but if it does, nothing is verified by it.
            Some(
                (self.build)(cas)
                    .map_err(|e| rustls::Error::General(format!("certificate verifier: {e:#}")))?,
            )
        };
        *subset = Some((key, verifier.clone()));
        Ok(verifier)
    }

    /// `verify` with the verifier of the CAs in force at `now`.
    fn verify<T>(
        &self,
        now: UnixTime,
        verify: impl Fn(&V) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let refused = match self.at(secs)? {
            Some(v) => match verify(&v) {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            },
            None => other("no CA of the bundle is within its validity period"),
        };
        // Say why when it is the CAs' dates (the all-CA verifier would have accepted it):
        // "unknown issuer" would send an operator looking for the wrong problem.
        if verify(&self.all).is_ok() {
            return Err(other(
                "the certificate chains only to a CA outside its validity period \
                 (expired, or not yet valid)",
            ));
        }
        Err(refused)
    }
}

fn other(message: &'static str) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Message(
        message,
    )))))
}

/// A fixed error text (`OtherError` wants an error type).
#[derive(Debug)]
struct Message(&'static str);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Message {}

impl ClientCertVerifier for InForce<dyn ClientCertVerifier> {
    fn offer_client_auth(&self) -> bool {
        self.all.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.all.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.all.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(now, |v| {
            v.verify_client_cert(end_entity, intermediates, now)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.all.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.all.requires_raw_public_keys()
    }
}

impl ServerCertVerifier for InForce<dyn ServerCertVerifier> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(now, |v| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.all.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.all.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.all.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests;
