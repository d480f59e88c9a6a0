//! The RBAC objects a fresh sandbox holds: what a real cluster bootstraps (`cluster-admin`
//! for `system:masters`, discovery, public info, self-reviews) and the demo's (the proxy's
//! narrow impersonator role exactly as the README shows it, bound to the proxy's identities,
//! and tenant RBAC that is narrower than the proxy's tenant grant, so the tour can show a
//! request the proxy allows and the API server refuses).
//!
//! Accepts nothing from the network; the objects are ordinary store objects, listed,
//! changed and deleted like any other (`kubectl get clusterroles`).

use serde_json::Value;

use super::{discovery, store::Store};

/// The proxy's identity toward the sandbox when it authenticates with the demo token.
pub const PROXY_SERVICE_ACCOUNT: (&str, &str) = ("portcullis", "portcullis");

/// What kube-apiserver's RBAC bootstrap creates (the part the sandbox serves). Data, in the
/// form `kubectl get -o yaml` shows it.
const BOOTSTRAP: &str = r#"
- kind: ClusterRole
  metadata: {name: cluster-admin}
  rules:
  - {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
  - {nonResourceURLs: ["*"], verbs: ["*"]}
- kind: ClusterRoleBinding
  metadata: {name: cluster-admin}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:masters"}]
- kind: ClusterRole
  metadata: {name: "system:discovery"}
  rules:
  - nonResourceURLs: [/api, /api/*, /apis, /apis/*, /healthz, /livez, /openapi, /openapi/*, /readyz, /version, /version/]
    verbs: [get]
- kind: ClusterRoleBinding
  metadata: {name: "system:discovery"}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:discovery"}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:authenticated"}]
- kind: ClusterRole
  metadata: {name: "system:public-info-viewer"}
  rules:
  - {nonResourceURLs: [/healthz, /livez, /readyz, /version, /version/], verbs: [get]}
- kind: ClusterRoleBinding
  metadata: {name: "system:public-info-viewer"}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:public-info-viewer"}
  subjects:
  - {kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:authenticated"}
  - {kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:unauthenticated"}
- kind: ClusterRole
  metadata: {name: "system:basic-user"}
  rules:
  - {apiGroups: [authentication.k8s.io], resources: [selfsubjectreviews], verbs: [create]}
  - {apiGroups: [authorization.k8s.io], resources: [selfsubjectaccessreviews, selfsubjectrulesreviews], verbs: [create]}
- kind: ClusterRoleBinding
  metadata: {name: "system:basic-user"}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:basic-user"}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:authenticated"}]
"#;

/// The demo's RBAC. `portcullis-impersonator` is exactly the README's ClusterRole (its
/// `resourceNames` line is a comment there), bound to the proxy's service account and to
/// `portcullis-proxy` (a client-certificate proxy identity). team-a gets the core, apps and
/// batch groups in team-a — not RBAC objects, which the proxy's tenant default ("everything in
/// its namespaces") would allow. Requests without credentials straight to the sandbox are its
/// admin's (`sandbox:anonymous-admin`): a loopback fixture's convenience, as tests post to it
/// directly; delete the binding to get a real cluster's anonymous (public info only).
const DEMO: &str = r#"
- kind: ClusterRole
  metadata: {name: portcullis-impersonator}
  rules:
  - apiGroups: [""]
    resources: [users, groups]
    verbs: [impersonate]
  - apiGroups: [authentication.k8s.io]
    resources: [userextras/portcullis.io/tenant, userextras/portcullis.io/token-id, uids]
    verbs: [impersonate]
- kind: ClusterRoleBinding
  metadata: {name: portcullis-impersonator}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: portcullis-impersonator}
  subjects:
  - {kind: ServiceAccount, name: portcullis, namespace: portcullis}
  - {kind: User, apiGroup: rbac.authorization.k8s.io, name: portcullis-proxy}
- kind: ClusterRoleBinding
  metadata: {name: demo-admins}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "demo:admins"}]
- kind: Role
  metadata: {name: team-a-workloads, namespace: team-a}
  rules: [{apiGroups: ["", apps, batch], resources: ["*"], verbs: ["*"]}]
- kind: RoleBinding
  metadata: {name: team-a-workloads, namespace: team-a}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: team-a-workloads}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "tenant:team-a"}]
- kind: ClusterRole
  metadata: {name: ci-deployer}
  rules:
  - {apiGroups: [apps], resources: [deployments], verbs: [get, list, watch, patch]}
  - {apiGroups: [""], resources: [pods], verbs: [get, list]}
- kind: RoleBinding
  metadata: {name: ci-deployer, namespace: team-a}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ci-deployer}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: ci}]
- kind: RoleBinding
  metadata: {name: ci-deployer, namespace: team-b}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ci-deployer}
  subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: ci}]
- kind: ClusterRoleBinding
  metadata: {name: "sandbox:anonymous-admin"}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
  subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: "system:anonymous"}]
"#;

/// Create the bootstrap and demo RBAC objects in `store`.
pub fn seed(store: &mut Store) {
    for text in [BOOTSTRAP, DEMO] {
        let objects: Vec<Value> = serde_saphyr::from_str(text).unwrap_or_default();
        for obj in objects {
            let plural = format!("{}s", obj["kind"].as_str().unwrap_or("").to_lowercase());
            let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
            if let Some(def) = discovery::find("rbac.authorization.k8s.io", "v1", &plural) {
                let _ = store.create(def, ns.as_deref(), obj, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seeded_object_is_stored() {
        let store = Store::new();
        let count = |p: &str| {
            let def = discovery::find("rbac.authorization.k8s.io", "v1", p).unwrap();
            store.list(def, None).len()
        };
        assert_eq!(
            (
                count("clusterroles"),
                count("clusterrolebindings"),
                count("roles"),
                count("rolebindings")
            ),
            (6, 7, 1, 3)
        );
    }
}
