//! The Kubernetes v1.32 schemas of the kinds the sandbox serves: upstream's OpenAPI v2
//! definitions, vendored in `sandbox/openapi/definitions.json` and embedded at compile time.
//! That file is generated, never edited: `sandbox/openapi/generate.py` says where it comes from
//! (the upstream `api/openapi-spec/swagger.json` definitions as the PyPI package
//! `kubernetes-validate` ships them) and regenerates it, trimmed to the served kinds and what
//! they reference. Descriptions, `required`, `format`, `x-kubernetes-group-version-kind` and the
//! strategic-merge extensions (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`)
//! are upstream's, which is what `kubectl explain` prints and `kubectl apply` builds its
//! strategic merge patches from.
//!
//! This module only reads them: the documents served over HTTP are built in `openapi`.

use std::{collections::BTreeSet, sync::OnceLock};

use serde_json::{Map, Value};

/// The generated file (about 400 kB of JSON; parsed once, on the first OpenAPI request).
const DEFINITIONS: &str = include_str!("../openapi/definitions.json");

/// The schema of a PATCH request body, as upstream names it.
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// Every vendored definition by name. Empty if the embedded file did not parse (the unit
/// tests rule that out), so a broken file degrades to schema-less documents, not a panic.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| match serde_json::from_str::<Value>(DEFINITIONS) {
        Ok(Value::Object(mut doc)) => match doc.remove("definitions") {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        },
        _ => Map::new(),
    })
}

/// The name of the definition whose `x-kubernetes-group-version-kind` lists this kind.
pub fn name_of(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    definitions().iter().find_map(|(name, d)| {
        let gvks = d.get("x-kubernetes-group-version-kind")?.as_array()?;
        gvks.iter()
            .any(|g| g["group"] == group && g["version"] == version && g["kind"] == kind)
            .then_some(name.as_str())
    })
}

/// `roots` and every definition they reference, transitively. Unknown names are skipped.
pub fn closure<'a>(roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'static str> {
    let defs = definitions();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        let Some((name, def)) = defs.get_key_value(name) else {
            continue;
        };
        if seen.insert(name.as_str()) {
            refs(def, &mut |r| stack.push(r));
        }
    }
    seen
}

/// Call `found` with the definition name of every `$ref` in `v`.
fn refs<'a>(v: &'a Value, found: &mut impl FnMut(&'a str)) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        found(r.rsplit('/').next().unwrap_or(r));
                    }
                    _ => refs(x, found),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, found)),
        _ => {}
    }
}

/// The v3 form of the definition `name`: [`to_v3`], and for the two scalar wrappers whose Go
/// types declare `OpenAPIV3OneOfTypes` (IntOrString: integer or string; Quantity: string or
/// number) the `oneOf` kube-openapi's v3 builder writes in place of v2's `type: string`, which
/// is also why `kubectl explain` names them `<IntOrString>` / `<Quantity>`.
pub fn definition_v3(name: &str, def: &Value) -> Value {
    let one_of: &[&str] = match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => &["integer", "string"],
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => &["string", "number"],
        _ => return to_v3(def),
    };
    let mut v3 = to_v3(def);
    if let Value::Object(m) = &mut v3 {
        m.remove("type");
        let types = one_of
            .iter()
            .map(|t| serde_json::json!({"type": t}))
            .collect();
        m.insert("oneOf".to_string(), Value::Array(types));
    }
    v3
}

/// The OpenAPI v3 form of a v2 schema, as kube-apiserver's v3 documents write it: references
/// point into `#/components/schemas/`, and a reference with siblings (a field with its own
/// description or patch strategy) becomes `allOf: [{$ref}]` next to those siblings, because in
/// OpenAPI 3.0 a `$ref` object may carry nothing else.
pub fn to_v3(schema: &Value) -> Value {
    let Value::Object(m) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    let mut reference = None;
    for (k, v) in m {
        let v = match k.as_str() {
            "$ref" => {
                let name = v.as_str().and_then(|r| r.rsplit('/').next()).unwrap_or("");
                reference = Some(Value::String(format!("#/components/schemas/{name}")));
                continue;
            }
            "properties" => match v {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, p)| (name.clone(), to_v3(p)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" => to_v3(v),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    match reference {
        Some(r) if out.is_empty() => Value::Object(Map::from_iter([("$ref".to_string(), r)])),
        Some(r) => {
            let one = Value::Object(Map::from_iter([("$ref".to_string(), r)]));
            out.insert("allOf".to_string(), Value::Array(vec![one]));
            Value::Object(out)
        }
        None => Value::Object(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::RESOURCES;

    #[test]
    fn every_served_kind_has_a_schema() {
        assert!(definitions().len() > 100, "the embedded definitions parse");
        for d in RESOURCES {
            assert!(
                name_of(d.group, d.version, d.kind).is_some(),
                "no schema for {}/{} {}: add it to KINDS in sandbox/openapi/generate.py and rerun it",
                d.group,
                d.version,
                d.kind
            );
        }
        assert!(definitions().contains_key(PATCH));
    }

    #[test]
    fn every_reference_resolves() {
        for (name, def) in definitions() {
            refs(def, &mut |r| {
                assert!(
                    definitions().contains_key(r),
                    "{name} refers to missing {r}"
                )
            });
        }
    }

    #[test]
    fn strategic_merge_extensions_are_upstreams() {
        let spec = &definitions()["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(spec["containers"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let ports = &definitions()["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let strategy =
            &definitions()["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    }

    #[test]
    fn closure_follows_references() {
        let deployment = name_of("apps", "v1", "Deployment").unwrap();
        let c = closure([deployment]);
        assert!(c.contains("io.k8s.api.core.v1.SecurityContext"));
        assert!(c.contains("io.k8s.apimachinery.pkg.util.intstr.IntOrString"));
        assert!(!c.contains("io.k8s.api.rbac.v1.Role"));
    }

    #[test]
    fn v3_scalar_wrappers_are_one_of() {
        let name = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
        let v3 = definition_v3(name, &definitions()[name]);
        assert_eq!(
            v3,
            serde_json::json!({"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]})
        );
        let time = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
        assert_eq!(definition_v3(time, &definitions()[time])["type"], "string");
    }

    #[test]
    fn v3_wraps_described_references() {
        let spec = &definitions()["io.k8s.api.apps.v1.DeploymentSpec"];
        let v3 = to_v3(spec);
        let template = &v3["properties"]["template"];
        assert_eq!(
            template["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"
        );
        assert!(template.get("$ref").is_none() && template["description"].is_string());
        let pod_spec = to_v3(&definitions()["io.k8s.api.core.v1.PodSpec"]);
        assert_eq!(
            pod_spec["properties"]["containers"]["items"],
            serde_json::json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"})
        );
    }
}
