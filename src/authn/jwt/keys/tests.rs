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
