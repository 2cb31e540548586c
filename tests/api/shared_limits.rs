//! Replicas on one PostgreSQL database share what they know of callers: a
//! signed write carried out by one is a replay to every other, and a
//! caller's rate limit holds whichever replica its requests reach (run when
//! MESHRELEASE_TEST_DATABASE_URL is set; said to be skipped otherwise).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{Server, start_with_env};
use crate::helpers::*;
use crate::replicas::Proxy;
use crate::signing::{
    AK, READER_AK, READER_SK, SK, Signed, assert_unauthenticated, releases_path, secret_file,
};

const LIMITED_TOKEN: &str = "limited-token-of-five-a-second";
/// The one name clients reach the replicas by (the Host they sign).
const BALANCER: &str = "releases.example.com";

/// Two access keys (`AK`, unlimited; `READER_AK`, here allowed all but
/// limited to 2 requests a second, one at once) and a token limited to 5 a
/// second (5 at once), as configuration.
fn callers(dir: &std::path::Path) -> (String, String) {
    let sk = secret_file(dir, "full.sk", SK);
    let slow_sk = secret_file(dir, "slow.sk", READER_SK);
    let credentials = format!(
        r#"[
          {{ subject = "sdk-client", access_key = "{AK}", secret_key_file = "{sk}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }},
          {{ subject = "sdk-slow", access_key = "{READER_AK}", secret_key_file = "{slow_sk}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 2, burst = 1 }} }}
        ]"#
    );
    let tokens = format!(
        r#"[
          {{ subject = "tester", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }},
          {{ subject = "limited", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 5, burst = 5 }} }}
        ]"#,
        sha(TOKEN),
        sha(LIMITED_TOKEN)
    );
    (credentials, tokens)
}

/// A replica of the service on `url`, in its own process.
fn replica(dir: &std::path::Path, url: &str, credentials: &str, tokens: &str) -> Server {
    start_with_env(
        dir,
        &["--database", url, "--credentials", credentials],
        &[("MESHRELEASE_TOKENS", tokens)],
    )
}

/// A replica in this process on `url` (so that the test can drive its
/// releases).
async fn replica_here(url: &str, schema: Option<&str>, credentials: &str) -> TestApp {
    let store = meshrelease::store::PostgresStore::connect(url, schema, 4)
        .await
        .unwrap();
    let credentials = credentials.to_owned();
    spawn_app_on_with(Arc::new(store), move |cli| {
        cli.credentials = Some(credentials);
    })
    .await
}

async fn weight_of(app: &TestApp, name: &str) -> Value {
    let (status, body) = json_of(app.get(name).await).await;
    assert_eq!(status, 200, "{body}");
    body["spec"]["trafficPolicy"]["weight"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn a_signed_write_replayed_to_either_replica_is_refused_and_a_429_retry_goes_through() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let (credentials, _) = callers(secrets.path());
    let a = replica_here(&url, None, &credentials).await;
    let b = replica_here(&url, None, &credentials).await;

    let create = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("signed-once", "reviews")),
    )
    .behind(BALANCER);
    let (status, created) = create.send(&a).await;
    assert_eq!(status, 200, "{created}");
    assert_unauthenticated(&create.send(&a).await, "replay");
    assert_unauthenticated(&create.send(&b).await, "replay");
    let (_, list) = b
        .list("/v2/meshes/demo-mesh/namespaces/default/releases")
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // A PATCH that moved all traffic to the gray version, replayed to
    // either replica after someone moved it back, changes nothing.
    a.drive_to_running("signed-once").await;
    let to_100 = Signed::new(
        "PATCH",
        format!("{}/signed-once", releases_path("default")),
        Some(&json!({"spec": {"trafficPolicy": {"weight": 100}}})),
    )
    .behind(BALANCER);
    assert_eq!(to_100.send(&b).await.0, 200);
    assert_eq!(
        a.patch(
            "signed-once",
            &json!({"spec": {"trafficPolicy": {"weight": 0}}})
        )
        .await
        .status(),
        200
    );
    assert_unauthenticated(&to_100.send(&a).await, "replay");
    assert_unauthenticated(&to_100.send(&b).await, "replay");
    assert_eq!(weight_of(&a, "signed-once").await, 0);

    // The slow key may send one request at once: a read on A uses it up,
    // so a create on A is 429; the SDK's retry of the very same bytes (here
    // reaching B) goes through, and only once.
    let slow = |mut request: Signed| {
        request.ak = READER_AK;
        request.sk = READER_SK;
        request
    };
    let retried = slow(Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("retried", "ratings")),
    ))
    .behind(BALANCER);
    assert_eq!(
        slow(Signed::new("GET", releases_path("default"), None))
            .behind(BALANCER)
            .send(&a)
            .await
            .0,
        200
    );
    assert_eq!(retried.send(&a).await.0, 429);
    let mut answer = retried.send(&b).await;
    for _ in 0..20 {
        if answer.0 != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer = retried.send(&b).await;
    }
    assert_eq!(answer.0, 200, "{answer:?}");
    for app in [&a, &b] {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_unauthenticated(&retried.send(app).await, "replay");
    }
    a.stop().await;
    b.stop().await;
    drop_schema(&schema).await;
}

/// How many of the requests sent for `seconds`, one after another, each to
/// the next of `bases` in turn, the limited token got answered.
async fn admitted_over(bases: &[&str], seconds: u64) -> usize {
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut admitted = 0;
    for i in 0.. {
        if Instant::now() >= deadline {
            break;
        }
        let status = http
            .get(format!(
                "{}/v2/meshes/{MESH}/namespaces/default/releases?limit=1",
                bases[i % bases.len()]
            ))
            .header("X-Auth-Token", LIMITED_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        match status {
            200 => admitted += 1,
            429 => {}
            other => panic!("answered {other}"),
        }
    }
    admitted
}

/// 5 a second for 5 s, and the burst of 5: within 10 % of the rate.
fn assert_about_the_limit(admitted: usize, what: &str) {
    let (rate_part, burst) = (25.0, 5.0);
    eprintln!("{what}: {admitted} admitted in 5 s");
    let admitted = admitted as f64;
    assert!(
        admitted >= rate_part * 0.9 && admitted <= rate_part * 1.1 + burst,
        "{what}: {admitted} admitted in 5 s, for a limit of 5 a second (burst 5)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn a_callers_rate_holds_across_replicas_and_when_one_is_killed() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let (credentials, tokens) = callers(secrets.path());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), &url, &credentials, &tokens);
    let b = replica(dir_b.path(), &url, &credentials, &tokens);
    a.wait_for_log("replicas share the rate limits: 2", 1).await;
    b.wait_for_log("replicas share the rate limits: 2", 1).await;

    let created = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("before-the-kill", "reviews")),
    )
    .behind(BALANCER);
    assert_eq!(created.send_to(&a.base).await.0, 200);

    assert_about_the_limit(
        admitted_over(&[&a.base, &b.base], 5).await,
        "alternating between two replicas",
    );

    // SIGKILL: no goodbye. B counts itself alone within seconds, and still
    // knows what A carried out.
    let b_base = b.base.clone();
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    b.wait_for_log("replicas share the rate limits: 1", 1).await;
    assert_unauthenticated(&created.send_to(&b_base).await, "replay");
    // The limit refills its burst while the count settles.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_about_the_limit(admitted_over(&[&b_base], 5).await, "one replica left");
    drop(b);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn without_its_database_a_replica_refuses_signed_writes_rather_than_risk_a_replay() {
    let Some((_, schema)) = fresh_schema().await else {
        return;
    };
    let (mut proxy, url) = Proxy::to_test_database().await;
    let secrets = tempfile::tempdir().unwrap();
    let (credentials, _) = callers(secrets.path());
    let app = replica_here(&url, Some(&schema), &credentials).await;
    let write = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("during-outage", "reviews")),
    );

    proxy.cut();
    // Fail closed: whether it is a replay cannot be told, so it does not run.
    let (status, refused) = write.send(&app).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["errorCode"], "ASM.01040002");
    // Back: the very same request runs (it never did), once.
    proxy.start().await;
    let mut answer = (0, Value::Null);
    for _ in 0..100 {
        answer = write.send(&app).await;
        if answer.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_unauthenticated(&write.send(&app).await, "replay");
    proxy.cut();
    drop_schema(&schema).await;
}
