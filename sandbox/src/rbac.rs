//! The sandbox's RBAC authorizer: kube-apiserver's `rbac` authorizer over the Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects in the store (plus the
//! `system:masters` short-cut of the privileged-group authorizer).
//!
//! Accepts: subjects `User`, `Group` and `ServiceAccount` (`system:serviceaccount:<ns>:<name>`,
//! the binding's namespace when the subject names none); rules with `apiGroups`, `resources`
//! (`res`, `res/sub`, `*`, `*/sub`), `verbs` (any, incl. `impersonate`, `*`), `resourceNames`
//! and `nonResourceURLs` (exact, `prefix*`, `*`). Denies (no opinion) everything no rule allows;
//! a binding whose role does not exist adds upstream's `RBAC: <role> not found` reason. The 403
//! itself is worded by the proxy's own `authz::forbidden` (kube-apiserver's bytes).
//! Not modelled: aggregated ClusterRoles and the escalate / bind checks on RBAC writes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{discovery, store::Store};
use portcullis::{
    authn::identity::{Identity, Method},
    k8s::{request::RequestInfo, Status},
    refusal::Refusal,
};

/// The all-powerful group (kube-apiserver's privileged group).
pub const MASTERS: &str = "system:masters";

/// Who a request runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user with these groups.
    pub fn new(name: &str, groups: &[&str]) -> User {
        User {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..User::default()
        }
    }

    /// `{username, uid, groups, extra}` as `authentication.k8s.io/v1` UserInfo.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// What is being asked (kube-apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    pub resource_request: bool,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Attrs {
    /// From the request classification the proxy also uses.
    pub fn from_info(i: &RequestInfo) -> Attrs {
        Attrs {
            resource_request: i.is_resource_request,
            verb: i.verb.clone(),
            group: i.api_group.clone(),
            version: i.api_version.clone(),
            resource: i.resource.clone(),
            subresource: i.subresource.clone(),
            namespace: i.namespace.clone(),
            name: i.name.clone(),
            path: i.path.clone(),
        }
    }

    fn to_info(&self) -> RequestInfo {
        RequestInfo {
            is_resource_request: self.resource_request,
            path: self.path.clone(),
            verb: self.verb.clone(),
            api_group: self.group.clone(),
            api_version: self.version.clone(),
            namespace: self.namespace.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            name: self.name.clone(),
            ..RequestInfo::default()
        }
    }
}

/// The answer: allowed or not, and the authorizer's reason (may be empty).
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// kube-apiserver's 403 for `user` asking `a`, with `reason` appended.
pub fn forbidden(user: &User, a: &Attrs, reason: &str) -> Status {
    let id = Identity {
        user: user.name.clone(),
        uid: user.uid.clone(),
        groups: user.groups.clone(),
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: Method::ClientCertificate {
            fingerprint: String::new(),
        },
    };
    let f = portcullis::authz::forbidden::forbidden(&id, &a.to_info(), reason);
    Refusal::Forbidden(Box::new(f)).status()
}

/// One rule that applies to a user, and where it came from (for reasons and rules reviews).
pub struct Applied {
    pub rule: Value,
    pub source: String,
}

fn objects(store: &Store, plural: &str, ns: Option<&str>) -> Vec<Value> {
    discovery::find("rbac.authorization.k8s.io", "v1", plural)
        .map(|d| store.list(d, ns))
        .unwrap_or_default()
}

fn object(store: &Store, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    let def = discovery::find("rbac.authorization.k8s.io", "v1", plural)?;
    store.get(def, ns, name).ok()
}

fn subject_matches(user: &User, s: &Value, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn binding_subject(s: &Value) -> String {
    let kind = s["kind"].as_str().unwrap_or("");
    let name = s["name"].as_str().unwrap_or("");
    match s["namespace"].as_str().filter(|n| !n.is_empty()) {
        Some(ns) if kind == "ServiceAccount" => format!("{kind} \"{ns}/{name}\""),
        _ => format!("{kind} \"{name}\""),
    }
}

/// Every rule bound to `user` at cluster scope and, when `ns` is non-empty, in `ns`; plus the
/// errors for bindings whose role is missing (upstream's `RBAC:` reason).
pub fn rules_for(store: &Store, user: &User, ns: &str) -> (Vec<Applied>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut bindings: Vec<(Value, &str)> = objects(store, "clusterrolebindings", None)
        .into_iter()
        .map(|b| (b, "ClusterRoleBinding"))
        .collect();
    if !ns.is_empty() {
        bindings.extend(
            objects(store, "rolebindings", Some(ns))
                .into_iter()
                .map(|b| (b, "RoleBinding")),
        );
    }
    for (b, bkind) in bindings {
        let bns = b["metadata"]["namespace"].as_str().unwrap_or("");
        let Some(subject) = b["subjects"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| subject_matches(user, s, bns)))
        else {
            continue;
        };
        let rkind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let rname = b["roleRef"]["name"].as_str().unwrap_or("");
        let role = match rkind {
            "ClusterRole" => object(store, "clusterroles", None, rname),
            "Role" if bkind == "RoleBinding" => object(store, "roles", Some(bns), rname),
            _ => None,
        };
        let Some(role) = role else {
            let plural = if rkind == "Role" {
                "role"
            } else {
                "clusterrole"
            };
            errors.push(format!(
                "{plural}.rbac.authorization.k8s.io \"{rname}\" not found"
            ));
            continue;
        };
        let bname = b["metadata"]["name"].as_str().unwrap_or("");
        let at = if bkind == "RoleBinding" {
            format!("RoleBinding \"{bname}/{bns}\"")
        } else {
            format!("ClusterRoleBinding \"{bname}\"")
        };
        let source = format!(
            "{at} of {rkind} \"{rname}\" to {}",
            binding_subject(subject)
        );
        for rule in role["rules"].as_array().into_iter().flatten() {
            out.push(Applied {
                rule: rule.clone(),
                source: source.clone(),
            });
        }
    }
    (out, errors)
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(v: &Value, want: &str) -> bool {
    strings(v).any(|s| s == "*" || s == want)
}

/// rbac/v1 `RuleAllows`.
pub fn rule_allows(a: &Attrs, rule: &Value) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if !a.resource_request {
        return strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*" || u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !has(&rule["apiGroups"], &a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|s| s == a.subresource))
    });
    let names = strings(&rule["resourceNames"]).collect::<Vec<_>>();
    resource_ok && (names.is_empty() || names.contains(&a.name.as_str()))
}

/// Decide `a` for `user`, as `system:masters` + RBAC would.
pub fn authorize(store: &Store, user: &User, a: &Attrs) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let (rules, errors) = rules_for(store, user, &a.namespace);
    if let Some(hit) = rules.iter().find(|r| rule_allows(a, &r.rule)) {
        return Decision {
            allowed: true,
            reason: format!("RBAC: allowed by {}", hit.source),
        };
    }
    Decision {
        allowed: false,
        reason: if errors.is_empty() {
            String::new()
        } else if errors.len() == 1 {
            format!("RBAC: {}", errors[0])
        } else {
            format!("RBAC: [{}]", errors.join(", "))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, ns: &str, name: &str) -> Attrs {
        Attrs {
            resource_request: true,
            verb: verb.into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Attrs::default()
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let r = json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get"], "resourceNames": ["p"]});
        assert!(rule_allows(&attrs("get", "", "pods", "", "x", "p"), &r));
        assert!(!rule_allows(&attrs("get", "", "pods", "", "x", "q"), &r));
        assert!(!rule_allows(&attrs("list", "", "pods", "", "x", "p"), &r));
        assert!(!rule_allows(&attrs("get", "", "pods", "log", "x", "p"), &r));
        assert!(rule_allows(
            &attrs("get", "", "services", "status", "x", "p"),
            &r
        ));
        assert!(!rule_allows(
            &attrs("get", "apps", "pods", "", "x", "p"),
            &r
        ));
        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &attrs("impersonate", "", "users", "", "", "a"),
            &star
        ));
        let nr = json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]});
        let mut a = Attrs {
            verb: "get".into(),
            path: "/apis/apps".into(),
            ..Attrs::default()
        };
        assert!(rule_allows(&a, &nr));
        a.path = "/metrics".into();
        assert!(!rule_allows(&a, &nr));
    }

    #[test]
    fn forbidden_wording() {
        let s = forbidden(
            &User::new("x", &[]),
            &attrs("list", "", "pods", "", "team-a", ""),
            "",
        );
        assert_eq!(s.code, 403);
        assert_eq!(
            s.message,
            r#"pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "team-a""#
        );
    }
}
