//! JWT authentication cost: a token already in the verified-token cache (SHA-256 + a sharded
//! map lookup + an Identity clone) and a cold ES256 verification (cache disabled: header and
//! payload decode, signature check, claim checks and mapping).
//!
//! Run: `cargo bench --bench authn`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::authn::jwt::{
    self,
    mint::{self, Signer},
    CacheOptions, IssuerConfig, JwtAuthenticator,
};
use serde_json::json;

const ISS: &str = "https://issuer.bench";

fn setup(dir: &std::path::Path, cache: CacheOptions) -> (JwtAuthenticator, String) {
    let (pem, jwks) = mint::generate_es256("k1").unwrap();
    std::fs::write(dir.join("keys.json"), jwks).unwrap();
    let signer = Signer::from_pem(&pem, Some("k1")).unwrap();
    let yaml = format!(
        "- issuer: {{url: \"{ISS}\", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings:
    username: {{claim: sub, prefix: \"ci:\"}}
    groups: {{claim: groups, prefix: \"\"}}
    extra: [{{key: example.com/repo, claim: repository}}]
"
    );
    let entries: Vec<IssuerConfig> = serde_saphyr::from_str(&yaml).unwrap();
    let auth = jwt::build(&entries, dir, "authentication.jwt", cache)
        .map_err(|p| format!("{p:?}"))
        .unwrap();
    let mut claims = mint::Claims::new(ISS, "portcullis", "alice", Duration::from_secs(3600));
    claims.groups = vec!["dev".into(), "ops".into()];
    claims.extra.insert("repository".into(), json!("org/repo"));
    claims.extra.insert(
        "portcullis.io/scope".into(),
        json!([{"namespaces": ["dev"], "verbs": ["get", "list", "watch"]}]),
    );
    (auth, signer.issue(&claims).unwrap())
}

fn authn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let (cached, token) = setup(dir.path(), CacheOptions::default());
    rt.block_on(cached.authenticate(&token)).unwrap();
    c.bench_function("jwt_cached", |b| {
        b.iter(|| {
            rt.block_on(cached.authenticate(std::hint::black_box(&token)))
                .unwrap()
        })
    });

    let (cold, token) = setup(
        dir.path(),
        CacheOptions {
            max_entries: 0,
            ..CacheOptions::default()
        },
    );
    c.bench_function("jwt_cold_es256", |b| {
        b.iter(|| {
            rt.block_on(cold.authenticate(std::hint::black_box(&token)))
                .unwrap()
        })
    });
}

criterion_group!(benches, authn);
criterion_main!(benches);
