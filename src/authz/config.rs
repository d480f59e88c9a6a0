//! The `authorization:` section of the config file (schema in `schema.rs`, re-exported here):
//! [`build`] validates it (every problem at once, with its key path) and compiles it into an
//! [`AuthzPolicy`](super::AuthzPolicy) — plain data, held by `Config`. The semantics are
//! documented in [`crate::authz`].

use std::collections::BTreeMap;

use super::engine::{
    Authorizer, NsMatch, Principal, PrincipalKind, ResourceRule, Rule, RuleTarget, Subject,
};
use super::pattern::{
    builtin_cluster_scoped, builtin_cluster_scoped_in_any_group, check_namespace_pattern,
    check_resource_pattern, check_url_pattern, Glob, ResourcePattern, Sub, UrlPattern, VerbSet,
    NON_RESOURCE_VERBS, RESOURCE_VERBS,
};
pub use super::schema::{
    AuthorizationConfig, ExtraSubject, GrantConfig, RuleConfig, SubjectConfig, TenantConfig,
    TenantRuleConfig, DEFAULT_PUBLIC_NON_RESOURCE_URLS,
};
use crate::problems::{Problem, Problems};

/// Validate `cfg` and compile it. `key_prefix` is the key path of the section
/// (`authorization`), so problems read `authorization.grants[0].rules[1].verbs`.
pub fn build(cfg: &AuthorizationConfig, key_prefix: &str) -> Result<Authorizer, Vec<Problem>> {
    let mut c = Check {
        problems: Problems::new(),
    };
    let public = c.public_urls(cfg, key_prefix);
    let extra_cluster_scoped = c.extra_cluster_scoped(cfg, key_prefix);
    let cluster_scoped = |group: &str, resource: &str| {
        builtin_cluster_scoped(group, resource)
            || extra_cluster_scoped
                .iter()
                .any(|(g, r)| g == group && r == resource)
    };
    let cluster_scoped_any_group = |resource: &str| {
        builtin_cluster_scoped_in_any_group(resource)
            || extra_cluster_scoped.iter().any(|(_, r)| r == resource)
    };

    let mut principals = c.tenants(cfg, key_prefix);
    principals.extend(c.grants(cfg, key_prefix, &cluster_scoped, &cluster_scoped_any_group));
    if c.problems.is_empty() {
        Ok(Authorizer {
            public,
            principals,
            extra_cluster_scoped,
        })
    } else {
        Err(c.problems.into_vec())
    }
}

impl Check {
    /// `public_non_resource_urls`.
    fn public_urls(&mut self, cfg: &AuthorizationConfig, key_prefix: &str) -> Vec<UrlPattern> {
        let mut public = Vec::new();
        for (i, p) in cfg.public_non_resource_urls.iter().enumerate() {
            let path = format!("{key_prefix}.public_non_resource_urls[{i}]");
            // `/*` is the same pattern spelt as a prefix: every path starts with `/`.
            if p == "*" || p == "/*" {
                self.err(
                    &path,
                    format!(
                        "{p:?} would make every non-resource path public (metrics, debug endpoints)"
                    ),
                    "list the public paths explicitly; grant anything else with a grant",
                );
            } else if let Err(e) = check_url_pattern(p) {
                self.err(&path, e, URL_HINT);
            } else {
                public.push(UrlPattern::new(p));
            }
        }
        public
    }

    /// `cluster_scoped_resources`: (group, resource).
    fn extra_cluster_scoped(
        &mut self,
        cfg: &AuthorizationConfig,
        key_prefix: &str,
    ) -> Vec<(String, String)> {
        let mut extra_cluster_scoped = Vec::new();
        for (i, r) in cfg.cluster_scoped_resources.iter().enumerate() {
            let path = format!("{key_prefix}.cluster_scoped_resources[{i}]");
            let (resource, group) = r.split_once('.').unwrap_or((r.as_str(), ""));
            match check_resource_pattern(resource) {
                Ok(()) if super::pattern::builtin_namespaced(group, resource) => self.err(
                    &path,
                    format!(
                        "{r:?} is a built-in namespaced resource: a grant rule without namespaces would cover it in every namespace"
                    ),
                    "remove it; list only custom cluster-scoped resources here, and grant namespaced ones with namespaces: [...]",
                ),
                Ok(()) if !resource.contains('*') && !resource.is_empty() => {
                    extra_cluster_scoped.push((group.to_owned(), resource.to_owned()))
                }
                _ => self.err(
                    &path,
                    format!("{r:?} is not <resource>.<group>"),
                    "e.g. clusterwidgets.example.com, or a bare resource for the core group",
                ),
            }
        }
        extra_cluster_scoped
    }

    /// `tenants[]`, in config order.
    fn tenants(&mut self, cfg: &AuthorizationConfig, key_prefix: &str) -> Vec<Principal> {
        let mut principals = Vec::new();
        let mut tenant_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut claimed: Vec<(&str, &str)> = Vec::new();
        for (ti, t) in cfg.tenants.iter().enumerate() {
            let base = format!("{key_prefix}.tenants[{ti}]");
            self.name(&format!("{base}.name"), &t.name);
            if let Some(first) = tenant_names.insert(t.name.as_str(), ti) {
                self.err(
                    &format!("{base}.name"),
                    format!("duplicate tenant name {:?} (also tenants[{first}])", t.name),
                    "give every tenant its own name",
                );
            }
            let subjects = self.subjects(&format!("{base}.subjects"), &t.subjects);

            let globs = self.tenant_namespaces(&base, t, &mut claimed);
            let rules = self.tenant_rules(&base, t, &globs);
            principals.push(Principal {
                kind: PrincipalKind::Tenant,
                name: t.name.clone(),
                allow_reason: format!("tenant {}", t.name),
                subjects,
                rules,
                record_sessions: t.record_sessions,
            });
        }
        principals
    }

    /// A tenant's `namespaces` (no `*`; a namespace name belongs to one tenant).
    fn tenant_namespaces<'a>(
        &mut self,
        base: &str,
        t: &'a TenantConfig,
        claimed: &mut Vec<(&'a str, &'a str)>,
    ) -> Vec<Glob> {
        let mut globs = Vec::new();
        if t.namespaces.is_empty() {
            self.err(
                &format!("{base}.namespaces"),
                "a tenant needs at least one namespace",
                "list the tenant's namespaces by name or pattern, e.g. [team-a, team-a-*]",
            );
        }
        for (ni, n) in t.namespaces.iter().enumerate() {
            let path = format!("{base}.namespaces[{ni}]");
            if n == "*" {
                self.err(
                    &path,
                    "a tenant cannot own every namespace",
                    "give the tenant its namespaces; use a grant with namespaces: [\"*\"] for cluster-wide access",
                );
                continue;
            }
            if let Err(e) = check_namespace_pattern(n) {
                self.err(&path, e, NS_HINT);
                continue;
            }
            // A namespace belongs to one tenant: no name or pattern of another tenant may
            // match a namespace this one does (`team-*` and `team-b` would both claim
            // `team-b`, and the first tenant listed would silently own it).
            let taken = claimed
                .iter()
                .find(|(p, owner)| *owner != t.name && super::pattern::globs_overlap(p, n));
            if let Some((p, other)) = taken {
                let message = if p == n {
                    format!("namespace {n:?} already belongs to tenant {other:?}")
                } else {
                    format!("namespace {n:?} overlaps {p:?} of tenant {other:?}: a namespace both match would belong to both")
                };
                self.err(&path, message, "a namespace belongs to one tenant");
            }
            claimed.push((n.as_str(), t.name.as_str()));
            globs.push(Glob::new(n));
        }
        globs
    }

    /// A tenant's rules: reading its namespace objects, then its `rules` (absent: everything in
    /// its namespaces). None of them reaches the subresources of `escalation.rs` unless it
    /// names them.
    fn tenant_rules(&mut self, base: &str, t: &TenantConfig, globs: &[Glob]) -> Vec<Rule> {
        let mut rules = Vec::new();
        // Implicit: a tenant may read its own namespace objects.
        rules.push(Rule {
            verbs: VerbSet::new(&["get"]),
            target: RuleTarget::Resource(ResourceRule {
                namespaces: NsMatch::Patterns(globs.to_vec()),
                api_groups: Some(vec![String::new()]),
                resources: vec![ResourcePattern::Named {
                    resource: "namespaces".into(),
                    sub: Sub::None,
                }],
                resource_names: Vec::new(),
                tenant: true,
            }),
        });
        match &t.rules {
            None => rules.push(Rule {
                verbs: VerbSet::new(&["*"]),
                target: RuleTarget::Resource(ResourceRule {
                    namespaces: NsMatch::Patterns(globs.to_vec()),
                    api_groups: None,
                    resources: vec![ResourcePattern::All],
                    resource_names: Vec::new(),
                    tenant: true,
                }),
            }),
            Some(list) => {
                for (ri, r) in list.iter().enumerate() {
                    let path = format!("{base}.rules[{ri}]");
                    let verbs = self.verbs(&format!("{path}.verbs"), &r.verbs, RESOURCE_VERBS);
                    let api_groups = self.api_groups(&format!("{path}.api_groups"), &r.api_groups);
                    let resources = self.resources(&format!("{path}.resources"), &r.resources);
                    let resource_names =
                        self.resource_names(&format!("{path}.resource_names"), &r.resource_names);
                    rules.push(Rule {
                        verbs,
                        target: RuleTarget::Resource(ResourceRule {
                            namespaces: NsMatch::Patterns(globs.to_vec()),
                            api_groups,
                            resources,
                            resource_names,
                            tenant: true,
                        }),
                    });
                }
            }
        }
        rules
    }

    /// `grants[]`, in config order.
    fn grants(
        &mut self,
        cfg: &AuthorizationConfig,
        key_prefix: &str,
        cluster_scoped: &dyn Fn(&str, &str) -> bool,
        cluster_scoped_any_group: &dyn Fn(&str) -> bool,
    ) -> Vec<Principal> {
        let mut principals = Vec::new();
        let mut grant_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (gi, g) in cfg.grants.iter().enumerate() {
            let base = format!("{key_prefix}.grants[{gi}]");
            self.name(&format!("{base}.name"), &g.name);
            if let Some(first) = grant_names.insert(g.name.as_str(), gi) {
                self.err(
                    &format!("{base}.name"),
                    format!("duplicate grant name {:?} (also grants[{first}])", g.name),
                    "give every grant its own name, so decisions and audit say which one applied",
                );
            }
            let subjects = self.subjects(&format!("{base}.subjects"), &g.subjects);
            if g.rules.is_empty() {
                self.err(
                    &format!("{base}.rules"),
                    "a grant needs at least one rule",
                    "add rules, or remove the grant",
                );
            }
            let mut rules = Vec::new();
            for (ri, r) in g.rules.iter().enumerate() {
                let path = format!("{base}.rules[{ri}]");
                if let Some(rule) =
                    self.grant_rule(&path, r, cluster_scoped, cluster_scoped_any_group)
                {
                    rules.push(rule);
                }
            }
            principals.push(Principal {
                kind: PrincipalKind::Grant,
                name: g.name.clone(),
                allow_reason: format!("grant {}", g.name),
                subjects,
                rules,
                record_sessions: g.record_sessions,
            });
        }
        principals
    }
}

const NS_HINT: &str = "write a namespace name or a pattern with '*', e.g. team-a or team-a-*";
const URL_HINT: &str = "write an exact path (/healthz) or a prefix ending in '*' (/healthz/*)";

struct Check {
    problems: Problems,
}

impl Check {
    fn err(&mut self, path: &str, message: impl Into<String>, hint: &str) {
        self.problems.err(path, message, hint);
    }

    /// Names show up in decisions, 403 messages and audit: keep them plain.
    fn name(&mut self, path: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !ok {
            self.err(
                path,
                format!("{name:?} is not a valid name"),
                "use letters, digits, '-', '_', '.' and ':' (at most 253)",
            );
        }
    }

    fn subjects(&mut self, path: &str, subjects: &[SubjectConfig]) -> Vec<Subject> {
        if subjects.is_empty() {
            self.err(
                path,
                "no subjects: this would apply to nobody",
                "add e.g. {group: team-a}, {user: alice} or {extra: {key: example.com/team, value: a}}",
            );
        }
        let mut out = Vec::new();
        for (i, s) in subjects.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match s {
                SubjectConfig::User(u) if u.is_empty() => {
                    self.err(&format!("{p}.user"), "empty user name", "name the user")
                }
                SubjectConfig::Group(g) if g.is_empty() => {
                    self.err(&format!("{p}.group"), "empty group name", "name the group")
                }
                SubjectConfig::Extra(e) if e.key.is_empty() => self.err(
                    &format!("{p}.extra.key"),
                    "empty extra key",
                    "name the extra key, e.g. example.com/team",
                ),
                SubjectConfig::User(u) => out.push(Subject::User(u.clone())),
                SubjectConfig::Group(g) => out.push(Subject::Group(g.clone())),
                SubjectConfig::Extra(e) => out.push(Subject::Extra {
                    key: e.key.clone(),
                    value: e.value.clone(),
                }),
            }
        }
        out
    }

    fn verbs(&mut self, path: &str, verbs: &[String], allowed: &[&str]) -> VerbSet {
        if verbs.is_empty() {
            self.err(
                path,
                "no verbs",
                "list verbs, e.g. [get, list, watch], or [\"*\"]",
            );
        }
        for (i, v) in verbs.iter().enumerate() {
            if v != "*" && !allowed.contains(&v.as_str()) {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("unknown verb {v:?}"),
                    &format!("one of: {}, or \"*\"", allowed.join(", ")),
                );
            }
        }
        VerbSet::new(verbs)
    }

    fn api_groups(&mut self, path: &str, groups: &Option<Vec<String>>) -> Option<Vec<String>> {
        let Some(groups) = groups else {
            self.err(
                path,
                "api_groups is required in a resource rule",
                "use [\"\"] for the core group (pods, services, …), [apps] etc., or [\"*\"] for any",
            );
            return None;
        };
        if groups.is_empty() {
            self.err(
                path,
                "an empty api_groups list matches nothing",
                "use [\"\"] for the core group or [\"*\"] for any",
            );
        }
        for (i, g) in groups.iter().enumerate() {
            let ok = g == "*"
                || g.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("{g:?} is not an API group"),
                    "write a group such as apps or networking.k8s.io, \"\" for core, or \"*\"",
                );
            }
        }
        if groups.iter().any(|g| g == "*") {
            None
        } else {
            Some(groups.clone())
        }
    }

    fn resources(&mut self, path: &str, resources: &[String]) -> Vec<ResourcePattern> {
        if resources.is_empty() {
            self.err(
                path,
                "no resources",
                "list resources, e.g. [pods, pods/log, deployments/scale, \"*/status\"], or [\"*\"]",
            );
        }
        let mut out = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            match check_resource_pattern(r) {
                Ok(()) => out.push(ResourcePattern::new(r)),
                Err(e) => self.err(
                    &format!("{path}[{i}]"),
                    e,
                    "write resource, resource/subresource, resource/*, */subresource or *",
                ),
            }
        }
        out
    }

    fn resource_names(&mut self, path: &str, names: &[String]) -> Vec<String> {
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.contains('*') || n.contains('/') {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("{n:?} is not an object name"),
                    "resource_names are exact object names; leave the list empty for any name",
                );
            }
        }
        names.to_vec()
    }

    fn grant_rule(
        &mut self,
        path: &str,
        r: &RuleConfig,
        cluster_scoped: &dyn Fn(&str, &str) -> bool,
        cluster_scoped_any_group: &dyn Fn(&str) -> bool,
    ) -> Option<Rule> {
        let before = self.problems.len();
        let has_resources = !r.resources.is_empty();
        let has_urls = !r.non_resource_urls.is_empty();
        if has_resources == has_urls {
            self.err(
                path,
                if has_resources {
                    "a rule names either resources or non_resource_urls, not both"
                } else {
                    "a rule needs resources or non_resource_urls"
                },
                "split it into a resource rule and a non-resource rule",
            );
            return None;
        }

        if has_urls {
            return self.non_resource_rule(path, r, before);
        }

        let verbs = self.verbs(&format!("{path}.verbs"), &r.verbs, RESOURCE_VERBS);
        let namespaces = self.rule_namespaces(path, &r.namespaces);
        let api_groups = self.api_groups(&format!("{path}.api_groups"), &r.api_groups);
        let resources = self.resources(&format!("{path}.resources"), &r.resources);
        let resource_names =
            self.resource_names(&format!("{path}.resource_names"), &r.resource_names);

        // A cluster-scoped rule naming a resource that is namespaced (or unknown) would never
        // match: say so instead of silently denying.
        if matches!(namespaces, NsMatch::ClusterOnly) && r.api_groups.is_some() {
            for (i, p) in resources.iter().enumerate() {
                let ResourcePattern::Named { resource, .. } = p else {
                    continue;
                };
                let scoped = match &api_groups {
                    None => cluster_scoped_any_group(resource),
                    Some(groups) => groups.iter().any(|g| cluster_scoped(g, resource)),
                };
                if !scoped {
                    self.err(
                        &format!("{path}.resources[{i}]"),
                        format!(
                            "{resource:?} is not a known cluster-scoped resource, and a rule without namespaces covers only cluster-scoped resources"
                        ),
                        "add namespaces: [...] (or [\"*\"] for every namespace and cluster-wide lists), or list a cluster-scoped custom resource in authorization.cluster_scoped_resources",
                    );
                }
            }
        }

        (self.problems.len() == before).then_some(Rule {
            verbs,
            target: RuleTarget::Resource(ResourceRule {
                namespaces,
                api_groups,
                resources,
                resource_names,
                tenant: false,
            }),
        })
    }

    /// A grant rule with `non_resource_urls` (at `path`); `before` is the problem count when
    /// the rule started.
    fn non_resource_rule(&mut self, path: &str, r: &RuleConfig, before: usize) -> Option<Rule> {
        let verbs = self.verbs(&format!("{path}.verbs"), &r.verbs, NON_RESOURCE_VERBS);
        for (key, set) in [
            ("namespaces", r.namespaces.is_some()),
            ("api_groups", r.api_groups.is_some()),
            ("resource_names", !r.resource_names.is_empty()),
        ] {
            if set {
                self.err(
                    &format!("{path}.{key}"),
                    format!("{key} does not apply to non_resource_urls"),
                    "remove it",
                );
            }
        }
        let mut urls = Vec::new();
        for (i, u) in r.non_resource_urls.iter().enumerate() {
            match check_url_pattern(u) {
                Ok(()) => urls.push(UrlPattern::new(u)),
                Err(e) => self.err(&format!("{path}.non_resource_urls[{i}]"), e, URL_HINT),
            }
        }
        (self.problems.len() == before).then_some(Rule {
            verbs,
            target: RuleTarget::NonResource(urls),
        })
    }

    /// A grant rule's `namespaces`: absent = cluster-scoped only, `*` = all, else names/globs.
    fn rule_namespaces(&mut self, path: &str, namespaces: &Option<Vec<String>>) -> NsMatch {
        match namespaces {
            None => NsMatch::ClusterOnly,
            Some(list) if list.is_empty() => {
                self.err(
                    &format!("{path}.namespaces"),
                    "an empty namespaces list matches nothing",
                    "omit the key for cluster-scoped resources, list namespaces, or use [\"*\"] for all",
                );
                NsMatch::ClusterOnly
            }
            Some(list) if list.iter().any(|n| n == "*") => NsMatch::All,
            Some(list) => {
                let mut globs = Vec::new();
                for (i, n) in list.iter().enumerate() {
                    match check_namespace_pattern(n) {
                        Ok(()) => globs.push(Glob::new(n)),
                        Err(e) => self.err(&format!("{path}.namespaces[{i}]"), e, NS_HINT),
                    }
                }
                NsMatch::Patterns(globs)
            }
        }
    }
}
