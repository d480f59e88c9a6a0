//! The compiled policy and the decision: `(tenant rules ∪ grants of the caller's subjects) ∩
//! token scope`, deny by default. See the module doc of [`crate::authz`] for the semantics.
//!
//! Everything a decision needs was compiled by [`crate::authz::config::build`]: verbs are bit
//! sets, namespace patterns are globs, resource patterns are parsed. A decision allocates only
//! its reason string.

use crate::authn::identity::Identity;
use crate::k8s::request::RequestInfo;

use super::pattern::{
    builtin_cluster_scoped, verb_bit, Glob, ResourcePattern, UrlPattern, VerbSet,
};

/// Reason of a denial when no tenant rule and no grant of the caller allows the request.
pub const NO_GRANT: &str = "no grant";
/// Reason of a denial when a grant allows the request but the token's scope does not.
pub const OUTSIDE_SCOPE: &str = "outside token scope";
/// Reason of an allowed request to a public non-resource URL.
pub const PUBLIC: &str = "public non-resource URL";
/// Reason of an allowed self-review (`kubectl auth whoami|can-i`): every authenticated caller
/// may ask about itself, as on an API server (`system:basic-user`); the proxy answers them.
pub const SELF_REVIEW: &str = "self review";

/// The outcome of [`Authorizer::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// When allowed: `tenant <name>`, `grant <name>` or `public non-resource URL`.
    /// When denied: [`NO_GRANT`] or [`OUTSIDE_SCOPE`].
    pub reason: String,
}

impl Decision {
    fn allow(reason: &str) -> Self {
        Decision {
            allowed: true,
            reason: reason.to_owned(),
        }
    }

    fn deny(reason: &str) -> Self {
        Decision {
            allowed: false,
            reason: reason.to_owned(),
        }
    }
}

/// A validated, compiled `authorization:` section: plain data (no I/O, no state), held by
/// `Config` and shared by the authn and authz layers. Immutable; build a new one to reload.
#[derive(Debug, Clone)]
pub struct AuthzPolicy {
    pub(super) public: Vec<UrlPattern>,
    /// Tenants first (config order), then grants (config order).
    pub(super) principals: Vec<Principal>,
    /// `cluster_scoped_resources` from the config: (group, resource).
    pub(super) extra_cluster_scoped: Vec<(String, String)>,
}

/// What decides requests is the compiled policy itself.
pub type Authorizer = AuthzPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PrincipalKind {
    Tenant,
    Grant,
}

/// A tenant or a grant: who it applies to and what it allows.
#[derive(Debug, Clone)]
pub(super) struct Principal {
    pub kind: PrincipalKind,
    pub name: String,
    /// `tenant <name>` / `grant <name>`, the reason of an allowed decision.
    pub allow_reason: String,
    pub subjects: Vec<Subject>,
    pub rules: Vec<Rule>,
    /// `record_sessions`: the exec / attach sessions this principal allows are recorded.
    pub record_sessions: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    User(String),
    Group(String),
    Extra { key: String, value: String },
}

impl Subject {
    #[inline]
    pub(super) fn matches(&self, id: &Identity) -> bool {
        match self {
            Subject::User(u) => *u == id.user,
            Subject::Group(g) => id.groups.iter().any(|x| x == g),
            Subject::Extra { key, value } => id
                .extra
                .get(key)
                .is_some_and(|vs| vs.iter().any(|v| v == value)),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub verbs: VerbSet,
    pub target: RuleTarget,
}

#[derive(Debug, Clone)]
pub(super) enum RuleTarget {
    Resource(ResourceRule),
    NonResource(Vec<UrlPattern>),
}

#[derive(Debug, Clone)]
pub(super) struct ResourceRule {
    pub namespaces: NsMatch,
    /// `None`: any group.
    pub api_groups: Option<Vec<String>>,
    pub resources: Vec<ResourcePattern>,
    /// Empty: any name.
    pub resource_names: Vec<String>,
    /// A tenant rule: the subresources of `escalation.rs` need naming.
    pub tenant: bool,
}

/// A compiled rule `namespaces:`.
#[derive(Debug, Clone)]
pub(super) enum NsMatch {
    /// `"*"` listed: every namespace, cluster-scoped resources and cluster-wide requests.
    All,
    /// Key omitted: cluster-scoped resources only (the namespace objects included).
    ClusterOnly,
    /// Names/globs: namespaced requests in a matching namespace, and — only when the rule names
    /// the `namespaces` resource explicitly — the matching namespace objects.
    Patterns(Vec<Glob>),
}

/// Where a resource request points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place<'a> {
    /// A namespaced resource in this namespace.
    Namespace(&'a str),
    /// The namespace object itself (`namespaces/<ns>` and its `status`/`finalize`).
    NamespaceObject(&'a str),
    /// A cluster-scoped resource (nodes, clusterroles, …; `list`/`create` of namespaces).
    ClusterScoped,
    /// No namespace, on a resource not known to be cluster-scoped: a cluster-wide
    /// list/watch/deletecollection (or a create/get that the apiserver would refuse).
    ClusterWide,
}

impl ResourceRule {
    /// `names_required`: only a rule listing `resource_names` can match (impersonating a
    /// `system:` identity needs a rule that names it).
    #[inline]
    fn matches(&self, req: &RequestInfo, place: Place<'_>, names_required: bool) -> bool {
        // `named_only`: wildcards in the resource list do not reach the namespace object from a
        // rule scoped to listed namespaces; the rule must name `namespaces` itself.
        let named_only = match (&self.namespaces, place) {
            (NsMatch::All, _) => false,
            (NsMatch::ClusterOnly, Place::ClusterScoped | Place::NamespaceObject(_)) => false,
            (NsMatch::ClusterOnly, _) => return false,
            (NsMatch::Patterns(p), Place::Namespace(ns)) => {
                if !p.iter().any(|g| g.matches(ns)) {
                    return false;
                }
                false
            }
            (NsMatch::Patterns(p), Place::NamespaceObject(ns)) => {
                if !p.iter().any(|g| g.matches(ns)) {
                    return false;
                }
                true
            }
            (NsMatch::Patterns(_), Place::ClusterScoped | Place::ClusterWide) => return false,
        };
        if let Some(groups) = &self.api_groups {
            if !groups.contains(&req.api_group) {
                return false;
            }
        }
        let guarded = self.tenant
            && super::escalation::must_be_named(&req.resource, &req.subresource, &req.verb);
        let resource_ok = self.resources.iter().any(|p| {
            (!named_only || matches!(p, ResourcePattern::Named { .. }))
                && p.matches(&req.resource, &req.subresource)
                && (!guarded || super::escalation::names(p, &req.resource, &req.subresource))
        });
        resource_ok
            && ((self.resource_names.is_empty() && !names_required)
                || (!req.name.is_empty() && self.resource_names.contains(&req.name)))
    }
}

impl Authorizer {
    /// The tenant `id` belongs to: the first tenant, in config order, one of whose subjects
    /// matches. (Authorization itself applies the rules of *every* matching tenant.)
    pub fn tenant_of(&self, id: &Identity) -> Option<String> {
        self.principals
            .iter()
            .filter(|p| p.kind == PrincipalKind::Tenant)
            .find(|p| p.subjects.iter().any(|s| s.matches(id)))
            .map(|p| p.name.clone())
    }

    /// Decide one request. Deny unless a tenant rule or grant of one of `id`'s subjects allows
    /// it *and* the token scope (if any) allows it; public non-resource URLs (GET/HEAD) are
    /// allowed to every authenticated caller without consulting grants or scope.
    pub fn authorize(&self, id: &Identity, req: &RequestInfo) -> Decision {
        if req.is_self_review() {
            return Decision::allow(SELF_REVIEW);
        }
        self.decide(id, req, false)
    }

    /// Decide one `impersonate` check (`req` says which user, group, uid, extra or service
    /// account): grants ∩ token scope, as [`Authorizer::authorize`]. A `system:` target (a
    /// `system:` user or group, a service account) is only allowed by a rule whose
    /// `resource_names` lists it: a wildcard grant never reaches them.
    pub fn authorize_impersonation(
        &self,
        id: &Identity,
        req: &RequestInfo,
        system: bool,
    ) -> Decision {
        self.decide(id, req, system)
    }

    fn decide(&self, id: &Identity, req: &RequestInfo, named_only: bool) -> Decision {
        if !req.is_resource_request
            && (req.verb == "get" || req.verb == "head")
            && self.public.iter().any(|p| p.matches(&req.path))
        {
            return Decision::allow(PUBLIC);
        }
        let Some(by) = self.granted_by(id, req, named_only) else {
            return Decision::deny(NO_GRANT);
        };
        if let Some(scope) = &id.scope {
            if !scope.allows(req) {
                return Decision::deny(OUTSIDE_SCOPE);
            }
        }
        Decision::allow(&by.allow_reason)
    }

    /// Whether the session `req` opens (an allowed `pods/exec` or `pods/attach`) is to be
    /// recorded: some tenant or grant with `record_sessions` applies to `id` *and* allows
    /// `req`. Any such principal counts, not only the first one that allowed it, so a second
    /// grant without recording never switches recording off.
    pub fn records_session(&self, id: &Identity, req: &RequestInfo) -> bool {
        let session = req.is_resource_request
            && req.api_group.is_empty()
            && req.resource == "pods"
            && (req.subresource == "exec" || req.subresource == "attach");
        session
            && self
                .applying(id, req, false)
                .is_some_and(|mut applying| applying.any(|p| p.record_sessions))
    }

    /// The first tenant or grant (tenants first, then grants, each in config order) that applies
    /// to `id` and has a rule allowing `req`.
    fn granted_by<'s>(
        &'s self,
        id: &'s Identity,
        req: &'s RequestInfo,
        named_only: bool,
    ) -> Option<&'s Principal> {
        self.applying(id, req, named_only)?.next()
    }

    /// Every tenant or grant, in decision order, that applies to `id` and has a rule allowing
    /// `req`; `None` for a resource request without a resource (nothing allows it).
    fn applying<'s>(
        &'s self,
        id: &'s Identity,
        req: &'s RequestInfo,
        named_only: bool,
    ) -> Option<impl Iterator<Item = &'s Principal> + 's> {
        let bit = verb_bit(&req.verb);
        let place = if req.is_resource_request {
            if req.resource.is_empty() {
                return None;
            }
            Some(self.place(req))
        } else {
            None
        };
        Some(self.principals.iter().filter(move |p| {
            p.subjects.iter().any(|s| s.matches(id))
                && p.rules.iter().any(|r| {
                    r.verbs.contains(bit)
                        && match (&r.target, place) {
                            (RuleTarget::Resource(rr), Some(place)) => {
                                rr.matches(req, place, named_only)
                            }
                            (RuleTarget::NonResource(urls), None) => {
                                urls.iter().any(|u| u.matches(&req.path))
                            }
                            _ => false,
                        }
                })
        }))
    }

    /// The grant rules without `namespaces` whose wildcards (`verbs: ["*"]`, or a `resources`
    /// pattern that does not name the target: `*`, `*/*`) reach `impersonate` on any
    /// user, group, uid or extra: as in RBAC, whoever holds one may act as others (outside
    /// `system:`, which needs `resource_names`), and so reach every namespace those identities
    /// reach — although the rule itself covers cluster-scoped resources only. Logged at start
    /// and reload: such a rule is more often meant for nodes and CRDs than for becoming someone
    /// else. A rule that names the verb and the target is taken as meant (whatever its
    /// `api_groups`), and one with `namespaces: ["*"]` already reaches every namespace itself.
    pub fn wildcard_impersonation(&self) -> Vec<String> {
        // What RBAC (and the authn layer) asks `impersonate` on: users, groups, uids, and
        // extras, whose key is the subresource (any key stands for all of them here).
        const TARGETS: [(&str, &str, &str); 4] = [
            ("", "users", ""),
            ("", "groups", ""),
            ("authentication.k8s.io", "uids", ""),
            ("authentication.k8s.io", "userextras", "any-key"),
        ];
        let bit = verb_bit("impersonate");
        let mut found = Vec::new();
        let grants = self
            .principals
            .iter()
            .filter(|p| p.kind == PrincipalKind::Grant);
        for (g, grant) in grants.enumerate() {
            for (i, rule) in grant.rules.iter().enumerate() {
                let RuleTarget::Resource(r) = &rule.target else {
                    continue;
                };
                if !rule.verbs.contains(bit)
                    || !r.resource_names.is_empty()
                    || !matches!(r.namespaces, NsMatch::ClusterOnly)
                {
                    continue;
                }
                let verbs_wild = rule.verbs.names() == ["*"];
                // Reached by a wildcard: `verbs: ["*"]`, or a resource pattern other than the
                // target named (`*`); a rule naming `impersonate` and the target is meant.
                let wild = TARGETS.iter().any(|(group, resource, sub)| {
                    let in_group = r
                        .api_groups
                        .as_ref()
                        .is_none_or(|gs| gs.iter().any(|x| x == group));
                    let mut patterns = r.resources.iter().filter(|p| p.matches(resource, sub));
                    in_group
                        && patterns
                            .any(|p| verbs_wild || !matches!(p, ResourcePattern::Named { .. }))
                });
                if wild {
                    found.push(format!(
                        "authorization.grants[{g}] ({}) rules[{i}]: its wildcards reach `impersonate` on every user, group, uid or extra (as in RBAC; `system:` names and service accounts need resource_names), so its subjects may act as others, in every namespace those identities reach; name the verbs (or resources) it is meant for, or name `impersonate` and the target with resource_names",
                        grant.name
                    ));
                }
            }
        }
        found
    }

    /// Whether `(group, resource)` is cluster-scoped: built in, or configured
    /// (`cluster_scoped_resources`).
    pub fn is_cluster_scoped(&self, group: &str, resource: &str) -> bool {
        builtin_cluster_scoped(group, resource)
            || self
                .extra_cluster_scoped
                .iter()
                .any(|(g, r)| g == group && r == resource)
    }

    pub(super) fn place<'a>(&self, req: &'a RequestInfo) -> Place<'a> {
        let ns = req.namespace.as_str();
        if !ns.is_empty() {
            if req.resource == "namespaces" && req.api_group.is_empty() {
                Place::NamespaceObject(ns)
            } else {
                Place::Namespace(ns)
            }
        } else if self.is_cluster_scoped(&req.api_group, &req.resource) {
            Place::ClusterScoped
        } else {
            Place::ClusterWide
        }
    }
}
