//! Pod Security Standards (PSS) checker: a pure, allocation-light port of the checks of
//! `k8s.io/pod-security-admission` (`policy/check_*.go`) over `serde_json::Value`.
//!
//! * [`locate`] finds every pod spec (and the pod metadata beside it) in an object of each
//!   pod-bearing kind, with the field path of the spec from the object root.
//! * [`checks`] evaluates one pod spec against a [`Policy`] (level + pinned version) and returns
//!   one [`Violation`] per offending field, naming the apiserver check ID, the full field path
//!   and a message in PodSecurity's wording (`reason (detail)`).
//! * [`check_object`] = locate + check for every pod spec in the object.
//! * [`forbidden_detail`] words a set of violations as PodSecurity's messages do.
//!
//! The checker is deliberately conservative where the apiserver would reject a malformed value
//! anyway: a field that must be `false`/unset is a violation when it holds anything other than
//! `false` or `null`; a field that must hold one of a set of strings is a violation when it
//! holds anything else (including a non-string).

pub mod checks;
pub mod locate;
pub mod versions;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod version_tests;

use std::fmt;

use serde_json::Value;

pub use checks::check;
pub use locate::{pod_specs, PodBearing, PodSpecRef};

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Unrestricted: no checks.
    Privileged,
    /// Prevents known privilege escalations (reference §8.1).
    Baseline,
    /// Baseline plus hardening best practice (reference §8.2).
    Restricted,
}

impl Level {
    /// Parses the namespace-label spelling (`privileged`, `baseline`, `restricted`).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "privileged" => Ok(Self::Privileged),
            "baseline" => Ok(Self::Baseline),
            "restricted" => Ok(Self::Restricted),
            other => Err(ParseError::Level(other.to_owned())),
        }
    }

    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kubernetes minor version whose PSS rules apply (`latest` or `v1.<minor>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// The newest rules this module knows ([`versions::LATEST_MINOR`]).
    Latest,
    /// `v1.<minor>`; a minor newer than [`versions::LATEST_MINOR`] evaluates as `latest` does.
    V1(u64),
}

impl Version {
    /// The minor version `latest` rules correspond to (PodSecurity's `maxVersion`).
    pub const LATEST_MINOR: u64 = versions::LATEST_MINOR;

    /// Parses a version as PodSecurity parses its `*-version` namespace labels
    /// (`api/helpers.go` `ParseVersion`): `latest`, or `v1.N` matching
    /// `^v1\.([0-9]|[1-9][0-9]*)$` with N within Go's `int` (`strconv.Atoi`). Anything else
    /// (`1.25`, `v1.05`, `v2.0`, `v1.25.3`) is refused, as the API server refuses such a label.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s == "latest" {
            return Ok(Self::Latest);
        }
        let bad = || ParseError::Version(s.to_owned());
        let minor = s.strip_prefix("v1.").ok_or_else(bad)?;
        let digits_only = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(bad());
        }
        match minor.parse::<i64>() {
            Ok(n) => u64::try_from(n).map(Self::V1).map_err(|_| bad()),
            Err(_) => Err(bad()),
        }
    }

    /// True when these rules are at least `1.<minor>`.
    pub fn at_least(self, minor: u64) -> bool {
        versions::effective_minor(self) >= minor
    }
}

/// `level:version`, as PodSecurity names a policy (`restricted:latest`, `baseline:v1.18`): the
/// written version, not the one a `latest_version` cap runs.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::V1(m) => write!(f, "v1.{m}"),
        }
    }
}

/// A level/version pair string that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not `privileged`, `baseline` or `restricted`.
    #[error("unknown Pod Security level {0:?} (expected privileged, baseline or restricted)")]
    Level(String),
    /// Not `latest` or `v1.N`.
    #[error("invalid Pod Security version {0:?} (must be \"latest\" or \"v1.x\")")]
    Version(String),
}

/// What to enforce: a level at a pinned version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// The level.
    pub level: Level,
    /// The version as written (what refusals and audit annotations name).
    pub version: Version,
    /// The newest rules to apply (`sanitize.pod_security.latest_version`): `None` for the
    /// proxy's newest.
    cap: Option<u64>,
    /// Whether the API server keeps `spec.hostUsers` (`sanitize.pod_security.user_namespaces`):
    /// only then may `hostUsers: false` relax the v1.35 rules. Off by default, failing closed:
    /// with the `UserNamespacesSupport` gate off the API server drops the field before
    /// PodSecurity admission sees the pod (`pkg/api/pod/util.go` `dropDisabledFields`), which
    /// then runs as root in the host user namespace.
    user_namespaces: bool,
}

impl Policy {
    /// A policy at `level`, `version`.
    pub fn new(level: Level, version: Version) -> Self {
        Self {
            level,
            version,
            cap: None,
            user_namespaces: false,
        }
    }

    /// A policy at `level` with `latest` rules.
    pub fn latest(level: Level) -> Self {
        Self::new(level, Version::Latest)
    }

    /// Hold the rules to those of `newest` (the API server's version, `latest` for no cap):
    /// `latest`, and any pinned version after it, evaluate as `newest` — as PodSecurity
    /// admission caps both at its own version. The policy keeps its name (`restricted:latest`),
    /// as PodSecurity's messages name the namespace label's version, not the rules it ran.
    pub fn cap_latest(&mut self, newest: Version) {
        if let Version::V1(n) = newest {
            self.cap = Some(n);
        }
    }

    /// Trust `spec.hostUsers: false` (the cluster runs with user namespaces on): the v1.35
    /// revisions of `procMount`, `runAsNonRoot` and `runAsUser` then exempt such pods, as
    /// PodSecurity does when the field reaches it. Off, the pod is judged as if `hostUsers`
    /// were absent.
    pub fn trust_host_users(&mut self, on: bool) {
        self.user_namespaces = on;
    }

    /// Whether `spec.hostUsers: false` is trusted ([`Policy::trust_host_users`]).
    pub fn user_namespaces(self) -> bool {
        self.user_namespaces
    }

    /// Whether the API server this policy stands for copies the legacy seccomp annotations
    /// into unset `seccompProfile` fields of a new pod before PodSecurity admission sees it:
    /// API servers 1.19 to 1.26 (`applySeccompVersionSkew`, called from the pod strategy's
    /// `PrepareForCreate` in `pkg/registry/core/pod/strategy.go`; removed in 1.27 by
    /// kubernetes PR #114947). Known only from `latest_version`: without it the proxy's own
    /// newest rules, and no copy, are assumed.
    pub fn api_server_copies_seccomp_annotations(self) -> bool {
        matches!(self.cap, Some(n) if (19..27).contains(&n))
    }

    /// Whether that API server also copies set `seccompProfile` fields into unset legacy
    /// annotations (`Unconfined` → `unconfined`): 1.19 to 1.24, the same function (the
    /// field-to-annotation half removed in 1.25 by kubernetes PR #109819, per its release
    /// note). Rules before v1.19 read only the annotations, so there a field `Unconfined` is
    /// refused as the annotation it becomes (review).
    pub fn api_server_copies_seccomp_fields(self) -> bool {
        matches!(self.cap, Some(n) if (19..25).contains(&n))
    }

    /// The version whose rules apply: the written one, held to the cap.
    pub fn rules(self) -> Version {
        match (self.version, self.cap) {
            (v, None) => v,
            (Version::Latest, Some(n)) => Version::V1(n),
            (Version::V1(m), Some(n)) => Version::V1(m.min(n)),
        }
    }
}

/// One offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The apiserver check ID, e.g. `privileged`, `hostPathVolumes`, `seccompProfile_restricted`.
    pub check: &'static str,
    /// Full field path from the object root, e.g.
    /// `spec.template.spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// PodSecurity-style `reason (detail)`, e.g.
    /// `privileged (container "nginx" must not set securityContext.privileged=true)`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The first pod spec of `object` (of the resource `group`/`resource`) holding more than `max`
/// containers, init containers and ephemeral containers together: its containers' field path
/// and the count. `None` for objects that are not pod-bearing.
pub fn oversized(
    group: &str,
    resource: &str,
    object: &Value,
    max: usize,
) -> Option<(String, usize)> {
    let kind = PodBearing::from_group_resource(group, resource)?;
    pod_specs(kind, object).into_iter().find_map(|pod| {
        let n = checks::container_count(pod.spec);
        (n > max).then(|| (format!("{}.containers", pod.path_prefix), n))
    })
}

/// Every violation of `policy` in every pod spec of `object`, an object of the resource
/// `group`/`resource` (as the proxy classifies the request; `resource` may carry a
/// subresource, e.g. `pods/ephemeralcontainers`). Objects that are not pod-bearing (or
/// subresources PodSecurity does not evaluate) yield no violations.
pub fn check_object(
    policy: &Policy,
    group: &str,
    resource: &str,
    object: &Value,
) -> Vec<Violation> {
    if policy.level == Level::Privileged {
        return Vec::new();
    }
    let Some(kind) = PodBearing::from_group_resource(group, resource) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pod in pod_specs(kind, object) {
        checks::check_into(policy, &pod, &mut out);
    }
    out
}

/// A check's place in PodSecurity's order: baseline checks first, then restricted ones, each
/// group sorted by ID (`policy/registry.go` `populate`), which [`versions::REGISTRY`] follows.
fn check_order(id: &str) -> usize {
    versions::REGISTRY
        .iter()
        .position(|c| c.id == id)
        .unwrap_or(usize::MAX)
}

/// PodSecurity's `AggregateCheckResult.ForbiddenDetail` for `violations`: one `reason
/// (details)` per failed check, in PodSecurity's check order, separated by `, `. A check's
/// details are its fields' details joined by `, ` in container order — PodSecurity's exact
/// text where one field fails a check; where several do, PodSecurity words them as one
/// (`containers "a", "b" must …`) and ours lists each.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    let mut by_check: Vec<(&'static str, &str, Vec<&str>)> = Vec::new();
    // Details already listed, per check: a set, so a pod of thousands of containers is not
    // compared detail by detail (quadratic).
    let mut listed: std::collections::HashSet<(usize, &str)> = std::collections::HashSet::new();
    for v in violations {
        let (reason, detail) = match v.message.split_once(" (") {
            Some((r, d)) => (r, d.strip_suffix(')').unwrap_or(d)),
            None => (v.message.as_str(), ""),
        };
        let at = match by_check
            .iter()
            .position(|(c, r, _)| *c == v.check && *r == reason)
        {
            Some(i) => i,
            None => {
                by_check.push((v.check, reason, Vec::new()));
                by_check.len() - 1
            }
        };
        if !detail.is_empty() && listed.insert((at, detail)) {
            by_check[at].2.push(detail);
        }
    }
    by_check.sort_by_key(|(c, _, _)| (check_order(c), *c));
    let parts: Vec<String> = by_check
        .into_iter()
        .map(|(_, reason, details)| {
            if details.is_empty() {
                reason.to_owned()
            } else {
                format!("{reason} ({})", details.join(", "))
            }
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    fn v(check: &'static str, field: &str, message: &str) -> Violation {
        Violation {
            check,
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn violations_are_worded_as_pod_security_s_forbidden_detail() {
        let found = [
            v("hostNamespaces", "spec.hostNetwork", "host namespaces (hostNetwork=true)"),
            v("allowPrivilegeEscalation", "spec.containers[0]", "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"),
            v("privileged", "spec.containers[0]", "privileged (container \"c\" must not set securityContext.privileged=true)"),
            v("hostNamespaces", "spec.hostPID", "host namespaces (hostPID=true)"),
            v("restrictedVolumes", "spec.volumes[0]", "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"),
            v("capabilities_restricted", "spec.containers[0]", "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])"),
        ];
        // Baseline checks first, then restricted, each sorted by ID; one entry per check.
        assert_eq!(
            forbidden_detail(&found),
            "host namespaces (hostNetwork=true, hostPID=true), privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"
        );
    }
}
