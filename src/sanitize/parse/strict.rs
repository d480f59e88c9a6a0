//! The format-independent half of the strict parser: a serde [`DeserializeSeed`] that builds a
//! [`serde_json::Value`] from any self-describing deserializer (serde_json, serde-saphyr) while
//! tracking the field path, the nesting depth, string lengths and duplicate keys.
//!
//! The path is a linked list of stack-allocated nodes, so nothing is allocated for it unless an
//! error has to name it. A violation is recorded in [`Checker::error`] (a structured
//! [`ParseError`]) and surfaced to the deserializer as a custom error, which aborts parsing; the
//! caller then prefers the recorded error over the deserializer's wrapped message.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::{Limits, ParseError};

/// One step of a field path: the parent node and this node's key or index.
#[derive(Clone, Copy)]
pub(crate) struct PathNode<'p> {
    parent: Option<&'p PathNode<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> PathNode<'p> {
    pub(crate) const ROOT: PathNode<'static> = PathNode {
        parent: None,
        seg: Seg::Root,
    };

    /// The apiserver's field-path style: `spec.containers[0].securityContext`; keys that are
    /// not plain identifiers are quoted in brackets: `metadata.labels["app.kubernetes.io/name"]`.
    pub(crate) fn render(&self) -> String {
        let mut segs: Vec<Seg<'_>> = Vec::new();
        let mut cur: Option<&PathNode<'_>> = Some(self);
        while let Some(node) = cur {
            segs.push(node.seg);
            cur = node.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
                Seg::Key(k) => {
                    let plain = !k.is_empty()
                        && k.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$'
                        });
                    if plain {
                        if !out.is_empty() {
                            out.push('.');
                        }
                        out.push_str(k);
                    } else {
                        out.push('[');
                        out.push_str(&format!("{k:?}"));
                        out.push(']');
                    }
                }
            }
        }
        out
    }
}

/// Shared, per-parse state.
pub(crate) struct Checker<'l> {
    pub(crate) limits: &'l Limits,
    /// The first violation found by the visitor, if any.
    pub(crate) error: Cell<Option<ParseError>>,
    /// YAML may deliver non-string scalar keys (`1: a`); JSON never does.
    pub(crate) scalar_keys: bool,
    /// A YAML body (also one shaped as JSON): the API server reads its numbers as go-yaml v2's
    /// float64s and writes them with encoding/json, so an integral float is an integer (`2.0`,
    /// `1e3`, `08` become `2`, `1000`, `8`), which an int field then takes.
    pub(crate) go_floats: bool,
}

impl<'l> Checker<'l> {
    pub(crate) fn new(limits: &'l Limits, scalar_keys: bool) -> Self {
        Self {
            limits,
            error: Cell::new(None),
            scalar_keys,
            go_floats: false,
        }
    }

    /// Numbers as the API server makes them of a YAML body (see [`Checker::go_floats`]).
    pub(crate) fn go_floats(mut self) -> Self {
        self.go_floats = true;
        self
    }

    fn fail<E: de::Error>(&self, err: ParseError) -> E {
        let msg = err.to_string();
        // Keep the first error: later ones are consequences of unwinding.
        let prev = self.error.take();
        self.error.set(Some(prev.unwrap_or(err)));
        E::custom(msg)
    }

    pub(crate) fn take_error(&self) -> Option<ParseError> {
        self.error.take()
    }
}

/// Seed for one value at `path`, at nesting `depth` (the root value is at depth 0; entering a
/// container makes its children one deeper).
#[derive(Clone, Copy)]
pub(crate) struct ValueSeed<'a, 'l> {
    pub(crate) ck: &'a Checker<'l>,
    pub(crate) path: &'a PathNode<'a>,
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    fn string<E: de::Error>(self, s: &str) -> Result<Value, E> {
        if s.len() > self.ck.limits.max_string {
            return Err(self.ck.fail(ParseError::StringTooLong {
                len: s.len(),
                max: self.ck.limits.max_string,
                path: self.path.render(),
            }));
        }
        Ok(Value::String(s.to_owned()))
    }

    fn unrepresentable<E: de::Error>(self, what: &'static str) -> E {
        self.ck.fail(ParseError::Unrepresentable {
            what,
            path: self.path.render(),
        })
    }

    fn enter<E: de::Error>(self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > self.ck.limits.max_depth {
            return Err(self.ck.fail(ParseError::TooDeep {
                max: self.ck.limits.max_depth,
                path: self.path.render(),
            }));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(v) {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = u64::try_from(v) {
            return Ok(Value::Number(u.into()));
        }
        Err(self.unrepresentable("an integer outside the 64-bit range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(u) => Ok(Value::Number(u.into())),
            Err(_) => Err(self.unrepresentable("an integer outside the 64-bit range")),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if self.ck.go_floats {
            if let Some(n) = integral(v) {
                return Ok(Value::Number(n));
            }
        }
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self.unrepresentable("a non-finite number (NaN or infinity)")),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value, E> {
        self.string(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if v.len() > self.ck.limits.max_string {
            return self.string(&v);
        }
        Ok(Value::String(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(self.unrepresentable("binary data"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        loop {
            let node = PathNode {
                parent: Some(self.path),
                seg: Seg::Index(out.len()),
            };
            let seed = ValueSeed {
                ck: self.ck,
                path: &node,
                depth,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed { parent: self })? {
            // One map lookup per key: the vacant entry holds the key the child path borrows.
            let slot = match out.entry(key) {
                Entry::Vacant(slot) => slot,
                Entry::Occupied(slot) => {
                    let key = slot.key().clone();
                    let field = PathNode {
                        parent: Some(self.path),
                        seg: Seg::Key(&key),
                    }
                    .render();
                    return Err(self.ck.fail(ParseError::DuplicateKey {
                        at: self.path.render(),
                        field,
                        key,
                    }));
                }
            };
            let node = PathNode {
                parent: Some(self.path),
                seg: Seg::Key(slot.key()),
            };
            let value = map.next_value_seed(ValueSeed {
                ck: self.ck,
                path: &node,
                depth,
            })?;
            slot.insert(value);
        }
        Ok(Value::Object(out))
    }
}

/// Seed for a mapping key. JSON keys are strings; YAML scalar keys (`1`, `true`) are turned
/// into their decimal / literal spelling as sigs.k8s.io/yaml does, so `0x1` and `1` collide as
/// the duplicates they are. Null, float, sequence and mapping keys are refused.
#[derive(Clone, Copy)]
struct KeySeed<'a, 'l> {
    parent: ValueSeed<'a, 'l>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        if self.parent.ck.scalar_keys {
            d.deserialize_any(self)
        } else {
            d.deserialize_str(self)
        }
    }
}

impl KeySeed<'_, '_> {
    fn key<E: de::Error>(self, s: &str) -> Result<String, E> {
        if s.len() > self.parent.ck.limits.max_string {
            return Err(self.parent.ck.fail(ParseError::StringTooLong {
                len: s.len(),
                max: self.parent.ck.limits.max_string,
                path: self.parent.path.render(),
            }));
        }
        Ok(s.to_owned())
    }
    fn bad<E: de::Error>(self, what: &'static str) -> E {
        self.parent.unrepresentable(what)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.key(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<String, E> {
        self.key(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        if v.len() > self.parent.ck.limits.max_string {
            return self.key(&v);
        }
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        // sigs.k8s.io/yaml spells a float key with Go's `%g` (shortest, float32): an integral
        // one below 1e6 is its digits (`08:` → "8", `1e3:` → "1000"). Others are refused.
        match integral(v) {
            Some(n) if v.abs() < 1e6 => Ok(n.to_string()),
            _ => Err(self.bad("a floating-point mapping key")),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(self.bad("a null mapping key"))
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(self.bad("a null mapping key"))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<String, E> {
        Err(self.bad("a binary mapping key"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.bad("a sequence used as a mapping key"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.bad("a mapping used as a mapping key"))
    }
}

/// `v` as an integer when it is integral and within 64 bits: YAML `08`, `1e3`, `2.0` are
/// float64s in go-yaml v2, which encoding/json writes `8`, `1000`, `2` — what the API server
/// decodes, an int field included — not `8.0`. Beyond 64 bits it stays a float (Go writes the
/// digits, serde_json an exponent: the same number).
pub(crate) fn integral(v: f64) -> Option<Number> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if v.fract() != 0.0 {
        return None;
    }
    if (-TWO_63..TWO_63).contains(&v) {
        return Some((v as i64).into());
    }
    (v > 0.0 && v < 2.0 * TWO_63).then(|| (v as u64).into())
}
