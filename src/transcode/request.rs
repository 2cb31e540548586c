//! Building an RPC's request message (as proto3 JSON) from an HTTP request:
//! the body goes to the rule's body field, path variables and query
//! parameters to the fields they name, each converted by the field's type.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::api::errors::ApiError;
use crate::domain::Violation;
use crate::domain::names::quoted;

/// The field at a dotted path of proto names (`release.metadata.name`).
pub fn field_by_path(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current.get_field_by_name(part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        current = singular_message(&field)?;
    }
    None
}

/// The message type of a field that is a single message (not a list or map).
fn singular_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match (field.kind(), field.is_list() || field.is_map()) {
        (Kind::Message(message), false) => Some(message),
        (_, _) => None,
    }
}

/// The field named by its JSON name or its proto name, as proto3 JSON allows.
fn field_by_json_or_proto_name(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_json_name(name)
        .or_else(|| message.get_field_by_name(name))
}

/// The request message's JSON: the body placed per the rule, then every path
/// variable and query parameter set on the field it names.
pub fn assemble(
    input: &MessageDescriptor,
    body_field: &str,
    body: Option<Value>,
    path_bindings: Vec<(String, String)>,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let mut request = Map::new();
    match (body_field, body) {
        (_, None) => {}
        ("*", Some(Value::Object(object))) => request = object,
        ("", Some(_)) => {
            return Err(ApiError::invalid_field(
                "body",
                "this operation takes no request body",
            ));
        }
        (field, Some(Value::Object(object))) => {
            request.insert(field.to_owned(), Value::Object(object));
        }
        (_, Some(_)) => return Err(ApiError::invalid_field("body", "must be a JSON object")),
    }
    drop_nulls(&mut request, input);
    derive_update_mask(&mut request, input, body_field, query);

    let mut violations = Vec::new();
    let bound: Vec<String> = path_bindings.iter().map(|(f, _)| f.clone()).collect();
    for (path, value) in path_bindings {
        // Checked against the descriptor when the route table was built.
        let Some(field) = field_by_path(input, &path) else {
            continue;
        };
        match scalar(&field, &value) {
            Ok(json) => set_path(&mut request, &path, json),
            Err(e) => violations.push(Violation::new(path, e)),
        }
    }

    let mut given: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let field = query_field(input, &key, body_field, &bound);
        match field {
            Err(e) => violations.push(Violation::new(key.as_ref(), e)),
            Ok((path, field)) if !field.is_list() && given.contains(&path) => {
                violations.push(Violation::new(
                    key.as_ref(),
                    "is given more than once; it takes one value",
                ));
            }
            Ok((path, field)) => {
                given.push(path.clone());
                match scalar(&field, &value) {
                    Ok(json) if field.is_list() => push_path(&mut request, &path, json),
                    Ok(json) => set_path(&mut request, &path, json),
                    Err(e) => violations.push(Violation::new(key.as_ref(), e)),
                }
            }
        }
    }
    if violations.is_empty() {
        Ok(Value::Object(request))
    } else {
        Err(ApiError::invalid(violations))
    }
}

/// The field of an AIP-134 update that holds its mask.
const UPDATE_MASK: &str = "update_mask";
const FIELD_MASK: &str = "google.protobuf.FieldMask";

/// For an update whose body is one field and whose mask the client did not
/// send as a query parameter: the mask is the set of fields present in the
/// body, as grpc-gateway derives it.
fn derive_update_mask(
    request: &mut Map<String, Value>,
    input: &MessageDescriptor,
    body_field: &str,
    query: Option<&str>,
) {
    let Some(mask) = input.get_field_by_name(UPDATE_MASK) else {
        return;
    };
    let is_mask =
        matches!(mask.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask");
    if !is_mask || body_field.is_empty() || body_field == "*" {
        return;
    }
    let sent = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, _)| k == UPDATE_MASK || k == mask.json_name());
    if sent {
        return;
    }
    let Some(Kind::Message(body_type)) = input.get_field_by_name(body_field).map(|f| f.kind())
    else {
        return;
    };
    let paths = match request.get(body_field) {
        Some(Value::Object(body)) => crate::api::field_mask::derive(&body_type, body),
        _ => Vec::new(),
    };
    let joined: Vec<String> = paths
        .iter()
        .map(|p| crate::api::field_mask::lower_camel(p))
        .collect();
    request.insert(UPDATE_MASK.to_owned(), Value::from(joined.join(",")));
}

/// The field a query parameter names (dotted, JSON or proto names), as its
/// proto-name path. Fields bound by the path or carried by the body are not
/// query parameters.
fn query_field(
    input: &MessageDescriptor,
    key: &str,
    body_field: &str,
    bound: &[String],
) -> Result<(String, FieldDescriptor), String> {
    let unknown = || "is not a query parameter of this operation".to_owned();
    if body_field == "*" {
        return Err(unknown());
    }
    let mut current = input.clone();
    let mut path = Vec::new();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = field_by_json_or_proto_name(&current, part).ok_or_else(unknown)?;
        path.push(field.name().to_owned());
        if parts.peek().is_none() {
            let path = path.join(".");
            let taken = bound.contains(&path)
                || (!body_field.is_empty() && path.split('.').next() == Some(body_field));
            let settable = from_url(&field);
            if taken || !settable || field.is_map() {
                return Err(unknown());
            }
            return Ok((path, field));
        }
        current = singular_message(&field).ok_or_else(unknown)?;
    }
    Err(unknown())
}

/// Whether a URL can set the field: scalars, enums, and a FieldMask (a
/// string in proto3 JSON); no other message.
pub fn from_url(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => m.full_name() == FIELD_MASK,
        Kind::Double
        | Kind::Float
        | Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Fixed64
        | Kind::Sfixed32
        | Kind::Sfixed64
        | Kind::Bool
        | Kind::String
        | Kind::Bytes
        | Kind::Enum(_) => true,
    }
}

/// A path or query value as the proto3 JSON of the field's scalar type.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    match field.kind() {
        Kind::String | Kind::Bytes => Ok(Value::from(text)),
        Kind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("must be true or false, got {}", quoted(text))),
        },
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("must be a whole number, got {}", quoted(text))),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => text
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("must be a non-negative whole number, got {}", quoted(text))),
        Kind::Float | Kind::Double => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("must be a number, got {}", quoted(text))),
        Kind::Enum(_) => Ok(Value::from(text)),
        Kind::Message(m) if m.full_name() == FIELD_MASK => Ok(Value::from(text)),
        Kind::Message(m) => Err(format!(
            "is a {} and cannot be set from the URL",
            m.full_name()
        )),
    }
}

fn set_path(request: &mut Map<String, Value>, path: &str, value: Value) {
    let (parents, leaf) = path
        .rsplit_once('.')
        .map_or((None, path), |(p, l)| (Some(p), l));
    let mut current = request;
    for part in parents.into_iter().flat_map(|p| p.split('.')) {
        let entry = current
            .entry(part)
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
    current.insert(leaf.to_owned(), value);
}

fn push_path(request: &mut Map<String, Value>, path: &str, value: Value) {
    let mut list = Vec::new();
    let mut probe: Option<&Value> = None;
    for (i, part) in path.split('.').enumerate() {
        probe = if i == 0 {
            request.get(part)
        } else {
            probe.and_then(|v| v.get(part))
        };
    }
    if let Some(Value::Array(existing)) = probe {
        list = existing.clone();
    }
    list.push(value);
    set_path(request, path, Value::Array(list));
}

/// Removes `null` members of messages, which proto3 JSON defines as "not
/// set" (pbjson would refuse them for scalar and list fields). Nulls inside a
/// `google.protobuf.Struct` are data and stay.
fn drop_nulls(object: &mut Map<String, Value>, message: &MessageDescriptor) {
    object.retain(|key, value| {
        let Some(field) = field_by_json_or_proto_name(message, key) else {
            return true;
        };
        let is_json_value =
            matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Value");
        if value.is_null() {
            return is_json_value && !field.is_list();
        }
        if let Kind::Message(inner) = field.kind() {
            if inner.full_name().starts_with("google.protobuf.") || field.is_map() {
                return true;
            }
            if let (Value::Object(child), false) = (&mut *value, field.is_list()) {
                drop_nulls(child, &inner);
            } else if let (Value::Array(items), true) = (&mut *value, field.is_list()) {
                for child in items.iter_mut().filter_map(Value::as_object_mut) {
                    drop_nulls(child, &inner);
                }
            }
        }
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;
    use serde_json::json;

    fn input() -> MessageDescriptor {
        DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("asm.v2.CreateReleaseRequest")
            .unwrap()
    }

    fn bindings() -> Vec<(String, String)> {
        vec![
            ("mesh_id".into(), "m".into()),
            ("namespace".into(), "ns".into()),
        ]
    }

    #[test]
    fn body_and_path_fill_the_request() {
        let body = json!({"metadata": {"name": "abcd", "meshID": null}, "spec": null});
        let got = assemble(&input(), "release", Some(body), bindings(), None).unwrap();
        assert_eq!(
            got,
            json!({"release": {"metadata": {"name": "abcd"}}, "mesh_id": "m", "namespace": "ns"})
        );
    }

    #[test]
    fn nulls_inside_structs_are_kept() {
        let body = json!({"spec": {"grayDeployments": [{"template": {"a": null}}]}});
        let got = assemble(&input(), "release", Some(body), bindings(), None).unwrap();
        assert_eq!(
            got["release"]["spec"]["grayDeployments"][0]["template"],
            json!({"a": null})
        );
    }

    #[test]
    fn query_parameters_must_name_free_fields() {
        let err = assemble(
            &input(),
            "release",
            None,
            bindings(),
            Some("mesh_id=x&bogus=1&release.kind=x"),
        );
        match err {
            Err(ApiError::InvalidArgument { violations, .. }) => {
                let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, vec!["mesh_id", "bogus", "release.kind"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_body_must_be_an_object() {
        assert!(assemble(&input(), "release", Some(json!([1])), bindings(), None).is_err());
        assert!(assemble(&input(), "", Some(json!({})), bindings(), None).is_err());
    }
}
