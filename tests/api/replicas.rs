//! Several replicas on one PostgreSQL database (run when
//! MESHRELEASE_TEST_DATABASE_URL is set; said to be skipped otherwise).

use std::time::Duration;

use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use tokio_stream::StreamExt as _;

use crate::binary::{Server, start};
use crate::helpers::*;

/// A database URL whose connections use a fresh schema of their own.
async fn fresh_schema() -> Option<(String, String)> {
    let Ok(url) = std::env::var("MESHRELEASE_TEST_DATABASE_URL") else {
        eprintln!("skipped: set MESHRELEASE_TEST_DATABASE_URL to run the replica tests");
        return None;
    };
    let schema = format!("mr_replicas_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    Some((
        format!("{url}{separator}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

async fn drop_schema(schema: &str) {
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

async fn post(base: &str, name: &str, service: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases"
        ))
        .header("X-Auth-Token", TOKEN)
        .json(&release_body(name, service))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn stop(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn two_replicas_share_one_database() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both start at once: migrations must not collide.
    let (a, b) = (
        start(dir_a.path(), &["--database", &url]),
        start(dir_b.path(), &["--database", &url]),
    );

    // A watcher on B sees what is written through A.
    let channel = tonic::transport::Channel::from_shared(b.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut events = ReleaseServiceClient::new(channel)
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(post(&a.base, "made-on-a", "reviews").await, 200);
    let read = reqwest::Client::new()
        .get(format!(
            "{}/v2/meshes/{MESH}/namespaces/default/releases/made-on-a",
            b.base
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "a create through A is read through B");

    let event = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.r#type, "ADDED");
    assert_eq!(event.release.unwrap().metadata.unwrap().name, "made-on-a");

    // 20 racing creates of one name over both replicas: exactly one 200.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        tasks.push(tokio::spawn(async move {
            post(&base, "raced-name", &format!("svc-{i}")).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );

    stop(a);
    stop(b);
    drop_schema(&schema).await;
}
