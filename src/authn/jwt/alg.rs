//! The signing algorithms a token's `alg` may name, and the public keys that check them.
//!
//! kube-apiserver's JWT authenticator (go-oidc) accepts RS256/384/512, ES256/384/512 and
//! PS256/384/512. jsonwebtoken 11 checks all of them but ES512 (ECDSA on P-521 with SHA-512),
//! so [`Alg`] is jsonwebtoken's [`Algorithm`] or [`Alg::Es512`], and [`Key`] a jsonwebtoken
//! [`DecodingKey`] or a P-521 point, whose signatures aws-lc-rs checks directly (the one crypto
//! provider the proxy uses). A P-521 key checks ES512 only, and ES512 is checked with nothing
//! else: neither key nor algorithm can stand in for another (no algorithm confusion).

use std::{fmt, str::FromStr};

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P521_SHA512_FIXED};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// A token signing algorithm the proxy can check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Jwt(Algorithm),
    /// ECDSA using P-521 and SHA-512 (RFC 7518 §3.4): a 132-byte `r || s` signature.
    Es512,
}

/// The key type an algorithm needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    Rsa,
    /// P-256 / P-384 (jsonwebtoken's `Ec`).
    Ec,
    /// P-521 (ES512).
    P521,
    Ed,
    Hmac,
}

impl Alg {
    pub const RS256: Alg = Alg::Jwt(Algorithm::RS256);
    pub const RS384: Alg = Alg::Jwt(Algorithm::RS384);
    pub const RS512: Alg = Alg::Jwt(Algorithm::RS512);
    pub const ES256: Alg = Alg::Jwt(Algorithm::ES256);
    pub const ES384: Alg = Alg::Jwt(Algorithm::ES384);
    pub const ES512: Alg = Alg::Es512;
    pub const PS256: Alg = Alg::Jwt(Algorithm::PS256);
    pub const PS384: Alg = Alg::Jwt(Algorithm::PS384);
    pub const PS512: Alg = Alg::Jwt(Algorithm::PS512);
    pub const EDDSA: Alg = Alg::Jwt(Algorithm::EdDSA);
    pub const HS256: Alg = Alg::Jwt(Algorithm::HS256);
    pub const HS384: Alg = Alg::Jwt(Algorithm::HS384);
    pub const HS512: Alg = Alg::Jwt(Algorithm::HS512);

    pub fn family(self) -> Family {
        match self {
            Alg::Es512 => Family::P521,
            Alg::Jwt(a) => match a.family() {
                AlgorithmFamily::Rsa => Family::Rsa,
                AlgorithmFamily::Ec => Family::Ec,
                AlgorithmFamily::Ed => Family::Ed,
                AlgorithmFamily::Hmac => Family::Hmac,
            },
        }
    }
}

impl FromStr for Alg {
    type Err = ();
    /// Case-sensitive, as a JWS `alg` is (RFC 7515 §4.1.1).
    fn from_str(name: &str) -> Result<Alg, ()> {
        if name == "ES512" {
            return Ok(Alg::Es512);
        }
        Algorithm::from_str(name).map(Alg::Jwt).map_err(|_| ())
    }
}

/// Written as the name (`RS256`, `ES512`), so messages read `algorithm ES512 is not allowed`.
impl fmt::Debug for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alg::Es512 => f.write_str("ES512"),
            Alg::Jwt(a) => write!(f, "{a:?}"),
        }
    }
}

/// A key that checks signatures (its `Debug` shows no key material).
#[derive(Clone)]
pub enum Key {
    Jwt(DecodingKey),
    /// An uncompressed P-521 point (`0x04 || x || y`, 133 bytes).
    P521(Vec<u8>),
}

/// Coordinates of a P-521 point: 521 bits, 66 bytes each (RFC 7518 §6.2.1.2: the full length).
const P521_COORDINATE: usize = 66;

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.family())
    }
}

impl Key {
    pub fn family(&self) -> Family {
        match self {
            Key::P521(_) => Family::P521,
            Key::Jwt(k) => match k.family() {
                AlgorithmFamily::Rsa => Family::Rsa,
                AlgorithmFamily::Ec => Family::Ec,
                AlgorithmFamily::Ed => Family::Ed,
                AlgorithmFamily::Hmac => Family::Hmac,
            },
        }
    }

    /// A P-521 key from a JWK's base64url `x` and `y`; `None` unless each is 66 bytes.
    pub fn p521_from_components(x: &str, y: &str) -> Option<Key> {
        let (x, y) = (
            URL_SAFE_NO_PAD.decode(x).ok()?,
            URL_SAFE_NO_PAD.decode(y).ok()?,
        );
        if x.len() != P521_COORDINATE || y.len() != P521_COORDINATE {
            return None;
        }
        let mut point = Vec::with_capacity(1 + 2 * P521_COORDINATE);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Some(Key::P521(point))
    }

    /// A P-521 key from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, id-ecPublicKey on
    /// secp521r1); `None` for anything else.
    pub fn p521_from_pem(pem: &[u8]) -> Option<Key> {
        use x509_parser::{
            oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P521},
            prelude::FromDer,
            x509::SubjectPublicKeyInfo,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
        if pem.label != "PUBLIC KEY" {
            return None;
        }
        let (rest, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).ok()?;
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if !rest.is_empty()
            || spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
            || curve != OID_NIST_EC_P521
        {
            return None;
        }
        let point = spki.subject_public_key.data.to_vec();
        (point.len() == 1 + 2 * P521_COORDINATE && point[0] == 0x04).then_some(Key::P521(point))
    }
}

/// Whether `sig` (base64url) is `key`'s signature of `message` under `alg`. A key of another
/// family than `alg`'s never verifies.
pub fn verify(sig: &str, message: &[u8], key: &Key, alg: Alg) -> bool {
    match (alg, key) {
        (Alg::Jwt(alg), Key::Jwt(key)) => matches!(
            jsonwebtoken::crypto::verify(sig, message, key, alg),
            Ok(true)
        ),
        (Alg::Es512, Key::P521(point)) => {
            let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
                return false;
            };
            UnparsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point)
                .verify(message, &sig)
                .is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
