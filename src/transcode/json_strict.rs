//! Parsing a REST body strictly: a key given twice in one object is refused
//! (a gateway or an audit log reading the first value would see another
//! request than the one stored), and so is a number that a JSON double
//! cannot carry exactly (a magnitude over 2^53), since the wire type of
//! Kubernetes objects, `google.protobuf.Struct`, holds doubles. Either is
//! reported with the path of the value, as the client wrote it
//! (`spec.grayDeployments[0].template.metadata.labels.app`).
//!
//! Nesting is bounded before this runs (`json_depth`), so the recursion is.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest magnitude a double holds with every integer below it exact.
pub const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
const MAX_EXACT_INT: u64 = 1 << 53;

/// Why a body was refused: the path of the value at fault (empty for a
/// syntax error) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: String,
    pub reason: String,
}

pub fn parse(bytes: &[u8]) -> Result<Value, Refusal> {
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, found.into_inner()) {
        (Ok(value), None) => Ok(value),
        (_, Some(refusal)) => Err(refusal),
        (Err(e), None) => Err(Refusal {
            path: String::new(),
            reason: format!("malformed JSON: {e}"),
        }),
    }
}

struct Node<'a> {
    path: String,
    found: &'a RefCell<Option<Refusal>>,
}

impl Node<'_> {
    fn refuse<E: serde::de::Error>(&self, path: String, reason: String) -> E {
        *self.found.borrow_mut() = Some(Refusal { path, reason });
        E::custom("refused")
    }

    fn too_big<E: serde::de::Error>(&self) -> E {
        self.refuse(
            self.path.clone(),
            "is a number beyond 2^53 in magnitude, which this API cannot keep exactly (its objects travel as JSON doubles); send it as a string if the field allows, or a smaller value".into(),
        )
    }

    fn child(&self, segment: &str) -> String {
        if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{}.{segment}", self.path)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_EXACT_INT {
            return Err(self.too_big());
        }
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_EXACT_INT {
            return Err(self.too_big());
        }
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        if v.abs() > MAX_EXACT {
            return Err(self.too_big());
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node {
            path: format!("{}[{}]", self.path, items.len()),
            found: self.found,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.child(&key);
            if !seen.insert(key.clone()) {
                return Err(self.refuse(
                    path,
                    "is given twice in one object; give each key once".into(),
                ));
            }
            let value = map.next_value_seed(Node {
                path,
                found: self.found,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refusal {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let r = refused(r#"{"spec": {"version": "v2", "version": "v9"}}"#);
        assert_eq!(r.path, "spec.version");
        let r = refused(
            r#"{"spec": {"grayDeployments": [{"template": {"metadata": {"labels": {"app": "a", "app": "b"}}}}]}}"#,
        );
        assert_eq!(
            r.path,
            "spec.grayDeployments[0].template.metadata.labels.app"
        );
        // The same key in different objects is fine.
        assert!(parse(br#"{"a": {"x": 1}, "b": {"x": 1}}"#).is_ok());
    }

    #[test]
    fn numbers_beyond_2_53_are_refused_and_others_kept_exactly() {
        let r = refused(r#"{"t": {"terminationGracePeriodSeconds": 9007199254740993}}"#);
        assert_eq!(r.path, "t.terminationGracePeriodSeconds");
        assert_eq!(refused(r#"[1, -9007199254740993]"#).path, "[1]");
        assert_eq!(refused(r#"{"f": 1e300}"#).path, "f");
        let ok = parse(br#"{"a": 9007199254740992, "b": -3, "c": 0.5, "d": 2}"#).unwrap();
        assert_eq!(
            ok.to_string(),
            r#"{"a":9007199254740992,"b":-3,"c":0.5,"d":2}"#
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let r = refused(r#"{"a": }"#);
        assert!(r.path.is_empty());
        assert!(r.reason.contains("line 1"), "{}", r.reason);
        assert!(parse(b"{} x").is_err(), "trailing characters");
    }
}
