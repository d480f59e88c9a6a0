//! Certificates for the library's own unit tests (test builds only): a CA, server and client
//! certificates, and a client-certificate verifier that counts what it verifies. The full
//! throwaway PKI of `demo`, `sandbox` and the integration tests is
//! `portcullis_sandbox::pki`; the library cannot depend on that crate, so its unit tests get
//! this small copy (rcgen is a dev-dependency here).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate with its key.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    /// The private key in rustls form.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A self-signed certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: Issued,
}

type Result<T> = std::result::Result<T, rcgen::Error>;

impl Ca {
    pub fn new(common_name: &str) -> Result<Ca> {
        Ca::make(common_name, |params, key| params.self_signed(key))
    }

    /// A self-signed CA valid only from `not_before` to `not_after`.
    pub fn with_validity(
        common_name: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Ca> {
        Ca::make(common_name, |params, key| {
            params.not_before = not_before;
            params.not_after = not_after;
            params.self_signed(key)
        })
    }

    /// An intermediate CA signed by this one, valid until 1 January of `until_year`.
    pub fn intermediate(&self, common_name: &str, until_year: i32) -> Result<Ca> {
        Ca::make(common_name, |params, key| {
            params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
            params.signed_by(key, &self.issuer)
        })
    }

    /// An intermediate CA signed by this one with serial number `serial` (so a CRL of this
    /// one can revoke it), valid until 1 January of `until_year`.
    pub fn intermediate_with_serial(
        &self,
        common_name: &str,
        until_year: i32,
        serial: u64,
    ) -> Result<Ca> {
        Ca::make(common_name, |params, key| {
            params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
            params.serial_number = Some(rcgen::SerialNumber::from(serial));
            params.signed_by(key, &self.issuer)
        })
    }

    /// A CRL (DER) of this CA revoking `revoked`, issued at `this_update` and due to be
    /// replaced at `next_update`.
    pub fn crl(
        &self,
        revoked: &[u64],
        this_update: time::OffsetDateTime,
        next_update: time::OffsetDateTime,
    ) -> Result<rustls_pki_types::CertificateRevocationListDer<'static>> {
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: this_update,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().clone())
    }

    /// A CA named `common_name`, its certificate made by `sign` from its parameters and key.
    fn make(
        common_name: &str,
        sign: impl FnOnce(&mut CertificateParams, &KeyPair) -> Result<rcgen::Certificate>,
    ) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = issued(&sign(&mut params, &key)?, &key);
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert,
        })
    }

    /// A server certificate for the given DNS names / IP addresses.
    pub fn server_cert(&self, names: &[&str]) -> Result<Issued> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(names.first().copied().unwrap_or("localhost"), &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A client certificate: CN = user, O = each group (Kubernetes x509 convention).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A certificate from `params` as given (a subject made by the test).
    pub fn sign_params(&self, params: CertificateParams) -> Issued {
        #[allow(clippy::expect_used)] // test PKI: a failure is a failed test
        self.sign(params).expect("sign")
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        Ok(issued(&params.signed_by(&key, &self.issuer)?, &key))
    }
}

/// `cert` with its `key`.
fn issued(cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

fn dn(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn
}

/// A client-certificate verifier that counts the chains it verifies, passing them on to
/// `inner` (the tests of re-verification count how often a chain is verified).
#[derive(Debug)]
pub struct CountingVerifier {
    inner: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
    verified: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingVerifier {
    /// Counting into `verified` (shared, so several verifiers can add to one count).
    pub fn new(
        inner: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
        verified: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> CountingVerifier {
        CountingVerifier { inner, verified }
    }

    /// How many chains it has verified.
    pub fn count(&self) -> usize {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl rustls::server::danger::ClientCertVerifier for CountingVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
