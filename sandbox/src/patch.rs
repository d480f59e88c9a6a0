//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch,
//! and the merge half of server-side apply.
//!
//! Strategic merge is a fixture-sized subset: maps merge recursively, `null` deletes, lists of
//! maps merge by key for the usual pod-spec lists (`containers`, `initContainers`,
//! `ephemeralContainers`, `volumes`, `env`, `imagePullSecrets` by `name`; `ports` by
//! `containerPort`; `volumeMounts` by `mountPath`). `$patch: replace` / `$patch: delete` on a
//! map and on an item of such a list are read as apimachinery reads them (`strategic`,
//! `merge_list`); the `$setElementOrder/`, `$retainKeys`, `$deleteFromPrimitiveList/`
//! directives kubectl sends are ignored. Other lists are replaced. Any other Content-Type is
//! rejected by the caller with 415.

use serde_json::{Map, Value};

/// Supported patch flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    /// From a Content-Type (parameters after `;` ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Apply `patch` (already parsed) to `target`.
pub fn apply(kind: PatchType, target: &mut Value, patch: Value) -> Result<(), String> {
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &ops).map_err(|e| e.to_string())
        }
        PatchType::Merge => {
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Strategic | PatchType::Apply => {
            strategic(target, &patch);
            Ok(())
        }
    }
}

pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `target`.
pub fn strategic(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    // apimachinery's handleDirectiveInMergeMap: `replace` is the patch without the
    // directive, `delete` an empty map (an unknown directive, an error there, is ignored here).
    match pmap.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = pmap.clone();
            p.remove("$patch");
            *target = Value::Object(p);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tmap) = target.as_object_mut() else {
        return;
    };
    for (k, v) in pmap {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                tmap.remove(k);
            }
            Value::Object(_) => strategic(tmap.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => match (merge_key(k), tmap.get_mut(k)) {
                (Some(mk), Some(Value::Array(existing))) => merge_list(existing, items, mk),
                (Some(mk), _) => {
                    let mut fresh = Vec::new();
                    merge_list(&mut fresh, items, mk);
                    tmap.insert(k.clone(), Value::Array(fresh));
                }
                (None, _) => {
                    tmap.insert(k.clone(), v.clone());
                }
            },
            _ => {
                tmap.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A keyed list merged as apimachinery's `mergeSliceWithSpecialElements` does: an item
/// carrying `$patch` never becomes an element — `delete` removes the entries with its key,
/// `replace` makes the list exactly the patch's other items (so `[{"$patch": "replace", "name":
/// "c", …}]` alone leaves an empty list) — and the other items merge by key.
fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in items {
        match item.get("$patch") {
            None => plain.push(item),
            Some(d) if d == "delete" => {
                if let Some(id) = item.get(key) {
                    existing.retain(|e| e.get(key) != Some(id));
                }
            }
            Some(d) if d == "replace" => replace = true,
            // apimachinery refuses the patch; the fixture drops the item.
            Some(_) => {}
        }
    }
    if replace {
        *existing = plain.into_iter().cloned().collect();
        return;
    }
    for item in plain {
        let id = item.get(key);
        match id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id))) {
            Some(i) => strategic(&mut existing[i], item),
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let p = json!({"metadata": {"labels": {"y": null, "z": "3"}},
            "spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}]}});
        apply(PatchType::Strategic, &mut t, p).unwrap();
        assert_eq!(t["metadata"]["labels"], json!({"x": "1", "z": "3"}));
        let cs = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "c");
    }

    /// As apimachinery's `mergeSliceWithSpecialElements`: an item carrying `$patch: replace`
    /// is not an element — the list becomes the patch's other items, an empty list when there
    /// are none (kube-apiserver then refuses a pod template without containers).
    #[test]
    fn a_replace_item_in_a_keyed_list_is_a_directive_not_an_element() {
        let deployment = || json!({"spec": {"containers": [{"name": "c", "image": "a:1"}]}});
        let mut t = deployment();
        let p = json!({"spec": {"containers": [
            {"$patch": "replace", "name": "c", "image": "x",
             "securityContext": {"privileged": true}}]}});
        apply(PatchType::Strategic, &mut t, p).unwrap();
        assert_eq!(t["spec"]["containers"], json!([]));
        let mut t = deployment();
        let p = json!({"spec": {"containers": [
            {"$patch": "replace"}, {"name": "z", "image": "z:1"}]}});
        apply(PatchType::Strategic, &mut t, p).unwrap();
        assert_eq!(
            t["spec"]["containers"],
            json!([{"name": "z", "image": "z:1"}])
        );
    }

    /// `$patch: delete` on a map makes it empty, whatever else the map carries (as apimachinery;
    /// the proxy judges it so), instead of merging the other fields in.
    #[test]
    fn a_delete_directive_on_a_map_empties_it() {
        let mut t = json!({"spec": {"containers": [{"name": "c", "image": "a:1",
            "securityContext": {"runAsNonRoot": true}}]}});
        let p = json!({"spec": {"containers": [{"name": "c",
            "securityContext": {"$patch": "delete", "privileged": true}}]}});
        apply(PatchType::Strategic, &mut t, p).unwrap();
        assert_eq!(t["spec"]["containers"][0]["securityContext"], json!({}));
        assert_eq!(t["spec"]["containers"][0]["image"], "a:1");
    }

    #[test]
    fn json_and_merge_patch() {
        let mut t = json!({"data": {"a": "1"}, "list": [1, 2]});
        apply(
            PatchType::Merge,
            &mut t,
            json!({"data": {"a": null, "b": "2"}, "list": [3]}),
        )
        .unwrap();
        assert_eq!(t, json!({"data": {"b": "2"}, "list": [3]}));
        apply(
            PatchType::Json,
            &mut t,
            json!([{"op": "add", "path": "/data/c", "value": "3"}]),
        )
        .unwrap();
        assert_eq!(t["data"]["c"], "3");
        assert!(apply(
            PatchType::Json,
            &mut t,
            json!([{"op": "remove", "path": "/nope"}])
        )
        .is_err());
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
