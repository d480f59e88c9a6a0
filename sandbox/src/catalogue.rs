//! The fixed resource catalogue: every resource the sandbox serves, with its kind, scope,
//! short names, verbs and subresources, and the named API groups in discovery order. Pure data;
//! `discovery` builds the documents from it, the store and the controller look kinds up in it.

/// A subresource as discovery lists it.
pub struct Sub {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource.
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Sub],
}

impl ResourceDef {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }
}

pub(crate) fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

const ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const GPU: &[&str] = &["get", "patch", "update"];
const CG: &[&str] = &["create", "get"];
const CAT_ALL: &[&str] = &["all"];

const fn sub(name: &'static str, kind: &'static str, verbs: &'static [&'static str]) -> Sub {
    Sub {
        name,
        group: "",
        version: "",
        kind,
        verbs,
    }
}

const SCALE: Sub = Sub {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: GPU,
};

#[allow(clippy::too_many_arguments)]
const fn def(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Sub],
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories,
        verbs: ALL,
        subresources,
    }
}

/// Every resource the sandbox serves.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        verbs: NS_VERBS,
        ..def(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            &[],
            &[
                sub("status", "Namespace", GPU),
                sub("finalize", "Namespace", &["update"]),
            ],
        )
    },
    def(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        CAT_ALL,
        &[
            sub("attach", "PodAttachOptions", CG),
            sub("exec", "PodExecOptions", CG),
            sub("log", "Pod", &["get"]),
            sub("portforward", "PodPortForwardOptions", CG),
            sub("status", "Pod", GPU),
            sub("ephemeralcontainers", "Pod", GPU),
        ],
    ),
    def(
        "",
        "podtemplates",
        "podtemplate",
        "PodTemplate",
        true,
        &[],
        &[],
        &[],
    ),
    def(
        "",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        true,
        &["rc"],
        CAT_ALL,
        &[SCALE, sub("status", "ReplicationController", GPU)],
    ),
    def(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
    ),
    def("", "secrets", "secret", "Secret", true, &[], &[], &[]),
    def(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        CAT_ALL,
        &[sub("status", "Service", GPU)],
    ),
    def(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
    ),
    def("", "events", "event", "Event", true, &["ev"], &[], &[]),
    // Stored only (no controller fills them): tests write them by hand, as for a Service
    // without a selector.
    def(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        &[],
    ),
    def(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        CAT_ALL,
        &[SCALE, sub("status", "Deployment", GPU)],
    ),
    def(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        CAT_ALL,
        &[SCALE, sub("status", "ReplicaSet", GPU)],
    ),
    def(
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        CAT_ALL,
        &[SCALE, sub("status", "StatefulSet", GPU)],
    ),
    def(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        CAT_ALL,
        &[sub("status", "DaemonSet", GPU)],
    ),
    def(
        "batch",
        "jobs",
        "job",
        "Job",
        true,
        &[],
        CAT_ALL,
        &[sub("status", "Job", GPU)],
    ),
    def(
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        CAT_ALL,
        &[sub("status", "CronJob", GPU)],
    ),
    def(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
    ),
    // Stored only (no controller acts on them): deploy/ ships both, and its tests apply them.
    def(
        "networking.k8s.io",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        &[],
        &[],
    ),
    def(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        &[sub("status", "PodDisruptionBudget", GPU)],
    ),
    def(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        &[],
        &[],
    ),
    // Served by `reviews` (create only, never stored).
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
];

const fn review(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        verbs: &["create"],
        // The singular is the plural without its `s`, as for these kinds upstream.
        ..def(
            group,
            plural,
            plural.split_at(plural.len() - 1).0,
            kind,
            namespaced,
            &[],
            &[],
            &[],
        )
    }
}

/// Named API groups, in the order `/apis` lists them.
pub const GROUPS: &[&str] = &[
    "apps",
    "batch",
    "discovery.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
];
