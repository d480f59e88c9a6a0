//! Authenticating one request: which credential counts, and the one `Identity` it yields.
//!
//! Order (as kube-apiserver's union authenticator): a verified client certificate on the
//! connection wins; otherwise exactly one `Authorization: Bearer <token>` header must carry a
//! token that verifies against a configured JWT issuer; failing that, a WebSocket upgrade may
//! carry its token as a `Sec-WebSocket-Protocol` entry `base64url.bearer.authorization.k8s.io.
//! <unpadded base64url>` (what browser clients send, who cannot set `Authorization` on a
//! WebSocket; kube-apiserver's `websocket.NewProtocolAuthenticator`, tried after the header in
//! its union). That entry is never forwarded (`k8s::headers::strip_bearer_protocols`). Rejected
//! (the caller turns every case into the same 401 `Unauthorized` Status): no credentials; more
//! than one `Authorization` header; a scheme other than Bearer; an empty token; more than one
//! token subprotocol, one that is not base64url of UTF-8, or one with no other subprotocol
//! beside it (the server must echo one back); a token when no issuer is configured; any
//! token the JWT verifier refuses; a certificate identity the x509 mapping refuses; a
//! certificate outside its validity period (checked on every request: a connection outlives
//! its handshake's check); a connection's chain that a reload's CAs or CRLs refuse (verified
//! again by its first request after the reload, `x509::CertAuth`).
//!
//! The identity leaves here with its tenant resolved from `authorization.tenants`.

use std::sync::Arc;

use http::{header, HeaderMap};

use base64::{
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};

use super::{jwt::JwtAuthenticator, x509, Identity};
use crate::{authz::Authorizer, k8s::headers::BEARER_PROTOCOL, server::ConnInfo};

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

/// Why authentication failed — for logs only; clients see a bare 401 (with, for
/// [`Failure::SpaceBeforeToken`] only, the API server's `Warning` for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no credentials")]
    NoCredentials,
    /// The `Authorization` header is malformed (two of them, another scheme, empty token), or a
    /// WebSocket's token subprotocol is (two of them, not base64url of UTF-8, alone).
    #[error("{0}")]
    BadHeader(&'static str),
    /// `Authorization: Bearer  <token>`: a space before the token, which kube-apiserver reads
    /// as no token at all (and warns about; [`space_before_token_warning`]).
    #[error("a space before the bearer token")]
    SpaceBeforeToken,
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
    /// `Bearer  <token>` (see [`Failure::SpaceBeforeToken`]).
    SpaceBeforeToken,
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
    // As kube-apiserver's bearer token authenticator reads it: the value trimmed, then split
    // on single spaces; the first part is the scheme (any case), the second the token, and a
    // third part and on are ignored ("Bearer tok x" is "tok"). An empty second part — a space
    // before the token, "Bearer  tok" — is no token there (the API server warns and goes on to
    // its other authenticators, which find none in the header), so it is none here either:
    // accepting it would let a header the API server refuses pass through the proxy.
    let mut parts = value.trim().split(' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Invalid("Authorization scheme is not Bearer");
    }
    match token {
        None => Bearer::Invalid("empty bearer token"),
        Some("") => Bearer::SpaceBeforeToken,
        Some(token) => Bearer::Token(token),
    }
}

/// The `Warning` kube-apiserver adds to its answer when the `Authorization` header has a space
/// before the bearer token (`bearertoken.go`, `invalidTokenWithSpaceWarning`); kubectl prints it.
pub(super) fn space_before_token_warning() -> http::HeaderValue {
    http::HeaderValue::from_static(
        "299 - \"the provided Authorization header contains extra space before the bearer token, and is ignored\"",
    )
}

/// The token a WebSocket upgrade carries as a subprotocol, read as kube-apiserver's protocol
/// authenticator reads it: each `Sec-WebSocket-Protocol` value split on `,` and trimmed, the
/// entry that starts with [`BEARER_PROTOCOL`] (case as written), its rest unpadded base64url
/// of UTF-8 text. `None` for a request that is not a WebSocket upgrade, or carries no such
/// entry (or an empty one, which the API server also reads as no token).
fn websocket_bearer(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    if !crate::k8s::request::is_websocket_upgrade(headers) {
        return Ok(None);
    }
    let mut token = None;
    let mut others = false;
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for entry in value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
        {
            let Some(encoded) = entry.strip_prefix(BEARER_PROTOCOL.as_bytes()) else {
                others = true;
                continue;
            };
            if token.is_some() {
                return Err("more than one bearer token subprotocol");
            }
            let decoded = RAW_URL
                .decode(encoded)
                .map_err(|_| "bearer token subprotocol is not base64url")?;
            token = Some(
                String::from_utf8(decoded).map_err(|_| "bearer token subprotocol is not UTF-8")?,
            );
        }
    }
    match token {
        Some(t) if t.is_empty() => Ok(None),
        Some(_) if !others => Err("bearer token subprotocol without another subprotocol"),
        t => Ok(t),
    }
}

/// The identity a bearer token (from the header or a subprotocol) verifies to.
async fn by_token(config: &Authenticator, token: &str) -> Result<Arc<Identity>, Failure> {
    let jwt = config.jwt.as_ref().ok_or(Failure::NoIssuer)?;
    let id = jwt.authenticate(token).await?;
    // The cached identity has no tenant (the authorizer, which names it, may be replaced by a
    // reload while the token cache lives on): resolved per request, and the shared identity
    // is copied only when it has one.
    match config.authorizer.tenant_of(&id) {
        None => Ok(id),
        Some(tenant) => {
            let mut id = Arc::unwrap_or_clone(id);
            id.tenant = Some(tenant);
            Ok(Arc::new(id))
        }
    }
}

/// Go's `base64.RawURLEncoding` as it decodes: no padding, and the unused bits of a last
/// partial byte not checked (Go's decoding is strict only when asked).
const RAW_URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// What [`authenticate`] found.
pub struct Authenticated {
    pub result: Result<Arc<Identity>, Failure>,
    /// The `Authorization` header was read (no client certificate authenticated the request)
    /// and has a space before its bearer token: kube-apiserver's bearer authenticator warns
    /// about it whenever it runs, whatever the outcome ([`space_before_token_warning`]).
    pub space_before_token: bool,
}

/// Authenticate the request whose headers and connection are given.
pub async fn authenticate(
    config: &Authenticator,
    headers: &HeaderMap,
    conn: &ConnInfo,
) -> Authenticated {
    let mut certificate = None;
    if let (Some(certs), Some(chain)) = (&config.x509, &conn.peer_certs) {
        // Mapped once per connection and configuration (verified again after a reload), the
        // validity period checked on every request (see `x509`'s module doc).
        match certs.identity(conn, chain, x509::now(), |id| {
            config.authorizer.tenant_of(id)
        }) {
            Ok(id) => {
                return Authenticated {
                    result: Ok(id),
                    space_before_token: false,
                }
            }
            Err(rejected) => certificate = Some(rejected),
        }
    }
    let header = bearer(headers);
    Authenticated {
        space_before_token: matches!(header, Bearer::SpaceBeforeToken),
        result: by_bearer(config, headers, header, certificate).await,
    }
}

/// The bearer header's token, then a WebSocket token subprotocol, once no client certificate
/// authenticated the request (`certificate`: why the one sent did not).
async fn by_bearer(
    config: &Authenticator,
    headers: &HeaderMap,
    header: Bearer<'_>,
    certificate: Option<x509::Rejected>,
) -> Result<Arc<Identity>, Failure> {
    if let Some(rejected) = certificate {
        // A certificate that yields no identity (no CN, a reserved name, refused after a
        // reload) does not end it when a bearer token came too: kube's union authenticator
        // goes on to the next authenticator after the x509 one fails.
        let token_too = config.jwt.is_some()
            && (matches!(header, Bearer::Token(_))
                || matches!(websocket_bearer(headers), Ok(Some(_))));
        if !token_too {
            return Err(rejected.into());
        }
        tracing::info!(reason = %rejected, "client certificate yields no identity; trying the bearer token");
    }
    let failed = match header {
        Bearer::Token(token) => match by_token(config, token).await {
            Ok(id) => return Ok(id),
            Err(failure) => failure,
        },
        Bearer::Absent => Failure::NoCredentials,
        Bearer::Invalid(why) => Failure::BadHeader(why),
        Bearer::SpaceBeforeToken => Failure::SpaceBeforeToken,
    };
    // As the API server's union goes on to its WebSocket protocol authenticator after the
    // bearer header's fails; when both fail, the header's failure is the one logged.
    let by_protocol = match websocket_bearer(headers) {
        Ok(None) => return Err(failed),
        Ok(Some(token)) => by_token(config, &token).await,
        Err(why) => Err(Failure::BadHeader(why)),
    };
    by_protocol.map_err(|protocol| match failed {
        Failure::NoCredentials => protocol,
        header => header,
    })
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

    fn ws(protocols: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        m.insert(header::UPGRADE, "websocket".parse().unwrap());
        for p in protocols {
            m.append(header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
        }
        m
    }

    /// Read as kube-apiserver's `websocket.ProtocolAuthenticator` reads it.
    #[test]
    fn websocket_bearer_parsing() {
        let tok = "base64url.bearer.authorization.k8s.io.ZXlKaGJHY2lPaUpGVXpJMU5pSjkuZS5z";
        let ok = |p: &[&str]| websocket_bearer(&ws(p));
        assert_eq!(
            ok(&["v5.channel.k8s.io", tok]),
            Ok(Some("eyJhbGciOiJFUzI1NiJ9.e.s".to_owned()))
        );
        // Entries split across one value, any spacing; the offer's order does not matter.
        assert_eq!(
            ok(&[&format!(" {tok} ,v4.channel.k8s.io")]),
            Ok(Some("eyJhbGciOiJFUzI1NiJ9.e.s".to_owned()))
        );
        assert_eq!(ok(&["v5.channel.k8s.io"]), Ok(None));
        assert_eq!(ok(&[]), Ok(None));
        // An empty token is no token, as there.
        assert_eq!(
            ok(&[
                "v5.channel.k8s.io",
                "base64url.bearer.authorization.k8s.io."
            ]),
            Ok(None)
        );
        assert!(ok(&[tok]).is_err(), "alone: nothing left to echo back");
        assert!(ok(&["v5.channel.k8s.io", tok, tok]).is_err(), "two tokens");
        assert!(
            ok(&["v5.channel.k8s.io", &format!("{tok}=")]).is_err(),
            "padded"
        );
        // Unused trailing bits are not checked, as Go's decoder does not: `eB` is `x` too.
        assert_eq!(
            ok(&[
                "v5.channel.k8s.io",
                "base64url.bearer.authorization.k8s.io.eB"
            ]),
            Ok(Some("x".to_owned()))
        );
        assert!(
            ok(&[
                "v5.channel.k8s.io",
                "base64url.bearer.authorization.k8s.io.a+b/"
            ])
            .is_err(),
            "standard alphabet"
        );
        // `//8` is 0xff 0xff: not UTF-8.
        assert!(ok(&[
            "v5.channel.k8s.io",
            "base64url.bearer.authorization.k8s.io.__8"
        ])
        .is_err());
        // The prefix is matched as written (Go's `strings.HasPrefix`): another case is just
        // another subprotocol (and is stripped before forwarding all the same).
        assert_eq!(
            ok(&[
                "v5.channel.k8s.io",
                "Base64url.bearer.authorization.k8s.io.eA"
            ]),
            Ok(None)
        );
        // Only on a WebSocket upgrade.
        let mut plain = ws(&["v5.channel.k8s.io", tok]);
        plain.remove(header::UPGRADE);
        assert_eq!(websocket_bearer(&plain), Ok(None));
        let mut spdy = ws(&["v5.channel.k8s.io", tok]);
        spdy.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert_eq!(websocket_bearer(&spdy), Ok(None));
        let mut no_connection = ws(&["v5.channel.k8s.io", tok]);
        no_connection.remove(header::CONNECTION);
        assert_eq!(websocket_bearer(&no_connection), Ok(None));
    }

    #[test]
    fn bearer_parsing() {
        assert!(matches!(bearer(&h(&[])), Bearer::Absent));
        assert!(matches!(bearer(&h(&["Bearer abc"])), Bearer::Token("abc")));
        // kube-apiserver's reading: trimmed, split on single spaces, the second part.
        assert!(matches!(bearer(&h(&["bearer abc "])), Bearer::Token("abc")));
        assert!(matches!(
            bearer(&h(&["Bearer abc def"])),
            Bearer::Token("abc")
        ));
        // A space before the token: no token (the API server refuses it too).
        assert!(matches!(
            bearer(&h(&["bearer  abc "])),
            Bearer::SpaceBeforeToken
        ));
        // A tab is not the separator.
        assert!(matches!(
            bearer(&h(&["Bearer\tabc"])),
            Bearer::Invalid("Authorization scheme is not Bearer")
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
