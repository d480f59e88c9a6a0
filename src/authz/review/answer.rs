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
//! Rejects: an access review with neither or both attribute kinds (422 Invalid, as
//! kube-apiserver's validation), a rules review without `spec.namespace` (400).

use serde_json::{json, Map, Value};

use crate::{
    authn::{
        identity::{Method, TENANT_EXTRA, TOKEN_ID_EXTRA},
        Identity,
    },
    authz::{escalation, pattern::RESOURCE_VERBS, Authorizer, Decision},
    k8s::{request::RequestInfo, status::StatusCause, Status},
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
        // 422 Invalid, as `ValidateSelfSubjectAccessReviewSpec` words it (kubernetes
        // `pkg/apis/authorization/validation/validation.go`, as read).
        (true, true) => {
            return Err(invalid_access_review(
                "spec.nonResourceAttributes",
                "Invalid value: \"object\": cannot be specified in combination with resourceAttributes",
            ))
        }
        (false, false) => {
            return Err(invalid_access_review(
                "spec.resourceAttributes",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    }
    Ok(info)
}

fn invalid_access_review(field: &str, message: &str) -> Refusal {
    Refusal::BadReview(Box::new(Status::invalid(
        "SelfSubjectAccessReview",
        "authorization.k8s.io",
        "",
        vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: field.into(),
        }],
    )))
}

/// An access review's request as the URL of the real request would classify it: kubectl
/// sends its current namespace with every question (also for nodes, namespaces, `users` to
/// impersonate), where the real request has none — or, for one namespace object (get, update,
/// patch, delete: its name is in the path), its own name; a list or watch of namespaces (a
/// name only through a field selector) or a create has none. And without a version, which a
/// self-review's create has. The proxy decides on this, and asks the API server about this,
/// so both answer about the same request.
pub fn as_classified(authorizer: &Authorizer, asked: &RequestInfo) -> RequestInfo {
    let mut asked = asked.clone();
    if asked.is_resource_request {
        // Group `*` covers the core group's namespace object.
        if (asked.api_group.is_empty() || asked.api_group == "*") && asked.resource == "namespaces"
        {
            asked.namespace = if names_namespace_in_path(&asked.verb) {
                asked.name.clone()
            } else {
                String::new()
            };
        } else if authorizer.is_cluster_scoped(&asked.api_group, &asked.resource) {
            asked.namespace.clear();
        }
        if asked.api_version.is_empty() {
            asked.api_version = "v1".into();
        }
    }
    asked
}

/// Whether a request with `verb` on one namespace object names it in its path (get, update,
/// patch, delete: the namespace object's place) — a list, watch, deletecollection or create of
/// namespaces does not (cluster-scoped).
fn names_namespace_in_path(verb: &str) -> bool {
    !matches!(verb, "list" | "watch" | "deletecollection" | "create")
}

/// The proxy's own decision on an access review's request, taken on the request as the URL
/// would classify it ([`as_classified`]).
pub fn local_decision(authorizer: &Authorizer, id: &Identity, asked: &RequestInfo) -> Decision {
    let asked = as_classified(authorizer, asked);
    if asked.is_resource_request
        && !RESOURCE_VERBS.contains(&asked.verb.as_str())
        && asked.verb != "*"
    {
        // `bind`, `escalate`, `approve`, `sign`, `use`…: verbs no request carries, which the
        // API server checks itself (creating a binding, approving a CSR) for the impersonated
        // caller; the proxy never judges them, so its answer is the API server's.
        return Decision {
            allowed: true,
            reason: format!("{:?} is not a verb portcullis checks", asked.verb),
        };
    }
    let asked = &asked;
    if asked.verb == "impersonate" {
        // As `authn::impersonate` decides a real `--as`: system: targets must be named, and
        // the extras the proxy sets itself are never the caller's to give.
        // A wildcard asks about everything it covers, as RBAC reads it: group `*`, resource
        // `*` (every resource, `userextras/…` included) or extra `*` cover the reserved ones.
        let reserved = matches!(asked.api_group.as_str(), "authentication.k8s.io" | "*")
            && (asked.resource == "*"
                || asked.resource == "userextras"
                    && (asked.subresource == "*"
                        || asked.subresource.eq_ignore_ascii_case(TENANT_EXTRA)
                        || asked.subresource.eq_ignore_ascii_case(TOKEN_ID_EXTRA)));
        if reserved {
            return Decision {
                allowed: false,
                reason: "the proxy sets this extra itself".into(),
            };
        }
        // As `authn::impersonate`: a `system:` user or group, and every service account, must
        // be named by a rule; uids and extras need not be. A question without a name asks
        // about every user (or group), `system:` ones included.
        // Group `*` covers the core group, and resource `*` users, groups and service accounts.
        let core = asked.api_group.is_empty() || asked.api_group == "*";
        let system = asked.resource == "serviceaccounts"
            || core && asked.resource == "*"
            || core
                && matches!(asked.resource.as_str(), "users" | "groups")
                && (asked.name.is_empty() || asked.name.starts_with("system:"));
        return authorizer.authorize_impersonation(id, asked, system);
    }
    let decision = authorizer.authorize(id, asked);
    if !decision.allowed {
        return decision;
    }
    // To RBAC a wildcard means all (`can-i '*' '*'`: "may I do everything here?"), and a
    // tenant's wildcards stop at the guarded requests: the answer is yes only if those are
    // allowed too (review: it said yes where the proxy refuses part of it).
    for probe in guarded_instances(asked) {
        let d = authorizer.authorize(id, &probe);
        if !d.allowed {
            let sub = if probe.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", probe.subresource)
            };
            return Decision {
                allowed: false,
                reason: format!(
                    "the question covers {} {}{sub}, which portcullis refuses ({})",
                    probe.verb, probe.resource, d.reason
                ),
            };
        }
    }
    decision
}

/// The guarded requests (`authz::escalation`, and the namespace object a rule limited to
/// namespaces reaches only when it names `namespaces`) that a question with a wildcard verb,
/// group, resource or subresource covers, each as a concrete request in the question's place.
fn guarded_instances(asked: &RequestInfo) -> Vec<RequestInfo> {
    let wild = |s: &str| s == "*";
    if !asked.is_resource_request
        || ![
            &asked.verb,
            &asked.api_group,
            &asked.resource,
            &asked.subresource,
        ]
        .iter()
        .any(|s| wild(s))
    {
        return Vec::new();
    }
    // (group, resource, subresource, the verb to ask when the question's is `*`).
    let status_of = if wild(&asked.resource) {
        "pods"
    } else {
        asked.resource.as_str()
    };
    let status_group = if wild(&asked.api_group) {
        ""
    } else {
        asked.api_group.as_str()
    };
    let mut candidates: Vec<(&str, &str, &str, &str)> = escalation::ALWAYS
        .iter()
        .filter(|(r, _)| *r != "nodes") // cluster-scoped: never in a namespace's question
        .map(|(r, s)| ("", *r, *s, "create"))
        .collect();
    candidates.extend(escalation::WHOLE.iter().map(|r| ("", *r, "", "create")));
    candidates.extend(
        escalation::WRITES_NAMED
            .iter()
            .map(|(g, r)| (*g, *r, "", "create")),
    );
    candidates.push((status_group, status_of, "status", "update"));
    // The legacy `proxy` verb (`/api/v1/proxy/…`, core resources), refused to every tenant
    // wildcard like the proxy subresources.
    candidates.push(("", status_of, "", "proxy"));
    let mut out = Vec::new();
    for (group, resource, sub, verb) in candidates {
        let verb = if wild(&asked.verb) {
            verb
        } else {
            asked.verb.as_str()
        };
        let covered = (wild(&asked.api_group) || asked.api_group == group)
            && (wild(&asked.resource) || asked.resource == resource)
            && (asked.subresource == sub
                || wild(&asked.subresource)
                || (wild(&asked.resource) && asked.subresource.is_empty()));
        // Only the verbs such requests carry: TokenRequest, binding and eviction are only ever
        // created, a proxied call is the verb of its HTTP method — `can-i list '*'` is not
        // refused because nobody lists evictions.
        let real = match sub {
            "proxy" => matches!(verb, "get" | "create" | "update" | "patch" | "delete"),
            "token" | "binding" | "eviction" => verb == "create",
            "" if resource == "bindings" => verb == "create",
            _ => true,
        };
        if covered && real && escalation::must_be_named(resource, sub, verb) {
            let mut probe = asked.clone();
            probe.verb = verb.into();
            probe.api_group = group.into();
            probe.resource = resource.into();
            probe.subresource = sub.into();
            out.push(probe);
        }
    }
    // The namespace object itself, which a wildcard does not reach from a rule limited to
    // namespaces (only verbs that name it in the path reach it: a list of namespaces is
    // cluster-scoped, as `as_classified` takes it).
    let core = wild(&asked.api_group) || asked.api_group.is_empty();
    let verb = if wild(&asked.verb) {
        "delete"
    } else {
        asked.verb.as_str()
    };
    let namespaces =
        wild(&asked.resource) || wild(&asked.api_group) && asked.resource == "namespaces";
    if core && namespaces && !asked.namespace.is_empty() && names_namespace_in_path(verb) {
        let mut probe = asked.clone();
        probe.verb = verb.into();
        probe.api_group = String::new();
        probe.resource = "namespaces".into();
        probe.subresource = String::new();
        probe.name = asked.namespace.clone();
        out.push(probe);
    }
    out
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
        "evaluationError": "portcullis lists its grants ∩ the token's scope; the API server's RBAC may allow less (kubectl auth can-i VERB RESOURCE asks both); a tenant rule's wildcards do not reach serviceaccounts/token, pods/binding, bindings, pods/eviction, the proxy subresources, or writes of status, controllerrevisions, endpoints or endpointslices unless the rule names them, and a rule limited to namespaces reaches the namespace object itself only when it names namespaces; a grant rule without namespaces reaches cluster-scoped resources only, and is listed with those it names",
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
        // As kube-apiserver's validation: 422 Invalid naming the field.
        for (spec, field) in [
            (json!({}), "spec.resourceAttributes"),
            (
                json!({"resourceAttributes": {}, "nonResourceAttributes": {}}),
                "spec.nonResourceAttributes",
            ),
        ] {
            let s = asked_request(&spec).unwrap_err().status();
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{spec}");
            let causes = &s.details.as_ref().unwrap().causes;
            assert_eq!(causes[0].field, field);
            assert!(s
                .message
                .starts_with("SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: "));
        }
    }

    /// A wildcard asks about everything it covers, as RBAC reads it: a tenant (default rules)
    /// is told no where the proxy refuses part of it, and why; concrete questions and the
    /// wildcards that cover nothing guarded keep their answers. An operator's grant of `*`
    /// covers all.
    #[test]
    fn a_wildcard_question_is_yes_only_if_everything_it_covers_is_allowed() {
        let a = crate::authz::tests::authorizer();
        let alice = crate::authz::tests::id("alice", &["tenant:team-a"]);
        // Group `*` covers the core group's namespace object, which the tenant may not delete.
        let ns = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
            "verb": "delete", "group": "*", "resource": "namespaces", "name": "team-a"}}))
        .unwrap();
        assert!(!local_decision(&a, &alice, &ns).allowed);
        let ask = |verb: &str, group: &str, resource: &str, sub: &str| {
            let q = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
                "verb": verb, "group": group, "resource": resource, "subresource": sub}}))
            .unwrap();
            local_decision(&a, &alice, &q)
        };
        for (verb, group, resource, sub, covers) in [
            ("*", "*", "*", "", "create serviceaccounts/token"),
            ("create", "", "pods", "*", "create pods/binding"),
            ("create", "", "*", "", "create serviceaccounts/token"),
            (
                "update",
                "apps",
                "deployments",
                "*",
                "update deployments/status",
            ),
            ("delete", "apps", "*", "", "delete controllerrevisions"),
            ("patch", "discovery.k8s.io", "*", "", "patch endpointslices"),
            ("get", "", "*", "", "get pods/proxy"),
            ("delete", "", "*", "", "delete pods/proxy"),
            // The legacy proxy verb a wildcard verb covers (`/api/v1/proxy/…` is refused).
            ("*", "", "services", "", "proxy services"),
        ] {
            let d = ask(verb, group, resource, sub);
            assert!(!d.allowed, "{verb} {group}/{resource}/{sub}");
            assert!(
                d.reason.starts_with(&format!(
                    "the question covers {covers}, which portcullis refuses"
                )),
                "{verb} {group}/{resource}/{sub}: {}",
                d.reason
            );
        }
        // The namespace object: a rule limited to namespaces reaches it only by name.
        let d = ask("patch", "*", "*", "");
        assert!(!d.allowed);
        // Nothing guarded is covered: the answer is the rules'.
        for (verb, group, resource, sub) in [
            ("list", "", "*", ""),
            ("watch", "*", "*", ""),
            ("get", "apps", "deployments", "*"),
            ("create", "", "pods", ""),
            ("get", "", "pods", "log"),
            ("list", "", "endpoints", ""),
            ("watch", "discovery.k8s.io", "endpointslices", ""),
        ] {
            assert!(
                ask(verb, group, resource, sub).allowed,
                "{verb} {group}/{resource}/{sub}"
            );
        }
        // An auditor's grant (`*` read everywhere) is not a tenant's: its wildcards cover all it
        // reads, proxy GETs included.
        let auditor = crate::authz::tests::id("ada", &["auditors"]);
        let q = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
            "verb": "get", "group": "*", "resource": "*"}}))
        .unwrap();
        assert!(local_decision(&a, &auditor, &q).allowed);
        // Impersonating without a name asks about every user, `system:` ones included, which
        // a rule must name: a grant of any user is a yes by name, a no without one.
        let a = crate::authz::build(
            &crate::authz::tests::parse(
                r#"
authorization:
  grants:
    - name: impersonators
      subjects: [{user: ops}]
      rules:
        - {verbs: [impersonate], api_groups: [""], resources: [users, groups]}
    - name: operators
      subjects: [{group: operators}]
      rules:
        - {namespaces: ["*"], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
"#,
            ),
            "authorization",
        )
        .unwrap();
        let ops = crate::authz::tests::id("ops", &[]);
        let imp = |resource: &str, name: &str| {
            let q = asked_request(&json!({"resourceAttributes": {"verb": "impersonate",
                "resource": resource, "name": name}}))
            .unwrap();
            local_decision(&a, &ops, &q).allowed
        };
        assert!(imp("users", "bob"));
        assert!(imp("groups", "devs"));
        assert!(!imp("users", "system:admin"));
        assert!(!imp("users", ""));
        assert!(!imp("groups", ""));
        // An operator's grant of everything: `can-i '*' '*'` is yes, as RBAC's `*` is.
        let op = crate::authz::tests::id("olga", &["operators"]);
        for (verb, group) in [("*", "*"), ("*", ""), ("create", "*"), ("get", "")] {
            let q = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
                "verb": verb, "group": group, "resource": "*", "subresource": ""}}))
            .unwrap();
            assert!(local_decision(&a, &op, &q).allowed, "{verb} {group}");
        }
    }

    /// A question is taken as the real request's URL classifies it: a namespace object's
    /// name is its namespace only when the name is in the path; a cluster-scoped resource
    /// has none, whatever kubectl sent.
    #[test]
    fn questions_are_classified_as_their_requests() {
        let a = crate::authz::tests::authorizer();
        let ask = |verb: &str, resource: &str, name: &str| {
            let q = asked_request(&json!({"resourceAttributes": {"namespace": "default",
                "verb": verb, "resource": resource, "name": name}}))
            .unwrap();
            as_classified(&a, &q).namespace
        };
        for verb in ["get", "update", "patch", "delete"] {
            assert_eq!(ask(verb, "namespaces", "team-c"), "team-c", "{verb}");
        }
        // `kubectl get ns team-c -w`: a watch of /api/v1/namespaces with a field selector.
        for verb in ["list", "watch", "deletecollection", "create"] {
            assert_eq!(ask(verb, "namespaces", "team-c"), "", "{verb}");
        }
        assert_eq!(ask("list", "nodes", ""), "");
        assert_eq!(ask("list", "pods", ""), "default");
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
        // Wildcards cover what they name, as in RBAC: the reserved extras, and `system:` users
        // and service accounts, which only a rule naming them gives.
        let wild = |group: &str, resource: &str, sub: &str, name: &str| {
            asked_request(&json!({"resourceAttributes": {"verb": "impersonate",
                "group": group, "resource": resource, "subresource": sub, "name": name}}))
            .unwrap()
        };
        for q in [
            wild("authentication.k8s.io", "userextras", "*", ""),
            wild("*", "userextras", "*", ""),
            wild("*", "*", "", ""),
            wild("", "*", "", ""),
            wild("*", "users", "", "system:masters"),
        ] {
            assert!(!local_decision(&a, &root, &q).allowed, "{q:?}");
        }
        let get =
            asked_request(&json!({"resourceAttributes": {"verb": "get", "resource": "pods"}}))
                .unwrap();
        assert!(!answered_locally(&get));
    }

    /// kubectl sends its current namespace with every question: `can-i` is decided on the
    /// request as the URL classifies it (no namespace for nodes or `users`, its own name for a
    /// namespace object), so it answers what the proxy would do with the real request.
    #[test]
    fn can_i_is_decided_on_the_request_as_the_url_classifies_it() {
        use crate::authz::tests::{authorizer, id};
        let a = authorizer();
        let nina = id("nina", &["node-viewers"]);
        let alice = id("alice", &["tenant:team-a"]);
        let carol = id("carol", &[]);
        let cases = [
            (
                &nina,
                json!({"namespace": "default", "verb": "list", "resource": "nodes"}),
                "/api/v1/nodes",
            ),
            (
                &nina,
                json!({"namespace": "default", "verb": "get", "resource": "namespaces", "name": "team-b"}),
                "/api/v1/namespaces/team-b",
            ),
            (
                &alice,
                json!({"namespace": "team-a", "verb": "get", "resource": "namespaces", "name": "team-b"}),
                "/api/v1/namespaces/team-b",
            ),
            (
                &carol,
                json!({"namespace": "team-c", "verb": "get", "resource": "namespaces", "name": "team-c"}),
                "/api/v1/namespaces/team-c",
            ),
            (
                &carol,
                json!({"namespace": "team-b", "verb": "get", "resource": "namespaces", "name": "team-c"}),
                "/api/v1/namespaces/team-c",
            ),
            (
                &alice,
                json!({"namespace": "team-a", "verb": "list", "resource": "nodes"}),
                "/api/v1/nodes",
            ),
            (
                &alice,
                json!({"namespace": "team-a", "verb": "get", "resource": "pods"}),
                "/api/v1/namespaces/team-a/pods",
            ),
        ];
        for (who, attrs, path) in cases {
            let asked = asked_request(&json!({"resourceAttributes": attrs})).unwrap();
            let real = crate::k8s::request::classify(
                &http::Method::GET,
                &path.parse().unwrap(),
                &http::HeaderMap::new(),
            )
            .unwrap();
            let real = if attrs["verb"] == "list" || attrs.get("name").is_some() {
                real
            } else {
                let mut r = real;
                r.verb = "get".into();
                r
            };
            assert_eq!(
                local_decision(&a, who, &asked).allowed,
                a.authorize(who, &real).allowed,
                "{} {attrs}",
                who.user
            );
        }
        assert!(
            local_decision(
                &a,
                &nina,
                &asked_request(&json!({"resourceAttributes":
            {"namespace": "default", "verb": "list", "resource": "nodes"}}))
                .unwrap()
            )
            .allowed
        );
        // A self-review's create (kubectl sends no version) is allowed to everyone, as the
        // real request is.
        let ssar = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
            "verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"}}))
        .unwrap();
        assert!(local_decision(&a, &alice, &ssar).allowed);
        // Verbs no request carries are the API server's to judge (it is asked as the caller).
        let bind = asked_request(&json!({"resourceAttributes": {"namespace": "team-a",
            "verb": "bind", "group": "rbac.authorization.k8s.io", "resource": "clusterroles", "name": "edit"}}))
        .unwrap();
        let d = local_decision(&a, &alice, &bind);
        assert!(d.allowed && !answered_locally(&bind), "{}", d.reason);
    }
}
