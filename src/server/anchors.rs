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
//! that says so (logged; the TLS alert is `certificate_unknown`; on an open client connection the
//! client gets 401, toward the API server the request gets the unreachable-upstream 502).
//!
//! Accepts: whatever the inner verifier accepts with the CAs in force. A server's
//! CertificateRequest names every configured client CA, as Go's server sends its whole
//! `ClientCAs` pool.

use std::sync::Arc;

use anyhow::Result;
use arc_swap::ArcSwapOption;
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

/// Log each CA of `cas` outside its validity period now, naming the bundle (`bundle`): it
/// anchors nothing while it is, which an operator would otherwise only learn from refused
/// handshakes. Called at start and at each reload.
pub fn warn_out_of_period(bundle: &str, cas: &[CertificateDer<'static>]) {
    let now = crate::authn::x509::now();
    for a in cas.iter().cloned().map(Anchor::new) {
        if let (false, Some((not_before, not_after))) = (a.in_force(now), a.validity) {
            tracing::warn!(
                bundle,
                subject = %a.subject(),
                not_before,
                not_after,
                "a CA outside its validity period: it anchors no certificate while it is \
                 (Go's verification, and so kube-apiserver and client-go, refuse such chains \
                 too); replace it with a renewed CA or remove it"
            );
        }
    }
}

/// Builds the inner verifier for a set of CAs (never empty).
type Build<V> = dyn Fn(Vec<CertificateDer<'static>>) -> Result<Arc<V>> + Send + Sync;

/// The verifier of the CAs in force during `from..=until` (Unix seconds): no CA's period
/// starts or ends inside it.
struct Window<V: ?Sized> {
    from: i64,
    until: i64,
    /// `None`: no CA is in force.
    verifier: Option<Arc<V>>,
    /// Whether every CA is in force (the verifier is the all-CA one).
    all: bool,
}

/// A verifier (`V`: rustls' client- or server-certificate verifier) that trusts only the CAs
/// in force at the time it verifies.
pub struct InForce<V: ?Sized> {
    anchors: Vec<Anchor>,
    /// Built with every CA: used while all are in force, and for what does not depend on the
    /// CAs (signatures, schemes, the CA names sent).
    all: Arc<V>,
    build: Box<Build<V>>,
    /// The window the last verification fell in. A handshake inside it costs an atomic load
    /// and two comparisons (no lock, no allocation), whether or not a CA of the bundle is
    /// outside its period; the verifier is built again only when a CA's period starts or ends.
    window: ArcSwapOption<Window<V>>,
}

impl<V: ?Sized> std::fmt::Debug for InForce<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InForce")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl<V: ?Sized> InForce<V> {
    /// `build` makes the webpki verifier of a set of CAs; it is called here with all of them,
    /// so a CA that is no trust anchor at all is refused now, and the subsets built later
    /// cannot fail on one.
    pub fn new(anchors: Vec<Anchor>, build: Box<Build<V>>) -> Result<InForce<V>> {
        let all = build(anchors.iter().map(|a| a.cert.clone()).collect())?;
        Ok(InForce {
            anchors,
            all,
            build,
            window: ArcSwapOption::empty(),
        })
    }

    /// The window holding `now`: the last one, or a new one (its verifier built).
    fn at(&self, now: i64) -> Result<Arc<Window<V>>, rustls::Error> {
        if let Some(w) = self.window.load_full() {
            if (w.from..=w.until).contains(&now) {
                return Ok(w);
            }
        }
        // The CAs' period ends around `now`: the window is bounded by the nearest of them.
        let (mut from, mut until) = (i64::MIN, i64::MAX);
        for (start, end) in self.anchors.iter().filter_map(|a| a.validity) {
            // In force from `start`, out of force from `end + 1`.
            for change in [start, end.saturating_add(1)] {
                if change <= now {
                    from = from.max(change);
                } else {
                    until = until.min(change - 1);
                }
            }
        }
        let cas: Vec<_> = self
            .anchors
            .iter()
            .filter(|a| a.in_force(now))
            .map(|a| a.cert.clone())
            .collect();
        let all = cas.len() == self.anchors.len();
        let verifier = if all {
            Some(self.all.clone())
        } else if cas.is_empty() {
            None
        } else {
            // The same options with fewer CAs: this cannot fail where building with all of
            // them succeeded, but if it does, nothing is verified by it.
            Some(
                (self.build)(cas)
                    .map_err(|e| rustls::Error::General(format!("certificate verifier: {e:#}")))?,
            )
        };
        let w = Arc::new(Window {
            from,
            until,
            verifier,
            all,
        });
        self.window.store(Some(w.clone()));
        Ok(w)
    }

    /// `verify` with the verifier of the CAs in force at `now`.
    fn verify<T>(
        &self,
        now: UnixTime,
        verify: impl Fn(&V) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let w = self.at(secs)?;
        let refused = match &w.verifier {
            Some(v) => match verify(v) {
                Ok(ok) => return Ok(ok),
                // With every CA in force there is no other reason to look for.
                Err(e) if w.all => return Err(e),
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
