//! The least OpenAPI v3 kubectl needs: `/openapi/v3` (path index with `?hash=` URLs) and one
//! document per group-version listing, for every resource, a PATCH operation tagged with
//! `x-kubernetes-group-version-kind` and a `fieldValidation` parameter. That tells kubectl the
//! server validates fields itself (so it skips client-side schema validation), and, having no
//! request-body content types, makes `kubectl apply` build its strategic merge patch from its
//! compiled-in types. No schemas are served. `/openapi/v2` is not served (404), which kubectl
//! tolerates once v3 answers.

use serde_json::{json, Map, Value};

use super::discovery::RESOURCES;

/// `(url path without leading slash, group, version)` of every served group-version.
fn group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out: Vec<(String, &str, &str)> = Vec::new();
    for d in RESOURCES {
        let path = if d.group.is_empty() {
            format!("api/{}", d.version)
        } else {
            format!("apis/{}/{}", d.group, d.version)
        };
        if !out.iter().any(|(p, _, _)| *p == path) {
            out.push((path, d.group, d.version));
        }
    }
    out
}

const HASH: &str = "5A4D1B1E5A4D1B1E";

/// `/openapi/v3`.
pub fn index() -> Value {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|(p, _, _)| {
            let url = format!("/openapi/v3/{p}?hash={HASH}");
            (p, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/g/v>`, if served.
pub fn group_version(path: &str) -> Option<Value> {
    let (_, group, version) = group_versions().into_iter().find(|(p, _, _)| p == path)?;
    let mut paths = Map::new();
    for d in RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let item = if d.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("/{path}/{}/{{name}}", d.plural)
        };
        let op = json!({
            "operationId": format!("patch{}", d.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-sandbox"},
        "paths": paths,
        "components": {},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_docs() {
        let idx = index();
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = group_version("apis/apps/v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(group_version("apis/nope/v1").is_none());
    }
}
