//! The small matchers shared by grants, tenants and token scopes: namespace globs, resource
//! patterns (`pods`, `pods/exec`, `pods/*`, `*/scale`, `*`), non-resource URL patterns and verb
//! sets, plus the table of built-in cluster-scoped resources.
//!
//! Everything here is pure and allocation-free at match time. Grants compile their patterns once
//! (at config build); token scopes match the same grammar straight from their strings.

/// Every verb a request through the proxy can carry, resource and non-resource alike. The index
/// is the verb's bit in a [`VerbSet`].
const VERBS: [&str; 14] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "head",
    "post",
    "put",
    "options",
    "impersonate",
];

/// Verbs a resource rule may name (besides `*`): the verbs `RequestInfo` produces, and
/// `impersonate` (on `users`, `groups`, `uids`, `userextras/<key>`, `serviceaccounts`: what a
/// client's `Impersonate-*` headers are checked against, as RBAC does).
pub const RESOURCE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "impersonate",
];

/// Verbs a non-resource rule may name (besides `*`): lower-cased HTTP methods.
pub const NON_RESOURCE_VERBS: &[&str] =
    &["get", "head", "post", "put", "patch", "delete", "options"];

/// The bit of a request verb; 0 for a verb outside [`VERBS`] (e.g. the empty verb of an
/// `OPTIONS` on a resource), which only `*` matches.
pub fn verb_bit(verb: &str) -> u16 {
    VERBS
        .iter()
        .position(|v| *v == verb)
        .map_or(0, |i| 1u16 << i)
}

/// A compiled `verbs:` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbSet {
    all: bool,
    bits: u16,
}

impl VerbSet {
    /// Compile a validated list (`*` = every verb, including ones we do not know).
    pub fn new<S: AsRef<str>>(verbs: &[S]) -> Self {
        let mut set = VerbSet {
            all: false,
            bits: 0,
        };
        for v in verbs {
            if v.as_ref() == "*" {
                set.all = true;
            }
            set.bits |= verb_bit(v.as_ref());
        }
        set
    }

    /// The verbs as written in RBAC rules: `["*"]`, or each known verb in the set.
    pub fn names(self) -> Vec<String> {
        if self.all {
            return vec!["*".into()];
        }
        VERBS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.bits & (1u16 << i) != 0)
            .map(|(_, v)| (*v).to_owned())
            .collect()
    }

    /// Whether the set holds the verb whose bit is `bit` (from [`verb_bit`]).
    #[inline]
    pub fn contains(self, bit: u16) -> bool {
        self.all || (bit != 0 && self.bits & bit != 0)
    }
}

/// A name or a glob: `*` stands for any run of characters (possibly empty). No other
/// metacharacters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    Exact(String),
    /// `team-a-*`
    Prefix(String),
    /// Anything else with a `*`, kept as written.
    General(String),
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        match pattern.find('*') {
            None => Glob::Exact(pattern.to_owned()),
            Some(i) if i + 1 == pattern.len() => {
                Glob::Prefix(pattern.get(..i).unwrap_or_default().to_owned())
            }
            Some(_) => Glob::General(pattern.to_owned()),
        }
    }

    #[inline]
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Exact(e) => e == s,
            Glob::Prefix(p) => s.starts_with(p.as_str()),
            Glob::General(g) => glob_match(g, s),
        }
    }
}

/// Whether some string matches both namespace patterns (`*`: any run of characters,
/// possibly empty): a search over pairs of positions, where a `*` may stay on while the other
/// pattern's character passes, or be left behind.
pub fn globs_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        let Some(slot) = seen.get_mut(i * (b.len() + 1) + j) else {
            continue;
        };
        if std::mem::replace(slot, true) {
            continue;
        }
        let (x, y) = (a.get(i), b.get(j));
        if x.is_none() && y.is_none() {
            return true;
        }
        if x == Some(&b'*') {
            todo.push((i + 1, j)); // `*` matches nothing more
            if y.is_some() {
                todo.push((i, j + 1)); // `*` takes b's next character (or b's `*` ends)
            }
        }
        if y == Some(&b'*') {
            todo.push((i, j + 1));
            if x.is_some() {
                todo.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (x, y) {
            if x == y && *x != b'*' {
                todo.push((i + 1, j + 1));
            }
        }
    }
    false
}

/// Match `s` against a pattern where `*` is any run of characters. Linear-time greedy
/// backtracking (the classic two-pointer wildcard algorithm), byte-wise.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(c) if s.get(si) == Some(c) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|c| *c == b'*')
}

/// A non-resource URL pattern: an exact path, `/prefix*` (every path starting with `/prefix`),
/// or `*` (every path). This is RBAC's `nonResourceURLs` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPattern {
    Exact(String),
    Prefix(String),
}

impl UrlPattern {
    pub fn new(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => UrlPattern::Prefix(prefix.to_owned()),
            None => UrlPattern::Exact(pattern.to_owned()),
        }
    }

    /// The pattern as written (`/healthz`, `/api/*`, `*`).
    pub fn as_written(&self) -> String {
        match self {
            UrlPattern::Exact(e) => e.clone(),
            UrlPattern::Prefix(p) => format!("{p}*"),
        }
    }

    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        match self {
            UrlPattern::Exact(e) => e == path,
            UrlPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// [`UrlPattern`] matching straight from the string (token scopes).
pub fn url_match(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// What a resource pattern says about the subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sub {
    /// `pods`: the resource itself, no subresource.
    None,
    /// `pods/*`: any subresource (not the resource itself).
    Any,
    /// `pods/exec`.
    Exact(String),
}

/// One entry of `resources:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcePattern {
    /// `*`: every resource and every subresource.
    All,
    /// `pods`, `pods/exec`, `pods/*`.
    Named { resource: String, sub: Sub },
    /// `*/scale`, `*/*`: that subresource (any subresource) of every resource.
    AnyResource { sub: Sub },
}

impl ResourcePattern {
    /// Compile a validated entry.
    pub fn new(pattern: &str) -> Self {
        if pattern == "*" {
            return ResourcePattern::All;
        }
        let (resource, sub) = match pattern.split_once('/') {
            None => (pattern, Sub::None),
            Some((r, "*")) => (r, Sub::Any),
            Some((r, s)) => (r, Sub::Exact(s.to_owned())),
        };
        if resource == "*" {
            ResourcePattern::AnyResource { sub }
        } else {
            ResourcePattern::Named {
                resource: resource.to_owned(),
                sub,
            }
        }
    }

    /// The pattern as written in RBAC rules (`*`, `pods`, `pods/exec`, `*/scale`).
    pub fn as_written(&self) -> String {
        let sub = |s: &Sub| match s {
            Sub::None => String::new(),
            Sub::Any => "/*".into(),
            Sub::Exact(x) => format!("/{x}"),
        };
        match self {
            ResourcePattern::All => "*".into(),
            ResourcePattern::Named { resource, sub: s } => format!("{resource}{}", sub(s)),
            ResourcePattern::AnyResource { sub: s } => format!("*{}", sub(s)),
        }
    }

    #[inline]
    pub fn matches(&self, resource: &str, subresource: &str) -> bool {
        match self {
            ResourcePattern::All => true,
            ResourcePattern::Named { resource: r, sub } => {
                r == resource && sub_matches(sub, subresource)
            }
            ResourcePattern::AnyResource { sub } => {
                !subresource.is_empty() && sub_matches(sub, subresource)
            }
        }
    }
}

#[inline]
fn sub_matches(sub: &Sub, subresource: &str) -> bool {
    match sub {
        Sub::None => subresource.is_empty(),
        Sub::Any => !subresource.is_empty(),
        Sub::Exact(s) => s == subresource,
    }
}

/// [`ResourcePattern`] matching straight from the string (token scopes).
pub fn resource_match(pattern: &str, resource: &str, subresource: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (r, s) = pattern.split_once('/').unwrap_or((pattern, ""));
    let sub_ok = match s {
        "" => subresource.is_empty(),
        "*" => !subresource.is_empty(),
        s => s == subresource,
    };
    if r == "*" {
        // `*` alone was handled above, so this is `*/x` or `*/*`.
        !subresource.is_empty() && sub_ok
    } else {
        r == resource && sub_ok
    }
}

/// Why a pattern is not acceptable, for config validation.
pub fn check_resource_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    // An extra key is the "subresource" of `userextras` (RBAC's grammar), and keys are
    // `domain/path`: everything after the first '/' is the key.
    if let Some(key) = p.strip_prefix("userextras/") {
        return if key == "*"
            || (!key.is_empty() && !key.contains('*') && key.bytes().all(|b| b.is_ascii_graphic()))
        {
            Ok(())
        } else {
            Err(format!(
                "{p:?}: the extra key after userextras/ must be a key (example.com/team) or '*'"
            ))
        };
    }
    let mut parts = p.split('/');
    let resource = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(format!("{p:?} has more than one '/'"));
    }
    check_resource_segment(p, resource)?;
    if let Some(sub) = sub {
        check_resource_segment(p, sub)?;
    }
    Ok(())
}

fn check_resource_segment(whole: &str, seg: &str) -> Result<(), String> {
    if seg == "*" {
        return Ok(());
    }
    if seg.is_empty() {
        return Err(format!("{whole:?} has an empty resource or subresource"));
    }
    if seg.contains('*') {
        return Err(format!(
            "{whole:?}: '*' must stand alone for the whole resource or subresource"
        ));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "{whole:?} is not a resource name (lower-case plural, e.g. pods, deployments)"
        ));
    }
    Ok(())
}

/// Why a namespace name or glob is not acceptable. `*` alone is checked by the caller.
pub fn check_namespace_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty namespace".into());
    }
    if p.contains("**") {
        return Err(format!("{p:?}: write a single '*'"));
    }
    let literal_len = p.bytes().filter(|b| *b != b'*').count();
    if literal_len > 63 {
        return Err(format!("{p:?} is longer than a namespace name can be (63)"));
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*')
    {
        return Err(format!(
            "{p:?} is not a namespace name or pattern (lower-case letters, digits, '-', and '*')"
        ));
    }
    Ok(())
}

/// Why a non-resource URL pattern is not acceptable.
pub fn check_url_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/' (or be '*')"));
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if body.contains('*') {
        return Err(format!("{p:?}: '*' is only allowed as the last character"));
    }
    if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{p:?} contains whitespace or a control character"));
    }
    Ok(())
}

/// Built-in cluster-scoped resources (group, resource) of Kubernetes 1.3x. A request with no
/// namespace to anything *not* listed here (nor in `cluster_scoped_resources`) is treated as a
/// cluster-wide request on a namespaced resource — the fail-closed reading.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("", "componentstatuses"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
    ),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    // Impersonation targets: not stored, but RBAC (and our grants) address them at the
    // cluster scope with verb `impersonate` (serviceaccounts are namespaced, as in RBAC).
    ("", "users"),
    ("", "groups"),
    ("authentication.k8s.io", "uids"),
    ("authentication.k8s.io", "userextras"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("certificates.k8s.io", "clustertrustbundles"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
    ),
    ("internal.apiserver.k8s.io", "storageversions"),
    ("metrics.k8s.io", "nodes"),
    ("networking.k8s.io", "ingressclasses"),
    ("networking.k8s.io", "ipaddresses"),
    ("networking.k8s.io", "servicecidrs"),
    ("node.k8s.io", "runtimeclasses"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("resource.k8s.io", "deviceclasses"),
    ("resource.k8s.io", "resourceslices"),
    ("resource.k8s.io", "devicetaintrules"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"),
    ("storage.k8s.io", "volumeattributesclasses"),
    ("storagemigration.k8s.io", "storageversionmigrations"),
];

/// Whether `(group, resource)` is a built-in cluster-scoped resource.
pub fn builtin_cluster_scoped(group: &str, resource: &str) -> bool {
    CLUSTER_SCOPED
        .iter()
        .any(|(g, r)| *g == group && *r == resource)
}

/// Built-in namespaced resources (group, resource) of Kubernetes 1.3x: never cluster-scoped,
/// so `cluster_scoped_resources` may not name them (a grant rule without namespaces would then
/// cover them in every namespace).
const NAMESPACED: &[(&str, &str)] = &[
    ("", "bindings"),
    ("", "configmaps"),
    ("", "endpoints"),
    ("", "events"),
    ("", "limitranges"),
    ("", "persistentvolumeclaims"),
    ("", "pods"),
    ("", "podtemplates"),
    ("", "replicationcontrollers"),
    ("", "resourcequotas"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "controllerrevisions"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
    ("coordination.k8s.io", "leasecandidates"),
    ("coordination.k8s.io", "leases"),
    ("discovery.k8s.io", "endpointslices"),
    ("events.k8s.io", "events"),
    ("extensions", "daemonsets"),
    ("extensions", "deployments"),
    ("extensions", "ingresses"),
    ("extensions", "networkpolicies"),
    ("extensions", "replicasets"),
    ("metrics.k8s.io", "pods"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "roles"),
    ("resource.k8s.io", "podschedulingcontexts"),
    ("resource.k8s.io", "resourceclaims"),
    ("resource.k8s.io", "resourceclaimtemplates"),
    ("storage.k8s.io", "csistoragecapacities"),
];

/// Whether `(group, resource)` is a built-in namespaced resource.
pub fn builtin_namespaced(group: &str, resource: &str) -> bool {
    NAMESPACED
        .iter()
        .any(|(g, r)| *g == group && *r == resource)
}

/// Every built-in cluster-scoped resource name, whatever its group.
pub fn builtin_cluster_scoped_in_any_group(resource: &str) -> bool {
    CLUSTER_SCOPED.iter().any(|(_, r)| *r == resource)
}

#[cfg(test)]
mod tests {

    #[test]
    fn namespace_patterns_overlap_when_some_name_matches_both() {
        for (a, b) in [
            ("team-*", "team-b"),
            ("team-*", "*-b"),
            ("team-*", "te*"),
            ("*-prod", "shop-*"),
            ("a*b*c", "*bc"),
            ("x", "x"),
            ("*", "anything"),
        ] {
            assert!(globs_overlap(a, b), "{a} {b}");
            assert!(globs_overlap(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("team-*", "ops-*"),
            ("*-prod", "*-dev"),
            ("team-a", "team-b"),
            ("a*c", "b*"),
            ("team-a*", "team-b*"),
        ] {
            assert!(!globs_overlap(a, b), "{a} {b}");
            assert!(!globs_overlap(b, a), "{b} {a}");
        }
    }

    use super::*;

    #[test]
    fn globs() {
        assert!(Glob::new("team-a").matches("team-a"));
        assert!(!Glob::new("team-a").matches("team-ab"));
        assert!(Glob::new("team-a-*").matches("team-a-dev"));
        assert!(!Glob::new("team-a-*").matches("team-b-dev"));
        assert!(Glob::new("*-dev").matches("team-a-dev"));
        assert!(Glob::new("t*-*-dev").matches("team-a-x-dev"));
        assert!(!Glob::new("t*-*-dev").matches("team-dev"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abbbc"));
        assert!(!glob_match("a*b*c", "abbb"));
    }

    #[test]
    fn resources_follow_rbac_plus_sub_wildcards() {
        let m = |p: &str, r: &str, s: &str| {
            let compiled = ResourcePattern::new(p).matches(r, s);
            assert_eq!(compiled, resource_match(p, r, s), "{p} {r}/{s}");
            compiled
        };
        assert!(m("*", "pods", ""));
        assert!(m("*", "pods", "exec"));
        assert!(m("pods", "pods", ""));
        assert!(!m("pods", "pods", "exec"));
        assert!(m("pods/exec", "pods", "exec"));
        assert!(!m("pods/exec", "pods", ""));
        assert!(!m("pods/exec", "pods", "log"));
        assert!(m("pods/*", "pods", "log"));
        assert!(!m("pods/*", "pods", ""));
        assert!(!m("pods/*", "services", "proxy"));
        assert!(m("*/scale", "deployments", "scale"));
        assert!(!m("*/scale", "deployments", ""));
        assert!(!m("*/scale", "deployments", "status"));
        assert!(m("*/*", "deployments", "status"));
        assert!(!m("*/*", "deployments", ""));
    }

    #[test]
    fn verbs() {
        let s = VerbSet::new(&["get", "list"]);
        assert!(s.contains(verb_bit("get")));
        assert!(!s.contains(verb_bit("watch")));
        assert!(!s.contains(verb_bit("")));
        assert!(VerbSet::new(&["*"]).contains(verb_bit("")));
    }

    #[test]
    fn urls() {
        assert!(UrlPattern::new("/healthz").matches("/healthz"));
        assert!(!UrlPattern::new("/healthz").matches("/healthz/etcd"));
        assert!(UrlPattern::new("/healthz*").matches("/healthz/etcd"));
        assert!(UrlPattern::new("/api/*").matches("/api/v1"));
        assert!(!UrlPattern::new("/api/*").matches("/api"));
        assert!(UrlPattern::new("*").matches("/anything"));
        assert!(url_match("/openapi/*", "/openapi/v3"));
    }

    #[test]
    fn pattern_checks() {
        assert!(check_resource_pattern("pods/exec").is_ok());
        assert!(check_resource_pattern("*/scale").is_ok());
        assert!(check_resource_pattern("Pods").is_err());
        assert!(check_resource_pattern("pods/exec/x").is_err());
        assert!(check_resource_pattern("po*").is_err());
        assert!(check_resource_pattern("pods/").is_err());
        assert!(check_namespace_pattern("team-a-*").is_ok());
        assert!(check_namespace_pattern("Team").is_err());
        assert!(check_namespace_pattern("a**").is_err());
        assert!(check_url_pattern("/metrics").is_ok());
        assert!(check_url_pattern("/a*b").is_err());
        assert!(check_url_pattern("metrics").is_err());
    }
}
