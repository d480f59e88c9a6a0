//! Field paths for `sanitize.field_rules`: parsing, finding, stripping, and matching JSON-patch
//! pointers against them.
//!
//! Syntax: dot-separated keys from the object root; `[*]` after a key means every element of
//! that list (`spec.containers[*].image`); a leading `podSpec.` means "inside every pod spec of
//! a pod-bearing kind" (`spec` of a Pod, `spec.template.spec` of a Deployment,
//! `spec.jobTemplate.spec.template.spec` of a CronJob ...), so one rule covers every kind.
//! Keys may not contain `.`, `[` or `]` (no annotation keys); an empty key is refused.

use serde_json::Value;

use super::pss::PodBearing;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    /// Every element of a list.
    Each,
}

/// A parsed rule path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    /// Relative to each pod spec (`podSpec.` prefix) rather than the object root.
    pub pod_spec: bool,
    pub segs: Vec<Seg>,
    /// As written, for messages.
    pub text: String,
}

impl FieldPath {
    /// Parse the rule syntax; the error says what is wrong.
    pub fn parse(s: &str) -> Result<FieldPath, String> {
        let (pod_spec, rest) = match s.strip_prefix("podSpec.") {
            Some(r) => (true, r),
            None if s == "podSpec" => return Err("podSpec needs a field after it".into()),
            None => (false, s),
        };
        if rest.is_empty() {
            return Err("empty path".into());
        }
        let mut segs = Vec::new();
        for part in rest.split('.') {
            let (key, each) = match part.strip_suffix("[*]") {
                Some(k) => (k, true),
                None => (part, false),
            };
            if key.is_empty() {
                return Err(format!("empty key in {s:?}"));
            }
            if key.contains(['[', ']', '*']) {
                return Err(format!(
                    "bad key {key:?} in {s:?} (only a trailing [*] is allowed)"
                ));
            }
            segs.push(Seg::Key(key.to_owned()));
            if each {
                segs.push(Seg::Each);
            }
        }
        Ok(FieldPath {
            pod_spec,
            segs,
            text: s.to_owned(),
        })
    }

    /// The absolute path for objects of `kind` (None: a `podSpec.` path on a kind without one).
    pub fn resolve(&self, kind: Option<PodBearing>) -> Option<Vec<Seg>> {
        if !self.pod_spec {
            return Some(self.segs.clone());
        }
        let kind = kind?;
        let mut out: Vec<Seg> = kind
            .template_path()
            .iter()
            .map(|k| Seg::Key((*k).to_owned()))
            .collect();
        out.push(Seg::Key("spec".into()));
        out.extend(self.segs.iter().cloned());
        Some(out)
    }
}

/// Every concrete field matching `segs` in `v` whose value is not null, as (`a.b[2].c`, its
/// identity, value). The identity is the path with every list element's `name` (the merge
/// key of containers, volumes, ports…) beside its index — so a list element replaced by
/// another at the same index is another field, even where the value is equal.
pub fn present<'a>(v: &'a Value, segs: &[Seg]) -> Vec<(String, String, &'a Value)> {
    let mut out = Vec::new();
    walk(v, segs, String::new(), String::new(), &mut out);
    out
}

fn walk<'a>(
    v: &'a Value,
    segs: &[Seg],
    at: String,
    id: String,
    out: &mut Vec<(String, String, &'a Value)>,
) {
    let Some((first, rest)) = segs.split_first() else {
        if !v.is_null() {
            out.push((at, id, v));
        }
        return;
    };
    match first {
        Seg::Key(k) => {
            if let Some(child) = v.get(k.as_str()) {
                let (p, q) = if at.is_empty() {
                    (k.clone(), k.clone())
                } else {
                    (format!("{at}.{k}"), format!("{id}.{k}"))
                };
                walk(child, rest, p, q, out);
            }
        }
        Seg::Each => {
            if let Some(items) = v.as_array() {
                for (i, item) in items.iter().enumerate() {
                    let name = item.get("name").map(Value::to_string).unwrap_or_default();
                    walk(
                        item,
                        rest,
                        format!("{at}[{i}]"),
                        format!("{id}[{i}={name}]"),
                        out,
                    );
                }
            }
        }
    }
}

/// Remove every field matching `segs` from `v`; true when something was removed.
pub fn strip(v: &mut Value, segs: &[Seg]) -> bool {
    match segs {
        [] => false,
        [Seg::Key(k)] => v
            .as_object_mut()
            .is_some_and(|m| m.remove(k.as_str()).is_some()),
        [Seg::Each] => match v.as_array_mut() {
            Some(items) if !items.is_empty() => {
                items.clear();
                true
            }
            _ => false,
        },
        [Seg::Key(k), rest @ ..] => v
            .get_mut(k.as_str())
            .is_some_and(|child| strip(child, rest)),
        [Seg::Each, rest @ ..] => v.as_array_mut().is_some_and(|items| {
            let mut any = false;
            for item in items {
                any |= strip(item, rest);
            }
            any
        }),
    }
}

/// Decode an RFC 6901 pointer into its reference tokens (`~1` → `/`, `~0` → `~`).
pub fn pointer_tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer.split('/').skip(1).map(unescape_token).collect()
}

/// A JSON-pointer token as the key it names (`~1` is `/`, `~0` is `~`).
pub fn unescape_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn token_matches(seg: &Seg, token: &str) -> bool {
    match seg {
        Seg::Key(k) => k == token,
        // Any index, or `-` (append) — as the API server's JSON patch reads an index
        // (evanphx/json-patch: Go's `strconv.Atoi`, so `+0` and `00`, and negative indices
        // counting from the end, `-1`), not only RFC 6901's plain digits: a strip rule must
        // not be passed by spelling the index another way.
        Seg::Each => {
            let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
            token == "-"
                || token.is_empty()
                || (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

/// How a JSON-patch pointer relates to a field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The pointer is the field or inside it.
    AtOrUnder,
    /// The pointer names an ancestor of the field (its value may contain the field); the
    /// number is how many path segments the pointer consumed.
    Above(usize),
    Unrelated,
}

/// Relate pointer `tokens` to `segs`.
pub fn relate(tokens: &[String], segs: &[Seg]) -> Relation {
    for (i, seg) in segs.iter().enumerate() {
        match tokens.get(i) {
            None => return Relation::Above(i),
            Some(t) if token_matches(seg, t) => {}
            Some(_) => return Relation::Unrelated,
        }
    }
    Relation::AtOrUnder
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A container swapped for another at the same index keeps its display path but not its
    /// identity: a deny rule does not take the newcomer's denied value for the old one's.
    #[test]
    fn identities_follow_list_elements_by_name() {
        let segs = FieldPath::parse("podSpec.containers[*].securityContext.privileged")
            .unwrap()
            .resolve(Some(crate::sanitize::pss::PodBearing::Pod))
            .unwrap();
        let c = |name: &str| json!({"spec": {"containers": [{"name": name, "securityContext": {"privileged": true}}]}});
        let (old, new) = (c("admin-tool"), c("pwn"));
        let before = present(&old, &segs);
        let after = present(&new, &segs);
        assert_eq!(before[0].0, after[0].0, "same display path");
        assert_ne!(before[0].1, after[0].1, "another element");
        assert_eq!(present(&c("pwn"), &segs)[0].1, after[0].1);
    }

    #[test]
    fn parse_and_resolve() {
        let p = FieldPath::parse("podSpec.containers[*].image").unwrap();
        assert!(p.pod_spec);
        let abs = p.resolve(Some(PodBearing::CronJob)).unwrap();
        let names: Vec<String> = abs
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Each => "*".into(),
            })
            .collect();
        assert_eq!(
            names.join("."),
            "spec.jobTemplate.spec.template.spec.containers.*.image"
        );
        assert_eq!(p.resolve(None), None);
        for bad in ["", "podSpec", "a..b", "a[0]", "a.*", "podSpec."] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn present_and_strip() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}], "nodeName": null}});
        let img = FieldPath::parse("spec.containers[*].image").unwrap().segs;
        let found: Vec<(String, &Value)> = present(&v, &img)
            .into_iter()
            .map(|(at, _, v)| (at, v))
            .collect();
        assert_eq!(
            found,
            vec![("spec.containers[0].image".to_string(), &json!("x"))]
        );
        // null counts as absent
        let nn = FieldPath::parse("spec.nodeName").unwrap().segs;
        assert!(present(&v, &nn).is_empty());
        assert!(strip(&mut v, &img));
        assert!(present(&v, &img).is_empty());
        assert!(!strip(&mut v, &img));
    }

    #[test]
    fn pointers() {
        let segs = FieldPath::parse("spec.containers[*].image").unwrap().segs;
        let t = |p: &str| relate(&pointer_tokens(p), &segs);
        assert_eq!(t("/spec/containers/0/image"), Relation::AtOrUnder);
        assert_eq!(t("/spec/containers/-"), Relation::Above(3));
        assert_eq!(t("/spec"), Relation::Above(1));
        assert_eq!(t(""), Relation::Above(0));
        assert_eq!(t("/spec/replicas"), Relation::Unrelated);
        assert_eq!(
            pointer_tokens("/metadata/annotations/a~1b~0c"),
            vec!["metadata", "annotations", "a/b~c"]
        );
    }
}
