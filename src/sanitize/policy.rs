//! The validated sanitizer policy: body caps and inspection per resource, Pod Security modes
//! per namespace and tenant, field rules. Pure lookups; judging lives in `judge.rs`.
//!
//! Pod Security resolution, mode by mode (enforce, warn, audit): the namespace's entry if it
//! sets that mode, else `defaults`; then, if the caller's tenant has an entry setting that mode,
//! **both** apply (a tenant's floor follows it into every namespace it may write to, and a
//! namespace's floor binds every tenant in it): a pod must pass each enforced policy, and warn
//! and audit report what either finds. Comparing levels alone would not do: a higher level
//! pinned to an old version (`restricted` at `v1.18`: seccomp read from annotations only, no
//! host-probe check) lets through what a lower level at `latest` refuses. The two are kept in
//! order, the stricter level first (on a tie the namespace's), which is the one a refusal names
//! when both are violated ([`Policies`]).

use std::collections::BTreeMap;

pub use super::config::BinaryBodies;
use super::{fields::FieldPath, parse::Limits, pss};
use crate::{authn::Identity, k8s::request::RequestInfo};

/// A per-resource override (`sanitize.resources[]`).
#[derive(Clone, Debug)]
pub struct ResourceRule {
    pub group: String,
    pub resources: Vec<String>,
    pub max_body: Option<usize>,
    pub inspect: Option<bool>,
    pub binary_bodies: Option<BinaryBodies>,
}

/// Policies per mode (None: that mode is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    pub enforce: Option<pss::Policy>,
    pub warn: Option<pss::Policy>,
    pub audit: Option<pss::Policy>,
}

impl Modes {
    /// True when some mode checks anything.
    pub fn any(&self) -> bool {
        [self.enforce, self.warn, self.audit]
            .iter()
            .flatten()
            .any(|p| p.level != pss::Level::Privileged)
    }
}

/// The policies one mode applies to a write: the namespace's (or `defaults`') and the caller's
/// tenant's, each of which the pod must pass — the stricter level first (on a tie the
/// namespace's), a policy equal to the first kept once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    first: Option<pss::Policy>,
    second: Option<pss::Policy>,
}

impl Policies {
    /// `base` (namespace or defaults) and `tenant`, ordered.
    fn of(base: Option<pss::Policy>, tenant: Option<pss::Policy>) -> Self {
        match (base, tenant) {
            (Some(b), Some(t)) if b == t => Self::one(Some(b)),
            (Some(b), Some(t)) if t.level > b.level => Self {
                first: Some(t),
                second: Some(b),
            },
            (Some(b), Some(t)) => Self {
                first: Some(b),
                second: Some(t),
            },
            (b, t) => Self::one(b.or(t)),
        }
    }

    fn one(p: Option<pss::Policy>) -> Self {
        Self {
            first: p,
            second: None,
        }
    }

    /// The policy a single-policy view names: the stricter level (what PodSecurity's
    /// `enforce-policy` would name had only one applied).
    pub fn first(&self) -> Option<pss::Policy> {
        self.first
    }

    /// Every policy of this mode, in order.
    pub fn iter(&self) -> impl Iterator<Item = pss::Policy> {
        self.first.into_iter().chain(self.second)
    }

    /// `level:version` of each policy, in order, joined by `, ` — when two apply (one is the
    /// [`first`](Self::first)'s name alone).
    pub fn both(&self) -> Option<String> {
        let (first, second) = self.first.zip(self.second)?;
        Some(format!("{first}, {second}"))
    }
}

fn trusting(mut p: pss::Policy) -> pss::Policy {
    p.trust_host_users(true);
    p
}

/// What each mode applies to one write ([`Sanitizer::modes_for`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub enforce: Policies,
    pub warn: Policies,
    pub audit: Policies,
}

impl Applied {
    /// The same policies trusting `hostUsers: false` (an update of an object already stored
    /// with `hostUsers`: the API server keeps the field whatever its feature gate says,
    /// `hostUsersInUse` in `pkg/api/pod/util.go`, and its PodSecurity relaxes on it).
    pub fn trusting_host_users(self) -> Applied {
        let trust = |p: Policies| Policies {
            first: p.first.map(trusting),
            second: p.second.map(trusting),
        };
        Applied {
            enforce: trust(self.enforce),
            warn: trust(self.warn),
            audit: trust(self.audit),
        }
    }

    /// Whether every policy already trusts `hostUsers: false`.
    fn all_trust_host_users(&self) -> bool {
        [self.enforce, self.warn, self.audit]
            .iter()
            .flat_map(Policies::iter)
            .all(pss::Policy::user_namespaces)
    }

    /// Whether judging `object` (of `kind`) could depend on a stored `hostUsers`: it sets
    /// `hostUsers: false` and some policy does not trust it by configuration.
    pub fn host_users_may_be_kept(
        &self,
        kind: pss::PodBearing,
        object: &serde_json::Value,
    ) -> bool {
        !self.all_trust_host_users()
            && pss::pod_specs(kind, object)
                .iter()
                .any(|p| p.spec.get("hostUsers") == Some(&serde_json::Value::Bool(false)))
    }

    /// True when some mode checks anything.
    pub fn any(&self) -> bool {
        [self.enforce, self.warn, self.audit]
            .iter()
            .flat_map(Policies::iter)
            .any(|p| p.level != pss::Level::Privileged)
    }
}

/// `sanitize.pod_security`.
#[derive(Clone, Debug, Default)]
pub struct PodSecurity {
    pub defaults: Modes,
    pub namespaces: BTreeMap<String, Modes>,
    pub tenants: BTreeMap<String, Modes>,
}

/// A field rule (`sanitize.field_rules[]`).
#[derive(Clone, Debug)]
pub struct FieldRule {
    pub group: String,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub tenants: Option<Vec<String>>,
    pub deny: Vec<FieldPath>,
    pub strip: Vec<FieldPath>,
}

/// Everything the sanitize stage consults: the validated `sanitize:` section, plain data (no
/// I/O, no state), held by `Config` and shared by the sanitize layer.
#[derive(Clone, Debug)]
pub struct SanitizePolicy {
    pub max_body: usize,
    pub binary_bodies: BinaryBodies,
    pub limits: Limits,
    pub resources: Vec<ResourceRule>,
    pub pod_security: Option<PodSecurity>,
    pub field_rules: Vec<FieldRule>,
}

/// What the sanitize stage consults is the policy itself.
pub type Sanitizer = SanitizePolicy;

impl Default for Sanitizer {
    fn default() -> Self {
        Sanitizer {
            max_body: Self::DEFAULT_MAX_BODY,
            binary_bodies: BinaryBodies::Reject,
            limits: Limits::default(),
            resources: Vec::new(),
            pod_security: None,
            field_rules: Vec::new(),
        }
    }
}

/// `group` + `resource[/subresource]` against a rule's group and resource list.
fn matches(rule_group: &str, rule_resources: &[String], info: &RequestInfo) -> bool {
    if rule_group != "*" && rule_group != info.api_group {
        return false;
    }
    rule_resources.iter().any(|r| {
        if r == "*" {
            return true;
        }
        match r.split_once('/') {
            None => info.subresource.is_empty() && *r == info.resource,
            Some((res, "*")) => res == info.resource && !info.subresource.is_empty(),
            Some((res, sub)) => res == info.resource && sub == info.subresource,
        }
    })
}

impl Sanitizer {
    /// The apiserver's own request-body limit.
    pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

    /// (body cap, inspect?) for this request: the first matching `resources[]` entry's values,
    /// else the section's (every write inspected).
    pub fn body_rule(&self, info: &RequestInfo) -> (usize, bool) {
        match self.resource_rule(info) {
            Some(r) => (
                r.max_body.unwrap_or(self.max_body),
                r.inspect.unwrap_or(true),
            ),
            None => (self.max_body, true),
        }
    }

    /// What to do with a protobuf / CBOR body for this request.
    pub fn binary_bodies(&self, info: &RequestInfo) -> BinaryBodies {
        self.resource_rule(info)
            .and_then(|r| r.binary_bodies)
            .unwrap_or(self.binary_bodies)
    }

    fn resource_rule(&self, info: &RequestInfo) -> Option<&ResourceRule> {
        self.resources
            .iter()
            .find(|r| matches(&r.group, &r.resources, info))
    }

    /// The Pod Security policies each mode applies to a write in `namespace` by a caller of
    /// `tenant`: the namespace's (or the defaults') and the tenant's, both (module doc).
    pub fn modes_for(&self, namespace: &str, tenant: Option<&str>) -> Applied {
        let Some(ps) = &self.pod_security else {
            return Applied::default();
        };
        let ns = ps.namespaces.get(namespace);
        let t = tenant.and_then(|t| ps.tenants.get(t));
        let pick = |f: fn(&Modes) -> Option<pss::Policy>| {
            let base = ns.and_then(f).or_else(|| f(&ps.defaults));
            Policies::of(base, t.and_then(f))
        };
        Applied {
            enforce: pick(|m| m.enforce),
            warn: pick(|m| m.warn),
            audit: pick(|m| m.audit),
        }
    }

    /// Field rules that apply to this request by this caller.
    pub fn rules_for<'a>(
        &'a self,
        info: &'a RequestInfo,
        identity: &'a Identity,
    ) -> impl Iterator<Item = &'a FieldRule> + 'a {
        self.field_rules.iter().filter(move |r| {
            matches(&r.group, &r.resources, info)
                && r.verbs.contains(&info.verb)
                && match (&r.tenants, &identity.tenant) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(list), Some(t)) => list.iter().any(|x| x == "*" || x == t),
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sanitize::pss::{Level, Policy};

    fn info(group: &str, resource: &str, sub: &str) -> RequestInfo {
        let mut i = crate::k8s::request::classify(
            &http::Method::POST,
            &"/api/v1/namespaces/x/pods".parse().unwrap(),
            &http::HeaderMap::new(),
        )
        .unwrap();
        i.api_group = group.into();
        i.resource = resource.into();
        i.subresource = sub.into();
        i
    }

    #[test]
    fn body_rules_first_match() {
        let s = Sanitizer {
            resources: vec![
                ResourceRule {
                    group: "".into(),
                    resources: vec!["configmaps".into()],
                    max_body: Some(10),
                    inspect: Some(false),
                    binary_bodies: None,
                },
                ResourceRule {
                    group: "*".into(),
                    resources: vec!["*".into()],
                    max_body: Some(20),
                    inspect: None,
                    binary_bodies: Some(BinaryBodies::ForwardUnjudged),
                },
            ],
            ..Sanitizer::default()
        };
        assert_eq!(s.body_rule(&info("", "configmaps", "")), (10, false));
        assert_eq!(s.body_rule(&info("apps", "deployments", "")), (20, true));
        assert_eq!(
            Sanitizer::default().body_rule(&info("", "pods", "")),
            (3 * 1024 * 1024, true)
        );
    }

    #[test]
    fn modes_strictest_of_namespace_and_tenant() {
        let m = |e: Level| Modes {
            enforce: Some(Policy::latest(e)),
            ..Modes::default()
        };
        let s = Sanitizer {
            pod_security: Some(PodSecurity {
                defaults: m(Level::Privileged),
                namespaces: [("a".to_string(), m(Level::Baseline))].into(),
                tenants: [("t".to_string(), m(Level::Restricted))].into(),
            }),
            ..Sanitizer::default()
        };
        let lvl = |ns, t| s.modes_for(ns, t).enforce.first().map(|p| p.level);
        assert_eq!(lvl("a", None), Some(Level::Baseline));
        assert_eq!(lvl("a", Some("t")), Some(Level::Restricted));
        assert_eq!(lvl("other", None), Some(Level::Privileged));
        assert_eq!(lvl("other", Some("t")), Some(Level::Restricted));
        assert_eq!(lvl("a", Some("unknown")), Some(Level::Baseline));
    }

    /// A namespace's policy and a tenant's both apply, whatever their levels: a higher level at
    /// an old version does not replace a lower one at `latest` (the review's case).
    #[test]
    fn namespace_and_tenant_policies_both_apply() {
        let p = |l: Level, v: pss::Version| Modes {
            enforce: Some(Policy::new(l, v)),
            warn: Some(Policy::new(l, v)),
            ..Modes::default()
        };
        let s = Sanitizer {
            pod_security: Some(PodSecurity {
                defaults: Modes::default(),
                namespaces: [
                    (
                        "team-a".to_string(),
                        p(Level::Baseline, pss::Version::Latest),
                    ),
                    (
                        "same".to_string(),
                        p(Level::Restricted, pss::Version::V1(18)),
                    ),
                ]
                .into(),
                tenants: [(
                    "contractors".to_string(),
                    p(Level::Restricted, pss::Version::V1(18)),
                )]
                .into(),
            }),
            ..Sanitizer::default()
        };
        // `level:version` of each policy of a mode, in order (None: none applies).
        let of = |p: Policies| {
            let names: Vec<String> = p.iter().map(|p| p.to_string()).collect();
            (!names.is_empty()).then(|| names.join(", "))
        };
        let names = |ns, t| {
            let m = s.modes_for(ns, t);
            (of(m.enforce), of(m.warn), of(m.audit))
        };
        assert_eq!(
            names("team-a", Some("contractors")),
            (
                Some("restricted:v1.18, baseline:latest".to_string()),
                Some("restricted:v1.18, baseline:latest".to_string()),
                None
            )
        );
        assert_eq!(names("team-a", None).0, Some("baseline:latest".to_string()));
        assert_eq!(
            names("elsewhere", Some("contractors")).0,
            Some("restricted:v1.18".to_string())
        );
        // The same policy twice is one.
        assert_eq!(
            s.modes_for("same", Some("contractors"))
                .enforce
                .iter()
                .count(),
            1
        );
    }
}
