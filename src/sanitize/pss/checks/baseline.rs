//! Baseline checks (reference §8.1): host namespaces and processes, privileged containers,
//! added capabilities beyond the default set, hostPath volumes, host ports, AppArmor, SELinux,
//! `/proc` mount type, seccomp (legacy annotations before 1.19, the fields from 1.19), unsafe
//! sysctls, and (from 1.34) host probes and lifecycle handlers. Each reports one violation per
//! offending field.

use serde_json::Value;

use super::{disp, is_zero, present, str_in, unset_or_false, valid_seccomp, Ck, Version};

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

const SELINUX_TYPES: &[&str] = &["container_t", "container_init_t", "container_kvm_t"];

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Safe sysctls, each with the minor version that first allowed it.
const SAFE_SYSCTLS: &[(&str, u32)] = &[
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
    ("net.ipv4.tcp_slow_start_after_idle", Version::LATEST_MINOR),
    ("net.ipv4.tcp_notsent_lowat", Version::LATEST_MINOR),
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
                format!("{REASON} (annotation {key:?}={:?})", disp(value)),
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
                        "{REASON} (pod must not set securityContext.appArmorProfile.type to {:?})",
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
                        "{REASON} (container {:?} must not set securityContext.appArmorProfile.type to {:?})",
                        c.name,
                        disp(t)
                    ),
                );
            }
        }
    }

    /// `who` is `pod` or `container "x"`; `base` the path of the securityContext.
    pub(super) fn se_linux_one(&mut self, opts: &Value, who: &str, base: String) {
        const C: &str = "seLinuxOptions";
        if let Some(t) = present(opts.get("type")) {
            let ok = t
                .as_str()
                .is_some_and(|s| s.is_empty() || SELINUX_TYPES.contains(&s));
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
                        format!(
                            "seLinuxOptions ({who} set forbidden securityContext.seLinuxOptions: {key} {:?})",
                            disp(val)
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn se_linux_options(&mut self) {
        if let Some(opts) = self.psc_get("seLinuxOptions") {
            let base = self.spec_path("securityContext");
            self.se_linux_one(opts, "pod", base);
        }
        for c in self.ctrs() {
            if let Some(opts) = c.sc_get("seLinuxOptions") {
                let base = self.ctr_path(c, "securityContext");
                self.se_linux_one(opts, &format!("container {:?}", c.name), base);
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

    /// Before 1.19: the legacy seccomp annotations must not be `unconfined`.
    pub(super) fn seccomp_legacy_annotations(&mut self) {
        let mut found = Vec::new();
        for (key, value) in self.annotations() {
            let legacy = key == SECCOMP_POD_ANNOTATION
                || key.starts_with(SECCOMP_CONTAINER_ANNOTATION_PREFIX);
            if legacy && (value.as_str() == Some("unconfined") || !value.is_string()) {
                found.push((key, value));
            }
        }
        for (key, value) in found {
            self.push(
                "seccompProfile_baseline",
                self.annotation_path(key),
                format!("seccompProfile (annotation {key:?}={:?})", disp(value)),
            );
        }
    }

    /// From 1.19: pod and container `seccompProfile.type` must not be `Unconfined` (anything
    /// other than `RuntimeDefault` / `Localhost` is refused).
    pub(super) fn seccomp_baseline(&mut self) {
        const C: &str = "seccompProfile_baseline";
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

    pub(super) fn sysctls(&mut self) {
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
            if !name.is_some_and(|n| safe_sysctl(n, self.v)) {
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

/// Whether sysctl `name` is in the safe set at `version` (slash-separated names are normalised
/// to dots, as the kubelet does).
fn safe_sysctl(name: &str, version: Version) -> bool {
    let dotted;
    let name = if name
        .find(['.', '/'])
        .is_some_and(|i| name.as_bytes().get(i) == Some(&b'/'))
    {
        dotted = name
            .chars()
            .map(|ch| match ch {
                '/' => '.',
                '.' => '/',
                other => other,
            })
            .collect::<String>();
        dotted.as_str()
    } else {
        name
    };
    SAFE_SYSCTLS
        .iter()
        .any(|&(n, since)| n == name && version.at_least(since))
}
