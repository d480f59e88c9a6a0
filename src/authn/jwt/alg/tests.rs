use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
        ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PKCS1_SHA256,
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
    let (from_pem, _) = Key::from_pem(spki_pem(&pair).as_bytes()).unwrap();
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
    let long = URL_SAFE_NO_PAD.encode([0u8; 67]);
    assert!(Key::p521_from_components(&long, &y).is_none());
    let zero = URL_SAFE_NO_PAD.encode([0u8; 66]);
    assert!(
        Key::p521_from_components(&zero, &zero).is_none(),
        "the all-zero point"
    );
    // One bit of y flipped: off the curve.
    let mut off = URL_SAFE_NO_PAD.decode(&y).unwrap();
    off[65] ^= 1;
    assert!(Key::p521_from_components(&x, &URL_SAFE_NO_PAD.encode(off)).is_none());
    assert!(Key::from_pem(b"garbage").is_err());
}

/// A DER-encoded ECDSA signature (what X.509 uses) is not a JWS signature: only the fixed
/// 132-byte `r || s` verifies.
#[test]
fn a_der_signature_is_refused() {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let fixed = EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let asn1 = EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let (x, y) = jwk_xy(&fixed);
    let key = Key::p521_from_components(&x, &y).unwrap();
    let message = b"header.payload";
    let der = asn1.sign(&SystemRandom::new(), message).unwrap();
    assert!(!verify(
        &URL_SAFE_NO_PAD.encode(der.as_ref()),
        message,
        &key,
        Alg::ES512
    ));
    assert!(verify(&sign(&fixed, message), message, &key, Alg::ES512));
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=127 => vec![n as u8],
        128..=255 => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// A SubjectPublicKeyInfo for an EC point on the curve with this OID (its DER content bytes).
fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    // id-ecPublicKey, 1.2.840.10045.2.1
    let mut alg = vec![0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06];
    alg.extend(der_len(curve_oid.len()));
    alg.extend_from_slice(curve_oid);
    let mut alg_seq = vec![0x30];
    alg_seq.extend(der_len(alg.len()));
    alg_seq.extend(alg);
    let mut bits = vec![0x03];
    bits.extend(der_len(point.len() + 1));
    bits.push(0);
    bits.extend_from_slice(point);
    let mut body = alg_seq;
    body.extend(bits);
    let mut spki = vec![0x30];
    spki.extend(der_len(body.len()));
    spki.extend(body);
    spki
}

const SECP521R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];

fn pem(der: &[u8]) -> Vec<u8> {
    crate::authn::jwt::mint::pem("PUBLIC KEY", der).into_bytes()
}

/// PEM keys of every supported type load as their family and verify their own algorithm's
/// signatures; a P-521 PEM checks ES512 only.
#[test]
fn pem_keys_load_as_their_type() {
    crate::authn::jwt::install_crypto_provider();
    let rng = SystemRandom::new();
    let message = b"header.payload";

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    rsa.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
        .unwrap();
    let (key, _) = Key::from_pem(&pem(rsa.public_key().as_der().unwrap().as_ref())).unwrap();
    assert_eq!(key.family(), Family::Rsa);
    assert!(verify(
        &URL_SAFE_NO_PAD.encode(&sig),
        message,
        &key,
        Alg::RS256
    ));

    for (signing, alg) in [
        (&ECDSA_P256_SHA256_FIXED_SIGNING, Alg::ES256),
        (&ECDSA_P384_SHA384_FIXED_SIGNING, Alg::ES384),
    ] {
        let pair = EcdsaKeyPair::generate(signing).unwrap();
        let (key, curve) = Key::from_pem(spki_pem(&pair).as_bytes()).unwrap();
        assert_eq!(key.family(), Family::Ec, "{alg:?}");
        assert!(verify(&sign(&pair, message), message, &key, alg), "{alg:?}");
        // Its curve's algorithm only, as a JWK's `crv` gives it.
        assert_eq!(curve, Some(alg));
    }

    let ed = Ed25519KeyPair::generate().unwrap();
    let (key, curve) = Key::from_pem(&pem(ed.public_key().as_der().unwrap().as_ref())).unwrap();
    assert_eq!(key.family(), Family::Ed);
    let sig = URL_SAFE_NO_PAD.encode(ed.sign(message).as_ref());
    assert!(verify(&sig, message, &key, Alg::EDDSA));
    assert_eq!(curve, None);

    let pair = p521();
    let (key, curve) = Key::from_pem(spki_pem(&pair).as_bytes()).unwrap();
    assert_eq!(key.family(), Family::P521);
    assert_eq!(curve, Some(Alg::ES512));
    let sig = sign(&pair, message);
    assert!(verify(&sig, message, &key, Alg::ES512));
    for alg in [Alg::ES256, Alg::ES384, Alg::RS512, Alg::EDDSA] {
        assert!(!verify(&sig, message, &key, alg), "{alg:?}");
    }
}

/// A PEM the proxy could never verify with is an error at load, not a key: a compressed P-521
/// point, a P-521 point off the curve, bytes after the key, an EC curve no JWS algorithm uses.
#[test]
fn unusable_ec_pems_are_errors() {
    let pair = p521();
    let point = pair.public_key().as_ref().to_vec();
    let good = ec_spki(SECP521R1, &point);
    assert!(
        Key::from_pem(&pem(&good)).is_ok(),
        "the hand-built SPKI itself"
    );

    let mut compressed = vec![0x02 | (point[132] & 1)];
    compressed.extend_from_slice(&point[1..67]);
    let err = Key::from_pem(&pem(&ec_spki(SECP521R1, &compressed))).unwrap_err();
    assert!(err.contains("uncompressed"), "{err}");

    let mut off = point.clone();
    off[132] ^= 1;
    assert!(Key::from_pem(&pem(&ec_spki(SECP521R1, &off))).is_err());

    let mut trailing = good.clone();
    trailing.push(0);
    let err = Key::from_pem(&pem(&trailing)).unwrap_err();
    assert!(err.contains("bytes follow"), "{err}");

    let k1 = ec_spki(SECP256K1, &[4u8; 65]);
    let err = Key::from_pem(&pem(&k1)).unwrap_err();
    assert!(err.contains("1.3.132.0.10"), "{err}");
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
