//! Strategic merge (and the merge half of server-side apply) as the proxy needs it to judge a
//! patch: the object the API server will store, computed from the current object and the patch.
//!
//! Semantics, following `apimachinery/pkg/util/strategicpatch` for the built-in kinds:
//! * maps merge recursively; `null` deletes a key;
//! * lists of maps merge by key where the Go type declares `patchStrategy:"merge"` (see
//!   [`merge_key`]); every other list is replaced whole, as SMP does for lists without a
//!   strategy (so `capabilities.add/drop`, `sysctls`, `tolerations` are replaced);
//! * `finalizers` is a primitive list with merge strategy (union);
//! * directives are *applied*, never ignored, so none can hide a field from the judge:
//!   `$patch: replace|delete|merge` on a map, `{"$patch": "replace"}` inside a keyed list,
//!   `$patch: delete` on a keyed-list element, `$retainKeys`, `$deleteFromPrimitiveList/<f>`.
//!   `$setElementOrder/<f>` only orders elements and is ignored;
//! * any other `$` key, or a directive where none is allowed, is an error (400): the proxy will
//!   not forward what it cannot model.
//!
//! For apply patches ([`Mode::Apply`]) no directive is allowed at all.

use serde_json::{Map, Value};

/// Which patch language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Strategic,
    Apply,
}

/// The merge key of a keyed list, by field name (`patchMergeKey` in `k8s.io/api/core/v1`).
pub fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Merge `patch` into `target`.
pub fn merge(target: &mut Value, patch: &Value, mode: Mode) -> Result<(), String> {
    merge_at(target, patch, mode, "")
}

fn child_path(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_owned()
    } else {
        format!("{at}.{k}")
    }
}

fn merge_at(target: &mut Value, patch: &Value, mode: Mode, at: &str) -> Result<(), String> {
    let Some(pmap) = patch.as_object() else {
        no_directives(patch, mode, at)?;
        *target = patch.clone();
        return Ok(());
    };
    if let Some(p) = pmap.get("$patch") {
        if map_patch_directive(target, pmap, p, mode, at)? {
            return Ok(());
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tmap) = target.as_object_mut() else {
        return Ok(());
    };
    let mut retain: Option<Vec<String>> = None;
    for (k, v) in pmap {
        if k == "$patch" {
            continue;
        }
        if k.starts_with('$') {
            // `$deleteFromPrimitiveList/f` beside an `f` in the same patch map: the API server's
            // order between the two is not the map's (its `$setElementOrder` pass goes first,
            // else Go's map order decides), and when they share a value it decides what is
            // stored (`drop: [ALL]` kept or emptied) — not judgeable, refused. kubectl never
            // sends a value in both.
            if let Some(field) = k.strip_prefix(DELETE_FROM) {
                if let (Some(Value::Array(gone)), Some(Value::Array(set))) =
                    (Some(v), pmap.get(field))
                {
                    let set = scalar_set(set);
                    if gone.iter().any(|g| set.contains(&scalar_key(g))) {
                        return Err(format!(
                            "{}: a value both in {k:?} and in {field:?} of the same patch",
                            child_path(at, k)
                        ));
                    }
                }
            }
            if let Some(keys) = key_directive(tmap, k, v, mode, at)? {
                retain = Some(keys);
            }
            continue;
        }
        merge_field(tmap, k, v, mode, &child_path(at, k))?;
    }
    if let Some(keep) = retain {
        let keep: std::collections::HashSet<&str> = keep.iter().map(String::as_str).collect();
        tmap.retain(|k, _| keep.contains(k.as_str()));
    }
    Ok(())
}

/// Directives are allowed in strategic patches only.
fn directive_allowed(mode: Mode, at: &str, k: &str) -> Result<(), String> {
    if mode == Mode::Apply {
        Err(format!(
            "{}: {k:?} is not allowed in an apply patch",
            child_path(at, "")
        ))
    } else {
        Ok(())
    }
}

/// A map's own `$patch` (`p`): `replace` and `delete` decide `target` here (true); `merge`
/// leaves the ordinary merge to the caller (false).
fn map_patch_directive(
    target: &mut Value,
    pmap: &Map<String, Value>,
    p: &Value,
    mode: Mode,
    at: &str,
) -> Result<bool, String> {
    directive_allowed(mode, at, "$patch")?;
    match p.as_str() {
        Some("replace") => {
            // The API server takes the rest of the map as sent (`handleDirectiveInMergeMap`):
            // a directive inside it is data there, never applied — so it cannot be judged
            // as applied, and is refused.
            let mut rest = pmap.clone();
            rest.remove("$patch");
            let rest = Value::Object(rest);
            refuse_keys(
                &rest,
                at,
                is_directive,
                "a map replaced with \"$patch\": \"replace\"",
            )?;
            *target = rest;
            Ok(true)
        }
        Some("delete") => {
            *target = Value::Null;
            Ok(true)
        }
        Some("merge") => Ok(false),
        _ => Err(format!("{at}: unknown $patch value {p}")),
    }
}

/// A `$` key among a map's fields: `$deleteFromPrimitiveList/<f>` is applied to `tmap`,
/// `$setElementOrder/<f>` ignored, and `$retainKeys` returned for the caller to apply after
/// the merge; any other is an error.
fn key_directive(
    tmap: &mut Map<String, Value>,
    k: &str,
    v: &Value,
    mode: Mode,
    at: &str,
) -> Result<Option<Vec<String>>, String> {
    if k == "$retainKeys" {
        directive_allowed(mode, at, k)?;
        let keys = v
            .as_array()
            .ok_or_else(|| format!("{at}: $retainKeys must be a list"))?;
        return Ok(Some(
            keys.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{at}: $retainKeys entries must be strings"))
                })
                .collect::<Result<_, _>>()?,
        ));
    }
    if k.starts_with(SET_ORDER) {
        directive_allowed(mode, at, k)?;
        return Ok(None);
    }
    if let Some(field) = k.strip_prefix(DELETE_FROM) {
        directive_allowed(mode, at, k)?;
        let gone = v
            .as_array()
            .ok_or_else(|| format!("{at}: {k} must be a list"))?;
        // Of a list of objects the API server does not delete the items given but merges them
        // in by key (`mergeSlice` ignores the delete for maps): only scalar lists are modelled.
        let scalar = |x: &Value| !x.is_object() && !x.is_array();
        let current_scalar = match tmap.get(field) {
            Some(Value::Array(items)) => items.iter().all(scalar),
            _ => true,
        };
        if merge_key(field).is_some() || !gone.iter().all(scalar) || !current_scalar {
            return Err(format!(
                "{}: {k:?} applies to a list of plain values only",
                child_path(at, k)
            ));
        }
        // Of a plain list without a merge strategy (`capabilities.add`, `args`), API servers
        // before 1.25 store the directive's values as the list (they replace it) where later
        // ones delete them: no client writes it there (kubectl's patches delete only from
        // `finalizers`), so it is refused rather than judged one way and stored the other.
        if field != "finalizers" {
            return Err(format!(
                "{}: {k:?} is only accepted for finalizers (API servers before 1.25 store it as the list's new value elsewhere)",
                child_path(at, k)
            ));
        }
        if let Some(Value::Array(items)) = tmap.get_mut(field) {
            let gone = scalar_set(gone);
            items.retain(|x| !gone.contains(&scalar_key(x)));
        }
        return Ok(None);
    }
    Err(format!("{}: unknown directive {k:?}", child_path(at, k)))
}

/// One ordinary field of a map patch: `null` deletes, a map merges, a list merges or replaces
/// (see [`merge_list_field`]), anything else replaces.
fn merge_field(
    tmap: &mut Map<String, Value>,
    k: &str,
    v: &Value,
    mode: Mode,
    here: &str,
) -> Result<(), String> {
    match v {
        Value::Null => {
            tmap.remove(k);
        }
        Value::Object(_) => {
            if !tmap.get(k).is_some_and(Value::is_object) {
                // A new key (or one that is not a map yet): the API server takes the value
                // through `removeDirectives` (apimachinery ≥ 1.28), which drops a map holding
                // `$patch` whole and a `$deleteFromPrimitiveList` / `$retainKeys` unapplied —
                // `{"os": {"$patch": "merge", "name": "windows"}}` judged as a Windows pod
                // would be stored without `os`. Applied here they cannot be judged as stored,
                // so they are refused; `$setElementOrder` changes nothing either way.
                refuse_keys(
                    v,
                    here,
                    is_applied_directive,
                    "a field the current object does not have",
                )?;
            }
            let slot = tmap.entry(k.to_owned()).or_insert(Value::Null);
            merge_at(slot, v, mode, here)?;
            if slot.is_null() {
                tmap.remove(k);
            }
        }
        Value::Array(items) => merge_list_field(tmap, k, v, items, mode, here)?,
        _ => {
            tmap.insert(k.to_owned(), v.clone());
        }
    }
    Ok(())
}

/// A list field: `finalizers` is a union, a keyed list merges by its key, any other list is
/// replaced whole.
fn merge_list_field(
    tmap: &mut Map<String, Value>,
    k: &str,
    v: &Value,
    items: &[Value],
    mode: Mode,
    here: &str,
) -> Result<(), String> {
    if k == "finalizers" {
        no_directives(v, mode, here)?;
        let mut list = match tmap.remove(k) {
            Some(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        // A set of what the list holds: an attacker-sized list stays linear.
        let mut held: std::collections::HashSet<String> =
            list.iter().map(Value::to_string).collect();
        for item in items {
            if held.insert(item.to_string()) {
                list.push(item.clone());
            }
        }
        tmap.insert(k.to_owned(), Value::Array(list));
    } else if let Some(key) = merge_key(k).map(|key| {
        // A Service's `ports` merge by `port`, a container's by `containerPort`.
        if k == "ports" && items.iter().all(|i| i.get("containerPort").is_none()) {
            "port"
        } else {
            key
        }
    }) {
        // A list the object lacks is taken as sent (`mergeMap` stores the patch's value for a
        // new key): its elements are not merged with one another by key.
        let (mut list, as_sent) = match tmap.remove(k) {
            Some(Value::Array(l)) => (l, false),
            _ => (Vec::new(), true),
        };
        merge_list(&mut list, items, key, mode, as_sent, here)?;
        tmap.insert(k.to_owned(), Value::Array(list));
    } else {
        no_directives(v, mode, here)?;
        tmap.insert(k.to_owned(), v.clone());
    }
    Ok(())
}

fn merge_list(
    existing: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    mode: Mode,
    as_sent: bool,
    at: &str,
) -> Result<(), String> {
    // In apimachinery's order (`mergeSliceWithSpecialElements`, then
    // `mergeSliceWithoutSpecialElements`): first every `$patch` element, wherever it stands in
    // the list — a `delete` removes the original's entries with its key, a `replace` makes the
    // list the patch's other elements — and only then the other elements, merged by key or
    // appended. Applied in list order instead, `[{name: x, privileged}, {name: x, $patch:
    // delete}]` would judge as no change while the API server deletes first and appends `x`.
    let mut replace = false;
    // The keys `$patch: delete` elements name, removed in one pass after the loop (one pass
    // per element would be quadratic in an attacker-sized list).
    let mut deleted = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let Some(directive) = item.as_object().and_then(|o| o.get("$patch")) else {
            continue;
        };
        let here = format!("{at}[{i}]");
        if mode == Mode::Apply {
            return Err(format!(
                "{here}: \"$patch\" is not allowed in an apply patch"
            ));
        }
        if as_sent {
            // A list the object lacks is stored as the patch sent it by API servers before
            // 1.28 — this element too, as a list entry with `$patch` dropped as an unknown
            // field — and with its directives applied by later ones. A delete naming only its
            // key deletes nothing here (there is nothing yet) and would be stored as an entry
            // of a key alone, which carries nothing a policy reads: passed, as kubectl's
            // three-way patches send it (`apply` of a manifest that removed an entry the live
            // object no longer has). Any other such element is refused rather than judged one
            // way and stored the other.
            let key_only = directive.as_str() == Some("delete")
                && item
                    .as_object()
                    .is_some_and(|o| o.len() == 2 && o.contains_key(key));
            if key_only {
                continue;
            }
            return Err(format!(
                "{here}: a \"$patch\" element in a list the object does not have yet (API servers before 1.28 store it as an element)"
            ));
        }
        match directive.as_str() {
            Some("delete") => {
                let Some(id) = item.get(key) else {
                    return Err(format!(
                        "{here}: a $patch: delete element needs its {key:?}"
                    ));
                };
                deleted.insert(scalar_key(id));
            }
            Some("replace") => replace = true,
            // apimachinery: "merging lists cannot yet be specified in the patch".
            _ => return Err(format!("{here}: unsupported $patch value {directive}")),
        }
    }
    if replace {
        existing.clear();
    } else if !deleted.is_empty() {
        existing.retain(|e| e.get(key).is_none_or(|k| !deleted.contains(&scalar_key(k))));
    }
    // A list taken as sent — one the object lacks, or replaced (`$patch: replace`:
    // `mergeSliceWithSpecialElements` returns the patch's other elements as they are) — keeps
    // two elements with one key as two (ports 53/TCP and 53/UDP share `containerPort`); a
    // list merged with the current one merges such an element into the earlier one, as
    // `mergeSliceWithoutSpecialElements` looks each up in the list it is building.
    let by_key = !(as_sent || replace);
    // Where each key stands in the list: one lookup per element, not a scan of the list.
    let mut at_key: std::collections::HashMap<String, usize> = existing
        .iter()
        .enumerate()
        .filter_map(|(p, e)| Some((e.get(key)?.to_string(), p)))
        .rev()
        .collect();
    for (i, item) in items.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Some(obj) = item.as_object() else {
            return Err(format!("{here}: expected an object with {key:?}"));
        };
        if obj.contains_key("$patch") {
            continue;
        }
        let id = obj.get(key).filter(|_| by_key);
        match id.and_then(|id| at_key.get(&id.to_string()).copied()) {
            Some(p) => merge_at(&mut existing[p], item, mode, &here)?,
            None => {
                // A new element: the API server appends it as sent, directives inside it
                // left as data (the fields they would delete or drop are stored): they
                // cannot be judged as applied.
                obj.iter().try_for_each(|(k, child)| {
                    refuse_key(k, child, &here, is_directive, "a new list element")
                })?;
                let mut fresh = Value::Object(Map::new());
                merge_at(&mut fresh, item, mode, &here)?;
                if let Some(id) = id {
                    at_key.insert(id.to_string(), existing.len());
                }
                existing.push(fresh);
            }
        }
    }
    Ok(())
}

/// A hashable stand-in for a value, equal for two values exactly when they are equal as
/// `Value`s — for scalars (what primitive lists and merge keys hold): their JSON text, with the
/// one float text pair `Value` calls equal (`-0.0`, `0.0`) made one. A container gets its text
/// (maps in key order), which tells equal ones apart only by a `-0.0` inside.
fn scalar_key(v: &Value) -> String {
    match v {
        Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => "0.0".to_owned(),
        _ => v.to_string(),
    }
}

/// The [`scalar_key`]s of `items`: membership in linear time, where `Vec::contains` per
/// element is quadratic in two lists an attacker sizes.
fn scalar_set(items: &[Value]) -> std::collections::HashSet<String> {
    items.iter().map(scalar_key).collect()
}

/// A value copied verbatim must not carry directives (the apiserver would store them as data,
/// or refuse; either way we cannot judge it).
fn no_directives(v: &Value, mode: Mode, at: &str) -> Result<(), String> {
    let place = if mode == Mode::Apply {
        "an apply patch"
    } else {
        "a list or value that replaces the current one"
    };
    refuse_keys(v, at, is_directive, place)
}

fn is_directive(k: &str) -> bool {
    k.starts_with('$')
}

/// A directive that changes the result when applied (all but `$setElementOrder`).
fn is_applied_directive(k: &str) -> bool {
    is_directive(k) && !k.starts_with(SET_ORDER)
}

/// The first key anywhere in `v` that `bad` picks is an error: "`<path>`: `<key>` is not
/// allowed in `<place>`".
fn refuse_keys(v: &Value, at: &str, bad: fn(&str) -> bool, place: &str) -> Result<(), String> {
    match v {
        Value::Object(m) => m
            .iter()
            .try_for_each(|(k, child)| refuse_key(k, child, at, bad, place)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| refuse_keys(x, &format!("{at}[{i}]"), bad, place)),
        _ => Ok(()),
    }
}

/// [`refuse_keys`] for one member `k` of the object at `at`.
fn refuse_key(
    k: &str,
    child: &Value,
    at: &str,
    bad: fn(&str) -> bool,
    place: &str,
) -> Result<(), String> {
    let here = child_path(at, k);
    if bad(k) {
        return Err(format!("{here}: {k:?} is not allowed in {place}"));
    }
    refuse_keys(child, &here, bad, place)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(mut t: Value, p: Value) -> Value {
        merge(&mut t, &p, Mode::Strategic).unwrap();
        t
    }

    /// Under a key the current object lacks, the API server drops a map holding `$patch`
    /// and leaves `$deleteFromPrimitiveList` unapplied (`removeDirectives`): applied here,
    /// `os: windows` would exempt a pod stored as Linux, and a capability deleted here would be
    /// stored. Refused; `$setElementOrder` (a no-op either way) still passes.
    #[test]
    fn directives_under_a_new_key_are_refused() {
        let cur = json!({"spec": {"containers": [{"name": "app"}]}});
        for patch in [
            json!({"spec": {"os": {"$patch": "merge", "name": "windows"}}}),
            json!({"spec": {"securityContext": {"seccompProfile": {"$patch": "replace", "type": "RuntimeDefault"}}}}),
            json!({"spec": {"containers": [{"name": "app", "securityContext": {"capabilities": {
                "add": ["SYS_ADMIN"], "$deleteFromPrimitiveList/add": ["SYS_ADMIN"]}}}]}}),
        ] {
            let mut t = cur.clone();
            let err = merge(&mut t, &patch, Mode::Strategic).unwrap_err();
            assert!(err.contains("does not have"), "{patch}: {err}");
        }
        let out = smp(
            cur,
            json!({"spec": {"affinity": {"$setElementOrder/x": [{"name": "a"}], "y": 1}}}),
        );
        assert_eq!(out["spec"]["affinity"], json!({"y": 1}));
    }

    /// Two elements with one merge key (ports 53/TCP and 53/UDP share `containerPort`) are
    /// kept as two where the API server takes the list as sent — a list the object lacks, a
    /// `$patch: replace` — and the later merged into the earlier where it merges the list with
    /// the current one: judged as stored, a host port on either is seen.
    #[test]
    fn two_elements_with_one_merge_key_are_kept_as_the_api_server_keeps_them() {
        let ports = json!([
            {"containerPort": 53, "protocol": "UDP", "hostPort": 53},
            {"containerPort": 53, "protocol": "TCP"}]);
        let cur = json!({"spec": {"containers": [{"name": "app"}]}});
        let out = smp(
            cur.clone(),
            json!({"spec": {"containers": [{"name": "app", "ports": ports.clone()}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"], ports,
            "a new list, as sent"
        );
        let with_ports =
            json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}]}]}});
        let mut replaced = ports.as_array().unwrap().clone();
        replaced.insert(0, json!({"$patch": "replace"}));
        let out = smp(
            with_ports.clone(),
            json!({"spec": {"containers": [{"name": "app", "ports": replaced}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"], ports,
            "replaced, as sent"
        );
        let out = smp(
            with_ports,
            json!({"spec": {"containers": [{"name": "app", "ports": ports}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 53, "protocol": "TCP", "hostPort": 53}]),
            "merged with the current list: the second merges into the first"
        );
    }

    /// apimachinery applies a list's `$patch` elements to the original first
    /// (`mergeSliceWithSpecialElements`), then merges or appends the others: a `delete` after
    /// an element with the same key does not undo it, and a `replace` anywhere keeps the
    /// others. Taken in list order, the privileged container below would judge as no change.
    #[test]
    fn list_directives_apply_to_the_original_before_the_other_elements() {
        let cur = json!({"spec": {"containers": [{"name": "app", "image": "x"}]}});
        let out = smp(
            cur.clone(),
            json!({"spec": {"containers": [
                {"name": "pwn", "image": "busybox", "securityContext": {"privileged": true}},
                {"name": "pwn", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "pwn");
        assert_eq!(
            out["spec"]["containers"][1]["securityContext"]["privileged"],
            true
        );
        let out = smp(
            cur.clone(),
            json!({"spec": {"containers": [
                {"name": "app", "$patch": "delete"},
                {"name": "app", "image": "y"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "image": "y"}])
        );
        let out = smp(
            cur,
            json!({"spec": {"containers": [
                {"$patch": "replace"},
                {"name": "x", "image": "z", "securityContext": {"privileged": true}},
                {"name": "x", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "x", "image": "z", "securityContext": {"privileged": true}}])
        );
    }

    /// `$deleteFromPrimitiveList/drop` and `drop` sharing a value: the API server's order
    /// decides whether `ALL` stays dropped; refused, not guessed. Disjoint values are fine.
    #[test]
    fn a_value_both_deleted_and_set_in_one_patch_is_refused() {
        let cur = json!({"securityContext": {"capabilities": {"drop": ["ALL"]}}});
        let mut t = cur.clone();
        let err = merge(
            &mut t,
            &json!({"securityContext": {"capabilities": {
                "$setElementOrder/drop": ["ALL"], "$deleteFromPrimitiveList/drop": ["ALL"], "drop": ["ALL"]}}}),
            Mode::Strategic,
        )
        .unwrap_err();
        assert!(err.contains("both in"), "{err}");
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    }

    /// `$deleteFromPrimitiveList` of a plain list without a merge strategy: API servers before
    /// 1.25 store its values as the list (`add: ["SYS_ADMIN"]` where this judged the current
    /// list minus SYS_ADMIN), later ones delete them — refused. Only `finalizers` takes it.
    #[test]
    fn delete_from_a_list_without_merge_strategy_is_refused() {
        let cur = json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL", "NET_RAW"]}}});
        for field in ["add", "drop"] {
            let mut t = cur.clone();
            let err = merge(
                &mut t,
                &json!({"securityContext": {"capabilities": {
                    format!("$deleteFromPrimitiveList/{field}"): ["SYS_ADMIN"]}}}),
                Mode::Strategic,
            )
            .unwrap_err();
            assert!(err.contains("only accepted for finalizers"), "{err}");
        }
    }

    /// A `$patch` element in a list the object does not have yet: API servers before 1.28
    /// store the list as sent, that element as an entry (a privileged init container) — refused
    /// rather than judged as dropped; a delete naming only its key passes (it deletes nothing).
    #[test]
    fn a_patch_element_in_a_list_the_object_lacks_is_refused() {
        let mut t = json!({"spec": {"containers": [{"name": "c"}]}});
        merge(
            &mut t,
            &json!({"spec": {"initContainers": [{"name": "i", "image": "x"},
                {"$patch": "delete", "name": "gone"}]}}),
            Mode::Strategic,
        )
        .unwrap();
        assert_eq!(
            t["spec"]["initContainers"],
            json!([{"name": "i", "image": "x"}])
        );
        let cur = json!({"spec": {"containers": [{"name": "c"}]}});
        for directive in ["replace", "delete"] {
            let mut t = cur.clone();
            let err = merge(
                &mut t,
                &json!({"spec": {"initContainers": [{"$patch": directive, "name": "x",
                    "image": "busybox", "securityContext": {"privileged": true}}]}}),
                Mode::Strategic,
            )
            .unwrap_err();
            assert!(err.contains("does not have yet"), "{directive}: {err}");
        }
        // In a list the object has, the directive still applies.
        let out = smp(
            cur,
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
    }

    /// Lists an attacker sizes (a 3 MiB patch holds ≈ 750 000 numbers in two lists) are
    /// compared through sets: the value-by-value comparison this replaced took one comparison
    /// per pair — 10¹⁰ for two lists of 10⁵, minutes of a worker. Deletes, retained keys and
    /// `$patch: delete` elements still act on exactly the values they name (`-0.0` is `0.0`).
    #[test]
    fn long_directive_lists_are_compared_in_linear_time() {
        let n = 100_000;
        let gone: Vec<Value> = (0..n).map(|i| json!(i * 2)).collect();
        let set: Vec<Value> = (0..n).map(|i| json!(i * 2 + 1)).collect();
        let mut kept: Vec<Value> = (0..n).map(|i| json!(format!("k{i}"))).collect();
        kept.extend([json!("x"), json!("y")]);
        kept.push(json!("finalizers"));
        let mut cur = json!({"x": (0..2 * n).collect::<Vec<_>>(),
            "finalizers": (0..2 * n).collect::<Vec<_>>(), "z": 1});
        let patch = json!({"x": set, "$deleteFromPrimitiveList/finalizers": gone,
            "$retainKeys": kept});
        merge(&mut cur, &patch, Mode::Strategic).unwrap();
        // `x` is the patch's list; `finalizers` lost its even numbers; `z`, not retained, went.
        assert_eq!(cur, json!({"x": set, "finalizers": set}));
        let mut cur = json!({"finalizers": [0.0, 1, 2, "2", -0.0]});
        merge(
            &mut cur,
            &json!({"$deleteFromPrimitiveList/finalizers": [-0.0, 2]}),
            Mode::Strategic,
        )
        .unwrap();
        assert_eq!(cur, json!({"finalizers": [1, "2"]}));
        let ids: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "$patch": "delete"}))
            .collect();
        let mut cur =
            json!({"containers": [{"name": "c7"}, {"name": "keep"}, {"image": "no-name"}]});
        merge(&mut cur, &json!({"containers": ids}), Mode::Strategic).unwrap();
        assert_eq!(
            cur,
            json!({"containers": [{"name": "keep"}, {"image": "no-name"}]})
        );
    }

    #[test]
    fn keyed_lists_merge_others_replace() {
        let cur = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "securityContext": {"capabilities": {"drop": ["ALL"]}}},
            {"name": "b", "image": "y"}]}});
        let out = smp(
            cur,
            json!({"spec": {"containers": [{"name": "a", "securityContext": {"capabilities": {"drop": []}}}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!([])
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
    }

    #[test]
    fn directives_are_applied() {
        let cur = json!({"spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
            "containers": [{"name": "a", "securityContext": {"capabilities": {"drop": ["ALL", "NET_RAW"]}}}]}});
        // $patch: replace on a map drops what the patch does not restate.
        let out = smp(
            cur.clone(),
            json!({"spec": {"securityContext": {"$patch": "replace", "runAsUser": 0}}}),
        );
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 0}));
        // $retainKeys drops the others.
        let out = smp(
            cur.clone(),
            json!({"spec": {"securityContext": {"$retainKeys": ["runAsUser"]}}}),
        );
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1000}));
        // $deleteFromPrimitiveList removes values (of finalizers: see
        // `delete_from_a_list_without_merge_strategy_is_refused`).
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // $patch: delete on a map and on a list element.
        let out = smp(
            cur.clone(),
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        );
        assert!(out["spec"].get("securityContext").is_none());
        let out = smp(
            cur.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([]));
        // list replace directive
        let out = smp(
            cur.clone(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
        // setElementOrder is ignored
        let out = smp(
            cur.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
        );
        assert_eq!(out, cur);
    }

    /// The API server appends a new list element as sent and keeps a `$retainKeys` in a new
    /// field as data: directives there would hide stored fields from the judge, so they are
    /// refused. Existing elements and fields still apply them.
    #[test]
    fn directives_inside_new_elements_and_fields_are_refused() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        for patch in [
            json!({"spec": {"containers": [{"name": "pwn", "securityContext": {"$patch": "delete", "privileged": true}}]}}),
            json!({"spec": {"containers": [{"name": "pwn", "securityContext": {"capabilities":
                {"$retainKeys": ["drop"], "drop": ["ALL"], "add": ["SYS_ADMIN"]}}}]}}),
            json!({"spec": {"volumes": [{"name": "h", "$retainKeys": ["name"], "hostPath": {"path": "/"}}]}}),
            json!({"spec": {"securityContext": {"$retainKeys": ["runAsUser"], "runAsUser": 0}}}),
        ] {
            let mut t = cur.clone();
            let err = merge(&mut t, &patch, Mode::Strategic).unwrap_err();
            assert!(err.contains("not allowed"), "{patch}: {err}");
        }
        // `$patch: merge` on a list element is refused, as apimachinery refuses it ("merging
        // lists cannot yet be specified in the patch"); an existing element keeps its
        // directives.
        let mut t = cur.clone();
        let err = merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "b", "$patch": "merge", "image": "y"}]}}),
            Mode::Strategic,
        )
        .unwrap_err();
        assert!(err.contains("unsupported $patch"), "{err}");
        let out = smp(
            json!({"spec": {"containers": [{"name": "a", "securityContext": {"runAsUser": 1, "runAsGroup": 2}}]}}),
            json!({"spec": {"containers": [{"name": "a", "securityContext": {"$retainKeys": ["runAsUser"]}}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"],
            json!({"runAsUser": 1})
        );
    }

    /// Two directives the API server does not apply as written: `$deleteFromPrimitiveList/`
    /// on a list of objects (it merges the items in by key: a privileged container added),
    /// and directives inside a map replaced with `$patch: replace` (kept as data, so a
    /// `$patch: delete` element is stored). Both are refused rather than judged as applied.
    #[test]
    fn directives_the_api_server_would_not_apply_are_refused() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "k"}]}});
        for patch in [
            json!({"spec": {"$deleteFromPrimitiveList/containers":
                [{"name": "x", "securityContext": {"privileged": true}}]}}),
            json!({"spec": {"$deleteFromPrimitiveList/volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
            json!({"spec": {"$deleteFromPrimitiveList/tolerations": [{"key": "k"}]}}),
            json!({"spec": {"$deleteFromPrimitiveList/volumes": ["v"]}}),
            json!({"spec": {"$patch": "replace", "containers": [{"name": "a", "image": "nginx"},
                {"name": "evil", "$patch": "delete", "securityContext": {"privileged": true}}]}}),
            json!({"spec": {"containers": [{"name": "a", "securityContext":
                {"$patch": "replace", "capabilities": {"$retainKeys": ["drop"], "add": ["SYS_ADMIN"]}}}]}}),
        ] {
            let mut t = cur.clone();
            let err = merge(&mut t, &patch, Mode::Strategic).unwrap_err();
            assert!(
                err.contains("not allowed") || err.contains("plain values"),
                "{patch}: {err}"
            );
        }
        // Plain uses stay: a replaced map without directives, a scalar list's delete.
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            cur,
            json!({"spec": {"$patch": "replace", "containers": [{"name": "b"}]}}),
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "b"}]}}));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let cur = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = smp(
            cur,
            json!({"spec": {"ports": [{"port": 443, "nodePort": 30443}]}}),
        );
        assert_eq!(
            out["spec"]["ports"][1],
            json!({"port": 443, "name": "https", "nodePort": 30443})
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unknown_or_misplaced_directives_are_errors() {
        let mut t = json!({});
        assert!(merge(&mut t, &json!({"spec": {"$weird": 1}}), Mode::Strategic).is_err());
        assert!(merge(
            &mut t,
            &json!({"spec": {"tolerations": [{"$patch": "delete"}]}}),
            Mode::Strategic
        )
        .is_err());
        assert!(merge(&mut t, &json!({"spec": {"$patch": "replace"}}), Mode::Apply).is_err());
        assert!(merge(
            &mut t,
            &json!({"spec": {"$patch": "bogus"}}),
            Mode::Strategic
        )
        .is_err());
    }
}
