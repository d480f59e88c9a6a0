//! A server-side apply by a manager that applied this object before: the API server removes
//! fields that manager applied before and now leaves out (structured-merge-diff's `prune`).
//! For such a re-apply the judge also judges the *worst case* of what may be stored: the
//! current object with every value that can satisfy a Pod Security check (a *relaxing* value)
//! removed wherever the re-apply may remove it, every other value kept, then the configuration
//! merged on top. Without it, a manager could drop the pod-level `securityContext` other
//! managers' containers rely on (`runAsNonRoot`, `seccompProfile`), or the `hostUsers: false`
//! that exempts a container running as root, and the stored template would violate a level no
//! judged object did.
//!
//! Why only relaxing values, and all of them: Pod Security is not monotone in removals —
//! removing `hostUsers: false` makes a `runAsUser: 0` a violation, removing `runAsUser: 0`
//! unmakes one. Judging "relaxing values removed wherever they may go, violating values all
//! kept" is worse than anything the API server can store, whatever it really removes, so a
//! re-apply that passes here passes there. Relaxing values ([`RELAXING`]): pod `hostUsers:
//! false`, `os.name` (a Windows pod skips three checks), `runAsNonRoot: true` and a
//! `RuntimeDefault` / `Localhost` `seccompProfile.type` at pod or container level, a
//! container's `allowPrivilegeEscalation: false` and a `capabilities.drop` with `ALL`. The
//! legacy seccomp / AppArmor annotations only ever make violations here (`pss/checks.rs`), so
//! they are kept.
//!
//! Where the re-apply may remove a value, from `managedFields` (the manager's last applied set,
//! `fieldsV1`), reading structured-merge-diff's `merge/update.go` in the versions Kubernetes
//! vendors and in an early snapshot (read, not run against a real API server) and taking the
//! union of what any of them removes:
//! * the manager's set has the value, and no other `Apply` entry has it as a member (the early
//!   snapshot keeps a field for other appliers only; released versions for every other
//!   manager, updaters included: counting appliers alone only removes more);
//! * or an ancestor of it goes whole: the manager's set has a node there, the configuration has
//!   none, and either the manager's set marks it a member (`.`, a leaf) and no other applier's
//!   does, or no other entry has any node there (newer releases make every struct on the path
//!   to a manager's fields a member of its set, and remove one that nobody else reaches — its
//!   unowned children with it).
//!
//! Owners are read only from entries of the object's own resource (no subresource) at the
//! object's group and version (`/v1` read as `v1`, as the API server parses it): others can
//! only keep less. A container certain to go whole (the configuration no longer names it, the
//! manager's set marks it, and no other entry of any kind marks it) stays whole here, as
//! dropping a container never unmakes a violation elsewhere; one another entry may keep is
//! stripped like the others. A `seccompProfile` or `os` loses the whole struct with its
//! `type` / `name` (the API server stores no such struct without it). When the manager's
//! set cannot be read (no `fieldsV1`, another `fieldsType`, another version), every relaxing
//! value the configuration does not set is removed, from every container. A manager with no
//! `Apply` entry of its own for the object removes nothing.

use serde_json::{Map, Value};

use crate::sanitize::pss::PodBearing;

/// Whether `manager` has applied this object before (an `Apply` entry in its
/// `managedFields`): only then can an apply remove fields.
pub(super) fn reapplies(current: &Value, manager: &str) -> bool {
    entries(current).any(|e| applied_by(e, manager))
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

/// Whether `entry` is an `Apply` of `manager` (of any subresource).
fn applied_by(entry: &Value, manager: &str) -> bool {
    is_apply(entry) && entry.get("manager").and_then(Value::as_str) == Some(manager)
}

/// Whether `entry` records a write to the object itself, not a subresource.
fn own_resource(entry: &Value) -> bool {
    entry
        .get("subresource")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

/// An object's or an entry's group/version as the API server parses it: `v1` and `/v1` are
/// the same.
fn version_of(v: &Value) -> Option<(&str, &str)> {
    let v = v.get("apiVersion")?.as_str()?;
    Some(v.split_once('/').unwrap_or(("", v)))
}

/// A relaxing value: where it sits in a pod spec or a container (relative path), and which
/// values of it satisfy a check.
struct Relaxing {
    path: &'static [&'static str],
    relaxes: fn(&Value) -> bool,
    /// Remove the struct that holds the value, not the value alone: a `seccompProfile` or an
    /// `os` without its `type` / `name` is one the API server never stores (an emptied map
    /// goes, and validation refuses a profile without a type), and Pod Security reads such a
    /// struct as set.
    whole_struct: bool,
}

fn is_true(v: &Value) -> bool {
    v == &Value::Bool(true)
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn any(_: &Value) -> bool {
    true
}

fn allowed_seccomp(v: &Value) -> bool {
    matches!(v.as_str(), Some("RuntimeDefault" | "Localhost"))
}

fn drops_all(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|caps| caps.iter().any(|c| c.as_str() == Some("ALL")))
}

const fn relaxing(
    path: &'static [&'static str],
    relaxes: fn(&Value) -> bool,
    whole_struct: bool,
) -> Relaxing {
    Relaxing {
        path,
        relaxes,
        whole_struct,
    }
}

/// The relaxing values of a pod spec and of a container (see the module doc).
const RELAXING: [&[Relaxing]; 2] = [
    &[
        relaxing(&["hostUsers"], is_false, false),
        relaxing(&["os", "name"], any, true),
        relaxing(&["securityContext", "runAsNonRoot"], is_true, false),
        relaxing(
            &["securityContext", "seccompProfile", "type"],
            allowed_seccomp,
            true,
        ),
    ],
    &[
        relaxing(&["securityContext", "runAsNonRoot"], is_true, false),
        relaxing(
            &["securityContext", "seccompProfile", "type"],
            allowed_seccomp,
            true,
        ),
        relaxing(
            &["securityContext", "allowPrivilegeEscalation"],
            is_false,
            false,
        ),
        relaxing(
            &["securityContext", "capabilities", "drop"],
            drops_all,
            false,
        ),
    ],
];

/// `current` as the worst case of what a re-apply of `config` by `manager` may store, before
/// the configuration is merged on top (see the module doc).
pub(super) fn without_removed(
    current: &Value,
    config: &Value,
    kind: PodBearing,
    manager: &str,
) -> Value {
    let removals = Removals::of(current, manager);
    let mut out = current.clone();
    let base: Vec<Seg> = kind
        .template_path()
        .iter()
        .chain(std::iter::once(&"spec"))
        .map(|s| Seg::Field((*s).to_owned()))
        .collect();
    let Some(spec) = get_mut(&mut out, kind.template_path())
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    else {
        return out;
    };
    removals.strip(spec, &base, RELAXING[0], config);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for item in items.iter_mut() {
            let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let Some(container) = item.as_object_mut() else {
                continue;
            };
            let mut path = base.clone();
            path.extend([Seg::Field(list.to_owned()), Seg::Named(name)]);
            // A container certain to go whole stays whole here: judging it is never laxer.
            // One that only may go is stripped: were it kept, what the manager applied in it
            // would go.
            if !certainly_goes(current, config, manager, &path) {
                removals.strip(container, &path, RELAXING[1], config);
            }
        }
    }
    out
}

/// Whether the container at `path` certainly goes whole: the configuration does not name it,
/// the manager's `Apply` entry marks it a member (`.`), and no other entry — of any operation
/// or subresource — marks it (structured-merge-diff keeps an item any manager's set marks as a
/// member; one that owns only a field inside it does not keep it). An entry of another
/// version, or whose set cannot be read, might: not certain then.
fn certainly_goes(current: &Value, config: &Value, manager: &str, path: &[Seg]) -> bool {
    if value_at(config, path).is_some() {
        return false;
    }
    let version = version_of(current);
    let mut marked = false;
    for e in entries(current) {
        // Another version names the item its own way: nothing is certain then.
        if version_of(e) != version {
            return false;
        }
        let own_apply = applied_by(e, manager) && own_resource(e);
        let set = e.get("fieldsV1").and_then(Value::as_object);
        match (own_apply, set) {
            (true, Some(set)) => marked |= node(set, path).is_some_and(|n| n.contains_key(".")),
            // Only a member keeps an item (a `.` or a leaf); a co-owner of a field inside it
            // does not.
            (false, Some(set)) if !node(set, path).is_some_and(is_member) => {}
            (true, None) | (false, _) => return false,
        }
    }
    marked
}

/// One step of a path in the object, as `fieldsV1` names it.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    /// A struct field or a map key: `f:<name>`.
    Field(String),
    /// An item of a list keyed by `name` (the containers): `k:{"name":…}`.
    Named(String),
}

/// What a manager's re-apply may remove (see the module doc).
enum Removals<'a> {
    /// It never applied the object: nothing.
    Nothing,
    /// Its applied set cannot be read: anything the configuration leaves out.
    Anything,
    /// Read from these sets.
    Sets(Owners<'a>),
}

/// The `fieldsV1` sets the removals are read from.
struct Owners<'a> {
    /// The manager's last applied set.
    mine: Vec<&'a Map<String, Value>>,
    /// Other `Apply` entries' sets.
    appliers: Vec<&'a Map<String, Value>>,
    /// Every other entry's set (appliers included).
    others: Vec<&'a Map<String, Value>>,
}

impl<'a> Removals<'a> {
    fn of(current: &'a Value, manager: &str) -> Removals<'a> {
        let mine = |e: &Value| applied_by(e, manager);
        if !entries(current).any(|e| own_resource(e) && mine(e)) {
            return Removals::Nothing;
        }
        let Some(version) = version_of(current) else {
            return Removals::Anything;
        };
        let set = |e: &'a Value| {
            let readable = e.get("fieldsType").and_then(Value::as_str) == Some("FieldsV1")
                && version_of(e) == Some(version);
            readable
                .then(|| e.get("fieldsV1").and_then(Value::as_object))
                .flatten()
        };
        let mut owners = Owners {
            mine: Vec::new(),
            appliers: Vec::new(),
            others: Vec::new(),
        };
        for e in entries(current) {
            if !own_resource(e) {
                continue;
            }
            match (mine(e), set(e)) {
                (true, Some(s)) => owners.mine.push(s),
                (true, None) => return Removals::Anything,
                (false, Some(s)) => {
                    owners.others.push(s);
                    if is_apply(e) {
                        owners.appliers.push(s);
                    }
                }
                (false, None) => {}
            }
        }
        Removals::Sets(owners)
    }

    /// Remove from `obj` (at `base`) each relaxing value the re-apply may remove.
    fn strip(
        &self,
        obj: &mut Map<String, Value>,
        base: &[Seg],
        relaxing: &[Relaxing],
        config: &Value,
    ) {
        for r in relaxing {
            let Some((leaf, parents)) = r.path.split_last() else {
                continue;
            };
            if !object_at(obj, parents)
                .and_then(|parent| parent.get(*leaf))
                .is_some_and(r.relaxes)
            {
                continue;
            }
            let mut path = base.to_vec();
            path.extend(r.path.iter().map(|s| Seg::Field((*s).to_owned())));
            if value_at(config, &path).is_some() || !self.may_remove(config, &path) {
                continue;
            }
            // The value, or the struct that holds it.
            let (key, holder) = match (r.whole_struct, parents.split_last()) {
                (true, Some((holder, outer))) => (*holder, outer),
                _ => (*leaf, parents),
            };
            if let Some(holder) = object_at(obj, holder) {
                holder.remove(key);
            }
        }
    }

    /// Whether the re-apply may remove the value at `path`, which the configuration does not
    /// set.
    fn may_remove(&self, config: &Value, path: &[Seg]) -> bool {
        match self {
            Removals::Nothing => false,
            Removals::Anything => true,
            Removals::Sets(o) => {
                (o.mine_node(path) && !o.applier_member(path))
                    || (1..path.len()).any(|n| o.goes_whole(config, &path[..n]))
            }
        }
    }
}

impl Owners<'_> {
    fn goes_whole(&self, config: &Value, path: &[Seg]) -> bool {
        value_at(config, path).is_none()
            && self.mine_node(path)
            && ((self.mine_member(path) && !self.applier_member(path)) || !self.other_node(path))
    }

    fn mine_node(&self, path: &[Seg]) -> bool {
        self.mine.iter().any(|t| node(t, path).is_some())
    }

    fn mine_member(&self, path: &[Seg]) -> bool {
        self.mine
            .iter()
            .any(|t| node(t, path).is_some_and(is_member))
    }

    fn applier_member(&self, path: &[Seg]) -> bool {
        self.appliers
            .iter()
            .any(|t| node(t, path).is_some_and(is_member))
    }

    fn other_node(&self, path: &[Seg]) -> bool {
        self.others.iter().any(|t| node(t, path).is_some())
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

/// The object at `path` (plain field names) below `obj`.
fn object_at<'o>(
    obj: &'o mut Map<String, Value>,
    path: &[&str],
) -> Option<&'o mut Map<String, Value>> {
    path.iter()
        .try_fold(obj, |o, k| o.get_mut(*k).and_then(Value::as_object_mut))
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// Whether a re-apply of `config` by `manager` may remove the field at `path` (plain field
/// names), which `config` does not set — for the token Secret's label (`token_secret.rs`).
pub(crate) fn may_remove_field(
    current: &Value,
    config: &Value,
    manager: &str,
    path: &[&str],
) -> bool {
    let path: Vec<Seg> = path.iter().map(|s| Seg::Field((*s).to_owned())).collect();
    value_at(config, &path).is_none() && Removals::of(current, manager).may_remove(config, &path)
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

    /// A Deployment at `apps/v1` with this pod spec and these `managedFields` entries
    /// (manager, operation, `fieldsV1` below `spec.template.spec`).
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

    fn spec_of(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]
    }

    fn reduced(cur: &Value, config_spec: Value, manager: &str) -> Value {
        let config = json!({"spec": {"template": {"spec": config_spec}}});
        without_removed(cur, &config, PodBearing::Deployment, manager)
    }

    #[test]
    fn a_relaxing_value_goes_when_the_manager_applied_it_and_no_other_applier_keeps_it() {
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
                // Another applier keeps what it owns; an updater is not counted (an early
                // structured-merge-diff counted appliers only: removing more is the safe side).
                (
                    "y",
                    "Apply",
                    json!({"f:securityContext": {"f:seccompProfile": {"f:type": {}}}}),
                ),
                (
                    "u",
                    "Update",
                    json!({"f:securityContext": {"f:runAsNonRoot": {}, "f:fsGroup": {}}}),
                ),
            ],
        );
        // runAsUser and fsGroup satisfy no check: kept whoever owns them.
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(
            spec_of(&out)["securityContext"],
            json!({"runAsUser": 1000, "fsGroup": 1, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        // What the configuration sets stays (the merge sets it).
        let out = reduced(
            &cur,
            json!({"securityContext": {"runAsNonRoot": true}}),
            "x",
        );
        assert_eq!(
            spec_of(&out)["securityContext"]["runAsNonRoot"],
            json!(true)
        );
        // A manager that applied none of them removes none.
        let out = reduced(&cur, json!({"containers": []}), "y");
        assert_eq!(
            spec_of(&out)["securityContext"],
            spec_of(&cur)["securityContext"]
        );
    }

    /// Newer structured-merge-diff makes every struct on the path to a manager's fields a member
    /// of its set: a struct no other entry reaches goes whole, unowned values with it.
    #[test]
    fn a_struct_no_one_else_reaches_goes_whole_with_its_unowned_values() {
        let spec = json!({"securityContext": {"fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}}, "containers": []});
        let x = (
            "x",
            "Apply",
            json!({"f:securityContext": {"f:fsGroup": {}}}),
        );
        let cur = deployment(spec.clone(), std::slice::from_ref(&x));
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(spec_of(&out)["securityContext"], json!({"fsGroup": 1000}));
        // Another entry reaching it, even an updater's, keeps the struct.
        let u = (
            "u",
            "Update",
            json!({"f:securityContext": {"f:supplementalGroups": {}}}),
        );
        let cur = deployment(spec, &[x, u]);
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(
            spec_of(&out)["securityContext"],
            spec_of(&cur)["securityContext"]
        );
    }

    /// Removing more is not always stricter: `hostUsers: false` exempts `runAsUser: 0`. The
    /// worst case removes the exemption and keeps the violation, whoever owns them.
    #[test]
    fn values_that_make_violations_are_never_removed() {
        let cur = deployment(
            json!({"hostUsers": false, "containers": [
                {"name": "c", "image": "i", "securityContext": {"runAsUser": 0, "runAsNonRoot": false}}]}),
            &[
                (
                    "x",
                    "Apply",
                    json!({"f:hostUsers": {}, "f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:name": {}, "f:securityContext": {"f:runAsUser": {}, "f:runAsNonRoot": {}}}}}),
                ),
                (
                    "y",
                    "Update",
                    json!({"f:containers": {"k:{\"name\":\"c\"}": {
                    "f:securityContext": {"f:runAsUser": {}}}}}),
                ),
            ],
        );
        let out = reduced(
            &cur,
            json!({"containers": [{"name": "c", "image": "i"}]}),
            "x",
        );
        assert_eq!(spec_of(&out).get("hostUsers"), None, "{out}");
        assert_eq!(
            spec_of(&out)["containers"][0]["securityContext"],
            json!({"runAsUser": 0, "runAsNonRoot": false})
        );
    }

    #[test]
    fn containers_lose_the_relaxing_values_only_the_manager_applied() {
        let sc = json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}});
        let owned = json!({".": {}, "f:name": {}, "f:securityContext": {"f:runAsNonRoot": {},
            "f:allowPrivilegeEscalation": {}, "f:capabilities": {"f:drop": {}},
            "f:seccompProfile": {"f:type": {}}}});
        let cur = deployment(
            json!({"containers": (["a", "b", "c", "d"]
                .map(|n| json!({"name": n, "image": "i", "securityContext": sc})))}),
            &[
                (
                    "x",
                    "Apply",
                    json!({"f:containers": {
                    "k:{\"name\":\"a\"}": owned, "k:{\"name\":\"b\"}": owned, "k:{\"name\":\"c\"}": owned}}),
                ),
                (
                    "y",
                    "Apply",
                    json!({"f:containers": {
                    "k:{\"name\":\"b\"}": {".": {}, "f:name": {}, "f:image": {}},
                    "k:{\"name\":\"d\"}": owned}}),
                ),
            ],
        );
        // x now names a alone, without its securityContext.
        let out = reduced(
            &cur,
            json!({"containers": [{"name": "a", "image": "i"}]}),
            "x",
        );
        let containers = &spec_of(&out)["containers"];
        // a: named, x's values go (the structs that held them stay, empty); b: kept by y's
        // apply, x's values in it go; c: goes whole in the API server, stays whole here; d:
        // never x's.
        let stripped = json!({"capabilities": {}});
        assert_eq!(containers[0]["securityContext"], stripped);
        assert_eq!(containers[1]["securityContext"], stripped);
        assert_eq!(containers[2]["securityContext"], sc);
        assert_eq!(containers[3]["securityContext"], sc);
    }

    /// A container another entry marks (`.`) is kept by the API server, whatever operation
    /// made the entry: one the configuration leaves out is stripped of what the manager
    /// applied, not kept whole. Here Helm (an update) added it, and the manager took its
    /// `drop` by forcing a conflict.
    #[test]
    fn a_container_another_entry_keeps_is_stripped_not_kept_whole() {
        let cur = deployment(
            json!({"containers": [{"name": "side", "image": "i",
                "securityContext": {"capabilities": {"drop": ["ALL", "NET_RAW"]}}}]}),
            &[
                (
                    "helm",
                    "Update",
                    json!({"f:containers": {"k:{\"name\":\"side\"}": {
                    ".": {}, "f:name": {}, "f:image": {}}}}),
                ),
                (
                    "x",
                    "Apply",
                    json!({"f:containers": {"k:{\"name\":\"side\"}": {
                    ".": {}, "f:name": {}, "f:securityContext": {"f:capabilities": {"f:drop": {}}}}}}),
                ),
            ],
        );
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(
            spec_of(&out)["containers"][0]["securityContext"],
            json!({"capabilities": {}})
        );
        // Another version's entry: not certain either.
        let mut other = cur.clone();
        other["metadata"]["managedFields"][0]["fieldsV1"] = json!({});
        other["metadata"]["managedFields"][0]["apiVersion"] = json!("apps/v1beta2");
        let out = reduced(&other, json!({"containers": []}), "x");
        assert_eq!(
            spec_of(&out)["containers"][0]["securityContext"],
            json!({"capabilities": {}})
        );
        // An updater that set only a field inside it (`kubectl set image`) does not keep it.
        let mut nested = cur.clone();
        nested["metadata"]["managedFields"][0]["fieldsV1"] = json!({"f:spec": {"f:template":
            {"f:spec": {"f:containers": {"k:{\"name\":\"side\"}": {"f:image": {}}}}}}});
        assert_eq!(reduced(&nested, json!({"containers": []}), "x"), nested);
        // No other entry reaches it: it goes whole in the API server, stays whole here.
        other["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        assert_eq!(reduced(&other, json!({"containers": []}), "x"), other);
    }

    #[test]
    fn an_unreadable_set_removes_every_relaxing_value_the_configuration_leaves_out() {
        let spec = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}, "hostUsers": false,
            "os": {"name": "windows"},
            "containers": [
                {"name": "a", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "privileged": true}},
                {"name": "b", "image": "i", "securityContext": {"runAsNonRoot": true}}]});
        let config = json!({"containers": [{"name": "a", "image": "i"}]});
        let x_owns_nothing = deployment(spec.clone(), &[("x", "Apply", json!({}))]);
        for (key, value) in [
            ("fieldsV1", Value::Null),
            ("fieldsType", json!("FieldsV2")),
            ("apiVersion", json!("apps/v1beta2")),
        ] {
            let mut cur = x_owns_nothing.clone();
            cur["metadata"]["managedFields"][0][key] = value;
            let out = reduced(&cur, config.clone(), "x");
            assert_eq!(
                spec_of(&out),
                &json!({"securityContext": {"runAsUser": 0},
                    "containers": [
                        {"name": "a", "image": "i", "securityContext": {"privileged": true}},
                        {"name": "b", "image": "i", "securityContext": {}}]}),
                "{key}"
            );
        }
        // Readable, and x applied none of them: nothing goes.
        assert_eq!(
            reduced(&x_owns_nothing, config.clone(), "x"),
            x_owns_nothing
        );
        // A manager with no Apply entry of the object's own (one for a subresource) removes
        // nothing: the API server prunes by that entry only.
        let mut status_only = x_owns_nothing.clone();
        status_only["metadata"]["managedFields"][0]["subresource"] = json!("status");
        assert_eq!(reduced(&status_only, config, "x"), status_only);
    }

    /// `/v1` is `v1` to the API server: a Pod's entry spelled so is read, not a worst case.
    #[test]
    fn a_version_is_read_as_the_api_server_parses_it() {
        let pod = |version: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "managedFields": [
                {"manager": "x", "operation": "Apply", "apiVersion": version, "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:containers": {}}}}]},
                "spec": {"securityContext": {"runAsNonRoot": true}, "containers": []}})
        };
        let config = json!({"spec": {"containers": []}});
        for version in ["v1", "/v1"] {
            let cur = pod(version);
            assert_eq!(
                without_removed(&cur, &config, PodBearing::Pod, "x"),
                cur,
                "{version}"
            );
        }
        let cur = pod("v2");
        let out = without_removed(&cur, &config, PodBearing::Pod, "x");
        assert_eq!(out["spec"]["securityContext"], json!({}));
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
        let mut other = cur.clone();
        other["metadata"]["managedFields"][1]["apiVersion"] = json!("apps/v1beta2");
        other["metadata"]["managedFields"][2]["subresource"] = json!("status");
        let out = reduced(&other, json!({"containers": []}), "x");
        assert_eq!(spec_of(&out)["securityContext"], json!({}), "{out}");
        // At the object's version, of its own resource: kept.
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(
            spec_of(&out)["securityContext"],
            json!({"runAsNonRoot": true})
        );
    }

    /// The legacy annotations only ever make violations here (`pss/checks.rs`): kept.
    #[test]
    fn legacy_annotations_stay() {
        let mut cur = deployment(json!({"containers": []}), &[]);
        let annotations = json!({"seccomp.security.alpha.kubernetes.io/pod": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/a": "unconfined"});
        cur["spec"]["template"]["metadata"] = json!({"annotations": annotations});
        cur["metadata"]["managedFields"] = json!([
            {"manager": "x", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
                "f:seccomp.security.alpha.kubernetes.io/pod": {},
                "f:container.apparmor.security.beta.kubernetes.io/a": {}}}}}}}]);
        let out = reduced(&cur, json!({"containers": []}), "x");
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"],
            annotations
        );
    }
}
