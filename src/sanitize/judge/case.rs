//! Keys that differ only in case from a field Pod Security reads. The apiserver drops them
//! (case-sensitive since 1.11) but older case-insensitive decoders read them; such a key can
//! only be an attempt to confuse a reader, so the judge refuses it (422 `FieldValueInvalid`).
//! Free-form maps (labels, annotations, data, ...) are not looked into: their keys are data.

use serde_json::Value;

use crate::k8s::status::StatusCause;

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

/// The PSS field name `k` differs from only in case, if any — case as Go's `EqualFold` reads it
/// (what a case-insensitive decoder such as `encoding/json` matches names with), where `ſ`
/// (U+017F) folds to `s` and the Kelvin sign (U+212A) to `k`.
fn case_variant_of(k: &str) -> Option<&'static str> {
    if k.is_ascii() {
        return ascii_variant_of(k).filter(|real| *real != k);
    }
    // The only non-ASCII characters that fold to ASCII letters.
    let folded: String = k
        .chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c,
        })
        .collect();
    if folded.is_ascii() {
        ascii_variant_of(&folded)
    } else {
        None
    }
}

/// The PSS field name an ASCII `k` names in any case. Keys are lowered into a stack buffer once
/// and looked up in a sorted table: this runs for every key of every judged body.
fn ascii_variant_of(k: &str) -> Option<&'static str> {
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
    Some(LOWER_NAMES[i].1)
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

/// Maps whose keys are data, not field names. (Not `data`: no pod-bearing kind has a map of
/// that name, and a ControllerRevision's `data` holds the template its StatefulSet's pods are
/// made from — read by the controller with a case-insensitive decoder, so walked.)
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
    "stringData",
    "binaryData",
];

/// A ReplicationController's (or Service's) `selector`: a plain map of label keys to values,
/// free-form like `matchLabels` (a `LabelSelector`, with `matchExpressions`, is walked).
fn string_map_selector(key: &str, v: &Value) -> bool {
    key == "selector"
        && v.as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
}

/// A cause for every key of `obj` that differs only in case from a field Pod Security reads.
pub(super) fn case_variant_causes(obj: &Value, causes: &mut Vec<StatusCause>) {
    let mut at = Vec::new();
    case_variants(obj, &mut at, causes);
}

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
                if (child.is_object() || child.is_array())
                    && !FREE_FORM.contains(&k.as_str())
                    && !string_map_selector(k, child)
                {
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
        // Go's EqualFold: `ſ` is an `s`, the Kelvin sign a `k`.
        assert_eq!(case_variant_of("ho\u{17F}tPID"), Some("hostPID"));
        assert_eq!(case_variant_of("\u{212A}"), None);
        assert_eq!(case_variant_of("ja\u{17F}"), None);
        assert_eq!(case_variant_of("\u{17F}pec"), Some("spec"));
        assert_eq!(case_variant_of("ta\u{212A}e"), None);
        assert_eq!(case_variant_of(""), None);
    }

    /// A ReplicationController's plain-map selector holds label keys, not fields: `Role`,
    /// `User` there are labels like any other.
    #[test]
    fn a_plain_map_selector_is_free_form() {
        let rc = serde_json::json!({"spec": {"selector": {"Role": "db", "User": "x"},
            "template": {"metadata": {"labels": {"Role": "db", "User": "x"}}, "spec": {"containers": []}}}});
        let mut causes = Vec::new();
        case_variant_causes(&rc, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }
}
