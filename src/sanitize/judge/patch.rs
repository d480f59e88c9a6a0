//! Patches, for the judge: the object a patch produces from the current one (JSON, merge,
//! strategic, apply), stripping a field from a JSON patch's operations, and the
//! `resourceVersion` precondition that pins a judged patch to the object it was judged on.
//!
//! Rejects: a JSON patch that does not parse or an unknown strategic directive → 400
//! (`BadPatch`); a patch that does not apply to the current object → 422
//! (`PatchDoesNotApply`).

use serde_json::{json, Value};

use super::super::{
    fields::{self, pointer_tokens, relate, Relation},
    merge::{self, Mode},
    parse::{BodyKind, Parsed},
};
use crate::{
    k8s::request::RequestInfo,
    refusal::{BodyRefusal, Refusal},
};

pub(super) fn apply_patch(
    cur: &Value,
    parsed: &Parsed,
    info: &RequestInfo,
) -> Result<Value, Refusal> {
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
pub(super) fn strip_json_patch(ops: &mut Value, segs: &[fields::Seg]) -> bool {
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

pub(super) fn add_precondition(parsed: &mut Parsed, rv: Value) {
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
