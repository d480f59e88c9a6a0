//! The rarer parts of a pod spec from protobuf: probes and lifecycle hooks (Pod Security's
//! baseline judges their `host`), scheduling (affinity, topology spread, scheduling gates),
//! DNS, host aliases, readiness gates, OS, resource claims, resize and restart rules, Windows
//! options, and the downward-API selectors.

use k8s_pb::api::core::v1 as core;
use serde_json::Value;

use super::conv::{
    done, fields, int_or_string, ints32, label_selector, list, msg, quantity, scalar, string,
    strings, value, R,
};

fn exec(mut o: core::ExecAction) -> R<Value> {
    let m = fields!(o; "command" => command: strings);
    done(o, "ExecAction", m)
}

fn http_header(mut o: core::HttpHeader) -> R<Value> {
    let m = fields!(o; "name" => name: string, "value" => value: string);
    done(o, "HTTPHeader", m)
}

fn http_get(mut o: core::HttpGetAction) -> R<Value> {
    let m = fields!(o;
        "path" => path: string, "port" => port: int_or_string, "host" => host: string,
        "scheme" => scheme: string, "httpHeaders" => http_headers: list(http_header),
    );
    done(o, "HTTPGetAction", m)
}

fn tcp_socket(mut o: core::TcpSocketAction) -> R<Value> {
    let m = fields!(o; "port" => port: int_or_string, "host" => host: string);
    done(o, "TCPSocketAction", m)
}

fn grpc(mut o: core::GrpcAction) -> R<Value> {
    let m = fields!(o; "port" => port: scalar, "service" => service: scalar);
    done(o, "GRPCAction", m)
}

fn sleep(mut o: core::SleepAction) -> R<Value> {
    let m = fields!(o; "seconds" => seconds: scalar);
    done(o, "SleepAction", m)
}

/// `Probe` inlines its `ProbeHandler` in JSON.
pub fn probe(mut o: core::Probe) -> R<Value> {
    let mut m = fields!(o;
        "initialDelaySeconds" => initial_delay_seconds: value,
        "timeoutSeconds" => timeout_seconds: value, "periodSeconds" => period_seconds: value,
        "successThreshold" => success_threshold: value,
        "failureThreshold" => failure_threshold: value,
        "terminationGracePeriodSeconds" => termination_grace_period_seconds: scalar,
    );
    if let Some(mut h) = o.handler.take() {
        m.extend(fields!(h;
            "exec" => exec: msg(exec), "httpGet" => http_get: msg(http_get),
            "tcpSocket" => tcp_socket: msg(tcp_socket), "grpc" => grpc: msg(grpc),
        ));
        if h != core::ProbeHandler::default() {
            return done(h, "ProbeHandler", m);
        }
    }
    done(o, "Probe", m)
}

fn handler(mut o: core::LifecycleHandler) -> R<Value> {
    let m = fields!(o;
        "exec" => exec: msg(exec), "httpGet" => http_get: msg(http_get),
        "tcpSocket" => tcp_socket: msg(tcp_socket), "sleep" => sleep: msg(sleep),
    );
    done(o, "LifecycleHandler", m)
}

pub fn lifecycle(mut o: core::Lifecycle) -> R<Value> {
    let m = fields!(o;
        "postStart" => post_start: msg(handler), "preStop" => pre_stop: msg(handler),
        "stopSignal" => stop_signal: scalar,
    );
    done(o, "Lifecycle", m)
}

pub fn affinity(mut o: core::Affinity) -> R<Value> {
    let m = fields!(o;
        "nodeAffinity" => node_affinity: msg(node_affinity),
        "podAffinity" => pod_affinity: msg(pod_affinity),
        "podAntiAffinity" => pod_anti_affinity: msg(pod_anti_affinity),
    );
    done(o, "Affinity", m)
}

fn node_affinity(mut o: core::NodeAffinity) -> R<Value> {
    let m = fields!(o;
        "requiredDuringSchedulingIgnoredDuringExecution" =>
            required_during_scheduling_ignored_during_execution: msg(node_selector),
        "preferredDuringSchedulingIgnoredDuringExecution" =>
            preferred_during_scheduling_ignored_during_execution: list(preferred_term),
    );
    done(o, "NodeAffinity", m)
}

fn node_selector(mut o: core::NodeSelector) -> R<Value> {
    let m = fields!(o; "nodeSelectorTerms" => node_selector_terms: list(node_term));
    done(o, "NodeSelector", m)
}

fn node_term(mut o: core::NodeSelectorTerm) -> R<Value> {
    let m = fields!(o;
        "matchExpressions" => match_expressions: list(node_requirement),
        "matchFields" => match_fields: list(node_requirement),
    );
    done(o, "NodeSelectorTerm", m)
}

fn node_requirement(mut o: core::NodeSelectorRequirement) -> R<Value> {
    let m = fields!(o;
        "key" => key: string, "operator" => operator: string, "values" => values: strings,
    );
    done(o, "NodeSelectorRequirement", m)
}

fn preferred_term(mut o: core::PreferredSchedulingTerm) -> R<Value> {
    let m = fields!(o; "weight" => weight: scalar, "preference" => preference: msg(node_term));
    done(o, "PreferredSchedulingTerm", m)
}

fn pod_affinity(mut o: core::PodAffinity) -> R<Value> {
    let m = fields!(o;
        "requiredDuringSchedulingIgnoredDuringExecution" =>
            required_during_scheduling_ignored_during_execution: list(affinity_term),
        "preferredDuringSchedulingIgnoredDuringExecution" =>
            preferred_during_scheduling_ignored_during_execution: list(weighted_term),
    );
    done(o, "PodAffinity", m)
}

fn pod_anti_affinity(mut o: core::PodAntiAffinity) -> R<Value> {
    let m = fields!(o;
        "requiredDuringSchedulingIgnoredDuringExecution" =>
            required_during_scheduling_ignored_during_execution: list(affinity_term),
        "preferredDuringSchedulingIgnoredDuringExecution" =>
            preferred_during_scheduling_ignored_during_execution: list(weighted_term),
    );
    done(o, "PodAntiAffinity", m)
}

fn affinity_term(mut o: core::PodAffinityTerm) -> R<Value> {
    let m = fields!(o;
        "labelSelector" => label_selector: msg(label_selector),
        "namespaces" => namespaces: strings, "topologyKey" => topology_key: string,
        "namespaceSelector" => namespace_selector: msg(label_selector),
        "matchLabelKeys" => match_label_keys: strings,
        "mismatchLabelKeys" => mismatch_label_keys: strings,
    );
    done(o, "PodAffinityTerm", m)
}

fn weighted_term(mut o: core::WeightedPodAffinityTerm) -> R<Value> {
    let m = fields!(o;
        "weight" => weight: scalar, "podAffinityTerm" => pod_affinity_term: msg(affinity_term),
    );
    done(o, "WeightedPodAffinityTerm", m)
}

pub fn topology_spread(mut o: core::TopologySpreadConstraint) -> R<Value> {
    let m = fields!(o;
        "maxSkew" => max_skew: scalar, "topologyKey" => topology_key: string,
        "whenUnsatisfiable" => when_unsatisfiable: string,
        "labelSelector" => label_selector: msg(label_selector),
        "minDomains" => min_domains: scalar,
        "nodeAffinityPolicy" => node_affinity_policy: scalar,
        "nodeTaintsPolicy" => node_taints_policy: scalar,
        "matchLabelKeys" => match_label_keys: strings,
    );
    done(o, "TopologySpreadConstraint", m)
}

pub fn dns_config(mut o: core::PodDnsConfig) -> R<Value> {
    let m = fields!(o;
        "nameservers" => nameservers: strings, "searches" => searches: strings,
        "options" => options: list(dns_option),
    );
    done(o, "PodDNSConfig", m)
}

fn dns_option(mut o: core::PodDnsConfigOption) -> R<Value> {
    let m = fields!(o; "name" => name: string, "value" => value: scalar);
    done(o, "PodDNSConfigOption", m)
}

pub fn host_alias(mut o: core::HostAlias) -> R<Value> {
    let m = fields!(o; "ip" => ip: string, "hostnames" => hostnames: strings);
    done(o, "HostAlias", m)
}

pub fn readiness_gate(mut o: core::PodReadinessGate) -> R<Value> {
    let m = fields!(o; "conditionType" => condition_type: string);
    done(o, "PodReadinessGate", m)
}

pub fn pod_os(mut o: core::PodOs) -> R<Value> {
    let m = fields!(o; "name" => name: string);
    done(o, "PodOS", m)
}

pub fn scheduling_gate(mut o: core::PodSchedulingGate) -> R<Value> {
    let m = fields!(o; "name" => name: string);
    done(o, "PodSchedulingGate", m)
}

pub fn pod_resource_claim(mut o: core::PodResourceClaim) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "resourceClaimName" => resource_claim_name: scalar,
        "resourceClaimTemplateName" => resource_claim_template_name: scalar,
    );
    done(o, "PodResourceClaim", m)
}

pub fn resource_claim(mut o: core::ResourceClaim) -> R<Value> {
    let m = fields!(o; "name" => name: string, "request" => request: string);
    done(o, "ResourceClaim", m)
}

pub fn workload_ref(mut o: core::WorkloadReference) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "podGroup" => pod_group: string,
        "podGroupReplicaKey" => pod_group_replica_key: string,
    );
    done(o, "WorkloadReference", m)
}

pub fn resize_policy(mut o: core::ContainerResizePolicy) -> R<Value> {
    let m = fields!(o;
        "resourceName" => resource_name: string, "restartPolicy" => restart_policy: string,
    );
    done(o, "ContainerResizePolicy", m)
}

pub fn restart_rule(mut o: core::ContainerRestartRule) -> R<Value> {
    let m = fields!(o; "action" => action: string, "exitCodes" => exit_codes: msg(exit_codes));
    done(o, "ContainerRestartRule", m)
}

fn exit_codes(mut o: core::ContainerRestartRuleOnExitCodes) -> R<Value> {
    let m = fields!(o; "operator" => operator: string, "values" => values: ints32);
    done(o, "ContainerRestartRuleOnExitCodes", m)
}

pub fn volume_device(mut o: core::VolumeDevice) -> R<Value> {
    let m = fields!(o; "name" => name: string, "devicePath" => device_path: string);
    done(o, "VolumeDevice", m)
}

pub fn windows_options(mut o: core::WindowsSecurityContextOptions) -> R<Value> {
    let m = fields!(o;
        "gmsaCredentialSpecName" => gmsa_credential_spec_name: scalar,
        "gmsaCredentialSpec" => gmsa_credential_spec: scalar,
        "runAsUserName" => run_as_user_name: scalar, "hostProcess" => host_process: scalar,
    );
    done(o, "WindowsSecurityContextOptions", m)
}

pub fn field_ref(mut o: core::ObjectFieldSelector) -> R<Value> {
    let m = fields!(o; "apiVersion" => api_version: string, "fieldPath" => field_path: string);
    done(o, "ObjectFieldSelector", m)
}

pub fn resource_field_ref(mut o: core::ResourceFieldSelector) -> R<Value> {
    let m = fields!(o;
        "containerName" => container_name: string, "resource" => resource: string,
        "divisor" => divisor: quantity,
    );
    done(o, "ResourceFieldSelector", m)
}

pub fn file_key_ref(mut o: core::FileKeySelector) -> R<Value> {
    let m = fields!(o;
        "volumeName" => volume_name: string, "path" => path: string, "key" => key: string,
        "optional" => optional: scalar,
    );
    done(o, "FileKeySelector", m)
}
