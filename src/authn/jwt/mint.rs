//! Issuing tokens: `portcullis token issue|keygen|inspect`, the demo and the tests.
//!
//! Signs ES256 with a P-256 PKCS#8 key or EdDSA with an Ed25519 PKCS#8 key (detected from the
//! key). `keygen` writes such a key plus the matching public JWKS, so an issuer can point
//! `jwks_file` at it. [`inspect`] decodes without verifying anything.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::SystemClock;
use crate::authn::jwt::Clock;

/// Standard claims plus anything else (`extra`, flattened into the payload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Claims issued now, valid for `ttl`.
    pub fn new(iss: &str, aud: &str, sub: &str, ttl: Duration) -> Claims {
        let now = SystemClock.now().as_secs();
        Claims {
            iss: iss.into(),
            sub: sub.into(),
            aud: vec![aud.into()],
            iat: now,
            exp: now + ttl.as_secs(),
            ..Claims::default()
        }
    }
}

/// A signing key with its algorithm and optional `kid`.
pub struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    public_jwk: Value,
}

impl Signer {
    /// A signer from a PKCS#8 PEM private key: P-256 → ES256, Ed25519 → EdDSA.
    pub fn from_pem(pem: &str, kid: Option<&str>) -> Result<Signer> {
        let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .context("no PEM private key found")?
        {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => bail!(
                "the key must be PKCS#8 (BEGIN PRIVATE KEY); convert with: openssl pkcs8 -topk8 -nocrypt"
            ),
        };
        Signer::from_pkcs8(&der, kid)
    }

    /// A signer from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8], kid: Option<&str>) -> Result<Signer> {
        super::install_crypto_provider();
        let (alg, key, mut public_jwk) = if let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
        {
            let point = pair.public_key().as_ref();
            let (x, y) = match (point.get(1..33), point.get(33..65)) {
                (Some(x), Some(y)) if point.first() == Some(&4) => (x, y),
                _ => bail!("unexpected P-256 public key encoding"),
            };
            (
                Algorithm::ES256,
                EncodingKey::from_ec_der(der),
                json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
            )
        } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8(der) {
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(der),
                json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
            )
        } else {
            bail!("the key is neither a P-256 (ES256) nor an Ed25519 (EdDSA) private key");
        };
        if let Some(obj) = public_jwk.as_object_mut() {
            obj.insert("use".into(), json!("sig"));
            obj.insert("alg".into(), json!(alg_name(alg)));
            if let Some(kid) = kid {
                obj.insert("kid".into(), json!(kid));
            }
        }
        Ok(Signer {
            alg,
            key,
            kid: kid.map(str::to_string),
            public_jwk,
        })
    }

    /// ES256 or EdDSA.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// A JWKS (`{"keys": [...]}`) holding just this key, pretty-printed.
    pub fn jwks(&self) -> String {
        serde_json::to_string_pretty(&json!({"keys": [self.public_jwk]})).unwrap_or_default()
    }

    /// Sign any serializable claims (a [`Claims`] or a `serde_json::Value`).
    pub fn issue<T: Serialize>(&self, claims: &T) -> Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).context("signing the token")
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        _ => "ES256",
    }
}

/// A fresh P-256 key: `(PKCS#8 PEM private key, public JWKS JSON)`.
pub fn generate_es256(kid: &str) -> Result<(String, String)> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| anyhow!("P-256 key generation failed"))?;
    pair_files(doc.as_ref(), kid)
}

/// A fresh Ed25519 key: `(PKCS#8 PEM private key, public JWKS JSON)`.
pub fn generate_ed25519(kid: &str) -> Result<(String, String)> {
    let doc = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
        .map_err(|_| anyhow!("Ed25519 key generation failed"))?;
    pair_files(doc.as_ref(), kid)
}

fn pair_files(der: &[u8], kid: &str) -> Result<(String, String)> {
    let signer = Signer::from_pkcs8(der, Some(kid))?;
    Ok((pem("PRIVATE KEY", der), signer.jwks()))
}

/// PEM-armour DER.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Header and claims of a token, decoded WITHOUT verifying anything.
pub fn inspect(token: &str) -> Result<(Value, Value)> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a JWT: expected three dot-separated parts");
    };
    let part = |name: &str, s: &str| -> Result<Value> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .with_context(|| format!("the {name} is not base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the {name} is not JSON"))
    };
    Ok((part("header", h)?, part("payload", p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_and_eddsa_keys_round_trip() {
        for (gen, alg) in [
            (
                generate_es256 as fn(&str) -> Result<(String, String)>,
                Algorithm::ES256,
            ),
            (generate_ed25519, Algorithm::EdDSA),
        ] {
            let (key, jwks) = gen("k1").unwrap();
            let signer = Signer::from_pem(&key, Some("k1")).unwrap();
            assert_eq!(signer.algorithm(), alg);
            let set = super::super::keys::KeySet::from_jwks(jwks.as_bytes()).unwrap();
            let token = signer
                .issue(&Claims::new(
                    "https://i",
                    "a",
                    "bob",
                    Duration::from_secs(60),
                ))
                .unwrap();
            let (header, claims) = inspect(&token).unwrap();
            assert_eq!(header["kid"], "k1");
            assert_eq!(claims["sub"], "bob");
            let (msg, sig) = token.rsplit_once('.').unwrap();
            let alg = crate::authn::jwt::alg::Alg::Jwt(alg);
            let k = set.candidates(Some("k1"), alg).next().unwrap();
            assert!(crate::authn::jwt::alg::verify(
                sig,
                msg.as_bytes(),
                &k.key,
                alg
            ));
        }
    }

    #[test]
    fn sec1_keys_are_refused_with_a_hint() {
        let err = Signer::from_pem(
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYr\n-----END EC PRIVATE KEY-----\n",
            None,
        );
        assert!(err.is_err());
    }
}
