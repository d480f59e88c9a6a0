//! The token scope claim (`portcullis.io/scope` by default): a list of rules a token carries to
//! *narrow* what its subject's grants allow. A request is within scope if any rule matches;
//! effective permission = grants ∩ scope, so a scope never widens.
//!
//! JSON shape (claim value):
//! ```json
//! [{"namespaces": ["team-a"], "verbs": ["get", "list"], "apiGroups": [""],
//!   "resources": ["pods", "pods/log"], "resourceNames": [], "nonResourceURLs": []}]
//! ```
//! Omitted `apiGroups` means any group; omitted `resourceNames` means any name; omitted
//! `namespaces` means any namespace (cluster-wide included). `verbs` is required.

use serde::{Deserialize, Serialize};

/// A parsed scope claim.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(pub Vec<ScopeRule>);

/// One rule of a scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}
