//! A server-side apply by a manager that applied this object before: the API server removes
//! the fields that manager applied before and now leaves out, unless another manager owns them
//! too (`managedFields`). The judge does not model field ownership, so for such a re-apply it
//! also judges the current object with the *security-relevant* fields the configuration leaves
//! out removed, then the configuration merged on top — the worst case of what the API server
//! may store. Without it, a manager could drop the pod-level `securityContext` other managers'
//! containers rely on (`runAsNonRoot`, `seccompProfile`), or the `os` / `hostUsers` that exempt
//! them, and the stored template would violate a level no judged object did.
//!
//! Removed when the configuration leaves them out: the pod `securityContext` (field by field),
//! `hostUsers`, `os`, each named container's `securityContext` (field by field; containers the
//! configuration does not name stay, as the stricter choice), and the template's legacy
//! seccomp / AppArmor annotations. Over-approximation: a field another manager also owns
//! stays in the real result, so a re-apply can be refused (403) that the API server would have
//! stored compliant — only when the configuration omits settings others still rely on.

use serde_json::{Map, Value};

use crate::sanitize::pss::PodBearing;

/// Whether `manager` has applied this object before (an `Apply` entry in its
/// `managedFields`): only then can an apply remove fields.
pub(super) fn reapplies(current: &Value, manager: &str) -> bool {
    applied_entries(current, manager).next().is_some()
}

/// `manager`'s `Apply` entries in `current`'s `managedFields` (what it owns by applying is in
/// each entry's `fieldsV1`).
pub(crate) fn applied_entries<'a>(
    current: &'a Value,
    manager: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| {
            e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
        })
}

/// `current` without the security-relevant fields of its pod template that `config` leaves
/// out (see the module doc).
pub(super) fn without_omitted(current: &Value, config: &Value, kind: PodBearing) -> Value {
    let mut out = current.clone();
    let base = kind.template_path();
    let Some(template) = get_mut(&mut out, base) else {
        return out;
    };
    let cfg_template = get(config, base);
    if let Some(meta) = template.get_mut("metadata") {
        let cfg_ann = cfg_template.and_then(|t| t.pointer("/metadata/annotations"));
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.retain(|k, _| {
                !(k.starts_with("seccomp.security.alpha.kubernetes.io/")
                    || k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
                    || cfg_ann.is_some_and(|c| c.get(k).is_some())
            });
        }
    }
    let cfg_spec = cfg_template.and_then(|t| t.get("spec"));
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return out;
    };
    for key in ["hostUsers", "os"] {
        if cfg_spec.and_then(|c| c.get(key)).is_none() {
            spec.remove(key);
        }
    }
    prune_key(spec, "securityContext", cfg_spec);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        let cfg_items = cfg_spec.and_then(|c| c.get(list)).and_then(Value::as_array);
        for item in items.iter_mut() {
            let name = item.get("name").and_then(Value::as_str).map(str::to_owned);
            let cfg_item = cfg_items.and_then(|c| {
                c.iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == name.as_deref())
            });
            // Containers the configuration does not name stay whole (stricter).
            if let (Some(cfg_item), Some(obj)) = (cfg_item, item.as_object_mut()) {
                prune_key(obj, "securityContext", Some(cfg_item));
            }
        }
    }
    out
}

/// Remove `obj[key]`'s members (recursively) that `cfg[key]` does not have; all of it when
/// `cfg` has no `key`.
fn prune_key(obj: &mut Map<String, Value>, key: &str, cfg: Option<&Value>) {
    match cfg.and_then(|c| c.get(key)) {
        None => {
            obj.remove(key);
        }
        Some(c) => {
            if let Some(v) = obj.get_mut(key) {
                prune(v, c);
            }
        }
    }
}

fn prune(v: &mut Value, cfg: &Value) {
    let (Some(obj), Some(c)) = (v.as_object_mut(), cfg.as_object()) else {
        return;
    };
    obj.retain(|k, _| c.contains_key(k));
    for (k, child) in obj.iter_mut() {
        if let Some(cc) = c.get(k) {
            prune(child, cc);
        }
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_manager_that_applied_before_reapplies() {
        let cur = json!({"metadata": {"managedFields": [
            {"manager": "x", "operation": "Apply"}, {"manager": "y", "operation": "Update"}]}});
        assert!(reapplies(&cur, "x"));
        assert!(!reapplies(&cur, "y"));
        assert!(!reapplies(&cur, "z"));
        assert!(!reapplies(&json!({}), "x"));
    }

    #[test]
    fn omitted_security_fields_are_removed_and_the_rest_kept() {
        let cur = json!({"spec": {"template": {
            "metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "runtime/default", "team": "a"}},
            "spec": {"hostUsers": false, "os": {"name": "linux"}, "nodeName": "n",
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 1},
                "containers": [
                    {"name": "a", "image": "i", "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false}},
                    {"name": "b", "image": "i", "securityContext": {"allowPrivilegeEscalation": false}}]}}}});
        let config = json!({"spec": {"template": {"spec": {
            "securityContext": {"fsGroup": 2},
            "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false}}]}}}});
        let out = without_omitted(&cur, &config, PodBearing::Deployment);
        assert_eq!(
            out,
            json!({"spec": {"template": {
                "metadata": {"annotations": {"team": "a"}},
                "spec": {"nodeName": "n",
                    "securityContext": {"fsGroup": 1},
                    "containers": [
                        {"name": "a", "image": "i", "securityContext": {"allowPrivilegeEscalation": false}},
                        {"name": "b", "image": "i", "securityContext": {"allowPrivilegeEscalation": false}}]}}}})
        );
    }
}
