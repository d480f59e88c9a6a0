//! What kube-apiserver's registry strategies do to a written object, for the parts clients
//! notice: `dryRun` (query and `DeleteOptions` body), a Secret's `stringData`, a Service's
//! `clusterIP`, and the split between a resource and its `status` subresource.
//!
//! Accepts `dryRun=All` (query, any write verb) and `{"dryRun": ["All"]}` in a DELETE body.
//! Rejects any other dryRun value (400, upstream's wording). A write to `/status` changes only
//! `status` (spec and metadata come from the stored object); a write to the resource itself of a
//! kind with a status subresource keeps the stored `status`; a create clears `status` of such
//! kinds (the sandbox's pretend controllers fill it in afterwards). `stringData` is merged into
//! `data` (base64, `stringData` wins) and dropped. A Service gets a clusterIP from
//! 10.96.0.0/16 unless it is headless (`None`) or `ExternalName`; the IP is kept on update.

use base64::Engine;
use serde_json::{json, Value};

use super::{discovery::ResourceDef, rest::Query};
use portcullis::k8s::Status;

fn unsupported(values: &[String]) -> Status {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    Status::bad_request(format!(
        "dryRun: Unsupported value: []string{{{}}}: supported values: \"All\"",
        quoted.join(", ")
    ))
}

/// Refuse a `dryRun` query value other than `All`.
pub fn check_dry_run_query(q: &Query) -> Result<(), Status> {
    let values = q.all("dryRun");
    if values.iter().any(|v| v != "All") {
        return Err(unsupported(&values));
    }
    Ok(())
}

/// Whether a DELETE's `DeleteOptions` body asks for a dry run (empty body: no).
pub fn delete_body_dry_run(body: &[u8]) -> Result<bool, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let opts: Value = serde_json::from_slice(body)
        .map_err(|e| Status::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    let values: Vec<String> = opts["dryRun"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if values.iter().any(|v| v != "All") {
        return Err(unsupported(&values));
    }
    Ok(!values.is_empty())
}

fn has_status(def: &ResourceDef) -> bool {
    def.subresources.iter().any(|s| s.name == "status")
}

/// The object to store for a PUT / PATCH of `sub` (None: the resource itself) given the
/// stored `current` and the client's `new`.
pub fn split_status(def: &ResourceDef, sub: Option<&str>, current: &Value, new: Value) -> Value {
    match sub {
        Some("status") => {
            let mut out = current.clone();
            out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            // Optimistic concurrency still applies to status writes.
            out["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].clone();
            out
        }
        None if has_status(def) => {
            let mut out = new;
            match current.get("status") {
                Some(st) => out["status"] = st.clone(),
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            out
        }
        _ => new,
    }
}

/// On create, before the sandbox's defaults: strategies' `PrepareForCreate`.
pub fn on_create(def: &ResourceDef, obj: &mut Value, rv: u64) {
    if has_status(def) {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    match def.kind {
        "Secret" => merge_string_data(obj),
        "Service" => allocate_cluster_ip(obj, rv),
        _ => {}
    }
}

/// On update, before the sandbox's defaults: keep what is immutable or allocated.
pub fn on_update(def: &ResourceDef, old: &Value, obj: &mut Value) {
    match def.kind {
        "Secret" => merge_string_data(obj),
        "Service" => {
            for f in ["clusterIP", "clusterIPs"] {
                if obj["spec"][f].is_null() && !old["spec"][f].is_null() {
                    obj["spec"][f] = old["spec"][f].clone();
                }
            }
        }
        _ => {}
    }
}

fn merge_string_data(obj: &mut Value) {
    let Some(string_data) = obj
        .as_object_mut()
        .and_then(|m| m.remove("stringData"))
        .and_then(|v| v.as_object().cloned())
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

fn allocate_cluster_ip(obj: &mut Value, rv: u64) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    if spec["type"] == "ExternalName" {
        return;
    }
    let ip = match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        Some(given) => given.to_string(),
        // rv is unique per write, so no two services share an address.
        None => format!("10.96.{}.{}", (rv / 254) % 256, rv % 254 + 1),
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    if ip != "None" {
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::find;

    #[test]
    fn secrets_services_and_dry_run() {
        let sec = find("", "v1", "secrets").unwrap();
        let mut s = json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "hi"}});
        on_create(sec, &mut s, 3);
        assert_eq!(s, json!({"data": {"a": "eA==", "b": "aGk="}}));
        let svc = find("", "v1", "services").unwrap();
        let mut v = json!({"spec": {"ports": [{"port": 80}]}, "status": {"x": 1}});
        on_create(svc, &mut v, 300);
        assert_eq!(v["spec"]["clusterIP"], "10.96.1.47");
        assert!(v.get("status").is_none());
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        on_create(svc, &mut headless, 4);
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let mut later = json!({"spec": {"ports": []}});
        on_update(svc, &v, &mut later);
        assert_eq!(later["spec"]["clusterIP"], "10.96.1.47");
        assert!(delete_body_dry_run(br#"{"kind":"DeleteOptions","dryRun":["All"]}"#).unwrap());
        assert!(!delete_body_dry_run(b"").unwrap());
        assert_eq!(
            delete_body_dry_run(br#"{"dryRun":["Some"]}"#)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn status_split() {
        let pods = find("", "v1", "pods").unwrap();
        let cur =
            json!({"metadata": {"resourceVersion": "5"}, "spec": {"a": 1}, "status": {"s": 1}});
        let new =
            json!({"metadata": {"resourceVersion": "5"}, "spec": {"a": 2}, "status": {"s": 2}});
        let st = split_status(pods, Some("status"), &cur, new.clone());
        assert_eq!(
            (st["spec"]["a"].clone(), st["status"]["s"].clone()),
            (json!(1), json!(2))
        );
        let main = split_status(pods, None, &cur, new);
        assert_eq!(
            (main["spec"]["a"].clone(), main["status"]["s"].clone()),
            (json!(2), json!(1))
        );
    }
}
