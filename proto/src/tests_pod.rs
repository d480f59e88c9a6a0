//! The rarer pod fields, protobuf's merge rules, unknown field numbers and depth.
use super::*;
use k8s_pb::{
    api::core::v1 as core,
    apimachinery::pkg::{
        apis::meta::v1::ObjectMeta,
        runtime::{TypeMeta, Unknown},
        util::intstr::IntOrString,
    },
};

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: None,
        content_type: None,
    };
    [b"k8s\0".to_vec(), u.encode_to_vec()].concat()
}

fn pod_bytes(spec: core::PodSpec) -> Vec<u8> {
    core::Pod {
        metadata: Some(ObjectMeta {
            name: Some("p".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    }
    .encode_to_vec()
}

fn c(name: &str) -> core::Container {
    core::Container {
        name: Some(name.into()),
        image: Some("busybox".into()),
        ..Default::default()
    }
}

/// A length-delimited field `n` holding `v`.
fn ld(n: u32, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(n, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(v.len() as u64, &mut out);
    out.extend_from_slice(v);
    out
}

#[test]
fn rarer_pod_fields_are_carried_over() {
    let port = |p: i32| {
        Some(IntOrString {
            r#type: Some(0),
            int_val: Some(p),
            str_val: None,
        })
    };
    let mut app = c("app");
    app.liveness_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                host: Some("169.254.169.254".into()),
                port: port(80),
                ..Default::default()
            }),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    });
    app.lifecycle = Some(core::Lifecycle {
        pre_stop: Some(core::LifecycleHandler {
            tcp_socket: Some(core::TcpSocketAction {
                port: port(9),
                host: Some("10.0.0.1".into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    app.security_context = Some(core::SecurityContext {
        windows_options: Some(core::WindowsSecurityContextOptions {
            host_process: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    });
    let debug = core::EphemeralContainer {
        ephemeral_container_common: Some(core::EphemeralContainerCommon {
            name: Some("debugger".into()),
            image: Some("busybox".into()),
            security_context: Some(core::SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }),
        target_container_name: Some("app".into()),
    };
    let spec = core::PodSpec {
        containers: vec![app],
        ephemeral_containers: vec![debug],
        volumes: vec![core::Volume {
            name: Some("root".into()),
            volume_source: Some(core::VolumeSource {
                host_path: Some(core::HostPathVolumeSource {
                    path: Some("/".into()),
                    r#type: Some("Directory".into()),
                }),
                ..Default::default()
            }),
        }],
        affinity: Some(core::Affinity {
            node_affinity: Some(core::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                    node_selector_terms: vec![core::NodeSelectorTerm {
                        match_expressions: vec![core::NodeSelectorRequirement {
                            key: Some("zone".into()),
                            operator: Some("In".into()),
                            values: vec!["a".into()],
                        }],
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: vec![core::Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let o = decode(&envelope("v1", "Pod", pod_bytes(spec)))
        .unwrap()
        .object;
    let s = &o["spec"];
    assert_eq!(
        s["containers"][0]["livenessProbe"],
        json!({"httpGet": {"host": "169.254.169.254", "port": 80}, "periodSeconds": 5})
    );
    assert_eq!(
        s["containers"][0]["lifecycle"]["preStop"]["tcpSocket"],
        json!({"port": 9, "host": "10.0.0.1"})
    );
    assert_eq!(
        s["containers"][0]["securityContext"],
        json!({"windowsOptions": {"hostProcess": true}})
    );
    assert_eq!(
        s["ephemeralContainers"],
        json!([{"name": "debugger", "image": "busybox", "targetContainerName": "app",
                "securityContext": {"privileged": true}}])
    );
    assert_eq!(
        s["volumes"],
        json!([{"name": "root", "hostPath": {"path": "/", "type": "Directory"}}])
    );
    assert_eq!(
        s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["a"])
    );
    assert_eq!(s["tolerations"], json!([{"operator": "Exists"}]));
}

/// Protobuf's merge rules, as Go's generated code applies them: a singular scalar sent twice,
/// the last wins; an embedded message sent twice, merged (its repeated fields appended).
#[test]
fn last_scalar_wins_and_messages_merge() {
    let first = core::PodSpec {
        containers: vec![c("a")],
        host_network: Some(true),
        ..Default::default()
    }
    .encode_to_vec();
    let second = core::PodSpec {
        host_network: Some(false),
        host_pid: Some(true),
        ..Default::default()
    }
    .encode_to_vec();
    // Pod field 2 (spec) twice.
    let raw = [
        ld(1, &ObjectMeta::default().encode_to_vec()),
        ld(2, &first),
        ld(2, &second),
    ]
    .concat();
    let o = decode(&envelope("v1", "Pod", raw)).unwrap().object;
    assert!(o["spec"].get("hostNetwork").is_none(), "{o}");
    assert_eq!(o["spec"]["hostPID"], true);
    assert_eq!(o["spec"]["containers"][0]["name"], "a");
    // And the other order: true is what the API server would store.
    let raw = [ld(2, &second), ld(2, &first)].concat();
    let o = decode(&envelope("v1", "Pod", raw)).unwrap().object;
    assert_eq!(o["spec"]["hostNetwork"], true);
}

/// A field number k8s-pb does not know (prost would skip it silently) is refused, naming the
/// field numbers on its path; the same number with a zero value is Go's "unset".
#[test]
fn unknown_field_numbers_refuse() {
    let mut container = c("app").encode_to_vec();
    container.extend(ld(999, b"\x08\x01"));
    let spec = ld(2, &container);
    let raw = ld(2, &spec);
    let err = decode(&envelope("v1", "Pod", raw)).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("field 2.2.999"), "{err}");

    // A non-empty payload is not zero, whatever it parses as (a newer API server may read a
    // string there).
    let mut container = c("app").encode_to_vec();
    container.extend(ld(999, b"\x08\x00"));
    let err = decode(&envelope("v1", "Pod", ld(2, &ld(2, &container)))).unwrap_err();
    assert!(err.to_string().contains("field 2.2.999"), "{err}");

    // A group (which Go and prost both skip) does not make the message around it unreadable
    // to the check: the unknown field beside it is still refused, and so is the group.
    let mut container = c("app").encode_to_vec();
    container.extend(ld(999, b"\x08\x01"));
    let mut spec = ld(2, &container);
    spec.extend([0xc3, 0x3e, 0xc4, 0x3e]); // field 1000: start group, end group
    let err = decode(&envelope("v1", "Pod", ld(2, &spec))).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    let mut pod = ld(2, &ld(2, &c("app").encode_to_vec()));
    pod.extend([0xc3, 0x3e, 0x08, 0x01, 0xc4, 0x3e]); // a group holding a varint
    let err = decode(&envelope("v1", "Pod", pod)).unwrap_err();
    assert!(err.to_string().contains("field 1000"), "{err}");

    let mut container = c("app").encode_to_vec();
    container.extend(ld(999, b""));
    container.extend([0xb8, 0x3e, 0x00]); // field 999, varint 0
    let raw = ld(2, &ld(2, &container));
    let o = decode(&envelope("v1", "Pod", raw)).unwrap().object;
    assert_eq!(
        o["spec"]["containers"][0],
        json!({"name": "app", "image": "busybox"})
    );
}

/// Nesting is bounded: 10 000 nested groups (or messages) in an unknown field are refused as
/// malformed, without exhausting the stack.
#[test]
fn depth_is_bounded() {
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend([0xbb, 0x3e]); // field 999, start group
    }
    for _ in 0..10_000 {
        deep.extend([0xbc, 0x3e]); // field 999, end group
    }
    let raw = [ld(2, &deep)].concat();
    assert!(matches!(
        decode(&envelope("v1", "Pod", raw)),
        Err(Error::Malformed(_))
    ));
    let mut nested = b"\x08\x01".to_vec();
    for _ in 0..500 {
        nested = ld(1, &nested);
    }
    let raw = ld(2, &ld(999, &nested));
    assert!(decode(&envelope("v1", "Pod", raw)).is_err());
}

#[test]
fn names_of_kinds_not_converted() {
    let meta = ObjectMeta {
        name: Some("ep".into()),
        namespace: Some("team-a".into()),
        ..Default::default()
    };
    let env = envelope("v1", "Endpoints", ld(1, &meta.encode_to_vec()));
    let env = envelope_of(&env);
    assert!(!converts(&env.api_version, &env.kind));
    assert_eq!(
        metadata_names(&env),
        Some(json!({"metadata": {"name": "ep", "namespace": "team-a"}}))
    );
}

fn envelope_of(b: &[u8]) -> Envelope {
    super::envelope(b).unwrap()
}

/// What an update of a stored DaemonSet carries back (the server's defaults included).
#[test]
fn daemonset_update_strategy_and_pod_overhead() {
    use k8s_pb::api::apps::v1 as apps;
    let ds = apps::DaemonSet {
        metadata: None,
        spec: Some(apps::DaemonSetSpec {
            update_strategy: Some(apps::DaemonSetUpdateStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: None,
                    }),
                    max_surge: None,
                }),
            }),
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(core::PodSpec {
                    containers: vec![c("agent")],
                    overhead: [(
                        "cpu".to_string(),
                        k8s_pb::apimachinery::pkg::api::resource::Quantity {
                            string: Some("250m".into()),
                        },
                    )]
                    .into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let o = decode(&envelope("apps/v1", "DaemonSet", ds.encode_to_vec()))
        .unwrap()
        .object;
    assert_eq!(
        o["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );
    assert_eq!(
        o["spec"]["template"]["spec"]["overhead"],
        json!({"cpu": "250m"})
    );
}
