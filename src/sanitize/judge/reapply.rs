//! A server-side apply by a manager that applied this object before: the API server removes
//! the fields that manager applied before and now leaves out, unless another *applier* owns
//! them too. For such a re-apply the judge also judges the current object with the
//! *security-relevant* fields the re-apply would remove taken out, then the configuration
//! merged on top. Without it, a manager could drop the pod-level `securityContext` other
//! managers' containers rely on (`runAsNonRoot`, `seccompProfile`), or the `os` / `hostUsers`
//! that exempt them, and the stored template would violate a level no judged object did.
//!
//! Security-relevant: the pod `securityContext`, `hostUsers`, `os`, each container's
//! `securityContext` (field by field), and the template's legacy seccomp / AppArmor
//! annotations.
//!
//! Which of them go is read from `managedFields` (structured-merge-diff's `prune`, read in its
//! `merge/update.go`, not run against a real API server): a field goes when the manager's last
//! applied set (`fieldsV1`) has it and no other `Apply` entry has it as a member — an `Update`
//! entry does not keep a field — or when an ancestor the manager's set has as a member (a
//! container it named, an atomic struct) goes as a whole. A container the configuration no
//! longer names that no other applier owns goes as a whole in the API server; it stays whole
//! here (judging more containers is never laxer). Where the model reads the sets differently
//! from the API server it removes more, never less:
//! * an owner is counted only in an entry of the object's own resource (no subresource) at the
//!   object's `apiVersion`; the manager's own set counts wherever it has a node, member or not;
//! * a member ancestor (other than a container the configuration names) takes its whole
//!   subtree with it unless another applier has that ancestor as a member too.
//!
//! When the manager's set cannot be read (no `fieldsV1`, another `fieldsType`, another
//! `apiVersion` than the object's), the worst case instead: every security field the
//! configuration leaves out is removed from the containers it names and from the pod (the
//! containers it does not name stay whole). Either way a re-apply can be refused (403) that
//! the API server would have stored compliant, never the reverse.

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
    entries(current)
        .filter(move |e| e.get("manager").and_then(Value::as_str) == Some(manager) && is_apply(e))
}

fn entries(current: &Value) -> impl Iterator<Item = &Value> {
    current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_apply(entry: &Value) -> bool {
    entry.get("operation").and_then(Value::as_str) == Some("Apply")
}

/// `current` without the security-relevant fields of its pod template that a re-apply of
/// `config` by `manager` removes (see the module doc).
pub(super) fn without_removed(
    current: &Value,
    config: &Value,
    kind: PodBearing,
    manager: &str,
) -> Value {
    match Owners::read(current, manager) {
        Some(owners) => owners.strip(current, config, kind),
        None => without_omitted(current, config, kind),
    }
}

/// The worst case: `current` without every security-relevant field of its pod template that
/// `config` leaves out, from the pod and the containers `config` names.
fn without_omitted(current: &Value, config: &Value, kind: PodBearing) -> Value {
    let mut out = current.clone();
    let base = kind.template_path();
    let Some(template) = get_mut(&mut out, base) else {
        return out;
    };
    let cfg_template = get(config, base);
    if let Some(meta) = template.get_mut("metadata") {
        let cfg_ann = cfg_template.and_then(|t| t.pointer("/metadata/annotations"));
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.retain(|k, _| !legacy_annotation(k) || cfg_ann.is_some_and(|c| c.get(k).is_some()));
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

/// Whether an annotation is one of the legacy seccomp / AppArmor ones Pod Security reads.
fn legacy_annotation(key: &str) -> bool {
    key.starts_with("seccomp.security.alpha.kubernetes.io/")
        || key.starts_with("container.apparmor.security.beta.kubernetes.io/")
}

/// One step of a path in the object, as `fieldsV1` names it.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    /// A struct field or a map key: `f:<name>`.
    Field(String),
    /// An item of a list keyed by `name` (the containers): `k:{"name":…}`.
    Named(String),
}

/// The `fieldsV1` sets the removals are read from.
struct Owners<'a> {
    /// The manager's last applied set.
    mine: Vec<&'a Map<String, Value>>,
    /// Other appliers' sets (of the object's own resource, at its `apiVersion`).
    others: Vec<&'a Map<String, Value>>,
}

impl<'a> Owners<'a> {
    /// `None` when the manager's applied set cannot be read: the worst case then.
    fn read(current: &'a Value, manager: &str) -> Option<Owners<'a>> {
        let version = current.get("apiVersion").and_then(Value::as_str)?;
        let set = |e: &'a Value| {
            let readable = e.get("fieldsType").and_then(Value::as_str) == Some("FieldsV1")
                && e.get("apiVersion").and_then(Value::as_str) == Some(version);
            readable
                .then(|| e.get("fieldsV1").and_then(Value::as_object))
                .flatten()
        };
        let (mut mine, mut others) = (Vec::new(), Vec::new());
        for e in entries(current) {
            let own_resource = e
                .get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if !is_apply(e) || !own_resource {
                continue;
            }
            if e.get("manager").and_then(Value::as_str) == Some(manager) {
                mine.push(set(e)?);
            } else if let Some(s) = set(e) {
                others.push(s);
            }
        }
        (!mine.is_empty()).then_some(Owners { mine, others })
    }

    fn strip(&self, current: &Value, config: &Value, kind: PodBearing) -> Value {
        let mut out = current.clone();
        let base = kind.template_path();
        let Some(template) = get_mut(&mut out, base) else {
            return out;
        };
        let mut path: Vec<Seg> = base.iter().map(|s| Seg::Field((*s).to_owned())).collect();
        let at = |path: &mut Vec<Seg>, more: &[&str]| {
            path.extend(more.iter().map(|s| Seg::Field((*s).to_owned())));
        };
        let depth = path.len();
        if let Some(ann) = template
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            at(&mut path, &["metadata", "annotations"]);
            let keys: Vec<String> = ann
                .keys()
                .filter(|k| legacy_annotation(k))
                .cloned()
                .collect();
            for key in keys {
                self.strip_key(ann, &key, &mut path, config);
            }
            path.truncate(depth);
        }
        let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
            return out;
        };
        at(&mut path, &["spec"]);
        for key in ["hostUsers", "os", "securityContext"] {
            self.strip_key(spec, key, &mut path, config);
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            at(&mut path, &[list]);
            for item in items.iter_mut() {
                let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let Some(obj) = item.as_object_mut() else {
                    continue;
                };
                path.push(Seg::Named(name));
                // A container the configuration no longer names that goes as a whole in the
                // API server stays whole here: judging it is never laxer.
                let named = value_at(config, &path).is_some();
                let goes_whole = self.mine_member(&path) && !self.other_member(&path);
                if named || !goes_whole {
                    self.strip_key(obj, "securityContext", &mut path, config);
                }
                path.pop();
            }
            path.pop();
        }
        out
    }

    /// Remove `obj[key]` (at `path` + `key`) if the re-apply removes it, or the leaves below
    /// it that it removes and then what emptied.
    fn strip_key(
        &self,
        obj: &mut Map<String, Value>,
        key: &str,
        path: &mut Vec<Seg>,
        config: &Value,
    ) {
        let Some(v) = obj.get_mut(key) else {
            return;
        };
        path.push(Seg::Field(key.to_owned()));
        match v.as_object_mut() {
            Some(children) if !children.is_empty() => {
                let keys: Vec<String> = children.keys().cloned().collect();
                for k in keys {
                    self.strip_key(children, &k, path, config);
                }
                if children.is_empty() {
                    obj.remove(key);
                }
            }
            _ => {
                if value_at(config, path).is_none() && self.removes(config, path) {
                    obj.remove(key);
                }
            }
        }
        path.pop();
    }

    /// Whether the re-apply removes the leaf at `path`, which the configuration leaves out:
    /// the manager applied it and no other applier owns it, or an ancestor the manager's set
    /// has as a member goes as a whole (the configuration does not set it and no other
    /// applier has it as a member).
    fn removes(&self, config: &Value, path: &[Seg]) -> bool {
        let applied = self.mine.iter().any(|t| node(t, path).is_some());
        if applied && !self.other_member(path) {
            return true;
        }
        (1..path.len()).any(|n| {
            let ancestor = &path[..n];
            value_at(config, ancestor).is_none()
                && self.mine_member(ancestor)
                && !self.other_member(ancestor)
        })
    }

    fn mine_member(&self, path: &[Seg]) -> bool {
        self.mine
            .iter()
            .any(|t| node(t, path).is_some_and(is_member))
    }

    fn other_member(&self, path: &[Seg]) -> bool {
        self.others
            .iter()
            .any(|t| node(t, path).is_some_and(is_member))
    }
}

/// The node of a `fieldsV1` set at `path`.
fn node<'t>(set: &'t Map<String, Value>, path: &[Seg]) -> Option<&'t Map<String, Value>> {
    path.iter().try_fold(set, |n, seg| {
        let child = match seg {
            Seg::Field(name) => n.get(&format!("f:{name}")),
            Seg::Named(name) => n.iter().find_map(|(k, v)| {
                let key: Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
                let only_name = key.as_object().is_some_and(|o| o.len() == 1)
                    && key.get("name").and_then(Value::as_str) == Some(name.as_str());
                only_name.then_some(v)
            }),
        };
        child.and_then(Value::as_object)
    })
}

/// Whether a set's node is a member itself (a leaf, or `.` marks it), not only the prefix of
/// its children.
fn is_member(node: &Map<String, Value>) -> bool {
    node.is_empty() || node.contains_key(".")
}

/// The value at `path` in an object.
fn value_at<'v>(v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Field(name) => v.get(name.as_str()),
        Seg::Named(name) => v
            .as_array()?
            .iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some(name.as_str())),
    })
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

    /// A Deployment at `apps/v1` with these `managedFields` entries (manager, operation,
    /// `fieldsV1` below `spec.template.spec`).
    fn deployment(spec: Value, entries: &[(&str, &str, Value)]) -> Value {
        let managed: Vec<Value> = entries
            .iter()
            .map(|(m, op, fields)| {
                json!({"manager": m, "operation": op, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:template": {"f:spec": fields}}}})
            })
            .collect();
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "managedFields": managed},
            "spec": {"template": {"spec": spec}}})
    }

    fn template_spec(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]
    }

    #[test]
    fn a_field_goes_when_the_manager_applied_it_and_no_other_applier_owns_it() {
        let cur = deployment(
            json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 1,
                "seccompProfile": {"type": "RuntimeDefault"}}, "containers": []}),
            &[
                (
                    "x",
                    "Apply",
                    json!({"f:securityContext": {"f:runAsNonRoot": {}, "f:runAsUser": {},
                    "f:seccompProfile": {"f:type": {}}}}),
                ),
                // Another applier keeps what it owns; an updater does not (SMD's prune counts
                // appliers only); a field x never applied stays.
                (
                    "y",
                    "Apply",
                    json!({"f:securityContext": {"f:seccompProfile": {"f:type": {}}}}),
                ),
                (
                    "u",
                    "Update",
                    json!({"f:securityContext": {"f:runAsUser": {}, "f:fsGroup": {}}}),
                ),
            ],
        );
        let config = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        assert_eq!(
            template_spec(&out)["securityContext"],
            json!({"fsGroup": 1, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        // What the configuration sets is never removed here (the merge sets it).
        let config =
            json!({"spec": {"template": {"spec": {"securityContext": {"runAsNonRoot": true}}}}});
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        assert_eq!(
            template_spec(&out)["securityContext"]["runAsNonRoot"],
            json!(true)
        );
        // Another manager's first apply is not a re-apply; one that applied none of these
        // fields removes none.
        let out = without_removed(&cur, &config, PodBearing::Deployment, "y");
        assert_eq!(
            template_spec(&out)["securityContext"],
            template_spec(&cur)["securityContext"]
        );
    }

    #[test]
    fn containers_lose_what_the_manager_alone_applied() {
        let sc = json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false});
        let cur = deployment(
            json!({"containers": [
                {"name": "a", "image": "i", "securityContext": sc},
                {"name": "b", "image": "i", "securityContext": sc},
                {"name": "c", "image": "i", "securityContext": sc},
                {"name": "d", "image": "i", "securityContext": sc}]}),
            &[
                (
                    "x",
                    "Apply",
                    json!({"f:containers": {
                    "k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:securityContext": {"f:runAsNonRoot": {}}},
                    "k:{\"name\":\"b\"}": {".": {}, "f:name": {}, "f:securityContext": {"f:runAsNonRoot": {}}},
                    "k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:securityContext": {"f:runAsNonRoot": {}}}}}),
                ),
                (
                    "y",
                    "Apply",
                    json!({"f:containers": {
                    "k:{\"name\":\"b\"}": {".": {}, "f:name": {}, "f:image": {}},
                    "k:{\"name\":\"d\"}": {".": {}, "f:name": {}, "f:securityContext": {"f:runAsNonRoot": {}}}}}),
                ),
            ],
        );
        // x now names a alone, without its securityContext.
        let config =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i"}]}}}});
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        let containers = &template_spec(&out)["containers"];
        let without = json!({"allowPrivilegeEscalation": false});
        // a: named, x's field goes; b: kept by y's apply, x's field in it goes; c: goes as a
        // whole in the API server, stays whole here; d: never x's.
        assert_eq!(containers[0]["securityContext"], without);
        assert_eq!(containers[1]["securityContext"], without);
        assert_eq!(containers[2]["securityContext"], sc);
        assert_eq!(containers[3]["securityContext"], sc);
    }

    #[test]
    fn a_member_ancestor_takes_its_subtree_unless_another_applier_has_it() {
        let cur = deployment(
            json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": []}),
            &[
                // x applied an empty seccompProfile once (a member); y set its type.
                (
                    "x",
                    "Apply",
                    json!({"f:securityContext": {"f:seccompProfile": {}}}),
                ),
                (
                    "y",
                    "Apply",
                    json!({"f:securityContext": {"f:seccompProfile": {"f:type": {}}}}),
                ),
            ],
        );
        let config = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        assert_eq!(template_spec(&out).get("securityContext"), None, "{out}");
    }

    #[test]
    fn an_unreadable_set_falls_back_to_the_worst_case() {
        let spec = json!({"securityContext": {"runAsNonRoot": true}, "hostUsers": false,
            "containers": [{"name": "a", "image": "i", "securityContext": {"runAsNonRoot": true}}]});
        let config =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i"}]}}}});
        let x_owns_nothing = deployment(spec.clone(), &[("x", "Apply", json!({}))]);
        let mut cases = Vec::new();
        for (key, value) in [
            ("fieldsV1", Value::Null),
            ("fieldsType", json!("FieldsV2")),
            ("apiVersion", json!("apps/v1beta2")),
        ] {
            let mut cur = x_owns_nothing.clone();
            cur["metadata"]["managedFields"][0][key] = value;
            cases.push(cur);
        }
        for cur in cases {
            let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
            assert_eq!(out, without_omitted(&cur, &config, PodBearing::Deployment));
            assert_eq!(template_spec(&out).get("securityContext"), None, "{out}");
        }
        // Readable, and x applied none of them: nothing goes.
        let out = without_removed(&x_owns_nothing, &config, PodBearing::Deployment, "x");
        assert_eq!(out, x_owns_nothing);
    }

    #[test]
    fn owners_of_another_version_or_a_subresource_keep_nothing() {
        let cur = deployment(
            json!({"securityContext": {"runAsNonRoot": true}, "containers": []}),
            &[
                (
                    "x",
                    "Apply",
                    json!({"f:securityContext": {"f:runAsNonRoot": {}}}),
                ),
                (
                    "y",
                    "Apply",
                    json!({"f:securityContext": {"f:runAsNonRoot": {}}}),
                ),
                (
                    "z",
                    "Apply",
                    json!({"f:securityContext": {"f:runAsNonRoot": {}}}),
                ),
            ],
        );
        let config = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let mut other = cur.clone();
        other["metadata"]["managedFields"][1]["apiVersion"] = json!("apps/v1beta2");
        other["metadata"]["managedFields"][2]["subresource"] = json!("status");
        let out = without_removed(&other, &config, PodBearing::Deployment, "x");
        assert_eq!(template_spec(&out).get("securityContext"), None, "{out}");
        // At the object's version, of its own resource: kept.
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        assert_eq!(
            template_spec(&out)["securityContext"],
            json!({"runAsNonRoot": true})
        );
    }

    #[test]
    fn legacy_annotations_follow_the_same_rule() {
        let mut cur = deployment(json!({"containers": []}), &[]);
        cur["spec"]["template"]["metadata"] = json!({"annotations": {
            "seccomp.security.alpha.kubernetes.io/pod": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/a": "runtime/default",
            "team": "a"}});
        cur["metadata"]["managedFields"] = json!([
            {"manager": "x", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
                "f:seccomp.security.alpha.kubernetes.io/pod": {},
                "f:container.apparmor.security.beta.kubernetes.io/a": {}, "f:team": {}}}}}}},
            {"manager": "y", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
                "f:container.apparmor.security.beta.kubernetes.io/a": {}}}}}}}]);
        let config = json!({"spec": {"template": {"metadata": {"annotations": {"team": "a"}}}}});
        let out = without_removed(&cur, &config, PodBearing::Deployment, "x");
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"],
            json!({"container.apparmor.security.beta.kubernetes.io/a": "runtime/default", "team": "a"})
        );
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
