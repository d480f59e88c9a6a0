//! Where pod specs live in each pod-bearing kind (reference §8.3).

use serde_json::Value;

/// A pod-bearing kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodBearing {
    /// `""/pods` (and its evaluated subresources, e.g. `pods/ephemeralcontainers`): `spec`.
    Pod,
    /// `""/podtemplates`: `template.spec`.
    PodTemplate,
    /// `""/replicationcontrollers`: `spec.template.spec`.
    ReplicationController,
    /// `apps/replicasets`: `spec.template.spec`.
    ReplicaSet,
    /// `apps/deployments`: `spec.template.spec`.
    Deployment,
    /// `apps/statefulsets`: `spec.template.spec`.
    StatefulSet,
    /// `apps/daemonsets`: `spec.template.spec`.
    DaemonSet,
    /// `batch/jobs`: `spec.template.spec`.
    Job,
    /// `batch/cronjobs`: `spec.jobTemplate.spec.template.spec`.
    CronJob,
    /// `apps/controllerrevisions`: `data.spec.template.spec`. Not pod-bearing to the API
    /// server's PodSecurity, but a StatefulSet's controller makes pods from the revision its
    /// status names — `data` strategic-merged onto the workload, the controller's own revisions
    /// holding the whole template with `$patch: replace` — straight at the API server: a
    /// revision written through the proxy is judged as the template it puts in pods. (A
    /// DaemonSet's controller makes pods from the DaemonSet's own template; its revisions
    /// serve `kubectl rollout undo`, which patches the DaemonSet — judged as such.)
    ControllerRevision,
}

/// Pod subresources PodSecurity does not evaluate (`admission/admission.go`); every other pod
/// subresource — `ephemeralcontainers`, `resize`, and any unknown future one — is evaluated.
const POD_SUBRESOURCES_IGNORED: &[&str] = &[
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

impl PodBearing {
    /// Every pod-bearing kind.
    pub const ALL: [PodBearing; 10] = [
        Self::Pod,
        Self::PodTemplate,
        Self::ReplicationController,
        Self::ReplicaSet,
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::Job,
        Self::CronJob,
        Self::ControllerRevision,
    ];

    /// Classifies by API group and resource as the proxy classifies a request. `resource` may
    /// carry a subresource (`pods/ephemeralcontainers`): pod subresources other than the ones
    /// PodSecurity ignores carry Pod bodies; subresources of the workload kinds (`status`,
    /// `scale`) carry no pod spec PodSecurity evaluates and yield `None`.
    pub fn from_group_resource(group: &str, resource: &str) -> Option<Self> {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let kind = match (group, resource) {
            ("", "pods") => Self::Pod,
            ("", "podtemplates") => Self::PodTemplate,
            ("", "replicationcontrollers") => Self::ReplicationController,
            ("apps", "replicasets") => Self::ReplicaSet,
            ("apps", "deployments") => Self::Deployment,
            ("apps", "statefulsets") => Self::StatefulSet,
            ("apps", "daemonsets") => Self::DaemonSet,
            ("batch", "jobs") => Self::Job,
            ("batch", "cronjobs") => Self::CronJob,
            ("apps", "controllerrevisions") => Self::ControllerRevision,
            _ => return None,
        };
        match sub {
            None => Some(kind),
            Some(s) if kind == Self::Pod && !POD_SUBRESOURCES_IGNORED.contains(&s) => Some(kind),
            Some(_) => None,
        }
    }

    /// Classifies by the object's `kind` string (`Pod`, `Deployment`, ...).
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Pod" => Self::Pod,
            "PodTemplate" => Self::PodTemplate,
            "ReplicationController" => Self::ReplicationController,
            "ReplicaSet" => Self::ReplicaSet,
            "Deployment" => Self::Deployment,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            "ControllerRevision" => Self::ControllerRevision,
            _ => return None,
        })
    }

    /// The `kind` string.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::PodTemplate => "PodTemplate",
            Self::ReplicationController => "ReplicationController",
            Self::ReplicaSet => "ReplicaSet",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::ControllerRevision => "ControllerRevision",
        }
    }

    /// Path (keys from the object root) of the object holding the pod `metadata` and `spec`;
    /// empty for a Pod (the object itself).
    pub fn template_path(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &[],
            Self::PodTemplate => &["template"],
            Self::ReplicationController
            | Self::ReplicaSet
            | Self::Deployment
            | Self::StatefulSet
            | Self::DaemonSet
            | Self::Job => &["spec", "template"],
            Self::CronJob => &["spec", "jobTemplate", "spec", "template"],
            Self::ControllerRevision => &["data", "spec", "template"],
        }
    }
}

/// One pod spec inside an object.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSpecRef<'a> {
    /// The pod spec (`PodSpec`).
    pub spec: &'a Value,
    /// The pod metadata beside it (annotations for AppArmor / legacy seccomp), if present.
    pub metadata: Option<&'a Value>,
    /// Field path of `spec` from the object root, e.g. `spec.template.spec`.
    pub path_prefix: String,
    /// Field path of `metadata` from the object root, e.g. `spec.template.metadata`.
    pub metadata_prefix: String,
}

impl<'a> PodSpecRef<'a> {
    /// A pod spec at the root of a bare `PodSpec` value (paths `spec.*`, `metadata.*`), for
    /// callers that already extracted one.
    pub fn bare(spec: &'a Value, metadata: Option<&'a Value>) -> Self {
        Self {
            spec,
            metadata,
            path_prefix: "spec".to_owned(),
            metadata_prefix: "metadata".to_owned(),
        }
    }
}

/// Every pod spec in `object`, an object of kind `kind` (at most one for the built-in kinds;
/// none when the spec is absent or not a JSON object).
pub fn pod_specs(kind: PodBearing, object: &Value) -> Vec<PodSpecRef<'_>> {
    let mut holder = object;
    for key in kind.template_path() {
        match holder.get(key) {
            Some(v) => holder = v,
            None => return Vec::new(),
        }
    }
    let Some(spec) = holder.get("spec").filter(|s| s.is_object()) else {
        return Vec::new();
    };
    let base = kind.template_path().join(".");
    let (path_prefix, metadata_prefix) = if base.is_empty() {
        ("spec".to_owned(), "metadata".to_owned())
    } else {
        (format!("{base}.spec"), format!("{base}.metadata"))
    };
    vec![PodSpecRef {
        spec,
        metadata: holder.get("metadata").filter(|m| m.is_object()),
        path_prefix,
        metadata_prefix,
    }]
}

/// Every pod spec in `object`, classified by its own `kind` field.
pub fn pod_specs_by_kind(object: &Value) -> Vec<PodSpecRef<'_>> {
    match object
        .get("kind")
        .and_then(Value::as_str)
        .and_then(PodBearing::from_kind)
    {
        Some(kind) => pod_specs(kind, object),
        None => Vec::new(),
    }
}
