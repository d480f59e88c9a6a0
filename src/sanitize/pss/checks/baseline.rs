//! Baseline checks (reference §8.1): host namespaces and processes, privileged containers,
//! added capabilities beyond the default set, hostPath volumes, host ports, AppArmor, SELinux,
//! `/proc` mount type, seccomp (legacy annotations before 1.19, the fields from 1.19), unsafe
//! sysctls, and (from 1.34) host probes and lifecycle handlers. Each reports one violation per
//! offending field.

use serde_json::Value;

use super::{
    disp, is_zero, present, seccomp_container_annotation, str_in, unset_or_false, valid_seccomp,
    Ck, SECCOMP_POD_ANNOTATION,
};

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// `check_seLinuxOptions.go` `selinuxAllowedTypes1_0` (besides the empty type).
const SELINUX_TYPES_1_0: &[&str] = &["container_t", "container_init_t", "container_kvm_t"];
/// `selinuxAllowedTypes1_31`: adds `container_engine_t` (commit 840e4a82d, v1.31).
const SELINUX_TYPES_1_31: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Safe sysctls, each with the revision of `check_sysctls.go` that first allowed it
/// (`sysctlsAllowedV1Dot0`, `V1Dot27`, `V1Dot29`, `V1Dot32`, `V1Dot37`).
const SAFE_SYSCTLS: &[(&str, u64)] = &[
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
    ("net.ipv4.tcp_slow_start_after_idle", 37),
    ("net.ipv4.tcp_notsent_lowat", 37),
];

impl<'a> Ck<'_, 'a> {
    pub(super) fn windows_host_process(&mut self) {
        const C: &str = "windowsHostProcess";
        let pod = self
            .psc_get("windowsOptions")
            .and_then(|w| w.get("hostProcess"));
        if !unset_or_false(pod) {
            self.push(
                C,
                self.spec_path("securityContext.windowsOptions.hostProcess"),
                "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"
                    .to_owned(),
            );
        }
        for c in self.ctrs() {
            let hp = c
                .sc_get("windowsOptions")
                .and_then(|w| w.get("hostProcess"));
            if !unset_or_false(hp) {
                self.push(
                    C,
                    self.ctr_path(c, "securityContext.windowsOptions.hostProcess"),
                    format!(
                        "hostProcess (container {:?} must not set securityContext.windowsOptions.hostProcess=true)",
                        c.name
                    ),
                );
            }
        }
    }

    pub(super) fn host_namespaces(&mut self) {
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            if !unset_or_false(self.spec.get(key)) {
                self.push(
                    "hostNamespaces",
                    self.spec_path(key),
                    format!("host namespaces ({key}=true)"),
                );
            }
        }
    }

    pub(super) fn privileged(&mut self) {
        for c in self.ctrs() {
            if !unset_or_false(c.sc_get("privileged")) {
                self.push(
                    "privileged",
                    self.ctr_path(c, "securityContext.privileged"),
                    format!(
                        "privileged (container {:?} must not set securityContext.privileged=true)",
                        c.name
                    ),
                );
            }
        }
    }

    pub(super) fn capabilities_baseline(&mut self) {
        self.capabilities_add(
            "capabilities_baseline",
            "non-default capabilities",
            BASELINE_CAPABILITIES,
        );
    }

    pub(super) fn volumes(&self) -> impl Iterator<Item = (usize, &'a Value)> {
        self.spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
    }

    pub(super) fn host_path_volumes(&mut self) {
        for (i, vol) in self.volumes() {
            if present(vol.get("hostPath")).is_some() {
                let name = vol.get("name").and_then(Value::as_str).unwrap_or("");
                self.push(
                    "hostPathVolumes",
                    self.spec_path(&format!("volumes[{i}].hostPath")),
                    format!("hostPath volumes (volume {name:?})"),
                );
            }
        }
    }

    pub(super) fn host_ports(&mut self) {
        for c in self.ctrs() {
            let Some(ports) = c.v.get("ports").and_then(Value::as_array) else {
                continue;
            };
            for (j, port) in ports.iter().enumerate() {
                let Some(hp) = present(port.get("hostPort")) else {
                    continue;
                };
                if !is_zero(hp) {
                    self.push(
                        "hostPorts",
                        self.ctr_path(c, &format!("ports[{j}].hostPort")),
                        format!(
                            "hostPort (container {:?} uses hostPort {})",
                            c.name,
                            disp(hp)
                        ),
                    );
                }
            }
        }
    }

    /// `check_appArmorProfile.go` `appArmorProfile_1_0`: the beta annotations and (since
    /// v1.30, patched into the 1.0 revision, so at every pinned version) the
    /// `appArmorProfile.type` fields; worded as upstream (`… must not set AppArmor profile type
    /// to …`).
    pub(super) fn app_armor_profile(&mut self) {
        const C: &str = "appArmorProfile";
        const REASON: &str = "forbidden AppArmor profile";
        let mut found = Vec::new();
        for (key, value) in self.annotations() {
            if !key.starts_with(APPARMOR_ANNOTATION_PREFIX) {
                continue;
            }
            let ok = match value.as_str() {
                Some(s) => s.is_empty() || s == "runtime/default" || s.starts_with("localhost/"),
                None => false,
            };
            if !ok {
                found.push((key, value));
            }
        }
        for (key, value) in found {
            self.push(
                C,
                self.annotation_path(key),
                // Upstream quotes the whole `key="value"` pair (`joinQuote`).
                format!(
                    "{REASON} (annotation must not set AppArmor profile type to {:?})",
                    format!("{key}={:?}", disp(value))
                ),
            );
        }
        const ALLOWED: &[&str] = &["RuntimeDefault", "Localhost"];
        if let Some(t) = self
            .psc_get("appArmorProfile")
            .and_then(|p| present(p.get("type")))
        {
            if !str_in(t, ALLOWED) {
                self.push(
                    C,
                    self.spec_path("securityContext.appArmorProfile.type"),
                    format!(
                        "{REASON} (pod must not set AppArmor profile type to {:?})",
                        disp(t)
                    ),
                );
            }
        }
        for c in self.ctrs() {
            let Some(t) = c
                .sc_get("appArmorProfile")
                .and_then(|p| present(p.get("type")))
            else {
                continue;
            };
            if !str_in(t, ALLOWED) {
                self.push(
                    C,
                    self.ctr_path(c, "securityContext.appArmorProfile.type"),
                    format!(
                        "{REASON} (container {:?} must not set AppArmor profile type to {:?})",
                        c.name,
                        disp(t)
                    ),
                );
            }
        }
    }

    /// `who` is `pod` or `container "x"`; `base` the path of the securityContext.
    /// `types` is the revision's allowed set.
    pub(super) fn se_linux_one(&mut self, opts: &Value, who: &str, base: String, types: &[&str]) {
        const C: &str = "seLinuxOptions";
        if let Some(t) = present(opts.get("type")) {
            let ok = t
                .as_str()
                .is_some_and(|s| s.is_empty() || types.contains(&s));
            if !ok {
                self.push(
                    C,
                    format!("{base}.seLinuxOptions.type"),
                    format!(
                        "seLinuxOptions ({who} set forbidden securityContext.seLinuxOptions: type {:?})",
                        disp(t)
                    ),
                );
            }
        }
        for key in ["user", "role"] {
            if let Some(val) = present(opts.get(key)) {
                if val.as_str() != Some("") {
                    self.push(
                        C,
                        format!("{base}.seLinuxOptions.{key}"),
                        // Upstream names no value for these (`user may not be set`).
                        format!(
                            "seLinuxOptions ({who} set forbidden securityContext.seLinuxOptions: {key} may not be set)"
                        ),
                    );
                }
            }
        }
    }

    /// `revision` 0 (`seLinuxOptions_1_0`) or 31 (`seLinuxOptions1_31`).
    pub(super) fn se_linux_options(&mut self, revision: u64) {
        let types = if revision >= 31 {
            SELINUX_TYPES_1_31
        } else {
            SELINUX_TYPES_1_0
        };
        if let Some(opts) = self.psc_get("seLinuxOptions") {
            let base = self.spec_path("securityContext");
            self.se_linux_one(opts, "pod", base, types);
        }
        for c in self.ctrs() {
            if let Some(opts) = c.sc_get("seLinuxOptions") {
                let base = self.ctr_path(c, "securityContext");
                self.se_linux_one(opts, &format!("container {:?}", c.name), base, types);
            }
        }
    }

    /// `procMount` (baseline; `userns_exception` from 1.35) and `procMount_restricted`.
    pub(super) fn proc_mount(&mut self, check: &'static str, userns_exception: bool) {
        if userns_exception && self.host_users_false() {
            return;
        }
        for c in self.ctrs() {
            let Some(pm) = c.sc_get("procMount") else {
                continue;
            };
            if pm.as_str() != Some("Default") {
                self.push(
                    check,
                    self.ctr_path(c, "securityContext.procMount"),
                    format!(
                        "procMount (container {:?} must not set securityContext.procMount to {:?})",
                        c.name,
                        disp(pm)
                    ),
                );
            }
        }
    }

    /// `seccompProfileBaseline_1_0` (policy before 1.19): the pod annotation
    /// `seccomp.security.alpha.kubernetes.io/pod` and, for each container of the pod, the
    /// annotation `container.seccomp.security.alpha.kubernetes.io/<name>` must be
    /// `runtime/default`, `docker/default` or `localhost/…` when present (anything else,
    /// `unconfined` and the empty string included, is forbidden). Annotations naming no
    /// container of the pod are not read, as upstream.
    pub(super) fn seccomp_legacy_annotations(&mut self) {
        let Some(annotations) = self
            .pod
            .metadata
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
        else {
            return;
        };
        let mut keys = vec![SECCOMP_POD_ANNOTATION.to_owned()];
        for c in self.ctrs() {
            keys.push(seccomp_container_annotation(c.name));
        }
        let mut seen = Vec::new();
        for key in keys {
            // A name used by two containers is one annotation (upstream collects a set).
            if seen.contains(&key) {
                continue;
            }
            let Some(value) = annotations.get(&key) else {
                continue;
            };
            let ok = value.as_str().is_some_and(|v| {
                v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/")
            });
            if !ok {
                self.push(
                    "seccompProfile_baseline",
                    self.annotation_path(&key),
                    format!(
                        "seccompProfile (forbidden annotation {key}={:?})",
                        disp(value)
                    ),
                );
            }
            seen.push(key);
        }
    }

    /// From 1.19: pod and container `seccompProfile.type` must not be `Unconfined` (anything
    /// other than `RuntimeDefault` / `Localhost` is refused). `copied`: the API server copies
    /// the legacy annotations into unset fields first (1.19–1.26), so an `unconfined` one
    /// beside an unset field is refused as the field would be.
    pub(super) fn seccomp_baseline(&mut self, copied: bool) {
        const C: &str = "seccompProfile_baseline";
        if copied && self.psc_get("seccompProfile").is_none() {
            self.copied_seccomp_annotation(C, None, false);
        }
        if let Some(t) = self
            .psc_get("seccompProfile")
            .and_then(|p| present(p.get("type")))
        {
            if !valid_seccomp(t) {
                self.push(
                    C,
                    self.spec_path("securityContext.seccompProfile.type"),
                    format!(
                        "seccompProfile (pod must not set securityContext.seccompProfile.type to {:?})",
                        disp(t)
                    ),
                );
            }
        }
        for c in self.ctrs() {
            if copied && c.sc_get("seccompProfile").is_none() {
                self.copied_seccomp_annotation(C, Some(c.name), false);
            }
            let Some(t) = c
                .sc_get("seccompProfile")
                .and_then(|p| present(p.get("type")))
            else {
                continue;
            };
            if !valid_seccomp(t) {
                self.push(
                    C,
                    self.ctr_path(c, "securityContext.seccompProfile.type"),
                    format!(
                        "seccompProfile (container {:?} must not set securityContext.seccompProfile.type to {:?})",
                        c.name,
                        disp(t)
                    ),
                );
            }
        }
    }

    /// `revision`: the `check_sysctls.go` revision in force (0, 27, 29, 32 or 37).
    pub(super) fn sysctls(&mut self, revision: u64) {
        let Some(list) = self.psc_get("sysctls") else {
            return;
        };
        let Some(items) = list.as_array() else {
            self.push(
                "sysctls",
                self.spec_path("securityContext.sysctls"),
                format!("forbidden sysctls ({})", disp(list)),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let name = item.get("name").and_then(Value::as_str);
            if !name.is_some_and(|n| safe_sysctl(n, revision)) {
                self.push(
                    "sysctls",
                    self.spec_path(&format!("securityContext.sysctls[{i}].name")),
                    format!("forbidden sysctls ({})", name.unwrap_or("")),
                );
            }
        }
    }

    pub(super) fn host_probes_and_lifecycle(&mut self) {
        const HANDLERS: [&str; 2] = ["httpGet", "tcpSocket"];
        for c in self.ctrs() {
            let mut sites: [(Option<&Value>, &str); 5] = [
                (c.v.get("livenessProbe"), "livenessProbe"),
                (c.v.get("readinessProbe"), "readinessProbe"),
                (c.v.get("startupProbe"), "startupProbe"),
                (None, "lifecycle.postStart"),
                (None, "lifecycle.preStop"),
            ];
            if let Some(lc) = c.v.get("lifecycle") {
                sites[3].0 = lc.get("postStart");
                sites[4].0 = lc.get("preStop");
            }
            for (site, site_path) in sites {
                let Some(site) = site else { continue };
                for h in HANDLERS {
                    let Some(host) = site.get(h).and_then(|h| present(h.get("host"))) else {
                        continue;
                    };
                    if host.as_str() != Some("") {
                        self.push(
                            "hostProbesAndHostLifecycle",
                            self.ctr_path(c, &format!("{site_path}.{h}.host")),
                            format!(
                                "probe or lifecycle host (container {:?} uses probe or lifecycle hook host {:?})",
                                c.name,
                                disp(host)
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Whether sysctl `name` is in the safe set of `revision`. Names are compared exactly, as
/// upstream's `sets.String.Has(sysctl.Name)`: the slash-separated spelling
/// (`kernel/shm_rmid_forced`), which the API server accepts, is not in the set and is refused.
fn safe_sysctl(name: &str, revision: u64) -> bool {
    SAFE_SYSCTLS
        .iter()
        .any(|&(n, since)| n == name && revision >= since)
}
