//! The fixed resource catalogue and the discovery documents built from it.
//!
//! Accepts: `GET /api`, `/apis`, `/api/v1`, `/apis/<g>`, `/apis/<g>/<v>` (legacy discovery), and
//! aggregated discovery v2 for `/api` and `/apis` when `Accept` asks for
//! `as=APIGroupDiscoveryList` (with `ETag`, `Vary: Accept` and 304 on a matching
//! `If-None-Match`). Rejects: unknown groups / versions get the apiserver's plain-text 404.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use portcullis::body::Body;

use super::catalogue::{group_version, GROUPS};
pub use super::catalogue::{ResourceDef, RESOURCES};

/// The resource `plural` of `group/version`, if served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Whether `group/version` is served.
pub fn has_group_version(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|d| d.group == group && d.version == version)
}

fn group_json(group: &str) -> Value {
    let gv = json!({"groupVersion": group_version(group, "v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Legacy `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    })
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| group_json(g)).collect::<Vec<_>>(),
    })
}

/// Legacy `/apis/<group>`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    GROUPS.contains(&group).then(|| {
        let mut g = group_json(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// Legacy `/api/v1` or `/apis/<g>/<v>`.
pub fn api_resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for d in RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
            "kind": d.kind, "verbs": d.verbs,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        for s in d.subresources {
            let mut r = json!({
                "name": format!("{}/{}", d.plural, s.name), "singularName": "",
                "namespaced": d.namespaced, "kind": s.kind, "verbs": s.verbs,
            });
            if !s.group.is_empty() {
                r["group"] = json!(s.group);
                r["version"] = json!(s.version);
            }
            resources.push(r);
        }
    }
    json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version(group, version), "resources": resources,
    })
}

fn aggregated_group(group: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|d| d.group == group)
        .map(|d| {
            let mut r = json!({
                "resource": d.plural,
                "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
                "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": d.singular,
                "verbs": d.verbs,
            });
            if !d.short_names.is_empty() {
                r["shortNames"] = json!(d.short_names);
            }
            if !d.categories.is_empty() {
                r["categories"] = json!(d.categories);
            }
            if !d.subresources.is_empty() {
                r["subresources"] = d
                    .subresources
                    .iter()
                    .map(|s| {
                        let (g, v) = if s.group.is_empty() {
                            (d.group, d.version)
                        } else {
                            (s.group, s.version)
                        };
                        json!({
                            "subresource": s.name,
                            "responseKind": {"group": g, "version": v, "kind": s.kind},
                            "verbs": s.verbs,
                        })
                    })
                    .collect();
            }
            r
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    })
}

/// Aggregated discovery for `/api` (legacy = true) or `/apis`.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = if legacy {
        vec![aggregated_group("")]
    } else {
        GROUPS.iter().map(|g| aggregated_group(g)).collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Whether the client asked for aggregated discovery v2.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.contains("as=APIGroupDiscoveryList") && t.contains("v=v2") && !t.contains("v=v2beta1")
        })
}

const AGG_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The aggregated discovery response with `ETag` / `Vary`, or 304 when the tag matches.
pub fn aggregated_response(legacy: bool, headers: &HeaderMap) -> Response<Body> {
    let bytes = serde_json::to_vec(&aggregated(legacy)).unwrap_or_default();
    let etag = format!("\"{:016X}\"", fnv1a(&bytes));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if matches {
        let mut r = Response::new(portcullis::body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(portcullis::body::full(bytes))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(AGG_CT));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_listed_with_subresources() {
        let v = api_resource_list("", "v1");
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/exec"));
        assert!(names.contains(&"pods/log"));
        let apps = api_resource_list("apps", "v1");
        assert!(apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale" && r["group"] == "autoscaling"));
    }

    #[test]
    fn aggregated_accept_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
        );
        assert!(wants_aggregated(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_aggregated(&h));
        let first = aggregated_response(false, &h);
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(first.headers()[header::VARY], "Accept");
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            aggregated_response(false, &h).status(),
            StatusCode::NOT_MODIFIED
        );
        let agg = aggregated(false);
        assert_eq!(agg["items"][0]["metadata"]["name"], "apps");
    }
}
