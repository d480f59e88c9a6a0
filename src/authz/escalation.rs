//! Subresources a tenant's wildcards never reach: each is a way around the proxy or around a
//! rule the proxy enforces, so a tenant rule allows it only when it names it.
//!
//! | subresource | why |
//! |---|---|
//! | `serviceaccounts/token` | TokenRequest mints a token that works against the API server directly, outside the proxy, its limits and its audit |
//! | `pods/binding`, and the legacy `bindings` resource (`POST …/namespaces/t/bindings`, the same binding by another URL) | picks the node, around the field rule that forbids tenants to choose nodes |
//! | `pods/eviction` | a pod delete spelled as a `create` on a subresource: a rule that withholds `delete` on pods would still evict them through `create` on `*` |
//! | `pods/proxy`, `services/proxy`, `nodes/proxy` | the API server relays arbitrary HTTP to the pod / service / kubelet: nothing in it is judged |
//! | `controllerrevisions` (writes: create, update, patch, delete, deletecollection) | a StatefulSet's controller builds pods from the revision its status names (a full template patch in `data`) and talks to the API server directly: a revision deleted and written again under the same name puts a pod template nobody judged into the next pod the controller makes (review). Reading them (`kubectl rollout history`, `rollout undo`, which patches the workload itself) stays covered |
//! | `endpoints`, `endpointslices` (writes: create, update, patch, delete, deletecollection) | a Service without a selector sends its traffic wherever its Endpoints / EndpointSlices say: a tenant writing them can point its own Service (and any Ingress or Gateway in front of it) at pods of other namespaces or at cluster addresses its network policy cannot reach (CVE-2021-25740; Kubernetes 1.22 took Endpoints writes out of the default `edit` and `admin` roles for it, kubernetes#103704, and both kinds must be closed because the mirroring controller copies Endpoints into EndpointSlices). Reading them stays covered |
//! | `resourcequotas`, `limitranges` (writes) | the namespace's share of the cluster and its per-pod limits, set by the platform: a tenant deleting or raising its quota takes capacity other tenants were promised. Kubernetes' default `admin` and `edit` roles only read them. Reading stays covered |
//! | `csistoragecapacities` (writes) | the scheduler reads every namespace's CSIStorageCapacity objects to place pods with volumes (a review's reading, not run here): a tenant's made-up capacities would steer other tenants' pods. Reading stays covered |
//! | the legacy `proxy` verb (`/api/v1/proxy/…`, every resource) | the pre-1.10 form of the `proxy` subresources above (the API server answers it 404 since kubernetes#59884); closed like them rather than left to that history |
//! | `*/status` (writes: create, update, patch, delete) | status is what controllers and the kubelet report; a tenant writing it can fake readiness or a Service's load-balancer address (CVE-2020-8554). Reading status stays covered |
//!
//! "Names it" means a resource pattern with that exact subresource (`serviceaccounts/token`,
//! `pods/binding`, `*/status`, `*/proxy`), or, for `bindings`, `controllerrevisions`,
//! `endpoints`, `endpointslices`, `resourcequotas`, `limitranges`, `csistoragecapacities` and
//! the legacy `proxy` verb, that exact resource; `*`,
//! `pods/*` and `*/*` do not. Grants
//! (`authorization.grants`) keep Kubernetes RBAC's meaning, where `*` covers everything: they
//! are written for operators, not tenants.

use super::pattern::{ResourcePattern, Sub};

/// The (resource, subresource) pairs above, for every verb.
pub const ALWAYS: [(&str, &str); 6] = [
    ("serviceaccounts", "token"),
    ("pods", "binding"),
    ("pods", "eviction"),
    ("pods", "proxy"),
    ("services", "proxy"),
    ("nodes", "proxy"),
];

/// Resources (not subresources) a tenant rule must name, for every verb.
pub const WHOLE: [&str; 1] = ["bindings"];

/// Resources a tenant rule must name to write them (reads stay covered by wildcards), with the
/// group each is served in. The check itself goes by the resource's name in any group, so a
/// custom resource of the same plural is closed as well (conservative: its rule names it).
pub const WRITES_NAMED: [(&str, &str); 6] = [
    ("apps", "controllerrevisions"),
    ("", "endpoints"),
    ("discovery.k8s.io", "endpointslices"),
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("storage.k8s.io", "csistoragecapacities"),
];

fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Whether a tenant rule must name this request's subresource (or, for [`WHOLE`], its
/// resource) to cover it.
pub fn must_be_named(resource: &str, subresource: &str, verb: &str) -> bool {
    if verb == "proxy" {
        return true;
    }
    if subresource.is_empty() {
        return WHOLE.contains(&resource)
            || (WRITES_NAMED.iter().any(|(_, r)| *r == resource) && !is_read(verb));
    }
    if subresource == "status" {
        return !is_read(verb);
    }
    ALWAYS
        .iter()
        .any(|(r, s)| *r == resource && *s == subresource)
}

/// Whether `p` names `subresource` exactly (see the module doc); with no subresource, whether
/// it names `resource` itself.
pub fn names(p: &ResourcePattern, resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() {
        return matches!(p, ResourcePattern::Named { resource: r, sub: Sub::None } if r == resource);
    }
    match p {
        ResourcePattern::Named {
            sub: Sub::Exact(s), ..
        }
        | ResourcePattern::AnyResource { sub: Sub::Exact(s) } => s == subresource,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        authz::{build, tests::id, AuthorizationConfig},
        k8s::request::classify,
    };

    fn allowed(a: &crate::authz::engine::Authorizer, method: &str, uri: &str) -> bool {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let info = classify(&m, &uri.parse().unwrap(), &http::HeaderMap::new()).unwrap();
        a.authorize(&id("alice", &["tenant:t"]), &info).allowed
    }

    fn tenant(rules: serde_json::Value) -> crate::authz::engine::Authorizer {
        let mut t = serde_json::json!({"name": "t", "namespaces": ["t"], "subjects": [{"group": "tenant:t"}]});
        if !rules.is_null() {
            t["rules"] = rules;
        }
        let cfg: AuthorizationConfig =
            serde_json::from_value(serde_json::json!({ "tenants": [t] })).unwrap();
        build(&cfg, "authorization").unwrap()
    }

    #[test]
    fn default_and_wildcard_tenant_rules_stop_at_the_escalation_subresources() {
        let wild = serde_json::json!([{"verbs": ["*"], "api_groups": ["*"], "resources": ["*", "pods/*", "*/*", "serviceaccounts/*"]}]);
        for a in [tenant(serde_json::Value::Null), tenant(wild)] {
            assert!(allowed(&a, "POST", "/api/v1/namespaces/t/pods"));
            assert!(allowed(&a, "GET", "/api/v1/namespaces/t/pods/p/log"));
            assert!(allowed(
                &a,
                "GET",
                "/apis/apps/v1/namespaces/t/deployments/d/status"
            ));
            assert!(!allowed(
                &a,
                "POST",
                "/api/v1/namespaces/t/serviceaccounts/default/token"
            ));
            assert!(!allowed(&a, "POST", "/api/v1/namespaces/t/pods/p/binding"));
            assert!(!allowed(&a, "POST", "/api/v1/namespaces/t/bindings"));
            assert!(!allowed(&a, "POST", "/api/v1/namespaces/t/pods/p/eviction"));
            assert!(!allowed(&a, "GET", "/api/v1/namespaces/t/pods/p/proxy/x"));
            assert!(!allowed(
                &a,
                "GET",
                "/api/v1/namespaces/t/services/s/proxy/"
            ));
            assert!(!allowed(
                &a,
                "PATCH",
                "/apis/apps/v1/namespaces/t/deployments/d/status"
            ));
            assert!(!allowed(
                &a,
                "PUT",
                "/api/v1/namespaces/t/services/s/status"
            ));
            // The legacy proxy verb's paths (404 upstream since 1.10), every resource.
            for legacy in [
                "/api/v1/proxy/namespaces/t/services/s/",
                "/api/v1/proxy/namespaces/t/pods/p/x",
            ] {
                assert!(!allowed(&a, "GET", legacy), "{legacy}");
            }
        }
    }

    #[test]
    fn a_tenant_rule_naming_them_allows_them() {
        let a = tenant(serde_json::json!([
            {"verbs": ["*"], "api_groups": ["*"], "resources": ["*"]},
            {"verbs": ["create"], "api_groups": [""], "resources": ["serviceaccounts/token", "pods/binding", "bindings"]},
            {"verbs": ["patch"], "api_groups": ["*"], "resources": ["*/status"]},
        ]));
        assert!(allowed(
            &a,
            "POST",
            "/api/v1/namespaces/t/serviceaccounts/default/token"
        ));
        assert!(allowed(&a, "POST", "/api/v1/namespaces/t/pods/p/binding"));
        assert!(allowed(&a, "POST", "/api/v1/namespaces/t/bindings"));
        assert!(allowed(
            &a,
            "PATCH",
            "/apis/apps/v1/namespaces/t/deployments/d/status"
        ));
        assert!(!allowed(
            &a,
            "PUT",
            "/apis/apps/v1/namespaces/t/deployments/d/status"
        ));
        assert!(!allowed(&a, "POST", "/api/v1/namespaces/t/pods/p/eviction"));
    }

    #[test]
    fn the_escalation_list_and_status_writes_must_be_named() {
        for (r, s) in ALWAYS {
            assert!(must_be_named(r, s, "create"), "{r}/{s}");
            assert!(must_be_named(r, s, "get"), "{r}/{s}");
        }
        assert!(must_be_named("deployments", "status", "patch"));
        assert!(!must_be_named("deployments", "status", "get"));
        assert!(!must_be_named("pods", "log", "get"));
        assert!(!must_be_named("pods", "exec", "create"));
        assert!(!must_be_named("serviceaccounts", "", "create"));
    }

    /// A tenant's wildcards read controller revisions, Endpoints and EndpointSlices but never
    /// write them: controllers build pods from the first, Services send traffic where the other
    /// two say, unjudged. A rule naming the resource allows its writes.
    #[test]
    fn guarded_resources_are_read_by_wildcards_and_written_only_when_named() {
        for (group, resource, name) in [
            ("apps", "controllerrevisions", "db-5d8f"),
            ("", "endpoints", "db"),
            ("discovery.k8s.io", "endpointslices", "db-x7k2p"),
            ("", "resourcequotas", "compute"),
            ("", "limitranges", "defaults"),
            ("storage.k8s.io", "csistoragecapacities", "fast-zone-a"),
        ] {
            let base = if group.is_empty() {
                "/api/v1".to_owned()
            } else {
                format!("/apis/{group}/v1")
            };
            let rev = format!("{base}/namespaces/t/{resource}");
            let one = format!("{rev}/{name}");
            let wild = serde_json::json!([{"verbs": ["*"], "api_groups": ["*"], "resources": ["*", "*/*"]}]);
            for a in [tenant(serde_json::Value::Null), tenant(wild)] {
                assert!(allowed(&a, "GET", &rev), "{rev}");
                assert!(allowed(&a, "GET", &one), "{one}");
                assert!(allowed(&a, "GET", &format!("{rev}?watch=1")), "{rev}");
                for (m, u) in [
                    ("POST", rev.as_str()),
                    ("PUT", one.as_str()),
                    ("PATCH", one.as_str()),
                    ("DELETE", one.as_str()),
                    ("DELETE", rev.as_str()),
                ] {
                    assert!(!allowed(&a, m, u), "{m} {u}");
                }
            }
            let named = tenant(serde_json::json!([
                {"verbs": ["*"], "api_groups": ["*"], "resources": ["*"]},
                {"verbs": ["create", "delete"], "api_groups": [group], "resources": [resource]},
            ]));
            assert!(allowed(&named, "POST", &rev), "{rev}");
            assert!(allowed(&named, "DELETE", &one), "{one}");
            assert!(!allowed(&named, "PATCH", &one), "{one}");
        }
    }

    #[test]
    fn only_an_exact_subresource_names_it() {
        let n = |p: &str| names(&ResourcePattern::new(p), "serviceaccounts", "token");
        assert!(n("serviceaccounts/token"));
        assert!(n("*/token"));
        assert!(!n("*"));
        assert!(!n("serviceaccounts/*"));
        assert!(!n("*/*"));
        assert!(!n("serviceaccounts"));
        // A guarded resource (no subresource) is named only by itself.
        let b = |p: &str| names(&ResourcePattern::new(p), "bindings", "");
        assert!(b("bindings"));
        assert!(!b("*"));
        assert!(!b("bindings/*"));
        assert!(!b("pods"));
        assert!(must_be_named("bindings", "", "create"));
    }
}
