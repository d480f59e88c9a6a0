//! Restricted checks (reference §8.2), on top of baseline: volume types, privilege escalation,
//! running as non-root, a non-zero user (from 1.23), a seccomp profile (from 1.19), dropping
//! `ALL` capabilities (from 1.22). Windows pods and (from 1.35) user-namespaced pods are exempt
//! from some of them; `check_into` decides which run.

use serde_json::Value;

use super::{disp, is_zero, present, valid_seccomp, Ck};

const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "downwardAPI",
    "emptyDir",
    "projected",
    "secret",
    "csi",
    "persistentVolumeClaim",
    "ephemeral",
    "image",
];

impl Ck<'_, '_> {
    pub(super) fn restricted_volumes(&mut self) {
        for (i, vol) in self.volumes() {
            let Some(map) = vol.as_object() else { continue };
            let name = vol.get("name").and_then(Value::as_str).unwrap_or("");
            for (key, val) in map {
                if key == "name"
                    || val.is_null()
                    || RESTRICTED_VOLUME_SOURCES.contains(&key.as_str())
                {
                    continue;
                }
                self.push(
                    "restrictedVolumes",
                    self.spec_path(&format!("volumes[{i}].{key}")),
                    format!("restricted volume types (volume {name:?} uses restricted volume type {key:?})"),
                );
            }
        }
    }

    pub(super) fn allow_privilege_escalation(&mut self) {
        for c in self.ctrs() {
            if !matches!(
                c.sc_get("allowPrivilegeEscalation"),
                Some(Value::Bool(false))
            ) {
                self.push(
                    "allowPrivilegeEscalation",
                    self.ctr_path(c, "securityContext.allowPrivilegeEscalation"),
                    format!(
                        "allowPrivilegeEscalation != false (container {:?} must set securityContext.allowPrivilegeEscalation=false)",
                        c.name
                    ),
                );
            }
        }
    }

    pub(super) fn run_as_non_root(&mut self) {
        const C: &str = "runAsNonRoot";
        let pod = self.psc_get("runAsNonRoot");
        let pod_true = matches!(pod, Some(Value::Bool(true)));
        if pod.is_some() && !pod_true {
            self.push(
                C,
                self.spec_path("securityContext.runAsNonRoot"),
                "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"
                    .to_owned(),
            );
        }
        for c in self.ctrs() {
            match c.sc_get("runAsNonRoot") {
                Some(Value::Bool(true)) => {}
                Some(_) => self.push(
                    C,
                    self.ctr_path(c, "securityContext.runAsNonRoot"),
                    format!(
                        "runAsNonRoot != true (container {:?} must not set securityContext.runAsNonRoot=false)",
                        c.name
                    ),
                ),
                None if pod_true => {}
                None => self.push(
                    C,
                    self.ctr_path(c, "securityContext.runAsNonRoot"),
                    format!(
                        "runAsNonRoot != true (pod or container {:?} must set securityContext.runAsNonRoot=true)",
                        c.name
                    ),
                ),
            }
        }
    }

    pub(super) fn run_as_user(&mut self) {
        const C: &str = "runAsUser";
        // Conservative: a non-numeric value is refused too (the apiserver would reject it).
        let bad = |v: &Value| is_zero(v) || !v.is_number();
        if self.psc_get("runAsUser").is_some_and(bad) {
            self.push(
                C,
                self.spec_path("securityContext.runAsUser"),
                "runAsUser=0 (pod must not set runAsUser=0)".to_owned(),
            );
        }
        for c in self.ctrs() {
            if c.sc_get("runAsUser").is_some_and(bad) {
                self.push(
                    C,
                    self.ctr_path(c, "securityContext.runAsUser"),
                    format!(
                        "runAsUser=0 (container {:?} must not set runAsUser=0)",
                        c.name
                    ),
                );
            }
        }
    }

    /// `copied`: the API server copies the legacy annotations into unset fields first
    /// (1.19–1.26): an annotation beside an unset field that would not become `RuntimeDefault`
    /// / `Localhost` is refused as that field would be. One that would is not counted as
    /// setting a profile (stricter than that API server, as before).
    pub(super) fn seccomp_restricted(&mut self, copied: bool) {
        const C: &str = "seccompProfile_restricted";
        let mut pod_set = false;
        if copied && self.psc_get("seccompProfile").is_none() {
            self.copied_seccomp_annotation(C, None, true);
        }
        if let Some(p) = self.psc_get("seccompProfile") {
            match present(p.get("type")) {
                Some(t) if valid_seccomp(t) => pod_set = true,
                t => self.push(
                    C,
                    self.spec_path("securityContext.seccompProfile.type"),
                    format!(
                        "seccompProfile (pod must not set securityContext.seccompProfile.type to {:?})",
                        t.map(disp).unwrap_or_default()
                    ),
                ),
            }
        }
        for c in self.ctrs() {
            match c.sc_get("seccompProfile") {
                Some(p) => match present(p.get("type")) {
                    Some(t) if valid_seccomp(t) => {}
                    t => self.push(
                        C,
                        self.ctr_path(c, "securityContext.seccompProfile.type"),
                        format!(
                            "seccompProfile (container {:?} must not set securityContext.seccompProfile.type to {:?})",
                            c.name,
                            t.map(disp).unwrap_or_default()
                        ),
                    ),
                },
                None => {
                    // The field the API server would copy the annotation into, judged as set.
                    let refused_as_copied =
                        copied && self.copied_seccomp_annotation(C, Some(c.name), true);
                    if !refused_as_copied && !pod_set {
                        self.push(
                            C,
                            self.ctr_path(c, "securityContext.seccompProfile.type"),
                            format!(
                                "seccompProfile (pod or container {:?} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                                c.name
                            ),
                        );
                    }
                }
            }
        }
    }

    pub(super) fn capabilities_restricted(&mut self) {
        const C: &str = "capabilities_restricted";
        const REASON: &str = "unrestricted capabilities";
        for c in self.ctrs() {
            let drops_all = c
                .sc_get("capabilities")
                .and_then(|k| k.get("drop"))
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
            if !drops_all {
                self.push(
                    C,
                    self.ctr_path(c, "securityContext.capabilities.drop"),
                    format!(
                        "{REASON} (container {:?} must set securityContext.capabilities.drop=[\"ALL\"])",
                        c.name
                    ),
                );
            }
        }
        self.capabilities_add(C, REASON, &["NET_BIND_SERVICE"]);
    }
}
