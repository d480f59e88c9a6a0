use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING,
    },
};

use super::*;

fn p521() -> EcdsaKeyPair {
    EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap()
}

fn sign(pair: &EcdsaKeyPair, message: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(pair.sign(&SystemRandom::new(), message).unwrap().as_ref())
}

/// The JWK `x` and `y` of a key pair's public point.
fn jwk_xy(pair: &EcdsaKeyPair) -> (String, String) {
    let point = pair.public_key().as_ref();
    let n = (point.len() - 1) / 2;
    (
        URL_SAFE_NO_PAD.encode(&point[1..=n]),
        URL_SAFE_NO_PAD.encode(&point[1 + n..]),
    )
}

fn spki_pem(pair: &EcdsaKeyPair) -> String {
    let der = pair.public_key().as_der().unwrap();
    crate::authn::jwt::mint::pem("PUBLIC KEY", der.as_ref())
}

/// An ES512 signature verifies with its P-521 key, from a JWK or a PEM, and with nothing
/// else: another message, another key.
#[test]
fn es512_verifies_with_its_p521_key_only() {
    let pair = p521();
    let message = b"header.payload";
    let sig = sign(&pair, message);
    let (x, y) = jwk_xy(&pair);
    let from_jwk = Key::p521_from_components(&x, &y).unwrap();
    let from_pem = Key::p521_from_pem(spki_pem(&pair).as_bytes()).unwrap();
    assert_eq!(from_jwk.family(), Family::P521);
    assert!(verify(&sig, message, &from_jwk, Alg::ES512));
    assert!(verify(&sig, message, &from_pem, Alg::ES512));
    assert!(!verify(&sig, b"header.payloaD", &from_jwk, Alg::ES512));
    let (x2, y2) = jwk_xy(&p521());
    let other = Key::p521_from_components(&x2, &y2).unwrap();
    assert!(!verify(&sig, message, &other, Alg::ES512));
    assert!(!verify("not base64!", message, &from_jwk, Alg::ES512));
}

/// Neither the key nor the algorithm stands in for another: ES512 is never checked with a
/// P-256 key, and a P-521 key checks nothing but ES512.
#[test]
fn no_algorithm_confusion_with_p521() {
    let pair = p521();
    let (x, y) = jwk_xy(&pair);
    let p521_key = Key::p521_from_components(&x, &y).unwrap();
    let message = b"m";
    let sig = sign(&pair, message);
    for alg in [Alg::ES256, Alg::ES384, Alg::RS512, Alg::HS512, Alg::EDDSA] {
        assert!(!verify(&sig, message, &p521_key, alg), "{alg:?}");
    }
    let p256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let (x, y) = jwk_xy(&p256);
    let p256_key = Key::Jwt(DecodingKey::from_ec_components(&x, &y).unwrap());
    let sig256 = URL_SAFE_NO_PAD.encode(p256.sign(&SystemRandom::new(), message).unwrap().as_ref());
    assert!(verify(&sig256, message, &p256_key, Alg::ES256));
    assert!(!verify(&sig256, message, &p256_key, Alg::ES512));
    assert!(!verify(&sig, message, &p256_key, Alg::ES512));
}

/// Only full-length P-521 coordinates and P-521 SubjectPublicKeyInfo PEMs make a P-521 key.
#[test]
fn malformed_or_other_p521_inputs_make_no_key() {
    let pair = p521();
    let (x, y) = jwk_xy(&pair);
    let short = URL_SAFE_NO_PAD.encode([1u8; 65]);
    assert!(Key::p521_from_components(&short, &y).is_none());
    assert!(Key::p521_from_components(&x, &short).is_none());
    assert!(Key::p521_from_components("%%", &y).is_none());
    let p256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    assert!(Key::p521_from_pem(spki_pem(&p256).as_bytes()).is_none());
    let relabelled = spki_pem(&pair).replace("PUBLIC KEY", "CERTIFICATE");
    assert!(Key::p521_from_pem(relabelled.as_bytes()).is_none());
    assert!(Key::p521_from_pem(b"garbage").is_none());
}

/// Names parse case-sensitively, as a JWS `alg` is compared, and print as written.
#[test]
fn names_parse_and_print() {
    assert_eq!("ES512".parse::<Alg>(), Ok(Alg::ES512));
    assert_eq!("RS256".parse::<Alg>(), Ok(Alg::RS256));
    assert_eq!("EdDSA".parse::<Alg>(), Ok(Alg::EDDSA));
    assert!("es512".parse::<Alg>().is_err());
    assert!("none".parse::<Alg>().is_err());
    assert_eq!(format!("{:?}", Alg::ES512), "ES512");
    assert_eq!(format!("{:?}", Alg::PS384), "PS384");
    assert_eq!(Alg::ES512.family(), Family::P521);
    assert_eq!(Alg::ES384.family(), Family::Ec);
}
