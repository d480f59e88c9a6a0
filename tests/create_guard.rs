//! A PUT by an identity whose grant allows `update` but not `create` never creates, through
//! the proxy in front of the sandbox (RBAC on), with kubectl (`replace`, whose PUT creates an
//! absent Service on kube-apiserver: Services allow create-on-update). Each refusal is checked
//! both ways: kubectl prints the Status, and the sandbox never saw the write. The sandbox's own
//! create-on-update and uid-precondition rules, which the guard relies on, are checked
//! directly against it.
//!
//! Fails (never skips) when kubectl is missing (`.ci/run` installs it).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::direct::{admin, k, k_in, ok};
use common::{jwt, stderr, Env};
use serde_json::{json, Value};

/// Requests the sandbox saw whose path ends with `suffix`.
fn seen(env: &Env, suffix: &str) -> Vec<portcullis_sandbox::Recorded> {
    env.sandbox
        .sandbox
        .recorded()
        .into_iter()
        .filter(|r| r.path.ends_with(suffix))
        .collect()
}

/// The demo's config with the `ci` grant also allowing get / update (not create) of Services
/// in team-a.
async fn start() -> Env {
    Env::start_with(|config| {
        let rule = r#"        - {namespaces: [team-a, team-b], verbs: [get, list], api_groups: [""], resources: [pods]}"#;
        assert!(config.contains(rule), "the demo's ci grant moved");
        *config = config.replace(
            rule,
            &format!("{rule}\n        - {{namespaces: [team-a], verbs: [get, update], api_groups: [\"\"], resources: [services, services/status]}}"),
        );
        // The demo's CI write budget (burst 3) is not what this test is about.
        let limits = "ci: {reads: {rate: 2/s, burst: 10}, writes: {rate: 1/s, burst: 3}";
        assert!(config.contains(limits), "the demo's ci limits moved");
        *config = config.replace(
            limits,
            "ci: {reads: {rate: 100/s, burst: 100}, writes: {rate: 100/s, burst: 100}",
        );
    })
    .await
}

/// A ci-bot kubeconfig through the proxy whose token's scope covers the Services rule.
fn ci_with_services(env: &Env) -> PathBuf {
    let now = jwt::now();
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    let token = jwt::Forge::from_pem(&pem, "demo-1").token(&json!({
        "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": "ci-bot",
        "groups": ["ci"], "iat": now, "nbf": now, "exp": now + 600, "jti": "svc-1",
        "portcullis.io/scope": [
            {"namespaces": ["team-a"], "verbs": ["get", "update"], "apiGroups": [""], "resources": ["services", "services/status"]}]}));
    let like = &env.files.ci_kubeconfig;
    let kc: Value = serde_json::from_str(&std::fs::read_to_string(like).unwrap()).unwrap();
    let old = kc["users"][0]["user"]["token"].as_str().unwrap().to_owned();
    let path = env.dir.path().join("ci-services.kubeconfig");
    std::fs::write(
        &path,
        std::fs::read_to_string(like).unwrap().replace(&old, &token),
    )
    .unwrap();
    path
}

/// The body of the PUT of `suffix` the sandbox received.
fn forwarded_put(env: &Env, suffix: &str) -> Value {
    let put = seen(env, suffix)
        .into_iter()
        .find(|r| r.method == http::Method::PUT)
        .expect("the PUT was forwarded");
    serde_json::from_slice(put.body.as_ref().unwrap()).unwrap()
}

fn service(name: &str, port: u16) -> String {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}]}})
    .to_string()
}

/// Upstream RBAC lets group `ci` do anything to Services in team-a, so only the proxy's grant
/// (update, not create) stands between ci-bot and a PUT that creates.
async fn let_ci_write_services(env: &Env, admin: &Path) {
    let rbac = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ci-services, namespace: team-a}
rules: [{apiGroups: [""], resources: [services, services/status], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ci-services, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ci-services}
subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: ci}]
"#;
    ok(&k_in(admin, env, &["apply", "-f", "-"], rbac).await);
}

async fn get_service(env: &Env, admin: &Path, name: &str) -> Option<Value> {
    let out = k(
        admin,
        env,
        &["-n", "team-a", "get", "service", name, "-o", "json"],
    )
    .await;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_by_an_update_only_identity_never_creates() {
    common::require_kubectl();
    let env = start().await;
    let admin = admin(&env);
    let ci = ci_with_services(&env);
    let_ci_write_services(&env, &admin).await;

    // Absent: refused as the create it would be; the sandbox saw no PUT.
    env.sandbox.sandbox.clear_recorded();
    let out = k_in(&ci, &env, &["replace", "-f", "-"], &service("ghost", 80)).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("Error from server (Forbidden)")
            && err.contains(r#"services "ghost" is forbidden: User "ci-bot" cannot create resource "services" in API group "" in the namespace "team-a""#),
        "{err}"
    );
    assert!(
        !seen(&env, "/services/ghost")
            .iter()
            .any(|r| r.method == http::Method::PUT),
        "the PUT never reached the sandbox"
    );
    assert!(get_service(&env, &admin, "ghost").await.is_none());

    // Present, body without a uid: forwarded with the object's uid, so it updates.
    ok(&k_in(&admin, &env, &["create", "-f", "-"], &service("web", 80)).await);
    let uid = get_service(&env, &admin, "web").await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    env.sandbox.sandbox.clear_recorded();
    ok(&k_in(&ci, &env, &["replace", "-f", "-"], &service("web", 8080)).await);
    let body = forwarded_put(&env, "/services/web");
    assert_eq!(body["metadata"]["uid"], uid.as_str(), "{body}");
    let now = get_service(&env, &admin, "web").await.unwrap();
    assert_eq!(now["spec"]["ports"][0]["port"], 8080);

    // A body whose uid is empty (or an apply's, null) names no precondition for the API server:
    // it is forwarded with the object's uid too, or a delete racing the proxy's read would let
    // the write create the object.
    let mut empty_uid: Value = serde_json::from_str(&service("web", 8081)).unwrap();
    empty_uid["metadata"]["uid"] = json!("");
    env.sandbox.sandbox.clear_recorded();
    ok(&k_in(&ci, &env, &["replace", "-f", "-"], &empty_uid.to_string()).await);
    let body = forwarded_put(&env, "/services/web");
    assert_eq!(body["metadata"]["uid"], uid.as_str(), "{body}");

    // A `metadata` that is not an object names no uid either, and cannot be given one: refused
    // (400), and the sandbox saw no PUT.
    env.sandbox.sandbox.clear_recorded();
    let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": "web",
        "spec": {"ports": [{"port": 8082}]}});
    let out = k_in(
        &ci,
        &env,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/team-a/services/web",
            "-f",
            "-",
        ],
        &bad.to_string(),
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("BadRequest"), "{}", stderr(&out));
    assert!(
        !seen(&env, "/services/web")
            .iter()
            .any(|r| r.method == http::Method::PUT),
        "the PUT never reached the sandbox"
    );
    let now = get_service(&env, &admin, "web").await.unwrap();
    assert_eq!(now["spec"]["ports"][0]["port"], 8081);

    // Body with a uid (a fetched object, as kubectl edit / client-go Update send): that is the
    // precondition already, so it goes out as sent and the proxy reads nothing first.
    let mut fetched = now.clone();
    fetched["spec"]["ports"][0]["port"] = json!(9090);
    env.sandbox.sandbox.clear_recorded();
    ok(&k_in(&ci, &env, &["replace", "-f", "-"], &fetched.to_string()).await);
    let calls = seen(&env, "/services/web");
    assert_eq!(
        calls.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        vec![http::Method::PUT],
        "one PUT, no read by the guard"
    );
    assert_eq!(
        get_service(&env, &admin, "web").await.unwrap()["spec"]["ports"][0]["port"],
        9090
    );

    // Through `/status`: a Service's status strategy keeps create-on-update, so a PUT of the
    // status of a missing Service would create it — refused the same way, nothing forwarded.
    // (The sandbox answers such a PUT 404, not modelling that path; the guard never lets it
    // reach the API server, which is what is checked.)
    env.sandbox.sandbox.clear_recorded();
    let out = k_in(
        &ci,
        &env,
        &["replace", "--subresource", "status", "-f", "-"],
        &service("ghost-lb", 80),
    )
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("Error from server (Forbidden)")
            && err.contains(r#"User "ci-bot" cannot create resource "services/status" in API group "" in the namespace "team-a""#),
        "{err}"
    );
    assert!(
        !seen(&env, "/services/ghost-lb/status")
            .iter()
            .any(|r| r.method == http::Method::PUT),
        "the PUT never reached the sandbox"
    );
    assert!(get_service(&env, &admin, "ghost-lb").await.is_none());
    // Present: a status update goes through.
    let mut with_status = get_service(&env, &admin, "web").await.unwrap();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}});
    ok(&k_in(
        &ci,
        &env,
        &["replace", "--subresource", "status", "-f", "-"],
        &with_status.to_string(),
    )
    .await);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_creates_on_put_like_kube_apiserver() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = admin(&env);

    // A Service allows create-on-update: a PUT of an absent one creates it.
    let out = k_in(
        &admin,
        &env,
        &["replace", "-f", "-"],
        &service("made-by-put", 80),
    )
    .await;
    ok(&out);
    assert!(get_service(&env, &admin, "made-by-put").await.is_some());

    // …unless the body names a uid: a precondition no absent object meets (409).
    let mut ghost: Value = serde_json::from_str(&service("ghost", 80)).unwrap();
    ghost["metadata"]["uid"] = json!("7d3c1a52-0000-4000-8000-000000000001");
    let out = k_in(&admin, &env, &["replace", "-f", "-"], &ghost.to_string()).await;
    assert!(
        stderr(&out).contains("Precondition failed: UID in precondition: 7d3c1a52-0000-4000-8000-000000000001, UID in object meta: "),
        "{}",
        stderr(&out)
    );
    assert!(get_service(&env, &admin, "ghost").await.is_none());

    // A ConfigMap does not: 404.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "absent", "namespace": "team-a"}, "data": {"a": "b"}});
    let out = k_in(&admin, &env, &["replace", "-f", "-"], &cm.to_string()).await;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // A create path is authorized as `create`: ci-bot's upstream RBAC allows patching
    // deployments, not creating them, so its apply of a missing one is 403.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "by-apply", "namespace": "team-a"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let as_ci = ["--as", "ci-bot", "--as-group", "ci"];
    let apply = [&as_ci[..], &["apply", "--server-side", "-f", "-"]].concat();
    let out = k_in(&admin, &env, &apply, &deployment.to_string()).await;
    assert!(
        stderr(&out).contains(r#"User "ci-bot" cannot create resource "deployments" in API group "apps" in the namespace "team-a""#),
        "{}",
        stderr(&out)
    );
    let out = k(
        &admin,
        &env,
        &["-n", "team-a", "get", "deployment", "by-apply"],
    )
    .await;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // A uid of another object on an existing one: 409, not an update.
    let mut other = get_service(&env, &admin, "made-by-put").await.unwrap();
    other["metadata"]["uid"] = json!("7d3c1a52-0000-4000-8000-000000000002");
    let out = k_in(&admin, &env, &["replace", "-f", "-"], &other.to_string()).await;
    assert!(
        stderr(&out).contains(
            "Precondition failed: UID in precondition: 7d3c1a52-0000-4000-8000-000000000002"
        ),
        "{}",
        stderr(&out)
    );
    env.stop().await;
}

/// The guard reads the body the sanitize stage passed under the same limits: with
/// `sanitize.max_depth: 120`, an update-only identity's PUT of a body 110 levels deep (under
/// that cap, over the default 100) is forwarded with the object's uid, not refused by the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_reads_the_body_under_the_configured_limits() {
    common::require_kubectl();
    let env = Env::start_with(|config| {
        let rule = r#"        - {namespaces: [team-a, team-b], verbs: [get, list], api_groups: [""], resources: [pods]}"#;
        assert!(config.contains(rule), "the demo's ci grant moved");
        *config = config.replace(
            rule,
            &format!("{rule}\n        - {{namespaces: [team-a], verbs: [get, update], api_groups: [\"\"], resources: [services]}}"),
        );
        assert!(config.contains("sanitize:\n"), "the demo's sanitize section moved");
        *config = config.replacen("sanitize:\n", "sanitize:\n  max_depth: 120\n", 1);
    })
    .await;
    let admin = admin(&env);
    let ci = ci_with_services(&env);
    let_ci_write_services(&env, &admin).await;
    ok(&k_in(&admin, &env, &["create", "-f", "-"], &service("deep", 80)).await);
    let mut nested = json!("bottom");
    for _ in 0..110 {
        nested = json!({ "n": nested });
    }
    let mut body: Value = serde_json::from_str(&service("deep", 8080)).unwrap();
    body["x-deep"] = nested;
    env.sandbox.sandbox.clear_recorded();
    let out = k_in(
        &ci,
        &env,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/team-a/services/deep",
            "-f",
            "-",
        ],
        &body.to_string(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = forwarded_put(&env, "/services/deep");
    assert!(sent["metadata"]["uid"].is_string(), "{sent}");
}
