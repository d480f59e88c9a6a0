//! The rules an identity holds in one namespace, as a `SelfSubjectRulesReview`
//! (`kubectl auth can-i --list`) lists them: the policy's rules that apply there (tenant rules
//! of its namespaces, grant rules for `*` or a matching namespace, cluster-scoped rules,
//! non-resource rules), the public non-resource URLs and the self-reviews every caller may
//! ask, each narrowed by the token's scope when it has one (rule by rule: verbs, groups,
//! resources, names and URLs intersected). Pure; no I/O.
//!
//! What it cannot know is how the API server's RBAC narrows these further, so a review always
//! says `incomplete` (see `review/`).

use super::{
    engine::{NsMatch, RuleTarget},
    pattern::glob_match,
    scope::ScopeRule,
    Authorizer,
};
use crate::authn::Identity;

/// One resource rule, in RBAC's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRuleView {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    /// Empty: any name.
    pub resource_names: Vec<String>,
}

/// One non-resource rule, in RBAC's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResourceRuleView {
    pub verbs: Vec<String>,
    pub urls: Vec<String>,
}

/// What `id` may do in namespace `ns` (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesView {
    pub resource_rules: Vec<ResourceRuleView>,
    pub non_resource_rules: Vec<NonResourceRuleView>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl Authorizer {
    /// Whether a rule's `resource` (as written, maybe `x/sub`) names a cluster-scoped resource
    /// in one of its `api_groups` (`*`: any group); a wildcard resource does not.
    fn names_cluster_scoped(&self, api_groups: &[String], resource: &str) -> bool {
        let base = resource.split('/').next().unwrap_or_default();
        !base.contains('*')
            && api_groups.iter().any(|g| {
                if g == "*" {
                    super::pattern::builtin_cluster_scoped_in_any_group(base)
                        || self.extra_cluster_scoped.iter().any(|(_, r)| r == base)
                } else {
                    self.is_cluster_scoped(g, base)
                }
            })
    }

    /// Whether any tenant is configured (the proxy then sends `portcullis.io/tenant`).
    pub fn has_tenants(&self) -> bool {
        self.principals
            .iter()
            .any(|p| p.kind == super::engine::PrincipalKind::Tenant)
    }

    /// The rules `id` holds in `ns` (grants ∩ token scope), see the module doc.
    pub fn rules_in(&self, id: &Identity, ns: &str) -> RulesView {
        let mut policy = RulesView::default();
        for p in self
            .principals
            .iter()
            .filter(|p| p.subjects.iter().any(|s| s.matches(id)))
        {
            for r in &p.rules {
                match &r.target {
                    RuleTarget::Resource(rr) => {
                        let api_groups = rr.api_groups.clone().unwrap_or_else(|| strings(&["*"]));
                        let mut resources: Vec<String> =
                            rr.resources.iter().map(|x| x.as_written()).collect();
                        // A rule limited to namespaces never reaches a request without one.
                        let mut bound = false;
                        let applies = match &rr.namespaces {
                            NsMatch::All => true,
                            NsMatch::Patterns(globs) => {
                                bound = true;
                                globs.iter().any(|g| g.matches(ns))
                            }
                            NsMatch::ClusterOnly => {
                                // A rule without namespaces reaches cluster-scoped resources
                                // only, while kubectl reads every listed rule as holding in
                                // this namespace: list the cluster-scoped resources it names
                                // (a wildcard is not expanded).
                                resources.retain(|res| self.names_cluster_scoped(&api_groups, res));
                                !resources.is_empty()
                            }
                        };
                        if applies {
                            let rule = ResourceRuleView {
                                verbs: r.verbs.names(),
                                api_groups,
                                resources,
                                resource_names: rr.resource_names.clone(),
                            };
                            if bound {
                                policy
                                    .resource_rules
                                    .extend(namespace_bound(rule, &|g, res| {
                                        self.names_cluster_scoped(g, res)
                                    }));
                            } else {
                                policy.resource_rules.push(rule);
                            }
                        }
                    }
                    RuleTarget::NonResource(urls) => {
                        policy.non_resource_rules.push(NonResourceRuleView {
                            verbs: r.verbs.names(),
                            urls: urls.iter().map(|u| u.as_written()).collect(),
                        })
                    }
                }
            }
        }
        let mut out = match &id.scope {
            None => policy,
            Some(scope) => narrow(&policy, &scope.0, ns, &|groups, res| {
                self.names_cluster_scoped(groups, res)
            }),
        };
        // Allowed to everyone, whatever the scope (`Authorizer::authorize` steps 0 and 1).
        out.resource_rules.push(ResourceRuleView {
            verbs: strings(&["create"]),
            api_groups: strings(&["authentication.k8s.io"]),
            resources: strings(&["selfsubjectreviews"]),
            resource_names: Vec::new(),
        });
        out.resource_rules.push(ResourceRuleView {
            verbs: strings(&["create"]),
            api_groups: strings(&["authorization.k8s.io"]),
            resources: strings(&["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            resource_names: Vec::new(),
        });
        if !self.public.is_empty() {
            out.non_resource_rules.push(NonResourceRuleView {
                verbs: strings(&["get", "head"]),
                urls: self.public.iter().map(|u| u.as_written()).collect(),
            });
        }
        out
    }
}

/// `rule` as it holds where every request must carry a namespace (a grant rule limited to
/// namespaces; a token scope rule that lists them): none of the cluster-scoped resources it
/// names (`cluster_scoped(groups, resource)`), and the namespace object only with the verbs
/// that name it in the path (get, update, patch, delete: a list, watch or create of
/// namespaces carries none). Empty pieces are dropped.
fn namespace_bound(
    rule: ResourceRuleView,
    cluster_scoped: &dyn Fn(&[String], &str) -> bool,
) -> Vec<ResourceRuleView> {
    const NAMED: [&str; 4] = ["get", "update", "patch", "delete"];
    let (objects, others): (Vec<String>, Vec<String>) = rule
        .resources
        .iter()
        .cloned()
        .partition(|r| r.split('/').next() == Some("namespaces"));
    let others: Vec<String> = others
        .into_iter()
        .filter(|r| !cluster_scoped(&rule.api_groups, r))
        .collect();
    let object_verbs: Vec<String> = if rule.verbs.iter().any(|v| v == "*") {
        strings(&NAMED)
    } else {
        rule.verbs
            .iter()
            .filter(|v| NAMED.contains(&v.as_str()))
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    if !others.is_empty() {
        out.push(ResourceRuleView {
            resources: others,
            ..rule.clone()
        });
    }
    if !objects.is_empty() && !object_verbs.is_empty() {
        out.push(ResourceRuleView {
            verbs: object_verbs,
            resources: objects,
            ..rule
        });
    }
    out
}

/// `policy ∩ scope` in namespace `ns`: each policy rule intersected with each scope rule that
/// reaches `ns`; empty intersections dropped. A scope rule that lists namespaces (no `*`)
/// refuses every request without one (`ScopeRule::matches`), so its intersections are
/// [`namespace_bound`].
fn narrow(
    policy: &RulesView,
    scope: &[ScopeRule],
    ns: &str,
    cluster_scoped: &dyn Fn(&[String], &str) -> bool,
) -> RulesView {
    let mut out = RulesView::default();
    for s in scope {
        let in_ns = match &s.namespaces {
            None => true,
            Some(list) => list.iter().any(|n| n == "*" || glob_match(n, ns)),
        };
        let reaches_cluster = match &s.namespaces {
            None => true,
            Some(list) => list.iter().any(|n| n == "*"),
        };
        if in_ns && !s.resources.is_empty() {
            for p in &policy.resource_rules {
                let verbs = meet(&p.verbs, &s.verbs);
                let groups = meet(
                    &p.api_groups,
                    s.api_groups.as_deref().unwrap_or(&["*".to_owned()]),
                );
                let resources: Vec<String> = p
                    .resources
                    .iter()
                    .flat_map(|a| s.resources.iter().filter_map(|b| resource_meet(a, b)))
                    .collect();
                let names = match (p.resource_names.is_empty(), s.resource_names.is_empty()) {
                    (true, _) => Some(s.resource_names.clone()),
                    (false, true) => Some(p.resource_names.clone()),
                    (false, false) => {
                        let both: Vec<String> = p
                            .resource_names
                            .iter()
                            .filter(|n| s.resource_names.contains(n))
                            .cloned()
                            .collect();
                        (!both.is_empty()).then_some(both)
                    }
                };
                if let Some(resource_names) = names {
                    if !verbs.is_empty() && !groups.is_empty() && !resources.is_empty() {
                        let rule = ResourceRuleView {
                            verbs,
                            api_groups: groups,
                            resources: dedup(resources),
                            resource_names,
                        };
                        if reaches_cluster {
                            out.resource_rules.push(rule);
                        } else {
                            out.resource_rules
                                .extend(namespace_bound(rule, cluster_scoped));
                        }
                    }
                }
            }
        }
        if !s.non_resource_urls.is_empty() {
            for p in &policy.non_resource_rules {
                let verbs = meet(&p.verbs, &s.verbs);
                let urls: Vec<String> = p
                    .urls
                    .iter()
                    .flat_map(|a| s.non_resource_urls.iter().filter_map(|b| url_meet(a, b)))
                    .collect();
                if !verbs.is_empty() && !urls.is_empty() {
                    out.non_resource_rules.push(NonResourceRuleView {
                        verbs,
                        urls: dedup(urls),
                    });
                }
            }
        }
    }
    out
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// Two lists where `*` means everything: their intersection.
fn meet(a: &[String], b: &[String]) -> Vec<String> {
    if a.iter().any(|x| x == "*") {
        return b.to_vec();
    }
    if b.iter().any(|x| x == "*") {
        return a.to_vec();
    }
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

/// The resources two patterns (`*`, `pods`, `pods/exec`, `pods/*`, `*/scale`) both match.
fn resource_meet(a: &str, b: &str) -> Option<String> {
    if a == b || b == "*" {
        return Some(a.to_owned());
    }
    if a == "*" {
        return Some(b.to_owned());
    }
    let (ar, asub) = a.split_once('/').unwrap_or((a, ""));
    let (br, bsub) = b.split_once('/').unwrap_or((b, ""));
    let r = match (ar, br) {
        (x, y) if x == y => x,
        ("*", y) => y,
        (x, "*") => x,
        _ => return None,
    };
    let sub = match (asub, bsub) {
        (x, y) if x == y => x,
        ("*", y) if !y.is_empty() => y,
        (x, "*") if !x.is_empty() => x,
        _ => return None,
    };
    Some(if sub.is_empty() {
        r.to_owned()
    } else {
        format!("{r}/{sub}")
    })
}

/// The paths two URL patterns (`/x`, `/x*`, `*`) both match, as one pattern.
fn url_meet(a: &str, b: &str) -> Option<String> {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (None, None) => (a == b).then(|| a.to_owned()),
        (Some(p), None) => b.starts_with(p).then(|| b.to_owned()),
        (None, Some(q)) => a.starts_with(q).then(|| a.to_owned()),
        (Some(p), Some(q)) if p.starts_with(q) => Some(a.to_owned()),
        (Some(p), Some(q)) if q.starts_with(p) => Some(b.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_intersections() {
        assert_eq!(resource_meet("*", "pods").as_deref(), Some("pods"));
        assert_eq!(
            resource_meet("pods/*", "pods/exec").as_deref(),
            Some("pods/exec")
        );
        assert_eq!(
            resource_meet("*/scale", "deployments/*").as_deref(),
            Some("deployments/scale")
        );
        assert_eq!(resource_meet("pods/*", "pods"), None);
        assert_eq!(resource_meet("deployments", "pods"), None);
        assert_eq!(url_meet("/api*", "/api/v1").as_deref(), Some("/api/v1"));
        assert_eq!(url_meet("*", "/healthz*").as_deref(), Some("/healthz*"));
        assert_eq!(url_meet("/a", "/b"), None);
        assert_eq!(meet(&strings(&["*"]), &strings(&["get"])), ["get"]);
        assert_eq!(
            meet(&strings(&["get", "list"]), &strings(&["list", "watch"])),
            ["list"]
        );
    }

    #[test]
    fn the_ci_identity_sees_its_grant_narrowed_by_its_scope() {
        let a = super::super::tests::authorizer();
        let mut ci = super::super::tests::id("ci-bot", &["ci"]);
        let full = a.rules_in(&ci, "team-a");
        assert!(full
            .resource_rules
            .iter()
            .any(|r| r.resources == ["deployments"]));
        ci.scope = Some(super::super::Scope(vec![ScopeRule {
            namespaces: Some(strings(&["team-a"])),
            verbs: strings(&["get"]),
            api_groups: Some(strings(&["apps"])),
            resources: strings(&["deployments"]),
            ..Default::default()
        }]));
        let narrowed = a.rules_in(&ci, "team-a");
        let deploy: Vec<_> = narrowed
            .resource_rules
            .iter()
            .filter(|r| r.resources == ["deployments"])
            .collect();
        assert!(!deploy.is_empty());
        assert!(deploy.iter().all(|r| r.verbs == ["get"]), "{deploy:?}");
        // Outside the scope's namespaces only what everyone may do remains.
        let elsewhere = a.rules_in(&ci, "team-b");
        assert!(elsewhere
            .resource_rules
            .iter()
            .all(|r| r.verbs == ["create"] && r.api_groups[0].ends_with(".k8s.io")));
    }

    /// A rule without namespaces reaches cluster-scoped resources only: in a namespace's list
    /// it shows with the cluster-scoped resources it names, never as `*` (which kubectl would
    /// read as every resource of that namespace).
    #[test]
    fn a_rule_without_namespaces_lists_only_cluster_scoped_resources() {
        let cfg = serde_json::json!({"grants": [{"name": "readers", "subjects": [{"user": "rita"}],
        "rules": [
            {"verbs": ["get", "list"], "api_groups": ["*"], "resources": ["*"]},
            {"verbs": ["get"], "api_groups": [""], "resources": ["nodes"]}
        ]}]});
        let a =
            super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let rita = super::super::tests::id("rita", &[]);
        let view = a.rules_in(&rita, "team-b");
        let listed: Vec<_> = view
            .resource_rules
            .iter()
            .filter(|r| r.verbs != ["create"])
            .collect();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].resources, ["nodes"]);
    }

    /// A token scope that lists namespaces refuses every request without one: its namespace's
    /// list keeps no cluster-scoped resource (what `kubectl get nodes` would be refused), but
    /// keeps the namespace object itself and namespaced resources; a scope reaching `*` keeps
    /// them all. Every listed rule is one the authorizer allows.
    #[test]
    fn a_namespace_limited_scope_lists_no_cluster_scoped_resource() {
        let cfg = serde_json::json!({"grants": [{"name": "readers", "subjects": [{"user": "rita"}],
        "rules": [
            {"verbs": ["get", "list"], "api_groups": [""], "resources": ["nodes"]},
            {"namespaces": ["*"], "verbs": ["get", "list"], "api_groups": [""],
             "resources": ["nodes", "namespaces", "pods"]}
        ]}]});
        let a =
            super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let listed = |namespaces: &[&str]| {
            let mut rita = super::super::tests::id("rita", &[]);
            rita.scope = Some(super::super::Scope(vec![ScopeRule {
                namespaces: Some(strings(namespaces)),
                verbs: strings(&["*"]),
                resources: strings(&["*"]),
                ..Default::default()
            }]));
            let mut got: Vec<String> = a
                .rules_in(&rita, "team-a")
                .resource_rules
                .into_iter()
                .filter(|r| r.verbs != ["create"])
                .flat_map(|r| r.resources)
                .collect();
            got.sort();
            (rita, got)
        };
        let (rita, got) = listed(&["team-a"]);
        // Without a scope: the rule limited to namespaces lists no cluster-scoped resource.
        let cfg = serde_json::json!({"grants": [{"name": "ns-readers", "subjects": [{"user": "rita"}],
        "rules": [{"namespaces": ["team-*"], "verbs": ["get"], "api_groups": [""],
                   "resources": ["nodes", "namespaces", "pods"]}]}]});
        let limited =
            super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let plain = super::super::tests::id("rita", &[]);
        let view = limited.rules_in(&plain, "team-a");
        let mut names: Vec<String> = view
            .resource_rules
            .into_iter()
            .filter(|r| r.verbs != ["create"])
            .flat_map(|r| r.resources)
            .collect();
        names.sort();
        assert_eq!(names, ["namespaces", "pods"]);
        assert!(
            !limited
                .authorize(
                    &plain,
                    &super::super::tests::req("GET", "/api/v1/nodes", &[])
                )
                .allowed
        );
        assert_eq!(got, ["namespaces", "pods"]);
        use super::super::tests::req;
        let allowed = |uri: &str| a.authorize(&rita, &req("GET", uri, &[])).allowed;
        assert!(
            !allowed("/api/v1/nodes"),
            "the scope refuses it: not listed"
        );
        assert!(allowed("/api/v1/namespaces/team-a"));
        assert!(allowed("/api/v1/namespaces/team-a/pods"));
        let (_, got) = listed(&["*"]);
        assert_eq!(got, ["namespaces", "nodes", "nodes", "pods"]);
    }

    /// Whatever grant and scope: every (verb, resource) `can-i --list` shows in team-a is one
    /// the authorizer allows there — a wildcard narrowed to a cluster-scoped resource, the
    /// namespace object listed or watched, included.
    #[test]
    fn every_listed_rule_is_allowed() {
        use super::super::tests::req;
        let grants = [
            r#"[{"namespaces": ["*"], "verbs": ["get", "list"], "api_groups": [""], "resources": ["*"]}]"#,
            r#"[{"namespaces": ["team-*"], "verbs": ["*"], "api_groups": [""], "resources": ["namespaces", "pods", "nodes"]}]"#,
            r#"[{"verbs": ["get", "list"], "api_groups": [""], "resources": ["nodes", "namespaces"]},
                {"namespaces": ["*"], "verbs": ["get", "list"], "api_groups": [""], "resources": ["pods", "namespaces"]}]"#,
        ];
        let scopes = [
            None,
            Some(
                r#"[{"namespaces": ["team-a"], "verbs": ["*"], "resources": ["pods", "nodes", "namespaces"]}]"#,
            ),
            Some(r#"[{"namespaces": ["team-a"], "verbs": ["*"], "resources": ["*"]}]"#),
            Some(r#"[{"namespaces": ["*"], "verbs": ["get", "list"], "resources": ["*"]}]"#),
        ];
        for grant in grants {
            let cfg: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"grants": [{{"name": "g", "subjects": [{{"user": "rita"}}], "rules": {grant}}}]}}"#
            ))
            .unwrap();
            let a = super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization")
                .unwrap();
            for scope in scopes {
                let mut rita = super::super::tests::id("rita", &[]);
                if let Some(s) = scope {
                    rita.scope = Some(serde_json::from_str(s).unwrap());
                }
                let view = a.rules_in(&rita, "team-a");
                for rule in view.resource_rules.iter().filter(|r| r.verbs != ["create"]) {
                    for verb in &rule.verbs {
                        for resource in &rule.resources {
                            let (verb, resource) = (verb.as_str(), resource.as_str());
                            let verb = if verb == "*" { "get" } else { verb };
                            let uri = match (resource, verb) {
                                ("*", "list") => "/api/v1/namespaces/team-a/pods".to_owned(),
                                ("*", _) => "/api/v1/namespaces/team-a/pods/x".to_owned(),
                                ("namespaces", "list") => "/api/v1/namespaces".to_owned(),
                                ("namespaces", _) => "/api/v1/namespaces/team-a".to_owned(),
                                ("nodes", "list") => "/api/v1/nodes".to_owned(),
                                ("nodes", _) => "/api/v1/nodes/x".to_owned(),
                                (r, "list") => format!("/api/v1/namespaces/team-a/{r}"),
                                (r, _) => format!("/api/v1/namespaces/team-a/{r}/x"),
                            };
                            let method = match verb {
                                "get" | "list" | "watch" => "GET",
                                "update" => "PUT",
                                "patch" => "PATCH",
                                "delete" => "DELETE",
                                _ => continue,
                            };
                            let mut headers = Vec::new();
                            if method == "PATCH" {
                                headers.push(("content-type", "application/merge-patch+json"));
                            }
                            let d = a.authorize(&rita, &req(method, &uri, &headers));
                            assert!(
                                d.allowed,
                                "grant {grant}, scope {scope:?}: listed {verb} {resource}, but {method} {uri} is refused: {}",
                                d.reason
                            );
                        }
                    }
                }
            }
        }
    }
}
