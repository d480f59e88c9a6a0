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
//!
//! # Matching ([`Scope::allows`])
//!
//! A rule matches a request when all of these hold:
//!
//! * `verbs` contains the request verb or `*`;
//! * resource requests: `resources` (same grammar as grants: `pods`, `pods/exec`, `pods/*`,
//!   `*/scale`, `*`) matches resource and subresource; `apiGroups` omitted or containing the
//!   group or `*`; `resourceNames` empty or containing the (non-empty) name; `namespaces` omitted
//!   or containing `*` (anything, cluster-scoped and cluster-wide included), otherwise a listed
//!   name/glob (`team-*`) matches the request's namespace — a request without a namespace
//!   (cluster-scoped, or cluster-wide list/watch) never matches an explicit namespace list. The
//!   namespace object `namespaces/<ns>` is addressed with namespace `<ns>`, so a rule listing
//!   `<ns>` covers it (unlike grants, wildcards are enough: a scope only narrows);
//! * non-resource requests: `nonResourceURLs` holds the path exactly, a `prefix*` of it, or `*`.
//!
//! A rule with neither `resources` nor `nonResourceURLs` matches nothing, and so does an empty
//! scope (`[]`). Scope strings are not validated: a malformed entry simply matches nothing.

use serde::{Deserialize, Serialize};

use super::pattern::{glob_match, resource_match, url_match};
use crate::k8s::request::RequestInfo;

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

impl Scope {
    /// Whether some rule of the scope allows the request (see the module doc).
    pub fn allows(&self, req: &RequestInfo) -> bool {
        self.0.iter().any(|r| r.matches(req))
    }
}

impl ScopeRule {
    /// Whether this rule allows the request (see the module doc).
    pub fn matches(&self, req: &RequestInfo) -> bool {
        if !self.verbs.iter().any(|v| v == "*" || *v == req.verb) {
            return false;
        }
        if !req.is_resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_match(u, &req.path));
        }
        if let Some(namespaces) = &self.namespaces {
            let any = namespaces.iter().any(|n| n == "*");
            if !any
                && (req.namespace.is_empty()
                    || !namespaces.iter().any(|n| glob_match(n, &req.namespace)))
            {
                return false;
            }
        }
        if let Some(groups) = &self.api_groups {
            if !groups.iter().any(|g| g == "*" || *g == req.api_group) {
                return false;
            }
        }
        self.resources
            .iter()
            .any(|r| resource_match(r, &req.resource, &req.subresource))
            && (self.resource_names.is_empty()
                || (!req.name.is_empty() && self.resource_names.contains(&req.name)))
    }
}
