//! Field masks (AIP-134, `google.protobuf.FieldMask`) at the edge: a mask
//! derived from the fields a JSON body carries, as grpc-gateway derives one
//! for PATCH, and mask paths (proto names) turned into the JSON field paths
//! the domain speaks (`spec.traffic_policy` -> `spec.trafficPolicy`).

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde_json::Value;

use crate::domain::Violation;

/// The descriptor pool of `proto/`, read once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| unreachable!("the descriptor set is built with the crate: {e}"))
    })
}

/// Fields a PATCH replaces whole: a mask names them, never their parts.
const WHOLE: &[&str] = &["spec.strategy"];

/// The paths (proto names, dotted) of every field `json` sets in a message
/// of type `message`: nested messages are followed down to their fields;
/// lists, maps, well-known types and scalars are leaves; an empty object
/// names its field. Keys are JSON or proto names; unknown keys are skipped
/// (decoding refuses them with a better message).
pub fn derive(message: &MessageDescriptor, json: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut paths = Vec::new();
    walk(message, json, "", &mut paths);
    paths
}

fn walk(
    message: &MessageDescriptor,
    json: &serde_json::Map<String, Value>,
    prefix: &str,
    paths: &mut Vec<String>,
) {
    for (key, value) in json {
        let Some(field) = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key))
        else {
            continue;
        };
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), value) {
            // Replaced whole, never field by field.
            _ if WHOLE.contains(&path.as_str()) => paths.push(path),
            (Kind::Message(inner), Value::Object(object))
                if !field.is_list()
                    && !field.is_map()
                    && !inner.full_name().starts_with("google.protobuf.")
                    && !object.is_empty() =>
            {
                walk(&inner, object, &format!("{path}."), paths);
            }
            _ => paths.push(path),
        }
    }
}

/// A mask path of proto names as the JSON field path the contract uses
/// (`metadata.mesh_id` -> `metadata.meshID`). A path naming no field is a
/// violation of `field`.
pub fn to_json_path(
    message: &MessageDescriptor,
    path: &str,
    field: &str,
) -> Result<String, Violation> {
    let mut current = Some(message.clone());
    let mut out = Vec::new();
    for part in path.split('.') {
        match &current {
            Some(m) => {
                let Some(f) = m.get_field_by_name(part) else {
                    return Err(Violation::new(
                        field,
                        format!(
                            "names {}, which is not a field of {}",
                            crate::domain::names::quoted(path),
                            message.name()
                        ),
                    ));
                };
                out.push(f.json_name().to_owned());
                current = match (f.kind(), f.is_list() || f.is_map()) {
                    (Kind::Message(inner), false) => Some(inner),
                    (_, _) => None,
                };
            }
            // Below a list or a scalar: kept for the domain to refuse.
            None => out.push(part.to_owned()),
        }
    }
    Ok(out.join("."))
}

pub use crate::pb::wkt::lower_camel;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release() -> MessageDescriptor {
        pool().get_message_by_name("asm.v2.Release").unwrap()
    }

    #[test]
    fn a_body_names_its_leaves() {
        let body = json!({
            "metadata": {"resourceVersion": "7"},
            "spec": {"trafficPolicy": {"weight": 0}, "grayDeployments": [{"clusterID": "a"}]},
            "status": {}
        });
        let mut paths = derive(&release(), body.as_object().unwrap());
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "metadata.resource_version",
                "spec.gray_deployments",
                "spec.traffic_policy.weight",
                "status"
            ]
        );
    }

    #[test]
    fn proto_paths_become_json_paths() {
        assert_eq!(
            to_json_path(
                &release(),
                "spec.traffic_policy.match.headers",
                "updateMask"
            )
            .unwrap(),
            "spec.trafficPolicy.match.headers"
        );
        assert_eq!(
            to_json_path(&release(), "metadata.mesh_id", "updateMask").unwrap(),
            "metadata.meshID"
        );
        let err = to_json_path(&release(), "spec.bogus", "updateMask").unwrap_err();
        assert_eq!(err.field, "updateMask");
        assert_eq!(
            lower_camel("spec.traffic_policy.weight"),
            "spec.trafficPolicy.weight"
        );
    }
}
