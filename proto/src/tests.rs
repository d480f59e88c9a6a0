use super::*;
use crate::Error;
use k8s_pb::{
    api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, Time},
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
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [b"k8s\0".to_vec(), u.encode_to_vec()].concat()
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: Some(name.into()),
        labels: [("app".to_string(), name.to_string())].into(),
        // Go always encodes the zero Time; the JSON form omits it.
        creation_timestamp: Some(Time::default()),
        ..Default::default()
    })
}

fn container(image: &str) -> core::Container {
    core::Container {
        name: Some("c".into()),
        image: Some(image.into()),
        resources: Some(core::ResourceRequirements {
            limits: [(
                "cpu".to_string(),
                Quantity {
                    string: Some("500m".into()),
                },
            )]
            .into(),
            ..Default::default()
        }),
        termination_message_policy: Some(String::new()),
        ..Default::default()
    }
}

fn template(image: &str) -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: meta("web"),
        spec: Some(core::PodSpec {
            containers: vec![container(image)],
            ..Default::default()
        }),
    })
}

/// What `kubectl create deployment web --image=nginx --replicas=2` sends, as JSON.
#[test]
fn deployment_as_kubectl_sends_it() {
    let d = apps::Deployment {
        metadata: meta("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: template("nginx"),
            strategy: Some(apps::DeploymentStrategy {
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        str_val: Some("25%".into()),
                        ..Default::default()
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let got = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
    assert_eq!(
        (got.api_version.as_str(), got.kind.as_str()),
        ("apps/v1", "Deployment")
    );
    let o = got.object;
    assert_eq!(o["kind"], "Deployment");
    assert_eq!(
        o["metadata"],
        json!({"name": "web", "labels": {"app": "web"}})
    );
    assert_eq!(o["spec"]["replicas"], 2);
    assert_eq!(
        o["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        o["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c", "image": "nginx", "resources": {"limits": {"cpu": "500m"}}}])
    );
    assert_eq!(
        o["spec"]["strategy"],
        json!({"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}})
    );
    assert!(o.get("status").is_none());
}

#[test]
fn cronjob_and_secret() {
    let cj = batch::CronJob {
        metadata: meta("nightly"),
        spec: Some(batch::CronJobSpec {
            schedule: Some("0 1 * * *".into()),
            job_template: Some(batch::JobTemplateSpec {
                metadata: meta("nightly"),
                spec: Some(batch::JobSpec {
                    template: template("busybox"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let o = decode(&envelope("batch/v1", "CronJob", cj.encode_to_vec()))
        .unwrap()
        .object;
    assert_eq!(o["spec"]["schedule"], "0 1 * * *");
    assert_eq!(
        o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let s = core::Secret {
        metadata: meta("s"),
        data: [("k".to_string(), b"v".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let o = decode(&envelope("v1", "Secret", s.encode_to_vec()))
        .unwrap()
        .object;
    assert_eq!(o["data"]["k"], "dg==");
    assert_eq!(o["type"], "Opaque");
}

#[test]
fn refuses_what_it_cannot_carry_over() {
    // Every field k8s-pb knows is converted for the kinds here; the guard behind that: a
    // converter that left a field in its message fails instead of dropping it.
    let left = core::Pod {
        metadata: meta("p"),
        ..Default::default()
    };
    let err = super::conv::done(left, "Pod", serde_json::Map::new()).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported(
            "field 1 of the protobuf Pod is not converted; send application/json".into()
        )
    );
    // Zero values left over are Go's "unset", not a reason to refuse.
    let zeros = core::PodSpec {
        host_network: Some(false),
        ..Default::default()
    };
    assert!(super::conv::done(zeros, "PodSpec", serde_json::Map::new()).is_ok());
    let err = decode(&envelope("v1", "Endpoints", vec![])).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported("protobuf v1 Endpoints is not converted; send application/json".into())
    );
}

#[test]
fn envelope_errors() {
    assert!(matches!(decode(b"nope"), Err(Error::Malformed(_))));
    assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(Error::Malformed(_))));
    // Malformed object inside a well-formed envelope.
    assert!(matches!(
        decode(&envelope("v1", "Pod", vec![0x0a, 0x05, 0x01])),
        Err(Error::Malformed(_))
    ));
    let mut u = envelope("v1", "ConfigMap", vec![]);
    u.extend(
        Unknown {
            content_encoding: Some("gzip".into()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let err = decode(&u).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("content encoding"));
}

/// Protobuf's rule for a repeated singular field (Go's too): the last one wins.
#[test]
fn last_singular_field_wins() {
    let a = core::ConfigMap {
        metadata: meta("first"),
        ..Default::default()
    }
    .encode_to_vec();
    let b = core::ConfigMap {
        metadata: meta("second"),
        ..Default::default()
    }
    .encode_to_vec();
    let raw = [a, b].concat();
    let o = decode(&envelope("v1", "ConfigMap", raw)).unwrap().object;
    // Embedded messages merge; the scalar name inside takes the last value.
    assert_eq!(o["metadata"]["name"], "second");
}

/// Go writes every non-pointer field, zeros included; the JSON form omits them, and fields
/// left at zero that the conversion does not know are not a reason to refuse.
#[test]
fn go_zero_values_are_absent() {
    let mut c = container("nginx");
    c.stdin = Some(false);
    let svc = core::Service {
        metadata: Some(ObjectMeta {
            generation: Some(0),
            ..meta("s").unwrap_or_default()
        }),
        spec: Some(core::ServiceSpec {
            health_check_node_port: Some(0),
            load_balancer_ip: Some(String::new()),
            session_affinity_config: None,
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let o = decode(&envelope("v1", "Service", svc.encode_to_vec()))
        .unwrap()
        .object;
    assert!(o["metadata"].get("generation").is_none());
    assert_eq!(o["spec"], json!({}));
    let mut pod = core::Pod {
        metadata: meta("p"),
        ..Default::default()
    };
    pod.spec = Some(core::PodSpec {
        containers: vec![c],
        host_network: Some(false),
        ..Default::default()
    });
    let o = decode(&envelope("v1", "Pod", pod.encode_to_vec()))
        .unwrap()
        .object;
    assert!(o["spec"].get("hostNetwork").is_none());
    assert!(o["spec"]["containers"][0].get("stdin").is_none());
}
