//! The RBAC objects a fresh sandbox holds: what a real cluster bootstraps (`cluster-admin`
//! for `system:masters`, discovery, public info, self-reviews) and the demo's (the proxy's
//! narrow impersonator role exactly as the README shows it, bound to the proxy's identities,
//! and tenant RBAC that is narrower than the proxy's tenant grant, so the tour can show a
//! request the proxy allows and the API server refuses).
//!
//! Accepts nothing from the network; the objects are ordinary store objects, listed,
//! changed and deleted like any other (`kubectl get clusterroles`).

use serde_json::{json, Value};

use super::{discovery, store::Store};

/// The proxy's identity toward the sandbox when it authenticates with the demo token.
pub const PROXY_SERVICE_ACCOUNT: (&str, &str) = ("portcullis", "portcullis");
/// The proxy's identity when it authenticates with a client certificate of this CN.
pub const PROXY_CERT_USER: &str = "portcullis-proxy";

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name}, "rules": rules})
}

fn binding(name: &str, ns: Option<&str>, role_kind: &str, role: &str, subjects: Value) -> Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

/// What kube-apiserver's RBAC bootstrap creates (the part the sandbox serves).
fn bootstrap() -> Vec<(&'static str, Option<&'static str>, Value)> {
    let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        (
            "clusterroles",
            None,
            cluster_role(
                "cluster-admin",
                json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            None,
            binding(
                "cluster-admin",
                None,
                "ClusterRole",
                "cluster-admin",
                json!([group("system:masters")]),
            ),
        ),
        (
            "clusterroles",
            None,
            cluster_role(
                "system:discovery",
                json!([{"nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
            "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            None,
            binding(
                "system:discovery",
                None,
                "ClusterRole",
                "system:discovery",
                json!([group("system:authenticated")]),
            ),
        ),
        (
            "clusterroles",
            None,
            cluster_role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": public, "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            None,
            binding(
                "system:public-info-viewer",
                None,
                "ClusterRole",
                "system:public-info-viewer",
                json!([
                    group("system:authenticated"),
                    group("system:unauthenticated")
                ]),
            ),
        ),
        (
            "clusterroles",
            None,
            cluster_role(
                "system:basic-user",
                json!([
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            None,
            binding(
                "system:basic-user",
                None,
                "ClusterRole",
                "system:basic-user",
                json!([group("system:authenticated")]),
            ),
        ),
    ]
}

/// The demo's RBAC: the README's impersonator role, the demo identities' rights.
fn demo() -> Vec<(&'static str, Option<&'static str>, Value)> {
    let (sa_ns, sa_name) = PROXY_SERVICE_ACCOUNT;
    let workloads =
        json!([{"apiGroups": ["", "apps", "batch"], "resources": ["*"], "verbs": ["*"]}]);
    vec![
        // Exactly the README's ClusterRole (its resourceNames line is a comment there).
        (
            "clusterroles",
            None,
            cluster_role(
                "portcullis-impersonator",
                json!([
            {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
            {"apiGroups": ["authentication.k8s.io"],
             "resources": ["userextras/portcullis.io/tenant", "userextras/portcullis.io/token-id", "uids"],
             "verbs": ["impersonate"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            None,
            binding(
                "portcullis-impersonator",
                None,
                "ClusterRole",
                "portcullis-impersonator",
                json!([
                {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns},
                user(PROXY_CERT_USER)]),
            ),
        ),
        // The demo admins are cluster admins upstream too.
        (
            "clusterrolebindings",
            None,
            binding(
                "demo-admins",
                None,
                "ClusterRole",
                "cluster-admin",
                json!([group("demo:admins")]),
            ),
        ),
        // team-a: the core, apps and batch groups in team-a — not RBAC objects, which the
        // proxy's tenant default ("everything in its namespaces") would allow.
        (
            "roles",
            Some("team-a"),
            json!({"metadata": {"name": "team-a-workloads", "namespace": "team-a"},
            "rules": workloads}),
        ),
        (
            "rolebindings",
            Some("team-a"),
            binding(
                "team-a-workloads",
                Some("team-a"),
                "Role",
                "team-a-workloads",
                json!([group("tenant:team-a")]),
            ),
        ),
        // ci: what its proxy grant names, in team-a and team-b.
        (
            "clusterroles",
            None,
            cluster_role(
                "ci-deployer",
                json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
            ),
        ),
        (
            "rolebindings",
            Some("team-a"),
            binding(
                "ci-deployer",
                Some("team-a"),
                "ClusterRole",
                "ci-deployer",
                json!([group("ci")]),
            ),
        ),
        (
            "rolebindings",
            Some("team-b"),
            binding(
                "ci-deployer",
                Some("team-b"),
                "ClusterRole",
                "ci-deployer",
                json!([group("ci")]),
            ),
        ),
        // Requests without credentials straight to the sandbox are its admin's: a loopback
        // fixture's convenience (tests post to it directly). Delete this binding to get a real
        // cluster's anonymous (public info only).
        (
            "clusterrolebindings",
            None,
            binding(
                "sandbox:anonymous-admin",
                None,
                "ClusterRole",
                "cluster-admin",
                json!([user("system:anonymous")]),
            ),
        ),
    ]
}

/// Create the bootstrap and demo RBAC objects in `store`.
pub fn seed(store: &mut Store) {
    for (plural, ns, obj) in bootstrap().into_iter().chain(demo()) {
        if let Some(def) = discovery::find("rbac.authorization.k8s.io", "v1", plural) {
            let _ = store.create(def, ns, obj, false);
        }
    }
}
