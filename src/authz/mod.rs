//! Authorization: grants from config, narrowed by the token's scope. Deny by default.
//!
//! Pure: no I/O, no async. [`build`] validates the `authorization:` config section and compiles
//! it into an [`Authorizer`]; [`Authorizer::authorize`] decides one classified request
//! ([`RequestInfo`](crate::k8s::request::RequestInfo)) for one [`Identity`](crate::authn::identity::Identity);
//! [`forbidden`] words a denial exactly as kube-apiserver does.
//!
//! # The decision
//!
//! 1. **Public non-resource URLs.** A non-resource `get`/`head` whose path matches
//!    `public_non_resource_urls` is allowed to every authenticated caller, *without* consulting
//!    grants or the token scope: kubectl and client-go need discovery, `/version` and OpenAPI
//!    whatever a token is scoped to, and these paths reveal nothing tenant-specific.
//! 2. **Policy.** Otherwise the request must be allowed by a rule of some tenant or grant one of
//!    whose subjects matches the caller (all matching tenants and grants count: a union, as in
//!    RBAC). If none does: denied, reason `no grant`.
//! 3. **Scope.** If the identity carries a token scope, some scope rule must also allow the
//!    request ([`Scope::allows`]); if none does: denied, reason `outside token scope`. Effective
//!    permission is therefore *policy ∩ scope*: a scope can never widen what policy grants.
//! 4. Allowed, reason `tenant <name>` / `grant <name>` (the first, tenants before grants, in
//!    config order).
//!
//! `Identity::tenant` is not trusted for the decision: tenant membership is recomputed from the
//! subjects. [`Authorizer::tenant_of`] gives the first matching tenant (config order), for
//! labelling (audit, limits).
//!
//! # Subjects
//!
//! `{user: alice}` (exact user name), `{group: ci}` (one of the identity's groups),
//! `{extra: {key: example.com/team, value: a}}` (`extra[key]` contains `value`). Exact, case-
//! sensitive matching; no wildcards.
//!
//! # Where a resource request points
//!
//! From the [`RequestInfo`](crate::k8s::request::RequestInfo), one of:
//!
//! * **in namespace `ns`** — `namespace` is set (a namespaced resource);
//! * **the namespace object `ns`** — core `namespaces` with a name (`get`/`update`/`delete
//!   namespace ns`, `namespaces/ns/status`, `/finalize`): the apiserver addresses it with
//!   namespace `ns`;
//! * **cluster-scoped** — no namespace, and the resource is a built-in cluster-scoped resource
//!   (nodes, persistentvolumes, clusterroles, CRDs, `list`/`create` namespaces, …) or is listed in
//!   `cluster_scoped_resources`;
//! * **cluster-wide** — no namespace on any other resource: a list/watch/deletecollection across
//!   all namespaces (`GET /api/v1/pods`). Unknown resources (custom resources not listed in
//!   `cluster_scoped_resources`) land here: the fail-closed reading.
//!
//! # Grant rules
//!
//! A rule is either a **resource rule** (`resources`, `api_groups` required) or a
//! **non-resource rule** (`non_resource_urls`), never both. A resource rule matches when:
//!
//! * `verbs` holds the request verb or `*` (valid: `get list watch create update patch delete
//!   deletecollection proxy`). exec/attach/portforward — SPDY POST or WebSocket GET upgrade —
//!   are `create` on `pods/exec` etc.; `get` on `pods/exec` does not allow them;
//! * `namespaces`:
//!   * contains `"*"` → anything: every namespace, cluster-scoped resources, cluster-wide
//!     requests. This is the **only** way to allow a cluster-wide list/watch/deletecollection;
//!   * omitted → cluster-scoped resources and namespace objects only (never anything in a
//!     namespace, never a cluster-wide list of a namespaced resource). Naming a resource that is
//!     not known to be cluster-scoped in such a rule is a config error;
//!   * names/globs (`team-a`, `team-a-*`) → requests in a matching namespace. Never a request
//!     without a namespace. The namespace object `ns` is covered only if the rule names the
//!     `namespaces` resource explicitly (`resources: [namespaces]`): `*`, `*/status` do not reach
//!     it, so `resources: ["*"]` in `team-a` does not let anyone delete or relabel namespace
//!     `team-a`;
//! * `api_groups` holds the group (`""` = core) or `*`;
//! * `resources` (RBAC grammar plus `<resource>/*`): `pods` (the resource itself, no
//!   subresource), `pods/exec` (that subresource only), `pods/*` (every subresource of pods, not
//!   pods itself), `*/scale` (that subresource of every resource), `*` (everything including
//!   subresources);
//! * `resource_names` is empty (any name) or holds the request's name. A request without a name
//!   (`create`, a plain `list`) never matches a rule with names; a list/watch with
//!   `fieldSelector=metadata.name=x` carries the name `x` and does.
//!
//! A non-resource rule matches a non-resource request whose lower-cased method is in `verbs`
//! (`get head post put patch delete options`, or `*`; `get` does not imply `head`) and whose path
//! is listed exactly, or starts with a listed `prefix*`, or `*` is listed.
//!
//! # Tenants
//!
//! A tenant owns `namespaces` (names or globs, not `*`; an exact name may belong to one tenant
//! only). Its `rules` have no `namespaces` key: they always apply inside the tenant's
//! namespaces and nowhere else (never cluster-wide, never cluster-scoped). Absent `rules` means
//! every verb on every resource (`*`) in those namespaces. Every tenant may also `get` its own
//! namespace objects (implicit rule); `update`/`delete`/`patch` of a namespace object need a
//! tenant rule naming `namespaces`.
//!
//! # Validation ([`build`])
//!
//! All problems are reported at once with their key path (`authorization.grants[0].rules[1].verbs`):
//! invalid or duplicate tenant/grant names, empty subjects, a tenant without namespaces or with
//! `*`, a namespace claimed by two tenants, unknown verbs, empty `verbs`/`resources`/
//! `api_groups`/`namespaces` lists, missing `api_groups`, malformed resource, namespace and URL
//! patterns, a rule mixing resources and URLs, and a public URL list containing `*`.

pub mod config;
pub mod create_guard;
pub mod engine;
pub mod escalation;
pub mod forbidden;
pub mod layer;
pub mod pattern;
pub mod review;
pub mod rules;
pub mod schema;
pub mod scope;

pub use config::{build, AuthorizationConfig};
pub use engine::{Authorizer, AuthzPolicy, Decision};
pub use forbidden::forbidden;
pub use layer::AuthzLayer;
pub use scope::{Scope, ScopeRule};

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_sessions;
