//! Verification keys from a JWKS document or a PEM file. Accepted: RSA, EC P-256 / P-384 /
//! P-521 and Ed25519 signature keys, each restricted to the algorithm it was published for.
//! Skipped: `use: enc` keys, symmetric (`oct`) keys, unsupported curves, a P-521 point off the
//! curve or not at full length, a declared `alg` that does not fit the key type, and anything
//! unparsable. A PEM file the proxy cannot use is an error (`Key::from_pem`).

use std::str::FromStr;

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::MAX_KEYS;
use crate::authn::jwt::alg::{Alg, Family, Key};

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub key: Key,
    /// The only algorithms this key may verify (from the JWK `alg` / EC curve), if restricted.
    pub algorithms: Option<Vec<Alg>>,
}

impl VerifyKey {
    /// Whether this key may check a signature made with `alg`: same key type, and the
    /// algorithm the key was published for.
    pub fn accepts(&self, alg: Alg) -> bool {
        // HMAC secrets never come from a key set (they are the issuer's `hmac_secret_file`).
        self.key.family() == alg.family()
            && alg.family() != Family::Hmac
            && self.algorithms.as_ref().is_none_or(|a| a.contains(&alg))
    }
}

/// The keys of one issuer at one moment.
#[derive(Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Keys that may verify a token with this `kid` (any key when the token has none) and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.accepts(alg) && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
    }

    /// The algorithms some key of this set can check, in [`Alg::asymmetric`]'s order.
    pub fn algorithms(&self) -> Vec<Alg> {
        Alg::asymmetric()
            .filter(|a| self.keys.iter().any(|k| k.accepts(*a)))
            .collect()
    }

    pub(super) fn has(&self, kid: Option<&str>, alg: Alg) -> bool {
        self.candidates(kid, alg).next().is_some()
    }

    /// Parse a JWKS document, keeping the usable signature keys. A well-formed document
    /// without one is an answer too (an empty set): an identity provider that revokes by
    /// publishing `{"keys":[]}`, or moves to keys this proxy cannot use, has revoked the old
    /// ones — as go-oidc stores whatever its JWKS holds.
    pub fn from_jwks(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS JSON document: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("not a JWKS: no \"keys\" array".into());
        };
        let keys: Vec<VerifyKey> = list.iter().filter_map(jwk_to_key).take(MAX_KEYS).collect();
        Ok(KeySet { keys })
    }
}

fn jwk_to_key(v: &Value) -> Option<VerifyKey> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = s("kid").map(str::to_string);
    let declared = match s("alg") {
        Some(a) => Some(Alg::from_str(a).ok()?),
        None => None,
    };
    let (key, mut algorithms) = match s("kty")? {
        "RSA" => (
            Key::Jwt(DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?),
            None,
        ),
        "EC" => {
            let ec = || {
                DecodingKey::from_ec_components(s("x")?, s("y")?)
                    .ok()
                    .map(Key::Jwt)
            };
            match s("crv")? {
                "P-256" => (ec()?, Some(vec![Alg::ES256])),
                "P-384" => (ec()?, Some(vec![Alg::ES384])),
                "P-521" => (
                    Key::p521_from_components(s("x")?, s("y")?)?,
                    Some(vec![Alg::ES512]),
                ),
                _ => return None,
            }
        }
        "OKP" if s("crv")? == "Ed25519" => (
            Key::Jwt(DecodingKey::from_ed_components(s("x")?).ok()?),
            Some(vec![Alg::EDDSA]),
        ),
        _ => return None,
    };
    if let Some(alg) = declared {
        match &algorithms {
            Some(allowed) if !allowed.contains(&alg) => return None,
            _ => algorithms = Some(vec![alg]),
        }
    }
    let key = VerifyKey {
        kid,
        key,
        algorithms,
    };
    // A key whose declared alg does not fit its type (e.g. kty RSA, alg HS256) is useless.
    if let Some(a) = &key.algorithms {
        if !a.iter().any(|alg| key.accepts(*alg)) {
            return None;
        }
    }
    Some(key)
}

/// A PEM public key (RSA, EC P-256 / P-384 / P-521 or Ed25519; see [`Key::from_pem`]); an EC
/// key checks only its curve's algorithm, as from a JWKS.
pub fn pem_to_key(pem: &[u8], kid: &str) -> Result<VerifyKey, String> {
    let (key, curve) = Key::from_pem(pem)?;
    Ok(VerifyKey {
        kid: Some(kid.to_string()),
        key,
        algorithms: curve.map(|alg| vec![alg]),
    })
}
