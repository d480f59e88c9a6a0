//! Round trips JSON → protobuf → JSON for a realistic object of every kind the sandbox stores,
//! cross-checked against k8s-pb's own decoding (prost, not our schema) and the strict request
//! decoder; and no panic on odd JSON.

use prost::Message;
use serde_json::{json, Value};

use crate::{decode_object, encode_object, response::read_watch_frames, watch_frame, Error};

fn meta(name: &str) -> Value {
    json!({
        "name": name, "namespace": "team-a", "uid": "6f1e0d9c-0000-4000-8000-000000000001",
        "resourceVersion": "42", "generation": 3,
        "creationTimestamp": "2024-05-06T07:08:09Z",
        "labels": {"app": "web", "empty": ""},
        "annotations": {"deployment.kubernetes.io/revision": "2"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
            "uid": "6f1e0d9c-0000-4000-8000-000000000002", "controller": true,
            "blockOwnerDeletion": true}],
        "finalizers": ["example.com/keep"],
        "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1",
            "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
    })
}

fn pod_spec() -> Value {
    json!({
        "containers": [{
            "name": "web", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": false}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "initialDelaySeconds": 5, "periodSeconds": 10},
            "readinessProbe": {"tcpSocket": {"port": 80}},
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
        }],
        "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420,
                        "items": [{"key": "a", "path": "a.txt"}]}},
                    {"name": "api", "downwardAPI": {"items": [{"path": "labels",
                        "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "automountServiceAccountToken": false,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}],
        "securityContext": {"fsGroup": 2000},
    })
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()})
}

fn conditions() -> Value {
    json!([{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
            "message": "ok", "lastUpdateTime": "2024-05-06T07:08:10Z",
            "lastTransitionTime": "2024-05-06T07:08:10Z"}])
}

/// A realistic object of every kind the sandbox stores (`sandbox/src/catalogue.rs`), with
/// status where it has one.
fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("team-a"),
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web-1"), "spec": pod_spec(),
               "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                   "hostIP": "192.0.2.1", "startTime": "2024-05-06T07:08:09Z", "qosClass": "Burstable",
                   "conditions": [{"type": "Ready", "status": "True",
                       "lastTransitionTime": "2024-05-06T07:08:11Z"}],
                   "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                       "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:0",
                       "containerID": "containerd://1", "started": true,
                       "state": {"running": {"startedAt": "2024-05-06T07:08:10Z"}}}]}}),
        json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("t"), "template": template()}),
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("rc"),
               "spec": {"replicas": 0, "selector": {"app": "web"}, "template": template()},
               "status": {"replicas": 0, "observedGeneration": 3}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"),
               "data": {"a": "1", "b": ""}, "binaryData": {"bin": "AAEC"}, "immutable": false}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("s"), "type": "Opaque",
               "data": {"password": "czNjcjN0"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                             {"name": "named", "port": 81, "targetPort": "http"}],
                   "selector": {"app": "web"}, "sessionAffinity": "None",
                   "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                   "internalTrafficPolicy": "Cluster"},
               "status": {"loadBalancer": {}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("sa"),
               "secrets": [{"name": "sa-token"}], "imagePullSecrets": [{"name": "pull"}],
               "automountServiceAccountToken": true}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": meta("web-1.17d"),
               "involvedObject": {"kind": "Pod", "namespace": "team-a", "name": "web-1",
                   "uid": "6f1e0d9c-0000-4000-8000-000000000001", "apiVersion": "v1",
                   "resourceVersion": "42", "fieldPath": "spec.containers{web}"},
               "reason": "Pulled", "message": "pulled", "source": {"component": "kubelet", "host": "node-1"},
               "firstTimestamp": "2024-05-06T07:08:09Z", "lastTimestamp": "2024-05-06T07:08:12Z",
               "count": 2, "type": "Normal", "eventTime": "2024-05-06T07:08:09.123456Z",
               "reportingComponent": "kubelet", "reportingInstance": "node-1"}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                   "template": template(),
                   "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
                   "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
               "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                   "readyReplicas": 3, "availableReplicas": 3, "conditions": conditions()}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("web-abc"),
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
               "status": {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                   "availableReplicas": 3, "observedGeneration": 1}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db"),
               "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                   "template": template(), "podManagementPolicy": "OrderedReady",
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                   "volumeClaimTemplates": [{"metadata": {"name": "data"},
                       "spec": {"accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}}}]},
               "status": {"replicas": 1, "currentRevision": "db-1"}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent"),
               "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template(),
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}},
               "status": {"currentNumberScheduled": 1, "numberMisscheduled": 0,
                   "desiredNumberScheduled": 1, "numberReady": 1}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("once"),
               "spec": {"backoffLimit": 6, "completions": 1, "parallelism": 1, "template": template(),
                   "completionMode": "NonIndexed", "suspend": false, "ttlSecondsAfterFinished": 100},
               "status": {"startTime": "2024-05-06T07:08:09Z", "active": 1, "ready": 0}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("nightly"),
               "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid",
                   "jobTemplate": {"metadata": {"labels": {"app": "nightly"}},
                       "spec": {"template": template()}},
                   "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1},
               "status": {"lastScheduleTime": "2024-05-06T03:00:00Z"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("r"),
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"],
                          "resourceNames": ["web-1"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("rb"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                            {"kind": "ServiceAccount", "name": "sa", "namespace": "team-a"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta("cr"),
               "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": meta("crb"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("np"),
               "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                         {"namespaceSelector": {}}],
                                "ports": [{"protocol": "TCP", "port": 80}, {"port": "http"}]}]}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("pdb"),
               "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}},
               "status": {"currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": 1,
                   "expectedPods": 2, "observedGeneration": 1}}),
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("web"),
               "spec": {"replicas": 5}, "status": {"replicas": 3, "selector": "app=web"}}),
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "message": "deployments.apps \"x\" not found", "reason": "NotFound",
               "details": {"name": "x", "group": "apps", "kind": "deployments"}, "code": 404}),
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "metadata": {"creationTimestamp": null},
               "spec": {"resourceAttributes": {"namespace": "team-a", "verb": "get", "resource": "pods"}},
               "status": {"allowed": true, "reason": "RBAC: allowed"}}),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
               "metadata": {"creationTimestamp": null},
               "status": {"userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"],
                   "extra": {"scopes": ["a", "b"]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
               "metadata": {"resourceVersion": "42", "continue": "abc"},
               "items": [{"metadata": meta("web"), "spec": {"replicas": 1,
                   "selector": {"matchLabels": {"app": "web"}}, "template": template()}}]}),
    ]
}

/// The JSON form without `null`s and empty strings: what the protobuf form can carry (Go
/// writes a zero Time as `null` and omits empty strings). Map values (`labels`, `data`) are
/// kept as they are: an empty label value is a value.
fn canonical_keep_maps(v: &Value) -> Value {
    const MAPS: &[&str] = &[
        "labels",
        "annotations",
        "data",
        "matchLabels",
        "nodeSelector",
    ];
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
                .map(|(k, v)| {
                    let keep = MAPS.contains(&k.as_str()) && v.is_object();
                    (
                        k.clone(),
                        if keep {
                            v.clone()
                        } else {
                            canonical_keep_maps(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical_keep_maps).collect()),
        v => v.clone(),
    }
}

#[test]
fn every_stored_kind_round_trips() {
    for obj in objects() {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let bytes = encode_object(&obj).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(bytes.starts_with(b"k8s\0"), "{kind}");
        let back = decode_object(&bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(back, canonical_keep_maps(&obj), "{kind}");
    }
}

/// Our encoding is what Go's types mean: k8s-pb (prost, generated from upstream's .proto)
/// reads the fields back with the values we wrote.
#[test]
fn k8s_pb_reads_what_we_write() {
    use k8s_pb::api::{apps::v1::Deployment, core::v1::Pod};
    let objs = objects();
    let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env = crate::envelope(&encode_object(dep).unwrap()).unwrap();
    assert_eq!(
        (env.api_version.as_str(), env.kind.as_str()),
        ("apps/v1", "Deployment")
    );
    let d = Deployment::decode(env.raw.as_slice()).unwrap();
    let m = d.metadata.unwrap();
    assert_eq!(m.name.as_deref(), Some("web"));
    assert_eq!(m.labels.get("empty").map(String::as_str), Some(""));
    assert_eq!(m.creation_timestamp.unwrap().seconds, Some(1_714_979_289));
    let f = m.managed_fields[0].fields_v1.clone().unwrap().raw.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&f).unwrap(),
        json!({"f:spec": {"f:replicas": {}}})
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_unavailable.unwrap().str_val.as_deref(), Some("25%"));
    assert_eq!(ru.max_surge.unwrap().int_val, Some(1));
    let c = &spec.template.unwrap().spec.unwrap().containers[0];
    assert_eq!(
        c.resources.clone().unwrap().limits["memory"]
            .string
            .as_deref(),
        Some("128Mi")
    );
    let st = d.status.unwrap();
    assert_eq!(st.ready_replicas, Some(3));
    assert_eq!(st.conditions[0].r#type.as_deref(), Some("Available"));

    let pod = objs.iter().find(|o| o["kind"] == "Pod").unwrap();
    let env = crate::envelope(&encode_object(pod).unwrap()).unwrap();
    let p = Pod::decode(env.raw.as_slice()).unwrap();
    let vols = p.spec.clone().unwrap().volumes;
    // VolumeSource is embedded in Go: inlined in JSON, a nested message in protobuf.
    let dapi = vols[2].volume_source.clone().unwrap().downward_api.unwrap();
    assert_eq!(dapi.items[0].path.as_deref(), Some("labels"));
    assert_eq!(p.status.unwrap().pod_ips[0].ip.as_deref(), Some("10.0.0.5"));
}

/// The strict request decoder (what the proxy judges) reads our spec back identically.
#[test]
fn strict_decoder_agrees_on_specs() {
    for obj in objects() {
        let Ok(bytes) = encode_object(&obj) else {
            continue;
        };
        let env = crate::envelope(&bytes).unwrap();
        if !crate::converts(&env.api_version, &env.kind) {
            continue;
        }
        let kind = env.kind.clone();
        let strict = crate::decode_envelope(env).unwrap_or_else(|e| panic!("{kind}: {e}"));
        for key in ["spec", "data", "template", "secrets"] {
            if obj.get(key).is_some() {
                assert_eq!(
                    strict.object[key],
                    canonical_keep_maps(&obj)[key],
                    "{kind}.{key}"
                );
            }
        }
        assert_eq!(
            strict.object["metadata"]["labels"], obj["metadata"]["labels"],
            "{kind}"
        );
    }
}

#[test]
fn watch_frames_round_trip() {
    let objs = objects();
    let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let mut stream = watch_frame("ADDED", dep).unwrap();
    stream.extend(watch_frame("DELETED", dep).unwrap());
    stream.extend_from_slice(&[0, 0, 0, 9, 1]); // a frame not yet complete
    let (events, rest) = read_watch_frames(&stream).unwrap();
    assert_eq!(rest, &[0, 0, 0, 9, 1]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["object"], canonical_keep_maps(dep));
}

#[test]
fn odd_json_is_refused_not_panicked() {
    let odd = [
        json!(null),
        json!([]),
        json!({"kind": "Deployment"}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": "x"}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1.5}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 4_294_967_296i64}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"creationTimestamp": "yesterday"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"labels": ["a"]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": "not base64!"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": 1}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"strategy": {"rollingUpdate": {"maxSurge": true}}}}),
    ];
    for v in odd {
        assert!(
            matches!(encode_object(&v), Err(Error::Unsupported(_))),
            "{v}"
        );
    }
    // Unknown keys are pruned, as the API server prunes them.
    let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "bogus": 1});
    assert_eq!(
        decode_object(&encode_object(&v).unwrap()).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    );
    // Deep nesting stops at the limit instead of overflowing the stack.
    let mut props = json!({"type": "object"});
    for _ in 0..200 {
        props = json!({"type": "object", "properties": {"a": props}});
    }
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": props}}]}});
    assert!(encode_object(&crd).is_err());
    let mut deep = json!({"name": "x"});
    for _ in 0..200 {
        deep = json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}, "status": {"conditions": [deep]}});
    }
    let deep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"conditions": [{"message": deep}]}});
    assert!(encode_object(&deep).is_err());
}

#[test]
fn odd_protobuf_is_refused_not_panicked() {
    let good = encode_object(&objects()[9]).unwrap();
    for cut in [4, 10, good.len() / 2, good.len() - 1] {
        let _ = decode_object(&good[..cut]);
    }
    let mut flipped = good.clone();
    for i in (4..flipped.len()).step_by(7) {
        flipped[i] ^= 0xff;
        let _ = decode_object(&flipped);
    }
    assert!(decode_object(b"k8s\0\x0a\x02\x0a\x00").is_err());

    // Envelopes nested in RawExtensions (a ControllerRevision's `data` holding another) stop at
    // the depth limit instead of overflowing the stack.
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let mut bytes = encode_object(&obj).unwrap();
    for _ in 0..300 {
        let rev = k8s_pb::api::apps::v1::ControllerRevision {
            data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(bytes) }),
            ..Default::default()
        };
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("apps/v1".into()),
                kind: Some("ControllerRevision".into()),
            }),
            raw: Some(rev.encode_to_vec()),
            ..Default::default()
        };
        bytes = [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat();
    }
    assert!(decode_object(&bytes).is_err());
}
