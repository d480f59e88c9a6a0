//! Authenticating one request: which credential counts, and the one `Identity` it yields.
//!
//! Order (as kube-apiserver's union authenticator): a verified client certificate on the
//! connection wins; otherwise exactly one `Authorization: Bearer <token>` header must carry a
//! token that verifies against a configured JWT issuer. Rejected (the caller turns every case
//! into the same 401 `Unauthorized` Status): no credentials; more than one `Authorization`
//! header; a scheme other than Bearer; an empty token; a token when no issuer is configured; any
//! token the JWT verifier refuses; a certificate identity the x509 mapping refuses; a
//! certificate outside its validity period (checked on every request: a connection outlives
//! its handshake's check); a connection's chain that a reload's CAs or CRLs refuse (verified
//! again by its first request after the reload, `x509::CertAuth`).
//!
//! The identity leaves here with its tenant resolved from `authorization.tenants`.

use std::sync::Arc;

use http::{header, HeaderMap};

use super::{jwt::JwtAuthenticator, x509, Identity};
use crate::{authz::Authorizer, server::ConnInfo};

/// What authentication needs, taken from the config once when the stack is built.
#[derive(Clone)]
pub struct Authenticator {
    /// Client certificates: the mapping and this configuration's CAs (None: certificates do
    /// not authenticate).
    pub x509: Option<x509::CertAuth>,
    /// JWT issuers (None: bearer tokens do not authenticate).
    pub jwt: Option<Arc<JwtAuthenticator>>,
    /// Resolves each identity's tenant (`authorization.tenants`).
    pub authorizer: Arc<Authorizer>,
}

/// Why authentication failed — for logs only; clients always see a bare 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no credentials")]
    NoCredentials,
    /// The `Authorization` header is malformed (two of them, another scheme, empty token).
    #[error("{0}")]
    BadHeader(&'static str),
    #[error("bearer token, but no JWT issuer is configured")]
    NoIssuer,
    #[error("JWT refused: {0}")]
    Jwt(#[from] super::jwt::Rejected),
    #[error("{0}")]
    Certificate(#[from] x509::Rejected),
}

enum Bearer<'a> {
    Absent,
    Token(&'a str),
    Invalid(&'static str),
}

fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::Absent;
    };
    if values.next().is_some() {
        return Bearer::Invalid("more than one Authorization header");
    }
    let Ok(value) = value.to_str() else {
        return Bearer::Invalid("Authorization header is not visible ASCII");
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Invalid("Authorization scheme is not Bearer");
    }
    match rest.trim() {
        "" => Bearer::Invalid("empty bearer token"),
        token => Bearer::Token(token),
    }
}

/// Authenticate the request whose headers and connection are given.
pub async fn authenticate(
    config: &Authenticator,
    headers: &HeaderMap,
    conn: &ConnInfo,
) -> Result<Arc<Identity>, Failure> {
    if let (Some(certs), Some(chain)) = (&config.x509, &conn.peer_certs) {
        // Mapped once per connection and configuration (verified again after a reload), the
        // validity period checked on every request (see `x509`'s module doc).
        match certs.identity(conn, chain, x509::now(), |id| {
            config.authorizer.tenant_of(id)
        }) {
            Ok(id) => return Ok(id),
            // A certificate that yields no identity (no CN, a reserved name, refused after a
            // reload) does not end it when a bearer token came too: kube's union
            // authenticator goes on to the next authenticator after the x509 one fails.
            Err(rejected)
                if config.jwt.is_some() && matches!(bearer(headers), Bearer::Token(_)) =>
            {
                tracing::info!(reason = %rejected, "client certificate yields no identity; trying the bearer token");
            }
            Err(rejected) => return Err(rejected.into()),
        }
    }
    match bearer(headers) {
        Bearer::Absent => Err(Failure::NoCredentials),
        Bearer::Invalid(why) => Err(Failure::BadHeader(why)),
        Bearer::Token(token) => {
            let jwt = config.jwt.as_ref().ok_or(Failure::NoIssuer)?;
            let id = jwt.authenticate(token).await?;
            // The cached identity has no tenant (the authorizer, which names it, may be
            // replaced by a reload while the token cache lives on): resolved per request, and
            // the shared identity is copied only when it has one.
            match config.authorizer.tenant_of(&id) {
                None => Ok(id),
                Some(tenant) => {
                    let mut id = Arc::unwrap_or_clone(id);
                    id.tenant = Some(tenant);
                    Ok(Arc::new(id))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn bearer_parsing() {
        assert!(matches!(bearer(&h(&[])), Bearer::Absent));
        assert!(matches!(bearer(&h(&["Bearer abc"])), Bearer::Token("abc")));
        assert!(matches!(
            bearer(&h(&["bearer  abc "])),
            Bearer::Token("abc")
        ));
        assert!(matches!(
            bearer(&h(&["Bearer"])),
            Bearer::Invalid("empty bearer token")
        ));
        assert!(matches!(
            bearer(&h(&["Bearer   "])),
            Bearer::Invalid("empty bearer token")
        ));
        assert!(matches!(bearer(&h(&["Basic eDp5"])), Bearer::Invalid(_)));
        assert!(matches!(
            bearer(&h(&["Bearer a", "Bearer b"])),
            Bearer::Invalid(_)
        ));
    }
}
