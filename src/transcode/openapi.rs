//! `GET /openapi.json`: an OpenAPI 3.0 description of the REST surface,
//! generated at start-up from the same route table (and so the same
//! `google.api.http` annotations) the transcoder serves, with the proto3 JSON
//! names clients use. Nothing here is written by hand per operation.

use std::collections::BTreeMap;

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{Route, RouteTable};
use crate::domain::release::API_VERSION;

/// Statuses every operation may answer besides 200, with what they mean.
const ERRORS: &[(u16, &str)] = &[
    (
        400,
        "Malformed JSON, an unknown field or parameter, or a broken rule (details name each field)",
    ),
    (401, "No valid X-Auth-Token or AK/SK signature"),
    (
        403,
        "The caller's policy does not allow this action on this mesh",
    ),
    (404, "Unknown mesh or release"),
    (
        409,
        "Conflict: name taken, service busy, stale resourceVersion or a release that is no longer active",
    ),
    (413, "Body over the limit"),
    (415, "Body without Content-Type: application/json"),
    (429, "The caller's rate limit is used up (see Retry-After)"),
    (500, "A fault of the service"),
    (503, "Store unavailable or shutting down"),
];

/// The description of every route in `table`.
pub fn describe(table: &RouteTable) -> Value {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut seen_rpcs: BTreeMap<&str, usize> = BTreeMap::new();
    for route in table.routes() {
        let binding = seen_rpcs.entry(&route.rpc).or_default();
        *binding += 1;
        let operation = operation(route, *binding, &mut schemas);
        paths
            .entry(openapi_path(&route.template.to_string()))
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), operation);
    }
    schemas.insert("Error".to_owned(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "meshrelease",
            "version": API_VERSION,
            "description": "Grayscale (canary and blue-green) releases for service-mesh workloads. Generated from the proto annotations the REST transcoder serves.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "akSk": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=... with a signed X-Sdk-Date",
                },
            },
        },
        "security": [{"token": []}, {"akSk": []}],
    })
}

/// The contract's error body.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["errorCode", "errorMsg"],
        "properties": {
            "errorCode": {"type": "string", "pattern": "^ASM\\.[0-9]{8}$"},
            "errorMsg": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "description"],
                    "properties": {
                        "field": {"type": "string"},
                        "description": {"type": "string"},
                    },
                    "additionalProperties": false,
                },
            },
        },
        "additionalProperties": false,
    })
}

/// `/v2/{name=projects/*}` becomes `/v2/{name}`.
fn openapi_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let (mut in_variable, mut in_pattern) = (false, false);
    for c in template.chars() {
        match c {
            '{' => in_variable = true,
            '=' if in_variable => in_pattern = true,
            '}' => (in_variable, in_pattern) = (false, false),
            _ => {}
        }
        if !in_pattern {
            out.push(c);
        }
    }
    out
}

fn operation(route: &Route, binding: usize, schemas: &mut BTreeMap<String, Value>) -> Value {
    let method_name = route.rpc.rsplit('.').next().unwrap_or(&route.rpc);
    let operation_id = if binding == 1 {
        method_name.to_owned()
    } else {
        format!("{method_name}{binding}")
    };
    let mut parameters = Vec::new();
    for variable in route.template.variables() {
        parameters.push(json!({
            "name": variable,
            "in": "path",
            "required": true,
            "schema": {"type": "string", "minLength": 1},
        }));
    }
    if route.body != "*" {
        for field in route.input.fields() {
            let bound = route.template.variables().iter().any(|v| v == field.name());
            let in_body = field.name() == route.body;
            let from_url = super::request::from_url(&field);
            if bound || in_body || !from_url || field.is_map() {
                continue;
            }
            parameters.push(json!({
                "name": field.json_name(),
                "in": "query",
                "required": false,
                "schema": field_schema(&field, schemas),
            }));
        }
    }
    let mut responses = Map::new();
    let answer = if route.is_streaming() {
        // One JSON object per line: each message as `result`, a failure as
        // `error` on the last line.
        json!({
            "description": "A stream of newline-delimited JSON objects, each {\"result\": message} or, last, {\"error\": Error}",
            "content": {super::NDJSON: {"schema": {
                "type": "object",
                "properties": {
                    "result": message_ref(&route.output, schemas),
                    "error": {"$ref": "#/components/schemas/Error"},
                },
            }}},
        })
    } else {
        json!({
            "description": "OK",
            "content": {"application/json": {"schema": message_ref(&route.output, schemas)}},
        })
    };
    responses.insert("200".into(), answer);
    for (status, description) in ERRORS {
        let mut response = json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        });
        if *status == 429 {
            response["headers"] = json!({
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}},
            });
        }
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": operation_id,
        "summary": route.rpc,
        "parameters": parameters,
        "responses": responses,
    });
    let body_schema = match route.body.as_str() {
        "" => None,
        "*" => Some(message_ref(&route.input, schemas)),
        field => route
            .input
            .get_field_by_name(field)
            .map(|f| field_schema(&f, schemas)),
    };
    if let Some(schema) = body_schema {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    operation
}

/// A `$ref` to the message's schema, adding it (and what it uses) once.
fn message_ref(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if let Some(schema) = well_known(message.full_name()) {
        return schema;
    }
    let name = message.name().to_owned();
    if !schemas.contains_key(&name) {
        // Placeholder first, so that recursive messages terminate.
        schemas.insert(name.clone(), Value::Null);
        let mut properties = Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), field_schema(&field, schemas));
        }
        schemas.insert(
            name.clone(),
            json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            }),
        );
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// proto3 JSON forms of the well-known types this API uses.
fn well_known(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "comma-separated field paths in lowerCamelCase, such as spec.trafficPolicy.weight",
        }),
        _ => return None,
    })
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let single = match field.kind() {
        Kind::Message(message) => message_ref(&message, schemas),
        Kind::Enum(e) => json!({
            "type": "string",
            "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
        }),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int32", "minimum": 0})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "integer", "format": "int64", "minimum": 0})
        }
    };
    if field.is_map() {
        // A map field's message is its entry; the value is field 2.
        let value = if let Kind::Message(entry) = field.kind() {
            field_schema(&entry.map_entry_value_field(), schemas)
        } else {
            json!({})
        };
        json!({"type": "object", "additionalProperties": value})
    } else if field.cardinality() == Cardinality::Repeated {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_leave_the_path_and_names_stay() {
        assert_eq!(openapi_path("/v2/{name=projects/*}/x"), "/v2/{name}/x");
        assert_eq!(
            openapi_path("/v2/meshes/{mesh_id}/releases"),
            "/v2/meshes/{mesh_id}/releases"
        );
    }
}
