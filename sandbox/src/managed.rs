//! `metadata.managedFields` for server-side apply: each apply is recorded as the `Apply` entry
//! of its `fieldManager`, with the configuration's field set in kube-apiserver's `fieldsV1`
//! shape — `f:<field>` for fields, `k:{"name":…}` items marked `.` in the lists merged by
//! name (`containers`, `volumes`, `env`, …), every other list a leaf — so a proxy that reads a
//! manager's last applied set finds one. Recording only: a re-apply here merges and removes
//! nothing (no prune), other writes record no `Update` entries, and an apply without a
//! `fieldManager` records none.

use serde_json::{json, Map, Value};

/// Server-set metadata kube-apiserver leaves out of a manager's set.
const SERVER_SET: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

/// Record `config` as `manager`'s applied set in `obj`, replacing its previous `Apply` entry.
pub fn record_apply(obj: &mut Value, config: &Value, manager: &str, time: String) {
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": config.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": Value::Object(top_set(config)),
    });
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(entries) = list.as_array_mut() {
        entries.retain(|e| {
            !(e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        });
        entries.push(entry);
    }
}

/// The set of a whole configuration: no `apiVersion`, `kind` or server-set metadata.
fn top_set(config: &Value) -> Map<String, Value> {
    let mut set = Map::new();
    let Some(obj) = config.as_object() else {
        return set;
    };
    for (k, v) in obj {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let node = if k == "metadata" {
            let mut meta = v.clone();
            if let Some(m) = meta.as_object_mut() {
                m.retain(|key, _| !SERVER_SET.contains(&key.as_str()));
                if m.is_empty() {
                    continue;
                }
            }
            node_of(k, &meta)
        } else {
            node_of(k, v)
        };
        set.insert(format!("f:{k}"), node);
    }
    set
}

/// The node of field `field` holding `v`.
fn node_of(field: &str, v: &Value) -> Value {
    match v {
        Value::Object(m) if !m.is_empty() => Value::Object(
            m.iter()
                .map(|(k, child)| (format!("f:{k}"), node_of(k, child)))
                .collect(),
        ),
        Value::Array(items) if super::patch::merge_key(field) == Some("name") => Value::Object(
            items
                .iter()
                .filter_map(|item| {
                    let name = item.get("name")?.as_str()?;
                    let mut node = match node_of("", item) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    node.insert(".".into(), json!({}));
                    Some((format!("k:{}", json!({"name": name})), Value::Object(node)))
                })
                .collect(),
        ),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_records_its_set_in_the_api_server_s_shape() {
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"replicas": 1, "template": {"spec": {
                "securityContext": {},
                "containers": [{"name": "web", "image": "nginx", "args": ["a"]}]}}}});
        let mut obj = json!({"metadata": {"name": "d", "managedFields": [
            {"manager": "x", "operation": "Apply"}, {"manager": "x", "operation": "Update"}]}});
        record_apply(&mut obj, &config, "x", "2026-12-07T00:00:00Z".into());
        let entries = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0]["operation"], "Update");
        assert_eq!(entries[1]["apiVersion"], "apps/v1");
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {
                    "f:securityContext": {},
                    "f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:name": {}, "f:image": {}, "f:args": {}}}}}}})
        );
    }
}
