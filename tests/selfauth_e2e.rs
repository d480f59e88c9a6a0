//! Issue 12 items 3, 4, 5 and 10 end to end, through the proxy in front of the sandbox (RBAC
//! on), with kubectl and the Python `kubernetes` client: the self-reviews answered by the
//! proxy (`kubectl auth whoami|can-i|can-i --list`), `kubectl --as` checked against the grants,
//! server-side apply by a patch-only identity (the impersonation self-test is in
//! `impersonation_selftest.rs`). Every refusal is checked both ways: the client's Status, and
//! that the sandbox never saw the request.
//!
//! Fails (never skips) when kubectl or the Python client is missing (`.ci/run` installs both).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{path::PathBuf, time::Duration};

use common::direct::{admin, k, k_in, ok};
use common::{jwt, stderr, stdout, Env};
use serde_json::{json, Value};

fn token_of(kubeconfig: &std::path::Path) -> String {
    let kc: Value = serde_json::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    kc["users"][0]["user"]["token"].as_str().unwrap().to_owned()
}

/// A kubeconfig like `like`, with `token` instead of its own.
fn with_token(env: &Env, like: &std::path::Path, name: &str, token: &str) -> PathBuf {
    let text = std::fs::read_to_string(like).unwrap();
    let path = env.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(&path, text.replace(&token_of(like), token)).unwrap();
    path
}

/// Requests the sandbox saw whose path contains `part`.
fn seen(env: &Env, part: &str) -> Vec<portcullis_sandbox::Recorded> {
    env.sandbox
        .sandbox
        .recorded()
        .into_iter()
        .filter(|r| r.path.contains(part))
        .collect()
}

fn events(env: &Env) -> Vec<Value> {
    let text = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "Event" && v["stage"] == "ResponseComplete")
        .collect()
}

/// kubectl sends its current namespace with every `can-i`, also for cluster-scoped
/// resources: a grant rule without namespaces (cluster-scoped resources only) must answer for
/// `nodes` as the real `GET /api/v1/nodes` is decided — allowed by the proxy, so the API server
/// is asked — not "no grant" for the namespace kubectl happened to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_on_a_cluster_scoped_resource_ignores_kubectls_namespace() {
    common::require_kubectl();
    let env = Env::start_with(|c| {
        *c = c.replacen(
            "    - name: ci\n",
            "    - name: node-readers\n      subjects: [{user: alice}]\n      rules:\n        - {verbs: [get, list], api_groups: [\"\"], resources: [nodes]}\n    - name: ci\n",
            1,
        )
    })
    .await;
    let alice = env.files.team_a_kubeconfig.clone();
    for args in [
        &["auth", "can-i", "list", "nodes", "-n", "default"][..],
        &["auth", "can-i", "list", "nodes", "-n", "team-b"][..],
    ] {
        env.sandbox.sandbox.clear_recorded();
        let out = k(&alice, &env, args).await;
        assert_ne!(
            stdout(&out).trim(),
            "no - portcullis: no grant",
            "{args:?}: {}",
            stderr(&out)
        );
        let asked = seen(&env, "selfsubjectaccessreviews");
        assert_eq!(
            asked.len(),
            1,
            "{args:?}: the proxy allowed it and asked the API server: {} {}",
            stdout(&out),
            stderr(&out)
        );
        // About the same request: the API server's RBAC would otherwise answer for the
        // namespace kubectl happened to send (RoleBindings there), not for `GET /api/v1/nodes`.
        let review: Value = serde_json::from_slice(asked[0].body.as_deref().unwrap()).unwrap();
        let attrs = &review["spec"]["resourceAttributes"];
        assert_eq!(attrs["resource"], "nodes", "{review}");
        assert_eq!(
            attrs["namespace"].as_str().unwrap_or(""),
            "",
            "{args:?}: {review}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_and_can_i_are_answered_by_the_proxy_for_each_demo_identity() {
    common::require_kubectl();
    let env = Env::start().await;
    let (admin_kc, team_a, ci) = (
        env.files.admin_kubeconfig.clone(),
        env.files.team_a_kubeconfig.clone(),
        env.files.ci_kubeconfig.clone(),
    );

    // whoami: the identity as the proxy forwards it, and never asked upstream.
    for (kc, user, group) in [
        (&admin_kc, "admin", "demo:admins"),
        (&team_a, "alice", "tenant:team-a"),
        (&ci, "ci-bot", "ci"),
    ] {
        let who: Value =
            serde_json::from_str(&ok(&k(kc, &env, &["auth", "whoami", "-o", "json"]).await))
                .unwrap();
        let info = &who["status"]["userInfo"];
        assert_eq!(info["username"], user, "{who}");
        assert_eq!(
            info["groups"],
            json!([group, "system:authenticated"]),
            "{who}"
        );
        if user == "alice" {
            assert_eq!(
                info["extra"]["portcullis.io/tenant"],
                json!(["team-a"]),
                "{who}"
            );
        }
    }
    assert!(seen(&env, "selfsubjectreviews").is_empty());

    // can-i yes: the proxy's grant and the sandbox's RBAC (asked as ci-bot) both allow.
    env.sandbox.sandbox.clear_recorded();
    let yes = k(
        &ci,
        &env,
        &["auth", "can-i", "patch", "deployments", "-n", "team-a"],
    )
    .await;
    assert_eq!(stdout(&yes).trim(), "yes", "{}", stderr(&yes));
    let asked = seen(&env, "selfsubjectaccessreviews");
    assert_eq!(asked.len(), 1, "the proxy asked upstream once");
    assert_eq!(asked[0].headers["impersonate-user"], "ci-bot");
    // can-i no: no grant — decided by the proxy, nothing asked upstream.
    env.sandbox.sandbox.clear_recorded();
    let no = k(
        &ci,
        &env,
        &["auth", "can-i", "delete", "deployments", "-n", "team-a"],
    )
    .await;
    // kubectl prints the reason after a no.
    assert_eq!(
        stdout(&no).trim(),
        "no - portcullis: no grant",
        "{}",
        stderr(&no)
    );
    assert!(!no.status.success());
    assert!(seen(&env, "selfsubjectaccessreviews").is_empty());
    // can-i '*' '*': "everything here" — a tenant's wildcards stop at the guarded requests, so
    // the proxy says no, and why, without asking upstream; `list '*'` covers nothing guarded.
    env.sandbox.sandbox.clear_recorded();
    let all = k(&team_a, &env, &["auth", "can-i", "*", "*", "-n", "team-a"]).await;
    assert!(!all.status.success());
    assert!(
        stdout(&all)
            .trim()
            .starts_with("no - portcullis: the question covers create serviceaccounts/token, which portcullis refuses"),
        "{}{}",
        stdout(&all),
        stderr(&all)
    );
    assert!(seen(&env, "selfsubjectaccessreviews").is_empty());
    let list = k(
        &team_a,
        &env,
        &["auth", "can-i", "list", "*", "-n", "team-a"],
    )
    .await;
    assert_eq!(stdout(&list).trim(), "yes", "{}", stderr(&list));
    // The demo admin's grant covers everything: yes (the sandbox's RBAC agrees).
    let admin_all = k(
        &admin_kc,
        &env,
        &["auth", "can-i", "*", "*", "-n", "team-a"],
    )
    .await;
    assert_eq!(stdout(&admin_all).trim(), "yes", "{}", stderr(&admin_all));
    // can-i impersonate: the proxy impersonates with its own right, so its answer is the
    // whole answer — yes for the admin's grant, no for an extra the proxy sets itself —
    // and nothing is asked upstream.
    env.sandbox.sandbox.clear_recorded();
    let imp = k(
        &admin_kc,
        &env,
        &["auth", "can-i", "impersonate", "users/bob"],
    )
    .await;
    assert_eq!(stdout(&imp).trim(), "yes", "{}", stderr(&imp));
    // kubectl cannot map `userextras` (no such resource in discovery): the review as a
    // client-go program sends it.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "impersonate", "group": "authentication.k8s.io",
            "resource": "userextras", "subresource": "portcullis.io/tenant", "name": "team-b"}}});
    let r = http::Request::builder()
        .method("POST")
        .uri("https://localhost/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            review.to_string(),
        )))
        .unwrap();
    let resp = env.request(r, Some(&env.admin_cert), true).await;
    assert_eq!(resp.status().as_u16(), 201);
    let answered: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(
        answered["status"],
        json!({"allowed": false, "reason": "portcullis: the proxy sets this extra itself"})
    );
    assert!(seen(&env, "selfsubjectaccessreviews").is_empty());
    // Out of scope: the grant allows patch in team-a, this token's scope only get.
    let now = jwt::now();
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    let narrow = jwt::Forge::from_pem(&pem, "demo-1").token(&json!({
        "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": "ci-bot",
        "groups": ["ci"], "iat": now, "nbf": now, "exp": now + 600, "jti": "narrow-1",
        "portcullis.io/scope": [{"namespaces": ["team-a"], "verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}]}));
    let narrow = with_token(&env, &ci, "narrow", &narrow);
    let out = k(
        &narrow,
        &env,
        &["auth", "can-i", "get", "deployments", "-n", "team-a"],
    )
    .await;
    assert_eq!(stdout(&out).trim(), "yes", "{}", stderr(&out));
    let out = k(
        &narrow,
        &env,
        &["auth", "can-i", "patch", "deployments", "-n", "team-a"],
    )
    .await;
    assert_eq!(
        stdout(&out).trim(),
        "no - portcullis: outside token scope",
        "in the grant, outside the token scope"
    );
    // The proxy allows (team-a's tenant default: everything), the sandbox's RBAC does not.
    env.sandbox.sandbox.clear_recorded();
    let out = k(&team_a, &env, &["auth", "can-i", "list", "roles"]).await;
    assert_eq!(
        stdout(&out).trim(),
        "no - portcullis allows it (tenant team-a), the API server does not",
        "{}",
        stderr(&out)
    );
    assert_eq!(seen(&env, "selfsubjectaccessreviews").len(), 1);
    let out = k(&team_a, &env, &["auth", "can-i", "create", "deployments"]).await;
    assert_eq!(stdout(&out).trim(), "yes", "{}", stderr(&out));
    let out = k(
        &team_a,
        &env,
        &["auth", "can-i", "get", "pods", "-n", "team-b"],
    )
    .await;
    assert!(stdout(&out).starts_with("no - "), "{}", stdout(&out));
    let out = k(&admin_kc, &env, &["auth", "can-i", "delete", "nodes"]).await;
    assert_eq!(stdout(&out).trim(), "yes", "{}", stderr(&out));

    // can-i --list: grants ∩ scope in the namespace.
    let list = ok(&k(&ci, &env, &["auth", "can-i", "--list", "-n", "team-a"]).await);
    let deploy = list
        .lines()
        .find(|l| l.starts_with("deployments.apps "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(deploy.contains("[get list watch patch]"), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    let list = ok(&k(&ci, &env, &["auth", "can-i", "--list", "-n", "default"]).await);
    assert!(
        !list.contains("deployments.apps"),
        "no grant in default: {list}"
    );
    let list = ok(&k(&narrow, &env, &["auth", "can-i", "--list", "-n", "team-a"]).await);
    let deploy = list
        .lines()
        .find(|l| l.starts_with("deployments.apps "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(deploy.contains("[get]"), "narrowed by the scope: {list}");
    let list = ok(&k(&team_a, &env, &["auth", "can-i", "--list"]).await);
    assert!(list.lines().any(|l| l.starts_with("*.* ")), "{list}");
    let list = ok(&k(&admin_kc, &env, &["auth", "can-i", "--list"]).await);
    assert!(list.lines().any(|l| l.starts_with("*.* ")), "{list}");
    assert!(seen(&env, "selfsubjectrulesreviews").is_empty());

    // Audited (as reads).
    let ev = events(&env);
    assert!(
        ev.iter()
            .any(|e| e["objectRef"]["resource"] == "selfsubjectaccessreviews"
                && e["user"]["username"] == "ci-bot"
                && e["responseStatus"]["code"] == 201),
        "{ev:?}"
    );

    // Raw: protobuf out for a client that accepts only protobuf; 406 and 415 for the rest.
    let review = |accept: &str, ct: &str, body: &'static [u8]| {
        http::Request::post(
            "https://localhost/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        )
        .header("accept", accept)
        .header("content-type", ct)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
        .unwrap()
    };
    let spec: &[u8] = br#"{"spec": {"resourceAttributes": {"namespace": "team-a", "verb": "delete", "group": "apps", "resource": "deployments"}}}"#;
    let pb = "application/vnd.kubernetes.protobuf";
    let resp = env
        .request(
            review(pb, "application/json", spec),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["content-type"], pb);
    let back = portcullis::k8s::review_proto::decode(resp.body()).unwrap();
    assert_eq!(back["kind"], "SelfSubjectAccessReview");
    assert_eq!(back["spec"]["resourceAttributes"]["verb"], "delete");
    // The refusals below are the proxy's own: nothing reaches the sandbox.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            review("text/html", "application/json", spec),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 406);
    let status: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(status["kind"], "Status", "{status}");
    let resp = env
        .request(
            review("application/json", pb, b"k8s\0\xff"),
            Some(&env.admin_cert),
            true,
        )
        .await;
    // 400, as kube-apiserver answers a body it cannot decode (`transformDecodeError`).
    assert_eq!(resp.status(), 400, "{:?}", resp.body());
    let status: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(status["kind"], "Status", "{status}");
    // A question about nothing: 422 Invalid naming the field, as kube-apiserver's validation.
    let resp = env
        .request(
            review("application/json", "application/json", br#"{"spec": {}}"#),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 422, "{:?}", resp.body());
    let status: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(status["reason"], "Invalid", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.resourceAttributes"
    );
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "the sandbox saw a refused review: {:?}",
        env.sandbox.sandbox.recorded()
    );

    // The Python client: JSON bodies, the same answers.
    let script = r#"
import json, sys
from kubernetes import client
url, ca, token = sys.argv[1:4]
c = client.Configuration(); c.host = url; c.ssl_ca_cert = ca
c.api_key = {"authorization": "Bearer " + token}
a = client.ApiClient(c)
out = {}
out["whoami"] = client.AuthenticationV1Api(a).create_self_subject_review(client.V1SelfSubjectReview()).status.user_info.username
def can(verb, group, resource):
    r = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace="team-a", verb=verb, group=group, resource=resource)))
    return client.AuthorizationV1Api(a).create_self_subject_access_review(r).status.allowed
out["configmaps"] = can("create", "", "configmaps")
out["roles"] = can("list", "rbac.authorization.k8s.io", "roles")
rules = client.AuthorizationV1Api(a).create_self_subject_rules_review(client.V1SelfSubjectRulesReview(
    spec=client.V1SelfSubjectRulesReviewSpec(namespace="team-a"))).status
out["incomplete"] = rules.incomplete
print(json.dumps(out))
"#;
    let run = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(format!("https://{}", env.proxy_addr))
        .arg(env.dir.path().join("ca.crt"))
        .arg(token_of(&team_a))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        json!({"whoami": "alice", "configmaps": true, "roles": false, "incomplete": true})
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_is_checked_against_the_grants() {
    common::require_kubectl();
    let env = Env::start().await;
    let (admin_kc, team_a) = (
        env.files.admin_kubeconfig.clone(),
        env.files.team_a_kubeconfig.clone(),
    );
    // Allowed: demo-admins' `*` covers ordinary users and groups; the request runs as alice.
    env.sandbox.sandbox.clear_recorded();
    let as_alice = ["--as", "alice", "--as-group", "tenant:team-a"];
    ok(&k(
        &admin_kc,
        &env,
        &[&as_alice[..], &["-n", "team-a", "get", "configmaps"]].concat(),
    )
    .await);
    let fwd = seen(&env, "/namespaces/team-a/configmaps");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].headers["impersonate-user"], "alice");
    assert_eq!(fwd[0].headers["impersonate-group"], "tenant:team-a");
    assert_eq!(
        fwd[0].headers["impersonate-extra-portcullis.io%2ftenant"],
        "team-a"
    );
    let ev = events(&env);
    let e = ev
        .iter()
        .rev()
        .find(|e| {
            e["requestURI"]
                .as_str()
                .is_some_and(|u| u.contains("/namespaces/team-a/configmaps"))
        })
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(e["user"]["username"], "admin");
    assert_eq!(e["impersonatedUser"]["username"], "alice");
    assert_eq!(
        e["impersonatedUser"]["groups"],
        json!(["tenant:team-a", "system:authenticated"])
    );
    let who = ok(&k(
        &admin_kc,
        &env,
        &[&as_alice[..], &["auth", "whoami"]].concat(),
    )
    .await);
    assert!(who.contains("alice") && !who.contains("admin"), "{who}");

    // Authorized as alice: her grants, not admin's.
    env.sandbox.sandbox.clear_recorded();
    let out = k(
        &admin_kc,
        &env,
        &[&as_alice[..], &["-n", "team-b", "get", "pods"]].concat(),
    )
    .await;
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#), "{}", stderr(&out));
    assert!(seen(&env, "team-b").is_empty());

    // Refused: alice has no impersonate grant; never ignored, never forwarded.
    let out = k(&team_a, &env, &["--as", "bob", "get", "pods"]).await;
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{}", stderr(&out));
    let out = k(
        &team_a,
        &env,
        &["auth", "can-i", "--as", "bob", "get", "pods"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"users "bob" is forbidden: User "alice" cannot impersonate"#),
        "{}",
        stderr(&out)
    );
    // system: identities need a grant naming them; `*` is not enough. (`get --raw`: kubectl
    // prints a refused discovery request as "Forbidden: unknown", against any API server.)
    let out = k(
        &admin_kc,
        &env,
        &[
            "--as",
            "bob",
            "--as-group",
            "system:masters",
            "get",
            "--raw",
            "/api/v1/nodes",
        ],
    )
    .await;
    assert!(stderr(&out).contains(r#"groups "system:masters" is forbidden: User "admin" cannot impersonate resource "groups" in API group "" at the cluster scope"#), "{}", stderr(&out));
    let out = k(
        &admin_kc,
        &env,
        &[
            "--as",
            "system:serviceaccount:team-a:default",
            "get",
            "--raw",
            "/api/v1/namespaces/team-a/pods",
        ],
    )
    .await;
    assert!(stderr(&out).contains(r#"serviceaccounts "default" is forbidden: User "admin" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team-a""#), "{}", stderr(&out));
    let out = k(&admin_kc, &env, &["--as-group", "dev", "get", "pods"]).await;
    assert!(!out.status.success());
    assert!(
        seen(&env, "/pods").is_empty() && seen(&env, "/nodes").is_empty(),
        "{:?}",
        env.sandbox.sandbox.recorded()
    );

    // The Python client's own Impersonate-User header: the same 403, nothing forwarded.
    let script = r#"
import json, sys
from kubernetes import client
url, ca, token = sys.argv[1:4]
c = client.Configuration(); c.host = url; c.ssl_ca_cert = ca
c.api_key = {"authorization": "Bearer " + token}
a = client.ApiClient(c); a.set_default_header("Impersonate-User", "admin")
try:
    client.CoreV1Api(a).list_namespaced_secret("team-a"); print(json.dumps(None))
except client.exceptions.ApiException as e:
    print(json.dumps([e.status, json.loads(e.body)["message"]]))
"#;
    let run = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(format!("https://{}", env.proxy_addr))
        .arg(env.dir.path().join("ca.crt"))
        .arg(token_of(&team_a))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        json!([
            403,
            r#"users "admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        ])
    );
    assert!(seen(&env, "secrets").is_empty());
    env.stop().await;
}

const RESTRICTED: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "NAME", "namespace": "team-a"},
  "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "NAME"}},
    "template": {"metadata": {"labels": {"app": "NAME"}},
      "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "nginx",
          "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}}}"#;

fn deployment(name: &str, replicas: u32) -> String {
    RESTRICTED
        .replace("NAME", name)
        .replace("REPLICAS", &replicas.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_by_a_patch_only_identity_never_creates() {
    common::require_kubectl();
    let env = Env::start().await;
    let ci = env.files.ci_kubeconfig.clone();
    let apply = ["apply", "--server-side", "--force-conflicts", "-f", "-"];

    // A new object: ci-bot may patch deployments, not create them.
    env.sandbox.sandbox.clear_recorded();
    let out = k_in(&ci, &env, &apply, &deployment("ci-new", 1)).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#"Error from server (Forbidden): deployments.apps "ci-new" is forbidden: User "ci-bot" cannot create resource "deployments" in API group "apps" in the namespace "team-a""#), "{}", stderr(&out));
    assert!(
        !seen(&env, "deployments/ci-new")
            .iter()
            .any(|r| r.method == http::Method::PATCH),
        "the apply never reached the sandbox"
    );
    let out = k(
        &admin(&env),
        &env,
        &["-n", "team-a", "get", "deployment", "ci-new"],
    )
    .await;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // An existing object: admitted, with the object's uid as the API server's precondition.
    ok(&k_in(
        &env.files.admin_kubeconfig,
        &env,
        &apply,
        &deployment("ci-old", 1),
    )
    .await);
    let uid = ok(&k(
        &admin(&env),
        &env,
        &[
            "-n",
            "team-a",
            "get",
            "deployment",
            "ci-old",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await);
    assert!(!uid.is_empty());
    env.sandbox.sandbox.clear_recorded();
    ok(&k_in(&ci, &env, &apply, &deployment("ci-old", 3)).await);
    let patch = seen(&env, "deployments/ci-old")
        .into_iter()
        .find(|r| r.method == http::Method::PATCH)
        .expect("the apply was forwarded");
    let body: Value = serde_json::from_slice(patch.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["metadata"]["uid"], uid.as_str(), "{body}");
    let replicas = ok(&k(
        &admin(&env),
        &env,
        &[
            "-n",
            "team-a",
            "get",
            "deployment",
            "ci-old",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
    .await);
    assert_eq!(replicas, "3");

    // What makes it race-free: an apply that names a uid never creates (the sandbox, like
    // kube-apiserver, answers 409), so an object deleted after our read stays deleted.
    let mut ghost: Value = serde_json::from_str(&deployment("ghost", 1)).unwrap();
    ghost["metadata"]["uid"] = json!(uid);
    let out = k_in(&admin(&env), &env, &apply, &ghost.to_string()).await;
    assert!(
        stderr(&out).contains("uid mismatch: the provided object specified uid"),
        "{}",
        stderr(&out)
    );
    let out = k(
        &admin(&env),
        &env,
        &["-n", "team-a", "get", "deployment", "ghost"],
    )
    .await;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    env.stop().await;
}
