//! Throwaway certificates for `demo`, `sandbox` and the tests: a CA, server certificates for
//! loopback names, and client certificates whose CN / O become Kubernetes user / groups.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate with its key, as PEM and DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl Issued {
    /// The private key in rustls form.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A certificate authority that can issue leaf certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub cert: Issued,
}

impl Ca {
    /// A fresh self-signed CA with the given common name.
    pub fn new(common_name: &str) -> Result<Ca> {
        Ca::with_params(common_name, |_| {})
    }

    /// A fresh self-signed CA valid only from `not_before` to `not_after` (for tests of a
    /// CA's own expiry).
    pub fn with_validity(
        common_name: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Ca> {
        Ca::with_params(common_name, |params| {
            params.not_before = not_before;
            params.not_after = not_after;
        })
    }

    /// A CA that expired on 2020-01-02 (for tests of a CA's own expiry).
    pub fn expired(common_name: &str) -> Result<Ca> {
        Ca::with_validity(
            common_name,
            rcgen::date_time_ymd(2019, 1, 1),
            rcgen::date_time_ymd(2020, 1, 2),
        )
    }

    /// A CA valid from a minute ago for `valid_for` from now (X.509 times are whole seconds).
    pub fn valid_for(common_name: &str, valid_for: std::time::Duration) -> Result<Ca> {
        let now = time_now();
        Ca::with_validity(
            common_name,
            now - std::time::Duration::from_secs(60),
            now + valid_for,
        )
    }

    fn with_params(common_name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Result<Ca> {
        let key = KeyPair::generate().context("generate CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        edit(&mut params);
        let cert = params.self_signed(&key).context("self-sign CA")?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert: issued,
        })
    }

    /// A server certificate for the given DNS names / IP addresses.
    pub fn server_cert(&self, names: &[&str]) -> Result<Issued> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .context("server certificate names")?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A server certificate for `names` that expired on 2020-01-02 (for tests of expiry
    /// handling).
    pub fn expired_server_cert(&self, names: &[&str]) -> Result<Issued> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .context("server certificate names")?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        self.sign(params)
    }

    /// A client certificate: CN = user, O = group (Kubernetes x509 convention). rcgen encodes
    /// one value per attribute type, so at most one group can be issued here (the proxy itself
    /// reads any number of O attributes from certificates made elsewhere).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<Issued> {
        if groups.len() > 1 {
            anyhow::bail!("this CA helper can put only one O (group) in a certificate");
        }
        self.sign(client_params(user, groups)?)
    }

    /// A client certificate with a chosen serial number (so a CRL can revoke it).
    pub fn client_cert_with_serial(&self, user: &str, serial: u64) -> Result<Issued> {
        let mut params = client_params(user, &[])?;
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        self.sign(params)
    }

    /// A CRL (PEM) from this CA revoking the given serial numbers, valid for a day.
    pub fn crl(&self, revoked: &[u64]) -> Result<String> {
        let now = time_now();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + std::time::Duration::from_secs(86_400),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).context("sign CRL")?;
        crl.pem().context("encode CRL")
    }

    /// A client certificate valid from now for `valid_for` (X.509 times are whole seconds).
    pub fn client_cert_valid_for(
        &self,
        user: &str,
        valid_for: std::time::Duration,
    ) -> Result<Issued> {
        let mut params = client_params(user, &[])?;
        let now = time_now();
        params.not_before = now - std::time::Duration::from_secs(60);
        params.not_after = now + valid_for;
        self.sign(params)
    }

    /// A client certificate that expired on 2020-01-02 (for tests of expiry handling).
    pub fn expired_client_cert(&self, user: &str) -> Result<Issued> {
        let mut params = client_params(user, &[])?;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate().context("generate key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("sign certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }
}

/// Parameters of a client certificate: CN = user, O = each group, client-auth usage.
fn client_params(user: &str, groups: &[&str]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("client params")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Now, in the date type rcgen uses.
fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
