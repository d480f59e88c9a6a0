//! Each check at the version just before and at each of its changes (the `MinimumVersion`s
//! of `policy/check_*.go`), one table row per change.

use serde_json::{json, Value};

use super::{
    baseline_1_0, checks, found, pod, pod_with_annotations, restricted_1_0, restricted_1_19,
    restricted_1_22, restricted_1_8, v, B, R,
};
use crate::sanitize::pss::{Level, Version};

struct Boundary {
    what: &'static str,
    level: Level,
    /// The last version with the old rule, and the first with the new one.
    before: u64,
    at: u64,
    obj: Value,
    /// Checks reported before and at the change.
    want_before: &'static [&'static str],
    want_at: &'static [&'static str],
}

fn boundaries() -> Vec<Boundary> {
    let sysctl = |name: &str| {
        let mut s = baseline_1_0();
        s["securityContext"] = json!({"sysctls": [{"name": name, "value": "1"}]});
        pod(s)
    };
    let windows = |mut s: Value| {
        s["os"] = json!({"name": "windows"});
        pod(s)
    };
    let userns = |mut s: Value, patch: &dyn Fn(&mut Value)| {
        s["hostUsers"] = json!(false);
        patch(&mut s);
        pod(s)
    };
    let mut unmasked_base = baseline_1_0();
    unmasked_base["containers"][0]["securityContext"] = json!({"procMount": "Unmasked"});
    let mut unmasked_restricted = restricted_1_22();
    unmasked_restricted["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
    let mut sys_admin_old = restricted_1_19();
    sys_admin_old["containers"][0]["securityContext"]["capabilities"] =
        json!({"add": ["SYS_ADMIN"]});
    let mut sys_admin_new = restricted_1_22();
    sys_admin_new["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
    let mut root = restricted_1_22();
    root["securityContext"]["runAsUser"] = json!(0);
    let mut probe = baseline_1_0();
    probe["containers"][0]["livenessProbe"] =
        json!({"tcpSocket": {"host": "10.0.0.1", "port": 80}});
    let mut engine = baseline_1_0();
    engine["securityContext"] = json!({"seLinuxOptions": {"type": "container_engine_t"}});
    let mut seccomp_field = baseline_1_0();
    seccomp_field["securityContext"] = json!({"seccompProfile": {"type": "Unconfined"}});
    vec![
        Boundary {
            what: "allowPrivilegeEscalation starts at 1.8 (init containers and containers)",
            level: R,
            before: 7,
            at: 8,
            obj: pod(restricted_1_0()),
            want_before: &[],
            want_at: &["allowPrivilegeEscalation"],
        },
        Boundary {
            what: "seccomp: the alpha annotations until 1.18",
            level: B,
            before: 18,
            at: 19,
            obj: pod_with_annotations(
                json!({"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}),
                baseline_1_0(),
            ),
            want_before: &["seccompProfile_baseline"],
            want_at: &[],
        },
        Boundary {
            what: "seccomp: the seccompProfile fields from 1.19",
            level: B,
            before: 18,
            at: 19,
            obj: pod(seccomp_field),
            want_before: &[],
            want_at: &["seccompProfile_baseline"],
        },
        Boundary {
            what: "seccompProfile_restricted requires a profile from 1.19",
            level: R,
            before: 18,
            at: 19,
            obj: pod(restricted_1_8()),
            want_before: &[],
            want_at: &["seccompProfile_restricted"],
        },
        Boundary {
            what: "capabilities_restricted requires drop ALL from 1.22",
            level: R,
            before: 21,
            at: 22,
            obj: pod(restricted_1_19()),
            want_before: &[],
            want_at: &["capabilities_restricted"],
        },
        Boundary {
            what: "an added capability: capabilities_baseline until 1.21",
            level: R,
            before: 21,
            at: 22,
            obj: pod(sys_admin_old),
            want_before: &["capabilities_baseline"],
            want_at: &["capabilities_restricted"],
        },
        Boundary {
            what: "an added capability: capabilities_restricted alone from 1.22",
            level: R,
            before: 22,
            at: 37,
            obj: pod(sys_admin_new),
            want_before: &["capabilities_restricted"],
            want_at: &["capabilities_restricted"],
        },
        Boundary {
            what: "runAsUser from 1.23",
            level: R,
            before: 22,
            at: 23,
            obj: pod(root.clone()),
            want_before: &[],
            want_at: &["runAsUser"],
        },
        Boundary {
            what: "windows pods: allowPrivilegeEscalation, seccomp, capabilities exempt from 1.25",
            level: R,
            before: 24,
            at: 25,
            obj: windows(restricted_1_0()),
            want_before: &[
                "allowPrivilegeEscalation",
                "seccompProfile_restricted",
                "capabilities_restricted",
            ],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.ip_local_reserved_ports safe from 1.27",
            level: B,
            before: 26,
            at: 27,
            obj: sysctl("net.ipv4.ip_local_reserved_ports"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_keepalive_time safe from 1.29",
            level: B,
            before: 28,
            at: 29,
            obj: sysctl("net.ipv4.tcp_keepalive_time"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_fin_timeout safe from 1.29",
            level: B,
            before: 28,
            at: 29,
            obj: sysctl("net.ipv4.tcp_fin_timeout"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_keepalive_intvl safe from 1.29",
            level: B,
            before: 28,
            at: 29,
            obj: sysctl("net.ipv4.tcp_keepalive_intvl"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_keepalive_probes safe from 1.29",
            level: B,
            before: 28,
            at: 29,
            obj: sysctl("net.ipv4.tcp_keepalive_probes"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "seLinux container_engine_t allowed from 1.31",
            level: B,
            before: 30,
            at: 31,
            obj: pod(engine),
            want_before: &["seLinuxOptions"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_rmem safe from 1.32",
            level: B,
            before: 31,
            at: 32,
            obj: sysctl("net.ipv4.tcp_rmem"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_wmem safe from 1.32",
            level: B,
            before: 31,
            at: 32,
            obj: sysctl("net.ipv4.tcp_wmem"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "probe and lifecycle hosts forbidden from 1.34",
            level: B,
            before: 33,
            at: 34,
            obj: pod(probe),
            want_before: &[],
            want_at: &["hostProbesAndHostLifecycle"],
        },
        Boundary {
            what: "baseline procMount relaxed for hostUsers: false from 1.35",
            level: B,
            before: 34,
            at: 35,
            obj: userns(unmasked_base, &|_| {}),
            want_before: &["procMount"],
            want_at: &[],
        },
        Boundary {
            what: "restricted procMount: procMount_restricted replaces procMount from 1.35",
            level: R,
            before: 34,
            at: 35,
            obj: userns(unmasked_restricted, &|_| {}),
            want_before: &["procMount"],
            want_at: &["procMount_restricted"],
        },
        Boundary {
            what: "runAsNonRoot and runAsUser skipped for hostUsers: false from 1.35",
            level: R,
            before: 34,
            at: 35,
            obj: userns(root, &|s| {
                s["securityContext"]["runAsNonRoot"] = json!(false)
            }),
            want_before: &["runAsNonRoot", "runAsUser"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_slow_start_after_idle safe from 1.37",
            level: B,
            before: 36,
            at: 37,
            obj: sysctl("net.ipv4.tcp_slow_start_after_idle"),
            want_before: &["sysctls"],
            want_at: &[],
        },
        Boundary {
            what: "net.ipv4.tcp_notsent_lowat safe from 1.37",
            level: B,
            before: 36,
            at: 37,
            obj: sysctl("net.ipv4.tcp_notsent_lowat"),
            want_before: &["sysctls"],
            want_at: &[],
        },
    ]
}

#[test]
fn every_check_changes_at_upstream_s_version() {
    for b in boundaries() {
        assert_eq!(
            checks(b.level, v(b.before), &b.obj),
            b.want_before,
            "{} (v1.{})",
            b.what,
            b.before
        );
        assert_eq!(
            checks(b.level, v(b.at), &b.obj),
            b.want_at,
            "{} (v1.{})",
            b.what,
            b.at
        );
        // latest and versions beyond the newest known one judge as v1.37 does.
        let newest = found(b.level, v(Version::LATEST_MINOR), &b.obj);
        for ver in [Version::Latest, v(38), v(u64::MAX)] {
            assert_eq!(found(b.level, ver, &b.obj), newest, "{} ({ver})", b.what);
        }
    }
}
