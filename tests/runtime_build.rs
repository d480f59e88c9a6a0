//! `Runtime::build`: the one function that turns the plain config into live objects, from the
//! demo's config; and a problem only a live object finds, reported at its key path by load.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::{config, server::tls, stack::Runtime};
use portcullis_sandbox::{demo, pki::Ca};

fn demo_files(dir: &std::path::Path, ca: &Ca) -> demo::Files {
    let any = "127.0.0.1:0".parse().unwrap();
    demo::write(dir, ca, "https://127.0.0.1:1", any, any).unwrap()
}

#[tokio::test]
async fn the_runtime_is_built_from_the_plain_config() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test").unwrap();
    let files = demo_files(dir.path(), &ca);
    let cfg = config::load(&files.config).unwrap_or_else(|p| panic!("{p:?}"));
    let rt = Runtime::build(&cfg).unwrap();
    assert_eq!(rt.jwt.is_some(), cfg.jwt.is_some());
    assert_eq!(rt.limiter.is_some(), cfg.rate_limits.is_some());
    assert_eq!(rt.audit.is_some(), cfg.audit.is_some());
    assert_eq!(rt.config.summary(), cfg.summary());
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_reported_at_listen_tls() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test").unwrap();
    let files = demo_files(dir.path(), &ca);
    let other = ca.server_cert(&["localhost"]).unwrap();
    std::fs::write(dir.path().join("proxy.key"), &other.key_pem).unwrap();
    let problems = config::load(&files.config).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["listen.tls"], "{problems:?}");
}

/// Files read again by the build (a JWKS, the upstream token) may have changed since the
/// configuration was validated: the build's problems carry their key paths too, so a reload
/// refused for them names the setting, not "(build)".
#[tokio::test]
async fn a_file_that_changed_after_validation_is_reported_at_its_key_path() {
    use portcullis::problems::BuildProblems;
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test").unwrap();
    let files = demo_files(dir.path(), &ca);
    let cfg = config::load(&files.config).unwrap_or_else(|p| panic!("{p:?}"));
    let rt = Runtime::build(&cfg).unwrap();
    let paths = |e: anyhow::Error| -> Vec<String> {
        let at = e
            .downcast::<BuildProblems>()
            .expect("problems at key paths");
        at.0.into_iter().map(|p| p.path).collect()
    };

    let jwks = std::fs::read(dir.path().join("jwks.json")).unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\": 7}").unwrap();
    let first = paths(
        Runtime::build(&cfg)
            .err()
            .expect("the JWKS no longer loads"),
    );
    let again = paths(Runtime::rebuild(&cfg, &rt).err().expect("nor at a reload"));
    assert_eq!(first, again);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].starts_with("authentication.jwt[0]") && first[0].ends_with("jwks_file"),
        "{first:?}"
    );

    // The upstream token emptied: read again for a new upstream (a reload that changes it).
    std::fs::write(dir.path().join("jwks.json"), &jwks).unwrap();
    std::fs::write(dir.path().join("proxy.token"), "").unwrap();
    let mut changed = cfg.clone();
    changed.upstream.request_timeout += std::time::Duration::from_secs(1);
    let at = paths(Runtime::rebuild(&changed, &rt).err().expect("no token"));
    assert_eq!(at, ["upstream"]);
}
