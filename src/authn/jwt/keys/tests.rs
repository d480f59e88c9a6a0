//! JWKS parsing: unusable keys (encryption, symmetric, unsupported curves, mismatched alg) are skipped.

use super::*;

#[test]
fn jwks_parsing_skips_unusable_keys() {
    super::super::install_crypto_provider();
    let jwks = r#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","use":"enc"},
            {"kty":"EC","crv":"secp256k1","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","y":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","kid":"k1"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"p521"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"rsa","alg":"HS256"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"good"},
            "not an object"
        ]}"#;
    let set = KeySet::from_jwks(jwks.as_bytes()).unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["good"]);
    assert!(set.has(Some("good"), Alg::EDDSA));
    assert!(!set.has(Some("good"), Alg::ES256));
    assert!(!set.has(Some("good"), Alg::HS256));
    // A well-formed JWKS without a usable key is an (empty) answer, not a failure.
    assert!(KeySet::from_jwks(br#"{"keys":[]}"#)
        .unwrap()
        .keys
        .is_empty());
    assert!(KeySet::from_jwks(b"[]").is_err());
}

/// A P-521 JWK is kept for ES512 and nothing else; one that declares another algorithm is
/// skipped, and so are keys of other types that declare ES512.
#[test]
fn a_p521_jwk_checks_es512_only() {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P521_SHA512_FIXED_SIGNING};
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let pair = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&point[1..67]),
        URL_SAFE_NO_PAD.encode(&point[67..]),
    );
    // Real keys of other types that declare ES512: skipped, not kept as ES512 keys.
    let p256 =
        EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let p = p256.public_key().as_ref();
    let (p256x, p256y) = (
        URL_SAFE_NO_PAD.encode(&p[1..33]),
        URL_SAFE_NO_PAD.encode(&p[33..]),
    );
    let rsa_n = URL_SAFE_NO_PAD.encode([0xc3u8; 256]);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-521","x":"{x}","y":"{y}","kid":"p521"}},
            {{"kty":"EC","crv":"P-521","x":"{x}","y":"{y}","kid":"lying","alg":"ES256"}},
            {{"kty":"EC","crv":"P-521","x":"{x}","y":"{y}","kid":"declared","alg":"ES512"}},
            {{"kty":"EC","crv":"P-256","x":"{p256x}","y":"{p256y}","kid":"p256-says-es512","alg":"ES512"}},
            {{"kty":"RSA","n":"{rsa_n}","e":"AQAB","kid":"rsa-says-es512","alg":"ES512"}}]}}"#
    );
    let set = KeySet::from_jwks(jwks.as_bytes()).unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["p521", "declared"]);
    assert!(set.has(Some("p521"), Alg::ES512));
    for alg in [Alg::ES256, Alg::ES384, Alg::RS512, Alg::HS512, Alg::EDDSA] {
        assert!(!set.has(Some("p521"), alg), "{alg:?}");
    }
}

/// A reload carries a key store into a new configuration, whose refresh task replaces the old
/// one's: it keeps the schedule (due `refresh_interval` after the last fetch), instead of
/// waiting a whole interval again — with reloads more often than the interval, the refresh
/// never came and keys the issuer removed stayed trusted.
#[tokio::test(start_paused = true)]
async fn a_refresh_task_started_later_keeps_the_schedule() {
    super::super::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(
        &file,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k"}]}"#,
    )
    .unwrap();
    let hour = Duration::from_secs(3600);
    let store = Arc::new(KeyStore::new(
        "https://issuer.test".into(),
        Source::JwksFile(file),
        None,
        hour,
        Duration::from_secs(10),
    ));
    store.refresh().await.unwrap();
    assert_eq!(store.stats().fetches, 1);
    // 50 minutes later a reload starts the new configuration's task.
    tokio::time::advance(Duration::from_secs(50 * 60)).await;
    let (trigger, shutdown) = crate::shutdown::channel();
    let task = store.spawn_refresh(shutdown);
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    assert_eq!(store.stats().fetches, 2, "due an hour after the last fetch");
    tokio::time::sleep(hour).await;
    assert_eq!(store.stats().fetches, 3, "then every hour");
    trigger.fire();
    let _ = task.await;
}
