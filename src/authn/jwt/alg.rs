//! The signing algorithms a token's `alg` may name, and the public keys that check them.
//!
//! kube-apiserver's JWT authenticator allows RS256/384/512, ES256/384/512 and PS256/384/512
//! (`allowedSigningAlgs`, all of them under an AuthenticationConfiguration). jsonwebtoken 11
//! checks all of them but ES512 (ECDSA on P-521 with SHA-512), so [`Alg`] is jsonwebtoken's
//! [`Algorithm`] or [`Alg::Es512`], and [`Key`] a jsonwebtoken [`DecodingKey`] or a P-521 key,
//! whose signatures aws-lc-rs checks directly (the one crypto provider the proxy uses). A
//! P-521 key checks ES512 only, and ES512 is checked with nothing else: neither key nor
//! algorithm can stand in for another (no algorithm confusion).

use std::{fmt, str::FromStr};

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P521_SHA512_FIXED};
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

impl From<AlgorithmFamily> for Family {
    fn from(f: AlgorithmFamily) -> Family {
        match f {
            AlgorithmFamily::Rsa => Family::Rsa,
            AlgorithmFamily::Ec => Family::Ec,
            AlgorithmFamily::Ed => Family::Ed,
            AlgorithmFamily::Hmac => Family::Hmac,
        }
    }
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

    /// kube-apiserver's signing algorithms under an AuthenticationConfiguration
    /// (`allowedSigningAlgs`: RS, ES and PS with 256 / 384 / 512).
    pub const KUBE_APISERVER: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
    ];

    /// Every algorithm a key set's key can check: the API server's and EdDSA (HMAC secrets
    /// are never in a key set).
    pub fn asymmetric() -> impl Iterator<Item = Alg> {
        Alg::KUBE_APISERVER.into_iter().chain([Alg::EDDSA])
    }

    pub fn family(self) -> Family {
        match self {
            Alg::Es512 => Family::P521,
            Alg::Jwt(a) => a.family().into(),
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

/// `RS256, ES256, …`: a list of algorithms as messages and logs write it.
pub fn names(algs: &[Alg]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key that checks signatures (its `Debug` shows no key material).
#[derive(Clone)]
pub enum Key {
    Jwt(DecodingKey),
    /// A P-521 public key, its point checked on the curve when loaded.
    P521(ParsedPublicKey),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.family())
    }
}

/// Coordinates of a P-521 point: 521 bits, 66 bytes each (RFC 7518 §6.2.1.2: the full length).
const P521_COORDINATE: usize = 66;

impl Key {
    pub fn family(&self) -> Family {
        match self {
            Key::P521(_) => Family::P521,
            Key::Jwt(k) => k.family().into(),
        }
    }

    /// An HMAC secret (an issuer's `hmac_secret_file`).
    pub fn hmac(secret: &[u8]) -> Key {
        Key::Jwt(DecodingKey::from_secret(secret))
    }

    /// A P-521 key from a JWK's base64url `x` and `y`; `None` unless each is 66 bytes and the
    /// point is on the curve.
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
        p521_point(&point)
    }

    /// A public key from a PEM: a SubjectPublicKeyInfo (`PUBLIC KEY`), a certificate's, or
    /// PKCS#1 `RSA PUBLIC KEY`. RSA, Ed25519 and EC P-256 / P-384 keys are jsonwebtoken's; a
    /// P-521 key is checked here. An EC key on any other curve or with explicit curve
    /// parameters, a P-521 point that is not uncompressed and on the curve, or bytes after the
    /// key are an error, not a key that could never verify.
    ///
    /// With the key, the one algorithm an EC key's curve allows (ES256 for P-256, ES384 for
    /// P-384, ES512 for P-521), as a JWK's `crv` restricts it: jsonwebtoken files P-256 and
    /// P-384 keys under one family, which alone would offer a P-256 key to ES384 tokens it can
    /// never verify.
    pub fn from_pem(pem: &[u8]) -> Result<(Key, Option<Alg>), String> {
        let curve = match ec_key_checked(pem)? {
            Some(EcPem::P521(key)) => return Ok((key, Some(Alg::ES512))),
            Some(EcPem::Named(alg)) => Some(alg),
            None => None,
        };
        DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map(|key| (Key::Jwt(key), curve))
            .map_err(|_| "not an RSA, EC or Ed25519 PEM public key".to_string())
    }
}

/// What [`ec_key_checked`] found in an EC SubjectPublicKeyInfo.
enum EcPem {
    /// A P-521 key, parsed here.
    P521(Key),
    /// A P-256 / P-384 key, left to jsonwebtoken, and the algorithm of its curve.
    Named(Alg),
}

/// A P-521 key from an uncompressed point (`0x04 || x || y`) on the curve.
fn p521_point(point: &[u8]) -> Option<Key> {
    if point.len() != 1 + 2 * P521_COORDINATE || point.first() != Some(&0x04) {
        return None;
    }
    ParsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point)
        .ok()
        .map(Key::P521)
}

/// The PEM's SubjectPublicKeyInfo, when it holds an EC key: the key for P-521, the curve's
/// algorithm for P-256 / P-384 (the key left to jsonwebtoken), `Ok(None)` for anything not an
/// EC SubjectPublicKeyInfo (left to jsonwebtoken), `Err` for what no algorithm could use.
fn ec_key_checked(pem: &[u8]) -> Result<Option<EcPem>, String> {
    use x509_parser::{
        oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
        },
        prelude::FromDer,
        x509::SubjectPublicKeyInfo,
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return Ok(None);
    };
    let spki = match pem.label.as_str() {
        "PUBLIC KEY" => match SubjectPublicKeyInfo::from_der(&pem.contents) {
            Ok((rest, spki)) => {
                if !rest.is_empty() && spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
                    return Err("bytes follow the EC public key in the PEM".into());
                }
                spki
            }
            Err(_) => return Ok(None),
        },
        "CERTIFICATE" => match x509_parser::parse_x509_certificate(&pem.contents) {
            Ok((_, cert)) => cert.tbs_certificate.subject_pki,
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Ok(None);
    }
    let Some(curve) = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
    else {
        return Err("an EC key without a named curve; use P-256, P-384 or P-521".into());
    };
    if curve == OID_EC_P256 {
        return Ok(Some(EcPem::Named(Alg::ES256)));
    }
    if curve == OID_NIST_EC_P384 {
        return Ok(Some(EcPem::Named(Alg::ES384)));
    }
    if curve != OID_NIST_EC_P521 {
        return Err(format!(
            "an EC key on curve {curve}, which no JWS algorithm uses; use P-256, P-384 or P-521"
        ));
    }
    p521_point(&spki.subject_public_key.data)
        .map(|key| Some(EcPem::P521(key)))
        .ok_or_else(|| {
            "a P-521 key whose point is not uncompressed (0x04 || x || y) on the curve; \
             export it with openssl ec -pubin -conv_form uncompressed"
                .into()
        })
}

/// Whether `sig` (base64url) is `key`'s signature of `message` under `alg`. A key of another
/// family than `alg`'s never verifies.
pub fn verify(sig: &str, message: &[u8], key: &Key, alg: Alg) -> bool {
    match (alg, key) {
        (Alg::Jwt(alg), Key::Jwt(key)) => matches!(
            jsonwebtoken::crypto::verify(sig, message, key, alg),
            Ok(true)
        ),
        (Alg::Es512, Key::P521(key)) => {
            let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
                return false;
            };
            key.verify_sig(message, &sig).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
