//! The `audit.k8s.io/v1` `Policy`: which requests are recorded, at which level, at which stages.
//!
//! Semantics are those of kube-apiserver's `pkg/audit/policy/checker.go`, reproduced exactly so
//! a cluster's existing policy file works unchanged (shared/reference/kubernetes-api.md §4.3):
//!
//! * the **first** matching rule wins; no match → level `None` (with the policy's omitStages);
//! * inside a rule every given field must match (AND); an empty list means "any";
//! * `users` match the username; `userGroups` match if the user is in any listed group;
//! * a rule with `namespaces` or `resources` matches **resource requests only**; one with only
//!   `nonResourceURLs` matches non-resource requests only; one with neither matches everything;
//! * `namespaces: [""]` matches cluster-scoped (non-namespaced) requests;
//! * resources: `pods` matches the resource only (not its subresources), `pods/log` that
//!   subresource, `*/scale` the `scale` subresource of anything, `*` everything, and `pods/*`
//!   every subresource of pods — **and**, exactly as the apiserver's code does (its doc comment
//!   says otherwise), the bare `pods` resource too;
//! * `group` is compared literally: `""` is the core group and there is no group wildcard;
//! * `resourceNames` restrict a group entry to those object names;
//! * `nonResourceURLs`: `*`, an exact path, or a prefix ending in `*` (`/healthz*`);
//! * the policy's `omitStages` are unioned into every rule's; a rule's `omitManagedFields`
//!   overrides the policy's.
//!
//! Accepts: YAML or JSON with `apiVersion: audit.k8s.io/v1` (or the long-removed
//! `audit.k8s.io/v1beta1`, whose schema is the same) and `kind: Policy`; `metadata` is ignored.
//! Rejects, naming the key path: unknown keys, wrong types, unknown levels and stages, a missing
//! `level`, zero rules (as the apiserver does), a rule with both `nonResourceURLs` and
//! `resources`/`namespaces`, non-resource URLs not starting with `/` or with a `*` before the
//! end, `resourceNames` without `resources`, and a `group` of `*` (the apiserver has no group
//! wildcard, so such a rule would silently never match).

use std::{fmt, path::Path};

use serde::Deserialize;

use super::event::{Level, Stage};

/// A loaded policy, ready to evaluate. Rules already carry the policy's `omitStages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: StageSet,
    omit_managed_fields: bool,
}

/// One rule as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// `{group, resources, resourceNames}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    #[allow(dead_code)] // accepted so existing files load; nothing in it matters to us
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// A policy file problem, with the key path it is at (e.g. `rules[2].level`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for PolicyError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        path: path.into(),
        message: message.into(),
    }
}

/// What a request gets: its level, the stages not to record, whether to drop managed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleEvaluation {
    pub level: Level,
    pub omit_stages: StageSet,
    pub omit_managed_fields: bool,
}

impl RuleEvaluation {
    /// Whether an event at `stage` is to be emitted at all.
    pub fn records(&self, stage: Stage) -> bool {
        self.level > Level::None && !self.omit_stages.contains(stage)
    }
}

/// A set of stages (four bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StageSet(u8);

impl StageSet {
    fn bit(s: Stage) -> u8 {
        match s {
            Stage::RequestReceived => 1,
            Stage::ResponseStarted => 2,
            Stage::ResponseComplete => 4,
            Stage::Panic => 8,
        }
    }

    /// Whether `s` is in the set.
    pub fn contains(self, s: Stage) -> bool {
        self.0 & Self::bit(s) != 0
    }

    /// The union of both sets.
    pub fn union(self, other: StageSet) -> StageSet {
        StageSet(self.0 | other.0)
    }

    /// The stages in the set, in life order.
    pub fn to_vec(self) -> Vec<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .collect()
    }
}

impl FromIterator<Stage> for StageSet {
    fn from_iter<I: IntoIterator<Item = Stage>>(iter: I) -> StageSet {
        StageSet(iter.into_iter().fold(0, |acc, s| acc | Self::bit(s)))
    }
}

/// What the checker needs to know about a request (the apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub is_resource_request: bool,
    /// The URL path (non-resource URL rules match it).
    pub path: &'a str,
    /// `""` for cluster-scoped resources.
    pub namespace: &'a str,
    /// `""` for the core group.
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub name: &'a str,
}

impl<'a> Attributes<'a> {
    /// The attributes of a classified request made by `user` in `groups`.
    pub fn from_request(
        info: &'a crate::k8s::request::RequestInfo,
        user: &'a str,
        groups: &'a [String],
    ) -> Attributes<'a> {
        Attributes {
            user,
            groups,
            verb: info.audited_verb(),
            is_resource_request: info.is_resource_request,
            path: &info.path,
            namespace: &info.namespace,
            api_group: &info.api_group,
            resource: &info.resource,
            subresource: &info.subresource,
            name: &info.name,
        }
    }
}

impl Policy {
    /// Parse and validate policy text (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let value: serde_json::Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err("(json)", e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| err("(yaml)", e.to_string()))?
        };
        let file: PolicyFile = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            err(
                if path == "." {
                    "(top level)".to_string()
                } else {
                    path
                },
                e.inner().to_string(),
            )
        })?;
        Policy::build(file)
    }

    /// Read, parse and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read {}: {e}", path.display())))?;
        Policy::from_yaml(&text).map_err(|e| PolicyError {
            path: format!("{}: {}", path.display(), e.path),
            message: e.message,
        })
    }

    fn build(file: PolicyFile) -> Result<Policy, PolicyError> {
        if !matches!(
            file.api_version.as_str(),
            "audit.k8s.io/v1" | "audit.k8s.io/v1beta1"
        ) {
            return Err(err(
                "apiVersion",
                format!("{:?} is not audit.k8s.io/v1", file.api_version),
            ));
        }
        if file.kind != "Policy" {
            return Err(err("kind", format!("{:?} is not Policy", file.kind)));
        }
        if file.rules.is_empty() {
            // The apiserver refuses a policy with 0 rules ("loaded illegal policy").
            return Err(err("rules", "a policy needs at least one rule"));
        }
        for (i, r) in file.rules.iter().enumerate() {
            validate_rule(r, &format!("rules[{i}]"))?;
        }
        let omit_stages: StageSet = file.omit_stages.iter().copied().collect();
        Ok(Policy {
            rules: file.rules,
            omit_stages,
            omit_managed_fields: file.omit_managed_fields,
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The level and stage filter for a request: the first matching rule's, else `None`.
    pub fn evaluate(&self, attrs: &Attributes<'_>) -> RuleEvaluation {
        for rule in &self.rules {
            if rule_matches(rule, attrs) {
                return RuleEvaluation {
                    level: rule.level,
                    omit_stages: self
                        .omit_stages
                        .union(rule.omit_stages.iter().copied().collect()),
                    omit_managed_fields: rule
                        .omit_managed_fields
                        .unwrap_or(self.omit_managed_fields),
                };
            }
        }
        RuleEvaluation {
            level: Level::None,
            omit_stages: self.omit_stages,
            omit_managed_fields: self.omit_managed_fields,
        }
    }
}

fn validate_rule(r: &Rule, at: &str) -> Result<(), PolicyError> {
    if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty()) {
        return Err(err(
            format!("{at}.nonResourceURLs"),
            "rules cannot apply to both regular resources and non-resource URLs",
        ));
    }
    for (i, url) in r.non_resource_urls.iter().enumerate() {
        if url == "*" {
            continue;
        }
        if !url.starts_with('/') {
            return Err(err(
                format!("{at}.nonResourceURLs[{i}]"),
                format!("{url:?}: non-resource URL rules must begin with a '/' character"),
            ));
        }
        // Only a final '*' is allowed (validation.go checks all but the last byte).
        if url.strip_suffix('*').unwrap_or(url).contains('*') {
            return Err(err(
                format!("{at}.nonResourceURLs[{i}]"),
                format!("{url:?}: the wildcard '*' must be the final character"),
            ));
        }
    }
    for (i, gr) in r.resources.iter().enumerate() {
        if gr.group == "*" {
            return Err(err(
                format!("{at}.resources[{i}].group"),
                "the apiserver has no group wildcard (\"*\" would never match); list each group, or leave out `resources` to match any",
            ));
        }
        if !gr.resource_names.is_empty() && gr.resources.is_empty() {
            return Err(err(
                format!("{at}.resources[{i}].resourceNames"),
                "using resourceNames requires at least one resource",
            ));
        }
    }
    Ok(())
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|s| s == v)
}

fn rule_matches(r: &Rule, a: &Attributes<'_>) -> bool {
    if !r.users.is_empty() && !has(&r.users, a.user) {
        return false;
    }
    if !r.user_groups.is_empty() && !a.groups.iter().any(|g| has(&r.user_groups, g)) {
        return false;
    }
    if !r.verbs.is_empty() && !has(&r.verbs, a.verb) {
        return false;
    }
    if !r.namespaces.is_empty() || !r.resources.is_empty() {
        return matches_resource(r, a);
    }
    if !r.non_resource_urls.is_empty() {
        return !a.is_resource_request
            && r.non_resource_urls
                .iter()
                .any(|spec| path_matches(a.path, spec));
    }
    true
}

fn path_matches(path: &str, spec: &str) -> bool {
    if spec == "*" || spec == path {
        return true;
    }
    // Go's TrimRight strips every trailing '*'; validation allows only one anyway.
    spec.ends_with('*') && path.starts_with(spec.trim_end_matches('*'))
}

fn matches_resource(r: &Rule, a: &Attributes<'_>) -> bool {
    if !a.is_resource_request {
        return false;
    }
    if !r.namespaces.is_empty() && !has(&r.namespaces, a.namespace) {
        return false;
    }
    if r.resources.is_empty() {
        return true;
    }
    for gr in &r.resources {
        if gr.group != a.api_group {
            continue;
        }
        if gr.resources.is_empty() {
            return true;
        }
        if !gr.resource_names.is_empty() && !has(&gr.resource_names, a.name) {
            continue;
        }
        for res in &gr.resources {
            if res == "*" {
                return true;
            }
            // "resource" or "resource/subresource": compare without building the combined string.
            let exact = match res.split_once('/') {
                None => a.subresource.is_empty() && res == a.resource,
                Some((r0, s0)) => {
                    !a.subresource.is_empty() && r0 == a.resource && s0 == a.subresource
                }
            };
            if exact {
                return true;
            }
            // "*/subresource"
            if !a.subresource.is_empty() && res.strip_prefix("*/") == Some(a.subresource) {
                return true;
            }
            // "resource/*" — also matches the bare resource, as checker.go does.
            if res.strip_suffix("/*") == Some(a.resource) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
