//! Canonical JSON bytes for the hash chain (`chain.rs`), written straight from a `Serialize`
//! value: compact, every object's keys sorted by their UTF-8 bytes, leaves (strings, numbers,
//! booleans, null) formatted by serde_json itself.
//!
//! This is, byte for byte, what [`chain::write_canonical`](super::chain::write_canonical)
//! produces from the `serde_json::Value` of the same data — the form `verify` recomputes from a
//! line — but without building that `Value` tree (one String and one map node per field),
//! which made canonicalization twice as expensive as serializing the event. Used on the emit
//! path only, for data we serialize ourselves; the tests check it against the `Value` path.
//!
//! Accepts whatever serde_json accepts. Rejects (as serde_json does) map keys that are not
//! strings, numbers or booleans.

use std::{borrow::Cow, ops::Range};

use serde::{
    ser::{self, Impossible},
    Serialize,
};
use serde_json::Error;

/// The canonical bytes of `value`.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(512);
    value.serialize(Canon { out: &mut out })?;
    Ok(out)
}

fn leaf<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    serde_json::to_writer(out, v)
}

struct Canon<'a> {
    out: &'a mut Vec<u8>,
}

/// Entries of one object, emitted sorted when it ends. Values are written one after another
/// into one scratch buffer per object (not one buffer per field) and copied out in key order.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    entries: Vec<(Cow<'static, str>, Range<usize>)>,
    scratch: Vec<u8>,
    key: Option<String>,
    /// `{"Variant":` was written and needs its closing `}` (struct variants).
    variant: bool,
}

impl Object<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, key: Cow<'static, str>, v: &T) -> Result<(), Error> {
        let start = self.scratch.len();
        v.serialize(Canon {
            out: &mut self.scratch,
        })?;
        self.entries.push((key, start..self.scratch.len()));
        Ok(())
    }

    fn finish(mut self) -> Result<(), Error> {
        self.entries
            .sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        self.out.push(b'{');
        for (i, (k, range)) in self.entries.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            leaf(self.out, k.as_ref())?;
            self.out.push(b':');
            self.out
                .extend_from_slice(self.scratch.get(range.clone()).unwrap_or_default());
        }
        self.out.push(b'}');
        if self.variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

struct Array<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    variant: bool,
}

impl Array<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        v.serialize(Canon { out: self.out })
    }

    fn finish(self) -> Result<(), Error> {
        self.out.push(b']');
        if self.variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

impl<'a> Canon<'a> {
    fn array(self, variant: Option<&str>) -> Result<Array<'a>, Error> {
        if let Some(name) = variant {
            self.out.push(b'{');
            leaf(self.out, name)?;
            self.out.push(b':');
        }
        self.out.push(b'[');
        Ok(Array {
            out: self.out,
            first: true,
            variant: variant.is_some(),
        })
    }

    fn object(self, variant: Option<&str>, len: usize) -> Result<Object<'a>, Error> {
        if let Some(name) = variant {
            self.out.push(b'{');
            leaf(self.out, name)?;
            self.out.push(b':');
        }
        Ok(Object {
            out: self.out,
            entries: Vec::with_capacity(len),
            scratch: Vec::with_capacity(256),
            key: None,
            variant: variant.is_some(),
        })
    }
}

macro_rules! leaves {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<(), Error> { leaf(self.out, &v) })*
    };
}

impl<'a> ser::Serializer for Canon<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Array<'a>;
    type SerializeTuple = Array<'a>;
    type SerializeTupleStruct = Array<'a>;
    type SerializeTupleVariant = Array<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    leaves!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_none(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        leaf(self.out, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        let mut obj = self.object(None, 1)?;
        obj.push(Cow::Borrowed(variant), v)?;
        obj.finish()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Array<'a>, Error> {
        self.array(None)
    }
    fn serialize_tuple(self, _: usize) -> Result<Array<'a>, Error> {
        self.array(None)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Array<'a>, Error> {
        self.array(None)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Array<'a>, Error> {
        self.array(Some(variant))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Object<'a>, Error> {
        self.object(None, len.unwrap_or(8))
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Object<'a>, Error> {
        self.object(None, len)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Object<'a>, Error> {
        self.object(Some(variant), len)
    }
}

impl ser::SerializeSeq for Array<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for Array<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Array<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Array<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(KeyName)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ser::Error::custom("map value without a key"))?;
        self.push(Cow::Owned(key), v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.push(Cow::Borrowed(key), v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.push(Cow::Borrowed(key), v)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// A map key as serde_json writes it: strings as they are, numbers and booleans as text.
struct KeyName;

fn key_error() -> Error {
    ser::Error::custom("key must be a string")
}

macro_rules! text_keys {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<String, Error> { Ok(v.to_string()) })*
    };
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    text_keys!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str);

    fn serialize_f32(self, _: f32) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_f64(self, _: f64) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<String, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_error())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{
        chain::write_canonical,
        event::{Event, ObjectReference, ResponseStatus, UserInfo},
    };
    use serde_json::json;
    use std::collections::BTreeMap;

    fn via_value<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write_canonical(&serde_json::to_value(v).unwrap(), &mut out);
        out
    }

    #[test]
    fn matches_the_value_path_on_events() {
        let full = Event {
            audit_id: "a\"b\\c\u{1}é\u{2028}".into(),
            request_uri: "/api/v1/namespaces/x/pods?labelSelector=a%3Db&watch=1".into(),
            verb: "create".into(),
            user: UserInfo {
                username: "alice".into(),
                uid: "u".into(),
                groups: vec!["b".into(), "a".into()],
                extra: BTreeMap::from([("scopes".into(), vec!["x".into()]), ("Z".into(), vec![])]),
            },
            impersonated_user: Some(UserInfo::default()),
            source_ips: vec!["::1".into(), "10.0.0.1".into()],
            user_agent: "kubectl".into(),
            object_ref: Some(ObjectReference {
                resource: "pods".into(),
                subresource: "exec".into(),
                ..ObjectReference::default()
            }),
            response_status: Some(ResponseStatus {
                details: Some(json!({"retryAfterSeconds": 3, "causes": [{"field": "x"}]})),
                ..ResponseStatus::failure(429, "TooManyRequests", "slow down")
            }),
            request_object: Some(json!({
                "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "i"}],
                "priority": -1, "weight": 0.5, "big": 1e300, "max": u64::MAX, "neg0": -0.0,
                "nothing": null, "t": true, "empty": {}, "list": []},
                "apiVersion": "v1", "ÿ": 1, "Ä": 2, "a": 3, "B": 4
            })),
            response_object: Some(json!([1, "two", {"3": 4}])),
            authentication_metadata: Some(json!({"impersonationConstraint": "x"})),
            annotations: BTreeMap::from([
                ("portcullis.io/tenant".into(), "team-a".into()),
                ("authorization.k8s.io/decision".into(), "allow".into()),
            ]),
            ..Event::default()
        };
        let bare = Event::default();
        for e in [&full, &bare] {
            assert_eq!(
                String::from_utf8(to_canonical_vec(e).unwrap()).unwrap(),
                String::from_utf8(via_value(e)).unwrap()
            );
        }
    }

    #[test]
    fn enums_tuples_and_number_keys() {
        #[derive(Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, String),
            Struct { b: u8, a: u8 },
        }
        let v = (
            vec![
                E::Unit,
                E::New(1),
                E::Tuple(2, "x".into()),
                E::Struct { b: 1, a: 2 },
            ],
            BTreeMap::from([(10u32, "ten"), (9u32, "nine")]),
            Some('c'),
            Option::<u8>::None,
            (),
        );
        assert_eq!(to_canonical_vec(&v).unwrap(), via_value(&v));
        assert_eq!(
            String::from_utf8(to_canonical_vec(&v).unwrap()).unwrap(),
            r#"[["Unit",{"New":1},{"Tuple":[2,"x"]},{"Struct":{"a":2,"b":1}}],{"10":"ten","9":"nine"},"c",null,null]"#
        );
        let bad = BTreeMap::from([((1, 2), 3)]);
        assert!(to_canonical_vec(&bad).is_err());
    }
}
