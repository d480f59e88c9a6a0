//! A PUT's two registry rules that decide whether it may create: create-on-update and the uid
//! precondition, as kube-apiserver's generic store applies them (`registry/store.go` `Update`).
//!
//! * A `metadata.uid` in a PUT body is a precondition (`rest.DefaultUpdatedObjectInfo`): it
//!   must equal the stored object's uid, and an absent object has none, so such a PUT never
//!   creates. A mismatch is 409 `Conflict` ("Precondition failed: UID in precondition: …").
//! * A PUT of an absent object creates it only for kinds whose update strategy allows
//!   create-on-update ([`creates_on_update`]); the caller must then also be allowed `create`
//!   (kube-apiserver's `handlers/update.go` authorizes the create path as `create`), else 403.
//!   Other kinds answer 404, as before.
//!
//! A server-side apply's create path gets the same `create` check ([`may_create`]).
//!
//! The proxy's create guard (`src/authz/create_guard.rs`) relies on the first rule.

use serde_json::Value;

use super::{
    catalogue::ResourceDef,
    rbac::{self, Attrs, User},
    store::{self, Store},
};
use portcullis::k8s::Status;

/// Kinds the sandbox serves whose kube-apiserver update strategy returns
/// `AllowCreateOnUpdate() == true`: Services (`core/service/strategy.go`), core Events
/// (`core/event`), PodDisruptionBudgets (`policy/poddisruptionbudget`) and the four RBAC kinds
/// (`rbac/role`, `rolebinding`, `clusterrole`, `clusterrolebinding`). The other served kinds
/// (workloads, pods, ConfigMaps, Secrets, ServiceAccounts, Namespaces, NetworkPolicies …)
/// return false: a PUT of an absent one is 404.
pub fn creates_on_update(def: &ResourceDef) -> bool {
    matches!(
        (def.group, def.plural),
        ("", "services")
            | ("", "events")
            | ("policy", "poddisruptionbudgets")
            | ("rbac.authorization.k8s.io", "roles")
            | ("rbac.authorization.k8s.io", "rolebindings")
            | ("rbac.authorization.k8s.io", "clusterroles")
            | ("rbac.authorization.k8s.io", "clusterrolebindings")
    )
}

/// The body's uid, if it names one.
fn uid_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
}

fn precondition_failed(def: &ResourceDef, name: &str, wanted: &str, stored: &str) -> Status {
    let mut s = store::conflict(def, name);
    s.message = s.message.replace(
        "the object has been modified; please apply your changes to the latest version and try again",
        &format!("Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}"),
    );
    s
}

/// The uid precondition of a PUT against the stored object (`None`: absent).
pub fn check_uid(
    def: &ResourceDef,
    name: &str,
    obj: &Value,
    stored: Option<&Value>,
) -> Result<(), Status> {
    let Some(wanted) = uid_of(obj) else {
        return Ok(());
    };
    let have = stored
        .and_then(|s| s["metadata"]["uid"].as_str())
        .unwrap_or("");
    if wanted == have {
        Ok(())
    } else {
        Err(precondition_failed(def, name, wanted, have))
    }
}

/// The create check of a write's create path (a PUT of an absent object here, a server-side
/// apply of one in `rest.rs`): `user` must be allowed `create`, else 403 worded for `create`.
pub fn may_create(store: &Store, attrs: &Attrs, user: &User) -> Result<(), Status> {
    let as_create = Attrs {
        verb: "create".into(),
        ..attrs.clone()
    };
    let d = rbac::authorize(store, user, &as_create);
    if d.allowed {
        Ok(())
    } else {
        Err(rbac::forbidden(user, &as_create, &d.reason))
    }
}

/// A PUT of an absent object: created when the kind allows it, the uid precondition holds
/// and `user` may create; `missing` (the 404) otherwise.
pub fn create(
    store: &mut Store,
    def: &'static ResourceDef,
    attrs: &Attrs,
    user: &User,
    obj: Value,
    dry_run: bool,
    missing: Status,
) -> Result<Value, Status> {
    if !creates_on_update(def) {
        return Err(missing);
    }
    check_uid(def, &attrs.name, &obj, None)?;
    may_create(store, attrs, user)?;
    let ns = (!attrs.namespace.is_empty()).then_some(attrs.namespace.as_str());
    store.create(def, ns, obj, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RESOURCES;

    fn def(plural: &str) -> &'static ResourceDef {
        RESOURCES.iter().find(|d| d.plural == plural).unwrap()
    }

    #[test]
    fn only_the_kinds_kube_apiserver_creates_on_update() {
        for p in [
            "services",
            "events",
            "roles",
            "rolebindings",
            "clusterroles",
        ] {
            assert!(creates_on_update(def(p)), "{p}");
        }
        for p in ["pods", "deployments", "configmaps", "secrets", "namespaces"] {
            assert!(!creates_on_update(def(p)), "{p}");
        }
    }

    #[test]
    fn a_uid_in_the_body_is_a_precondition() {
        let d = def("services");
        let body = serde_json::json!({"metadata": {"uid": "u-1"}});
        let stored = serde_json::json!({"metadata": {"uid": "u-1"}});
        assert!(check_uid(d, "web", &body, Some(&stored)).is_ok());
        let other = serde_json::json!({"metadata": {"uid": "u-2"}});
        let e = check_uid(d, "web", &body, Some(&other)).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(
            e.message
                .contains("Precondition failed: UID in precondition: u-1, UID in object meta: u-2"),
            "{}",
            e.message
        );
        let e = check_uid(d, "web", &body, None).unwrap_err();
        assert!(e.message.ends_with("UID in object meta: "), "{}", e.message);
        assert!(check_uid(d, "web", &serde_json::json!({}), None).is_ok());
    }
}
