//! Protobuf decoding cost (`portcullis::sanitize::parse::protobuf`): open the envelope and
//! convert a kubectl-style Deployment (and one whose pod carries probes, affinity, volumes and
//! security contexts) into the JSON form the judge reads; the strict JSON parse of that same
//! JSON form is the baseline.
//!
//! Run: `cargo bench --bench sanitize_protobuf`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_pb::{
    api::{apps::v1 as apps, core::v1 as core},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        runtime::{TypeMeta, Unknown},
        util::intstr::IntOrString,
    },
};
use portcullis::sanitize::parse::{canonical_bytes, parse_body, protobuf, Limits};
use prost::Message;

fn envelope(raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [b"k8s\0".to_vec(), u.encode_to_vec()].concat()
}

fn q(s: &str) -> Quantity {
    Quantity {
        string: Some(s.into()),
    }
}

fn deployment(full: bool) -> Vec<u8> {
    let labels: std::collections::BTreeMap<_, _> = [("app".to_string(), "web".to_string())].into();
    let port = |p| {
        Some(IntOrString {
            r#type: Some(0),
            int_val: Some(p),
            str_val: None,
        })
    };
    let mut c = core::Container {
        name: Some("web".into()),
        image: Some("nginx:1.27".into()),
        resources: Some(core::ResourceRequirements {
            limits: [
                ("cpu".to_string(), q("500m")),
                ("memory".into(), q("256Mi")),
            ]
            .into(),
            requests: [("cpu".to_string(), q("100m"))].into(),
            claims: vec![],
        }),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ..Default::default()
    };
    let mut spec = core::PodSpec {
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(30),
        dns_policy: Some("ClusterFirst".into()),
        scheduler_name: Some("default-scheduler".into()),
        security_context: Some(core::PodSecurityContext::default()),
        ..Default::default()
    };
    if full {
        let probe = core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: Some("/healthz".into()),
                    port: port(8080),
                    scheme: Some("HTTP".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        };
        c.liveness_probe = Some(probe.clone());
        c.readiness_probe = Some(probe);
        c.security_context = Some(core::SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(core::Capabilities {
                drop: vec!["ALL".into()],
                add: vec![],
            }),
            seccomp_profile: Some(core::SeccompProfile {
                r#type: Some("RuntimeDefault".into()),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        c.env = (0..10)
            .map(|i| core::EnvVar {
                name: Some(format!("VAR_{i}")),
                value: Some(format!("value {i}")),
                value_from: None,
            })
            .collect();
        c.volume_mounts = vec![core::VolumeMount {
            name: Some("data".into()),
            mount_path: Some("/data".into()),
            ..Default::default()
        }];
        spec.volumes = vec![core::Volume {
            name: Some("data".into()),
            volume_source: Some(core::VolumeSource {
                empty_dir: Some(core::EmptyDirVolumeSource::default()),
                ..Default::default()
            }),
        }];
        spec.tolerations = vec![core::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("web".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }];
        spec.affinity = Some(core::Affinity {
            pod_anti_affinity: Some(core::PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: vec![core::PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: labels.clone(),
                        match_expressions: vec![],
                    }),
                    topology_key: Some("kubernetes.io/hostname".into()),
                    ..Default::default()
                }],
                preferred_during_scheduling_ignored_during_execution: vec![],
            }),
            ..Default::default()
        });
    }
    spec.containers = vec![c];
    let d = apps::Deployment {
        metadata: Some(ObjectMeta {
            name: Some("web".into()),
            labels: labels.clone(),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(spec),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: port(1),
                    max_surge: port(1),
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    envelope(d.encode_to_vec())
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, body) in [("kubectl", deployment(false)), ("full", deployment(true))] {
        let json =
            canonical_bytes(&protobuf::decode(protobuf::open(&body).unwrap(), &limits).unwrap());
        eprintln!(
            "{name}: {} protobuf bytes, {} JSON bytes",
            body.len(),
            json.len()
        );
        c.bench_function(&format!("protobuf_decode_{name}_deployment"), |b| {
            b.iter(|| {
                let env = protobuf::open(black_box(&body)).unwrap();
                black_box(protobuf::decode(env, &limits).unwrap())
            })
        });
        c.bench_function(&format!("json_parse_{name}_deployment"), |b| {
            b.iter(|| black_box(parse_body("application/json", black_box(&json), &limits).unwrap()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
