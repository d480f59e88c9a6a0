//! Issue 12 item 10 end to end: the proxy asks the sandbox (RBAC on) whether it may
//! impersonate what it sends, at start and from `/readyz`; a narrowed ClusterRole shows up in
//! `/readyz` (503 naming the right), the `portcullis_upstream_impersonation_allowed` gauge and
//! `portcullis check-config --online` (the real binary).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::direct::{admin, k_in, ok};
use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_test_reports_a_missing_impersonate_right() {
    common::require_kubectl();
    let env = Env::start_with(|c| {
        *c = c.replace("health_interval: 1h", "health_interval: 1s");
    })
    .await;
    let check = |env: &Env| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check-config", "--online", "--config"])
            .arg(&env.files.config)
            .output()
            .unwrap()
    };
    // The demo role: everything required, not service accounts (optional).
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let out = check(&env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok       impersonate groups (required)"),
        "{text}"
    );
    assert!(
        text.contains("MISSING  impersonate serviceaccounts (optional)"),
        "{text}"
    );
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    // The documented name, not one with the prefix twice (which also contains it).
    assert!(!metrics.contains("portcullis_portcullis_"), "{metrics}");
    assert!(
        metrics.contains(r#"portcullis_upstream_impersonation_allowed{right="groups"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_upstream_impersonation_allowed{right="serviceaccounts"} 0"#),
        "{metrics}"
    );

    // Narrow the binding's role: no more groups.
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
      "metadata": {"name": "portcullis-impersonator"},
      "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/portcullis.io/tenant", "userextras/portcullis.io/token-id", "uids"], "verbs": ["impersonate"]}]}"#;
    ok(&k_in(&admin(&env), &env, &["apply", "-f", "-"], role).await);
    let mut last = String::new();
    for _ in 0..30 {
        let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
        last = body;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        last.contains("the upstream does not let portcullis impersonate groups"),
        "{last}"
    );
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_upstream_impersonation_allowed{right="groups"} 0"#),
        "{metrics}"
    );
    let out = check(&env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("MISSING  impersonate groups (required)"),
        "{text}"
    );

    // Narrowed with resourceNames, as README and deploy/ advise: allowed for the names listed
    // only — reported, not a readiness failure (every replica would otherwise go unready).
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
      "metadata": {"name": "portcullis-impersonator"},
      "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
        {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["tenant:team-a", "ci"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/portcullis.io/tenant", "userextras/portcullis.io/token-id", "uids"], "verbs": ["impersonate"]}]}"#;
    ok(&k_in(&admin(&env), &env, &["apply", "-f", "-"], role).await);
    let mut ready = false;
    for _ in 0..30 {
        let (status, _) = common::admin_get(env.admin_addr, "/readyz").await;
        if status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ready, "a narrowed right kept /readyz failing");
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_upstream_impersonation_allowed{right="groups"} 2"#),
        "{metrics}"
    );
    let out = check(&env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("narrowed impersonate groups (required)"),
        "{text}"
    );
    env.stop().await;
}

/// An identity provider that cannot be reached at a cold start leaves its issuer without keys:
/// its tokens are refused, but the proxy stays ready while anyone can authenticate (client
/// certificates here) — one provider must not take every replica, and every other user, out
/// of service. Without client certificates and with no issuer holding keys, it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_identity_provider_does_not_make_the_proxy_unready() {
    let unreachable_issuer = "  jwt:
    - issuer:
        url: https://idp.unreachable.example
        audiences: [portcullis]
        jwks_url: https://127.0.0.1:1/jwks
        certificate_authority_file: ca.crt
      claim_mappings:
        username: {claim: sub, prefix: \"other:\"}
";
    let env = Env::start_with(|c| {
        *c = c.replacen("  jwt:\n", unreachable_issuer, 1);
    })
    .await;
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;

    // No client certificates, and the only issuer has no keys: nobody can authenticate.
    let env = Env::start_with(|c| {
        let certs = "  client_certificates:\n    ca_files: [ca.crt]\n    mode: optional             # certificates for admins, bearer tokens for the rest\n";
        assert!(c.contains(certs), "{c}");
        *c = c.replace(certs, "").replace(
            "        jwks_file: jwks.json\n",
            "        jwks_url: https://127.0.0.1:1/jwks\n        certificate_authority_file: ca.crt\n",
        );
    })
    .await;
    let mut last = (http::StatusCode::OK, String::new());
    for _ in 0..20 {
        last = common::admin_get(env.admin_addr, "/readyz").await;
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(
        last.1
            .contains("no keys loaded for JWT issuer https://portcullis-demo.local"),
        "{}",
        last.1
    );
    env.stop().await;
}
