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
            verb: &info.verb,
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
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # 0: health probes are noise
  - level: None
    nonResourceURLs: ["/healthz*", "/version"]
  # 1: a named configmap, watched closely
  - level: RequestResponse
    resources: [{group: "", resources: [configmaps], resourceNames: [audit-me]}]
  # 2: secrets and configmaps: never bodies
  - level: Metadata
    resources: [{group: "", resources: [secrets, configmaps]}]
  # 3: pod logs
  - level: Request
    resources: [{group: "", resources: [pods/log]}]
    omitStages: [ResponseStarted]
  # 4: scale of anything in apps
  - level: Request
    verbs: [update, patch]
    resources: [{group: apps, resources: ["*/scale"]}]
  # 5: the pods resource itself
  - level: RequestResponse
    resources: [{group: "", resources: [pods]}]
  # 6: other pod subresources
  - level: Metadata
    resources: [{group: "", resources: ["pods/*"]}]
    omitManagedFields: false
  # 7: cluster-scoped reads by admins
  - level: Request
    userGroups: [admins]
    namespaces: [""]
  # 8: anything by the robot
  - level: Request
    users: [robot]
  # 9: other non-resource URLs
  - level: Metadata
    nonResourceURLs: ["/metrics", "/logs/*"]
omitManagedFields: true
"#;

    struct Req {
        user: &'static str,
        groups: &'static [&'static str],
        verb: &'static str,
        path: &'static str,
        ns: &'static str,
        group: &'static str,
        resource: &'static str,
        sub: &'static str,
        name: &'static str,
    }

    fn res(verb: &'static str, group: &'static str, resource: &'static str) -> Req {
        Req {
            user: "alice",
            groups: &["dev"],
            verb,
            path: "/apis/x",
            ns: "team-a",
            group,
            resource,
            sub: "",
            name: "",
        }
    }

    fn nonres(path: &'static str) -> Req {
        Req {
            user: "alice",
            groups: &["dev"],
            verb: "get",
            path,
            ns: "",
            group: "",
            resource: "",
            sub: "",
            name: "",
        }
    }

    fn eval(p: &Policy, r: &Req) -> RuleEvaluation {
        let groups: Vec<String> = r.groups.iter().map(|g| g.to_string()).collect();
        p.evaluate(&Attributes {
            user: r.user,
            groups: &groups,
            verb: r.verb,
            is_resource_request: !r.resource.is_empty(),
            path: r.path,
            namespace: r.ns,
            api_group: r.group,
            resource: r.resource,
            subresource: r.sub,
            name: r.name,
        })
    }

    #[test]
    fn semantics_table() {
        let p = Policy::from_yaml(POLICY).unwrap();
        use Level::*;
        let cases: Vec<(&str, Req, Level)> = vec![
            ("healthz prefix", nonres("/healthz"), None),
            ("healthz sub-path prefix", nonres("/healthz/etcd"), None),
            ("prefix is textual", nonres("/healthzzz"), None),
            ("version exact", nonres("/version"), None),
            ("version is exact only", nonres("/version/x"), None),
            ("metrics", nonres("/metrics"), Metadata),
            ("logs/* prefix", nonres("/logs/kubelet.log"), Metadata),
            ("/logs does not match /logs/*", nonres("/logs"), None),
            (
                "resourceNames: the named configmap",
                Req {
                    name: "audit-me",
                    ..res("get", "", "configmaps")
                },
                RequestResponse,
            ),
            (
                "resourceNames: another configmap falls through",
                Req {
                    name: "other",
                    ..res("get", "", "configmaps")
                },
                Metadata,
            ),
            ("secrets list", res("list", "", "secrets"), Metadata),
            (
                "group is literal: secrets in another group",
                res("get", "example.com", "secrets"),
                None,
            ),
            (
                "pods/log",
                Req {
                    sub: "log",
                    ..res("get", "", "pods")
                },
                Request,
            ),
            (
                "*/scale in apps",
                Req {
                    sub: "scale",
                    ..res("update", "apps", "deployments")
                },
                Request,
            ),
            (
                "*/scale: verb must match too",
                Req {
                    sub: "scale",
                    ..res("get", "apps", "deployments")
                },
                None,
            ),
            (
                "*/scale does not match the resource itself",
                res("update", "apps", "deployments"),
                None,
            ),
            ("pods itself", res("create", "", "pods"), RequestResponse),
            (
                "pods does not match pods/exec; pods/* does",
                Req {
                    sub: "exec",
                    ..res("create", "", "pods")
                },
                Metadata,
            ),
            (
                "namespaces [\"\"]: cluster-scoped by an admin",
                Req {
                    ns: "",
                    groups: &["admins"],
                    ..res("get", "", "nodes")
                },
                Request,
            ),
            (
                "namespaces [\"\"]: namespaced by an admin does not match",
                Req {
                    groups: &["admins"],
                    ..res("get", "", "services")
                },
                None,
            ),
            (
                "users",
                Req {
                    user: "robot",
                    ..res("get", "", "services")
                },
                Request,
            ),
            (
                "users rule also matches non-resource requests",
                Req {
                    user: "robot",
                    ..nonres("/openapi/v3")
                },
                Request,
            ),
            ("no match → None", res("get", "", "services"), None),
        ];
        for (what, req, want) in cases {
            assert_eq!(eval(&p, &req).level, want, "{what}");
        }
    }

    #[test]
    fn pods_star_matches_the_bare_resource_as_checker_go_does() {
        let p = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{resources: [\"pods/*\"]}]\n",
        )
        .unwrap();
        assert_eq!(eval(&p, &res("get", "", "pods")).level, Level::Request);
        let sub = Req {
            sub: "status",
            ..res("get", "", "pods")
        };
        assert_eq!(eval(&p, &sub).level, Level::Request);
        assert_eq!(eval(&p, &res("get", "", "podtemplates")).level, Level::None);
    }

    #[test]
    fn star_matches_everything_and_resource_rules_skip_nonresource() {
        let p = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{group: \"\", resources: [\"*\"]}]\n- level: Metadata\n  namespaces: [team-a]\n",
        )
        .unwrap();
        let sub = Req {
            sub: "log",
            ..res("get", "", "pods")
        };
        assert_eq!(eval(&p, &sub).level, Level::Request);
        assert_eq!(eval(&p, &res("get", "apps", "x")).level, Level::Metadata);
        assert_eq!(eval(&p, &nonres("/metrics")).level, Level::None);
    }

    #[test]
    fn stages_and_managed_fields() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let log = eval(
            &p,
            &Req {
                sub: "log",
                ..res("get", "", "pods")
            },
        );
        assert_eq!(
            log.omit_stages.to_vec(),
            [Stage::RequestReceived, Stage::ResponseStarted],
            "policy omitStages unioned with the rule's"
        );
        assert!(!log.records(Stage::RequestReceived));
        assert!(!log.records(Stage::ResponseStarted));
        assert!(log.records(Stage::ResponseComplete));
        assert!(log.omit_managed_fields, "policy default");
        let exec = eval(
            &p,
            &Req {
                sub: "exec",
                ..res("create", "", "pods")
            },
        );
        assert!(!exec.omit_managed_fields, "rule overrides the policy");
        let none = eval(&p, &res("get", "", "services"));
        assert_eq!(none.omit_stages.to_vec(), [Stage::RequestReceived]);
        assert!(
            !none.records(Stage::ResponseComplete),
            "level None records nothing"
        );
    }

    #[test]
    fn json_is_accepted_too() {
        let p = Policy::from_yaml(
            r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","metadata":{"name":"x"},"rules":[{"level":"Metadata"}]}"#,
        )
        .unwrap();
        assert_eq!(eval(&p, &nonres("/x")).level, Level::Metadata);
        assert_eq!(eval(&p, &res("get", "", "pods")).level, Level::Metadata);
    }

    #[test]
    fn errors_name_the_key_path() {
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        let cases = [
            ("rules:\n- level: Loud\n", "rules[0].level"),
            ("rules:\n- verbs: [get]\n", "rules[0]"),
            ("rules:\n- level: None\n  user: [x]\n", "rules[0].user"),
            (
                "rules:\n- level: None\n  omitStages: [Later]\n",
                "rules[0].omitStages[0]",
            ),
            ("rules: []\n", "rules"),
            (
                "rules:\n- level: None\n  nonResourceURLs: [healthz]\n",
                "rules[0].nonResourceURLs[0]",
            ),
            (
                "rules:\n- level: None\n  nonResourceURLs: [\"/a*b\"]\n",
                "rules[0].nonResourceURLs[0]",
            ),
            (
                "rules:\n- level: None\n  nonResourceURLs: [\"/a**\"]\n",
                "rules[0].nonResourceURLs[0]",
            ),
            (
                "rules:\n- level: None\n  nonResourceURLs: [\"/a\"]\n  namespaces: [x]\n",
                "rules[0].nonResourceURLs",
            ),
            (
                "rules:\n- level: None\n  resources: [{group: \"*\"}]\n",
                "rules[0].resources[0].group",
            ),
            (
                "rules:\n- level: None\n  resources: [{resourceNames: [x]}]\n",
                "rules[0].resources[0].resourceNames",
            ),
            (
                "rules:\n- level: None\n  resources: [{groups: [x]}]\n",
                "rules[0].resources[0].groups",
            ),
            (
                "omitManagedFields: yes please\nrules:\n- level: None\n",
                "omitManagedFields",
            ),
        ];
        for (body, path) in cases {
            let e = Policy::from_yaml(&format!("{head}{body}")).unwrap_err();
            assert_eq!(e.path, path, "{body}: {e}");
        }
        let e = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v2\nkind: Policy\nrules: [{level: None}]\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "apiVersion");
        let e = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Config\nrules: [{level: None}]\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "kind");
        assert!(Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n"
        )
        .is_ok());
        assert!(Policy::from_yaml("kind: [").is_err());
        // A multi-byte last character must not trip the wildcard check.
        assert!(Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [\"/é\"]}]\n"
        )
        .is_ok());
    }

    #[test]
    fn the_default_policy_in_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/audit-policy.yaml");
        let p = Policy::load(&path).unwrap();
        use Level::*;
        let sub = |resource, sub, verb| Req {
            sub,
            ..res(verb, "", resource)
        };
        // Never bodies of secrets, configmaps, tokenreviews, serviceaccounts/token.
        for verb in [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ] {
            assert_eq!(
                eval(&p, &res(verb, "", "secrets")).level,
                Metadata,
                "secrets {verb}"
            );
            assert_eq!(
                eval(&p, &res(verb, "", "configmaps")).level,
                Metadata,
                "configmaps {verb}"
            );
            assert_eq!(
                eval(&p, &res(verb, "authentication.k8s.io", "tokenreviews")).level,
                Metadata,
                "tokenreviews {verb}"
            );
            assert_eq!(
                eval(&p, &sub("serviceaccounts", "token", verb)).level,
                Metadata,
                "serviceaccounts/token {verb}"
            );
        }
        // Reads at Metadata, writes at RequestResponse, everything else Metadata.
        for verb in ["get", "list", "watch"] {
            assert_eq!(eval(&p, &res(verb, "", "pods")).level, Metadata, "{verb}");
            assert_eq!(
                eval(&p, &res(verb, "apps", "deployments")).level,
                Metadata,
                "{verb}"
            );
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert_eq!(
                eval(&p, &res(verb, "", "pods")).level,
                RequestResponse,
                "{verb}"
            );
            assert_eq!(
                eval(&p, &res(verb, "rbac.authorization.k8s.io", "clusterroles")).level,
                RequestResponse,
                "{verb}"
            );
            assert_eq!(
                eval(&p, &sub("deployments", "scale", verb)).level,
                RequestResponse,
                "{verb} scale"
            );
        }
        assert_eq!(
            eval(&p, &sub("pods", "exec", "create")).level,
            RequestResponse
        );
        assert_eq!(eval(&p, &res("proxy", "", "services")).level, Metadata);
        assert_eq!(eval(&p, &nonres("/healthz")).level, Metadata);
        assert_eq!(eval(&p, &nonres("/api")).level, Metadata);
        // RequestReceived is skipped everywhere; managed fields are omitted.
        for r in [
            res("get", "", "secrets"),
            res("create", "", "pods"),
            nonres("/version"),
        ] {
            let e = eval(&p, &r);
            assert!(!e.records(Stage::RequestReceived));
            assert!(e.records(Stage::ResponseComplete));
            assert!(e.omit_managed_fields);
        }
    }
}
