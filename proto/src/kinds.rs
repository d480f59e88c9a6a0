//! The top-level kinds from protobuf: apps (Deployment, ReplicaSet, StatefulSet, DaemonSet),
//! batch (Job, CronJob) and core (Pod, PodTemplate, ReplicationController, ConfigMap, Secret,
//! Service, Namespace, ServiceAccount).
//! `status` is read and not kept (the apiserver resets it on create; the status subresource
//! is written as JSON by every client here).

use k8s_pb::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
use prost::Message;
use serde_json::Value;

use super::conv::{
    bytes_map, done, fields, int_or_string, ints32, label_selector, list, msg, object_meta, scalar,
    server_set, str_map, string, strings, value, R,
};
use super::pod::{local_ref, pod, template};
use super::volume::pvc_spec;
use crate::{unknown, Error};

/// Decode `raw` as the message of `group/version` `kind`, into its JSON form (without
/// apiVersion / kind). `None` when the kind is not one the sandbox converts.
pub fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<R<Value>> {
    fn run<M: Message + Default>(raw: &[u8], f: fn(M) -> R<Value>) -> R<Value> {
        let m = M::decode(raw).map_err(|e| Error::Malformed(format!("malformed protobuf: {e}")))?;
        unknown::check(raw, &m.encode_to_vec())?;
        f(m)
    }
    Some(match (api_version, kind) {
        ("apps/v1", "Deployment") => run(raw, deployment),
        ("apps/v1", "ReplicaSet") => run(raw, replicaset),
        ("apps/v1", "StatefulSet") => run(raw, statefulset),
        ("apps/v1", "DaemonSet") => run(raw, daemonset),
        ("batch/v1", "Job") => run(raw, job),
        ("batch/v1", "CronJob") => run(raw, cronjob),
        ("v1", "Pod") => run(raw, pod),
        ("v1", "PodTemplate") => run(raw, pod_template),
        ("v1", "ReplicationController") => run(raw, replication_controller),
        ("v1", "ConfigMap") => run(raw, configmap),
        ("v1", "Secret") => run(raw, secret),
        ("v1", "Service") => run(raw, service),
        ("v1", "Namespace") => run(raw, namespace),
        ("v1", "ServiceAccount") => run(raw, service_account),
        _ => return None,
    })
}

fn pod_template(mut o: core::PodTemplate) -> R<Value> {
    let m =
        fields!(o; "metadata" => metadata: msg(object_meta), "template" => template: msg(template));
    done(o, "PodTemplate", m)
}

fn replication_controller(mut o: core::ReplicationController) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(rc_spec),
        "status" => status: server_set,
    );
    done(o, "ReplicationController", m)
}

fn rc_spec(mut o: core::ReplicationControllerSpec) -> R<Value> {
    let m = fields!(o;
        "replicas" => replicas: scalar, "minReadySeconds" => min_ready_seconds: value,
        "selector" => selector: str_map, "template" => template: msg(template),
    );
    done(o, "ReplicationControllerSpec", m)
}

fn deployment(mut o: apps::Deployment) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(deployment_spec),
        "status" => status: server_set,
    );
    done(o, "Deployment", m)
}

fn deployment_spec(mut o: apps::DeploymentSpec) -> R<Value> {
    let m = fields!(o;
        "replicas" => replicas: scalar, "selector" => selector: msg(label_selector),
        "template" => template: msg(template), "strategy" => strategy: msg(strategy),
        "minReadySeconds" => min_ready_seconds: value,
        "revisionHistoryLimit" => revision_history_limit: scalar, "paused" => paused: value,
        "progressDeadlineSeconds" => progress_deadline_seconds: scalar,
    );
    done(o, "DeploymentSpec", m)
}

fn strategy(mut o: apps::DeploymentStrategy) -> R<Value> {
    let m = fields!(o; "type" => r#type: string, "rollingUpdate" => rolling_update: msg(rolling));
    done(o, "DeploymentStrategy", m)
}

fn rolling(mut o: apps::RollingUpdateDeployment) -> R<Value> {
    let m = fields!(o;
        "maxUnavailable" => max_unavailable: int_or_string, "maxSurge" => max_surge: int_or_string,
    );
    done(o, "RollingUpdateDeployment", m)
}

fn replicaset(mut o: apps::ReplicaSet) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(replicaset_spec),
        "status" => status: server_set,
    );
    done(o, "ReplicaSet", m)
}

fn replicaset_spec(mut o: apps::ReplicaSetSpec) -> R<Value> {
    let m = fields!(o;
        "replicas" => replicas: scalar, "minReadySeconds" => min_ready_seconds: value,
        "selector" => selector: msg(label_selector), "template" => template: msg(template),
    );
    done(o, "ReplicaSetSpec", m)
}

fn statefulset(mut o: apps::StatefulSet) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(statefulset_spec),
        "status" => status: server_set,
    );
    done(o, "StatefulSet", m)
}

fn statefulset_spec(mut o: apps::StatefulSetSpec) -> R<Value> {
    let m = fields!(o;
        "replicas" => replicas: scalar, "selector" => selector: msg(label_selector),
        "template" => template: msg(template), "serviceName" => service_name: string,
        "volumeClaimTemplates" => volume_claim_templates: list(pvc),
        "podManagementPolicy" => pod_management_policy: string,
        "updateStrategy" => update_strategy: msg(sts_strategy),
        "revisionHistoryLimit" => revision_history_limit: scalar,
        "minReadySeconds" => min_ready_seconds: value,
        "persistentVolumeClaimRetentionPolicy" => persistent_volume_claim_retention_policy: msg(sts_retention),
        "ordinals" => ordinals: msg(sts_ordinals),
    );
    done(o, "StatefulSetSpec", m)
}

fn sts_strategy(mut o: apps::StatefulSetUpdateStrategy) -> R<Value> {
    let m =
        fields!(o; "type" => r#type: string, "rollingUpdate" => rolling_update: msg(sts_rolling));
    done(o, "StatefulSetUpdateStrategy", m)
}

fn sts_rolling(mut o: apps::RollingUpdateStatefulSetStrategy) -> R<Value> {
    let m = fields!(o;
        "partition" => partition: scalar, "maxUnavailable" => max_unavailable: int_or_string,
    );
    done(o, "RollingUpdateStatefulSetStrategy", m)
}

fn sts_retention(mut o: apps::StatefulSetPersistentVolumeClaimRetentionPolicy) -> R<Value> {
    let m = fields!(o; "whenDeleted" => when_deleted: string, "whenScaled" => when_scaled: string);
    done(o, "StatefulSetPersistentVolumeClaimRetentionPolicy", m)
}

fn sts_ordinals(mut o: apps::StatefulSetOrdinals) -> R<Value> {
    let m = fields!(o; "start" => start: value);
    done(o, "StatefulSetOrdinals", m)
}

fn pvc(mut o: core::PersistentVolumeClaim) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(pvc_spec),
        "status" => status: server_set,
    );
    done(o, "PersistentVolumeClaim", m)
}

fn daemonset(mut o: apps::DaemonSet) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(daemonset_spec),
        "status" => status: server_set,
    );
    done(o, "DaemonSet", m)
}

fn daemonset_spec(mut o: apps::DaemonSetSpec) -> R<Value> {
    let m = fields!(o;
        "selector" => selector: msg(label_selector), "template" => template: msg(template),
        "updateStrategy" => update_strategy: msg(ds_strategy),
        "minReadySeconds" => min_ready_seconds: value,
        "revisionHistoryLimit" => revision_history_limit: scalar,
    );
    done(o, "DaemonSetSpec", m)
}

fn ds_strategy(mut o: apps::DaemonSetUpdateStrategy) -> R<Value> {
    let m =
        fields!(o; "type" => r#type: string, "rollingUpdate" => rolling_update: msg(ds_rolling));
    done(o, "DaemonSetUpdateStrategy", m)
}

fn ds_rolling(mut o: apps::RollingUpdateDaemonSet) -> R<Value> {
    let m = fields!(o;
        "maxUnavailable" => max_unavailable: int_or_string, "maxSurge" => max_surge: int_or_string,
    );
    done(o, "RollingUpdateDaemonSet", m)
}

fn job(mut o: batch::Job) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(job_spec),
        "status" => status: server_set,
    );
    done(o, "Job", m)
}

fn job_spec(mut o: batch::JobSpec) -> R<Value> {
    let m = fields!(o;
        "parallelism" => parallelism: scalar, "completions" => completions: scalar,
        "activeDeadlineSeconds" => active_deadline_seconds: scalar,
        "podFailurePolicy" => pod_failure_policy: msg(failure_policy),
        "successPolicy" => success_policy: msg(success_policy),
        "backoffLimit" => backoff_limit: scalar,
        "backoffLimitPerIndex" => backoff_limit_per_index: scalar,
        "maxFailedIndexes" => max_failed_indexes: scalar,
        "selector" => selector: msg(label_selector), "manualSelector" => manual_selector: scalar,
        "template" => template: msg(template),
        "ttlSecondsAfterFinished" => ttl_seconds_after_finished: scalar,
        "completionMode" => completion_mode: string, "suspend" => suspend: scalar,
        "podReplacementPolicy" => pod_replacement_policy: string,
        "managedBy" => managed_by: string,
    );
    done(o, "JobSpec", m)
}

fn failure_policy(mut o: batch::PodFailurePolicy) -> R<Value> {
    let m = fields!(o; "rules" => rules: list(failure_rule));
    done(o, "PodFailurePolicy", m)
}

fn failure_rule(mut o: batch::PodFailurePolicyRule) -> R<Value> {
    let m = fields!(o;
        "action" => action: string, "onExitCodes" => on_exit_codes: msg(on_exit_codes),
        "onPodConditions" => on_pod_conditions: list(on_condition),
    );
    done(o, "PodFailurePolicyRule", m)
}

fn on_exit_codes(mut o: batch::PodFailurePolicyOnExitCodesRequirement) -> R<Value> {
    let m = fields!(o;
        "containerName" => container_name: string, "operator" => operator: string,
        "values" => values: ints32,
    );
    done(o, "PodFailurePolicyOnExitCodesRequirement", m)
}

fn on_condition(mut o: batch::PodFailurePolicyOnPodConditionsPattern) -> R<Value> {
    let m = fields!(o; "type" => r#type: string, "status" => status: string);
    done(o, "PodFailurePolicyOnPodConditionsPattern", m)
}

fn success_policy(mut o: batch::SuccessPolicy) -> R<Value> {
    let m = fields!(o; "rules" => rules: list(success_rule));
    done(o, "SuccessPolicy", m)
}

fn success_rule(mut o: batch::SuccessPolicyRule) -> R<Value> {
    let m = fields!(o;
        "succeededIndexes" => succeeded_indexes: string,
        "succeededCount" => succeeded_count: scalar,
    );
    done(o, "SuccessPolicyRule", m)
}

fn job_template(mut o: batch::JobTemplateSpec) -> R<Value> {
    let m = fields!(o; "metadata" => metadata: msg(object_meta), "spec" => spec: msg(job_spec));
    done(o, "JobTemplateSpec", m)
}

fn cronjob(mut o: batch::CronJob) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(cronjob_spec),
        "status" => status: server_set,
    );
    done(o, "CronJob", m)
}

fn cronjob_spec(mut o: batch::CronJobSpec) -> R<Value> {
    let m = fields!(o;
        "schedule" => schedule: string, "timeZone" => time_zone: string,
        "startingDeadlineSeconds" => starting_deadline_seconds: scalar,
        "concurrencyPolicy" => concurrency_policy: string, "suspend" => suspend: scalar,
        "jobTemplate" => job_template: msg(job_template),
        "successfulJobsHistoryLimit" => successful_jobs_history_limit: scalar,
        "failedJobsHistoryLimit" => failed_jobs_history_limit: scalar,
    );
    done(o, "CronJobSpec", m)
}

fn configmap(mut o: core::ConfigMap) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "immutable" => immutable: scalar,
        "data" => data: str_map, "binaryData" => binary_data: bytes_map,
    );
    done(o, "ConfigMap", m)
}

fn secret(mut o: core::Secret) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "immutable" => immutable: scalar,
        "data" => data: bytes_map, "stringData" => string_data: str_map,
        "type" => r#type: string,
    );
    done(o, "Secret", m)
}

fn service(mut o: core::Service) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(service_spec),
        "status" => status: server_set,
    );
    done(o, "Service", m)
}

fn service_spec(mut o: core::ServiceSpec) -> R<Value> {
    let m = fields!(o;
        "ports" => ports: list(service_port), "selector" => selector: str_map,
        "clusterIP" => cluster_ip: string, "clusterIPs" => cluster_ips: strings,
        "type" => r#type: string, "externalIPs" => external_ips: strings,
        "sessionAffinity" => session_affinity: string,
        "externalName" => external_name: string,
        "externalTrafficPolicy" => external_traffic_policy: string,
        "publishNotReadyAddresses" => publish_not_ready_addresses: value,
        "ipFamilies" => ip_families: strings, "ipFamilyPolicy" => ip_family_policy: string,
        "internalTrafficPolicy" => internal_traffic_policy: string,
        "loadBalancerIP" => load_balancer_ip: string,
        "loadBalancerSourceRanges" => load_balancer_source_ranges: strings,
        "healthCheckNodePort" => health_check_node_port: value,
        "sessionAffinityConfig" => session_affinity_config: msg(affinity_config),
        "allocateLoadBalancerNodePorts" => allocate_load_balancer_node_ports: scalar,
        "loadBalancerClass" => load_balancer_class: scalar,
        "trafficDistribution" => traffic_distribution: scalar,
    );
    done(o, "ServiceSpec", m)
}

fn affinity_config(mut o: core::SessionAffinityConfig) -> R<Value> {
    let m = fields!(o; "clientIP" => client_ip: msg(client_ip));
    done(o, "SessionAffinityConfig", m)
}

fn client_ip(mut o: core::ClientIpConfig) -> R<Value> {
    let m = fields!(o; "timeoutSeconds" => timeout_seconds: scalar);
    done(o, "ClientIPConfig", m)
}

fn service_port(mut o: core::ServicePort) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "protocol" => protocol: string,
        "appProtocol" => app_protocol: string, "port" => port: scalar,
        "targetPort" => target_port: int_or_string, "nodePort" => node_port: value,
    );
    done(o, "ServicePort", m)
}

fn namespace(mut o: core::Namespace) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(namespace_spec),
        "status" => status: server_set,
    );
    done(o, "Namespace", m)
}

fn namespace_spec(mut o: core::NamespaceSpec) -> R<Value> {
    let m = fields!(o; "finalizers" => finalizers: strings);
    done(o, "NamespaceSpec", m)
}

fn service_account(mut o: core::ServiceAccount) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta),
        "secrets" => secrets: list(object_ref),
        "imagePullSecrets" => image_pull_secrets: list(local_ref),
        "automountServiceAccountToken" => automount_service_account_token: scalar,
    );
    done(o, "ServiceAccount", m)
}

fn object_ref(mut o: core::ObjectReference) -> R<Value> {
    let m = fields!(o;
        "kind" => kind: string, "namespace" => namespace: string, "name" => name: string,
        "uid" => uid: string, "apiVersion" => api_version: string,
        "resourceVersion" => resource_version: string, "fieldPath" => field_path: string,
    );
    done(o, "ObjectReference", m)
}
