//! The review APIs, answered from the sandbox's own authorizer and nothing stored:
//! `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`) and
//! `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth can-i`),
//! SelfSubjectRulesReview (`kubectl auth can-i --list`), SubjectAccessReview and
//! LocalSubjectAccessReview.
//!
//! Accepts a POST of the review object (JSON, YAML, or protobuf as kubectl sends it:
//! `portcullis::k8s::review_proto`, shared with the proxy) by whoever RBAC lets create it
//! (`system:basic-user` lets everyone authenticated create the self-reviews); answers 201 with
//! the object and its `status`. Rejects: other methods (405), a rules review without
//! `spec.namespace` (400), an access review with neither or both attribute kinds (400),
//! unknown paths in these groups (404 page).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{
    gate, not_found_page,
    rbac::{self, Attrs, User},
    rest, IntoResponse as _, Sandbox,
};
use portcullis::{body::Body, k8s::Status};

/// Whether `group` is one of the review groups this module serves.
pub fn is_review(group: &str) -> bool {
    matches!(group, "authentication.k8s.io" | "authorization.k8s.io")
}

/// Serve `POST /apis/<group>/<version>/<rest>`.
pub async fn serve(
    sb: &Sandbox,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request<Incoming>,
) -> Response<Body> {
    let kind = match (group, version, rest) {
        ("authentication.k8s.io", "v1", ["selfsubjectreviews"]) => "SelfSubjectReview",
        ("authorization.k8s.io", "v1", ["selfsubjectaccessreviews"]) => "SelfSubjectAccessReview",
        ("authorization.k8s.io", "v1", ["selfsubjectrulesreviews"]) => "SelfSubjectRulesReview",
        ("authorization.k8s.io", "v1", ["subjectaccessreviews"]) => "SubjectAccessReview",
        ("authorization.k8s.io", "v1", ["namespaces", _, "localsubjectaccessreviews"]) => {
            "LocalSubjectAccessReview"
        }
        _ => return not_found_page(),
    };
    if req.method() != Method::POST {
        return rest::method_not_allowed();
    }
    let me = gate::user_of(&req);
    let url_ns = rest.get(1).copied().unwrap_or("").to_string();
    let result = async {
        let (ct, bytes) = rest::read_body(sb, req).await?;
        let protobuf = ct
            .as_deref()
            .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"));
        let mut obj = if protobuf {
            portcullis::k8s::review_proto::decode(&bytes).map_err(Status::unsupported_media_type)?
        } else {
            rest::decode(ct.as_deref(), &bytes)?
        };
        if !obj.is_object() {
            return Err(Status::bad_request(
                "the body of the request was not an object",
            ));
        }
        obj["apiVersion"] = json!(format!("{group}/v1"));
        obj["kind"] = json!(kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["creationTimestamp"] = Value::Null;
        obj["status"] = match kind {
            "SelfSubjectReview" => json!({"userInfo": me.to_json()}),
            "SelfSubjectAccessReview" => access(sb, &me, &obj["spec"])?,
            "SelfSubjectRulesReview" => rules(sb, &me, &obj["spec"])?,
            "LocalSubjectAccessReview" => {
                if obj["spec"]["resourceAttributes"]["namespace"]
                    .as_str()
                    .is_some_and(|n| n != url_ns)
                {
                    return Err(Status::bad_request(
                        "spec.resourceAttributes.namespace must match namespace",
                    ));
                }
                obj["spec"]["resourceAttributes"]["namespace"] = json!(url_ns);
                access(sb, &subject(&obj["spec"]), &obj["spec"])?
            }
            _ => access(sb, &subject(&obj["spec"]), &obj["spec"])?,
        };
        Ok(rest::json_response(
            StatusCode::CREATED,
            &obj,
            "application/json",
        ))
    }
    .await;
    result.unwrap_or_else(Status::into_response)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// The user a (Local)SubjectAccessReview asks about.
fn subject(spec: &Value) -> User {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    User {
        name: text(&spec["user"]),
        uid: text(&spec["uid"]),
        groups: list(&spec["groups"]),
        extra: spec["extra"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), list(v))).collect())
            .unwrap_or_default(),
    }
}

fn access(sb: &Sandbox, user: &User, spec: &Value) -> Result<Value, Status> {
    let (r, n) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let a = match (r.is_object(), n.is_object()) {
        (true, false) => Attrs {
            resource_request: true,
            verb: text(&r["verb"]),
            group: text(&r["group"]),
            version: text(&r["version"]),
            resource: text(&r["resource"]),
            subresource: text(&r["subresource"]),
            namespace: text(&r["namespace"]),
            name: text(&r["name"]),
            path: String::new(),
        },
        (false, true) => Attrs {
            verb: text(&n["verb"]),
            path: text(&n["path"]),
            ..Attrs::default()
        },
        _ => {
            return Err(Status::bad_request(
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    let d = rbac::authorize(&sb.store(), user, &a);
    let mut status = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    Ok(status)
}

fn rules(sb: &Sandbox, user: &User, spec: &Value) -> Result<Value, Status> {
    let ns = text(&spec["namespace"]);
    if ns.is_empty() {
        return Err(Status::bad_request("no namespace on request"));
    }
    let (applied, errors) = rbac::rules_for(&sb.store(), user, &ns);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for a in applied {
        let r = a.rule;
        if r["nonResourceURLs"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
        {
            non_resource_rules
                .push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
        } else {
            let mut rule = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"],
                "resources": r["resources"]});
            if r["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                rule["resourceNames"] = r["resourceNames"].clone();
            }
            resource_rules.push(rule);
        }
    }
    let mut status = json!({"resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules, "incomplete": !errors.is_empty()});
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok(status)
}
