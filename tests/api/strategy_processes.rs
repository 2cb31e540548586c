//! A release that runs itself survives what processes go through: killed
//! with SIGKILL during a timed pause, while a gate holds it, and right
//! after a setWeight was stored (before the clusters held it), it resumes
//! at the stored step, neither repeating nor skipping one, its pause
//! counted from the stored start; with two replicas on PostgreSQL, killing
//! the driving one lets the other go on at the same step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::binary::{Server, start};
use crate::driver::{Clusters, clusters};
use crate::helpers::*;
use crate::strategy::{Hooks, strategy_of, with_strategy};

fn release_url(base: &str, name: &str) -> String {
    format!("{base}/v2/meshes/{MESH}/namespaces/default/releases/{name}")
}

async fn get(base: &str, name: &str) -> Value {
    let response = http_client()
        .get(release_url(base, name))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    json_of(response).await.1
}

async fn until(base: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let release = get(base, name).await;
        if check(&release) {
            return release;
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {what}; last seen: {last}");
}

async fn create(base: &str, body: &Value) {
    let (status, answer) = json_of(
        http_client()
            .post(format!(
                "{base}/v2/meshes/{MESH}/namespaces/default/releases"
            ))
            .header("X-Auth-Token", TOKEN)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

fn sigkill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn service(
    dir: &std::path::Path,
    clusters: &Clusters,
    who: &str,
    mesh_keys: &str,
    extra: &[&str],
) -> Server {
    let flag = clusters.flag_for(who);
    let meshes =
        format!(r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"]{mesh_keys} }}]"#);
    let mut args = vec![
        "--clusters",
        &flag,
        "--resync-interval-ms",
        "200",
        "--meshes",
        &meshes,
    ];
    args.extend_from_slice(extra);
    start(dir, &args)
}

fn step(release: &Value) -> i64 {
    strategy_of(release)["currentStep"].as_i64().unwrap_or(0)
}

fn step_start(release: &Value) -> Option<DateTime<Utc>> {
    strategy_of(release)["stepStartTime"]
        .as_str()
        .map(|t| t.parse().unwrap())
}

#[tokio::test]
async fn killed_during_a_timed_pause_it_resumes_at_the_stored_step_counting_from_the_stored_start()
{
    let clusters = clusters().await;
    let dir = tempfile::tempdir().unwrap();
    let first = service(dir.path(), &clusters, "first", "", &[]);
    create(
        &first.base,
        &with_strategy(
            "paused-then-killed",
            "reviews",
            json!({"steps": [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 100}],
                   "analysis": {"interval": "1s"}}),
        ),
    )
    .await;
    let pausing = until(&first.base, "paused-then-killed", "in the pause", |r| {
        step(r) == 1
    })
    .await;
    let paused_at = step_start(&pausing).unwrap();
    sigkill(first);

    let second = service(dir.path(), &clusters, "second", "", &[]);
    let mut seen = vec![step(&pausing)];
    let ended = loop {
        let release = get(&second.base, "paused-then-killed").await;
        let now_at = step(&release);
        assert!(
            now_at >= *seen.last().unwrap(),
            "a step was repeated: {seen:?} then {now_at}"
        );
        if now_at == 1 {
            assert_eq!(
                step_start(&release),
                Some(paused_at),
                "the pause counts from its stored start"
            );
        }
        seen.push(now_at);
        if release["status"]["phase"] == "Ended" {
            break release;
        }
        assert!(seen.len() < 1000, "never Ended: {release}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The step after the pause began no sooner than the pause's end.
    let last_start = step_start(&ended).unwrap();
    assert!(
        last_start >= paused_at + chrono::TimeDelta::seconds(3),
        "the pause was cut short: it began {paused_at}, the next step {last_start}"
    );
    sigkill(second);
}

#[tokio::test]
async fn killed_while_a_gate_holds_it_holds_on_then_goes_on() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    hooks.answer("/gate", &[503]);
    let keys = format!(r#", webhook_url_prefixes = ["{}"]"#, hooks.prefix());
    let dir = tempfile::tempdir().unwrap();
    let first = service(dir.path(), &clusters, "first", &keys, &[]);
    create(
        &first.base,
        &with_strategy(
            "gated-then-killed",
            "reviews",
            json!({"steps": [{"setWeight": 30}, {"setWeight": 100}],
                   "analysis": {"interval": "1s", "webhooks": [
                       {"name": "gate", "type": "confirm-traffic-increase", "url": hooks.url("/gate")}]}}),
        ),
    )
    .await;
    until(&first.base, "gated-then-killed", "held by the gate", |r| {
        strategy_of(r)["pauseReason"] == "HeldByWebhook: gate"
    })
    .await;
    let asked = hooks.calls_to("/gate").len();
    sigkill(first);
    let second = service(dir.path(), &clusters, "second", &keys, &[]);
    // Still held: asked again by the new process, nothing moved.
    for _ in 0..200 {
        if hooks.calls_to("/gate").len() > asked + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = get(&second.base, "gated-then-killed").await;
    assert_eq!(step(&held), 0, "{held}");
    assert_eq!(
        held["spec"]["trafficPolicy"],
        json!({"weight": 0}),
        "{held}"
    );
    hooks.answer("/gate", &[200]);
    until(&second.base, "gated-then-killed", "Ended", |r| {
        r["status"]["phase"] == "Ended"
    })
    .await;
    sigkill(second);
}

#[tokio::test]
async fn killed_right_after_a_set_weight_was_stored_the_weight_is_applied_and_the_step_not_repeated()
 {
    let mut clusters = clusters().await;
    let hooks = Hooks::start().await;
    // Held before the first step until the routing's cluster is away.
    hooks.answer("/start", &[503]);
    let keys = format!(r#", webhook_url_prefixes = ["{}"]"#, hooks.prefix());
    let dir = tempfile::tempdir().unwrap();
    let first = service(dir.path(), &clusters, "first", &keys, &[]);
    create(
        &first.base,
        &with_strategy(
            "stored-then-killed",
            "reviews",
            json!({"steps": [{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}],
                   "analysis": {"interval": "1s", "webhooks": [
                       {"name": "start", "type": "confirm-rollout", "url": hooks.url("/start")}]}}),
        ),
    )
    .await;
    until(
        &first.base,
        "stored-then-killed",
        "held before the first step",
        |r| strategy_of(r)["pauseReason"] == "HeldByWebhook: start",
    )
    .await;
    // The cluster with the routing goes away: the weight is stored, but
    // cannot be applied.
    clusters.a.pause().await;
    hooks.answer("/start", &[200]);
    let stored = until(&first.base, "stored-then-killed", "weight 40 stored", |r| {
        r["spec"]["trafficPolicy"] == json!({"weight": 40})
    })
    .await;
    assert_ne!(
        stored["status"]["traffic"],
        json!({"weight": 40}),
        "{stored}"
    );
    assert_eq!(step(&stored), 0);
    sigkill(first);
    clusters.a.resume().await.unwrap();

    let second = service(dir.path(), &clusters, "second", &keys, &[]);
    let waiting = until(
        &second.base,
        "stored-then-killed",
        "waiting for a resume",
        |r| strategy_of(r)["pauseReason"] == "WaitingForResume",
    )
    .await;
    assert_eq!(step(&waiting), 1, "one step further, not two, not none");
    assert_eq!(waiting["status"]["traffic"], json!({"weight": 40}));
    assert_eq!(
        clusters.reviews_routes().await,
        crate::driver::split(60, 40)
    );
    sigkill(second);
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn of_two_replicas_killing_the_driving_one_lets_the_other_go_on_at_the_same_step() {
    let Some((database, schema)) = fresh_schema().await else {
        return;
    };
    let clusters = clusters().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = service(
        dir_a.path(),
        &clusters,
        "replica-a",
        "",
        &["--database", &database],
    );
    let b = service(
        dir_b.path(),
        &clusters,
        "replica-b",
        "",
        &["--database", &database],
    );
    create(
        &a.base,
        &with_strategy(
            "shared-strategy",
            "reviews",
            json!({"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}],
                   "analysis": {"interval": "1s"}}),
        ),
    )
    .await;
    let waiting = until(&b.base, "shared-strategy", "waiting for a resume", |r| {
        strategy_of(r)["pauseReason"] == "WaitingForResume"
    })
    .await;
    assert_eq!(step(&waiting), 1);
    let (by_a, by_b) = (
        clusters.driving_requests_by("replica-a"),
        clusters.driving_requests_by("replica-b"),
    );
    assert!(
        (by_a == 0) != (by_b == 0),
        "exactly one replica drives: {by_a} and {by_b} requests"
    );
    let (driver, survivor) = if by_a > 0 { (a, b) } else { (b, a) };
    sigkill(driver);
    // Resumed through the survivor, which drives now.
    let (status, resumed) = json_of(
        http_client()
            .post(format!(
                "{}:resume",
                release_url(&survivor.base, "shared-strategy")
            ))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(step(&resumed), 2, "the same step, then the next");
    until(&survivor.base, "shared-strategy", "Ended", |r| {
        r["status"]["phase"] == "Ended"
    })
    .await;
    sigkill(survivor);
    drop_schema(&schema).await;
}
