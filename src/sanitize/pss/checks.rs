//! The checks of reference §8.1 (baseline) and §8.2 (restricted), one [`Violation`] per
//! offending field.
//!
//! Check IDs are the apiserver's (`policy/check_*.go`). Where a restricted check replaces a
//! baseline one (as `OverrideCheckIDs` does upstream) only the restricted one runs at the
//! restricted level: `seccompProfile_restricted` replaces `seccompProfile_baseline`, and from
//! 1.35 `procMount_restricted` replaces `procMount`. `capabilities_restricted` runs in
//! addition to `capabilities_baseline`, as upstream (a `SYS_ADMIN` add is reported by both).
//!
//! Version gates (`Version::at_least`):
//! * seccompProfile_baseline: the legacy `seccomp.security.alpha.kubernetes.io/*` annotations
//!   before 1.19, the `seccompProfile.type` fields from 1.19 (at the restricted level before
//!   1.19 the legacy annotation check runs; the field requirement starts at 1.19);
//! * sysctls: the safe set grows at 1.27, 1.29, 1.32 and HEAD (1.37);
//! * capabilities_restricted from 1.22; runAsUser from 1.23;
//! * Windows pods (`spec.os.name: windows`) exempt from allowPrivilegeEscalation,
//!   seccompProfile_restricted and capabilities_restricted from 1.25;
//! * hostProbesAndHostLifecycle from 1.34;
//! * from 1.35: procMount (baseline) allows any value when `spec.hostUsers: false`,
//!   runAsNonRoot and runAsUser are not checked when `spec.hostUsers: false`, and
//!   procMount_restricted requires `Default` unconditionally.

use serde_json::Value;

use super::{Level, PodSpecRef, Policy, Version, Violation};

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

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
        v: policy.version,
        ctrs: &ctrs,
        pod,
        spec: pod.spec,
        psc: pod.spec.get("securityContext").filter(|v| !v.is_null()),
        out,
    };
    let restricted = policy.level == Level::Restricted;
    let v = policy.version;

    ck.windows_host_process();
    ck.host_namespaces();
    ck.privileged();
    ck.capabilities_baseline();
    ck.host_path_volumes();
    ck.host_ports();
    ck.app_armor_profile();
    ck.se_linux_options();
    if !(restricted && v.at_least(35)) {
        ck.proc_mount("procMount", v.at_least(35));
    }
    if !v.at_least(19) {
        ck.seccomp_legacy_annotations();
    } else if !restricted {
        ck.seccomp_baseline();
    }
    ck.sysctls();
    if v.at_least(34) {
        ck.host_probes_and_lifecycle();
    }
    if !restricted {
        return;
    }
    let windows_exempt = v.at_least(25) && ck.is_windows();
    ck.restricted_volumes();
    if !windows_exempt {
        ck.allow_privilege_escalation();
    }
    let userns_exempt = v.at_least(35) && ck.host_users_false();
    if !userns_exempt {
        ck.run_as_non_root();
        if v.at_least(23) {
            ck.run_as_user();
        }
    }
    if v.at_least(19) && !windows_exempt {
        ck.seccomp_restricted();
    }
    if v.at_least(22) && !windows_exempt {
        ck.capabilities_restricted();
    }
    if v.at_least(35) {
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
    v: Version,
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

    fn annotation_path(&self, key: &str) -> String {
        format!("{}.annotations[{key}]", self.pod.metadata_prefix)
    }

    // ---- baseline ----

    fn windows_host_process(&mut self) {
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

    fn host_namespaces(&mut self) {
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

    fn privileged(&mut self) {
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

    fn capabilities_baseline(&mut self) {
        self.capabilities_add(
            "capabilities_baseline",
            "non-default capabilities",
            BASELINE_CAPABILITIES,
        );
    }

    fn volumes(&self) -> impl Iterator<Item = (usize, &'a Value)> {
        self.spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
    }

    fn host_path_volumes(&mut self) {
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

    fn host_ports(&mut self) {
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

    fn app_armor_profile(&mut self) {
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
    fn se_linux_one(&mut self, opts: &Value, who: &str, base: String) {
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

    fn se_linux_options(&mut self) {
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
    fn proc_mount(&mut self, check: &'static str, userns_exception: bool) {
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
    fn seccomp_legacy_annotations(&mut self) {
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
    fn seccomp_baseline(&mut self) {
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

    fn sysctls(&mut self) {
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

    fn host_probes_and_lifecycle(&mut self) {
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

    // ---- restricted ----

    fn restricted_volumes(&mut self) {
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

    fn allow_privilege_escalation(&mut self) {
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

    fn run_as_non_root(&mut self) {
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

    fn run_as_user(&mut self) {
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

    fn seccomp_restricted(&mut self) {
        const C: &str = "seccompProfile_restricted";
        let mut pod_set = false;
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
                None if pod_set => {}
                None => self.push(
                    C,
                    self.ctr_path(c, "securityContext.seccompProfile.type"),
                    format!(
                        "seccompProfile (pod or container {:?} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                        c.name
                    ),
                ),
            }
        }
    }

    fn capabilities_restricted(&mut self) {
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

fn valid_seccomp(t: &Value) -> bool {
    str_in(t, &["RuntimeDefault", "Localhost"])
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
