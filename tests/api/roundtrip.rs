//! JSON -> proto -> bytes -> proto -> JSON keeps a release as it was.

use meshrelease::pb::asm::v2 as pb;
use proptest::prelude::*;
use prost::Message as _;
use serde_json::{Map, Value, json};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        "[a-zA-Z0-9 ._/:-]{0,12}".prop_map(Value::from),
    ]
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    let value = json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,8}", value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn text() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}"
}

fn release() -> impl Strategy<Value = Value> {
    (
        (text(), text(), text(), text()),
        (text(), text(), text(), text(), text()),
        prop::collection::vec((text(), json_object()), 0..4),
        (0i64..4_000_000_000, 0u32..1000),
    )
        .prop_map(|((mesh, name, uid, ns), (svc, cluster, dep, version, kind), grays, (secs, millis))| {
            let time = chrono::DateTime::from_timestamp(secs, millis * 1_000_000)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            let grays: Vec<Value> = grays
                .into_iter()
                .map(|(c, t)| json!({"clusterID": c, "template": Value::Object(t)}))
                .collect();
            json!({
                "kind": "Release",
                "apiVersion": "asm/v2",
                "metadata": {"meshID": mesh, "name": name, "uid": uid, "namespace": ns},
                "spec": {"serviceName": svc, "clusterID": cluster, "deploymentName": dep, "version": version,
                         "type": kind, "grayDeployments": grays.clone()},
                "status": {"phase": "Pending", "startTime": time, "updateTime": time,
                           "grayDeployments": grays.iter().map(|g| g["template"].clone()).collect::<Vec<_>>()}
            })
        })
}

/// `value` as JSON text with the keys of every object in an order of
/// `seed`'s choosing (a client's map order is arbitrary).
fn shuffled_text(value: &Value, seed: &mut u64) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Fisher-Yates with xorshift: any order, reproducible from the seed.
            for i in (1..entries.len()).rev() {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                entries.swap(i, (*seed % (i as u64 + 1)) as usize);
            }
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), shuffled_text(v, seed)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| shuffled_text(v, seed)).collect();
            format!("[{}]", items.join(","))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => value.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_release_survives_json_proto_json(
        original in release(),
        seeds in (1u64..u64::MAX, 1u64..u64::MAX),
    ) {
        // The same release, sent twice with its keys in two orders.
        let first = shuffled_text(&original, &mut seeds.0.clone());
        let second = shuffled_text(&original, &mut seeds.1.clone());
        let message: pb::Release = serde_json::from_str(&first).unwrap();
        let other: pb::Release = serde_json::from_str(&second).unwrap();
        prop_assert_eq!(&message, &other);
        let bytes = message.encode_to_vec();
        let decoded = pb::Release::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(&decoded, &message);
        // One release is one JSON text, whatever order its keys came in.
        prop_assert_eq!(
            serde_json::to_string(&decoded).unwrap(),
            serde_json::to_string(&other).unwrap()
        );
        let back = serde_json::to_value(&decoded).unwrap();
        // Lists that are empty are omitted on output, as proto3 JSON does.
        let mut expected = original;
        if expected["spec"]["grayDeployments"].as_array().is_some_and(Vec::is_empty) {
            expected["spec"].as_object_mut().unwrap().remove("grayDeployments");
            expected["status"].as_object_mut().unwrap().remove("grayDeployments");
        }
        prop_assert_eq!(back, expected);
    }
}
