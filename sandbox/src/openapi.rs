//! OpenAPI v2 and v3 as kube-apiserver serves them, for the kinds the sandbox serves, with the
//! upstream schemas of `openapi_schemas`. What kubectl does with them:
//! - `kubectl explain` finds a kind's schema by its `x-kubernetes-group-version-kind` in the
//!   group-version's v3 document and prints its fields' descriptions;
//! - `kubectl apply` (client side) sees a PATCH operation for the kind that accepts
//!   `application/strategic-merge-patch+json` and builds its strategic merge patch from the v3
//!   schema's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` (the same patch its
//!   compiled-in types give: the test `apply_patches_match_compiled_in_types` holds them equal);
//! - the PATCH operation's `fieldValidation` parameter tells kubectl the server validates
//!   fields itself, so it skips client-side schema validation.
//!
//! Accepts:
//! - `GET /openapi/v3`: the path index, each `serverRelativeURL` carrying `?hash=` of the
//!   document's content;
//! - `GET /openapi/v3/<api/v1 | apis/G/V>`: one group-version: a PATCH operation per resource
//!   and, in `components.schemas`, its kinds and everything they reference. With the current
//!   `?hash=` it is immutable (`Cache-Control: public, immutable`); with another hash, a 301 to
//!   the current URL, like kube-apiserver;
//! - `GET /openapi/v2`: one Swagger 2.0 document with every served kind's definitions and
//!   PATCH operations: JSON, or the gnostic protobuf kubectl asks for
//!   (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, see `openapi_pb`), by the
//!   first media range of `Accept` that names one of them (none: JSON). kubectl 1.32 reads v2
//!   only when v3 fails it, and for `explain --output plaintext-openapiv2`.
//!
//! Rejects: `/openapi/v2` with an `Accept` that admits neither gets `406 Not Acceptable` (empty
//! body, like kube-apiserver). Unknown group-versions get the plain-text 404 page.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hasher},
    sync::OnceLock,
};

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};

use portcullis::body::Body;

use super::{
    discovery::{ResourceDef, RESOURCES},
    not_found_page, openapi_pb,
    openapi_schemas::{self as schemas, PATCH},
};

const TITLE: &str = "Kubernetes";
const VERSION: &str = "v1.32.0-sandbox";
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// Every document, built once.
struct Docs {
    v2: Vec<u8>,
    v2_protobuf: Vec<u8>,
    /// `api/v1` / `apis/G/V` -> (content hash, v3 document).
    v3: BTreeMap<String, (String, Vec<u8>)>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let v3 = group_versions()
            .into_iter()
            .map(|(path, g, v)| {
                let bytes = serde_json::to_vec(&v3_document(g, v)).unwrap_or_default();
                let mut h = DefaultHasher::new();
                h.write(&bytes);
                (path, (format!("{:016X}", h.finish()), bytes))
            })
            .collect();
        let v2 = v2_document();
        Docs {
            v2: serde_json::to_vec(&v2).unwrap_or_default(),
            v2_protobuf: openapi_pb::encode(&v2),
            v3,
        }
    })
}

/// `(url path without leading slash, group, version)` of every served group-version.
fn group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out: Vec<(String, &str, &str)> = Vec::new();
    for d in RESOURCES {
        let path = gv_path(d.group, d.version);
        if !out.iter().any(|(p, _, _)| *p == path) {
            out.push((path, d.group, d.version));
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The item path of a resource (`/apis/apps/v1/namespaces/{namespace}/deployments/{name}`).
fn item_path(d: &ResourceDef) -> String {
    let gv = gv_path(d.group, d.version);
    if d.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
    } else {
        format!("/{gv}/{}/{{name}}", d.plural)
    }
}

fn gvk(d: &ResourceDef) -> Value {
    json!({"group": d.group, "version": d.version, "kind": d.kind})
}

/// The query parameters of a PATCH; `fieldValidation` is the one kubectl looks for.
const QUERY: &[(&str, &str)] = &[
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
    ("force", "boolean"),
];

fn path_params(d: &ResourceDef, v3: bool) -> Vec<Value> {
    let names: &[&str] = if d.namespaced {
        &["name", "namespace"]
    } else {
        &["name"]
    };
    names
        .iter()
        .map(|n| {
            if v3 {
                json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}})
            } else {
                json!({"name": n, "in": "path", "required": true, "type": "string"})
            }
        })
        .collect()
}

/// `/openapi/v3/<gv>`: PATCH operations and the schemas of the group-version's kinds.
fn v3_document(group: &str, version: &str) -> Value {
    let served: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    let patch_ref = json!({"$ref": format!("#/components/schemas/{PATCH}")});
    let mut paths = Map::new();
    for d in &served {
        let name = schemas::name_of(d.group, d.version, d.kind).unwrap_or_default();
        let body: Map<String, Value> = PATCH_TYPES
            .iter()
            .map(|t| (t.to_string(), json!({"schema": patch_ref})))
            .collect();
        let mut params: Vec<Value> = QUERY
            .iter()
            .map(|(n, t)| json!({"name": n, "in": "query", "schema": {"type": t}}))
            .collect();
        params.splice(0..0, path_params(d, true));
        let op = json!({
            "operationId": format!("patch{}", d.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk(d),
            "parameters": params,
            "requestBody": {"content": body, "required": true},
            "responses": {"200": {"description": "OK", "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{name}")}
            }}}},
        });
        paths.insert(item_path(d), json!({"patch": op}));
    }
    let roots = served
        .iter()
        .filter_map(|d| schemas::name_of(d.group, d.version, d.kind))
        .chain([PATCH]);
    let components: Map<String, Value> = schemas::closure(roots)
        .into_iter()
        .filter_map(|n| {
            Some((
                n.to_string(),
                schemas::definition_v3(n, schemas::definitions().get(n)?),
            ))
        })
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths,
        "components": {"schemas": components},
    })
}

/// `/openapi/v2`: every served kind's PATCH operation, and every vendored definition.
fn v2_document() -> Value {
    let mut paths = Map::new();
    for d in RESOURCES {
        let name = schemas::name_of(d.group, d.version, d.kind).unwrap_or_default();
        let mut params = vec![json!({
            "name": "body", "in": "body", "required": true,
            "schema": {"$ref": format!("#/definitions/{PATCH}")},
        })];
        params.extend(
            QUERY
                .iter()
                .map(|(n, t)| json!({"name": n, "in": "query", "type": t, "uniqueItems": true})),
        );
        let op = json!({
            "operationId": format!("patch{}", d.kind),
            "consumes": PATCH_TYPES,
            "produces": ["application/json", "application/yaml"],
            "schemes": ["https"],
            "parameters": params,
            "responses": {"200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{name}")}}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk(d),
        });
        paths.insert(
            item_path(d),
            json!({"patch": op, "parameters": path_params(d, false)}),
        );
    }
    json!({
        "swagger": "2.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths,
        "definitions": schemas::definitions(),
    })
}

fn bytes_response(code: StatusCode, bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(portcullis::body::full(bytes));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `/openapi/v3`.
pub fn index() -> Response<Body> {
    let paths: Map<String, Value> = docs()
        .v3
        .iter()
        .map(|(p, (hash, _))| {
            let url = format!("/openapi/v3/{p}?hash={hash}");
            (p.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    let body = serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default();
    bytes_response(StatusCode::OK, body, "application/json")
}

/// `/openapi/v3/<api/v1 | apis/g/v>`, with the query string (for `hash`).
pub fn group_version(path: &str, query: Option<&str>) -> Response<Body> {
    let Some((hash, doc)) = docs().v3.get(path) else {
        return not_found_page();
    };
    let asked = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "hash")
            .map(|(_, v)| v.into_owned())
    });
    match asked {
        Some(h) if h == *hash => {
            let mut r = bytes_response(StatusCode::OK, doc.clone(), "application/json");
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            r
        }
        // An old hash: point the client at the current document (kube-apiserver does the same).
        Some(_) => {
            let mut r = Response::new(portcullis::body::empty());
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={hash}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => bytes_response(StatusCode::OK, doc.clone(), "application/json"),
    }
}

/// `/openapi/v2`: JSON or protobuf as `Accept` asks, else 406.
pub fn v2(headers: &HeaderMap) -> Response<Body> {
    let mut r = match negotiate(headers) {
        Some(V2::Json) => bytes_response(StatusCode::OK, docs().v2.clone(), "application/json"),
        Some(V2::Protobuf) => bytes_response(StatusCode::OK, docs().v2_protobuf.clone(), PB_CT),
        None => {
            let mut r = Response::new(portcullis::body::empty());
            *r.status_mut() = StatusCode::NOT_ACCEPTABLE;
            r
        }
    };
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// What kube-apiserver answers protobuf with (both spellings of the type are accepted).
const PB_CT: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Debug, PartialEq)]
enum V2 {
    Json,
    Protobuf,
}

/// The first media range of `Accept` (none means `*/*`) with a non-zero quality that names
/// JSON (or a wildcard) or the v2 protobuf.
fn negotiate(headers: &HeaderMap) -> Option<V2> {
    let mut ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return Some(V2::Json);
    }
    ranges.find_map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let zero = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match media.as_str() {
            _ if zero => None,
            "*/*" | "application/*" | "application/json" => Some(V2::Json),
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" => Some(V2::Protobuf),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(r: Response<Body>) -> Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn index_and_group_version_documents() {
        let idx = body_json(index()).await;
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, "/openapi/v3/apis/apps/v1");
        let r = group_version("apis/apps/v1", Some(query));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        let doc = body_json(r).await;
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
        assert!(p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "fieldValidation"));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let d = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        // Everything a reference names is in the same document (kubectl resolves within it).
        let text = serde_json::to_string(&doc).unwrap();
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference {name}");
        }
        // Only this group-version's kinds carry a GVK here.
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
        assert!(schemas.contains_key("io.k8s.api.core.v1.PodSpec"));
    }

    #[tokio::test]
    async fn stale_hash_redirects_and_unknown_is_404() {
        let r = group_version("api/v1", Some("hash=0000"));
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        let loc = r.headers()[header::LOCATION].to_str().unwrap();
        assert!(loc.starts_with("/openapi/v3/api/v1?hash=") && !loc.ends_with("=0000"));
        assert_eq!(
            group_version("apis/nope/v1", None).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn v2_negotiates_json_or_protobuf() {
        let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        let ct = |a: &str| {
            let r = v2(&accept(a));
            assert_eq!(r.status(), StatusCode::OK, "{a}");
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(ct(pb), PB_CT);
        assert_eq!(ct(&format!("{pb}, application/json")), PB_CT);
        assert_eq!(ct(&format!("application/json, {pb}")), "application/json");
        assert_eq!(ct("*/*"), "application/json");
        assert_eq!(ct(&format!("application/json;q=0, {pb}")), PB_CT);
        for refused in ["application/json;q=0", "text/html", "application/yaml"] {
            assert_eq!(
                v2(&accept(refused)).status(),
                StatusCode::NOT_ACCEPTABLE,
                "{refused}"
            );
        }
        let doc = body_json(v2(&HeaderMap::new())).await;
        assert_eq!(doc["swagger"], "2.0");
        for d in RESOURCES {
            let name = schemas::name_of(d.group, d.version, d.kind).unwrap();
            assert!(doc["definitions"][name].is_object(), "{name}");
            let op = &doc["paths"][item_path(d)]["patch"];
            assert_eq!(op["x-kubernetes-group-version-kind"], gvk(d));
        }
    }
}
