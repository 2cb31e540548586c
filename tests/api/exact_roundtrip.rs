//! Any release the service accepts comes back equal to what was sent, as
//! JSON values with numbers compared exactly (an integer stays an integer,
//! 2^53 stays 2^53), from the create answer, Get, List and Watch, on every
//! store: memory, SQLite, and PostgreSQL when MESHRELEASE_TEST_DATABASE_URL
//! names one.

use std::sync::Arc;

use futures_util::StreamExt as _;
use meshrelease::pb::asm::v2 as pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

use crate::helpers::*;

const CASES: usize = 24;

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        Just(Value::from(1i64 << 53)),
        Just(Value::from(-(1i64 << 53))),
        Just(Value::from(0)),
        (-1_000_000i64..1_000_000, 1i64..1000)
            .prop_filter("not whole", |(a, b)| a % b != 0)
            .prop_map(|(a, b)| json!(a as f64 / b as f64)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "[a-zA-Z0-9 ._/:é-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z][a-zA-Z0-9]{0,8}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn policy() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..=100i32).prop_map(|w| json!({"weight": w})),
        ("[a-z][a-z0-9-]{0,8}", "[a-z0-9]{1,8}").prop_map(|(name, exact)| {
            json!({"match": [{"headers": [{"name": name, "exact": exact}], "os": ["Android"]}]})
        }),
    ]
}

fn body(name: &str, extra: Value, replicas: i64, policy: Value) -> Value {
    let mut body = release_body(name, &format!("{name}-svc"));
    let template = &mut body["spec"]["grayDeployments"][0]["template"];
    template["spec"]["replicas"] = json!(replicas);
    template["spec"]["strategy"] = json!({"extra": extra});
    body["spec"]["trafficPolicy"] = policy;
    body
}

/// The spec, as the client sent it.
fn spec_of(release: &Value) -> Value {
    release["spec"].clone()
}

/// The releases to send: drawn from the strategies with a fixed seed, so
/// that a failure replays.
fn samples() -> Vec<(String, Value)> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = (value(), 0..1000i64, policy());
    (0..CASES)
        .map(|i| {
            let (extra, replicas, policy) = strategy.new_tree(&mut runner).unwrap().current();
            let name = format!("exact-{i:03}");
            let release = body(&name, extra, replicas, policy);
            (name, release)
        })
        .collect()
}

async fn check_store(app: &TestApp) {
    let mut sent = Vec::new();
    for (name, release) in samples() {
        let (status, created) = json_of(app.create(&release).await).await;
        assert_eq!(status, 200, "{release}: {created}");
        assert_eq!(spec_of(&created), spec_of(&release), "create answer");
        let (_, read) = json_of(app.get(&name).await).await;
        assert_eq!(spec_of(&read), spec_of(&release), "get");
        // The completed gray Deployment keeps the numbers too.
        assert_eq!(
            read["status"]["grayDeployments"][0]["spec"]["strategy"],
            release["spec"]["grayDeployments"][0]["template"]["spec"]["strategy"]
        );
        sent.push((name, release));
    }
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=1000"))
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), CASES);
    for (item, (name, release)) in items.iter().zip(&sent) {
        assert_eq!(&item["metadata"]["name"], name);
        assert_eq!(spec_of(item), spec_of(release), "list");
    }
    let mut events = app
        .grpc()
        .await
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            namespace: String::new(),
            resource_version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    for (name, release) in &sent {
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
            .await
            .expect("an event")
            .expect("the stream goes on")
            .unwrap();
        let watched = serde_json::to_value(event.release.unwrap()).unwrap();
        assert_eq!(&watched["metadata"]["name"], name);
        assert_eq!(spec_of(&watched), spec_of(release), "watch");
    }
}

#[tokio::test]
async fn releases_come_back_exactly_from_memory() {
    let app = spawn_app_on(Arc::new(meshrelease::store::MemoryStore::new())).await;
    check_store(&app).await;
}

#[tokio::test]
async fn releases_come_back_exactly_from_sqlite() {
    let app = spawn_sqlite_app().await;
    check_store(&app).await;
    // And after a restart, from the file.
    let app = app.restart(|_| {}).await;
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=1000"))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), CASES);
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn releases_come_back_exactly_from_postgres() {
    let Some((_, schema)) = fresh_schema().await else {
        return;
    };
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").unwrap();
    let store = meshrelease::store::PostgresStore::connect(&url, Some(&schema), 4)
        .await
        .unwrap();
    let app = spawn_app_on(Arc::new(store)).await;
    let outcome = tokio::spawn(async move {
        check_store(&app).await;
        app.stop().await;
    })
    .await;
    drop_schema(&schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
