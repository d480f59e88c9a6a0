//! Judging one parsed write: field rules, then Pod Security, on the object the API server
//! would store. Pure; the stage (`stage.rs`) does the I/O and fetches the current object when
//! [`needs_current`] says so.
//!
//! What is judged how:
//!
//! | body | object judged |
//! |---|---|
//! | create / update (`application/json`, `application/yaml`) | the body |
//! | JSON patch (RFC 6902) | the current object with the patch applied (`json-patch` crate) |
//! | merge patch (RFC 7386) | the current object with the patch merged |
//! | strategic merge patch | the current object merged per `merge.rs` (directives applied) |
//! | apply patch (server-side apply) | the applied configuration alone **and** merged onto the current object; both must pass |
//!
//! A patch that touches no pod spec and no pod annotations of a pod-bearing kind (a label, a
//! replica count) is not judged by Pod Security, as the apiserver only re-checks updates that
//! change the pod spec; nor is the current object fetched for it. Every patch that does touch
//! them is judged on the full result, so a pre-existing violation elsewhere in the spec refuses
//! it too (stricter than the apiserver, on purpose). The current object must be readable: if it
//! does not exist, JSON, merge and strategic patches get the 404 the apiserver would give and an
//! apply patch is judged as a create; if it cannot be read, the patch is refused.
//!
//! A judged JSON, merge or strategic patch is forwarded with the current object's
//! `resourceVersion` as a precondition (a leading `test` op, or `metadata.resourceVersion`), so
//! the apiserver applies it to exactly the object that was judged — a concurrent change makes it
//! fail with a conflict instead of producing an unjudged result.
//!
//! Rejects: Pod Security `enforce` violations and field-rule denials → 422 `Invalid`, one
//! `details.causes` entry per offending field; patches that cannot be applied → 422; unknown
//! strategic directives → 400. `warn` violations become `Warning` headers; `audit` violations
//! are returned for the audit record; stripped fields produce a warning.

use serde_json::{json, Value};

use super::{
    fields::{self, pointer_tokens, relate, Relation},
    merge::{self, Mode},
    parse::{BodyKind, Parsed},
    policy::{Modes, Sanitizer},
    pss::{self, PodBearing},
};
use crate::{
    authn::Identity,
    k8s::{request::RequestInfo, status::StatusCause},
    refusal::{BodyRefusal, Invalid, Refusal},
};

/// The current object, as far as the stage could learn it.
pub enum Current {
    /// Not fetched (not needed).
    NotFetched,
    Found(Value),
    /// The apiserver said 404.
    Absent,
}

/// A write that passed.
#[derive(Debug, Default)]
pub struct Judged {
    /// What to forward (canonicalized by the caller).
    pub body: Value,
    /// `Warning` header texts (warn-mode violations, stripped fields).
    pub warnings: Vec<String>,
    /// Audit-mode violations.
    pub audit: Vec<String>,
}

/// `resource` or `resource/subresource`, as PodSecurity and the rules see it.
pub fn resource_path(info: &RequestInfo) -> String {
    if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    }
}

fn pod_kind(info: &RequestInfo) -> Option<PodBearing> {
    PodBearing::from_group_resource(&info.api_group, &resource_path(info))
}

/// Paths (from the object root) whose change Pod Security judges: the pod spec and the pod
/// annotations (AppArmor, legacy seccomp).
fn pod_areas(kind: PodBearing) -> [Vec<&'static str>; 2] {
    let base = kind.template_path();
    let mut spec = base.to_vec();
    spec.push("spec");
    let mut ann = base.to_vec();
    ann.extend(["metadata", "annotations"]);
    [spec, ann]
}

/// Does a merge-shaped patch (merge, strategic, apply) reach `area`?
fn merge_touches(patch: &Value, area: &[&str]) -> bool {
    let mut v = patch;
    for key in area {
        let Some(m) = v.as_object() else {
            // A non-object replaces everything below it.
            return true;
        };
        if m.keys().any(|k| k.starts_with('$')) {
            return true;
        }
        match m.get(*key) {
            None => return false,
            Some(child) => v = child,
        }
    }
    true
}

fn json_patch_touches(ops: &Value, area: &[&str]) -> bool {
    let segs: Vec<fields::Seg> = area
        .iter()
        .map(|k| fields::Seg::Key((*k).to_owned()))
        .collect();
    ops.as_array().into_iter().flatten().any(|op| {
        ["path", "from"].iter().any(|k| {
            op.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|p| relate(&pointer_tokens(p), &segs) != Relation::Unrelated)
        })
    })
}

fn touches(kind: PodBearing, parsed: &Parsed) -> bool {
    pod_areas(kind).iter().any(|area| match parsed.kind {
        BodyKind::Object => true,
        BodyKind::JsonPatch => json_patch_touches(&parsed.value, area),
        _ => merge_touches(&parsed.value, area),
    })
}

/// Whether anything (Pod Security, a field rule) would judge a write of this resource by this
/// caller — a body that cannot be parsed (protobuf, CBOR) must then be refused.
pub fn would_judge(s: &Sanitizer, info: &RequestInfo, id: &Identity) -> bool {
    s.rules_for(info, id).next().is_some()
        || pod_kind(info).is_some() && s.modes_for(&info.namespace, id.tenant.as_deref()).any()
}

/// Whether judging this write needs the current object.
pub fn needs_current(s: &Sanitizer, info: &RequestInfo, id: &Identity, parsed: &Parsed) -> bool {
    let deny = s.rules_for(info, id).any(|r| !r.deny.is_empty());
    match (info.verb.as_str(), parsed.kind) {
        ("update", BodyKind::Object) => deny,
        ("patch", BodyKind::Object) | (_, BodyKind::Object) => false,
        ("patch", _) => {
            deny || pod_kind(info).is_some_and(|k| {
                s.modes_for(&info.namespace, id.tenant.as_deref()).any() && touches(k, parsed)
            })
        }
        _ => false,
    }
}

/// Judge `parsed`; `current` as fetched when [`needs_current`] was true.
pub fn judge(
    s: &Sanitizer,
    info: &RequestInfo,
    id: &Identity,
    mut parsed: Parsed,
    current: Current,
) -> Result<Judged, Refusal> {
    let kind = pod_kind(info);
    let rules: Vec<_> = s.rules_for(info, id).collect();
    let mut out = Judged::default();

    // 1. strip
    for rule in &rules {
        for path in &rule.strip {
            let Some(segs) = path.resolve(kind) else {
                continue;
            };
            let removed = match parsed.kind {
                BodyKind::JsonPatch => strip_json_patch(&mut parsed.value, &segs),
                _ => fields::strip(&mut parsed.value, &segs),
            };
            if removed {
                out.warnings
                    .push(format!("portcullis removed {} from the request", path.text));
            }
        }
    }

    // 2. the object(s) to judge
    let modes = match kind {
        Some(_) => s.modes_for(&info.namespace, id.tenant.as_deref()),
        None => Modes::default(),
    };
    let pss_needed = kind.is_some_and(|k| modes.any() && touches(k, &parsed));
    let deny_needed = rules.iter().any(|r| !r.deny.is_empty());
    let current_value = match &current {
        Current::Found(v) => Some(v),
        _ => None,
    };
    // Borrowed where the body itself is judged: no copy of the object on the common path.
    let mut judged: Vec<std::borrow::Cow<'_, Value>> = Vec::new();
    if pss_needed || deny_needed {
        match parsed.kind {
            BodyKind::Object => judged.push(std::borrow::Cow::Borrowed(&parsed.value)),
            patch_kind => {
                match (&current, patch_kind) {
                    (Current::Absent, BodyKind::ApplyPatch) => {}
                    (Current::Absent, _) => {
                        return Err(BodyRefusal::PatchTargetMissing {
                            resource: info.resource.clone(),
                            group: info.api_group.clone(),
                            name: info.name.clone(),
                        }
                        .into())
                    }
                    (Current::NotFetched, _) => {
                        // The stage fetches whenever needs_current says so; reaching here
                        // means it did not, and an unjudged patch must not pass.
                        return Err(BodyRefusal::Unjudged.into());
                    }
                    (Current::Found(cur), _) => {
                        judged.push(std::borrow::Cow::Owned(apply_patch(cur, &parsed, info)?));
                    }
                }
                if patch_kind == BodyKind::ApplyPatch {
                    // Server-side apply may remove fields this manager owned before; the
                    // applied configuration must stand on its own.
                    judged.push(std::borrow::Cow::Borrowed(&parsed.value));
                }
            }
        }
    }

    // 3. field denials
    let mut causes: Vec<StatusCause> = Vec::new();
    // Whether an enforced Pod Security level is among the causes (→ `Refusal::PodSecurity`).
    let mut pss_violated = false;
    for rule in &rules {
        for path in &rule.deny {
            let Some(segs) = path.resolve(kind) else {
                continue;
            };
            let before: Vec<(String, &Value)> = match (info.verb.as_str(), current_value) {
                ("update" | "patch", Some(cur)) => fields::present(cur, &segs),
                _ => Vec::new(),
            };
            for obj in &judged {
                for (at, v) in fields::present(obj, &segs) {
                    let unchanged = before.iter().any(|(p, old)| *p == at && *old == v);
                    if !unchanged && !causes.iter().any(|c| c.field == at) {
                        causes.push(StatusCause {
                            reason: "FieldValueForbidden".into(),
                            message: format!(
                                "Forbidden: may not be set by this client (portcullis field rule {})",
                                path.text
                            ),
                            field: at,
                        });
                    }
                }
            }
        }
    }

    // 4. Pod Security
    if pss_needed {
        let resource = resource_path(info);
        // Each distinct policy is evaluated once (warn often equals enforce or audit).
        let mut memo: Vec<(pss::Policy, Vec<pss::Violation>)> = Vec::new();
        let mut check = |policy: &pss::Policy| -> Vec<pss::Violation> {
            if let Some((_, v)) = memo.iter().find(|(p, _)| p == policy) {
                return v.clone();
            }
            let mut all: Vec<pss::Violation> = Vec::new();
            for obj in &judged {
                for v in pss::check_object(policy, &info.api_group, &resource, obj) {
                    if !all.iter().any(|x| x.field == v.field && x.check == v.check) {
                        all.push(v);
                    }
                }
            }
            memo.push((*policy, all.clone()));
            all
        };
        // A key that differs only in case from a field Pod Security reads is dropped by the
        // apiserver (case-sensitive since 1.11) but was read by older case-insensitive
        // decoders; it can only be an attempt to confuse a reader, so it is refused.
        for obj in &judged {
            let mut at = Vec::new();
            case_variants(obj, &mut at, &mut causes);
        }
        if let Some(p) = modes.enforce {
            for v in check(&p) {
                pss_violated = true;
                causes.push(StatusCause {
                    reason: "FieldValueForbidden".into(),
                    message: format!(
                        "Forbidden: violates PodSecurity \"{}:{}\": {}",
                        p.level, p.version, v.message
                    ),
                    field: v.field,
                });
            }
        }
        if let Some(p) = modes.warn {
            for v in check(&p) {
                out.warnings.push(format!(
                    "would violate PodSecurity \"{}:{}\": {}: {}",
                    p.level, p.version, v.field, v.message
                ));
            }
        }
        if let Some(p) = modes.audit {
            for v in check(&p) {
                out.audit.push(format!(
                    "violates PodSecurity \"{}:{}\": {}: {}",
                    p.level, p.version, v.field, v.message
                ));
            }
        }
    }

    if !causes.is_empty() {
        let kind_name = kind
            .map(|k| k.kind().to_owned())
            .or_else(|| {
                parsed
                    .value
                    .get("kind")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| info.resource.clone());
        let name = if info.name.is_empty() {
            parsed
                .value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            info.name.clone()
        };
        let invalid = Box::new(Invalid {
            kind: kind_name,
            group: info.api_group.clone(),
            name,
            causes,
        });
        return Err(if pss_violated {
            Refusal::PodSecurity(invalid)
        } else {
            BodyRefusal::FieldRules(invalid).into()
        });
    }

    // 5. pin the judged version
    if let (Some(cur), true) = (current_value, pss_needed || deny_needed) {
        if let Some(rv) = cur.pointer("/metadata/resourceVersion").cloned() {
            add_precondition(&mut parsed, rv);
        }
    }
    out.body = parsed.value;
    Ok(out)
}

fn apply_patch(cur: &Value, parsed: &Parsed, info: &RequestInfo) -> Result<Value, Refusal> {
    let mut result = cur.clone();
    let unprocessable = |why: String| {
        BodyRefusal::PatchDoesNotApply(format!(
            "the patch cannot be applied to the current {} {:?}: {why}",
            info.resource, info.name
        ))
    };
    match parsed.kind {
        BodyKind::JsonPatch => {
            let ops: json_patch::Patch = serde_json::from_value(parsed.value.clone())
                .map_err(|e| BodyRefusal::BadPatch(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut result, &ops).map_err(|e| unprocessable(e.to_string()))?;
        }
        BodyKind::MergePatch => json_patch::merge(&mut result, &parsed.value),
        BodyKind::StrategicMergePatch => merge::merge(&mut result, &parsed.value, Mode::Strategic)
            .map_err(|e| BodyRefusal::BadPatch(format!("strategic merge patch: {e}")))?,
        BodyKind::ApplyPatch => merge::merge(&mut result, &parsed.value, Mode::Apply)
            .map_err(|e| BodyRefusal::BadPatch(format!("apply patch: {e}")))?,
        BodyKind::Object => result = parsed.value.clone(),
    }
    Ok(result)
}

/// Drop JSON-patch operations that write at or under `segs`; strip the field from values
/// written above it. True when anything changed.
fn strip_json_patch(ops: &mut Value, segs: &[fields::Seg]) -> bool {
    let Some(list) = ops.as_array_mut() else {
        return false;
    };
    let before = list.len();
    let mut changed = false;
    list.retain_mut(|op| {
        let op_name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        if !matches!(op_name, "add" | "replace" | "move" | "copy") {
            return true;
        }
        let tokens = op
            .get("path")
            .and_then(Value::as_str)
            .map(pointer_tokens)
            .unwrap_or_default();
        match relate(&tokens, segs) {
            Relation::AtOrUnder => false,
            Relation::Above(n) => {
                if let Some(v) = op.get_mut("value") {
                    changed |= fields::strip(v, &segs[n..]);
                }
                true
            }
            Relation::Unrelated => true,
        }
    });
    changed || list.len() != before
}

fn add_precondition(parsed: &mut Parsed, rv: Value) {
    match parsed.kind {
        BodyKind::JsonPatch => {
            if let Some(list) = parsed.value.as_array_mut() {
                list.insert(
                    0,
                    json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
                );
            }
        }
        BodyKind::MergePatch | BodyKind::StrategicMergePatch => {
            if let Some(root) = parsed.value.as_object_mut() {
                let meta = root.entry("metadata").or_insert_with(|| json!({}));
                if let Some(m) = meta.as_object_mut() {
                    m.entry("resourceVersion").or_insert(rv);
                }
            }
        }
        BodyKind::ApplyPatch | BodyKind::Object => {}
    }
}

/// Field names Pod Security reads (and the path down to them); `LOWER_NAMES` is this table
/// lowered and sorted, which a test checks.
#[cfg(test)]
const PSS_NAMES: &[&str] = &[
    "spec",
    "template",
    "jobTemplate",
    "metadata",
    "annotations",
    "securityContext",
    "privileged",
    "hostPID",
    "hostIPC",
    "hostNetwork",
    "hostUsers",
    "hostPath",
    "hostPort",
    "hostProcess",
    "capabilities",
    "add",
    "drop",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile",
    "appArmorProfile",
    "seLinuxOptions",
    "windowsOptions",
    "procMount",
    "sysctls",
    "volumes",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "ports",
    "type",
    "user",
    "role",
    "os",
    "host",
    "httpGet",
    "tcpSocket",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "postStart",
    "preStop",
];

/// The PSS field name `k` differs from only in case, if any. Keys are lowered into a stack
/// buffer once and looked up in a sorted table: this runs for every key of every judged body.
fn case_variant_of(k: &str) -> Option<&'static str> {
    const MAX: usize = 26;
    let bytes = k.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return None;
    };
    // Almost every key is rejected here, by one table lookup.
    if k.len() > MAX
        || !BLOOM[bloom_slot(
            k.len(),
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase(),
        )]
    {
        return None;
    }
    let mut buf = [0u8; MAX];
    for (d, b) in buf.iter_mut().zip(k.bytes()) {
        *d = b.to_ascii_lowercase();
    }
    let lower = &buf[..k.len()];
    let i = LOWER_NAMES
        .binary_search_by(|(l, _)| l.as_bytes().cmp(lower))
        .ok()?;
    let real = LOWER_NAMES[i].1;
    (real != k).then_some(real)
}

const fn bloom_slot(len: usize, first: u8, last: u8) -> usize {
    (len * 31 + first as usize * 7 + last as usize) % 256
}

/// Slots of (length, first, last byte) of every lowered name.
const BLOOM: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < LOWER_NAMES.len() {
        let b = LOWER_NAMES[i].0.as_bytes();
        t[bloom_slot(b.len(), b[0], b[b.len() - 1])] = true;
        i += 1;
    }
    t
};

/// `PSS_NAMES` lowered, sorted by the lowered spelling (checked by a test).
const LOWER_NAMES: &[(&str, &str)] = &[
    ("add", "add"),
    ("allowprivilegeescalation", "allowPrivilegeEscalation"),
    ("annotations", "annotations"),
    ("apparmorprofile", "appArmorProfile"),
    ("capabilities", "capabilities"),
    ("containers", "containers"),
    ("drop", "drop"),
    ("ephemeralcontainers", "ephemeralContainers"),
    ("host", "host"),
    ("hostipc", "hostIPC"),
    ("hostnetwork", "hostNetwork"),
    ("hostpath", "hostPath"),
    ("hostpid", "hostPID"),
    ("hostport", "hostPort"),
    ("hostprocess", "hostProcess"),
    ("hostusers", "hostUsers"),
    ("httpget", "httpGet"),
    ("initcontainers", "initContainers"),
    ("jobtemplate", "jobTemplate"),
    ("lifecycle", "lifecycle"),
    ("livenessprobe", "livenessProbe"),
    ("metadata", "metadata"),
    ("os", "os"),
    ("ports", "ports"),
    ("poststart", "postStart"),
    ("prestop", "preStop"),
    ("privileged", "privileged"),
    ("procmount", "procMount"),
    ("readinessprobe", "readinessProbe"),
    ("role", "role"),
    ("runasnonroot", "runAsNonRoot"),
    ("runasuser", "runAsUser"),
    ("seccompprofile", "seccompProfile"),
    ("securitycontext", "securityContext"),
    ("selinuxoptions", "seLinuxOptions"),
    ("spec", "spec"),
    ("startupprobe", "startupProbe"),
    ("sysctls", "sysctls"),
    ("tcpsocket", "tcpSocket"),
    ("template", "template"),
    ("type", "type"),
    ("user", "user"),
    ("volumes", "volumes"),
    ("windowsoptions", "windowsOptions"),
];

/// Maps whose keys are data, not field names.
const FREE_FORM: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "limits",
    "requests",
    "overhead",
    "volumeAttributes",
    "options",
    "matchLabels",
    "data",
    "stringData",
    "binaryData",
];

fn case_variants<'a>(v: &'a Value, at: &mut Vec<PathSeg<'a>>, causes: &mut Vec<StatusCause>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(PathSeg::Key(k));
                if let Some(real) = case_variant_of(k) {
                    causes.push(StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: {k:?} differs only in case from the field {real:?}; field names are case-sensitive"
                        ),
                        field: render(at),
                    });
                }
                if (child.is_object() || child.is_array()) && !FREE_FORM.contains(&k.as_str()) {
                    case_variants(child, at, causes);
                }
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(PathSeg::Index(i));
                case_variants(item, at, causes);
                at.pop();
            }
        }
        _ => {}
    }
}

/// A path kept as borrowed segments while walking; rendered only when reported.
enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

fn render(at: &[PathSeg<'_>]) -> String {
    let mut out = String::new();
    for seg in at {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variant_table_matches_the_names() {
        let mut want: Vec<(String, &str)> = PSS_NAMES
            .iter()
            .map(|n| (n.to_ascii_lowercase(), *n))
            .collect();
        want.sort();
        want.dedup();
        let got: Vec<(String, &str)> = LOWER_NAMES
            .iter()
            .map(|(l, n)| (l.to_string(), *n))
            .collect();
        assert_eq!(got, want);
        assert_eq!(case_variant_of("Privileged"), Some("privileged"));
        assert_eq!(case_variant_of("HOSTPID"), Some("hostPID"));
        assert_eq!(case_variant_of("hostPID"), None);
        assert_eq!(case_variant_of("image"), None);
        assert_eq!(case_variant_of(""), None);
    }
}
