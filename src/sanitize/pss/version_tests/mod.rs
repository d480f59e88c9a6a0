//! Pinned-version tests: each check's revisions at the version just before and at each change,
//! the restricted overrides, the version grammar, and an oracle built the way upstream's
//! fixture generator builds its minimal valid pods (`pod-security-admission/test/fixtures.go`).

use serde_json::{json, Value};

use super::versions::{active_ids, effective_minor, REGISTRY};
use super::*;

const B: Level = Level::Baseline;
const R: Level = Level::Restricted;

fn v(minor: u64) -> Version {
    Version::V1(minor)
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn pod_with_annotations(annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": annotations}, "spec": spec})
}

/// The policy as upstream's PodSecurity library applies it to the pod it is given: these tests
/// check the port of `policy/check_*.go`, so `hostUsers` is taken as reaching it (the API server
/// runs with user namespaces on; without, the proxy judges it absent: `pss/tests.rs`).
fn upstream(level: Level, version: Version) -> Policy {
    let mut p = Policy::new(level, version);
    p.trust_host_users(true);
    p
}

/// `(check, field)` of every violation.
fn found(level: Level, version: Version, obj: &Value) -> Vec<(&'static str, String)> {
    check_object(&upstream(level, version), "", "pods", obj)
        .into_iter()
        .map(|x| (x.check, x.field))
        .collect()
}

fn checks(level: Level, version: Version, obj: &Value) -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = found(level, version, obj)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    ids.dedup();
    ids
}

fn messages(level: Level, version: Version, obj: &Value) -> Vec<String> {
    check_object(&upstream(level, version), "", "pods", obj)
        .into_iter()
        .map(|x| x.message)
        .collect()
}

// --- upstream's minimal valid pods (test/fixtures.go `minimalValidPods`) ---------------------

/// Baseline, valid at every version: one init container and one container, nothing set.
fn baseline_1_0() -> Value {
    json!({
        "initContainers": [{"name": "initcontainer1", "image": "k8s.gcr.io/pause"}],
        "containers": [{"name": "container1", "image": "k8s.gcr.io/pause"}]
    })
}

/// Restricted 1.0+: baseline + pod `runAsNonRoot: true`.
fn restricted_1_0() -> Value {
    let mut s = baseline_1_0();
    s["securityContext"] = json!({"runAsNonRoot": true});
    s
}

/// Restricted 1.8+: `allowPrivilegeEscalation: false` on the container and the init container.
fn restricted_1_8() -> Value {
    let mut s = restricted_1_0();
    for list in ["containers", "initContainers"] {
        s[list][0]["securityContext"] = json!({"allowPrivilegeEscalation": false});
    }
    s
}

/// Restricted 1.19+: pod `seccompProfile.type: RuntimeDefault`.
fn restricted_1_19() -> Value {
    let mut s = restricted_1_8();
    s["securityContext"]["seccompProfile"] = json!({"type": "RuntimeDefault"});
    s
}

/// Restricted 1.22+: `capabilities.drop: [ALL]` on both containers.
fn restricted_1_22() -> Value {
    let mut s = restricted_1_19();
    for list in ["containers", "initContainers"] {
        s[list][0]["securityContext"]["capabilities"] = json!({"drop": ["ALL"]});
    }
    s
}

/// The minimal restricted pod upstream uses at `minor` (the newest stage at or below it).
fn minimal_restricted(minor: u64) -> Value {
    match minor {
        0..=7 => restricted_1_0(),
        8..=18 => restricted_1_8(),
        19..=21 => restricted_1_19(),
        _ => restricted_1_22(),
    }
}

/// Oracle: upstream requires each minimal pod to pass at its level and version, and every
/// generated fixture starts from it; a stage's pod must also fail at the next stage's version
/// on exactly the check that stage adds, on both containers.
#[test]
fn upstream_minimal_valid_pods_pass_at_every_version() {
    let all: Vec<Version> = (0..=40).map(v).chain([Version::Latest]).collect();
    for &ver in &all {
        let m = effective_minor(ver);
        assert_eq!(
            found(B, ver, &pod(baseline_1_0())),
            vec![],
            "baseline {ver}"
        );
        assert_eq!(
            found(R, ver, &pod(minimal_restricted(m))),
            vec![],
            "restricted {ver}"
        );
    }
    let both = |check: &'static str, rest: &str| {
        vec![
            (check, format!("spec.initContainers[0].{rest}")),
            (check, format!("spec.containers[0].{rest}")),
        ]
    };
    assert_eq!(
        found(R, v(8), &pod(restricted_1_0())),
        both(
            "allowPrivilegeEscalation",
            "securityContext.allowPrivilegeEscalation"
        )
    );
    assert_eq!(
        found(R, v(19), &pod(restricted_1_8())),
        both(
            "seccompProfile_restricted",
            "securityContext.seccompProfile.type"
        )
    );
    assert_eq!(
        found(R, v(22), &pod(restricted_1_19())),
        both(
            "capabilities_restricted",
            "securityContext.capabilities.drop"
        )
    );
    // The baseline pod fails restricted at 1.0 only on runAsNonRoot.
    assert_eq!(
        found(R, v(0), &pod(baseline_1_0())),
        both("runAsNonRoot", "securityContext.runAsNonRoot")
    );
}

// --- the registry ----------------------------------------------------------------------------

#[test]
fn registry_is_upstream_s_table() {
    // Baseline checks first, then restricted ones, each sorted by ID (registry.go `populate`).
    let (base, restr): (Vec<_>, Vec<_>) = REGISTRY.iter().partition(|c| c.level == B);
    assert_eq!(base.len() + restr.len(), 19);
    for group in [&base, &restr] {
        assert!(group.windows(2).all(|w| w[0].id < w[1].id), "{group:?}");
    }
    assert_eq!(REGISTRY[base.len() - 1].id, base[base.len() - 1].id);
    for c in REGISTRY {
        assert!(c.revisions.windows(2).all(|w| w[0] < w[1]), "{}", c.id);
    }
    // `latest` is the newest MinimumVersion of any check (1.37: sysctls).
    let newest = REGISTRY.iter().filter_map(|c| c.revisions.last()).max();
    assert_eq!(newest, Some(&Version::LATEST_MINOR));
    assert_eq!(Version::LATEST_MINOR, 37);
}

#[test]
fn active_checks_by_level_and_version() {
    let baseline_1_0 = vec![
        "appArmorProfile",
        "capabilities_baseline",
        "hostNamespaces",
        "hostPathVolumes",
        "hostPorts",
        "privileged",
        "procMount",
        "seLinuxOptions",
        "seccompProfile_baseline",
        "sysctls",
        "windowsHostProcess",
    ];
    for minor in [0, 7, 18, 33] {
        assert_eq!(active_ids(B, v(minor)), baseline_1_0, "v1.{minor}");
    }
    let mut baseline_1_34 = baseline_1_0.clone();
    baseline_1_34.insert(5, "hostProbesAndHostLifecycle");
    for ver in [v(34), v(37), v(99), Version::Latest] {
        assert_eq!(active_ids(B, ver), baseline_1_34, "{ver}");
    }
    // Restricted: hostPathVolumes is replaced by restrictedVolumes at every version, no
    // allowPrivilegeEscalation before 1.8, the seccomp and capabilities checks swap at 1.19 and
    // 1.22, runAsUser from 1.23, procMount_restricted replaces procMount from 1.35.
    let restricted = |minor: u64| active_ids(R, v(minor));
    let common = [
        "appArmorProfile",
        "hostNamespaces",
        "hostPorts",
        "privileged",
        "seLinuxOptions",
        "sysctls",
        "windowsHostProcess",
    ];
    let with = |extra: &[&'static str]| {
        let mut ids: Vec<&'static str> = common.to_vec();
        ids.extend_from_slice(extra);
        ids.sort_by_key(|id| REGISTRY.iter().position(|c| c.id == *id));
        ids
    };
    let r0 = [
        "capabilities_baseline",
        "procMount",
        "seccompProfile_baseline",
        "restrictedVolumes",
        "runAsNonRoot",
    ];
    assert_eq!(restricted(0), with(&r0));
    assert_eq!(restricted(7), with(&r0));
    let mut r8 = r0.to_vec();
    r8.push("allowPrivilegeEscalation");
    assert_eq!(restricted(8), with(&r8));
    assert_eq!(restricted(18), with(&r8));
    let r19 = [
        "capabilities_baseline",
        "procMount",
        "allowPrivilegeEscalation",
        "restrictedVolumes",
        "runAsNonRoot",
        "seccompProfile_restricted",
    ];
    assert_eq!(restricted(19), with(&r19));
    assert_eq!(restricted(21), with(&r19));
    let r22 = [
        "procMount",
        "allowPrivilegeEscalation",
        "capabilities_restricted",
        "restrictedVolumes",
        "runAsNonRoot",
        "seccompProfile_restricted",
    ];
    assert_eq!(restricted(22), with(&r22));
    let mut r23 = r22.to_vec();
    r23.push("runAsUser");
    assert_eq!(restricted(23), with(&r23));
    assert_eq!(restricted(33), with(&r23));
    let mut r34 = r23.clone();
    r34.push("hostProbesAndHostLifecycle");
    assert_eq!(restricted(34), with(&r34));
    let mut r35 = r34.clone();
    r35.retain(|id| *id != "procMount");
    r35.push("procMount_restricted");
    assert_eq!(restricted(35), with(&r35));
    assert_eq!(active_ids(R, Version::Latest), with(&r35));
    assert_eq!(
        active_ids(Level::Privileged, Version::Latest),
        Vec::<&str>::new()
    );
}

// --- each check at the version just before and at each change --------------------------------

mod boundaries;

#[test]
fn restricted_volumes_replace_host_path_volumes_at_every_version() {
    for minor in [0, 7, 22, 37] {
        let mut s = minimal_restricted(minor);
        s["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}]);
        assert_eq!(
            found(R, v(minor), &pod(s.clone())),
            vec![("restrictedVolumes", "spec.volumes[0].hostPath".to_owned())],
            "v1.{minor}"
        );
        assert_eq!(
            found(B, v(minor), &pod(s)),
            vec![("hostPathVolumes", "spec.volumes[0].hostPath".to_owned())],
            "v1.{minor}"
        );
    }
}

#[test]
fn unversioned_allowances_hold_at_every_version() {
    // `image` volumes (patched into restrictedVolumes_1_0) and the AppArmor fields (patched into
    // appArmorProfile_1_0) apply even when pinned to v1.0.
    let mut s = restricted_1_0();
    s["volumes"] = json!([{"name": "i", "image": {"reference": "registry.example/data:1"}}]);
    assert_eq!(found(R, v(0), &pod(s)), vec![]);
    let mut s = baseline_1_0();
    s["securityContext"] = json!({"appArmorProfile": {"type": "Unconfined"}});
    assert_eq!(checks(B, v(0), &pod(s)), vec!["appArmorProfile"]);
}

#[test]
fn legacy_seccomp_annotations_as_upstream_reads_them() {
    let at = |annotations: Value| {
        let obj = pod_with_annotations(annotations, baseline_1_0());
        (found(B, v(18), &obj), messages(B, v(18), &obj))
    };
    // Allowed values: runtime/default, docker/default, localhost/*.
    for ok in [
        "runtime/default",
        "docker/default",
        "localhost/profile.json",
    ] {
        let (got, _) = at(json!({
            "seccomp.security.alpha.kubernetes.io/pod": ok,
            "container.seccomp.security.alpha.kubernetes.io/container1": ok
        }));
        assert_eq!(got, vec![], "{ok}");
    }
    // Anything else is forbidden, the empty string too.
    for bad in ["unconfined", "", "runtime/other"] {
        let (got, msgs) = at(json!({"seccomp.security.alpha.kubernetes.io/pod": bad}));
        assert_eq!(
            got,
            vec![(
                "seccompProfile_baseline",
                "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]".to_owned()
            )],
            "{bad:?}"
        );
        assert_eq!(
            msgs,
            vec![format!(
                "seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod={bad:?})"
            )]
        );
    }
    // Container annotations count only for containers of the pod (init containers included).
    let (got, _) = at(json!({
        "container.seccomp.security.alpha.kubernetes.io/initcontainer1": "unconfined",
        "container.seccomp.security.alpha.kubernetes.io/nosuch": "unconfined"
    }));
    assert_eq!(
        got,
        vec![(
            "seccompProfile_baseline",
            "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/initcontainer1]"
                .to_owned()
        )]
    );
    // At restricted before 1.19 the same annotation check runs (nothing overrides it yet).
    let obj = pod_with_annotations(
        json!({"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}),
        restricted_1_8(),
    );
    assert_eq!(checks(R, v(18), &obj), vec!["seccompProfile_baseline"]);
    assert_eq!(checks(R, v(19), &obj), vec!["seccompProfile_restricted"]);
}

#[test]
fn sysctl_names_compare_exactly() {
    // Upstream's set lookup does not normalise the slash-separated spelling.
    let mut s = baseline_1_0();
    s["securityContext"] = json!({"sysctls": [{"name": "kernel/shm_rmid_forced", "value": "1"}]});
    let obj = pod(s);
    assert_eq!(checks(B, Version::Latest, &obj), vec!["sysctls"]);
    assert_eq!(
        messages(B, Version::Latest, &obj),
        vec!["forbidden sysctls (kernel/shm_rmid_forced)"]
    );
}

#[test]
fn messages_in_upstream_s_words() {
    let mut s = baseline_1_0();
    s["securityContext"] = json!({"appArmorProfile": {"type": "Unconfined"},
                                  "seLinuxOptions": {"user": "u", "role": "r"}});
    s["containers"][0]["securityContext"] = json!({"appArmorProfile": {"type": "Unconfined"}});
    let obj = pod_with_annotations(
        json!({"container.apparmor.security.beta.kubernetes.io/container1": "unconfined"}),
        s,
    );
    assert_eq!(
        messages(B, Version::Latest, &obj),
        vec![
            r#"forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/container1=\"unconfined\"")"#,
            r#"forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")"#,
            r#"forbidden AppArmor profile (container "container1" must not set AppArmor profile type to "Unconfined")"#,
            "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: user may not be set)",
            "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: role may not be set)",
        ]
    );
}

#[test]
fn versions_parse_as_pod_security_labels_do() {
    for (s, want) in [
        ("latest", Version::Latest),
        ("v1.0", v(0)),
        ("v1.7", v(7)),
        ("v1.25", v(25)),
        ("v1.99", v(99)),
        ("v1.9223372036854775807", v(9_223_372_036_854_775_807)),
    ] {
        assert_eq!(Version::parse(s), Ok(want), "{s}");
    }
    for bad in [
        "",
        "Latest",
        "v1",
        "v1.",
        "1.25",
        "v1.05",
        "v1.00",
        "v2.0",
        "v1.25.3",
        "V1.25",
        " v1.25",
        "v1.25 ",
        "v1.-1",
        "v1.+1",
        "v1.x",
        "v1.9223372036854775808",
    ] {
        assert!(Version::parse(bad).is_err(), "{bad:?}");
    }
    // Beyond the newest known version, and latest, evaluate as the newest rules.
    assert_eq!(effective_minor(Version::Latest), Version::LATEST_MINOR);
    assert_eq!(effective_minor(v(99)), Version::LATEST_MINOR);
    assert_eq!(effective_minor(v(36)), 36);
    // The policy string keeps what was written, as PodSecurity's messages do.
    assert_eq!(v(99).to_string(), "v1.99");
}
