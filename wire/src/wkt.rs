//! Well-known types whose JSON form we control:
//! - `Timestamp`: RFC 3339 in UTC with a `Z` suffix and 0, 3, 6 or 9
//!   fractional digits, the canonical proto3 form (pbjson-types writes `+00:00`);
//! - `Struct`, `Value`, `ListValue`: plain JSON, with object keys kept in one
//!   sorted order (pbjson-types keeps them in a HashMap, so the same object
//!   would come out in a different order from call to call);
//! - `FieldMask`: one string of comma-separated lowerCamelCase paths, the
//!   proto3 JSON form (pbjson-types writes `{"paths": [...]}`).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }
}

impl TryFrom<Timestamp> for DateTime<Utc> {
    type Error = String;

    fn try_from(t: Timestamp) -> Result<Self, Self::Error> {
        u32::try_from(t.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| format!("timestamp out of range: {}s {}ns", t.seconds, t.nanos))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let time = DateTime::<Utc>::try_from(*self).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {e}")))?;
        Ok(time.with_timezone(&Utc).into())
    }
}

/// `google.protobuf.Struct`, with its encoded size cached.
///
/// prost computes a nested message's size at every level it is nested in,
/// so a template nested twenty message levels deep had its leaves measured
/// twenty times per encode. The size is computed once and kept; the fields
/// are reachable only through methods, and every mutable access (including
/// decoding) forgets the size, so it can never be stale.
#[derive(Clone, Default)]
pub struct Struct {
    fields: BTreeMap<String, Value>,
    size: SizeCache,
}

impl Struct {
    pub fn new(fields: BTreeMap<String, Value>) -> Self {
        Self {
            fields,
            size: SizeCache::default(),
        }
    }

    pub fn fields(&self) -> &BTreeMap<String, Value> {
        &self.fields
    }

    pub fn fields_mut(&mut self) -> &mut BTreeMap<String, Value> {
        self.size.forget();
        &mut self.fields
    }

    pub fn into_fields(self) -> BTreeMap<String, Value> {
        self.fields
    }
}

impl PartialEq for Struct {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl std::fmt::Debug for Struct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Struct")
            .field("fields", &self.fields)
            .finish()
    }
}

/// A message size computed at most once per content.
#[derive(Default)]
struct SizeCache(std::sync::OnceLock<usize>);

impl SizeCache {
    fn get_or_compute(&self, compute: impl FnOnce() -> usize) -> usize {
        *self.0.get_or_init(compute)
    }

    fn forget(&mut self) {
        self.0.take();
    }
}

impl Clone for SizeCache {
    fn clone(&self) -> Self {
        // A clone has the same content, so the same size.
        let cache = SizeCache::default();
        if let Some(size) = self.0.get() {
            let _ = cache.0.set(*size);
        }
        cache
    }
}

impl prost::Message for Struct {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        prost::encoding::btree_map::encode(
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            prost::encoding::message::encode,
            prost::encoding::message::encoded_len,
            1,
            &self.fields,
            buf,
        );
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.size.forget();
        if tag == 1 {
            prost::encoding::btree_map::merge(
                prost::encoding::string::merge,
                prost::encoding::message::merge,
                &mut self.fields,
                buf,
                ctx,
            )
            .map_err(|mut e| {
                e.push("Struct", "fields");
                e
            })
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.size.get_or_compute(|| {
            prost::encoding::btree_map::encoded_len(
                prost::encoding::string::encoded_len,
                prost::encoding::message::encoded_len,
                1,
                &self.fields,
            )
        })
    }

    fn clear(&mut self) {
        self.size.forget();
        self.fields.clear();
    }
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

pub mod value {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        #[prost(enumeration = "super::NullValue", tag = "1")]
        NullValue(i32),
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// `google.protobuf.FieldMask`: `paths` hold proto names (`spec.traffic_policy`).
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

impl Serialize for FieldMask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let paths: Vec<String> = self.paths.iter().map(|p| lower_camel(p)).collect();
        serializer.serialize_str(&paths.join(","))
    }
}

impl<'de> Deserialize<'de> for FieldMask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut paths = Vec::new();
        for path in text.split(',').filter(|p| !p.is_empty()) {
            if path.contains('_') {
                return Err(de::Error::custom(format!(
                    "field mask path {path:?} must be lowerCamelCase, as proto3 JSON writes it"
                )));
            }
            let mut snake = String::with_capacity(path.len() + 4);
            for c in path.chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            paths.push(snake);
        }
        Ok(FieldMask { paths })
    }
}

/// `snake_case` as proto3 JSON writes a FieldMask path (`lowerCamelCase`).
pub fn lower_camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `google.protobuf.NullValue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum NullValue {
    NullValue = 0,
}

impl Serialize for Struct {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl Serialize for ListValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.values.len()))?;
        for value in &self.values {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.kind {
            None | Some(value::Kind::NullValue(_)) => serializer.serialize_unit(),
            // Whole numbers are written without a fraction (`1`, not `1.0`),
            // as Kubernetes manifests write replicas and ports.
            Some(value::Kind::NumberValue(n))
                if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 =>
            {
                serializer.serialize_i64(*n as i64)
            }
            Some(value::Kind::NumberValue(n)) if n.is_finite() => serializer.serialize_f64(*n),
            Some(value::Kind::NumberValue(_)) => Err(serde::ser::Error::custom(
                "a google.protobuf.Value number must be finite",
            )),
            Some(value::Kind::StringValue(s)) => serializer.serialize_str(s),
            Some(value::Kind::BoolValue(b)) => serializer.serialize_bool(*b),
            Some(value::Kind::StructValue(s)) => s.serialize(serializer),
            Some(value::Kind::ListValue(l)) => l.serialize(serializer),
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::from(value::Kind::NullValue(0)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::from(value::Kind::BoolValue(b)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(value::Kind::NumberValue(n as f64)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(value::Kind::NumberValue(n as f64)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::from(value::Kind::NumberValue(n)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::from(value::Kind::StringValue(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::from(value::Kind::StringValue(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = seq.next_element()? {
            values.push(v);
        }
        Ok(Value::from(value::Kind::ListValue(ListValue { values })))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Ok(Value::from(value::Kind::StructValue(
            StructVisitor.visit_map(map)?,
        )))
    }
}

struct StructVisitor;

impl<'de> Visitor<'de> for StructVisitor {
    type Value = Struct;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Struct, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            if fields.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(Struct::new(fields))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Struct {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StructVisitor)
    }
}

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = Vec::<Value>::deserialize(deserializer)?;
        Ok(ListValue { values })
    }
}

impl From<value::Kind> for Value {
    fn from(kind: value::Kind) -> Self {
        Value { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_ends_in_z() {
        let t = Timestamp {
            seconds: 1_795_843_395,
            nanos: 0,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-28T05:23:15Z\""
        );
        let t = Timestamp {
            seconds: 1_795_843_395,
            nanos: 120_000_000,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-28T05:23:15.120Z\""
        );
        let back: Timestamp = serde_json::from_str("\"2026-11-28T06:23:15.120+01:00\"").unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn struct_json_keeps_sorted_keys_and_round_trips() {
        let text = r#"{"b":[1,"x",true,null,{"d":1.5}],"a":{"c":null}}"#;
        let parsed: Struct = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"a":{"c":null},"b":[1,"x",true,null,{"d":1.5}]}"#
        );
        let bytes = prost::Message::encode_to_vec(&parsed);
        let decoded: Struct = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, parsed);
    }

    #[test]
    fn the_cached_size_is_the_real_size_and_follows_every_change() {
        use prost::Message as _;
        // (No null: pbjson-types reads it as an unset Value, not NullValue.)
        let text = r#"{"a":{"b":[1,"x",{"c":false,"d":true}],"e":{"f":{"g":"deep"}}},"h":2.5}"#;
        let ours: Struct = serde_json::from_str(text).unwrap();
        // prost's own google.protobuf.Struct, with no cache.
        let reference: pbjson_types::Struct = serde_json::from_str(text).unwrap();
        assert_eq!(ours.encoded_len(), reference.encoded_len());
        assert_eq!(ours.encode_to_vec().len(), reference.encoded_len());
        let decoded = Struct::decode(reference.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, ours);
        assert_eq!(decoded.encoded_len(), reference.encoded_len());

        let mut changed = ours.clone();
        let before = changed.encoded_len();
        changed.fields_mut().insert(
            "longer-key".into(),
            Value::from(value::Kind::StringValue("value".into())),
        );
        assert!(changed.encoded_len() > before);
        assert_eq!(changed.encoded_len(), changed.encode_to_vec().len());
        // Merging more fields in (decoding) forgets the size too.
        let mut merged = ours.clone();
        let _ = merged.encoded_len();
        merged.merge(changed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(merged.encoded_len(), merged.encode_to_vec().len());
    }
}
