//! Pods and pod templates from protobuf: PodSpec, containers of all three kinds (init, app,
//! ephemeral), ports, env, resources, mounts, security contexts and tolerations. The rarer
//! parts are in `podmore.rs`, volumes in `volume.rs`. Every field of these messages in k8s-pb
//! 0.9 is converted; a newer one fails the decode (415), see [`super::conv::done`].

use k8s_pb::api::core::v1 as core;
use serde_json::Value;

use super::conv::{
    done, fields, inline_name, ints, list, msg, object_meta, quantity_map, scalar, server_set,
    str_map, string, strings, value, R,
};
use super::podmore::{
    affinity, dns_config, field_ref, file_key_ref, host_alias, lifecycle, pod_os,
    pod_resource_claim, probe, readiness_gate, resize_policy, resource_claim, resource_field_ref,
    restart_rule, scheduling_gate, topology_spread, volume_device, windows_options, workload_ref,
};
use super::volume::volume;

pub fn template(mut o: core::PodTemplateSpec) -> R<Value> {
    let m = fields!(o; "metadata" => metadata: msg(object_meta), "spec" => spec: msg(pod_spec));
    done(o, "PodTemplateSpec", m)
}

pub fn pod(mut o: core::Pod) -> R<Value> {
    let m = fields!(o;
        "metadata" => metadata: msg(object_meta), "spec" => spec: msg(pod_spec),
        "status" => status: server_set,
    );
    done(o, "Pod", m)
}

pub fn pod_spec(mut o: core::PodSpec) -> R<Value> {
    let m = fields!(o;
        "volumes" => volumes: list(volume),
        "initContainers" => init_containers: list(container),
        "containers" => containers: list(container),
        "ephemeralContainers" => ephemeral_containers: list(ephemeral_container),
        "restartPolicy" => restart_policy: string,
        "terminationGracePeriodSeconds" => termination_grace_period_seconds: scalar,
        "activeDeadlineSeconds" => active_deadline_seconds: scalar,
        "dnsPolicy" => dns_policy: string, "nodeSelector" => node_selector: str_map,
        "serviceAccountName" => service_account_name: string,
        "serviceAccount" => service_account: string,
        "automountServiceAccountToken" => automount_service_account_token: scalar,
        "nodeName" => node_name: string, "hostNetwork" => host_network: value,
        "hostPID" => host_pid: value, "hostIPC" => host_ipc: value,
        "shareProcessNamespace" => share_process_namespace: scalar,
        "securityContext" => security_context: msg(pod_security_context),
        "imagePullSecrets" => image_pull_secrets: list(local_ref),
        "hostname" => hostname: string, "subdomain" => subdomain: string,
        "affinity" => affinity: msg(affinity), "schedulerName" => scheduler_name: string,
        "tolerations" => tolerations: list(toleration),
        "hostAliases" => host_aliases: list(host_alias),
        "priorityClassName" => priority_class_name: string, "priority" => priority: scalar,
        "dnsConfig" => dns_config: msg(dns_config),
        "readinessGates" => readiness_gates: list(readiness_gate),
        "runtimeClassName" => runtime_class_name: scalar,
        "enableServiceLinks" => enable_service_links: scalar,
        "preemptionPolicy" => preemption_policy: scalar,
        "topologySpreadConstraints" => topology_spread_constraints: list(topology_spread),
        "setHostnameAsFQDN" => set_hostname_as_fqdn: scalar, "os" => os: msg(pod_os),
        "hostUsers" => host_users: scalar,
        "schedulingGates" => scheduling_gates: list(scheduling_gate),
        "resourceClaims" => resource_claims: list(pod_resource_claim),
        "overhead" => overhead: quantity_map, "resources" => resources: msg(resources),
        "hostnameOverride" => hostname_override: scalar,
        "workloadRef" => workload_ref: msg(workload_ref),
    );
    done(o, "PodSpec", m)
}

/// The fields `Container` and `EphemeralContainerCommon` share (the same numbers and names).
macro_rules! container_fields {
    ($o:ident) => {
        fields!($o;
            "name" => name: string, "image" => image: string, "command" => command: strings,
            "args" => args: strings, "workingDir" => working_dir: string,
            "ports" => ports: list(container_port), "envFrom" => env_from: list(env_from),
            "env" => env: list(env_var), "resources" => resources: msg(resources),
            "resizePolicy" => resize_policy: list(resize_policy),
            "restartPolicy" => restart_policy: scalar,
            "restartPolicyRules" => restart_policy_rules: list(restart_rule),
            "volumeMounts" => volume_mounts: list(volume_mount),
            "volumeDevices" => volume_devices: list(volume_device),
            "livenessProbe" => liveness_probe: msg(probe),
            "readinessProbe" => readiness_probe: msg(probe),
            "startupProbe" => startup_probe: msg(probe),
            "lifecycle" => lifecycle: msg(lifecycle),
            "terminationMessagePath" => termination_message_path: string,
            "terminationMessagePolicy" => termination_message_policy: string,
            "imagePullPolicy" => image_pull_policy: string,
            "securityContext" => security_context: msg(security_context),
            "stdin" => stdin: value, "stdinOnce" => stdin_once: value, "tty" => tty: value,
        )
    };
}

fn container(mut o: core::Container) -> R<Value> {
    let m = container_fields!(o);
    done(o, "Container", m)
}

/// `EphemeralContainer` inlines its `EphemeralContainerCommon` in JSON.
fn ephemeral_container(mut o: core::EphemeralContainer) -> R<Value> {
    let mut m = fields!(o; "targetContainerName" => target_container_name: string);
    if let Some(mut c) = o.ephemeral_container_common.take() {
        m.extend(container_fields!(c));
        if c != core::EphemeralContainerCommon::default() {
            return done(c, "EphemeralContainerCommon", m);
        }
    }
    done(o, "EphemeralContainer", m)
}

fn container_port(mut o: core::ContainerPort) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "hostPort" => host_port: value,
        "containerPort" => container_port: scalar, "protocol" => protocol: string,
        "hostIP" => host_ip: string,
    );
    done(o, "ContainerPort", m)
}

fn resources(mut o: core::ResourceRequirements) -> R<Value> {
    let m = fields!(o;
        "limits" => limits: quantity_map, "requests" => requests: quantity_map,
        "claims" => claims: list(resource_claim),
    );
    done(o, "ResourceRequirements", m)
}

fn env_var(mut o: core::EnvVar) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "value" => value: string, "valueFrom" => value_from: msg(env_source),
    );
    done(o, "EnvVar", m)
}

fn env_source(mut o: core::EnvVarSource) -> R<Value> {
    let m = fields!(o;
        "fieldRef" => field_ref: msg(field_ref),
        "resourceFieldRef" => resource_field_ref: msg(resource_field_ref),
        "configMapKeyRef" => config_map_key_ref: msg(cm_key),
        "secretKeyRef" => secret_key_ref: msg(secret_key),
        "fileKeyRef" => file_key_ref: msg(file_key_ref),
    );
    done(o, "EnvVarSource", m)
}

fn cm_key(mut o: core::ConfigMapKeySelector) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "key" => key: string,
        "optional" => optional: scalar,
    );
    done(o, "ConfigMapKeySelector", m)
}

fn secret_key(mut o: core::SecretKeySelector) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "key" => key: string,
        "optional" => optional: scalar,
    );
    done(o, "SecretKeySelector", m)
}

fn env_from(mut o: core::EnvFromSource) -> R<Value> {
    let m = fields!(o;
        "prefix" => prefix: string, "configMapRef" => config_map_ref: msg(cm_env),
        "secretRef" => secret_ref: msg(secret_env),
    );
    done(o, "EnvFromSource", m)
}

fn cm_env(mut o: core::ConfigMapEnvSource) -> R<Value> {
    let m =
        fields!(o; "name" => local_object_reference: inline_name, "optional" => optional: scalar);
    done(o, "ConfigMapEnvSource", m)
}

fn secret_env(mut o: core::SecretEnvSource) -> R<Value> {
    let m =
        fields!(o; "name" => local_object_reference: inline_name, "optional" => optional: scalar);
    done(o, "SecretEnvSource", m)
}

fn volume_mount(mut o: core::VolumeMount) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "readOnly" => read_only: value,
        "recursiveReadOnly" => recursive_read_only: string, "mountPath" => mount_path: string,
        "subPath" => sub_path: string, "mountPropagation" => mount_propagation: string,
        "subPathExpr" => sub_path_expr: string,
    );
    done(o, "VolumeMount", m)
}

pub fn local_ref(mut o: core::LocalObjectReference) -> R<Value> {
    let m = fields!(o; "name" => name: string);
    done(o, "LocalObjectReference", m)
}

fn toleration(mut o: core::Toleration) -> R<Value> {
    let m = fields!(o;
        "key" => key: string, "operator" => operator: string, "value" => value: string,
        "effect" => effect: string, "tolerationSeconds" => toleration_seconds: scalar,
    );
    done(o, "Toleration", m)
}

fn profile_seccomp(mut o: core::SeccompProfile) -> R<Value> {
    let m = fields!(o; "type" => r#type: string, "localhostProfile" => localhost_profile: scalar);
    done(o, "SeccompProfile", m)
}

fn profile_apparmor(mut o: core::AppArmorProfile) -> R<Value> {
    let m = fields!(o; "type" => r#type: string, "localhostProfile" => localhost_profile: scalar);
    done(o, "AppArmorProfile", m)
}

fn se_linux(mut o: core::SeLinuxOptions) -> R<Value> {
    let m = fields!(o;
        "user" => user: string, "role" => role: string, "type" => r#type: string,
        "level" => level: string,
    );
    done(o, "SELinuxOptions", m)
}

fn capabilities(mut o: core::Capabilities) -> R<Value> {
    let m = fields!(o; "add" => add: strings, "drop" => drop: strings);
    done(o, "Capabilities", m)
}

fn security_context(mut o: core::SecurityContext) -> R<Value> {
    let m = fields!(o;
        "capabilities" => capabilities: msg(capabilities), "privileged" => privileged: scalar,
        "seLinuxOptions" => se_linux_options: msg(se_linux),
        "windowsOptions" => windows_options: msg(windows_options),
        "runAsUser" => run_as_user: scalar, "runAsGroup" => run_as_group: scalar,
        "runAsNonRoot" => run_as_non_root: scalar,
        "readOnlyRootFilesystem" => read_only_root_filesystem: scalar,
        "allowPrivilegeEscalation" => allow_privilege_escalation: scalar,
        "procMount" => proc_mount: scalar,
        "seccompProfile" => seccomp_profile: msg(profile_seccomp),
        "appArmorProfile" => app_armor_profile: msg(profile_apparmor),
    );
    done(o, "SecurityContext", m)
}

fn sysctl(mut o: core::Sysctl) -> R<Value> {
    let m = fields!(o; "name" => name: string, "value" => value: string);
    done(o, "Sysctl", m)
}

fn pod_security_context(mut o: core::PodSecurityContext) -> R<Value> {
    let m = fields!(o;
        "seLinuxOptions" => se_linux_options: msg(se_linux),
        "windowsOptions" => windows_options: msg(windows_options),
        "runAsUser" => run_as_user: scalar, "runAsGroup" => run_as_group: scalar,
        "runAsNonRoot" => run_as_non_root: scalar,
        "supplementalGroups" => supplemental_groups: ints,
        "supplementalGroupsPolicy" => supplemental_groups_policy: string,
        "fsGroup" => fs_group: scalar, "sysctls" => sysctls: list(sysctl),
        "fsGroupChangePolicy" => fs_group_change_policy: string,
        "seccompProfile" => seccomp_profile: msg(profile_seccomp),
        "appArmorProfile" => app_armor_profile: msg(profile_apparmor),
        "seLinuxChangePolicy" => se_linux_change_policy: string,
    );
    done(o, "PodSecurityContext", m)
}
