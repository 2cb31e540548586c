//! The service binary driving simulated clusters as a process would be
//! treated in production: killed with SIGKILL in each phase of a release
//! and started again (it resumes and completes), and run as two replicas on
//! one PostgreSQL database (exactly one drives, as the writes at the
//! clusters show by who sent them, and killing it moves the drive).

use std::time::Duration;

use serde_json::{Value, json};
use simcluster::resources::DEPLOYMENTS;

use crate::binary::{Server, start};
use crate::driver::{Clusters, clusters, split, traffic_is};
use crate::helpers::*;

fn release_url(base: &str, name: &str) -> String {
    format!("{base}/v2/meshes/{MESH}/namespaces/default/releases/{name}")
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    json_of(request.header("X-Auth-Token", TOKEN).send().await.unwrap()).await
}

async fn create(base: &str, name: &str, service: &str) {
    let (status, body) = send(
        http_client()
            .post(format!(
                "{base}/v2/meshes/{MESH}/namespaces/default/releases"
            ))
            .json(&release_body(name, service)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn patch(base: &str, name: &str, body: Value) {
    let (status, answer) = send(http_client().patch(release_url(base, name)).json(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

async fn end(base: &str, name: &str) {
    let (status, answer) =
        send(http_client().delete(format!("{}?action=end", release_url(base, name)))).await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits (bounded) until `check` holds for the release as read over REST.
async fn until(base: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (status, release) = send(http_client().get(release_url(base, name))).await;
        if status == 200 && check(&release) {
            return release;
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {what}; last seen: {last}");
}

fn phase(release: &Value) -> &str {
    release["status"]["phase"].as_str().unwrap_or_default()
}

fn sigkill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn driving(data_dir: &std::path::Path, clusters: &Clusters, who: &str, extra: &[&str]) -> Server {
    let flag = clusters.flag_for(who);
    let mut args = vec!["--clusters", &flag, "--resync-interval-ms", "200"];
    args.extend_from_slice(extra);
    start(data_dir, &args)
}

#[tokio::test]
async fn killed_in_each_phase_the_service_resumes_and_completes() {
    let mut clusters = clusters().await;
    // The gray version takes a while to be ready, so that Deploying lasts.
    clusters.b.faults().set_ready_delay(Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let service = driving(dir.path(), &clusters, "meshrelease", &[]);

    // Killed as soon as the create is answered (Pending, or a step later).
    create(&service.base, "survivor", "reviews").await;
    sigkill(service);

    // Killed while Deploying.
    let service = driving(dir.path(), &clusters, "meshrelease", &[]);
    until(&service.base, "survivor", "Deploying", |r| {
        phase(r) == "Deploying"
    })
    .await;
    sigkill(service);
    let service = driving(dir.path(), &clusters, "meshrelease", &[]);
    until(&service.base, "survivor", "Running", |r| {
        phase(r) == "Running"
    })
    .await;

    // Killed while Running, with a traffic change asked for and maybe not
    // yet carried out.
    patch(
        &service.base,
        "survivor",
        json!({"spec": {"trafficPolicy": {"weight": 100}}}),
    )
    .await;
    sigkill(service);
    let service = driving(dir.path(), &clusters, "meshrelease", &[]);
    until(&service.base, "survivor", "traffic 100", traffic_is(100)).await;

    // Killed while Ending: the cluster that holds the original is away, so
    // the end cannot finish before the kill.
    clusters.a.pause().await;
    end(&service.base, "survivor").await;
    until(&service.base, "survivor", "Ending", |r| {
        phase(r) == "Ending"
    })
    .await;
    sigkill(service);
    clusters.a.resume().await.unwrap();
    let service = driving(dir.path(), &clusters, "meshrelease", &[]);
    until(&service.base, "survivor", "Ended", |r| phase(r) == "Ended").await;
    clusters.assert_ended_on_gray().await;
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .is_some(),
        "the gray Deployment serves now"
    );
    sigkill(service);
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn of_two_replicas_on_postgresql_one_drives_and_killing_it_moves_the_drive() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let clusters = clusters().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = driving(dir_a.path(), &clusters, "replica-a", &["--database", &url]);
    let b = driving(dir_b.path(), &clusters, "replica-b", &["--database", &url]);

    create(&a.base, "shared", "reviews").await;
    until(&b.base, "shared", "Running", |r| phase(r) == "Running").await;
    let (by_a, by_b) = (
        clusters.driving_requests_by("replica-a"),
        clusters.driving_requests_by("replica-b"),
    );
    assert!(
        (by_a == 0) != (by_b == 0),
        "exactly one replica drives: replica-a sent {by_a} requests for namespaced objects, replica-b {by_b}"
    );
    let (driver, survivor, driver_name, survivor_name) = if by_a > 0 {
        (a, b, "replica-a", "replica-b")
    } else {
        (b, a, "replica-b", "replica-a")
    };
    assert!(clusters.writes_by(driver_name) > 0, "the driver wrote");

    sigkill(driver);
    let written_before = clusters.writes_by(driver_name);
    patch(
        &survivor.base,
        "shared",
        json!({"spec": {"trafficPolicy": {"weight": 30}}}),
    )
    .await;
    until(&survivor.base, "shared", "traffic 30", traffic_is(30)).await;
    assert_eq!(clusters.reviews_routes().await, split(70, 30));
    assert!(
        clusters.writes_by(survivor_name) > 0,
        "the survivor drives now"
    );
    assert_eq!(
        clusters.writes_by(driver_name),
        written_before,
        "nothing from the killed one"
    );

    sigkill(survivor);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn every_change_the_driver_makes_in_a_cluster_is_in_the_audit_trail() {
    let clusters = clusters().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let service = driving(
        dir.path(),
        &clusters,
        "meshrelease",
        &["--audit-log", audit.to_str().unwrap()],
    );
    create(&service.base, "audited", "reviews").await;
    until(&service.base, "audited", "Running", |r| {
        phase(r) == "Running"
    })
    .await;
    sigkill(service);
    let text = std::fs::read_to_string(&audit).unwrap();
    let driver: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["fields"]["subject"] == "meshrelease-driver")
        .collect();
    // At least the gray Deployment, applied in cluster-b, named with its
    // release; and nothing the driver did is missing its cluster.
    assert!(
        driver
            .iter()
            .any(|r| r["fields"]["object"] == "reviews-v1-v2"
                && r["fields"]["cluster"] == "cluster-b"
                && r["fields"]["release"] == "audited"
                && r["fields"]["outcome"] == "OK"),
        "no record of the gray Deployment:\n{text}"
    );
    assert!(
        driver
            .iter()
            .all(|r| r["fields"]["cluster"].is_string() && r["fields"]["action"].is_string()),
        "{text}"
    );
}
