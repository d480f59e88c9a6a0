//! The sandbox as a stricter upstream: RBAC and impersonation checks, the review APIs,
//! dry-run / stringData / generateName / clusterIP, 410 Expired, and status-subresource
//! semantics — with kubectl, the Python `kubernetes` client and kube-rs, directly against the
//! sandbox and through the proxy (where the user sees the sandbox's own 403).
//!
//! Fails (never skips) when kubectl or the Python client is missing (`.ci/run` installs both).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use common::{stderr, stdout, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_sandbox as sandbox;
use serde_json::{json, Value};

/// A kubeconfig straight to the sandbox with a bearer `token`.
fn direct_kubeconfig(env: &Env, name: &str, token: &str) -> PathBuf {
    let path = env.dir.path().join(format!("{name}.direct.kubeconfig"));
    sandbox::write_direct_kubeconfig(&path, &env.sandbox.url(), &env.ca.cert.cert_pem).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("token: sandbox", &format!("token: {token}")),
    )
    .unwrap();
    path
}

async fn k(kubeconfig: &Path, env: &Env, args: &[&str]) -> std::process::Output {
    common::kubectl(kubeconfig, env.dir.path(), args).await
}

/// kubectl with stdin.
async fn k_in(kubeconfig: &Path, env: &Env, args: &[&str], input: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.path().join("kube-cache"))
        .args(args)
        .env("HOME", env.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "kubectl failed: {}", stderr(o));
    stdout(o)
}

fn admin(env: &Env) -> PathBuf {
    direct_kubeconfig(env, "admin", "sandbox")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_string_data_generate_name_and_cluster_ip() {
    common::require_kubectl();
    let env = Env::start().await;
    let direct = admin(&env);
    for kc in [&direct, &env.files.admin_kubeconfig] {
        let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}}"#;
        ok(&k_in(kc, &env, &["apply", "-f", "-"], cm).await);
        let out = ok(&k(
            kc,
            &env,
            &["delete", "configmap", "keep", "--dry-run=server"],
        )
        .await);
        assert!(out.contains("(server dry run)"), "{out}");
        ok(&k(kc, &env, &["get", "configmap", "keep"]).await);
        ok(&k(kc, &env, &["delete", "configmap", "keep"]).await);
    }
    let recorded = env.sandbox.sandbox.recorded();
    let dry = recorded
        .iter()
        .find(|r| r.method == "DELETE" && r.query.is_none())
        .unwrap();
    assert!(String::from_utf8_lossy(dry.body.as_ref().unwrap()).contains(r#""dryRun":["All"]"#));

    let secret = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "eA=="}, "stringData": {"password": "hunter2"}}"#;
    ok(&k_in(&direct, &env, &["apply", "-f", "-"], secret).await);
    let got: Value = serde_json::from_str(&ok(&k(
        &direct,
        &env,
        &["get", "secret", "s", "-o", "json"],
    )
    .await))
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(got["data"]["password"], b64.encode("hunter2"));
    assert_eq!(got["data"]["a"], "eA==");
    assert!(got.get("stringData").is_none());

    let gen = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}}"#;
    let name = ok(&k_in(&direct, &env, &["create", "-f", "-", "-o", "name"], gen).await);
    let name = name.trim().trim_start_matches("configmap/");
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");

    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}"#;
    ok(&k_in(
        &env.files.admin_kubeconfig,
        &env,
        &["apply", "-f", "-"],
        svc,
    )
    .await);
    let ip = ok(&k(
        &direct,
        &env,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await);
    assert!(ip.starts_with("10.96."), "{ip}");
    let headless = svc
        .replace(r#""name": "web"}"#, r#""name": "db"}"#)
        .replace(r#""ports""#, r#""clusterIP": "None", "ports""#);
    ok(&k_in(&direct, &env, &["apply", "-f", "-"], &headless).await);
    let ip = ok(&k(
        &direct,
        &env,
        &["get", "svc", "db", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await);
    assert_eq!(ip, "None");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_changes_only_status() {
    common::require_kubectl();
    let env = Env::start().await;
    let kc = admin(&env);
    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}}"#;
    ok(&k_in(&kc, &env, &["apply", "-f", "-"], svc).await);
    let patch = r#"{"spec": {"type": "NodePort"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}"#;
    ok(&k(
        &kc,
        &env,
        &[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await);
    let get = || async {
        let out = ok(&k(&kc, &env, &["get", "svc", "web", "-o", "json"]).await);
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let got = get().await;
    assert_eq!(got["spec"]["type"], "ClusterIP", "spec ignored on /status");
    assert_eq!(
        got["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
    let main = r#"{"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}, "metadata": {"labels": {"x": "y"}}}"#;
    ok(&k(
        &kc,
        &env,
        &["patch", "svc", "web", "--type=merge", "-p", main],
    )
    .await);
    let got = get().await;
    assert_eq!(got["metadata"]["labels"]["x"], "y");
    assert_eq!(
        got["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.1",
        "status ignored on the resource"
    );

    // Issue 17: a status write must not make a stored pod privileged.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#;
    ok(&k_in(&kc, &env, &["apply", "-f", "-"], pod).await);
    let evil = r#"{"spec": {"hostPID": true, "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}}"#;
    ok(&k(
        &kc,
        &env,
        &[
            "patch",
            "pod",
            "p",
            "--subresource=status",
            "--type=strategic",
            "-p",
            evil,
        ],
    )
    .await);
    let out = ok(&k(&kc, &env, &["get", "pod", "p", "-o", "json"]).await);
    let got: Value = serde_json::from_str(&out).unwrap();
    assert!(got["spec"]["hostPID"].is_null(), "{got}");
    assert!(
        got["spec"]["containers"][0]["securityContext"].is_null(),
        "{got}"
    );
    env.stop().await;
}

fn raw(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_resource_versions_answer_410() {
    let env = Env::start().await;
    env.sandbox.sandbox.set_history_limit(5);
    let cert = Some(&env.admin_cert);
    let cms = "/api/v1/namespaces/default/configmaps";
    let list = env
        .request(raw("GET", &format!("{cms}?limit=1"), ""), cert, true)
        .await;
    let list: Value = serde_json::from_slice(list.body()).unwrap();
    let old_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("a{i}")}});
        let r = env
            .request(raw("POST", cms, &cm.to_string()), cert, true)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let page = env
        .request(raw("GET", &format!("{cms}?limit=1"), ""), cert, true)
        .await;
    let page: Value = serde_json::from_slice(page.body()).unwrap();
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..8 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("b{i}")}});
        env.request(raw("POST", cms, &cm.to_string()), cert, true)
            .await;
    }
    // Through the proxy: the watch gets an in-stream ERROR event (HTTP 200)...
    let watch = env
        .request(
            raw(
                "GET",
                &format!("{cms}?watch=1&resourceVersion={old_rv}"),
                "",
            ),
            cert,
            true,
        )
        .await;
    assert_eq!(watch.status(), StatusCode::OK);
    let ev: Value = serde_json::from_slice(watch.body()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(
        (ev["object"]["code"].clone(), ev["object"]["reason"].clone()),
        (json!(410), json!("Expired"))
    );
    let msg = ev["object"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("too old resource version: {old_rv} (")),
        "{msg}"
    );
    // ...an expired continue token a direct 410 with a fresh token.
    let r = env
        .request(
            raw("GET", &format!("{cms}?limit=1&continue={token}"), ""),
            cert,
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::GONE);
    let st: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(st["reason"], "Expired");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .starts_with("The provided continue parameter is too old"));
    let fresh = st["metadata"]["continue"].as_str().unwrap();
    let r = env
        .request(
            raw("GET", &format!("{cms}?limit=100&continue={fresh}"), ""),
            cert,
            true,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the re-issued token continues at the latest state"
    );
    let exact = format!("{cms}?resourceVersion={old_rv}&resourceVersionMatch=Exact");
    assert_eq!(
        env.request(raw("GET", &exact, ""), cert, true)
            .await
            .status(),
        StatusCode::GONE
    );

    // kube-rs sees the 410 as a WatchEvent::Error and recovers by re-listing.
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let kc = kube::config::Kubeconfig::read_from(&env.files.admin_kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: kube::Api<ConfigMap> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    let relisted = api.list(&ListParams::default()).await.unwrap();
    let rv = relisted.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-relist"}});
    env.request(raw("POST", cms, &cm.to_string()), cert, true)
        .await;
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("after-relist")),
        other => panic!("expected the new object, got {other:?}"),
    }
    env.stop().await;
}
