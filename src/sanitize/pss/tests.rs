//! Table tests: one violating and one compliant object per check, each asserting the exact
//! field path; every pod-bearing kind; all three container lists; version gates.

use serde_json::{json, Value};

use super::*;

const L: Version = Version::Latest;

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A minimal baseline-compliant pod.
fn baseline_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    })
}

/// A minimal restricted-compliant pod.
fn restricted_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app", "image": "registry.example/app:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    })
}

/// `spec.containers[0]` of `base` merged with `patch`, as a spec patch.
fn ctr(base: &Value, patch: Value) -> Value {
    let mut c = base
        .pointer("/spec/containers/0")
        .cloned()
        .unwrap_or(Value::Null);
    merge(&mut c, &patch);
    json!({"spec": {"containers": [c]}})
}

fn run(level: Level, version: Version, obj: &Value) -> Vec<(&'static str, String)> {
    run_trusting(level, version, false, obj)
}

/// [`run`] with `hostUsers: false` trusted or not (`pod_security.user_namespaces`).
fn run_trusting(
    level: Level,
    version: Version,
    trust: bool,
    obj: &Value,
) -> Vec<(&'static str, String)> {
    let mut policy = Policy::new(level, version);
    policy.trust_host_users(trust);
    check_object(&policy, "", "pods", obj)
        .into_iter()
        .map(|v| (v.check, v.field))
        .collect()
}

fn with(base: Value, patch: &Value) -> Value {
    let mut o = base;
    merge(&mut o, patch);
    o
}

struct Case {
    name: &'static str,
    level: Level,
    version: Version,
    patch: Value,
    want: Vec<(&'static str, &'static str)>,
    /// `hostUsers: false` trusted (`pod_security.user_namespaces: true`).
    trust: bool,
}

fn case(
    name: &'static str,
    level: Level,
    version: Version,
    patch: Value,
    want: &[(&'static str, &'static str)],
) -> Case {
    Case {
        name,
        level,
        version,
        patch,
        want: want.to_vec(),
        trust: false,
    }
}

/// A [`case`] where the cluster's user namespaces are trusted: what the version alone decides.
fn trusting(c: Case) -> Case {
    Case { trust: true, ..c }
}

fn run_cases(cases: Vec<Case>) {
    for c in cases {
        let base = match c.level {
            Level::Restricted => restricted_pod(),
            _ => baseline_pod(),
        };
        let obj = with(base, &c.patch);
        let got = run_trusting(c.level, c.version, c.trust, &obj);
        let want: Vec<(&str, String)> = c.want.iter().map(|(k, f)| (*k, f.to_string())).collect();
        assert_eq!(got, want, "case {:?}: object {obj}", c.name);
    }
}

#[test]
fn compliant_bases_pass() {
    assert_eq!(run(Level::Baseline, L, &baseline_pod()), vec![]);
    assert_eq!(run(Level::Restricted, L, &restricted_pod()), vec![]);
    for v in [4, 19, 22, 23, 25, 30, 34, 35, 36] {
        assert_eq!(
            run(Level::Restricted, Version::V1(v), &restricted_pod()),
            vec![],
            "v1.{v}"
        );
    }
}

#[test]
fn baseline_checks_violating_and_compliant() {
    let b = baseline_pod();
    let bl = Level::Baseline;
    run_cases(vec![
        // windowsHostProcess
        case(
            "hostProcess pod",
            bl,
            L,
            json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": true}}}}),
            &[(
                "windowsHostProcess",
                "spec.securityContext.windowsOptions.hostProcess",
            )],
        ),
        case(
            "hostProcess container",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            ),
            &[(
                "windowsHostProcess",
                "spec.containers[0].securityContext.windowsOptions.hostProcess",
            )],
        ),
        case(
            "hostProcess false",
            bl,
            L,
            json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": false}}}}),
            &[],
        ),
        // hostNamespaces
        case(
            "host namespaces",
            bl,
            L,
            json!({"spec": {"hostNetwork": true, "hostPID": true, "hostIPC": true}}),
            &[
                ("hostNamespaces", "spec.hostNetwork"),
                ("hostNamespaces", "spec.hostPID"),
                ("hostNamespaces", "spec.hostIPC"),
            ],
        ),
        case(
            "host namespaces false",
            bl,
            L,
            json!({"spec": {"hostNetwork": false, "hostPID": false, "hostIPC": null}}),
            &[],
        ),
        // privileged
        case(
            "privileged",
            bl,
            L,
            ctr(&b, json!({"securityContext": {"privileged": true}})),
            &[(
                "privileged",
                "spec.containers[0].securityContext.privileged",
            )],
        ),
        case(
            "privileged as string",
            bl,
            L,
            ctr(&b, json!({"securityContext": {"privileged": "true"}})),
            &[(
                "privileged",
                "spec.containers[0].securityContext.privileged",
            )],
        ),
        case(
            "privileged false",
            bl,
            L,
            ctr(&b, json!({"securityContext": {"privileged": false}})),
            &[],
        ),
        // capabilities_baseline
        case(
            "caps NET_RAW",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"capabilities": {"add": ["CHOWN", "NET_RAW"]}}}),
            ),
            &[(
                "capabilities_baseline",
                "spec.containers[0].securityContext.capabilities.add[1]",
            )],
        ),
        case(
            "caps CAP_ prefix",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}}),
            ),
            &[(
                "capabilities_baseline",
                "spec.containers[0].securityContext.capabilities.add[0]",
            )],
        ),
        case(
            "caps default set",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE", "SYS_CHROOT"], "drop": ["NET_RAW"]}}}),
            ),
            &[],
        ),
        // hostPathVolumes
        case(
            "hostPath",
            bl,
            L,
            json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}]}}),
            &[("hostPathVolumes", "spec.volumes[1].hostPath")],
        ),
        case(
            "emptyDir",
            bl,
            L,
            json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}]}}),
            &[],
        ),
        // hostPorts
        case(
            "hostPort",
            bl,
            L,
            ctr(
                &b,
                json!({"ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]}),
            ),
            &[("hostPorts", "spec.containers[0].ports[1].hostPort")],
        ),
        case(
            "hostPort 0",
            bl,
            L,
            ctr(&b, json!({"ports": [{"containerPort": 80, "hostPort": 0}]})),
            &[],
        ),
        // appArmorProfile
        case(
            "apparmor annotation",
            bl,
            L,
            json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}}}),
            &[(
                "appArmorProfile",
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
            )],
        ),
        case(
            "apparmor annotation ok",
            bl,
            L,
            json!({"metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/app": "runtime/default",
                "container.apparmor.security.beta.kubernetes.io/b": "localhost/prof",
                "container.apparmor.security.beta.kubernetes.io/c": "",
                "other": "unconfined"}}}),
            &[],
        ),
        case(
            "apparmor pod field",
            bl,
            L,
            json!({"spec": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}}),
            &[(
                "appArmorProfile",
                "spec.securityContext.appArmorProfile.type",
            )],
        ),
        case(
            "apparmor container field",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            ),
            &[(
                "appArmorProfile",
                "spec.containers[0].securityContext.appArmorProfile.type",
            )],
        ),
        case(
            "apparmor fields ok",
            bl,
            L,
            with(
                ctr(
                    &b,
                    json!({"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
                ),
                &json!({"spec": {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}}),
            ),
            &[],
        ),
        // seLinuxOptions
        case(
            "selinux pod type",
            bl,
            L,
            json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "spc_t", "level": "s0:c1"}}}}),
            &[("seLinuxOptions", "spec.securityContext.seLinuxOptions.type")],
        ),
        case(
            "selinux container user role",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"seLinuxOptions": {"user": "system_u", "role": "system_r"}}}),
            ),
            &[
                (
                    "seLinuxOptions",
                    "spec.containers[0].securityContext.seLinuxOptions.user",
                ),
                (
                    "seLinuxOptions",
                    "spec.containers[0].securityContext.seLinuxOptions.role",
                ),
            ],
        ),
        case(
            "selinux ok",
            bl,
            L,
            with(
                ctr(
                    &b,
                    json!({"securityContext": {"seLinuxOptions": {"type": "container_init_t", "level": "s0"}}}),
                ),
                &json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "container_t", "user": ""}}}}),
            ),
            &[],
        ),
        // procMount
        case(
            "procMount",
            bl,
            L,
            ctr(&b, json!({"securityContext": {"procMount": "Unmasked"}})),
            &[("procMount", "spec.containers[0].securityContext.procMount")],
        ),
        case(
            "procMount Default",
            bl,
            L,
            ctr(&b, json!({"securityContext": {"procMount": "Default"}})),
            &[],
        ),
        // `hostUsers` is not trusted by default (`user_namespaces` off): judged as absent.
        case(
            "procMount userns at latest",
            bl,
            L,
            with(
                ctr(&b, json!({"securityContext": {"procMount": "Unmasked"}})),
                &json!({"spec": {"hostUsers": false}}),
            ),
            &[("procMount", "spec.containers[0].securityContext.procMount")],
        ),
        trusting(case(
            "procMount userns before 1.35",
            bl,
            Version::V1(34),
            with(
                ctr(&b, json!({"securityContext": {"procMount": "Unmasked"}})),
                &json!({"spec": {"hostUsers": false}}),
            ),
            &[("procMount", "spec.containers[0].securityContext.procMount")],
        )),
        // seccompProfile_baseline
        case(
            "seccomp pod unconfined",
            bl,
            L,
            json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
            &[(
                "seccompProfile_baseline",
                "spec.securityContext.seccompProfile.type",
            )],
        ),
        case(
            "seccomp container unconfined",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            ),
            &[(
                "seccompProfile_baseline",
                "spec.containers[0].securityContext.seccompProfile.type",
            )],
        ),
        case(
            "seccomp ok",
            bl,
            L,
            ctr(
                &b,
                json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x"}}}),
            ),
            &[],
        ),
        case(
            "seccomp legacy annotation before 1.19",
            bl,
            Version::V1(18),
            json!({"metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                   "container.seccomp.security.alpha.kubernetes.io/app": "runtime/default"}}}),
            &[(
                "seccompProfile_baseline",
                "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
            )],
        ),
        case(
            "seccomp legacy annotation ok",
            bl,
            Version::V1(18),
            json!({"metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "runtime/default"}}}),
            &[],
        ),
        // sysctls
        case(
            "sysctl unsafe",
            bl,
            L,
            json!({"spec": {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                                            {"name": "kernel.msgmax", "value": "1"}]}}}),
            &[("sysctls", "spec.securityContext.sysctls[1].name")],
        ),
        case(
            "sysctl safe",
            bl,
            L,
            json!({"spec": {"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"},
                                                            {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                                            {"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]}}}),
            &[],
        ),
        case(
            // Upstream compares names exactly: the slash spelling is not in the safe set.
            "sysctl slash spelling",
            bl,
            L,
            json!({"spec": {"securityContext": {"sysctls": [{"name": "net/ipv4/tcp_syncookies", "value": "1"}]}}}),
            &[("sysctls", "spec.securityContext.sysctls[0].name")],
        ),
        // hostProbesAndHostLifecycle
        case(
            "probe host",
            bl,
            L,
            ctr(
                &b,
                json!({"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
                           "readinessProbe": {"tcpSocket": {"port": 80}},
                           "lifecycle": {"preStop": {"tcpSocket": {"host": "169.254.169.254", "port": 80}}}}),
            ),
            &[
                (
                    "hostProbesAndHostLifecycle",
                    "spec.containers[0].livenessProbe.httpGet.host",
                ),
                (
                    "hostProbesAndHostLifecycle",
                    "spec.containers[0].lifecycle.preStop.tcpSocket.host",
                ),
            ],
        ),
        case(
            "probe host empty",
            bl,
            L,
            ctr(
                &b,
                json!({"startupProbe": {"httpGet": {"host": "", "port": 80}},
                           "lifecycle": {"postStart": {"httpGet": {"port": 80}}}}),
            ),
            &[],
        ),
        case(
            "probe host before 1.34",
            bl,
            Version::V1(33),
            ctr(
                &b,
                json!({"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}),
            ),
            &[],
        ),
    ]);
}

#[test]
fn restricted_checks_violating_and_compliant() {
    let r = restricted_pod();
    let rs = Level::Restricted;
    run_cases(vec![
        // restrictedVolumes
        case(
            "hostPath volume",
            rs,
            L,
            json!({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
            // restrictedVolumes overrides hostPathVolumes at the restricted level.
            &[("restrictedVolumes", "spec.volumes[0].hostPath")],
        ),
        case(
            "nfs volume",
            rs,
            L,
            json!({"spec": {"volumes": [{"name": "c", "configMap": {"name": "x"}}, {"name": "n", "nfs": {"server": "s", "path": "/"}}]}}),
            &[("restrictedVolumes", "spec.volumes[1].nfs")],
        ),
        case(
            "allowed volumes",
            rs,
            L,
            json!({"spec": {"volumes": [
                {"name": "a", "configMap": {"name": "x"}}, {"name": "b", "downwardAPI": {}},
                {"name": "c", "emptyDir": {}}, {"name": "d", "projected": {"sources": []}},
                {"name": "e", "secret": {"secretName": "s"}}, {"name": "f", "csi": {"driver": "d"}},
                {"name": "g", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "h", "ephemeral": {}},
                {"name": "i", "image": {"reference": "r"}}]}}),
            &[],
        ),
        // allowPrivilegeEscalation
        case(
            "ape unset",
            rs,
            L,
            json!({"spec": {"containers": [{"name": "app", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]}}),
            &[(
                "allowPrivilegeEscalation",
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
            )],
        ),
        case(
            "ape true",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"allowPrivilegeEscalation": true}}),
            ),
            &[(
                "allowPrivilegeEscalation",
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
            )],
        ),
        // runAsNonRoot
        case(
            "runAsNonRoot pod false",
            rs,
            L,
            json!({"spec": {"securityContext": {"runAsNonRoot": false}}}),
            &[
                ("runAsNonRoot", "spec.securityContext.runAsNonRoot"),
                (
                    "runAsNonRoot",
                    "spec.containers[0].securityContext.runAsNonRoot",
                ),
            ],
        ),
        case(
            "runAsNonRoot container false",
            rs,
            L,
            ctr(&r, json!({"securityContext": {"runAsNonRoot": false}})),
            &[(
                "runAsNonRoot",
                "spec.containers[0].securityContext.runAsNonRoot",
            )],
        ),
        case(
            "runAsNonRoot on every container",
            rs,
            L,
            with(
                ctr(&r, json!({"securityContext": {"runAsNonRoot": true}})),
                &json!({"spec": {"securityContext": {"runAsNonRoot": null}}}),
            ),
            &[],
        ),
        // `hostUsers` is not trusted by default (`user_namespaces` off): judged as absent.
        case(
            "runAsNonRoot userns exception",
            rs,
            L,
            json!({"spec": {"hostUsers": false, "securityContext": {"runAsNonRoot": false, "runAsUser": 0}}}),
            &[
                ("runAsNonRoot", "spec.securityContext.runAsNonRoot"),
                (
                    "runAsNonRoot",
                    "spec.containers[0].securityContext.runAsNonRoot",
                ),
                ("runAsUser", "spec.securityContext.runAsUser"),
            ],
        ),
        trusting(case(
            "runAsNonRoot userns before 1.35",
            rs,
            Version::V1(34),
            json!({"spec": {"hostUsers": false, "securityContext": {"runAsNonRoot": null}}}),
            &[(
                "runAsNonRoot",
                "spec.containers[0].securityContext.runAsNonRoot",
            )],
        )),
        // runAsUser
        case(
            "runAsUser 0",
            rs,
            L,
            with(
                ctr(&r, json!({"securityContext": {"runAsUser": 0}})),
                &json!({"spec": {"securityContext": {"runAsUser": 0}}}),
            ),
            &[
                ("runAsUser", "spec.securityContext.runAsUser"),
                ("runAsUser", "spec.containers[0].securityContext.runAsUser"),
            ],
        ),
        case(
            "runAsUser 1000",
            rs,
            L,
            json!({"spec": {"securityContext": {"runAsUser": 1000}}}),
            &[],
        ),
        case(
            "runAsUser before 1.23",
            rs,
            Version::V1(22),
            json!({"spec": {"securityContext": {"runAsUser": 0}}}),
            &[],
        ),
        // seccompProfile_restricted
        case(
            "seccomp unset",
            rs,
            L,
            json!({"spec": {"securityContext": {"seccompProfile": null}}}),
            &[(
                "seccompProfile_restricted",
                "spec.containers[0].securityContext.seccompProfile.type",
            )],
        ),
        case(
            "seccomp pod unconfined",
            rs,
            L,
            json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
            &[
                (
                    "seccompProfile_restricted",
                    "spec.securityContext.seccompProfile.type",
                ),
                (
                    "seccompProfile_restricted",
                    "spec.containers[0].securityContext.seccompProfile.type",
                ),
            ],
        ),
        case(
            "seccomp container only",
            rs,
            L,
            with(
                ctr(
                    &r,
                    json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
                ),
                &json!({"spec": {"securityContext": {"seccompProfile": null}}}),
            ),
            &[],
        ),
        case(
            "seccomp container unconfined overrides pod",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            ),
            &[(
                "seccompProfile_restricted",
                "spec.containers[0].securityContext.seccompProfile.type",
            )],
        ),
        // capabilities_restricted
        case(
            "caps no drop",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
            ),
            &[(
                "capabilities_restricted",
                "spec.containers[0].securityContext.capabilities.drop",
            )],
        ),
        case(
            "caps add SYS_ADMIN",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
            ),
            // capabilities_restricted overrides capabilities_baseline from 1.22.
            &[(
                "capabilities_restricted",
                "spec.containers[0].securityContext.capabilities.add[0]",
            )],
        ),
        case(
            "caps add CHOWN",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"]}}}),
            ),
            &[(
                "capabilities_restricted",
                "spec.containers[0].securityContext.capabilities.add[1]",
            )],
        ),
        case(
            "caps add NET_BIND_SERVICE",
            rs,
            L,
            ctr(
                &r,
                json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}),
            ),
            &[],
        ),
        case(
            "caps before 1.22",
            rs,
            Version::V1(21),
            ctr(
                &r,
                json!({"securityContext": {"capabilities": {"drop": [], "add": ["CHOWN"]}}}),
            ),
            &[],
        ),
        // procMount_restricted
        case(
            "procMount restricted userns",
            rs,
            L,
            with(
                ctr(&r, json!({"securityContext": {"procMount": "Unmasked"}})),
                &json!({"spec": {"hostUsers": false}}),
            ),
            &[(
                "procMount_restricted",
                "spec.containers[0].securityContext.procMount",
            )],
        ),
        case(
            "procMount restricted no userns",
            rs,
            L,
            ctr(&r, json!({"securityContext": {"procMount": "Unmasked"}})),
            &[(
                "procMount_restricted",
                "spec.containers[0].securityContext.procMount",
            )],
        ),
        case(
            "procMount restricted before 1.35",
            rs,
            Version::V1(34),
            ctr(&r, json!({"securityContext": {"procMount": "Unmasked"}})),
            &[("procMount", "spec.containers[0].securityContext.procMount")],
        ),
        case(
            "procMount restricted Default",
            rs,
            L,
            ctr(&r, json!({"securityContext": {"procMount": "Default"}})),
            &[],
        ),
        // Baseline checks still run at restricted
        case(
            "restricted includes baseline",
            rs,
            L,
            with(
                ctr(&r, json!({"securityContext": {"privileged": true}})),
                &json!({"spec": {"hostPID": true}}),
            ),
            &[
                ("hostNamespaces", "spec.hostPID"),
                (
                    "privileged",
                    "spec.containers[0].securityContext.privileged",
                ),
            ],
        ),
    ]);
}

#[test]
fn privileged_level_checks_nothing() {
    let obj = with(
        baseline_pod(),
        &json!({"spec": {"hostPID": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
    );
    assert_eq!(run(Level::Privileged, L, &obj), vec![]);
    assert!(run(Level::Baseline, L, &obj).len() == 2);
}

fn privileged_template() -> Value {
    json!({
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "app", "image": "x", "securityContext": {"privileged": true}}]}
    })
}

#[test]
fn every_pod_bearing_kind_at_its_path() {
    let t = privileged_template();
    let spec = t.get("spec").cloned().unwrap_or_default();
    let cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        (
            "",
            "pods",
            "Pod",
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
            "spec",
        ),
        (
            "",
            "pods/ephemeralcontainers",
            "Pod",
            json!({"kind": "Pod", "spec": spec}),
            "spec",
        ),
        (
            "",
            "podtemplates",
            "PodTemplate",
            json!({"kind": "PodTemplate", "template": t}),
            "template.spec",
        ),
        (
            "",
            "replicationcontrollers",
            "ReplicationController",
            json!({"kind": "ReplicationController", "spec": {"replicas": 1, "template": t}}),
            "spec.template.spec",
        ),
        (
            "apps",
            "replicasets",
            "ReplicaSet",
            json!({"kind": "ReplicaSet", "spec": {"template": t}}),
            "spec.template.spec",
        ),
        (
            "apps",
            "deployments",
            "Deployment",
            json!({"kind": "Deployment", "spec": {"template": t}}),
            "spec.template.spec",
        ),
        (
            "apps",
            "statefulsets",
            "StatefulSet",
            json!({"kind": "StatefulSet", "spec": {"template": t}}),
            "spec.template.spec",
        ),
        (
            "apps",
            "daemonsets",
            "DaemonSet",
            json!({"kind": "DaemonSet", "spec": {"template": t}}),
            "spec.template.spec",
        ),
        (
            "batch",
            "jobs",
            "Job",
            json!({"kind": "Job", "spec": {"template": t}}),
            "spec.template.spec",
        ),
        (
            "batch",
            "cronjobs",
            "CronJob",
            json!({"kind": "CronJob", "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": t}}}}),
            "spec.jobTemplate.spec.template.spec",
        ),
    ];
    for (group, resource, kind, obj, prefix) in cases {
        let got = check_object(&Policy::latest(Level::Baseline), group, resource, &obj);
        assert_eq!(got.len(), 1, "{group}/{resource}: {got:?}");
        assert_eq!(got[0].check, "privileged");
        assert_eq!(
            got[0].field,
            format!("{prefix}.containers[0].securityContext.privileged")
        );
        assert_eq!(
            got[0].message,
            "privileged (container \"app\" must not set securityContext.privileged=true)"
        );
        // Lookup by kind agrees with lookup by resource.
        let by_kind = PodBearing::from_kind(kind).map(|k| pod_specs(k, &obj));
        let by_res = PodBearing::from_group_resource(group, resource).map(|k| pod_specs(k, &obj));
        assert_eq!(by_kind, by_res, "{kind}");
        assert_eq!(locate::pod_specs_by_kind(&obj).len(), 1, "{kind}");
        assert_eq!(by_res.unwrap_or_default()[0].path_prefix, prefix);
    }
}

#[test]
fn template_metadata_annotations_at_template_path() {
    let obj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {
        "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
        "spec": {"containers": [{"name": "app"}]}}}}}});
    let got = check_object(&Policy::latest(Level::Baseline), "batch", "cronjobs", &obj);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].field,
        "spec.jobTemplate.spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]"
    );
}

#[test]
fn resource_classification() {
    use PodBearing as P;
    assert_eq!(P::from_group_resource("", "pods"), Some(P::Pod));
    assert_eq!(
        P::from_group_resource("", "pods/ephemeralcontainers"),
        Some(P::Pod)
    );
    assert_eq!(P::from_group_resource("", "pods/resize"), Some(P::Pod));
    assert_eq!(
        P::from_group_resource("", "pods/somefuturething"),
        Some(P::Pod)
    );
    for ignored in [
        "exec",
        "attach",
        "binding",
        "eviction",
        "log",
        "portforward",
        "proxy",
        "status",
    ] {
        assert_eq!(
            P::from_group_resource("", &format!("pods/{ignored}")),
            None,
            "{ignored}"
        );
    }
    assert_eq!(P::from_group_resource("apps", "deployments/scale"), None);
    assert_eq!(P::from_group_resource("", "deployments"), None);
    assert_eq!(P::from_group_resource("extensions", "deployments"), None);
    assert_eq!(P::from_group_resource("", "configmaps"), None);
    assert_eq!(P::from_kind("ConfigMap"), None);
    for k in P::ALL {
        assert_eq!(P::from_kind(k.kind()), Some(k));
    }
    let cm = json!({"kind": "ConfigMap", "data": {"spec": "x"}});
    assert!(check_object(&Policy::latest(Level::Restricted), "", "configmaps", &cm).is_empty());
}

#[test]
fn init_and_ephemeral_containers_checked() {
    let obj = json!({"kind": "Pod", "spec": {
        "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
        "containers": [{"name": "app"}],
        "ephemeralContainers": [{"name": "debug"}, {"name": "dbg2", "securityContext": {"privileged": true}}]
    }});
    let got = run(Level::Baseline, L, &obj);
    assert_eq!(
        got,
        vec![
            (
                "privileged",
                "spec.initContainers[0].securityContext.privileged".to_owned()
            ),
            (
                "privileged",
                "spec.ephemeralContainers[1].securityContext.privileged".to_owned()
            ),
        ]
    );
    let got = check_object(
        &Policy::latest(Level::Restricted),
        "",
        "pods/ephemeralcontainers",
        &obj,
    );
    assert!(got.iter().any(|v| v.check == "allowPrivilegeEscalation"
        && v.field == "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation"
        && v.message.contains("container \"debug\"")));
}

#[test]
fn multiple_violations_all_reported() {
    let obj = json!({"kind": "Deployment", "spec": {"template": {"spec": {
    "hostNetwork": true,
    "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "d", "hostPath": {"path": "/dev"}}],
    "containers": [
        {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}},
         "ports": [{"containerPort": 1, "hostPort": 1}]},
        {"name": "b", "securityContext": {"privileged": true}}
    ]}}}});
    let got = check_object(
        &Policy::latest(Level::Baseline),
        "apps",
        "deployments",
        &obj,
    );
    let fields: Vec<&str> = got.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.template.spec.hostNetwork",
            "spec.template.spec.containers[0].securityContext.privileged",
            "spec.template.spec.containers[1].securityContext.privileged",
            "spec.template.spec.containers[0].securityContext.capabilities.add[0]",
            "spec.template.spec.containers[0].securityContext.capabilities.add[1]",
            "spec.template.spec.volumes[0].hostPath",
            "spec.template.spec.volumes[1].hostPath",
            "spec.template.spec.containers[0].ports[0].hostPort",
        ]
    );
}

pub(super) fn realistic_restricted_deployment() -> Value {
    json!({
      "apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web", "tier": "frontend"},
                   "annotations": {"deployment.kubernetes.io/revision": "3"}},
      "spec": {
        "replicas": 3, "revisionHistoryLimit": 5,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
          "metadata": {"labels": {"app": "web", "tier": "frontend"},
                       "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
          "spec": {
            "serviceAccountName": "web", "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"},
                                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "initContainers": [{
              "name": "migrate", "image": "registry.example/web-migrate:1.4.2",
              "command": ["/bin/migrate", "--up"],
              "envFrom": [{"secretRef": {"name": "web-db"}}],
              "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
              "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                  "capabilities": {"drop": ["ALL"]}}
            }],
            "containers": [{
              "name": "web", "image": "registry.example/web:1.4.2", "imagePullPolicy": "IfNotPresent",
              "args": ["--listen=:8080", "--metrics=:9090"],
              "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
              "env": [{"name": "LOG_LEVEL", "value": "info"},
                      {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "web-db", "key": "password"}}}],
              "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
              "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
              "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
              "startupProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 30},
              "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "5"]}}},
              "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true},
                               {"name": "tmp", "mountPath": "/tmp"},
                               {"name": "token", "mountPath": "/var/run/secrets/tokens"}],
              "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                  "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
            }, {
              "name": "proxy", "image": "registry.example/envoy:1.30",
              "ports": [{"containerPort": 15001}],
              "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
              "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 10002,
                                  "seccompProfile": {"type": "RuntimeDefault"},
                                  "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [
              {"name": "config", "configMap": {"name": "web-config"}},
              {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
              {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "vault"}}]}}
            ],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
              {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "web"}}}}]}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
              "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]
          }
        }
      }
    })
}

#[test]
fn realistic_deployment_passes_restricted() {
    let obj = realistic_restricted_deployment();
    for v in [L, Version::V1(25), Version::V1(30), Version::V1(35)] {
        let got = check_object(
            &Policy::new(Level::Restricted, v),
            "apps",
            "deployments",
            &obj,
        );
        assert!(got.is_empty(), "{v}: {got:?}");
    }
}

#[test]
fn default_nginx_pod_passes_baseline_fails_restricted() {
    let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}});
    assert!(check_object(&Policy::latest(Level::Baseline), "", "pods", &obj).is_empty());
    let got = check_object(&Policy::latest(Level::Restricted), "", "pods", &obj);
    let got: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|v| (v.check, v.field.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("allowPrivilegeEscalation", "spec.containers[0].securityContext.allowPrivilegeEscalation",
             "allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false)"),
            ("runAsNonRoot", "spec.containers[0].securityContext.runAsNonRoot",
             "runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true)"),
            ("seccompProfile_restricted", "spec.containers[0].securityContext.seccompProfile.type",
             "seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
            ("capabilities_restricted", "spec.containers[0].securityContext.capabilities.drop",
             "unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"])"),
        ]
    );
}

#[test]
fn windows_pods_exempt_from_ape_seccomp_capabilities() {
    let obj = json!({"kind": "Pod", "spec": {
        "os": {"name": "windows"},
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "win", "image": "mcr.microsoft.com/windows/nanoserver"}]}});
    assert_eq!(run(Level::Restricted, L, &obj), vec![]);
    assert_eq!(run(Level::Restricted, Version::V1(25), &obj), vec![]);
    // Before 1.25 there is no exemption.
    let checks: Vec<&str> = run(Level::Restricted, Version::V1(24), &obj)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        checks,
        vec![
            "allowPrivilegeEscalation",
            "seccompProfile_restricted",
            "capabilities_restricted"
        ]
    );
    // The exemption covers only those three: runAsNonRoot and baseline checks still apply.
    let bad = with(
        obj,
        &json!({"spec": {"securityContext": {"runAsNonRoot": false}, "hostNetwork": true}}),
    );
    let checks: Vec<&str> = run(Level::Restricted, L, &bad)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        checks,
        vec!["hostNamespaces", "runAsNonRoot", "runAsNonRoot"]
    );
}

#[test]
fn sysctl_sets_by_version() {
    let obj = |name: &str| {
        with(
            baseline_pod(),
            &json!({"spec": {"securityContext": {"sysctls": [{"name": name, "value": "1"}]}}}),
        )
    };
    let allowed = |name: &str, v: Version| run(Level::Baseline, v, &obj(name)).is_empty();
    assert!(allowed("net.ipv4.tcp_rmem", Version::V1(32)));
    assert!(!allowed("net.ipv4.tcp_rmem", Version::V1(26)));
    assert!(!allowed("net.ipv4.tcp_rmem", Version::V1(31)));
    assert!(allowed("net.ipv4.ip_local_reserved_ports", Version::V1(27)));
    assert!(!allowed(
        "net.ipv4.ip_local_reserved_ports",
        Version::V1(26)
    ));
    assert!(allowed("net.ipv4.tcp_keepalive_time", Version::V1(29)));
    assert!(!allowed("net.ipv4.tcp_keepalive_time", Version::V1(28)));
    assert!(allowed("net.ipv4.tcp_slow_start_after_idle", L));
    assert!(!allowed(
        "net.ipv4.tcp_slow_start_after_idle",
        Version::V1(36)
    ));
    assert!(allowed("kernel.shm_rmid_forced", Version::V1(0)));
    assert!(!allowed("kernel.shm_rmid_forced/x", L));
    assert!(!allowed("net.ipv4.tcp_syncookies.", L));
}

#[test]
fn parse_level_and_version() {
    assert_eq!(Level::parse("restricted"), Ok(Level::Restricted));
    assert!(Level::parse("Restricted").is_err());
    assert_eq!(Version::parse("latest"), Ok(Version::Latest));
    assert_eq!(Version::parse("v1.32"), Ok(Version::V1(32)));
    // PodSecurity's label grammar: the `v` is required (see version_tests.rs).
    assert!(Version::parse("1.26").is_err());
    for bad in [
        "",
        "v1.",
        "v2.3",
        "v1.x",
        "v1.+3",
        "1",
        "v1.99999999999999999999",
    ] {
        assert!(Version::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Version::V1(30).to_string(), "v1.30");
    assert!(Version::Latest.at_least(Version::LATEST_MINOR));
}

/// A policy capped at the API server's version (`latest_version`) runs that version's rules
/// but keeps the name written: `hostUsers: false` relaxes `runAsNonRoot` only from v1.35
/// (and only where the cluster's user namespaces are trusted).
#[test]
fn a_capped_policy_runs_older_rules_under_its_own_name() {
    let pod = with(
        restricted_pod(),
        &json!({"spec": {"hostUsers": false, "securityContext": {"runAsNonRoot": null}}}),
    );
    let mut capped = Policy::latest(Level::Restricted);
    capped.cap_latest(Version::V1(34));
    // Trusted, so only the cap can keep the exemption off.
    capped.trust_host_users(true);
    let checks = |p: &Policy| -> Vec<&str> {
        check_object(p, "", "pods", &pod)
            .into_iter()
            .map(|v| v.check)
            .collect()
    };
    assert_eq!(checks(&capped), ["runAsNonRoot"]);
    let mut uncapped_userns = Policy::latest(Level::Restricted);
    uncapped_userns.trust_host_users(true);
    assert!(checks(&uncapped_userns).is_empty());
    assert_eq!(capped.version.to_string(), "latest");
    assert_eq!(capped.rules(), Version::V1(34));
    // A pin older than the cap stays as it is; `latest` as the cap caps nothing.
    let mut older = Policy::new(Level::Restricted, Version::V1(30));
    older.cap_latest(Version::V1(34));
    assert_eq!(older.rules(), Version::V1(30));
    let mut uncapped = Policy::latest(Level::Restricted);
    uncapped.cap_latest(Version::Latest);
    assert_eq!(uncapped.rules(), Version::Latest);
}

/// `hostUsers: false` relaxes the v1.35 rules only when the operator says the API server keeps
/// the field (`user_namespaces`); otherwise the pod is judged as if it were absent, as
/// PodSecurity judges it after `dropDisabledFields` removed it (UserNamespacesSupport off).
#[test]
fn host_users_is_trusted_only_with_user_namespaces() {
    // The review's pod: restricted in every other respect, root, claiming a user namespace.
    let root = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "r"},
        "spec": {
            "hostUsers": false,
            "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    });
    let unmasked = with(
        ctr(
            &baseline_pod(),
            json!({"securityContext": {"procMount": "Unmasked"}}),
        ),
        &json!({"spec": {"hostUsers": false}}),
    );
    let ids = |p: &Policy, obj: &Value| -> Vec<&'static str> {
        check_object(p, "", "pods", obj)
            .into_iter()
            .map(|v| v.check)
            .collect()
    };
    for version in [L, Version::V1(35), Version::V1(37)] {
        let mut trusting = Policy::new(Level::Restricted, version);
        trusting.trust_host_users(true);
        let mut trusting_baseline = Policy::new(Level::Baseline, version);
        trusting_baseline.trust_host_users(true);
        // Default (user namespaces not known to be on): refused, as kube-apiserver would.
        let strict = Policy::new(Level::Restricted, version);
        assert!(!strict.user_namespaces());
        assert_eq!(
            ids(&strict, &root),
            ["runAsNonRoot", "runAsUser"],
            "{version}"
        );
        assert_eq!(
            ids(&Policy::new(Level::Baseline, version), &unmasked),
            ["procMount"],
            "{version}"
        );
        // Trusted: the v1.35 exemptions apply.
        assert!(ids(&trusting, &root).is_empty(), "{version}");
        assert!(ids(&trusting_baseline, &unmasked).is_empty(), "{version}");
    }
    // Before v1.35 nothing is relaxed either way.
    let mut old = Policy::new(Level::Restricted, Version::V1(34));
    old.trust_host_users(true);
    assert_eq!(ids(&old, &root), ["runAsNonRoot", "runAsUser"]);
}

/// An API server 1.19–1.26 (`latest_version`) copies the legacy seccomp annotations into unset
/// `seccompProfile` fields before PodSecurity judges a new pod (`applySeccompVersionSkew`), so
/// such an annotation is judged as the field it becomes; from 1.27 (and without
/// `latest_version`) it is not copied and only the fields count.
/// Rules before v1.19 read seccomp from the legacy annotations only; an API server 1.19–1.24
/// copies a set field into an unset annotation first, so a field `Unconfined` under such a
/// pinned policy is refused there (and only there).
#[test]
fn a_field_unconfined_counts_under_old_rules_where_the_api_server_copies_it() {
    let pod = with(
        baseline_pod(),
        &json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
    );
    let checks = |server: Option<u64>| -> Vec<&str> {
        let mut p = Policy::new(Level::Baseline, Version::V1(18));
        if let Some(n) = server {
            p.cap_latest(Version::V1(n));
        }
        check_object(&p, "", "pods", &pod)
            .into_iter()
            .map(|v| v.check)
            .collect()
    };
    for server in [19, 22, 24] {
        assert_eq!(
            checks(Some(server)),
            ["seccompProfile_baseline"],
            "v1.{server}"
        );
    }
    for server in [Some(18), Some(25), Some(30), None] {
        assert!(checks(server).is_empty(), "{server:?}");
    }
}

#[test]
fn legacy_seccomp_annotations_count_where_the_api_server_copies_them() {
    let at = |level: Level, server: Option<u64>| {
        let mut p = Policy::latest(level);
        if let Some(n) = server {
            p.cap_latest(Version::V1(n));
        }
        p
    };
    let annotated = |base: Value, annotations: Value| {
        with(base, &json!({"metadata": {"annotations": annotations}}))
    };
    let found = |p: &Policy, obj: &Value| -> Vec<(&'static str, String, String)> {
        check_object(p, "", "pods", obj)
            .into_iter()
            .map(|v| (v.check, v.field, v.message))
            .collect()
    };
    const POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
    const APP: &str = "container.seccomp.security.alpha.kubernetes.io/app";

    // Baseline: `unconfined` beside an unset field is `Unconfined`.
    let pod_unconfined = annotated(baseline_pod(), json!({POD: "unconfined"}));
    let ctr_unconfined = annotated(baseline_pod(), json!({APP: "unconfined"}));
    for server in [19, 22, 26] {
        assert_eq!(
            found(&at(Level::Baseline, Some(server)), &pod_unconfined),
            [(
                "seccompProfile_baseline",
                format!("metadata.annotations[{POD}]"),
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".to_owned()
            )],
            "v1.{server}"
        );
        assert_eq!(
            found(&at(Level::Baseline, Some(server)), &ctr_unconfined),
            [(
                "seccompProfile_baseline",
                format!("metadata.annotations[{APP}]"),
                "seccompProfile (container \"app\" must not set securityContext.seccompProfile.type to \"Unconfined\")".to_owned()
            )],
            "v1.{server}"
        );
    }
    // Not copied from 1.27, nor where the API server's version is not known.
    for server in [Some(27), Some(30), None] {
        assert!(found(&at(Level::Baseline, server), &pod_unconfined).is_empty());
        assert!(found(&at(Level::Baseline, server), &ctr_unconfined).is_empty());
    }
    // A set field is not overwritten: the annotation is not copied (and the API server's
    // validation refuses the mismatch).
    let field_set = annotated(
        with(
            baseline_pod(),
            &json!({"spec": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}}),
        ),
        json!({POD: "unconfined"}),
    );
    assert!(found(&at(Level::Baseline, Some(26)), &field_set).is_empty());
    // Baseline refuses only what becomes `Unconfined`.
    let other = annotated(
        baseline_pod(),
        json!({POD: "bogus", APP: "runtime/default"}),
    );
    assert!(found(&at(Level::Baseline, Some(26)), &other).is_empty());

    // Restricted: the review's bypass — a pod-level profile, a container annotation `unconfined`.
    let r = at(Level::Restricted, Some(26));
    let bypass = annotated(restricted_pod(), json!({APP: "unconfined"}));
    assert_eq!(
        found(&r, &bypass),
        [(
            "seccompProfile_restricted",
            format!("metadata.annotations[{APP}]"),
            "seccompProfile (container \"app\" must not set securityContext.seccompProfile.type to \"Unconfined\")".to_owned()
        )]
    );
    assert!(found(&at(Level::Restricted, Some(27)), &bypass).is_empty());
    assert!(found(&Policy::latest(Level::Restricted), &bypass).is_empty());
    // Anything that would not become RuntimeDefault / Localhost is refused at restricted.
    for value in ["bogus", "localhost/", ""] {
        let obj = annotated(restricted_pod(), json!({APP: value}));
        assert_eq!(
            found(&r, &obj),
            [(
                "seccompProfile_restricted",
                format!("metadata.annotations[{APP}]"),
                format!("seccompProfile (forbidden annotation {APP}={value:?})")
            )],
            "{value:?}"
        );
    }
    for value in ["runtime/default", "docker/default", "localhost/p.json"] {
        let obj = annotated(restricted_pod(), json!({APP: value}));
        assert!(found(&r, &obj).is_empty(), "{value:?}");
    }
    // A pod-level `unconfined` is refused even where every container sets a profile.
    let mut pod_level = annotated(restricted_pod(), json!({POD: "unconfined"}));
    pod_level["spec"]["securityContext"]["seccompProfile"] = Value::Null;
    pod_level["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
        json!({"type": "RuntimeDefault"});
    assert_eq!(
        found(&r, &pod_level)
            .into_iter()
            .map(|(c, f, _)| (c, f))
            .collect::<Vec<_>>(),
        [(
            "seccompProfile_restricted",
            format!("metadata.annotations[{POD}]")
        )]
    );
    // An allowed annotation is not counted as a profile (stricter than that API server, as
    // before): the container must still set one.
    let mut credited = annotated(restricted_pod(), json!({POD: "runtime/default"}));
    credited["spec"]["securityContext"]["seccompProfile"] = Value::Null;
    assert_eq!(
        found(&r, &credited)
            .into_iter()
            .map(|(c, f, _)| (c, f))
            .collect::<Vec<_>>(),
        [(
            "seccompProfile_restricted",
            "spec.containers[0].securityContext.seccompProfile.type".to_owned()
        )]
    );
    // Templates: the annotations of the template's metadata.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {
            "metadata": {"annotations": {APP: "unconfined"}},
            "spec": restricted_pod()["spec"].clone()
        }}
    });
    let got: Vec<String> = check_object(&r, "apps", "deployments", &deployment)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(got, [format!("spec.template.metadata.annotations[{APP}]")]);
}

#[test]
fn malformed_input_never_panics() {
    let junk = [
        json!(null),
        json!([]),
        json!("spec"),
        json!({"spec": []}),
        json!({"spec": {"containers": "x", "volumes": {"a": 1}}}),
        json!({"spec": {"containers": [1, null, [], {"securityContext": []}, {"securityContext": {"capabilities": {"add": "SYS_ADMIN", "drop": 5}}}],
                        "securityContext": {"sysctls": {"a": 1}, "seccompProfile": 3, "seLinuxOptions": {"type": 1}},
                        "volumes": [1, {"name": 2, "hostPath": null}], "os": 7, "hostUsers": "false"},
                "metadata": {"annotations": ["x"]}}),
        json!({"spec": {"template": null, "jobTemplate": {"spec": 1}}}),
        json!({"template": {"spec": {"containers": [{"ports": [1, {"hostPort": "80"}], "livenessProbe": 1, "lifecycle": []}]}}}),
    ];
    for obj in &junk {
        for (g, r) in [
            ("", "pods"),
            ("", "podtemplates"),
            ("apps", "deployments"),
            ("batch", "cronjobs"),
        ] {
            for level in [Level::Baseline, Level::Restricted] {
                for v in [L, Version::V1(0), Version::V1(18), Version::V1(34)] {
                    let _ = check_object(&Policy::new(level, v), g, r, obj);
                }
            }
        }
    }
    // Malformed security-relevant values are refused, not skipped.
    let got = run(Level::Restricted, L, &junk[5]);
    // (At restricted, capabilities_restricted judges `add`: it overrides capabilities_baseline.)
    assert!(got.iter().any(|(c, f)| *c == "capabilities_restricted"
        && f == "spec.containers[4].securityContext.capabilities.add"));
    assert!(got.iter().any(|(c, _)| *c == "sysctls"));
    assert!(got.iter().any(|(c, _)| *c == "seLinuxOptions"));
}
