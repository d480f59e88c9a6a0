//! The `authentication:` section validated: client certificates (the CAs and CRLs handed to
//! the TLS listener, the mode, the CN/O mapping in [`X509Identity`]), the token cache, and the
//! JWT issuers (validated into plain [`JwtSettings`] by [`crate::authn::jwt::config`]). The
//! YAML schema is `config::schema::Authentication`; the issuers' own schema is in
//! `jwt/config.rs`.
//!
//! Rejects, with the key path: no method at all, an unknown `mode`, `mode: required` together
//! with JWT issuers (bearer-only clients could not connect), no CA bundle, unreadable CA or CRL
//! files, a bad `token_cache.max_ttl`, and every issuer problem.

use std::path::Path;

pub use crate::authn::jwt::config::JwtSettings;
use crate::{
    authn::jwt::{CacheOptions, JwtAuthenticator},
    config::schema,
    problems::{Problems, Wording},
    server::tls::{ClientAuth, ClientCas},
};

/// Client-certificate identity mapping.
#[derive(Debug, Clone)]
pub struct X509Identity {
    pub username_prefix: String,
    pub groups_prefix: String,
    pub allow_system_identities: bool,
}

/// `authentication.client_certificates` validated.
pub struct ClientCertificates {
    /// The CN/O mapping (None: certificates are not requested).
    pub x509: Option<X509Identity>,
    /// `mode: required` (the default when the section is present).
    pub required: bool,
    /// What the TLS listener asks of clients.
    pub client_auth: ClientAuth,
}

/// Validate `authentication:` apart from the JWT issuers: the method check and the client
/// certificates.
pub fn client_certificates(
    c: &mut Problems,
    authn: &schema::Authentication,
    base: &Path,
) -> ClientCertificates {
    if authn.client_certificates.is_none() && authn.jwt.is_empty() {
        c.err(
            "authentication",
            "no authentication method configured",
            "set authentication.client_certificates and/or authentication.jwt; the proxy never forwards anonymous requests",
        );
    }
    let Some(cc) = &authn.client_certificates else {
        return ClientCertificates {
            x509: None,
            required: false,
            client_auth: ClientAuth::None,
        };
    };
    let required = mode(c, cc, !authn.jwt.is_empty());
    let cas = client_cas(c, cc, base);
    let client_auth = match required {
        _ if cas.cas.is_empty() => ClientAuth::None,
        true => ClientAuth::Required(cas),
        false => ClientAuth::Optional(cas),
    };
    ClientCertificates {
        x509: Some(X509Identity {
            username_prefix: cc.username_prefix.clone(),
            groups_prefix: cc.groups_prefix.clone(),
            allow_system_identities: cc.allow_system_identities,
        }),
        required,
        client_auth,
    }
}

/// `mode`: true for `required` (the default).
fn mode(c: &mut Problems, cc: &schema::ClientCertificates, with_jwt: bool) -> bool {
    let required = match cc.mode.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            c.err(
                "authentication.client_certificates.mode",
                format!("unknown mode {other:?}"),
                "use required or optional",
            );
            true
        }
    };
    if required && with_jwt {
        c.err(
            "authentication.client_certificates.mode",
            "required, but JWT issuers are configured too",
            "clients with only a bearer token could not connect; use mode: optional",
        );
    }
    required
}

/// The CA bundles and CRLs client certificates are verified against.
fn client_cas(c: &mut Problems, cc: &schema::ClientCertificates, base: &Path) -> ClientCas {
    let mut cas = ClientCas::default();
    if cc.ca_files.is_empty() {
        c.err(
            "authentication.client_certificates.ca_files",
            "no CA bundle given",
            "list at least one PEM file of CAs that sign client certificates",
        );
    }
    for (i, f) in cc.ca_files.iter().enumerate() {
        let path = format!("authentication.client_certificates.ca_files[{i}]");
        if let Some(mut certs) = c.certs(&path, f, base) {
            cas.cas.append(&mut certs);
        }
    }
    for (i, f) in cc.crl_files.iter().enumerate() {
        let path = format!("authentication.client_certificates.crl_files[{i}]");
        if let Some(mut crls) = c.crls(&path, f, base) {
            cas.crls.append(&mut crls);
        }
    }
    cas
}

/// `authentication.token_cache`.
pub fn token_cache(c: &mut Problems, authn: &schema::Authentication) -> CacheOptions {
    let mut opts = CacheOptions::default();
    if let Some(tc) = &authn.token_cache {
        if let Some(n) = tc.max_entries {
            opts.max_entries = n;
        }
        opts.max_ttl = c.duration(
            "authentication.token_cache.max_ttl",
            tc.max_ttl.as_deref(),
            opts.max_ttl,
            Wording::General,
        );
    }
    opts
}

/// The key path of the issuer list.
const JWT_PATH: &str = "authentication.jwt";

impl JwtSettings {
    /// The authenticator (key stores, HTTPS clients for remote keys, local keys read). Fails
    /// only if a file changed since validation; the error names every key path.
    pub fn build(&self) -> anyhow::Result<JwtAuthenticator> {
        crate::authn::jwt::config::authenticator(self).map_err(|p| {
            let all: Vec<String> = p.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{}", all.join("; "))
        })
    }
}

/// Validate `authentication.jwt` (None when no issuer is configured).
pub fn jwt(
    c: &mut Problems,
    authn: &schema::Authentication,
    base: &Path,
    cache: CacheOptions,
) -> Option<JwtSettings> {
    if authn.jwt.is_empty() {
        return None;
    }
    c.take(crate::authn::jwt::config::validate(
        &authn.jwt, base, JWT_PATH, cache,
    ))
}
