//! What the self-reviews answer, from the identity and the policy (pure except the one
//! upstream question of a `SelfSubjectAccessReview`, which the layer asks).
//!
//! * `SelfSubjectReview` (`kubectl auth whoami`): the identity as the proxy forwards it —
//!   user, uid, groups (plus `system:authenticated`, which the API server adds to every
//!   impersonated user), extras including the ones the proxy adds (`portcullis.io/tenant`,
//!   `portcullis.io/token-id`).
//! * `SelfSubjectAccessReview` (`kubectl auth can-i`): grants ∩ token scope decide; when they
//!   allow, the API server is asked too (as the caller) and `allowed` is true only if both
//!   are; `reason` says who decided.
//! * `SelfSubjectRulesReview` (`kubectl auth can-i --list`): the rules of `authz::rules`,
//!   always `incomplete` (the API server's RBAC may narrow them further).
//!
//! Rejects (400): an access review with neither or both attribute kinds, a rules review
//! without `spec.namespace`.

use serde_json::{json, Map, Value};

use crate::{
    authn::{
        identity::{Method, TENANT_EXTRA, TOKEN_ID_EXTRA},
        Identity,
    },
    authz::{Authorizer, Decision},
    k8s::{request::RequestInfo, Status},
    refusal::Refusal,
};

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn bad(message: &str) -> Refusal {
    Refusal::BadReview(Box::new(Status::bad_request(message)))
}

/// `status` of a SelfSubjectReview.
pub fn whoami(id: &Identity) -> Value {
    let groups = id.groups_as_authenticated();
    let mut extra: Map<String, Value> = id
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Some(t) = &id.tenant {
        extra.insert(TENANT_EXTRA.into(), json!([t]));
    }
    if let Method::Jwt { token_id, .. } = &id.method {
        if !token_id.is_empty() {
            extra.insert(TOKEN_ID_EXTRA.into(), json!([token_id]));
        }
    }
    let mut user = json!({"username": id.user, "groups": groups});
    if !id.uid.is_empty() {
        user["uid"] = json!(id.uid);
    }
    if !extra.is_empty() {
        user["extra"] = Value::Object(extra);
    }
    json!({"userInfo": user})
}

/// The request an access review asks about, as the classification would have made it.
pub fn asked_request(spec: &Value) -> Result<RequestInfo, Refusal> {
    let (r, n) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let mut info = RequestInfo::default();
    match (r.is_object(), n.is_object()) {
        (true, false) => {
            info.is_resource_request = true;
            info.verb = text(&r["verb"]);
            info.api_group = text(&r["group"]);
            info.api_version = text(&r["version"]);
            info.namespace = text(&r["namespace"]);
            info.resource = text(&r["resource"]);
            info.subresource = text(&r["subresource"]);
            info.name = text(&r["name"]);
        }
        (false, true) => {
            info.verb = text(&n["verb"]);
            info.path = text(&n["path"]);
        }
        _ => {
            return Err(bad(
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    }
    Ok(info)
}

/// The proxy's own decision on an access review's request.
pub fn local_decision(authorizer: &Authorizer, id: &Identity, asked: &RequestInfo) -> Decision {
    if asked.verb == "impersonate" {
        // As `authn::impersonate` decides a real `--as`: system: targets must be named, and
        // the extras the proxy sets itself are never the caller's to give.
        let reserved = asked.api_group == "authentication.k8s.io"
            && asked.resource == "userextras"
            && (asked.subresource.eq_ignore_ascii_case(TENANT_EXTRA)
                || asked.subresource.eq_ignore_ascii_case(TOKEN_ID_EXTRA));
        if reserved {
            return Decision {
                allowed: false,
                reason: "the proxy sets this extra itself".into(),
            };
        }
        let system = asked.name.starts_with("system:") || asked.resource == "serviceaccounts";
        return authorizer.authorize_impersonation(id, asked, system);
    }
    authorizer.authorize(id, asked)
}

/// Whether the proxy's decision is the whole answer: impersonation (`--as`) is carried out
/// with the proxy's own right to impersonate, after the proxy's check alone — the caller's
/// own RBAC is never consulted, so asking the API server as the caller would answer another
/// question.
pub fn answered_locally(asked: &RequestInfo) -> bool {
    asked.verb == "impersonate"
}

/// `status` of a SelfSubjectAccessReview, from the proxy's decision and (when the proxy
/// allows) the API server's answer for the same identity.
pub fn access_status(local: &Decision, upstream: Option<Result<Value, String>>) -> Value {
    if !local.allowed {
        return json!({"allowed": false, "reason": format!("portcullis: {}", local.reason)});
    }
    match upstream {
        None => json!({"allowed": true, "reason": format!("portcullis: {}", local.reason)}),
        Some(Ok(up)) => {
            let allowed = up["allowed"].as_bool().unwrap_or(false);
            let why = up["reason"].as_str().filter(|r| !r.is_empty());
            let mut s = if allowed {
                json!({"allowed": true, "reason": format!("portcullis: {}; API server: {}",
                    local.reason, why.unwrap_or("allowed"))})
            } else {
                json!({"allowed": false, "reason": format!("portcullis allows it ({}), the API server does not{}",
                    local.reason, why.map(|w| format!(": {w}")).unwrap_or_default())})
            };
            if up["denied"].as_bool() == Some(true) {
                s["denied"] = json!(true);
            }
            if let Some(e) = up["evaluationError"].as_str().filter(|e| !e.is_empty()) {
                s["evaluationError"] = json!(e);
            }
            s
        }
        Some(Err(e)) => json!({"allowed": false,
            "reason": format!("portcullis allows it ({}); the API server could not be asked", local.reason),
            "evaluationError": format!("portcullis could not ask the API server: {e}")}),
    }
}

/// `status` of a SelfSubjectRulesReview.
pub fn rules(authorizer: &Authorizer, id: &Identity, spec: &Value) -> Result<Value, Refusal> {
    let ns = text(&spec["namespace"]);
    if ns.is_empty() {
        return Err(bad("no namespace on request"));
    }
    let view = authorizer.rules_in(id, &ns);
    let resource_rules: Vec<Value> = view
        .resource_rules
        .iter()
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = view
        .non_resource_rules
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.urls}))
        .collect();
    Ok(json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": true,
        "evaluationError": "portcullis lists its grants ∩ the token's scope; the API server's RBAC may allow less (kubectl auth can-i VERB RESOURCE asks both); a tenant rule's wildcards do not reach serviceaccounts/token, pods/binding, bindings, pods/eviction, the proxy subresources or writes of status unless the rule names them",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_shows_what_the_proxy_forwards() {
        let mut id = crate::authz::tests::id("alice", &["tenant:team-a"]);
        id.tenant = Some("team-a".into());
        id.uid = "u-1".into();
        let s = whoami(&id);
        assert_eq!(
            s,
            json!({"userInfo": {"username": "alice", "uid": "u-1",
                "groups": ["tenant:team-a", "system:authenticated"],
                "extra": {"portcullis.io/tenant": ["team-a"]}}})
        );
    }

    #[test]
    fn access_needs_both_yes() {
        let a = crate::authz::tests::authorizer();
        let ci = crate::authz::tests::id("ci-bot", &["ci"]);
        let spec = json!({"resourceAttributes": {"namespace": "team-a", "verb": "patch",
            "group": "apps", "resource": "deployments", "name": "web"}});
        let d = local_decision(&a, &ci, &asked_request(&spec).unwrap());
        assert!(d.allowed);
        let yes = access_status(&d, Some(Ok(json!({"allowed": true, "reason": "RBAC: ok"}))));
        assert_eq!(yes["allowed"], true);
        let no = access_status(&d, Some(Ok(json!({"allowed": false}))));
        assert_eq!(no["allowed"], false);
        assert!(no["reason"]
            .as_str()
            .unwrap()
            .contains("the API server does not"));
        let unknown = access_status(&d, Some(Err("unreachable".into())));
        assert_eq!(unknown["allowed"], false);
        let spec = json!({"resourceAttributes": {"namespace": "team-a", "verb": "create",
            "group": "apps", "resource": "deployments"}});
        let d = local_decision(&a, &ci, &asked_request(&spec).unwrap());
        assert_eq!(
            access_status(&d, None),
            json!({"allowed": false, "reason": "portcullis: no grant"})
        );
        assert!(asked_request(&json!({})).is_err());
    }

    /// `can-i impersonate` is the proxy's answer alone, and a reserved extra is never given.
    #[test]
    fn impersonation_is_answered_by_the_proxy_with_its_reserved_extras() {
        let cfg = json!({"grants": [{"name": "root", "subjects": [{"group": "admins"}],
            "rules": [{"namespaces": ["*"], "verbs": ["*"], "api_groups": ["*"], "resources": ["*"]}]}]});
        let a =
            crate::authz::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let root = crate::authz::tests::id("root", &["admins"]);
        let ask = |resource: &str, sub: &str, name: &str| {
            asked_request(&json!({"resourceAttributes": {"verb": "impersonate",
                "group": if resource == "users" { "" } else { "authentication.k8s.io" },
                "resource": resource, "subresource": sub, "name": name}}))
            .unwrap()
        };
        let bob = ask("users", "", "bob");
        assert!(answered_locally(&bob));
        assert!(local_decision(&a, &root, &bob).allowed);
        for key in ["portcullis.io/tenant", "Portcullis.io/Token-Id"] {
            let d = local_decision(&a, &root, &ask("userextras", key, "team-b"));
            assert!(!d.allowed, "{key}");
            assert_eq!(d.reason, "the proxy sets this extra itself");
        }
        assert!(local_decision(&a, &root, &ask("userextras", "scopes", "x")).allowed);
        let get =
            asked_request(&json!({"resourceAttributes": {"verb": "get", "resource": "pods"}}))
                .unwrap();
        assert!(!answered_locally(&get));
    }
}
