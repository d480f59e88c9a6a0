//! The YAML schema of the `authorization:` section, exactly as operators write it (unknown keys
//! refused). Validated and compiled by `config.rs`; the semantics are in [`crate::authz`].

use serde::Deserialize;

/// The public non-resource URLs used when `public_non_resource_urls` is absent: discovery,
/// version, OpenAPI and health — what kubectl and client-go fetch before anything else.
pub const DEFAULT_PUBLIC_NON_RESOURCE_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/openapi/*",
    "/healthz",
    "/livez",
    "/readyz",
];

/// `authorization:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AuthorizationConfig {
    /// Non-resource paths every authenticated caller may GET/HEAD, whatever its grants and token
    /// scope. Absent: [`DEFAULT_PUBLIC_NON_RESOURCE_URLS`]; `[]`: none.
    #[serde(default = "default_public")]
    pub public_non_resource_urls: Vec<String>,
    /// Cluster-scoped resources besides the built-in ones (CRDs), as `<resource>.<group>`
    /// (`<resource>` for the core group).
    #[serde(default)]
    pub cluster_scoped_resources: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            public_non_resource_urls: default_public(),
            cluster_scoped_resources: Vec::new(),
            tenants: Vec::new(),
            grants: Vec::new(),
        }
    }
}

fn default_public() -> Vec<String> {
    DEFAULT_PUBLIC_NON_RESOURCE_URLS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// `authorization.tenants[]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TenantConfig {
    pub name: String,
    /// Names or globs (`team-a-*`); not `*`.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub subjects: Vec<SubjectConfig>,
    /// Absent: every verb on every resource (not the namespace objects) in the namespaces.
    #[serde(default)]
    pub rules: Option<Vec<TenantRuleConfig>>,
    /// Record the exec / attach sessions this tenant's rules allow (`audit.session_recording`).
    #[serde(default)]
    pub record_sessions: bool,
}

/// `authorization.tenants[].rules[]` — always confined to the tenant's namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TenantRuleConfig {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// `authorization.grants[]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct GrantConfig {
    pub name: String,
    #[serde(default)]
    pub subjects: Vec<SubjectConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Record the exec / attach sessions this grant allows (`audit.session_recording`).
    #[serde(default)]
    pub record_sessions: bool,
}

/// `authorization.grants[].rules[]`: either a resource rule or a non-resource rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RuleConfig {
    /// Absent: cluster-scoped resources only. `*` listed: everything, cluster-wide included.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default)]
    pub non_resource_urls: Vec<String>,
}

/// One subject: `{user: alice}`, `{group: ci}` or `{extra: {key: k, value: v}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SubjectConfig {
    User(String),
    Group(String),
    Extra(ExtraSubject),
}

/// `{extra: {key, value}}`: the identity's `extra[key]` contains `value`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSubject {
    pub key: String,
    pub value: String,
}
