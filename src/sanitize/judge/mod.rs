//! Judging one parsed write: field rules, then Pod Security, on the object the API server
//! would store. Pure; the stage (`stage.rs`) does the I/O and fetches the current object when
//! [`needs_current`] says so.
//!
//! What is judged how:
//!
//! | body | object judged |
//! |---|---|
//! | create / update (`application/json`, `application/yaml`) | the body |
//! | JSON patch (RFC 6902) | the current object with the patch applied (`json-patch` crate), its array indices first written as the plain index kube-apiserver reads them as (`+0`, `00`, negative from the end; `patch.rs`) |
//! | merge patch (RFC 7386) | the current object with the patch merged |
//! | strategic merge patch | the current object merged per `merge.rs` (directives applied) |
//! | apply patch (server-side apply) | merged onto the current object; for a manager that applied the object before, also merged onto the worst case of what the re-apply may leave of the current object (every value that satisfies a check removed wherever it may go, read from `managedFields`; `reapply.rs`); and the applied configuration alone — at the enforced level when it creates the object, at most at `baseline` when the object exists (a partial apply by another manager need not repeat what `restricted` requires to be set: the fields stay; a value it sets that `baseline` forbids is still refused, whatever the merge model says) — all must pass |
//!
//! A patch that touches no pod spec and no pod annotations of a pod-bearing kind (a label, a
//! replica count) is not judged by Pod Security, as the apiserver only re-checks updates that
//! change the pod spec; nor is the current object fetched for it. Every patch that does touch
//! them is judged on the full result, so a pre-existing violation elsewhere in the spec refuses
//! it too (stricter than the apiserver, on purpose). The current object must be readable: if it
//! does not exist, JSON, merge and strategic patches get the 404 the apiserver would give and an
//! apply patch is judged as a create; if it cannot be read, the patch is refused.
//!
//! A judged patch of an existing object (JSON, merge, strategic, apply) is forwarded with the
//! current object's `resourceVersion` as a precondition (`metadata.resourceVersion`, set by a
//! last `add` op in a JSON patch), so the apiserver applies it to exactly the object that was
//! judged — a concurrent change makes it fail with a conflict instead of producing an unjudged
//! result. A client's own version other than the judged one is 409 `Conflict` (`patch.rs`).
//!
//! Rejects: Pod Security `enforce` violations → 403 `Forbidden` in PodSecurity admission's
//! words (`pods "x" is forbidden: violates PodSecurity "restricted:latest": …`; for the other
//! pod-bearing kinds the same, naming the template), one `details.causes` entry per offending
//! field; field-rule denials and keys differing only in case from a Pod Security field → 422
//! `Invalid`, one cause per field; patches that cannot be applied → 422; unknown strategic
//! directives → 400. `warn` violations become one `Warning` per level, `audit` violations the
//! audit annotation, both as PodSecurity words them (`would violate PodSecurity "…": …`);
//! stripped fields produce a warning.
//!
//! Parts: `patch.rs` computes what a patch produces and pins it; `case.rs` refuses keys that
//! differ only in case from a field Pod Security reads.

mod case;
mod patch;
mod reapply;
#[cfg(test)]
mod tests;
pub(crate) use reapply::may_remove_field;

use case::case_variant_causes;
pub(crate) use patch::pin_uid;
use patch::{add_precondition, apply_patch, strip_json_patch};

use std::borrow::Cow;

use serde_json::Value;

use super::{
    fields::{self, pointer_tokens, relate, Relation},
    parse::{BodyKind, Parsed},
    policy::{Applied, FieldRule, Sanitizer},
    pss::{self, PodBearing},
    token_secret::{self, TokenSecrets},
};
use crate::{
    authn::Identity,
    k8s::{request::RequestInfo, status::StatusCause},
    refusal::{BodyRefusal, Invalid, PodSecurityDenial, Refusal},
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
    /// The rules' paths of the fields a strip rule removed (that held something).
    pub stripped: Vec<String>,
    /// The preconditions the proxy (not the client) added to the body.
    pub pins: Pins,
}

/// Whether Pod Security got to a write, for PodSecurity's `enforce-policy` audit annotation,
/// which its admission writes only where it got: set by [`judge`] before anything it refuses
/// for, so a refusal after it (a field rule) keeps it, as the API server's event would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PssSeen {
    /// Not reached: not a pod-bearing kind, or nothing Pod Security checks changed.
    #[default]
    No,
    /// Judged under a policy.
    Evaluated,
    /// A pod write where every policy is privileged: PodSecurity's shortcut, which still
    /// writes `privileged:latest`, whatever changed.
    PrivilegedPod,
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

/// Whether a stored object of `kind` is a pod with `hostUsers` set (`hostUsersInUse`: not
/// null). Only a pod: the API server keeps the field on a stored workload's template too, but
/// each pod its controller makes from it is a new pod, whose `hostUsers` is dropped with the
/// gate off (`dropDisabledPodFields` with no old pod) — trusting the template's field would let
/// `runAsUser: 0` through to pods running as root in the host user namespace.
fn stores_host_users(kind: PodBearing, stored: &Value) -> bool {
    kind == PodBearing::Pod
        && pss::pod_specs(kind, stored)
            .iter()
            .any(|p| p.spec.get("hostUsers").is_some_and(|v| !v.is_null()))
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
    json_patch_ops_relate(ops, area, |_, relation| relation != Relation::Unrelated)
}

/// Whether `judge` says yes for the `path` or `from` of any op of a JSON patch, given its
/// tokens and how they relate to `area`.
fn json_patch_ops_relate(
    ops: &Value,
    area: &[&str],
    judge: impl Fn(&[String], Relation) -> bool,
) -> bool {
    let segs: Vec<fields::Seg> = area
        .iter()
        .map(|k| fields::Seg::Key((*k).to_owned()))
        .collect();
    ops.as_array().into_iter().flatten().any(|op| {
        ["path", "from"].iter().any(|k| {
            op.get(*k).and_then(Value::as_str).is_some_and(|p| {
                let tokens = pointer_tokens(p);
                let relation = relate(&tokens, &segs);
                judge(&tokens, relation)
            })
        })
    })
}

fn touches(kind: PodBearing, parsed: &Parsed) -> bool {
    let [spec, annotations] = pod_areas(kind);
    match parsed.kind {
        BodyKind::Object => true,
        BodyKind::JsonPatch => {
            json_patch_touches(&parsed.value, &spec)
                || json_patch_touches_annotations(&parsed.value, &annotations)
        }
        _ => {
            merge_touches(&parsed.value, &spec)
                || merge_touches_annotations(&parsed.value, &annotations)
        }
    }
}

/// The pod annotations Pod Security reads (legacy seccomp, AppArmor): a patch of any other
/// annotation (`kubectl annotate pod web safe-to-evict=true`) is not re-judged, as
/// PodSecurity's own `isSignificantPodUpdate` does not re-check such an update either.
fn pss_annotation(key: &str) -> bool {
    key == "seccomp.security.alpha.kubernetes.io/pod"
        || key.starts_with("container.seccomp.security.alpha.kubernetes.io/")
        || key.starts_with("container.apparmor.security.beta.kubernetes.io/")
}

/// Does a merge-shaped patch set a [`pss_annotation`] at `area` (or replace the map)?
fn merge_touches_annotations(patch: &Value, area: &[&str]) -> bool {
    if !merge_touches(patch, area) {
        return false;
    }
    let mut v = patch;
    for key in area {
        match v.as_object().and_then(|m| m.get(*key)) {
            Some(child) => v = child,
            // `merge_touches` said yes above the map (a directive, a replaced parent).
            None => return true,
        }
    }
    match v.as_object() {
        Some(m) => m.keys().any(|k| k.starts_with('$') || pss_annotation(k)),
        None => true,
    }
}

/// Does a JSON patch write (or move from) a [`pss_annotation`], the annotations map whole, or
/// something above it?
fn json_patch_touches_annotations(ops: &Value, area: &[&str]) -> bool {
    json_patch_ops_relate(ops, area, |tokens, relation| match relation {
        Relation::Unrelated => false,
        Relation::Above(_) => true,
        Relation::AtOrUnder => tokens.get(area.len()).is_none_or(|k| pss_annotation(k)),
    })
}

/// Whether anything (Pod Security, a field rule, the token-Secret check when `tokens`) would
/// judge a write of this resource by this caller — a body that cannot be parsed (protobuf,
/// CBOR) must then be refused.
pub fn would_judge(s: &Sanitizer, info: &RequestInfo, id: &Identity, tokens: bool) -> bool {
    tokens
        || s.rules_for(info, id).next().is_some()
        || pod_kind(info).is_some() && s.modes_for(&info.namespace, id.tenant.as_deref()).any()
}

/// Whether judging this write needs the current object (`tokens`: the token-Secret check
/// applies, which judges what a patch produces).
pub fn needs_current(
    s: &Sanitizer,
    info: &RequestInfo,
    id: &Identity,
    parsed: &Parsed,
    tokens: bool,
) -> bool {
    let deny = s.rules_for(info, id).any(|r| !r.deny.is_empty());
    // `pods/ephemeralcontainers` keeps only the body's ephemeral containers: the stored pod
    // is what is judged (`objects_to_judge`).
    let ephemeral =
        is_ephemeral_containers(info) && s.modes_for(&info.namespace, id.tenant.as_deref()).any();
    let tokens = tokens && token_relevant(parsed);
    // An update of a pod setting `hostUsers: false` where it is not trusted by configuration:
    // trusted after all if the stored pod has the field (the API server keeps it there; see
    // `stores_host_users` for why only a pod).
    let host_users = || {
        pod_kind(info).is_some_and(|k| {
            k == PodBearing::Pod
                && s.modes_for(&info.namespace, id.tenant.as_deref())
                    .host_users_may_be_kept(k, &parsed.value)
        })
    };
    match (info.verb.as_str(), parsed.kind) {
        ("update", BodyKind::Object) => deny || ephemeral || tokens || host_users(),
        ("patch", BodyKind::Object) | (_, BodyKind::Object) => false,
        ("patch", _) => {
            deny || tokens
                || pod_kind(info).is_some_and(|k| {
                    s.modes_for(&info.namespace, id.tenant.as_deref()).any()
                        // A re-apply may remove pod fields it does not mention (`reapply.rs`):
                        // whether it is one, the current object's managedFields say.
                        && (touches(k, parsed) || parsed.kind == BodyKind::ApplyPatch)
                })
        }
        _ => false,
    }
}

/// Whether this update can be judged on its body alone when the current object cannot be
/// read: an update's body is the whole object, and without the current one every denied field
/// and token Secret in it counts as new. Not `pods/ephemeralcontainers`, which is judged on the
/// stored pod.
pub fn judges_update_without_current(info: &RequestInfo, parsed: &Parsed) -> bool {
    info.verb == "update" && parsed.kind == BodyKind::Object && !is_ephemeral_containers(info)
}

/// Whether a Secret write can make, re-point or re-activate a token Secret: an object that is
/// one or names a service account, a patch reaching `type`, the annotations or the label that
/// invalidates a token, and every server-side apply — one that does not mention the label
/// still removes it when its manager applied it before (only the current object's
/// `managedFields` say).
fn token_relevant(parsed: &Parsed) -> bool {
    let areas: [&[&str]; 3] = [
        &["type"],
        &["metadata", "annotations"],
        &["metadata", "labels", token_secret::INVALID_SINCE],
    ];
    match parsed.kind {
        BodyKind::Object => {
            parsed.value.get("type").and_then(Value::as_str) == Some(token_secret::TOKEN_TYPE)
                || parsed
                    .value
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(token_secret::SERVICE_ACCOUNT))
                    .is_some()
        }
        BodyKind::ApplyPatch => true,
        BodyKind::JsonPatch => areas.iter().any(|a| json_patch_touches(&parsed.value, a)),
        _ => areas.iter().any(|a| merge_touches(&parsed.value, a)),
    }
}

/// Judge `parsed`; `current` as fetched when [`needs_current`] was true; `tokens` when the
/// authorize layer marked the write for the token-Secret check; `field_manager` the request's
/// `fieldManager` (a server-side apply's manager).
pub fn judge(
    s: &Sanitizer,
    info: &RequestInfo,
    id: &Identity,
    parsed: Parsed,
    current: Current,
    tokens: Option<&TokenSecrets>,
    field_manager: Option<&str>,
) -> Result<Judged, Refusal> {
    let mut seen = PssSeen::No;
    judge_seen(
        s,
        info,
        id,
        parsed,
        current,
        (tokens, field_manager),
        &mut seen,
    )
}

/// [`judge`], telling `seen` whether Pod Security got to the write (also when it refuses).
pub fn judge_seen(
    s: &Sanitizer,
    info: &RequestInfo,
    id: &Identity,
    mut parsed: Parsed,
    current: Current,
    (tokens, field_manager): (Option<&TokenSecrets>, Option<&str>),
    seen: &mut PssSeen,
) -> Result<Judged, Refusal> {
    let kind = pod_kind(info);
    let rules: Vec<_> = s.rules_for(info, id).collect();
    let mut out = Judged::default();

    // 1. strip (a strip rule matches an index however it is spelled, `fields.rs`)
    strip_fields(&rules, kind, &mut parsed, &mut out);

    // 1b. a JSON patch's array indices written as the API server reads them (`patch.rs`), so
    // that everything below — and the API server — reads the same plain patch. Indices
    // counted on the object read hold only on that object: such a patch is pinned to it.
    let mut rewritten = false;
    if let (BodyKind::JsonPatch, Current::Found(cur)) = (parsed.kind, &current) {
        if let Some(plain) = patch::plain_indices(cur, &parsed, info)? {
            parsed.value = plain;
            rewritten = true;
        }
    }

    // 2. the object(s) to judge
    let current_value = match &current {
        Current::Found(v) => Some(v),
        _ => None,
    };
    let modes = match kind {
        Some(k) => {
            let modes = s.modes_for(&info.namespace, id.tenant.as_deref());
            // The API server keeps `hostUsers` on an object that has it (`hostUsersInUse`),
            // whatever its feature gate: there the field is trusted.
            if current_value.is_some_and(|c| stores_host_users(k, c)) {
                modes.trusting_host_users()
            } else {
                modes
            }
        }
        None => Applied::default(),
    };
    let reapply = parsed.kind == BodyKind::ApplyPatch
        && current_value
            .zip(field_manager)
            .is_some_and(|(cur, m)| reapply::reapplies(cur, m));
    let pss_needed = kind.is_some_and(|k| modes.any() && (reapply || touches(k, &parsed)));
    *seen = if pss_needed {
        PssSeen::Evaluated
    } else if kind == Some(PodBearing::Pod) && !modes.any() {
        PssSeen::PrivilegedPod
    } else {
        PssSeen::No
    };
    let deny_needed = rules.iter().any(|r| !r.deny.is_empty());
    // Only a write that can make or re-point a token Secret is checked (and pinned).
    let tokens = tokens.filter(|_| token_relevant(&parsed));
    let (judged, partial) = if pss_needed || deny_needed || tokens.is_some() {
        objects_to_judge(&parsed, &current, info, field_manager)?
    } else {
        (Vec::new(), None)
    };

    // 2b. a token Secret: the TokenRequest it amounts to must be allowed (403).
    if let Some(t) = tokens {
        t.check(&judged, current_value, info, id)?;
        // What the write stores is the first object judged (the body of an update, the
        // current object patched); a re-apply may also remove what its manager applied.
        if let (Some(cur), Some(result)) = (current_value, judged.first()) {
            let reapplying = (parsed.kind == BodyKind::ApplyPatch)
                .then_some(field_manager)
                .flatten()
                .map(|m| (&parsed.value, m));
            t.check_reactivation(cur, result, reapplying, info, id)?;
        }
    }

    // 3. field denials
    let mut causes = field_denials(&rules, kind, info, current_value, &judged);
    if kind == Some(PodBearing::ControllerRevision) && (pss_needed || deny_needed) {
        causes.extend(judged.iter().filter_map(|o| revision_unjudgeable(o)));
    }

    // 4. Pod Security: the enforced level's violations, if any (→ `Refusal::PodSecurity`).
    let enforced = if pss_needed {
        pod_security(modes, info, &judged, partial, &mut causes, &mut out)
    } else {
        None
    };

    if !causes.is_empty() {
        return Err(refusal(kind, info, &parsed.value, causes, enforced));
    }

    // 5. pin the judged version (and, for an apply judged alone at most at baseline, the
    // object's uid). Every apply of a pod-bearing kind under a policy is pinned,
    // judged or not: what it changes depends on the managers recorded in the object
    // (`reapply.rs`), and a write landing between the read and the apply could change them.
    let apply_under_policy = parsed.kind == BodyKind::ApplyPatch && kind.is_some() && modes.any();
    if let (Some(cur), true) = (
        current_value,
        pss_needed || deny_needed || tokens.is_some() || apply_under_policy || rewritten,
    ) {
        if let Some(rv) = cur.pointer("/metadata/resourceVersion").cloned() {
            out.pins.version = add_precondition(&mut parsed, rv, info)?;
        }
        if partial.is_some() {
            // The configuration alone was judged at most at baseline, which holds only if the
            // apply lands on the object read: were it deleted meanwhile, the API server would
            // create one from the configuration (its create path compares no
            // resourceVersion). A uid names it; the API server answers an apply naming a uid
            // that finds no object 409 (`patch.go`: "uid mismatch … no existing object was
            // found"). A uid the configuration names itself stays (`pin_uid`).
            if let (Some(uid), Some(meta)) = (
                cur.pointer("/metadata/uid").cloned(),
                parsed
                    .value
                    .as_object_mut()
                    .and_then(|root| root.get_mut("metadata"))
                    .and_then(Value::as_object_mut),
            ) {
                out.pins.uid = pin_uid(meta, uid);
            }
        }
    }
    out.body = parsed.value;
    Ok(out)
}

/// Removes every field the rules strip, with a warning (and its path in `stripped`, for the
/// audit event) for each one that was there.
fn strip_fields(
    rules: &[&FieldRule],
    kind: Option<PodBearing>,
    parsed: &mut Parsed,
    out: &mut Judged,
) {
    for rule in rules {
        for path in &rule.strip {
            let Some(segs) = path.resolve(kind) else {
                continue;
            };
            // An empty value removed (client-go's JSON of a typed Pod always carries
            // `"status": {}`: Go's `omitempty` keeps structs) changes nothing worth a `Warning`
            // on every create.
            let said_something = parsed.kind == BodyKind::JsonPatch
                || fields::present(&parsed.value, &segs)
                    .iter()
                    .any(|(_, _, v)| !is_empty_value(v));
            let removed = match parsed.kind {
                BodyKind::JsonPatch => strip_json_patch(&mut parsed.value, &segs),
                _ => fields::strip(&mut parsed.value, &segs),
            };
            if removed && said_something {
                out.warnings
                    .push(format!("portcullis removed {} from the request", path.text));
                out.stripped.push(path.text.clone());
            }
        }
    }
}

/// `{}`, `[]` or `""` (null is never present).
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The API server's 404 for a write of an object that does not exist.
fn missing(info: &RequestInfo) -> Refusal {
    BodyRefusal::PatchTargetMissing {
        resource: info.resource.clone(),
        group: info.api_group.clone(),
        name: info.name.clone(),
    }
    .into()
}

/// `pods/ephemeralcontainers`: of what it is sent, the API server keeps only
/// `spec.ephemeralContainers` (`dropNonEphemeralContainerUpdates`).
fn is_ephemeral_containers(info: &RequestInfo) -> bool {
    info.api_group.is_empty()
        && info.resource == "pods"
        && info.subresource == "ephemeralcontainers"
}

/// The preconditions the proxy added to a judged write (not the client's): a 409 on one of
/// them is the proxy's doing, judged again and retried (`layer.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pins {
    /// The judged `resourceVersion`: "the object has been modified".
    pub version: bool,
    /// The judged object's `uid`: "uid mismatch … no existing object was found" (deleted
    /// since it was read; judged again, as the create the write now is).
    pub uid: bool,
}

/// The object(s) the write would store: the body itself, or the patch applied to the current
/// object (and, for an apply patch, the applied configuration alone as well: its index is
/// returned when the object exists, for Pod Security to judge it at most at `baseline`, see
/// the module doc). Borrowed where
/// the body itself is judged: no copy of the object on the common path. For
/// `pods/ephemeralcontainers`, the current pod with only its ephemeral containers replaced:
/// pod-level fields in the body (`spec.os`, `hostUsers`, a pod security context) would
/// otherwise exempt or excuse containers the stored pod does not.
fn objects_to_judge<'a>(
    parsed: &'a Parsed,
    current: &Current,
    info: &RequestInfo,
    field_manager: Option<&str>,
) -> Result<(Vec<Cow<'a, Value>>, Option<usize>), Refusal> {
    let mut judged: Vec<Cow<'a, Value>> = Vec::new();
    let mut partial = None;
    match parsed.kind {
        BodyKind::Object => judged.push(Cow::Borrowed(&parsed.value)),
        patch_kind => {
            match (current, patch_kind) {
                (Current::Absent, BodyKind::ApplyPatch) => {}
                (Current::Absent, _) => return Err(missing(info)),
                (Current::NotFetched, _) => {
                    // The stage fetches whenever needs_current says so; reaching here
                    // means it did not, and an unjudged patch must not pass.
                    return Err(BodyRefusal::Unjudged.into());
                }
                (Current::Found(cur), _) => {
                    judged.push(Cow::Owned(apply_patch(cur, parsed, info)?));
                    // A re-apply may remove what its manager applied before (`reapply.rs`).
                    if let (BodyKind::ApplyPatch, Some(kind), Some(manager)) =
                        (patch_kind, pod_kind(info), field_manager)
                    {
                        if reapply::reapplies(cur, manager) {
                            let reduced =
                                reapply::without_removed(cur, &parsed.value, kind, manager);
                            judged.push(Cow::Owned(apply_patch(&reduced, parsed, info)?));
                        }
                    }
                }
            }
            if patch_kind == BodyKind::ApplyPatch {
                // What the configuration sets must pass on its own too, whatever the merge
                // model makes of it; what it leaves out only matters for a create.
                if matches!(current, Current::Found(_)) {
                    partial = Some(judged.len());
                }
                judged.push(Cow::Borrowed(&parsed.value));
            }
        }
    }
    if is_ephemeral_containers(info) {
        let cur = match current {
            Current::Found(cur) => cur,
            // No such pod: the API server's answer.
            Current::Absent => return Err(missing(info)),
            // needs_current asked for it; judging the body alone would trust its pod fields.
            Current::NotFetched => return Err(BodyRefusal::Unjudged.into()),
        };
        judged = judged
            .into_iter()
            .map(|sent| {
                let mut stored = cur.clone();
                match sent.pointer("/spec/ephemeralContainers") {
                    Some(ec) => stored["spec"]["ephemeralContainers"] = ec.clone(),
                    None => {
                        if let Some(spec) = stored.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("ephemeralContainers");
                        }
                    }
                }
                Cow::Owned(stored)
            })
            .collect();
    }
    Ok((judged, partial))
}

/// One cause per field a deny rule forbids that the write sets or changes (a value an update
/// or patch leaves as it was is not a cause).
fn field_denials(
    rules: &[&FieldRule],
    kind: Option<PodBearing>,
    info: &RequestInfo,
    current_value: Option<&Value>,
    judged: &[Cow<'_, Value>],
) -> Vec<StatusCause> {
    let mut causes: Vec<StatusCause> = Vec::new();
    for rule in rules {
        for path in &rule.deny {
            let Some(segs) = path.resolve(kind) else {
                continue;
            };
            // Unchanged means the same value in the same element: a container replaced by
            // another at the same index (a JSON patch `replace /…/containers/0`) carrying the
            // same denied value is a new field, not the old one left alone.
            let before: Vec<(String, String, &Value)> = match (info.verb.as_str(), current_value) {
                ("update" | "patch", Some(cur)) => fields::present(cur, &segs),
                _ => Vec::new(),
            };
            // By element id, and the fields already refused: lookups, not scans (thousands
            // of containers made this quadratic).
            let mut was: std::collections::HashMap<&str, Vec<&Value>> =
                std::collections::HashMap::new();
            for (_, id, old) in &before {
                was.entry(id.as_str()).or_default().push(old);
            }
            let mut refused: std::collections::HashSet<String> =
                causes.iter().map(|c| c.field.clone()).collect();
            for obj in judged {
                for (at, id, v) in fields::present(obj, &segs) {
                    let unchanged = was.get(id.as_str()).is_some_and(|olds| olds.contains(&v));
                    if !unchanged && refused.insert(at.clone()) {
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
    causes
}

/// Most containers (of every kind together) in one pod spec Pod Security judges.
const MAX_CONTAINERS: usize = 1000;

/// Pod Security on the judged objects: enforce violations and case-variant keys become causes,
/// warn violations a warning, audit violations an audit note. The enforced policy the refusal
/// names and its violations, when one was violated.
///
/// A mode may apply two policies (a namespace's and a tenant's, `policy.rs`): the pod must pass
/// every enforced one. The refusal names the first violated, in [`Policies`] order (the stricter
/// level first); each field a later policy finds and an earlier one did not is a cause too,
/// worded with the later policy's name. Warn and audit report each policy as PodSecurity words
/// one level (`would violate PodSecurity "<level>:<version>": …`); a later policy only when it
/// finds a field the earlier ones did not (`restricted:latest` already reports every field
/// `baseline:latest` would).
///
/// [`Policies`]: super::policy::Policies
fn pod_security(
    modes: Applied,
    info: &RequestInfo,
    judged: &[Cow<'_, Value>],
    partial: Option<usize>,
    causes: &mut Vec<StatusCause>,
    out: &mut Judged,
) -> Option<(pss::Policy, Vec<pss::Violation>)> {
    let resource = resource_path(info);
    // A pod spec of more containers than any real pod has is refused before it is judged:
    // every container can fail several checks, and each failure is kept and worded, so a
    // 3 MiB body of a million empty containers would cost gigabytes to refuse.
    let oversized = judged
        .iter()
        .find_map(|obj| pss::oversized(&info.api_group, &resource, obj, MAX_CONTAINERS));
    if let Some((field, n)) = oversized {
        causes.push(StatusCause {
            reason: "FieldValueTooMany".into(),
            message: format!(
                "Too many: {n}: must have at most {MAX_CONTAINERS} containers, init containers and ephemeral containers together to be judged"
            ),
            field,
        });
        return None;
    }
    // Each distinct policy is evaluated once (warn often equals enforce or audit).
    let mut memo: Vec<(pss::Policy, Vec<pss::Violation>)> = Vec::new();
    let mut check = |policy: &pss::Policy| -> Vec<pss::Violation> {
        if let Some((_, v)) = memo.iter().find(|(p, _)| p == policy) {
            return v.clone();
        }
        let mut all: Vec<pss::Violation> = Vec::new();
        // (field, check) pairs already listed: a set, not a scan of the list per violation
        // (a pod of thousands of containers made that quadratic).
        let mut seen: std::collections::HashSet<(String, &'static str)> =
            std::collections::HashSet::new();
        for (i, obj) in judged.iter().enumerate() {
            // An apply's configuration alone, against an existing object: at most baseline.
            let mut policy = *policy;
            if partial == Some(i) && policy.level == pss::Level::Restricted {
                policy.level = pss::Level::Baseline;
            }
            for v in pss::check_object(&policy, &info.api_group, &resource, obj) {
                if seen.insert((v.field.clone(), v.check)) {
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
    for obj in judged {
        case_variant_causes(obj, causes);
    }
    let mut enforced = None;
    // Fields an earlier policy of the mode already reported.
    let mut reported: std::collections::HashSet<String> = std::collections::HashSet::new();
    for p in modes.enforce.iter() {
        let found = check(&p);
        for v in found.iter().filter(|v| !reported.contains(&v.field)) {
            causes.push(StatusCause {
                reason: "FieldValueForbidden".into(),
                message: format!("Forbidden: violates PodSecurity \"{p}\": {}", v.message),
                field: v.field.clone(),
            });
        }
        reported.extend(found.iter().map(|v| v.field.clone()));
        if !found.is_empty() && enforced.is_none() {
            enforced = Some((p, found));
        }
    }
    // As PodSecurity words its warning and its audit annotation: one text per level.
    let would_violate = |p: &pss::Policy, found: &[pss::Violation]| {
        format!(
            "would violate PodSecurity \"{p}\": {}",
            pss::forbidden_detail(found)
        )
    };
    for (policies, texts) in [
        (modes.warn, &mut out.warnings),
        (modes.audit, &mut out.audit),
    ] {
        let mut reported: std::collections::HashSet<String> = std::collections::HashSet::new();
        for p in policies.iter() {
            let found = check(&p);
            if found.iter().any(|v| !reported.contains(&v.field)) {
                texts.push(would_violate(&p, &found));
            }
            reported.extend(found.into_iter().map(|v| v.field));
        }
    }
    enforced
}

/// A ControllerRevision whose `data` is not what can be judged as the template it puts in
/// pods: the controller strategic-merges `data` onto its workload, so only a whole template
/// (`data.spec.template` with `"$patch": "replace"`, as the controllers write their own) makes
/// pods from exactly the template judged; a partial one merges with the workload's (a
/// `runAsNonRoot: null` in it removes the workload's), and any other directive in `data` acts
/// on what was not judged. And `data` must be exactly `{"spec": {"template": …}}`: the
/// StatefulSet controller decodes the merged workload with Go's case-insensitive
/// `encoding/json`, so a `Spec` beside the workload's `spec` would be read into it. `None`
/// when `data` is absent or null, or is such a whole template.
fn revision_unjudgeable(revision: &Value) -> Option<StatusCause> {
    let cause = |field: &str, message: &str| {
        Some(StatusCause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {message}"),
            field: field.to_owned(),
        })
    };
    let data = revision.get("data").filter(|d| !d.is_null())?;
    let only = |v: &Value, key: &str| {
        v.as_object()
            .is_some_and(|m| m.len() == 1 && m.contains_key(key))
    };
    let template = match data.get("spec") {
        Some(spec) if only(data, "spec") && only(spec, "template") => spec.get("template"),
        _ => None,
    };
    let Some(template) = template.and_then(Value::as_object) else {
        return cause(
            "data",
            "a ControllerRevision's data must be {\"spec\": {\"template\": {…}}} to be judged as the template it puts in pods",
        );
    };
    if template.get("$patch").and_then(Value::as_str) != Some("replace") {
        return cause(
            "data.spec.template",
            "a ControllerRevision's template must be whole (\"$patch\": \"replace\", as the controllers write it) to be judged: a partial one merges with the workload's",
        );
    }
    // Any other `$` key in the template: with `replace` the controller takes the map as sent,
    // a directive in it data it would store, never apply — nothing to judge as applied. A walk
    // of values only (no path built per node: keys may be long and lists long).
    let mut stack: Vec<&Value> = template
        .iter()
        .filter(|(k, _)| k.as_str() != "$patch")
        .map(|(_, v)| v)
        .collect();
    let mut directive = template.keys().any(|k| k.starts_with('$') && k != "$patch");
    while let (false, Some(v)) = (directive, stack.pop()) {
        match v {
            Value::Object(m) => {
                directive = m.keys().any(|k| k.starts_with('$'));
                stack.extend(m.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    if directive {
        return cause(
            "data.spec.template",
            "a directive inside a ControllerRevision's whole template is stored by the controller as data, not applied: portcullis cannot judge it",
        );
    }
    None
}

/// The refusal of a write with causes: Pod Security's 403 when an enforced level was
/// violated, the field rules' 422 otherwise; named by the URL or the body's `metadata.name`.
fn refusal(
    kind: Option<PodBearing>,
    info: &RequestInfo,
    body: &Value,
    causes: Vec<StatusCause>,
    enforced: Option<(pss::Policy, Vec<pss::Violation>)>,
) -> Refusal {
    let name = if info.name.is_empty() {
        body.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    } else {
        info.name.clone()
    };
    if let (Some((policy, found)), Some(kind)) = (enforced, kind) {
        let template = (kind != PodBearing::Pod).then(|| kind.template_path().join("."));
        return Refusal::PodSecurity(Box::new(PodSecurityDenial {
            resource: info.resource.clone(),
            group: info.api_group.clone(),
            name,
            policy: policy.to_string(),
            detail: pss::forbidden_detail(&found),
            template,
            causes,
        }));
    }
    let kind_name = kind
        .map(|k| k.kind().to_owned())
        .or_else(|| body.get("kind").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| info.resource.clone());
    BodyRefusal::FieldRules(Box::new(Invalid {
        kind: kind_name,
        group: info.api_group.clone(),
        name,
        causes,
    }))
    .into()
}
