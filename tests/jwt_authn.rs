//! JWT bearer authentication: every rejection path, the identity mapping, key rotation and the
//! unknown-kid rate limit against a real loopback HTTPS JWKS / OIDC discovery server. Time is a
//! `ManualClock`: nothing sleeps.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
// The independent forge the e2e tests use (P-521 signing); only part of it is needed here.
#[allow(dead_code)]
#[path = "common/jwt.rs"]
mod forge;

use portcullis::{
    authn::jwt::{
        self,
        mint::{self, Signer},
        CacheOptions, IssuerConfig, JwtAuthenticator, ManualClock, Rejected,
    },
    authz::{Scope, ScopeRule},
    server::tls,
};
use portcullis_sandbox::pki::Ca;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const T0: u64 = 1_800_000_000;
const ISS: &str = "https://issuer.test";

fn signer(kid: &str) -> Signer {
    let (pem, _) = mint::generate_es256(kid).unwrap();
    Signer::from_pem(&pem, Some(kid)).unwrap()
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.public_jwk().clone()).collect::<Vec<_>>()}).to_string()
}

/// Default claims at T0, merged with `over` (a null value removes the claim).
fn claims(over: Value) -> Value {
    let mut c = json!({
        "iss": ISS, "aud": ["portcullis"], "sub": "alice",
        "iat": T0, "exp": T0 + 600, "groups": ["dev", "ops"], "jti": "j-1",
    });
    if let (Some(obj), Value::Object(over)) = (c.as_object_mut(), over) {
        for (k, v) in over {
            if v.is_null() {
                obj.remove(&k);
            } else {
                obj.insert(k, v);
            }
        }
    }
    c
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn hs256(header: Value, claims: &Value, secret: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", b64(tag.as_ref()))
}

fn build(yaml: &str, dir: &Path, clock: &Arc<ManualClock>) -> JwtAuthenticator {
    let entries: Vec<IssuerConfig> = serde_saphyr::from_str(yaml).unwrap();
    match jwt::build(&entries, dir, "authentication.jwt", CacheOptions::default()) {
        Ok(a) => a.with_clock(clock.clone()),
        Err(p) => panic!("{p:#?}"),
    }
}

struct Local {
    _dir: tempfile::TempDir,
    signer: Signer,
    auth: JwtAuthenticator,
    clock: Arc<ManualClock>,
}

const MAPPINGS: &str = r#"
  claim_mappings:
    username: {claim: sub, prefix: "ci:"}
    groups: {claim: groups, prefix: "gh:"}
    uid: {claim: sub}
    extra: [{key: example.com/repo, claim: repository}]
"#;

/// An issuer reading keys.json (key `k1`) from a temp dir; `more` is appended to the entry.
fn local(more: &str) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer("k1");
    std::fs::write(dir.path().join("keys.json"), signer.jwks()).unwrap();
    std::fs::write(
        dir.path().join("secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let yaml = format!(
        "- issuer: {{url: \"{ISS}\", audiences: [portcullis, other], jwks_file: keys.json}}\n{MAPPINGS}{more}"
    );
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = build(&yaml, dir.path(), &clock);
    Local {
        _dir: dir,
        signer,
        auth,
        clock,
    }
}

impl Local {
    async fn check(&self, over: Value) -> Result<portcullis::authn::Identity, Rejected> {
        let token = self.signer.issue(&claims(over)).unwrap();
        self.auth.authenticate(&token).await.map(|id| (*id).clone())
    }
}

/// Names beyond ASCII are taken, as the API server takes them; a control character is not.
#[tokio::test]
async fn a_token_with_utf8_names_maps_to_the_identity() {
    let l = local("");
    let id = l
        .check(json!({"sub": "josé", "groups": ["Équipe"]}))
        .await
        .unwrap();
    assert_eq!(id.user, "ci:josé");
    assert_eq!(id.groups, ["gh:Équipe"]);
    assert!(l.check(json!({"sub": "jo\u{7}sé"})).await.is_err());
}

#[tokio::test]
async fn a_good_token_maps_to_the_identity() {
    let l = local("");
    let id = l
        .check(json!({
            "repository": "org/repo",
            "portcullis.io/scope": [{"namespaces": ["dev"], "verbs": ["get", "list"]}],
        }))
        .await
        .unwrap();
    assert_eq!(id.user, "ci:alice");
    assert_eq!(id.uid, "alice");
    assert_eq!(id.groups, ["gh:dev", "gh:ops"]);
    assert_eq!(id.extra["example.com/repo"], ["org/repo"]);
    assert_eq!(id.tenant, None);
    assert_eq!(
        id.scope,
        Some(Scope(vec![ScopeRule {
            namespaces: Some(vec!["dev".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]))
    );
    assert_eq!(
        id.method,
        portcullis::authn::identity::Method::Jwt {
            issuer: ISS.into(),
            token_id: "j-1".into()
        }
    );
}

#[tokio::test]
async fn groups_as_string_array_or_empty_and_aud_as_string() {
    let l = local("");
    let id = l
        .check(json!({"groups": "dev", "aud": "other"}))
        .await
        .unwrap();
    assert_eq!(id.groups, ["gh:dev"]);
    assert!(id.extra.is_empty());
    assert_eq!(id.scope, None, "no scope claim: not narrowed");
    for empty in [json!(""), json!([]), json!(null)] {
        let id = l.check(json!({"groups": empty, "sub": "bob"})).await;
        assert_eq!(id.unwrap().groups, Vec::<String>::new());
    }
    assert_eq!(
        l.check(json!({"groups": [1, 2]})).await,
        Err(Rejected::InvalidClaim("groups".into()))
    );
}

#[tokio::test]
async fn empty_and_garbage_tokens_are_rejected() {
    let l = local("");
    assert_eq!(l.auth.authenticate("").await, Err(Rejected::Empty));
    for t in ["a", "a.b", "a.b.c.d", "!!.??.xx", "e30.e30.e30"] {
        assert!(
            matches!(
                l.auth.authenticate(t).await,
                Err(Rejected::Malformed(_) | Rejected::UnknownIssuer)
            ),
            "{t}"
        );
    }
    let huge = "a".repeat(20_000);
    assert_eq!(l.auth.authenticate(&huge).await, Err(Rejected::TooLarge));
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let l = local("");
    assert_eq!(
        l.check(json!({"exp": T0 - 31})).await,
        Err(Rejected::Expired)
    );
    // No leeway on exp, as kube-apiserver (go-oidc's `Expiry.Before(now)`).
    assert_eq!(
        l.check(json!({"exp": T0 - 1})).await,
        Err(Rejected::Expired),
        "no leeway on exp"
    );
    assert!(
        l.check(json!({"exp": T0})).await.is_ok(),
        "exp not yet past"
    );
    assert_eq!(
        l.check(json!({"exp": null})).await,
        Err(Rejected::MissingClaim("exp".into()))
    );
    assert_eq!(
        l.check(json!({"exp": "tomorrow"})).await,
        Err(Rejected::InvalidClaim("exp".into()))
    );
    assert_eq!(
        l.check(json!({"nbf": T0 + 120})).await,
        Err(Rejected::NotYetValid)
    );
    assert!(l.check(json!({"nbf": T0 + 20, "sub": "n"})).await.is_ok());
    // `iat` is not judged, as by the API server's verifier (go-oidc): a provider whose clock
    // runs ahead is not refused for it; but it must be a number.
    assert!(l.check(json!({"iat": T0 + 120, "sub": "i"})).await.is_ok());
    assert_eq!(
        l.check(json!({"iat": "now"})).await,
        Err(Rejected::InvalidClaim("iat".into()))
    );
}

#[tokio::test]
async fn issuer_and_audience_must_match() {
    let l = local("");
    assert_eq!(
        l.check(json!({"iss": "https://evil.test"})).await,
        Err(Rejected::UnknownIssuer)
    );
    assert_eq!(
        l.check(json!({"iss": null})).await,
        Err(Rejected::UnknownIssuer)
    );
    assert_eq!(
        l.check(json!({"aud": ["someone-else"]})).await,
        Err(Rejected::WrongAudience)
    );
    assert_eq!(
        l.check(json!({"aud": null})).await,
        Err(Rejected::MissingClaim("aud".into()))
    );
    // A list with anything but strings does not parse as go-oidc's audience: the API server
    // refuses the token, whatever else the list holds.
    assert_eq!(
        l.check(json!({"aud": ["portcullis", 5]})).await,
        Err(Rejected::InvalidClaim("aud".into()))
    );
    // `null` decodes into a Go `[]string` as "": accepted there, and here.
    assert!(l.check(json!({"aud": ["portcullis", null]})).await.is_ok());
}

/// Groups the token leaves to a claim source (`_claim_names`, OIDC distributed claims) would
/// be fetched by the API server; without fetching them the caller would get an identity the
/// API server would not give: refused. Groups in the token itself win, as upstream.
#[tokio::test]
async fn distributed_groups_are_refused_not_dropped() {
    let l = local("");
    let sources = json!({"src1": {"endpoint": "https://idp.example/groups", "access_token": "x"}});
    assert_eq!(
        l.check(json!({"groups": null, "_claim_names": {"groups": "src1"}, "_claim_sources": sources.clone()}))
            .await,
        Err(Rejected::DistributedClaim("groups".into()))
    );
    let id = l
        .check(json!({"_claim_names": {"groups": "src1"}, "_claim_sources": sources}))
        .await
        .unwrap();
    assert_eq!(id.groups, ["gh:dev", "gh:ops"]);
    // Another claim's source is not ours to resolve.
    assert!(l
        .check(json!({"groups": null, "_claim_names": {"roles": "src1"}}))
        .await
        .is_ok());
}

#[tokio::test]
async fn unsigned_and_hmac_confusion_tokens_are_rejected() {
    let l = local("");
    let c = claims(json!({}));
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(c.to_string().as_bytes())
    );
    assert_eq!(l.auth.authenticate(&none).await, Err(Rejected::AlgNone));
    let none_upper = format!(
        "{}.{}.",
        b64(br#"{"alg":"NONE"}"#),
        b64(c.to_string().as_bytes())
    );
    assert_eq!(
        l.auth.authenticate(&none_upper).await,
        Err(Rejected::AlgNone)
    );

    // HS256 with the issuer's public key material as the HMAC secret.
    let public = l.signer.jwks();
    let jwk = l.signer.public_jwk().to_string();
    for secret in [public.as_bytes(), jwk.as_bytes()] {
        let t = hs256(json!({"alg": "HS256", "kid": "k1"}), &c, secret);
        assert_eq!(
            l.auth.authenticate(&t).await,
            Err(Rejected::AlgorithmNotAllowed(
                portcullis::authn::jwt::alg::Alg::HS256
            ))
        );
    }
}

#[tokio::test]
async fn hmac_issuer_accepts_only_its_secret() {
    let l = local("  hmac_secret_file: secret\n");
    let c = claims(json!({}));
    let good = hs256(
        json!({"alg": "HS256"}),
        &c,
        b"0123456789abcdef0123456789abcdef",
    );
    assert_eq!(l.auth.authenticate(&good).await.unwrap().user, "ci:alice");
    // The public key used as the HMAC secret, even naming the EC key's kid: bad signature.
    let jwk = l.signer.public_jwk().to_string();
    let forged = hs256(json!({"alg": "HS256", "kid": "k1"}), &c, jwk.as_bytes());
    assert_eq!(
        l.auth.authenticate(&forged).await,
        Err(Rejected::BadSignature)
    );
    // An asymmetric token with alg rewritten to HS256 is not verified against the EC key.
    let es = l.signer.issue(&c).unwrap();
    let (_, rest) = es.split_once('.').unwrap();
    let swapped = format!("{}.{rest}", b64(br#"{"alg":"HS256","kid":"k1"}"#));
    assert_eq!(
        l.auth.authenticate(&swapped).await,
        Err(Rejected::BadSignature)
    );
}

#[tokio::test]
async fn tampered_or_foreign_tokens_are_rejected() {
    let l = local("");
    let t = l.signer.issue(&claims(json!({}))).unwrap();
    let mut parts: Vec<&str> = t.split('.').collect();
    let evil = b64(claims(json!({"sub": "admin"})).to_string().as_bytes());
    parts[1] = &evil;
    assert_eq!(
        l.auth.authenticate(&parts.join(".")).await,
        Err(Rejected::BadSignature)
    );
    // Same kid, different key.
    let other = signer("k1").issue(&claims(json!({}))).unwrap();
    assert_eq!(
        l.auth.authenticate(&other).await,
        Err(Rejected::BadSignature)
    );
    // A crit header is refused.
    let crit = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"ES256","kid":"k1","crit":["exp"]}"#),
        parts[1],
        parts[2]
    );
    assert_eq!(
        l.auth.authenticate(&crit).await,
        Err(Rejected::CriticalHeader)
    );
}

#[tokio::test]
async fn system_identities_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    std::fs::write(dir.path().join("keys.json"), s.jwks()).unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let yaml = |allow: bool| {
        format!(
            "- issuer: {{url: \"{ISS}\", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings:
    username: {{claim: sub, prefix: \"\"}}
    groups: {{claim: groups, prefix: \"\"}}
  allow_system_identities: {allow}
"
        )
    };
    let strict = build(&yaml(false), dir.path(), &clock);
    let masters = s
        .issue(&claims(json!({"groups": ["system:masters"]})))
        .unwrap();
    assert_eq!(
        strict.authenticate(&masters).await,
        Err(Rejected::SystemIdentity("group"))
    );
    let user = s.issue(&claims(json!({"sub": "system:admin"}))).unwrap();
    assert_eq!(
        strict.authenticate(&user).await,
        Err(Rejected::SystemIdentity("user"))
    );
    let lax = build(&yaml(true), dir.path(), &clock);
    assert_eq!(
        lax.authenticate(&masters).await.unwrap().groups,
        ["system:masters"]
    );
}

#[tokio::test]
async fn claim_validation_rules_must_hold() {
    let l = local("  claim_validation_rules: [{claim: repository, required_value: org/repo}]\n");
    assert!(l.check(json!({"repository": "org/repo"})).await.is_ok());
    assert_eq!(
        l.check(json!({"repository": "org/other"})).await,
        Err(Rejected::RuleMismatch("repository".into()))
    );
    assert_eq!(
        l.check(json!({})).await,
        Err(Rejected::MissingClaim("repository".into()))
    );
}

#[tokio::test]
async fn email_username_requires_verified_email() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    std::fs::write(dir.path().join("keys.json"), s.jwks()).unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = build(
        &format!(
            "- issuer: {{url: \"{ISS}\", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings: {{username: {{claim: email, prefix: \"\"}}}}
"
        ),
        dir.path(),
        &clock,
    );
    let t = |v: Value| {
        s.issue(&claims(
            json!({"email": "a@example.com", "email_verified": v}),
        ))
        .unwrap()
    };
    assert_eq!(
        auth.authenticate(&t(json!(false))).await,
        Err(Rejected::EmailNotVerified)
    );
    assert_eq!(
        auth.authenticate(&t(json!("true"))).await,
        Err(Rejected::EmailNotVerified)
    );
    assert_eq!(
        auth.authenticate(&t(json!(true))).await.unwrap().user,
        "a@example.com"
    );
    // Absent email_verified counts as verified (the API server's orValue(true)).
    let absent = s.issue(&claims(json!({"email": "b@example.com"}))).unwrap();
    assert_eq!(
        auth.authenticate(&absent).await.unwrap().user,
        "b@example.com"
    );
}

#[tokio::test]
async fn malformed_scope_and_unsafe_values_are_rejected() {
    let l = local("");
    for bad in [
        json!("get pods"),
        json!([{"namespaces": ["x"]}]),
        json!([{"verbs": ["get"], "bogus": 1}]),
    ] {
        assert!(
            matches!(
                l.check(json!({"portcullis.io/scope": bad.clone()})).await,
                Err(Rejected::MalformedScope(_))
            ),
            "{bad}"
        );
    }
    // An explicit null is not "absent": refused rather than treated as unscoped.
    let mut c = claims(json!({}));
    c["portcullis.io/scope"] = Value::Null;
    assert!(matches!(
        l.auth.authenticate(&l.signer.issue(&c).unwrap()).await,
        Err(Rejected::MalformedScope(_))
    ));
    assert_eq!(
        l.check(json!({"sub": "evil\r\nImpersonate-Group: x"}))
            .await,
        Err(Rejected::UnsafeValue("user"))
    );
    // Padded values would arrive trimmed through an HTTP/1.1 hop, past the system: check
    // (here `sub` is the uid; the username carries a prefix).
    assert!(matches!(
        l.check(json!({"sub": " admin"})).await,
        Err(Rejected::UnsafeValue(_))
    )); // The jti travels as the token-id extra and is audited on both sides.
    for jti in ["j-1\u{7}", " j-1", "j-1\n"] {
        assert_eq!(
            l.check(json!({"jti": jti})).await,
            Err(Rejected::UnsafeValue("jti")),
            "{jti:?}"
        );
    }
}

#[tokio::test]
async fn cached_tokens_are_not_used_after_exp() {
    let l = local("");
    let t = l.signer.issue(&claims(json!({"exp": T0 + 100}))).unwrap();
    assert!(l.auth.authenticate(&t).await.is_ok());
    assert_eq!(l.auth.cached_tokens(), 1);
    l.clock.advance(Duration::from_secs(99));
    assert!(l.auth.authenticate(&t).await.is_ok(), "cached, still valid");
    l.clock.advance(Duration::from_secs(40)); // past exp
    assert_eq!(l.auth.authenticate(&t).await, Err(Rejected::Expired));
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_invalidates_cached_tokens() {
    let l = local("");
    let t = l.signer.issue(&claims(json!({}))).unwrap();
    assert!(l.auth.authenticate(&t).await.is_ok());
    let other = signer("k2");
    std::fs::write(l._dir.path().join("keys.json"), other.jwks()).unwrap();
    assert!(l.auth.refresh_all().await.is_empty());
    assert_eq!(l.auth.authenticate(&t).await, Err(Rejected::UnknownKid));
}

#[tokio::test]
async fn pem_files_and_eddsa_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, _) = mint::generate_ed25519("ed").unwrap();
    let s = Signer::from_pem(&pem, Some("ed-key")).unwrap();
    // SPKI PEM of the public key: from the JWK's x (Ed25519 SPKI = fixed prefix + 32 bytes).
    let x = URL_SAFE_NO_PAD
        .decode(s.public_jwk()["x"].as_str().unwrap())
        .unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&x);
    std::fs::write(
        dir.path().join("ed-key.pub.pem"),
        mint::pem("PUBLIC KEY", &spki),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = build(
        &format!(
            "- issuer: {{url: \"{ISS}\", audiences: [portcullis], pem_files: [ed-key.pub.pem]}}
  algorithms: [EdDSA]
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
"
        ),
        dir.path(),
        &clock,
    );
    assert_eq!(
        auth.authenticate(&s.issue(&claims(json!({}))).unwrap())
            .await
            .unwrap()
            .user,
        "alice"
    );
    // ES256 is not in this issuer's list.
    let es = signer("ed-key").issue(&claims(json!({}))).unwrap();
    assert_eq!(
        auth.authenticate(&es).await,
        Err(Rejected::AlgorithmNotAllowed(
            portcullis::authn::jwt::alg::Alg::ES256
        ))
    );
}

/// EdDSA, which kube-apiserver refuses, is not in the default list: an issuer without its own
/// list refuses an EdDSA token signed by a key of its own JWKS (`algorithm_not_allowed`) and
/// still takes ES256 from the same JWKS; listing EdDSA accepts it.
#[tokio::test]
async fn eddsa_is_accepted_only_where_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, _) = mint::generate_ed25519("ed").unwrap();
    let ed = Signer::from_pem(&pem, Some("ed")).unwrap();
    let es = signer("es");
    std::fs::write(dir.path().join("keys.json"), jwks(&[&ed, &es])).unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = build(
        &format!(
            "- issuer: {{url: \"{ISS}\", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
- issuer: {{url: \"https://eddsa.test\", audiences: [portcullis], jwks_file: keys.json}}
  algorithms: [EdDSA]
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
"
        ),
        dir.path(),
        &clock,
    );
    let good = claims(json!({}));
    assert_eq!(
        auth.authenticate(&ed.issue(&good).unwrap()).await,
        Err(Rejected::AlgorithmNotAllowed(
            portcullis::authn::jwt::alg::Alg::EDDSA
        ))
    );
    let ok = auth.authenticate(&es.issue(&good).unwrap()).await.unwrap();
    assert_eq!(ok.user, "alice");
    let listed = claims(json!({"iss": "https://eddsa.test"}));
    let ok = auth
        .authenticate(&ed.issue(&listed).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.user, "alice");
}

/// ES512 tokens are refused for the reason that applies, as each path records it: another
/// P-521 key under the kid is `bad_signature`; a kid naming a P-256 key is `unknown_kid` (no
/// ES512 candidate); a lower-case `es512` is an unsupported algorithm; ES512 at an issuer
/// whose list leaves it out is not allowed there. The issuer's own key gets through.
#[tokio::test]
async fn es512_tokens_are_refused_for_the_right_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p521 = forge::Forge::generate_p521("p521");
    let p256 = forge::Forge::generate("p256");
    std::fs::write(
        dir.path().join("keys.json"),
        json!({"keys": [p521.jwk(), p256.jwk()]}).to_string(),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = build(
        &format!(
            "- issuer: {{url: \"{ISS}\", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
- issuer: {{url: \"https://es256-only.test\", audiences: [portcullis], jwks_file: keys.json}}
  algorithms: [ES256, RS256]
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
"
        ),
        dir.path(),
        &clock,
    );
    let good = claims(json!({}));
    let ok = auth.authenticate(&p521.token(&good)).await.unwrap();
    assert_eq!(ok.user, "alice");
    let es512 = |kid: &str| json!({"alg": "ES512", "typ": "JWT", "kid": kid});
    let cases = [
        (
            "another P-521 key under the kid",
            forge::Forge::generate_p521("p521").token(&good),
            Rejected::BadSignature,
        ),
        (
            "an ES512 header naming the P-256 key",
            p521.sign(&es512("p256"), &good),
            Rejected::UnknownKid,
        ),
        (
            "alg written in lower case",
            p521.sign(&json!({"alg": "es512", "kid": "p521"}), &good),
            Rejected::UnsupportedAlgorithm("es512".into()),
        ),
        (
            "ES512 where the issuer lists ES256 and RS256",
            p521.token(&claims(json!({"iss": "https://es256-only.test"}))),
            Rejected::AlgorithmNotAllowed(portcullis::authn::jwt::alg::Alg::ES512),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(auth.authenticate(&token).await, Err(want), "{name}");
    }
}

/// A P-521 PEM key whose point is off the curve is a configuration error naming the file's
/// key path, not a key that would never verify.
#[test]
fn a_p521_pem_off_the_curve_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut der = forge::Forge::generate_p521("k").public_der();
    // The last byte of y: the point leaves the curve.
    *der.last_mut().unwrap() ^= 1;
    std::fs::write(dir.path().join("bad.pem"), mint::pem("PUBLIC KEY", &der)).unwrap();
    let entries: Vec<IssuerConfig> = serde_saphyr::from_str(&format!(
        "- issuer: {{url: \"{ISS}\", audiences: [portcullis], pem_files: [bad.pem]}}
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
"
    ))
    .unwrap();
    match jwt::build(
        &entries,
        dir.path(),
        "authentication.jwt",
        CacheOptions::default(),
    ) {
        Ok(_) => panic!("an unusable P-521 key was loaded"),
        Err(p) => {
            let text = format!("{p:?}");
            assert!(
                text.contains("authentication.jwt[0].issuer.pem_files") && text.contains("P-521"),
                "{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// A loopback HTTPS identity provider.

struct Idp {
    url: String,
    dir: tempfile::TempDir,
    jwks: Arc<Mutex<String>>,
    discovery: Arc<Mutex<String>>,
    jwks_hits: Arc<AtomicUsize>,
    /// `/jwks` answers only after this many milliseconds (a minute: an unreachable provider,
    /// as the fetcher sees it — no answer within its timeout).
    stalled: Arc<AtomicU64>,
}

impl Idp {
    async fn start() -> Idp {
        tls::install_crypto_provider();
        let ca = Ca::new("idp CA").unwrap();
        let cert = ca.server_cert(&["127.0.0.1", "localhost"]).unwrap();
        let config = tls::server_config(
            vec![cert.cert_der.clone()],
            cert.key(),
            tls::ClientAuth::None,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("idp-ca.pem"), &ca.cert.cert_pem).unwrap();
        let jwks = Arc::new(Mutex::new(String::new()));
        let discovery = Arc::new(Mutex::new(
            json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}).to_string(),
        ));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicU64::new(0));
        let (j, d, h, st) = (
            jwks.clone(),
            discovery.clone(),
            jwks_hits.clone(),
            stalled.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (j, d, h, st) = (j.clone(), d.clone(), h.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let body = match req.uri().path() {
                            "/jwks" => {
                                h.fetch_add(1, Ordering::SeqCst);
                                Some(j.lock().unwrap().clone())
                            }
                            "/.well-known/openid-configuration" => Some(d.lock().unwrap().clone()),
                            _ => None,
                        };
                        let resp = match body {
                            Some(b) => Response::new(Full::new(Bytes::from(b))),
                            None => Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        let stall = match req.uri().path() {
                            "/jwks" => st.load(Ordering::SeqCst),
                            _ => 0,
                        };
                        async move {
                            if stall > 0 {
                                tokio::time::sleep(Duration::from_millis(stall)).await;
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp {
            url,
            dir,
            jwks,
            discovery,
            jwks_hits,
            stalled,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("idp-ca.pem")
    }

    fn publish(&self, signers: &[&Signer]) {
        *self.jwks.lock().unwrap() = jwks(signers);
    }

    fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    /// An authenticator for this IdP; `source` is e.g. `jwks_url: https://…/jwks` or empty
    /// (discovery).
    fn authenticator(&self, source: &str, clock: &Arc<ManualClock>) -> JwtAuthenticator {
        build(
            &format!(
                "- issuer: {{url: \"{}\", audiences: [portcullis], certificate_authority_file: {}{source}}}
  unknown_kid_min_interval: 30s
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
",
                self.url,
                self.ca().display()
            ),
            self.dir.path(),
            clock,
        )
    }

    fn claims(&self, over: Value) -> Value {
        let mut c = claims(over);
        c["iss"] = json!(self.url);
        c
    }
}

fn random_kid_token(iss: &Value, n: usize) -> String {
    let c = claims(json!({"iss": iss}));
    let forged = Signer::from_pem(
        &mint::generate_es256("x").unwrap().0,
        Some(&format!("random-{n}-{}", rand_suffix())),
    )
    .unwrap();
    forged.issue(&c).unwrap()
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// An identity provider publishing `k1`, and an authenticator that fetched its JWKS once (at
/// `T0` on a manual clock).
async fn idp_publishing_k1() -> (Idp, Signer, Arc<ManualClock>, JwtAuthenticator) {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert!(auth.refresh_all().await.is_empty());
    assert_eq!(idp.hits(), 1);
    (idp, k1, clock, auth)
}

/// A token its claims refuse — expired, another audience — never triggers a key fetch: a
/// captured token replayed after its expiry, or one forged under a real or a random `kid`,
/// does not spend the issuer's shared refetch budget (before, a bad signature under a real
/// `kid` refetched the keys). Its signature is still checked against the keys in hand, so the
/// reason recorded stays true: a forgery is `BadSignature` whatever its claims say, a genuine
/// expired token `Expired`.
#[tokio::test]
async fn tokens_their_claims_refuse_cost_no_key_refetch() {
    let (idp, k1, _clock, auth) = idp_publishing_k1().await;
    // Forged under the real kid "k1" (another key), expired or for another audience.
    let forger = Signer::from_pem(&mint::generate_es256("x").unwrap().0, Some("k1")).unwrap();
    let expired = forger.issue(&idp.claims(json!({"exp": T0 - 10}))).unwrap();
    assert_eq!(
        auth.authenticate(&expired).await,
        Err(Rejected::BadSignature)
    );
    let elsewhere = forger
        .issue(&idp.claims(json!({"aud": "someone-else"})))
        .unwrap();
    assert_eq!(
        auth.authenticate(&elsewhere).await,
        Err(Rejected::BadSignature)
    );
    // Expired under a kid nobody published.
    let stranger = Signer::from_pem(&mint::generate_es256("x").unwrap().0, Some("nobody")).unwrap();
    let unknown = stranger
        .issue(&idp.claims(json!({"exp": T0 - 10})))
        .unwrap();
    assert_eq!(auth.authenticate(&unknown).await, Err(Rejected::UnknownKid));
    assert_eq!(idp.hits(), 1, "no fetch for tokens their claims refuse");
    let stats = auth.key_stats(&idp.url).unwrap();
    assert_eq!(
        (stats.fetches, stats.refetches_suppressed),
        (1, 0),
        "{stats:?}"
    );
    // A genuine expired token is recorded as expired.
    let genuine = k1.issue(&idp.claims(json!({"exp": T0 - 10}))).unwrap();
    assert_eq!(auth.authenticate(&genuine).await, Err(Rejected::Expired));
    // The forgery with valid claims is a bad signature too (after its one refetch).
    let valid_claims = forger.issue(&idp.claims(json!({}))).unwrap();
    assert_eq!(
        auth.authenticate(&valid_claims).await,
        Err(Rejected::BadSignature)
    );
}

/// Before an issuer's keys first load, a token its claims refuse fetches nothing either, and is
/// recorded as what it meets — keys not loaded — as a token with valid claims would be, not as
/// an unknown `kid`.
#[tokio::test]
async fn a_token_its_claims_refuse_before_the_keys_load_fetches_nothing() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    let expired = k1.issue(&idp.claims(json!({"exp": T0 - 10}))).unwrap();
    assert_eq!(
        auth.authenticate(&expired).await,
        Err(Rejected::KeysNotLoaded)
    );
    assert_eq!(idp.hits(), 0, "no fetch for a token its claims refuse");
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_refetch_per_interval() {
    let (idp, k1, clock, auth) = idp_publishing_k1().await;
    let good = k1.issue(&idp.claims(json!({}))).unwrap();
    assert_eq!(auth.authenticate(&good).await.unwrap().user, "alice");

    // A burst of concurrent random kids: one shared refetch.
    let iss = json!(idp.url);
    let tokens: Vec<String> = (0..20).map(|n| random_kid_token(&iss, n)).collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| auth.authenticate(t))).await;
    assert!(results.iter().all(|r| *r == Err(Rejected::UnknownKid)));
    assert_eq!(idp.hits(), 2, "one refetch for the whole burst");

    // More random kids within the interval: no fetch at all.
    for n in 0..50 {
        let t = random_kid_token(&iss, 100 + n);
        assert_eq!(auth.authenticate(&t).await, Err(Rejected::UnknownKid));
    }
    assert_eq!(idp.hits(), 2);
    let stats = auth.key_stats(&idp.url).unwrap();
    assert_eq!(stats.fetches, 2);
    assert!(stats.refetches_suppressed >= 50, "{stats:?}");
    // A kid that was refetched for is negatively cached.
    assert_eq!(
        auth.authenticate(&tokens[0]).await,
        Err(Rejected::UnknownKid)
    );
    assert!(auth.key_stats(&idp.url).unwrap().negative_hits >= 1);

    // After the interval, one more refetch is allowed.
    clock.advance(Duration::from_secs(31));
    let t = random_kid_token(&iss, 999);
    assert_eq!(auth.authenticate(&t).await, Err(Rejected::UnknownKid));
    assert_eq!(idp.hits(), 3);
    // The good token still works throughout.
    assert!(auth.authenticate(&good).await.is_ok());
}

/// While the provider does not answer, one request fetches (bounded by the fetch timeout) and
/// the others with unknown kids are answered within `UNKNOWN_KID_WAIT`, not held for the
/// whole fetch; known kids never wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_wait_out_a_stalled_fetch() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = Arc::new(idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock));
    assert!(auth.refresh_all().await.is_empty());
    let good = k1.issue(&idp.claims(json!({}))).unwrap();

    idp.stalled.store(60_000, Ordering::SeqCst);
    let iss = json!(idp.url);
    let fetcher = {
        let (auth, t) = (auth.clone(), random_kid_token(&iss, 0));
        tokio::spawn(async move { auth.authenticate(&t).await })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while idp.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refetch reached the provider");
    let tokens: Vec<String> = (1..=20).map(|n| random_kid_token(&iss, n)).collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| auth.authenticate(t))).await;
    assert!(
        results.iter().all(|r| *r == Err(Rejected::UnknownKid)),
        "{results:?}"
    );
    assert!(
        !fetcher.is_finished(),
        "the waiters were answered while the fetch was still in progress"
    );
    assert_eq!(auth.key_stats(&idp.url).unwrap().waits_abandoned, 20);
    assert_eq!(auth.authenticate(&good).await.unwrap().user, "alice");
    fetcher.abort();
}

#[tokio::test]
async fn rotated_keys_are_picked_up_on_an_unknown_kid() {
    let idp = Idp::start().await;
    let (k1, k2) = (signer("k1"), signer("k2"));
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert!(auth.refresh_all().await.is_empty());
    assert!(auth
        .authenticate(&k1.issue(&idp.claims(json!({}))).unwrap())
        .await
        .is_ok());

    idp.publish(&[&k1, &k2]);
    let new = k2.issue(&idp.claims(json!({"sub": "bob"}))).unwrap();
    assert_eq!(auth.authenticate(&new).await.unwrap().user, "bob");
    assert_eq!(idp.hits(), 2);
}

/// A provider that publishes a JWKS without a usable key has revoked the old ones: the next
/// refresh stores the empty set, and a token verified (and cached) under the old key is
/// refused, as go-oidc stores whatever a JWKS answer holds. A provider that cannot be read
/// keeps the old keys.
#[tokio::test]
async fn an_empty_jwks_revokes_the_old_keys() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert!(auth.refresh_all().await.is_empty());
    let token = k1.issue(&idp.claims(json!({}))).unwrap();
    assert!(auth.authenticate(&token).await.is_ok());
    *idp.jwks.lock().unwrap() = "not json".into();
    assert_eq!(
        auth.refresh_all().await.len(),
        1,
        "an unreadable answer is a failure"
    );
    assert!(auth.authenticate(&token).await.is_ok(), "the old keys stay");
    idp.publish(&[]);
    // Reported (a reload would not go ahead with it), and stored all the same.
    assert_eq!(auth.refresh_all().await.len(), 1);
    assert_eq!(auth.authenticate(&token).await, Err(Rejected::UnknownKid));
    // Readiness stays: one provider emptying its JWKS must not take every replica out.
    assert!(auth.issuers_not_ready().is_empty());
}

/// A provider whose first answer holds no usable key (an empty JWKS, or only keys the proxy
/// skips) has not given the issuer keys: not ready, as keys never fetched, until one comes.
#[tokio::test]
async fn an_issuer_whose_first_jwks_is_empty_is_not_ready() {
    let idp = Idp::start().await;
    idp.publish(&[]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert_eq!(auth.refresh_all().await.len(), 1);
    assert_eq!(auth.issuers_not_ready(), vec![idp.url.clone()]);
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    assert!(auth.refresh_all().await.is_empty());
    assert!(auth.issuers_not_ready().is_empty());
    assert!(auth
        .authenticate(&k1.issue(&idp.claims(json!({}))).unwrap())
        .await
        .is_ok());
}

/// `exp` is checked against the time after the keys were fetched: a token that expired while
/// the request that brought the keys waited for them is refused, not accepted once.
#[tokio::test]
async fn a_token_that_expires_during_its_key_fetch_is_refused() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    idp.stalled.store(500, Ordering::SeqCst);
    let token = k1.issue(&idp.claims(json!({"exp": T0 + 5}))).unwrap();
    let later = clock.clone();
    let tick = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        later.advance(Duration::from_secs(60));
    });
    assert_eq!(auth.authenticate(&token).await, Err(Rejected::Expired));
    tick.await.unwrap();
}

/// A provider that rotates a key under the same `kid` (or signs without one): a signature that
/// fails with the cached keys gets one refetch, as go-oidc's `RemoteKeySet` does — limited like
/// an unknown kid, so forged signatures cannot make the proxy hammer the provider.
#[tokio::test]
async fn a_key_rotated_under_the_same_kid_is_picked_up_on_a_bad_signature() {
    let idp = Idp::start().await;
    let (old, new, forged) = (signer("k1"), signer("k1"), signer("k1"));
    idp.publish(&[&old]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert!(auth.refresh_all().await.is_empty());
    assert!(auth
        .authenticate(&old.issue(&idp.claims(json!({}))).unwrap())
        .await
        .is_ok());
    idp.publish(&[&new]);
    let token = new.issue(&idp.claims(json!({"sub": "bob"}))).unwrap();
    assert_eq!(auth.authenticate(&token).await.unwrap().user, "bob");
    assert_eq!(idp.hits(), 2, "one refetch");
    // Within unknown_kid_min_interval a failing signature fetches nothing more.
    let bad = forged.issue(&idp.claims(json!({"sub": "eve"}))).unwrap();
    assert_eq!(auth.authenticate(&bad).await, Err(Rejected::BadSignature));
    assert_eq!(idp.hits(), 2);
}

#[tokio::test]
async fn keys_load_lazily_on_the_first_token() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert_eq!(auth.issuers_not_ready(), vec![idp.url.clone()]);
    let t = k1.issue(&idp.claims(json!({}))).unwrap();
    assert!(auth.authenticate(&t).await.is_ok());
    assert!(auth.issuers_not_ready().is_empty());
}

#[tokio::test]
async fn oidc_discovery_is_followed_and_its_issuer_checked() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator("", &clock);
    assert!(auth.refresh_all().await.is_empty());
    let t = k1.issue(&idp.claims(json!({}))).unwrap();
    assert!(auth.authenticate(&t).await.is_ok());

    // A discovery document naming another issuer is refused: no keys are loaded.
    *idp.discovery.lock().unwrap() =
        json!({"issuer": "https://evil.test", "jwks_uri": format!("{}/jwks", idp.url)}).to_string();
    let fresh = idp.authenticator("", &clock);
    let failed = fresh.refresh_all().await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.contains("evil.test"), "{failed:?}");
    assert_eq!(fresh.authenticate(&t).await, Err(Rejected::KeysNotLoaded));
    // The authenticator that already had keys keeps them after a failed refresh.
    assert_eq!(auth.refresh_all().await.len(), 1);
    let t2 = k1.issue(&idp.claims(json!({"sub": "carol"}))).unwrap();
    assert_eq!(auth.authenticate(&t2).await.unwrap().user, "carol");
}

#[tokio::test]
async fn keys_are_not_fetched_from_servers_the_ca_does_not_vouch_for() {
    let idp = Idp::start().await;
    idp.publish(&[&signer("k1")]);
    let other_ca = Ca::new("other").unwrap();
    std::fs::write(idp.ca(), &other_ca.cert.cert_pem).unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    assert_eq!(auth.refresh_all().await.len(), 1);
    assert_eq!(idp.hits(), 0);
}

#[tokio::test]
async fn background_refresh_stops_on_shutdown() {
    let idp = Idp::start().await;
    let k1 = signer("k1");
    idp.publish(&[&k1]);
    let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
    let auth = idp.authenticator(&format!(", jwks_url: \"{}/jwks\"", idp.url), &clock);
    let (trigger, shutdown) = portcullis::shutdown::channel();
    let tasks = auth.spawn_refresh(shutdown);
    assert_eq!(tasks.len(), 1);
    // The first refresh happens immediately.
    for _ in 0..500 {
        if auth.issuers_not_ready().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(auth.issuers_not_ready().is_empty());
    assert_eq!(idp.hits(), 1);
    trigger.fire();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The annotated example's issuer takes what `portcullis token issue` makes (its `aud` is a
/// list, as most providers send it): the example once carried a rule on `aud`, which only a
/// string can meet, so every such token got 401.
#[tokio::test]
async fn the_annotated_examples_issuer_takes_an_issued_token() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/portcullis.yaml"),
    )
    .unwrap();
    let mut entries = portcullis::config::parse(&text).unwrap().authentication.jwt;
    assert_eq!(entries.len(), 1);
    // The example's key file is written by `demo --write-only`; a key of our own instead.
    let dir = tempfile::tempdir().unwrap();
    let signer = signer("k1");
    std::fs::write(dir.path().join("keys.json"), jwks(&[&signer])).unwrap();
    let url = entries[0].issuer.url.clone();
    entries[0].issuer.jwks_file = Some("keys.json".into());
    let auth = match jwt::build(
        &entries,
        dir.path(),
        "authentication.jwt",
        CacheOptions::default(),
    ) {
        Ok(a) => a,
        Err(p) => panic!("{p:#?}"),
    };
    // As `portcullis token issue --audience portcullis --sub carol` makes it.
    let claims = mint::Claims::new(&url, "portcullis", "carol", Duration::from_secs(600));
    let token = signer.issue(&claims).unwrap();
    let id = auth.authenticate(&token).await.unwrap();
    assert_eq!(id.user, "carol");
}
