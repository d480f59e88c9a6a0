//! `meta.k8s.io/v1` Table rendering for `Accept: application/json;as=Table;...` (kubectl get).
//!
//! Accepts any catalogue resource; columns are chosen per kind (pods, deployments, configmaps,
//! secrets, namespaces, services; everything else gets Name, Age). Each row carries the object as
//! PartialObjectMetadata, as the apiserver does by default (`includeObject=Metadata`).

use http::HeaderMap;
use serde_json::{json, Value};

use super::clock::age_of;

/// The reply Content-Type for Table responses.
pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Whether `Accept` asks for a Table.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

fn col(name: &str, ty: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": 0})
}

fn columns(kind: &str) -> Vec<Value> {
    let (s, i) = ("string", "integer");
    let spec: &[(&str, &str)] = match kind {
        "Pod" => &[
            ("Name", s),
            ("Ready", s),
            ("Status", s),
            ("Restarts", s),
            ("Age", s),
        ],
        "Deployment" => &[
            ("Name", s),
            ("Ready", s),
            ("Up-to-date", i),
            ("Available", i),
            ("Age", s),
        ],
        "ConfigMap" => &[("Name", s), ("Data", i), ("Age", s)],
        "Secret" => &[("Name", s), ("Type", s), ("Data", i), ("Age", s)],
        "Namespace" => &[("Name", s), ("Status", s), ("Age", s)],
        "Service" => &[("Name", s), ("Type", s), ("Cluster-IP", s), ("Age", s)],
        _ => &[("Name", s), ("Age", s)],
    };
    spec.iter().map(|(n, t)| col(n, t)).collect()
}

fn len_of(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let age = json!(age_of(o));
    match kind {
        "Pod" => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                o["status"]["phase"].clone(),
                json!(restarts.to_string()),
                age,
            ]
        }
        "Deployment" => {
            let st = &o["status"];
            let n = |f: &str| st[f].as_i64().unwrap_or(0);
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{want}", n("readyReplicas"))),
                json!(n("updatedReplicas")),
                json!(n("availableReplicas")),
                age,
            ]
        }
        "ConfigMap" => vec![
            name,
            json!(len_of(&o["data"]) + len_of(&o["binaryData"])),
            age,
        ],
        "Secret" => vec![
            name,
            json!(o["type"].as_str().unwrap_or("Opaque")),
            json!(len_of(&o["data"])),
            age,
        ],
        "Namespace" => vec![name, o["status"]["phase"].clone(), age],
        "Service" => vec![
            name,
            json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
            json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
            age,
        ],
        _ => vec![name, age],
    }
}

fn row(kind: &str, o: &Value) -> Value {
    json!({
        "cells": cells(kind, o),
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
    })
}

/// A Table of `objects` (one kind). `list_meta` becomes the Table's metadata.
pub fn table(kind: &str, objects: &[Value], list_meta: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(kind),
        "rows": objects.iter().map(|o| row(kind, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 0}]}});
        let t = table("Pod", &[pod], json!({}));
        assert_eq!(t["rows"][0]["cells"][1], "1/1");
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 5);
    }
}
