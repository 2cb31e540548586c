//! Kubernetes objects as plain JSON, and the few ways the domain reads and
//! edits them. A leaf: it knows nothing else of the domain.

use serde_json::{Value, json};

/// A Kubernetes object (a Deployment template, say) as plain JSON.
pub type JsonObject = serde_json::Map<String, Value>;

/// The object's `metadata.name`, or "" when it has none.
pub fn name_of(object: &JsonObject) -> &str {
    metadata_str(object, "name").unwrap_or_default()
}

/// A string field of the object's `metadata`.
pub fn metadata_str<'o>(object: &'o JsonObject, key: &str) -> Option<&'o str> {
    object.get("metadata")?.get(key)?.as_str()
}

/// An annotation of the object.
pub fn annotation<'o>(object: &'o JsonObject, key: &str) -> Option<&'o str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
}

/// An object with only its identity: apiVersion, kind, name and namespace.
pub fn identity(api_version: &str, kind: &str, name: &str, namespace: &str) -> JsonObject {
    let Value::Object(object) = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }) else {
        unreachable!("an object literal")
    };
    object
}

/// The object at `key`, created (or replaced, when not an object) if needed.
pub fn object_mut<'a>(object: &'a mut JsonObject, key: &str) -> &'a mut JsonObject {
    let entry = object
        .entry(key)
        .or_insert_with(|| Value::Object(JsonObject::new()));
    if !entry.is_object() {
        *entry = Value::Object(JsonObject::new());
    }
    match entry {
        Value::Object(map) => map,
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            unreachable!("made an object just above")
        }
    }
}

/// A value as JSON (`null` if it cannot be one, which the domain's own
/// types never are).
pub fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_read_and_made_where_missing() {
        let mut object = identity("apps/v1", "Deployment", "reviews-v1", "shop");
        assert_eq!(name_of(&object), "reviews-v1");
        assert_eq!(metadata_str(&object, "namespace"), Some("shop"));
        assert_eq!(annotation(&object, "a"), None);
        object_mut(object_mut(&mut object, "metadata"), "annotations")
            .insert("a".into(), Value::from("b"));
        assert_eq!(annotation(&object, "a"), Some("b"));
        object.insert("spec".into(), Value::from(3));
        object_mut(&mut object, "spec").insert("replicas".into(), Value::from(0));
        assert_eq!(
            object["spec"],
            json!({"replicas": 0}),
            "a non-object is replaced"
        );
        assert_eq!(name_of(&JsonObject::new()), "");
    }
}
