//! `/openapi/v2` as the protobuf kubectl asks for (`Accept:
//! application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's `openapi.v2.Document`
//! (google/gnostic `openapiv2/OpenAPIv2.proto`; field numbers below are that file's), encoded
//! from the JSON document `openapi` builds.
//!
//! Only what readers of the v2 protobuf use is carried: the definitions (type, format,
//! description, required, `$ref`, properties, items, additionalProperties, allOf and every
//! `x-` extension) and each path's PATCH operation (operationId, consumes, produces,
//! extensions); parameters and responses are left out. Extension values go in `Any.yaml`, written
//! as JSON, which is YAML. Nothing here is read from the network.

use prost::Message;
use serde_json::{Map, Value};

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct PathItem {
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
struct Operation {
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(string, repeated, tag = "6")]
    produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    consumes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

/// `oneof { Schema schema = 1; bool boolean = 2; }`; only the schema arm is ever written.
#[derive(Clone, PartialEq, Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// gnostic's `Any`: `google.protobuf.Any value = 1` (unused) and `string yaml = 2`.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Every `x-` key of an object, its value as YAML (JSON is YAML).
fn extensions(v: &Value) -> Vec<NamedAny> {
    let Some(m) = v.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, x)| NamedAny {
            name: k.clone(),
            value: Some(Any {
                yaml: serde_json::to_string(x).unwrap_or_default(),
            }),
        })
        .collect()
}

fn named(props: Option<&Map<String, Value>>) -> Vec<NamedSchema> {
    props
        .into_iter()
        .flatten()
        .map(|(name, s)| NamedSchema {
            name: name.clone(),
            value: Some(schema(s)),
        })
        .collect()
}

fn schema(v: &Value) -> Schema {
    Schema {
        r#ref: text(v, "$ref"),
        format: text(v, "format"),
        description: text(v, "description"),
        required: strings(v, "required"),
        additional_properties: v
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| {
                Box::new(AdditionalPropertiesItem {
                    schema: Some(schema(a)),
                })
            }),
        r#type: v.get("type").and_then(Value::as_str).map(|t| TypeItem {
            value: vec![t.to_string()],
        }),
        items: v.get("items").map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        all_of: v
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| Properties {
                additional_properties: named(Some(p)),
            }),
        vendor_extension: extensions(v),
    }
}

/// The protobuf form of the JSON v2 document `doc`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let paths = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, item)| NamedPathItem {
            name: name.clone(),
            value: Some(PathItem {
                patch: item.get("patch").map(|op| Operation {
                    operation_id: text(op, "operationId"),
                    produces: strings(op, "produces"),
                    consumes: strings(op, "consumes"),
                    vendor_extension: extensions(op),
                }),
            }),
        })
        .collect();
    Document {
        swagger: text(doc, "swagger"),
        info: Some(Info {
            title: text(&doc["info"], "title"),
            version: text(&doc["info"], "version"),
        }),
        paths: Some(Paths { path: paths }),
        definitions: Some(Definitions {
            additional_properties: named(doc["definitions"].as_object()),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_kubectl_reads() {
        let doc = serde_json::json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1"},
            "paths": {"/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {"patch": {
                "operationId": "patchDeployment",
                "consumes": ["application/strategic-merge-patch+json"],
                "x-kubernetes-group-version-kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            }}},
            "definitions": {"D": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {"$ref": "#/definitions/S", "description": "the spec"},
                    "list": {"type": "array", "items": {"$ref": "#/definitions/S"},
                             "x-kubernetes-patch-merge-key": "name"},
                },
                "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Deployment"}],
            }, "S": {"type": "object", "additionalProperties": {"type": "string"}}},
        });
        let back = Document::decode(encode(&doc).as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let defs = back.definitions.unwrap().additional_properties;
        let d = defs
            .iter()
            .find(|n| n.name == "D")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert_eq!(d.r#type.unwrap().value, ["object"]);
        assert_eq!(d.required, ["spec"]);
        assert_eq!(
            d.vendor_extension[0].value.as_ref().unwrap().yaml,
            r#"[{"group":"apps","kind":"Deployment","version":"v1"}]"#
        );
        let props = d.properties.unwrap().additional_properties;
        let spec = props
            .iter()
            .find(|p| p.name == "spec")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert_eq!(
            (spec.r#ref.as_str(), spec.description.as_str()),
            ("#/definitions/S", "the spec")
        );
        let list = props
            .iter()
            .find(|p| p.name == "list")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert_eq!(list.items.unwrap().schema[0].r#ref, "#/definitions/S");
        assert_eq!(
            list.vendor_extension[0].value.as_ref().unwrap().yaml,
            "\"name\""
        );
        let s = defs
            .iter()
            .find(|n| n.name == "S")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert!(s.additional_properties.unwrap().schema.is_some());
        let path = &back.paths.unwrap().path[0];
        let op = path.value.clone().unwrap().patch.unwrap();
        assert_eq!(op.consumes, ["application/strategic-merge-patch+json"]);
        assert_eq!(
            op.vendor_extension[0].name,
            "x-kubernetes-group-version-kind"
        );
    }
}
