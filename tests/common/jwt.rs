//! An independent JWT forge for tests (aws-lc-rs directly, not the proxy's own minting code),
//! so the verifier is checked against tokens it did not produce.

use aws_lc_rs::{
    hmac,
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P521_SHA512_FIXED_SIGNING,
    },
};
use base64::Engine;
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
use serde_json::{json, Value};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An ES256 (P-256) or ES512 (P-521) signing key with its kid.
pub struct Forge {
    key: EcdsaKeyPair,
    pub kid: String,
    /// `ES256` or `ES512`.
    alg: &'static str,
}

impl Forge {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Forge {
        Forge::fresh(&ECDSA_P256_SHA256_FIXED_SIGNING, "ES256", kid)
    }

    /// A fresh P-521 key (ES512).
    pub fn generate_p521(kid: &str) -> Forge {
        Forge::fresh(&ECDSA_P521_SHA512_FIXED_SIGNING, "ES512", kid)
    }

    fn fresh(alg: &'static EcdsaSigningAlgorithm, name: &'static str, kid: &str) -> Forge {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
        Forge {
            key,
            kid: kid.into(),
            alg: name,
        }
    }

    /// Load a PKCS#8 P-256 private key PEM (e.g. the demo's signing key).
    pub fn from_pem(pem: &str, kid: &str) -> Forge {
        let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap() {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("not PKCS#8: {other:?}"),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
        Forge {
            key,
            kid: kid.into(),
            alg: "ES256",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref(); // 0x04 || X || Y
        let n = (point.len() - 1) / 2;
        let crv = if self.alg == "ES512" {
            "P-521"
        } else {
            "P-256"
        };
        json!({"kty": "EC", "crv": crv, "x": b64(&point[1..=n]), "y": b64(&point[1 + n..]), "kid": self.kid, "alg": self.alg, "use": "sig"})
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_der(&self) -> Vec<u8> {
        use aws_lc_rs::encoding::AsDer;
        self.key.public_key().as_der().unwrap().as_ref().to_vec()
    }

    /// The public key as a PEM `PUBLIC KEY`.
    pub fn public_pem(&self) -> String {
        portcullis::authn::jwt::mint::pem("PUBLIC KEY", &self.public_der())
    }

    /// The public key's uncompressed point bytes (for the "HMAC keyed with the public key" attack).
    pub fn public_bytes(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Sign `claims` with this key's algorithm under its kid.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg, "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// Sign with an arbitrary header (this key's signature regardless of what the header says).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// `alg: none`, no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// HS256 with `secret` as the key, under `kid`.
pub fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Replace the payload of a signed token (signature left as it was).
pub fn tamper(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (h, _, s) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
    format!("{h}.{}.{s}", b64(claims.to_string().as_bytes()))
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
