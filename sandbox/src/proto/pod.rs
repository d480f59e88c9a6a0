//! Pod templates from protobuf: PodSpec, Container and what they commonly carry (ports, env,
//! resources, volume mounts, the volumes kubectl and manifests use most, security contexts,
//! tolerations). Probes, lifecycle hooks, affinity and the rarer volume sources are not
//! converted: a body carrying them fails the decode (415), see [`super::conv::done`].

use k8s_pb::api::core::v1 as core;
use serde_json::Value;

use super::conv::{
    done, fields, inline_name, ints, list, msg, object_meta, quantity, quantity_map, scalar,
    server_set, str_map, string, strings, value, R,
};

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
        "schedulerName" => scheduler_name: string,
        "tolerations" => tolerations: list(toleration),
        "priorityClassName" => priority_class_name: string, "priority" => priority: scalar,
        "runtimeClassName" => runtime_class_name: string,
        "enableServiceLinks" => enable_service_links: scalar,
        "preemptionPolicy" => preemption_policy: string,
        "hostUsers" => host_users: scalar,
    );
    done(o, "PodSpec", m)
}

fn container(mut o: core::Container) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "image" => image: string, "command" => command: strings,
        "args" => args: strings, "workingDir" => working_dir: string,
        "ports" => ports: list(container_port), "envFrom" => env_from: list(env_from),
        "env" => env: list(env_var), "resources" => resources: msg(resources),
        "restartPolicy" => restart_policy: string,
        "volumeMounts" => volume_mounts: list(volume_mount),
        "terminationMessagePath" => termination_message_path: string,
        "terminationMessagePolicy" => termination_message_policy: string,
        "imagePullPolicy" => image_pull_policy: string,
        "securityContext" => security_context: msg(security_context),
        "stdin" => stdin: value, "stdinOnce" => stdin_once: value, "tty" => tty: value,
    );
    done(o, "Container", m)
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
    let m = fields!(o; "limits" => limits: quantity_map, "requests" => requests: quantity_map);
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
        "configMapKeyRef" => config_map_key_ref: msg(cm_key),
        "secretKeyRef" => secret_key_ref: msg(secret_key),
    );
    done(o, "EnvVarSource", m)
}

fn field_ref(mut o: core::ObjectFieldSelector) -> R<Value> {
    let m = fields!(o; "apiVersion" => api_version: string, "fieldPath" => field_path: string);
    done(o, "ObjectFieldSelector", m)
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

/// `Volume` inlines its `VolumeSource` in JSON.
fn volume(mut o: core::Volume) -> R<Value> {
    let mut m = fields!(o; "name" => name: string);
    if let Some(mut s) = o.volume_source.take() {
        m.extend(fields!(s;
            "hostPath" => host_path: msg(host_path), "emptyDir" => empty_dir: msg(empty_dir),
            "secret" => secret: msg(secret_volume), "configMap" => config_map: msg(cm_volume),
            "persistentVolumeClaim" => persistent_volume_claim: msg(pvc_volume),
        ));
        if s != core::VolumeSource::default() {
            return done(s, "VolumeSource", m);
        }
    }
    done(o, "Volume", m)
}

fn host_path(mut o: core::HostPathVolumeSource) -> R<Value> {
    let m = fields!(o; "path" => path: string, "type" => r#type: string);
    done(o, "HostPathVolumeSource", m)
}

fn empty_dir(mut o: core::EmptyDirVolumeSource) -> R<Value> {
    let m = fields!(o; "medium" => medium: string, "sizeLimit" => size_limit: quantity);
    done(o, "EmptyDirVolumeSource", m)
}

fn key_to_path(mut o: core::KeyToPath) -> R<Value> {
    let m = fields!(o; "key" => key: string, "path" => path: string, "mode" => mode: scalar);
    done(o, "KeyToPath", m)
}

fn secret_volume(mut o: core::SecretVolumeSource) -> R<Value> {
    let m = fields!(o;
        "secretName" => secret_name: string, "items" => items: list(key_to_path),
        "defaultMode" => default_mode: scalar, "optional" => optional: scalar,
    );
    done(o, "SecretVolumeSource", m)
}

fn cm_volume(mut o: core::ConfigMapVolumeSource) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "items" => items: list(key_to_path),
        "defaultMode" => default_mode: scalar, "optional" => optional: scalar,
    );
    done(o, "ConfigMapVolumeSource", m)
}

fn pvc_volume(mut o: core::PersistentVolumeClaimVolumeSource) -> R<Value> {
    let m = fields!(o; "claimName" => claim_name: string, "readOnly" => read_only: value);
    done(o, "PersistentVolumeClaimVolumeSource", m)
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
    let m = fields!(o; "type" => r#type: string, "localhostProfile" => localhost_profile: string);
    done(o, "SeccompProfile", m)
}

fn profile_apparmor(mut o: core::AppArmorProfile) -> R<Value> {
    let m = fields!(o; "type" => r#type: string, "localhostProfile" => localhost_profile: string);
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
        "runAsUser" => run_as_user: scalar, "runAsGroup" => run_as_group: scalar,
        "runAsNonRoot" => run_as_non_root: scalar,
        "readOnlyRootFilesystem" => read_only_root_filesystem: scalar,
        "allowPrivilegeEscalation" => allow_privilege_escalation: scalar,
        "procMount" => proc_mount: string,
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
