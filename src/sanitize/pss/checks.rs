//! The checks of reference §8.1 (baseline) and §8.2 (restricted), one [`Violation`] per
//! offending field.
//!
//! Parts: `checks/baseline.rs` and `checks/restricted.rs` hold the checks of each level; this
//! file decides which run, in which order, and the helpers they share.
//!
//! Which checks run, and which revision of each, comes from [`super::versions`] (PodSecurity's
//! registry: each check's `MinimumVersion`s and `OverrideCheckIDs`). At the restricted level a
//! restricted check replaces the baseline check it overrides, as upstream: `restrictedVolumes`
//! replaces `hostPathVolumes`, `capabilities_restricted` (from 1.22) `capabilities_baseline`,
//! `seccompProfile_restricted` (from 1.19) `seccompProfile_baseline`, and
//! `procMount_restricted` (from 1.35) `procMount`. Revisions that change a check's rule:
//! * seccompProfile_baseline: the alpha `seccomp.security.alpha.kubernetes.io/*` annotations
//!   before 1.19, the `seccompProfile.type` fields from 1.19 — and, where `latest_version` says
//!   the API server is 1.19 to 1.26, the annotations as the fields that server copies them into
//!   ([`Policy::api_server_copies_seccomp_annotations`]): an annotation beside an unset field
//!   is judged as that field would be (`unconfined` as `Unconfined`; for restricted, any value
//!   that would not become `RuntimeDefault` / `Localhost`). A value that would become an allowed
//!   profile is not counted as setting one (stricter than that API server, as before);
//! * seLinuxOptions: `container_engine_t` allowed from 1.31;
//! * sysctls: the safe set grows at 1.27, 1.29, 1.32 and 1.37;
//! * allowPrivilegeEscalation from 1.8; capabilities_restricted from 1.22; runAsUser from 1.23;
//!   hostProbesAndHostLifecycle from 1.34;
//! * Windows pods (`spec.os.name: windows`) exempt from allowPrivilegeEscalation,
//!   seccompProfile_restricted and capabilities_restricted from their 1.25 revisions;
//! * 1.35 revisions: procMount (baseline) allows any value when `spec.hostUsers: false`,
//!   runAsNonRoot and runAsUser are not checked when `spec.hostUsers: false` — only where the
//!   policy trusts `hostUsers` ([`Policy::user_namespaces`], config
//!   `sanitize.pod_security.user_namespaces`). Otherwise the pod is judged as if `hostUsers`
//!   were absent: an API server with the `UserNamespacesSupport` gate off drops the field
//!   before PodSecurity admission (`pkg/api/pod/util.go` `dropDisabledFields`), so the pod
//!   would run as root in the host user namespace.

use serde_json::Value;

use super::{versions, Level, PodSpecRef, Policy, Violation};

mod baseline;
mod restricted;

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// How many containers of every kind `spec` (a pod spec) lists.
pub fn container_count(spec: &Value) -> usize {
    CONTAINER_LISTS
        .iter()
        .filter_map(|k| spec.get(k)?.as_array().map(Vec::len))
        .sum()
}

/// Every violation of `policy` in `pod`, in check order (baseline checks first), containers in
/// the order initContainers, containers, ephemeralContainers.
pub fn check(policy: &Policy, pod: &PodSpecRef<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    check_into(policy, pod, &mut out);
    out
}

/// [`check`], appending to `out`.
pub(crate) fn check_into(policy: &Policy, pod: &PodSpecRef<'_>, out: &mut Vec<Violation>) {
    if policy.level == Level::Privileged {
        return;
    }
    // Walk the three container lists once; every check iterates this slice.
    let ctrs: Vec<Ctr<'_>> = containers(pod.spec).collect();
    let mut ck = Ck {
        ctrs: &ctrs,
        pod,
        spec: pod.spec,
        psc: pod.spec.get("securityContext").filter(|v| !v.is_null()),
        out,
    };
    let level = policy.level;
    // `hostUsers: false` counts only where the API server keeps it (see the module doc).
    let trusts_userns = policy.user_namespaces();
    let v = policy.rules();
    let resolved = versions::resolve(level, v);
    let rev = |id: &str| resolved.get(id);

    // Evaluation order: baseline checks, then restricted ones (`forbidden_detail` sorts the
    // words into PodSecurity's order).
    if rev("windowsHostProcess").is_some() {
        ck.windows_host_process();
    }
    if rev("hostNamespaces").is_some() {
        ck.host_namespaces();
    }
    if rev("privileged").is_some() {
        ck.privileged();
    }
    if rev("capabilities_baseline").is_some() {
        ck.capabilities_baseline();
    }
    if rev("hostPathVolumes").is_some() {
        ck.host_path_volumes();
    }
    if rev("hostPorts").is_some() {
        ck.host_ports();
    }
    if rev("appArmorProfile").is_some() {
        ck.app_armor_profile();
    }
    if let Some(r) = rev("seLinuxOptions") {
        ck.se_linux_options(r);
    }
    if let Some(r) = rev("procMount") {
        ck.proc_mount("procMount", r >= 35 && trusts_userns);
    }
    // An API server 1.19–1.26 turns the legacy annotations into the fields first.
    let copied_seccomp = policy.api_server_copies_seccomp_annotations();
    match rev("seccompProfile_baseline") {
        Some(r) if r >= 19 => ck.seccomp_baseline(copied_seccomp),
        Some(_) => {
            ck.seccomp_legacy_annotations();
            // An API server 1.19–1.24 writes a set field into the annotation these rules read:
            // a field `Unconfined` is refused as the annotation `unconfined` would be (also
            // beside an annotation, which the API server would keep instead: stricter there).
            if policy.api_server_copies_seccomp_fields() {
                ck.seccomp_baseline(false);
            }
        }
        None => {}
    }
    if let Some(r) = rev("sysctls") {
        ck.sysctls(r);
    }
    if rev("hostProbesAndHostLifecycle").is_some() {
        ck.host_probes_and_lifecycle();
    }
    if level != Level::Restricted {
        return;
    }
    // The 1.25 revisions exempt Windows pods; the 1.35 revisions user-namespaced pods.
    let windows = ck.is_windows();
    let userns = trusts_userns && ck.host_users_false();
    if rev("restrictedVolumes").is_some() {
        ck.restricted_volumes();
    }
    if let Some(r) = rev("allowPrivilegeEscalation") {
        if !(r >= 25 && windows) {
            ck.allow_privilege_escalation();
        }
    }
    if let Some(r) = rev("runAsNonRoot") {
        if !(r >= 35 && userns) {
            ck.run_as_non_root();
        }
    }
    if let Some(r) = rev("runAsUser") {
        if !(r >= 35 && userns) {
            ck.run_as_user();
        }
    }
    if let Some(r) = rev("seccompProfile_restricted") {
        if !(r >= 25 && windows) {
            ck.seccomp_restricted(copied_seccomp);
        }
    }
    if let Some(r) = rev("capabilities_restricted") {
        if !(r >= 25 && windows) {
            ck.capabilities_restricted();
        }
    }
    if rev("procMount_restricted").is_some() {
        ck.proc_mount("procMount_restricted", false);
    }
}

/// A container of one of the three lists.
struct Ctr<'a> {
    list: &'static str,
    index: usize,
    name: &'a str,
    sc: Option<&'a Value>,
    v: &'a Value,
}

impl<'a> Ctr<'a> {
    fn sc_get(&self, key: &str) -> Option<&'a Value> {
        present(self.sc.and_then(|sc| sc.get(key)))
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = Ctr<'_>> {
    CONTAINER_LISTS.into_iter().flat_map(move |list| {
        spec.get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(index, v)| Ctr {
                list,
                index,
                name: v.get("name").and_then(Value::as_str).unwrap_or(""),
                sc: present(v.get("securityContext")),
                v,
            })
    })
}

/// `Some(v)` unless absent or JSON null.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Unset, null or `false`.
fn unset_or_false(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
}

/// A present string value in `allowed` (anything else, including a non-string, is not).
fn str_in(v: &Value, allowed: &[&str]) -> bool {
    v.as_str().is_some_and(|s| allowed.contains(&s))
}

/// A value for a message: strings bare, anything else as JSON.
fn disp(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

struct Ck<'p, 'a> {
    ctrs: &'p [Ctr<'a>],
    pod: &'p PodSpecRef<'a>,
    spec: &'a Value,
    psc: Option<&'a Value>,
    out: &'p mut Vec<Violation>,
}

impl<'p, 'a> Ck<'p, 'a> {
    fn ctrs(&self) -> &'p [Ctr<'a>] {
        self.ctrs
    }

    fn push(&mut self, check: &'static str, field: String, message: String) {
        self.out.push(Violation {
            check,
            field,
            message,
        });
    }

    fn spec_path(&self, rest: &str) -> String {
        format!("{}.{rest}", self.pod.path_prefix)
    }

    fn ctr_path(&self, c: &Ctr<'_>, rest: &str) -> String {
        format!("{}.{}[{}].{rest}", self.pod.path_prefix, c.list, c.index)
    }

    fn psc_get(&self, key: &str) -> Option<&'a Value> {
        present(self.psc.and_then(|sc| sc.get(key)))
    }

    fn is_windows(&self) -> bool {
        self.spec
            .get("os")
            .and_then(|os| os.get("name"))
            .and_then(Value::as_str)
            == Some("windows")
    }

    fn host_users_false(&self) -> bool {
        matches!(self.spec.get("hostUsers"), Some(Value::Bool(false)))
    }

    fn annotations(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.pod
            .metadata
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    }

    fn annotation(&self, key: &str) -> Option<&'a Value> {
        self.pod
            .metadata
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(key))
    }

    /// The legacy seccomp annotation of the pod (`container`: None) or of a container, judged
    /// as the `seccompProfile.type` an API server 1.19–1.26 copies it into when that field is
    /// unset (`SeccompFieldForAnnotation`, `pkg/api/pod/util.go`): `unconfined` becomes
    /// `Unconfined`, forbidden at both levels; at `restricted` (`restricted_level`) any value
    /// that would not become `RuntimeDefault` / `Localhost` is refused too (the API server's
    /// validation refuses such values; the field would stay unset). True when a violation was
    /// reported.
    fn copied_seccomp_annotation(
        &mut self,
        check: &'static str,
        container: Option<&str>,
        restricted_level: bool,
    ) -> bool {
        let (key, who) = match container {
            None => (SECCOMP_POD_ANNOTATION.to_owned(), "pod".to_owned()),
            Some(name) => (
                seccomp_container_annotation(name),
                format!("container {name:?}"),
            ),
        };
        let key = key.as_str();
        let Some(value) = self.annotation(key) else {
            return false;
        };
        let copied = value.as_str().and_then(seccomp_type_for_annotation);
        let forbidden = match copied {
            Some(t) => t == "Unconfined",
            None => restricted_level,
        };
        if !forbidden {
            return false;
        }
        let message = match copied {
            // PodSecurity on that API server sees the field, and words it so.
            Some(t) => format!(
                "seccompProfile ({who} must not set securityContext.seccompProfile.type to {t:?})"
            ),
            None => format!(
                "seccompProfile (forbidden annotation {key}={:?})",
                disp(value)
            ),
        };
        self.push(check, self.annotation_path(key), message);
        true
    }

    fn annotation_path(&self, key: &str) -> String {
        format!("{}.annotations[{key}]", self.pod.metadata_prefix)
    }

    /// Reports every entry of `capabilities.add` not in `allowed` (a non-array `add` is
    /// reported as a whole).
    fn capabilities_add(&mut self, check: &'static str, reason: &str, allowed: &[&str]) {
        for c in self.ctrs() {
            let Some(add) = c.sc_get("capabilities").and_then(|k| present(k.get("add"))) else {
                continue;
            };
            let Some(items) = add.as_array() else {
                self.push(
                    check,
                    self.ctr_path(c, "securityContext.capabilities.add"),
                    format!(
                        "{reason} (container {:?} must not set securityContext.capabilities.add to {})",
                        c.name,
                        disp(add)
                    ),
                );
                continue;
            };
            for (i, cap) in items.iter().enumerate() {
                if !str_in(cap, allowed) {
                    self.push(
                        check,
                        self.ctr_path(c, &format!("securityContext.capabilities.add[{i}]")),
                        format!(
                            "{reason} (container {:?} must not include {:?} in securityContext.capabilities.add)",
                            c.name,
                            disp(cap)
                        ),
                    );
                }
            }
        }
    }
}

/// The legacy seccomp annotation of the pod.
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";

/// The legacy seccomp annotation of container `name`.
fn seccomp_container_annotation(name: &str) -> String {
    format!("container.seccomp.security.alpha.kubernetes.io/{name}")
}

/// The `seccompProfile.type` an API server 1.19–1.26 copies a legacy seccomp annotation value
/// into (`SeccompFieldForAnnotation`): none for a value it does not recognise (validation then
/// refuses the pod) or `localhost/` without a profile name.
fn seccomp_type_for_annotation(v: &str) -> Option<&'static str> {
    match v {
        "unconfined" => Some("Unconfined"),
        "runtime/default" | "docker/default" => Some("RuntimeDefault"),
        _ => v
            .strip_prefix("localhost/")
            .filter(|name| !name.is_empty())
            .map(|_| "Localhost"),
    }
}

fn valid_seccomp(t: &Value) -> bool {
    str_in(t, &["RuntimeDefault", "Localhost"])
}
