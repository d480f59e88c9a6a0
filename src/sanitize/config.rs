//! The `sanitize:` config section, as operators write it, and its validation into a
//! [`SanitizePolicy`](super::policy::SanitizePolicy) — plain data, held by `Config`.
//!
//! Accepts (every key optional; absent section = 3 MiB cap, every write strictly parsed, no Pod
//! Security, no field rules):
//!
//! ```yaml
//! sanitize:
//!   max_body_bytes: 3145728          # default 3 MiB, the apiserver's own limit
//!   max_depth: 100                   # nesting depth of a body
//!   max_string_bytes: 1572864        # one string, after unescaping
//!   max_number_digits: 40
//!   max_json_patch_ops: 10000
//!   binary_bodies: reject            # or forward-unjudged (CBOR where nothing is judged; protobuf
//!                                    # is decoded and judged, see parse/protobuf.rs)
//!   resources:                       # first match wins; per-resource overrides
//!     - group: ""
//!       resources: ["configmaps"]
//!       max_body_bytes: 1048576
//!       inspect: true                # false: forward the bytes as sent (size cap still applies)
//!       binary_bodies: forward-unjudged
//!   pod_security:
//!     latest_version: v1.32          # what `latest` means: the API server's version (default:
//!                                    # the newest rules the proxy knows, v1.37)
//!     user_namespaces: false         # true only when the API server keeps `hostUsers`
//!                                    # (`UserNamespacesSupport` on): `hostUsers: false` then
//!                                    # relaxes the v1.35 rules; false judges it as absent
//!     defaults: {enforce: privileged}
//!     namespaces:
//!       team-a: {enforce: restricted}
//!       team-b: {enforce: baseline, warn: restricted}
//!     tenants:
//!       acme: {enforce: baseline, enforce_version: v1.30}
//!   field_rules:
//!     - group: ""
//!       resources: ["pods"]
//!       verbs: ["create", "update", "patch"]   # default: all three
//!       tenants: ["*"]                         # only callers with a tenant ("*": any tenant)
//!       deny: ["podSpec.nodeName", "podSpec.hostAliases"]
//!       strip: ["status"]
//! ```
//!
//! Rejects, each with its key path: unknown keys, zero or absurd caps, unknown Pod Security
//! levels or versions, `user_namespaces: true` where `latest_version` is older than v1.35 (no
//! rule it relaxes runs there), unknown verbs, malformed field paths.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    fields::FieldPath,
    parse::Limits,
    policy::{FieldRule, Modes, ResourceRule, Sanitizer},
    pss,
};
use crate::problems::{Problem, Problems};

/// `sanitize:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanitizeConfig {
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub max_depth: Option<usize>,
    #[serde(default)]
    pub max_string_bytes: Option<usize>,
    #[serde(default)]
    pub max_number_digits: Option<usize>,
    #[serde(default)]
    pub max_json_patch_ops: Option<usize>,
    /// Protobuf and CBOR write bodies: `reject` (415, the default) or `forward-unjudged`
    /// (forwarded as sent where no Pod Security level or field rule applies; still 415 where one
    /// does, since they cannot be judged).
    #[serde(default)]
    pub binary_bodies: Option<BinaryBodies>,
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    #[serde(default)]
    pub pod_security: Option<PodSecurityConfig>,
    #[serde(default)]
    pub field_rules: Vec<FieldRuleConfig>,
}

/// `sanitize.resources[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// API group (`""` core, `"*"` any). Default `""`.
    #[serde(default)]
    pub group: String,
    /// Resources, optionally with a subresource (`pods/status`); `"*"` any.
    pub resources: Vec<String>,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub inspect: Option<bool>,
    #[serde(default)]
    pub binary_bodies: Option<BinaryBodies>,
}

/// What to do with CBOR write bodies where nothing judges them (protobuf is decoded and judged
/// where something does, and forwarded as sent elsewhere, whatever this says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryBodies {
    #[default]
    Reject,
    ForwardUnjudged,
}

/// `sanitize.pod_security:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSecurityConfig {
    /// The newest rules `latest` may mean: the API server's minor version (`v1.N`), as
    /// PodSecurity admission caps `latest` at its own version. Absent: the newest rules the
    /// proxy knows.
    #[serde(default)]
    pub latest_version: Option<String>,
    /// Whether the API server runs with user namespaces on (the `UserNamespacesSupport`
    /// feature gate, on by default from 1.33): only then does it keep `spec.hostUsers`, and only
    /// then may `hostUsers: false` relax the v1.35 rules (`runAsNonRoot`, `runAsUser`, baseline
    /// `procMount`). Default false: the API server drops the field when the gate is off and
    /// PodSecurity judges the pod without it, so the proxy does too (fail closed).
    #[serde(default)]
    pub user_namespaces: bool,
    #[serde(default)]
    pub defaults: ModesConfig,
    #[serde(default)]
    pub namespaces: BTreeMap<String, ModesConfig>,
    #[serde(default)]
    pub tenants: BTreeMap<String, ModesConfig>,
}

/// The three modes, spelled as the `pod-security.kubernetes.io/*` namespace labels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    #[serde(default)]
    pub enforce: Option<String>,
    #[serde(default)]
    pub enforce_version: Option<String>,
    #[serde(default)]
    pub warn: Option<String>,
    #[serde(default)]
    pub warn_version: Option<String>,
    #[serde(default)]
    pub audit: Option<String>,
    #[serde(default)]
    pub audit_version: Option<String>,
}

/// `sanitize.field_rules[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRuleConfig {
    /// A label for logs and messages.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub group: String,
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Option<Vec<String>>,
    /// Only callers with one of these tenants (`"*"`: any tenant). Absent: every caller.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub strip: Vec<String>,
}

const MAX_BODY_CEILING: u64 = 64 * 1024 * 1024;

/// Validate `cfg` (at key path `prefix`) into a [`SanitizePolicy`](super::SanitizePolicy).
pub fn build(cfg: &SanitizeConfig, prefix: &str) -> Result<Sanitizer, Vec<Problem>> {
    let mut p = Problems::new();
    let max_body = cap(
        &mut p,
        cfg.max_body_bytes,
        format!("{prefix}.max_body_bytes"),
    );
    let limits = limits(&mut p, cfg, prefix);
    let mut resources = Vec::new();
    for (i, r) in cfg.resources.iter().enumerate() {
        let path = format!("{prefix}.resources[{i}]");
        if r.resources.is_empty() {
            p.err(
                format!("{path}.resources"),
                "empty list",
                "name at least one resource, or \"*\"",
            );
        }
        let max_body = r
            .max_body_bytes
            .map(|v| cap(&mut p, Some(v), format!("{path}.max_body_bytes")));
        resources.push(ResourceRule {
            group: r.group.clone(),
            resources: r.resources.clone(),
            max_body,
            inspect: r.inspect,
            binary_bodies: r.binary_bodies,
        });
    }
    let pod_security = cfg
        .pod_security
        .as_ref()
        .map(|ps| pod_security(&mut p, ps, &format!("{prefix}.pod_security")));
    let field_rules = cfg
        .field_rules
        .iter()
        .enumerate()
        .map(|(i, r)| field_rule(&mut p, r, &format!("{prefix}.field_rules[{i}]")))
        .collect();
    p.finish(Some(Sanitizer {
        max_body,
        binary_bodies: cfg.binary_bodies.unwrap_or_default(),
        limits,
        resources,
        pod_security,
        field_rules,
    }))
}

/// A body-size cap: between 1 byte and 64 MiB.
fn cap(p: &mut Problems, v: Option<u64>, path: String) -> usize {
    let v = v.unwrap_or(Sanitizer::DEFAULT_MAX_BODY as u64);
    if v == 0 || v > MAX_BODY_CEILING {
        p.err(
            path,
            format!("{v} is out of range"),
            "give a byte count between 1 and 67108864 (64 MiB); the apiserver's own limit is 3145728",
        );
    }
    v as usize
}

/// The parser's limits, each within its range.
fn limits(p: &mut Problems, cfg: &SanitizeConfig, prefix: &str) -> Limits {
    let d = Limits::default();
    let mut limit = |v: Option<usize>, def: usize, key: &str, lo: usize, hi: usize| {
        let v = v.unwrap_or(def);
        if !(lo..=hi).contains(&v) {
            p.err(
                format!("{prefix}.{key}"),
                format!("{v} is out of range"),
                format!("give a value between {lo} and {hi} (default {def})"),
            );
        }
        v
    };
    Limits {
        // serde_json's own recursion limit is 128: stay below it so the limit we report is ours.
        max_depth: limit(cfg.max_depth, d.max_depth, "max_depth", 10, 120),
        max_string: limit(
            cfg.max_string_bytes,
            d.max_string,
            "max_string_bytes",
            1024,
            MAX_BODY_CEILING as usize,
        ),
        max_number_digits: limit(
            cfg.max_number_digits,
            d.max_number_digits,
            "max_number_digits",
            20,
            1000,
        ),
        max_json_patch_ops: limit(
            cfg.max_json_patch_ops,
            d.max_json_patch_ops,
            "max_json_patch_ops",
            1,
            100_000,
        ),
    }
}

/// `pod_security:` (at `path`).
fn pod_security(
    p: &mut Problems,
    ps: &PodSecurityConfig,
    path: &str,
) -> super::policy::PodSecurity {
    let mut problem = |at: String, message: String, hint: &str| p.err(at, message, hint);
    let latest = match ps.latest_version.as_deref().map(pss::Version::parse) {
        None => pss::Version::Latest,
        Some(Ok(v @ pss::Version::V1(_))) => v,
        Some(Ok(pss::Version::Latest)) | Some(Err(_)) => {
            problem(
                format!("{path}.latest_version"),
                format!(
                    "{:?} is not a version",
                    ps.latest_version.as_deref().unwrap_or_default()
                ),
                "give the API server's version as v1.N, e.g. v1.32 (what `latest` means there)",
            );
            pss::Version::Latest
        }
    };
    // The relaxation is a v1.35 rule: under an older `latest_version` every policy is held to
    // older rules, so the key would promise something that never happens.
    if ps.user_namespaces && !latest.at_least(35) {
        problem(
            format!("{path}.user_namespaces"),
            format!(
                "has no effect: `hostUsers: false` relaxes Pod Security only from v1.35, and latest_version is {latest}"
            ),
            "remove user_namespaces, or set latest_version to the API server's version if it is v1.35 or later",
        );
    }
    let mut problem = |at: String, message: String, hint: &str| problem(at, message, hint);
    let mut modes = |m: &ModesConfig, at: &str| {
        let mut out = modes(m, at, &mut problem);
        for policy in [&mut out.enforce, &mut out.warn, &mut out.audit]
            .into_iter()
            .flatten()
        {
            policy.cap_latest(latest);
            policy.trust_host_users(ps.user_namespaces);
        }
        out
    };
    let defaults = modes(&ps.defaults, &format!("{path}.defaults"));
    let namespaces = ps
        .namespaces
        .iter()
        .map(|(ns, m)| {
            let at = format!("{path}.namespaces.{ns}");
            (ns.clone(), modes(m, &at))
        })
        .collect();
    let tenants = ps
        .tenants
        .iter()
        .map(|(t, m)| {
            let at = format!("{path}.tenants.{t}");
            (t.clone(), modes(m, &at))
        })
        .collect();
    super::policy::PodSecurity {
        defaults,
        namespaces,
        tenants,
    }
}

/// One `field_rules[]` entry (at `path`).
fn field_rule(p: &mut Problems, r: &FieldRuleConfig, path: &str) -> FieldRule {
    if r.resources.is_empty() {
        p.err(
            format!("{path}.resources"),
            "empty list",
            "name at least one resource, or \"*\"",
        );
    }
    // An empty list would match no request: a rule that silently guards nothing.
    for (key, list) in [("verbs", &r.verbs), ("tenants", &r.tenants)] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            p.err(
                format!("{path}.{key}"),
                "empty list: the rule would apply to no request",
                "leave the key out to apply the rule to every caller and write verb, or name at least one",
            );
        }
    }
    let verbs = r
        .verbs
        .clone()
        .unwrap_or_else(|| vec!["create".to_owned(), "update".to_owned(), "patch".to_owned()]);
    for (j, v) in verbs.iter().enumerate() {
        if !matches!(v.as_str(), "create" | "update" | "patch") {
            p.err(
                format!("{path}.verbs[{j}]"),
                format!("unknown verb {v:?}"),
                "field rules apply to create, update and patch",
            );
        }
    }
    if r.deny.is_empty() && r.strip.is_empty() {
        p.err(
            path,
            "the rule neither denies nor strips anything",
            "add deny: [...] or strip: [...] field paths",
        );
    }
    let mut parse_all = |list: &[String], key: &str| -> Vec<FieldPath> {
        list.iter()
            .enumerate()
            .filter_map(|(j, s)| match FieldPath::parse(s) {
                Ok(fp) => Some(fp),
                Err(why) => {
                    p.err(
                        format!("{path}.{key}[{j}]"),
                        why,
                        "write a dotted path such as spec.nodeName, podSpec.hostAliases or spec.containers[*].image",
                    );
                    None
                }
            })
            .collect()
    };
    let deny = parse_all(&r.deny, "deny");
    let strip = parse_all(&r.strip, "strip");
    FieldRule {
        group: r.group.clone(),
        resources: r.resources.clone(),
        verbs,
        tenants: r.tenants.clone(),
        deny,
        strip,
    }
}

fn modes(m: &ModesConfig, path: &str, problem: &mut dyn FnMut(String, String, &str)) -> Modes {
    let mut one = |level: &Option<String>, version: &Option<String>, key: &str| {
        let level = level.as_deref().and_then(|l| match pss::Level::parse(l) {
            Ok(l) => Some(l),
            Err(e) => {
                problem(
                    format!("{path}.{key}"),
                    e.to_string(),
                    "use privileged, baseline or restricted",
                );
                None
            }
        });
        let version = match version.as_deref() {
            None => pss::Version::Latest,
            Some(v) => pss::Version::parse(v).unwrap_or_else(|e| {
                problem(
                    format!("{path}.{key}_version"),
                    e.to_string(),
                    "use latest or v1.N, e.g. v1.30",
                );
                pss::Version::Latest
            }),
        };
        if level.is_none() && version != pss::Version::Latest {
            problem(
                format!("{path}.{key}_version"),
                "a version without a level".into(),
                &format!("set {key}: too, or remove {key}_version"),
            );
        }
        level.map(|l| pss::Policy::new(l, version))
    };
    Modes {
        enforce: one(&m.enforce, &m.enforce_version, "enforce"),
        warn: one(&m.warn, &m.warn_version, "warn"),
        audit: one(&m.audit, &m.audit_version, "audit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let cfg: SanitizeConfig = match serde_path_to_error::deserialize(v) {
            Ok(c) => c,
            Err(e) => return vec![(e.path().to_string(), e.inner().to_string())],
        };
        match build(&cfg, "sanitize") {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| (p.path, p.message)).collect(),
        }
    }

    #[test]
    fn every_problem_names_its_key_path() {
        let got = problems(
            "max_body_bytes: 0\nmax_depth: 500\npod_security:\n  namespaces:\n    a: {enforce: strict, warn_version: v2}\n    b: {audit: baseline, audit_version: nope}\nfield_rules:\n  - resources: [pods]\n    verbs: [get]\n    deny: [\"a..b\"]\n  - resources: []\n",
        );
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "sanitize.max_body_bytes",
            "sanitize.max_depth",
            "sanitize.pod_security.namespaces.a.enforce",
            "sanitize.pod_security.namespaces.a.warn_version",
            "sanitize.pod_security.namespaces.b.audit_version",
            "sanitize.field_rules[0].verbs[0]",
            "sanitize.field_rules[0].deny[0]",
            "sanitize.field_rules[1].resources",
            "sanitize.field_rules[1]",
        ] {
            assert!(paths.contains(&want), "{want} missing from {got:?}");
        }
        // Unknown keys and wrong enum values stop at their path (serde).
        let got = problems("pod_security:\n  namespaces:\n    a: {enforse: restricted}\n");
        assert_eq!(got[0].0, "pod_security.namespaces.a.enforse");
        assert!(got[0].1.contains("enforse"), "{got:?}");
        let got = problems("binary_bodies: maybe\n");
        assert_eq!(got[0].0, "binary_bodies");
        assert!(problems(
            "pod_security: {defaults: {enforce: restricted, enforce_version: v1.30}}\n"
        )
        .is_empty());
    }

    /// `latest_version` holds `latest` (and newer pins) to the API server's rules, as
    /// PodSecurity admission there would, each still named as written; it must be a version.
    #[test]
    fn latest_version_caps_latest_and_newer_pins() {
        let yaml = "pod_security:\n  latest_version: v1.32\n  defaults: {enforce: restricted, warn: baseline, warn_version: v1.35, audit: restricted, audit_version: v1.30}\n";
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let cfg: SanitizeConfig = serde_path_to_error::deserialize(v).unwrap();
        let s = build(&cfg, "sanitize").unwrap();
        let m = s.modes_for("any", None);
        let versions: Vec<pss::Version> = [m.enforce, m.warn, m.audit]
            .into_iter()
            .map(|p| p.first().unwrap().rules())
            .collect();
        assert_eq!(
            versions,
            [
                pss::Version::V1(32),
                pss::Version::V1(32),
                pss::Version::V1(30)
            ]
        );
        let named: Vec<String> = [m.enforce, m.warn, m.audit]
            .into_iter()
            .map(|p| p.first().unwrap().version.to_string())
            .collect();
        assert_eq!(named, ["latest", "v1.35", "v1.30"]);
        let got = problems("pod_security: {latest_version: latest}\n");
        assert_eq!(got[0].0, "sanitize.pod_security.latest_version", "{got:?}");
    }

    /// `user_namespaces` (default false) is what lets `hostUsers: false` relax the v1.35 rules;
    /// it reaches every mode of every entry, and is refused where no such rule can run.
    #[test]
    fn user_namespaces_defaults_off_and_reaches_every_policy() {
        let build_yaml = |yaml: &str| {
            let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
            let cfg: SanitizeConfig = serde_path_to_error::deserialize(v).unwrap();
            build(&cfg, "sanitize").unwrap()
        };
        let trusted = |s: &Sanitizer, ns: &str, tenant: Option<&str>| -> Vec<bool> {
            let m = s.modes_for(ns, tenant);
            [m.enforce, m.warn, m.audit]
                .iter()
                .flat_map(|p| p.iter())
                .map(|p| p.user_namespaces())
                .collect()
        };
        let body = "  defaults: {enforce: restricted, warn: restricted, audit: baseline}\n  namespaces: {a: {enforce: baseline}}\n  tenants: {t: {enforce: restricted}}\n";
        let off = build_yaml(&format!("pod_security:\n{body}"));
        assert_eq!(trusted(&off, "x", None), [false, false, false]);
        let on = build_yaml(&format!("pod_security:\n  user_namespaces: true\n{body}"));
        assert_eq!(trusted(&on, "x", None), [true, true, true]);
        // The namespace's and the tenant's enforce policies, the defaults' warn and audit.
        assert_eq!(trusted(&on, "a", Some("t")), [true, true, true, true]);
        assert!(
            problems("pod_security: {user_namespaces: true, latest_version: v1.35}\n").is_empty()
        );
        let got = problems("pod_security: {user_namespaces: true, latest_version: v1.34}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "sanitize.pod_security.user_namespaces", "{got:?}");
        assert!(got[0].1.contains("v1.34"), "{got:?}");
        let got = problems("pod_security: {user_namespaces: maybe}\n");
        assert_eq!(got[0].0, "pod_security.user_namespaces", "{got:?}");
    }
}
