//! rustls configuration for our listeners and for the upstream client.
//!
//! One crypto provider everywhere: aws-lc-rs. [`install_crypto_provider`] is called by every
//! entry point before any config is built, because with more than one provider compiled into
//! the dependency graph rustls refuses to guess.

use std::{path::Path, sync::Arc};

use super::anchors::{Anchor, InForce};
use anyhow::{bail, Context, Result};
use rustls::{client::WebPkiServerVerifier, server::WebPkiClientVerifier, RootCertStore};
use rustls_pki_types::{
    pem::PemObject, CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};

/// Install aws-lc-rs as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Read every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    certs_from_pem(&pem).with_context(|| format!("in {}", path.display()))
}

/// Parse every certificate in PEM bytes; none is an error.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("not a valid PEM certificate list")?;
    if certs.is_empty() {
        bail!("no PEM CERTIFICATE block found");
    }
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    key_from_pem(&pem).with_context(|| format!("in {}", path.display()))
}

/// Parse the first private key in PEM bytes.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).context("no valid PEM private key found")
}

/// A root store holding every certificate of the given PEM bundle.
pub fn root_store(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .context("CA bundle holds a certificate that is not a valid trust anchor")?;
    }
    Ok(roots)
}

/// Read every CRL in a PEM file; none is an error.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a valid PEM CRL list", path.display()))?;
    if crls.is_empty() {
        bail!("{}: no PEM X509 CRL block found", path.display());
    }
    Ok(crls)
}

/// How a listener treats client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificates are requested.
    None,
    /// Certificates are requested and verified when offered, but not required.
    Optional(ClientCas),
    /// A certificate chaining to one of these CAs is required to complete the handshake.
    Required(ClientCas),
}

/// Trust anchors for client certificates, and the CRLs they are checked against.
#[derive(Debug, Clone, Default)]
pub struct ClientCas {
    pub cas: Vec<CertificateDer<'static>>,
    /// When any CRL is given, every certificate on a client's path below the configured CA —
    /// the client's own and each intermediate it sends — must be covered by a current CRL
    /// from its issuer and not be listed: a status unknown (no CRL of that issuer) or
    /// out of date (past the CRL's `nextUpdate`) is refused (fail closed, RFC 5280 §6.3).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl ClientCas {
    /// The `notAfter` of each CA (Unix seconds, ascending; a CA whose dates cannot be read
    /// has none): a chain verified while one was in force is verified again once it has
    /// expired (`authn::x509`), since past it that CA anchors nothing (`anchors`).
    pub fn ca_expiries(&self) -> Vec<i64> {
        let mut t: Vec<i64> = self
            .cas
            .iter()
            .filter_map(|c| Anchor::new(c.clone()).not_after())
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }
}

impl ClientAuth {
    /// [`ClientCas::ca_expiries`] of the client CAs (none without client certificates).
    pub fn ca_expiries(&self) -> Vec<i64> {
        match self {
            ClientAuth::Optional(c) | ClientAuth::Required(c) => c.ca_expiries(),
            ClientAuth::None => Vec::new(),
        }
    }

    /// The earliest `nextUpdate` (Unix seconds) of the client CRLs: past it the verifier
    /// refuses what that CRL covers, so a connection verified before is verified again then
    /// (`authn::x509`). `i64::MAX` without CRLs, or when none names a `nextUpdate`.
    pub fn crl_due(&self) -> i64 {
        let (ClientAuth::Optional(c) | ClientAuth::Required(c)) = self else {
            return i64::MAX;
        };
        c.crls
            .iter()
            .filter_map(|crl| x509_parser::parse_x509_crl(crl.as_ref()).ok())
            .filter_map(|(_, crl)| crl.next_update())
            .map(|t| t.timestamp())
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// A listener's TLS config and its client-certificate verifier, the one its handshakes use
/// (`None`: no client certificates are requested).
pub type ListenerTls = (
    Arc<rustls::ServerConfig>,
    Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
);

/// A server config with ALPN `h2` then `http/1.1`, from a chain and key already in memory.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>> {
    server_config_with(chain, key, client_verifier(&client_auth)?)
}

/// [`server_config`] with the client-certificate verifier already built (`None`: none are
/// requested), so the caller can keep the same verifier for authentication.
pub fn server_config_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier of client certificates `client_auth` asks for (`None`: none are requested).
/// The listener's handshakes use it, and authentication keeps the same one to verify again the
/// chain of a connection accepted under an earlier configuration (`authn::x509`).
pub fn client_verifier(
    client_auth: &ClientAuth,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>> {
    let (cas, required) = match client_auth {
        ClientAuth::None => return Ok(None),
        ClientAuth::Optional(c) | ClientAuth::Required(c) if c.cas.is_empty() => {
            bail!("client certificate CA bundle is empty")
        }
        ClientAuth::Optional(c) => (c, false),
        ClientAuth::Required(c) => (c, true),
    };
    let crls = cas.crls.clone();
    let anchors: Vec<Anchor> = cas.cas.iter().cloned().map(Anchor::new).collect();
    let build = move |cas: Vec<CertificateDer<'static>>| webpki_client(cas, &crls, required);
    let verifier: InForce<dyn rustls::server::danger::ClientCertVerifier> =
        InForce::new(anchors, Box::new(build))?;
    Ok(Some(Arc::new(verifier)))
}

/// rustls' verifier of client certificates chaining to `cas` (their dates not checked), with
/// `crls`.
pub(crate) fn webpki_client(
    cas: Vec<CertificateDer<'static>>,
    crls: &[CertificateRevocationListDer<'static>],
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(cas)?), provider());
    if !crls.is_empty() {
        // The whole path, not only the client's certificate: an intermediate the root's CRL
        // revokes must not go on vouching for the leaves it signs. And a CRL past its
        // `nextUpdate` no longer tells the status (a refresh job that stopped would otherwise
        // leave every later revocation unseen), as OpenSSL-based proxies refuse it too.
        verifier = verifier
            .with_crls(crls.iter().cloned())
            .enforce_revocation_expiration();
    }
    if !required {
        verifier = verifier.allow_unauthenticated();
    }
    verifier.build().context("client certificate verifier")
}

/// The verifier of servers' certificates chaining to one of `cas` (not empty) in force at the
/// time of the handshake.
pub fn server_verifier(
    cas: Vec<CertificateDer<'static>>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>> {
    let anchors = cas.into_iter().map(Anchor::new).collect();
    let build = |cas: Vec<CertificateDer<'static>>| {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(cas)?), provider())
                .build()
                .context("server certificate verifier")?;
        Ok(verifier as Arc<dyn rustls::client::danger::ServerCertVerifier>)
    };
    let verifier: InForce<dyn rustls::client::danger::ServerCertVerifier> =
        InForce::new(anchors, Box::new(build))?;
    Ok(Arc::new(verifier))
}

/// A client config trusting the CAs `cas` (each only within its validity period, as Go's
/// verification: `anchors`; none: no server is trusted), optionally presenting a client
/// certificate, with the given ALPN list.
pub fn client_config(
    cas: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if cas.is_empty() {
        // Nothing to filter; rustls' verifier with no root refuses every server.
        builder.with_root_certificates(RootCertStore::empty())
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(server_verifier(cas)?)
    };
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("upstream client certificate and key do not form a usable pair")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // A resumed session skips the server's certificate (rustls does not verify it again), so
    // a session saved while a CA was in force would go on being trusted after it expired.
    // The proxy's connections to the API server are pooled and long-lived, so a full
    // handshake costs little.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}
