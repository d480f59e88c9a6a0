//! The sandbox as a stricter upstream: RBAC and impersonation checks and the review APIs, with
//! kubectl and the Python `kubernetes` client, directly against the sandbox and through the
//! proxy (where the user sees the sandbox's own 403).
//!
//! Fails (never skips) when kubectl or the Python client is missing (`.ci/run` installs both).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::direct::{admin, direct_kubeconfig, k, k_in, ok};
use common::{stderr, stdout, Env};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_allows_and_refuses_with_upstream_wording() {
    common::require_kubectl();
    let env = Env::start().await;
    env.sandbox.sandbox.add_token("bob-token", "bob", &["dev"]);
    let bob = direct_kubeconfig(&env, "bob", "bob-token");
    let out = k(&bob, &env, &["-n", "team-a", "get", "pods"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "team-a""#), "{}", stderr(&out));

    // Bind bob to the ci-deployer ClusterRole in team-a only.
    let binding = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
      "metadata": {"name": "bob", "namespace": "team-a"},
      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ci-deployer"},
      "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]}"#;
    ok(&k_in(&admin(&env), &env, &["apply", "-f", "-"], binding).await);
    ok(&k(&bob, &env, &["-n", "team-a", "get", "pods"]).await);
    let out = k(&bob, &env, &["-n", "team-b", "get", "pods"]).await;
    assert!(
        stderr(&out).contains(
            r#"User "bob" cannot list resource "pods" in API group "" in the namespace "team-b""#
        ),
        "{}",
        stderr(&out)
    );
    let out = k(&bob, &env, &["-n", "team-a", "delete", "deployment", "web"]).await;
    assert!(stderr(&out).contains(r#"deployments.apps "web" is forbidden: User "bob" cannot delete resource "deployments" in API group "apps" in the namespace "team-a""#), "{}", stderr(&out));
    // Cluster scope, and a binding whose role is missing.
    let out = k(&bob, &env, &["get", "namespaces"]).await;
    assert!(stderr(&out).contains(r#"namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope"#), "{}", stderr(&out));
    let dangling = binding
        .replace(
            r#""name": "bob", "namespace""#,
            r#""name": "bob2", "namespace""#,
        )
        .replace("ci-deployer", "no-such-role");
    ok(&k_in(&admin(&env), &env, &["apply", "-f", "-"], &dangling).await);
    let out = k(&bob, &env, &["-n", "team-a", "get", "secrets"]).await;
    assert!(stderr(&out).contains(r#"in the namespace "team-a": RBAC: clusterrole.rbac.authorization.k8s.io "no-such-role" not found"#), "{}", stderr(&out));
    // An unknown token is a bare 401.
    let stranger = direct_kubeconfig(&env, "stranger", "nope");
    let out = k(&stranger, &env, &["get", "pods"]).await;
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_checked_per_user_group_and_extra() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = admin(&env);
    // system:masters may impersonate anyone; the request then runs as that identity.
    let out = ok(&k(
        &admin,
        &env,
        &[
            "auth",
            "whoami",
            "--as",
            "alice",
            "--as-group",
            "tenant:team-a",
            "-o",
            "json",
        ],
    )
    .await);
    let who: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["tenant:team-a", "system:authenticated"])
    );
    let out = k(
        &admin,
        &env,
        &["--as", "alice", "-n", "team-b", "get", "pods"],
    )
    .await;
    assert!(
        stderr(&out).contains(r#"User "alice" cannot list resource "pods""#),
        "{}",
        stderr(&out)
    );

    // bob may impersonate alice (only), not carol and not groups.
    env.sandbox.sandbox.add_token("bob-token", "bob", &[]);
    let bob = direct_kubeconfig(&env, "bob", "bob-token");
    let out = k(&bob, &env, &["--as", "alice", "get", "pods"]).await;
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{}", stderr(&out));
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "as-alice"},
       "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["alice"]}]}"#;
    let binding = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "bob-as-alice"},
       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "as-alice"},
       "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]}"#;
    for obj in [role, binding] {
        ok(&k_in(&admin, &env, &["apply", "-f", "-"], obj).await);
    }
    // Allowed to impersonate: the request runs as alice (no groups given: no tenant rights).
    let out = k(
        &bob,
        &env,
        &["--as", "alice", "-n", "team-a", "get", "pods"],
    )
    .await;
    assert!(stderr(&out).contains(r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-a""#), "{}", stderr(&out));
    let who = ok(&k(&bob, &env, &["--as", "alice", "auth", "whoami"]).await);
    assert!(
        who.contains("alice") && who.contains("system:authenticated"),
        "{who}"
    );
    let out = k(&bob, &env, &["--as", "carol", "get", "pods"]).await;
    assert!(
        stderr(&out).contains(
            r#"users "carol" is forbidden: User "bob" cannot impersonate resource "users""#
        ),
        "{}",
        stderr(&out)
    );
    let out = k(
        &bob,
        &env,
        &[
            "--as",
            "alice",
            "--as-group",
            "tenant:team-a",
            "get",
            "pods",
        ],
    )
    .await;
    assert!(stderr(&out).contains(r#"groups "tenant:team-a" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the cluster scope"#), "{}", stderr(&out));
    let out = k(
        &bob,
        &env,
        &["--as", "alice", "--as-uid", "u1", "get", "pods"],
    )
    .await;
    assert!(stderr(&out).contains(r#"uids.authentication.k8s.io "u1" is forbidden: User "bob" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#), "{}", stderr(&out));
    let out = k(
        &bob,
        &env,
        &[
            "--as",
            "system:serviceaccount:team-a:builder",
            "get",
            "pods",
        ],
    )
    .await;
    assert!(stderr(&out).contains(r#"serviceaccounts "builder" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team-a""#), "{}", stderr(&out));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_and_can_i_directly() {
    common::require_kubectl();
    let env = Env::start().await;
    env.sandbox
        .sandbox
        .add_token("alice-token", "alice", &["tenant:team-a"]);
    let alice = direct_kubeconfig(&env, "alice", "alice-token");
    let out = ok(&k(&alice, &env, &["auth", "whoami"]).await);
    assert!(
        out.contains("alice") && out.contains("tenant:team-a"),
        "{out}"
    );
    let can = |args: &'static [&'static str]| {
        let (alice, env) = (&alice, &env);
        async move { k(alice, env, args).await }
    };
    let yes = can(&["auth", "can-i", "create", "deployments", "-n", "team-a"]).await;
    assert_eq!(stdout(&yes).trim(), "yes");
    let no = can(&["auth", "can-i", "create", "roles", "-n", "team-a"]).await;
    assert_eq!(stdout(&no).trim(), "no");
    assert!(!no.status.success(), "can-i exits 1 on no");
    let no = can(&["auth", "can-i", "list", "pods", "-n", "team-b"]).await;
    assert_eq!(stdout(&no).trim(), "no");
    let list = ok(&can(&["auth", "can-i", "--list", "-n", "team-a"]).await);
    assert!(
        list.contains("*.apps") && list.contains("selfsubjectreviews.authentication.k8s.io"),
        "{list}"
    );
    // A SubjectAccessReview is the admin's to ask.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "groups": ["tenant:team-a"],
                 "resourceAttributes": {"namespace": "team-a", "verb": "delete", "resource": "pods"}}});
    let out = ok(&k_in(
        &admin(&env),
        &env,
        &["create", "-f", "-", "-o", "json"],
        &sar.to_string(),
    )
    .await);
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["status"]["allowed"], true);
    assert_eq!(
        got["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "team-a-workloads/team-a" of Role "team-a-workloads" to Group "tenant:team-a""#
    );
    let out = k_in(&alice, &env, &["create", "-f", "-"], &sar.to_string()).await;
    assert!(stderr(&out).contains(r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "alice" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#), "{}", stderr(&out));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_allows_but_upstream_rbac_refuses() {
    common::require_kubectl();
    let env = Env::start().await;
    let team_a = env.files.team_a_kubeconfig.clone();
    // Allowed by both: the tenant's workloads.
    ok(&k(&team_a, &env, &["get", "pods"]).await);
    env.sandbox.sandbox.clear_recorded();
    // The proxy's tenant default allows everything in team-a; upstream RBAC gives team-a
    // no RBAC objects. The user sees the sandbox's own 403.
    let out = k(&team_a, &env, &["get", "roles"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): roles.rbac.authorization.k8s.io is forbidden: User "alice" cannot list resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "team-a""#), "{}", stderr(&out));
    let seen = env.sandbox.sandbox.recorded();
    let fwd = seen
        .iter()
        .find(|r| r.path == "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles")
        .expect("the proxy forwarded the request");
    assert_eq!(fwd.headers["impersonate-user"], "alice");
    // The proxy's own refusal still comes first where it refuses.
    env.sandbox.sandbox.clear_recorded();
    let out = k(&team_a, &env, &["-n", "team-b", "get", "roles"]).await;
    assert!(
        stderr(&out).contains(r#"User "alice" cannot list resource "roles""#),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.path.contains("team-b")),
        "the proxy refused team-b itself"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_directly_and_through_the_proxy() {
    let env = Env::start().await;
    env.sandbox
        .sandbox
        .add_token("alice-token", "alice", &["tenant:team-a"]);
    let team_a_token = {
        let text = std::fs::read_to_string(&env.files.team_a_kubeconfig).unwrap();
        let kc: Value = serde_json::from_str(&text).unwrap();
        kc["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ca = env.dir.path().join("ca.crt");
    let script = r#"
import json, sys
from kubernetes import client
def api(url, token, ca, **headers):
    c = client.Configuration(); c.host = url; c.ssl_ca_cert = ca
    c.api_key = {"authorization": "Bearer " + token}
    a = client.ApiClient(c)
    for k, v in headers.items(): a.set_default_header(k, v)
    return a
def forbidden(call):
    try: call(); return None
    except client.exceptions.ApiException as e: return [e.status, json.loads(e.body)["message"]]
url, proxy, ca, team_a_token = sys.argv[1:5]
out = {}
alice = api(url, "alice-token", ca)
out["allowed"] = len(client.CoreV1Api(alice).list_namespaced_pod("team-a").items) >= 0
out["refused"] = forbidden(lambda: client.CoreV1Api(alice).list_namespaced_secret("team-b"))
ssr = client.AuthenticationV1Api(alice).create_self_subject_review(client.V1SelfSubjectReview())
out["whoami"] = ssr.status.user_info.username
ssar = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
    resource_attributes=client.V1ResourceAttributes(namespace="team-a", verb="create", group="rbac.authorization.k8s.io", resource="roles")))
out["can_create_roles"] = client.AuthorizationV1Api(alice).create_self_subject_access_review(ssar).status.allowed
imp = api(url, "alice-token", ca, **{"Impersonate-User": "admin"})
out["impersonate"] = forbidden(lambda: client.CoreV1Api(imp).list_namespace())
via = api(proxy, team_a_token, ca)
out["proxy_refused"] = forbidden(lambda: client.RbacAuthorizationV1Api(via).list_namespaced_role("team-a"))
out["proxy_allowed"] = len(client.CoreV1Api(via).list_namespaced_config_map("team-a").items) >= 0
print(json.dumps(out))
"#;
    let run = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(env.sandbox.url())
        .arg(format!("https://{}", env.proxy_addr))
        .arg(&ca)
        .arg(&team_a_token)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .unwrap()
        .expect("python3 runs (the kubernetes client is installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["allowed"], true);
    assert_eq!(
        got["refused"],
        json!([
            403,
            r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "team-b""#
        ])
    );
    assert_eq!(got["whoami"], "alice");
    assert_eq!(got["can_create_roles"], false);
    assert_eq!(
        got["impersonate"],
        json!([
            403,
            r#"users "admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        ])
    );
    assert_eq!(
        got["proxy_refused"],
        json!([
            403,
            r#"roles.rbac.authorization.k8s.io is forbidden: User "alice" cannot list resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "team-a""#
        ])
    );
    assert_eq!(got["proxy_allowed"], true);
    env.stop().await;
}
