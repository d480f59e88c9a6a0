//! JWKS parsing: unusable keys (encryption, symmetric, unsupported curves, mismatched alg) are skipped.

use super::*;

#[test]
fn jwks_parsing_skips_unusable_keys() {
    super::super::install_crypto_provider();
    let jwks = r#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","use":"enc"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"p521"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"rsa","alg":"HS256"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"good"},
            "not an object"
        ]}"#;
    let set = KeySet::from_jwks(jwks.as_bytes()).unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["good"]);
    assert!(set.has(Some("good"), Algorithm::EdDSA));
    assert!(!set.has(Some("good"), Algorithm::ES256));
    assert!(!set.has(Some("good"), Algorithm::HS256));
    // A well-formed JWKS without a usable key is an (empty) answer, not a failure.
    assert!(KeySet::from_jwks(br#"{"keys":[]}"#)
        .unwrap()
        .keys
        .is_empty());
    assert!(KeySet::from_jwks(b"[]").is_err());
}
