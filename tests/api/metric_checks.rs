//! Releases judged by their metrics, against a real Prometheus (Debian's
//! binary, run by the test; see prometheus.rs) scraping Istio's standard
//! series from an exporter whose error rates and latencies each test sets,
//! and the simulated clusters: a healthy gray version passes every
//! built-in and a query with placeholders, and ends; 30 % of 5xx rolls
//! back naming the check, its value and its threshold; an idle gray
//! version holds with NoData and only maxHold trips it; a slow one rolls
//! back on its p99; relative to a worse original the gray version passes;
//! Prometheus stopped gives Error rounds that hold, and started again the
//! release goes on. Over REST and gRPC; assertions on end states and the
//! order of what happened (the service's own record), never on elapsed
//! time. Each test names its own Service, so that one Prometheus serves
//! them all at once.

use std::time::Duration;

use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use serde_json::{Value, json};
use simcluster::resources::VIRTUAL_SERVICES;

use crate::driver::*;
use crate::helpers::*;
use crate::prometheus::{self, PrometheusProcess, Traffic};
use crate::strategy::{strategy_of, with_strategy};

const NS: &str = "default";

/// The workloads of a release of `service` as the tests' clusters name
/// them: the gray Deployment, and the original.
fn gray(service: &str) -> String {
    format!("{service}-v1-v2")
}

fn original(service: &str) -> String {
    format!("{service}-v1")
}

/// Simulated clusters holding `service`, and a service whose mesh reads
/// `prometheus_url`.
async fn setup(service: &str, prometheus_url: &str) -> (Clusters, TestApp) {
    let clusters = clusters().await;
    clusters.a.put_original(service, 2).await;
    let app = app_with(
        &clusters,
        &format!(r#", prometheus_url = "{prometheus_url}""#),
    )
    .await;
    (clusters, app)
}

/// Waits (bounded by minutes, for a slow machine) until `check` holds.
async fn until_judged(
    app: &TestApp,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        let (_, release) = json_of(app.get(name).await).await;
        if check(&release) {
            return release;
        }
        // A release that is over, its traffic settled, will not get there.
        let phase = release["status"]["phase"].as_str().unwrap_or_default();
        let settled = phase == "Ended"
            || phase == "Canceled"
            || (phase == "Failed" && traffic_is(0)(&release));
        if settled {
            panic!("{name} is {phase} and never reached {what}: {release}");
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} never reached {what}; last seen: {last}");
}

async fn checks_of(app: &TestApp, name: &str) -> Vec<Value> {
    let (status, list) = app
        .list(&format!(
            "/v2/meshes/{MESH}/namespaces/{NS}/releases/{name}/checks"
        ))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["kind"], "ReleaseCheckList");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The results of the check `name`, oldest first.
fn results_of<'a>(items: &'a [Value], name: &str) -> Vec<&'a Value> {
    items.iter().filter(|i| i["name"] == name).collect()
}

fn verdicts(items: &[&Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["verdict"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn latest_check<'a>(release: &'a Value, name: &str) -> Option<&'a Value> {
    strategy_of(release)["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn verdict_is(name: &'static str, verdict: &'static str) -> impl Fn(&Value) -> bool {
    move |r| latest_check(r, name).is_some_and(|c| c["verdict"] == verdict)
}

fn condition<'a>(release: &'a Value, kind: &str) -> &'a Value {
    release["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn metric(name: &str, builtin: &str, bounds: Value) -> Value {
    let mut m = json!({"name": name, "builtin": builtin, "window": "5s"});
    for (k, v) in bounds.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

/// The exporter serves `gray` for the gray version of `service` and a
/// healthy original beside it.
fn serve_with_a_healthy_original(service: &str, gray: Traffic) {
    prometheus::exporter().serve(NS, &self::gray(service), gray);
    prometheus::exporter().serve(NS, &original(service), Traffic::healthy());
}

/// Creates release `name` of `service` with `strategy` over gRPC; answers
/// the client, for what follows.
async fn create_over_grpc(
    app: &TestApp,
    name: &str,
    service: &str,
    strategy: Value,
) -> ReleaseServiceClient<tonic::transport::Channel> {
    let mut request = grpc_request(name, service);
    request
        .release
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .strategy = Some(serde_json::from_value(strategy).unwrap());
    let mut client = app.grpc().await;
    client.create_release(authed(request)).await.unwrap();
    client
}

/// The phases and applied weights a release went through, in order, as a
/// watch from the first change replays them, up to `last`.
async fn history(
    app: &TestApp,
    name: &str,
    last: (&str, Option<i64>),
) -> Vec<(String, Option<i64>)> {
    let response = app
        .http
        .get(format!(
            "{}/v2/meshes/{MESH}/namespaces/{NS}/releases:watch?resourceVersion=0",
            app.base
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen: Vec<(String, Option<i64>)> = Vec::new();
    let mut buffer = Vec::new();
    let mut stream = response;
    let finished = |seen: &[(String, Option<i64>)]| {
        seen.last()
            .is_some_and(|(p, w)| p == last.0 && *w == last.1)
    };
    while !finished(&seen) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("the watch goes on to the release's end")
            .unwrap()
            .expect("the watch stays open");
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).unwrap();
            let release = &event["result"]["release"];
            if release["metadata"]["name"] != name {
                continue;
            }
            let state = (
                release["status"]["phase"].as_str().unwrap_or("").to_owned(),
                release["status"]["traffic"]["weight"]
                    .as_i64()
                    .or_else(|| release["status"]["traffic"].is_object().then_some(0)),
            );
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
    }
    seen
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn a_healthy_gray_version_passes_every_builtin_and_a_query_and_ends() {
    let url = prometheus::shared().await;
    let service = "mc-healthy";
    serve_with_a_healthy_original(service, Traffic::healthy());
    let (clusters, app) = setup(service, &url).await;
    let query = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"}[{{ window }}]))"#;
    let body = with_strategy(
        "healthy",
        service,
        json!({
            "steps": [{"setWeight": 50}, {"analysis": {"count": 2}}, {"setWeight": 100}],
            "analysis": {
                "interval": "2s", "failureLimit": 1, "maxHold": "5m",
                "metrics": [
                    metric("success-rate", "successRate", json!({"min": 99})),
                    metric("p50", "latencyP50", json!({"max": 25})),
                    metric("p95", "latencyP95", json!({"max": 100})),
                    metric("p99", "latencyP99", json!({"max": 500})),
                    metric("rps", "requestRate", json!({"min": 5, "max": 100})),
                    {"name": "rps-by-query", "query": query, "min": 5, "window": "5s"}
                ]
            }
        }),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    let ended = until_judged(&app, "healthy", "Ended", phase_is("Ended")).await;
    assert_eq!(
        condition(&ended, "Analysis")["status"],
        "True",
        "{}",
        ended["status"]
    );
    let vs = clusters
        .a
        .get(VIRTUAL_SERVICES, NS, service)
        .await
        .expect("the VirtualService");
    assert_eq!(routes(&vs), vec![("v2".to_owned(), 100)]);

    let items = checks_of(&app, "healthy").await;
    let expect = |name: &str, low: f64, high: f64| {
        let results = results_of(&items, name);
        let passed: Vec<&&Value> = results.iter().filter(|r| r["verdict"] == "Pass").collect();
        assert!(passed.len() >= 2, "{name}: {results:?}");
        assert!(
            !verdicts(&results)
                .iter()
                .any(|v| v == "Fail" || v == "Error"),
            "{name}: {results:?}"
        );
        for pass in passed {
            let value = pass["value"].as_f64().unwrap_or(0.0);
            assert!(
                (low..=high).contains(&value),
                "{name}: {value} not in {low}..{high}: {pass}"
            );
            if name != "rps-by-query" {
                assert!(pass["requests"].as_i64().unwrap_or(0) > 0, "{pass}");
            }
        }
    };
    expect("success-rate", 100.0, 100.0);
    // Every request takes 20 ms: in Istio's (10, 25] bucket.
    expect("p50", 10.0, 25.0);
    expect("p95", 10.0, 25.0);
    expect("p99", 10.0, 25.0);
    expect("rps", 5.0, 60.0);
    expect("rps-by-query", 5.0, 60.0);
    let by_query = results_of(&items, "rps-by-query");
    let sent = by_query.last().unwrap()["query"].as_str().unwrap();
    assert!(
        sent.contains(
            r#"destination_workload_namespace="default",destination_workload="mc-healthy-v1-v2""#
        ) && !sent.contains("{{"),
        "the placeholders filled in: {sent}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn thirty_percent_of_5xx_rolls_back_naming_the_check_its_value_and_threshold() {
    let url = prometheus::shared().await;
    let service = "mc-erring";
    serve_with_a_healthy_original(
        service,
        Traffic {
            errors: 0.3,
            ..Traffic::healthy()
        },
    );
    let (clusters, app) = setup(service, &url).await;
    // Over gRPC: create, then the checks.
    let mut client = create_over_grpc(
        &app,
        "erring",
        service,
        json!({
            "steps": [{"setWeight": 20}, {"analysis": {"count": 3}}, {"setWeight": 100}],
            "analysis": {"interval": "2s", "failureLimit": 2,
                         "metrics": [metric("success-rate", "successRate", json!({"min": 99}))]}
        }),
    )
    .await;

    let failed = until_judged(&app, "erring", "Failed", phase_is("Failed")).await;
    let message = failed_message(&failed);
    assert_eq!(condition(&failed, "Failed")["reason"], "AnalysisFailed");
    assert!(
        message.contains("success-rate") && message.contains("is below 99"),
        "{message}"
    );
    assert_eq!(failed["spec"]["trafficPolicy"], json!({"weight": 0}));
    let back = until_judged(&app, "erring", "all traffic on the original", traffic_is(0)).await;
    assert_eq!(strategy_of(&back)["consecutiveFailures"], 2);
    let vs = clusters.a.get(VIRTUAL_SERVICES, NS, service).await.unwrap();
    assert!(
        routes(&vs)
            .iter()
            .all(|(subset, w)| subset == "v1" || *w == 0),
        "nothing to the gray version: {vs}"
    );
    let seen = history(&app, "erring", ("Failed", Some(0))).await;
    assert_in_order(
        &seen,
        &[
            ("Running", Some(20)),
            ("Failed", Some(20)),
            ("Failed", Some(0)),
        ],
    );

    let checks = client
        .list_release_checks(authed(meshrelease::pb::asm::v2::ListReleaseChecksRequest {
            mesh_id: MESH.into(),
            namespace: NS.into(),
            name: "erring".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let fails: Vec<_> = checks
        .items
        .iter()
        .filter(|c| c.verdict == "Fail")
        .collect();
    assert_eq!(fails.len(), 2, "{:?}", checks.items);
    for fail in fails {
        let value = fail.value.unwrap_or(0.0);
        assert!((55.0..=85.0).contains(&value), "30 % of 5xx: {value}");
        assert_eq!(fail.min, Some(99.0));
        assert!(fail.requests.unwrap_or(0) > 0);
        assert!(
            fail.query.contains(r#"response_code!~"5..""#),
            "{}",
            fail.query
        );
        assert!(fail.message.ends_with("is below 99"), "{}", fail.message);
    }
}

/// `expected` happened in this order (other states may come between).
fn assert_in_order(seen: &[(String, Option<i64>)], expected: &[(&str, Option<i64>)]) {
    let mut rest = seen.iter();
    for (phase, weight) in expected {
        assert!(
            rest.any(|(p, w)| p == phase && w == weight),
            "{phase} at weight {weight:?} not where expected in {seen:?}"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn an_idle_gray_version_holds_with_no_data_and_only_max_hold_trips_it() {
    let url = prometheus::shared().await;
    let service = "mc-idle";
    // The original serves; the gray version never received a request.
    prometheus::exporter().serve(NS, &original(service), Traffic::healthy());
    let (_clusters, app) = setup(service, &url).await;
    let body = with_strategy(
        "idle",
        service,
        json!({
            "steps": [{"setWeight": 20}, {"analysis": {"count": 2}}, {"setWeight": 100}],
            "analysis": {"interval": "2s", "failureLimit": 1, "maxHold": "12s",
                         "metrics": [metric("success-rate", "successRate", json!({"min": 99}))]}
        }),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    // Judged (not merely too soon after the weight moved), and held.
    let held = until_judged(&app, "idle", "a judged NoData round", |r| {
        latest_check(r, "success-rate").is_some_and(|c| {
            c["verdict"] == "NoData"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("reached the gray version"))
        })
    })
    .await;
    assert_eq!(held["status"]["phase"], "Running", "idle is not failing");
    assert_eq!(strategy_of(&held)["pauseReason"], "NoData: success-rate");
    assert_eq!(
        strategy_of(&held)["consecutiveFailures"]
            .as_i64()
            .unwrap_or(0),
        0
    );
    assert_eq!(condition(&held, "Analysis")["reason"], "NoData");
    assert_eq!(
        latest_check(&held, "success-rate").unwrap()["requests"]
            .as_i64()
            .unwrap_or(0),
        0
    );

    let failed = until_judged(&app, "idle", "Failed after maxHold", phase_is("Failed")).await;
    let message = failed_message(&failed);
    assert!(
        message.contains("maxHold") && message.contains("success-rate"),
        "{message}"
    );
    let items = checks_of(&app, "idle").await;
    let results = results_of(&items, "success-rate");
    assert!(
        verdicts(&results).iter().all(|v| v == "NoData"),
        "nothing but NoData: {results:?}"
    );
    // Not rolled back before maxHold: by the service's own clock, from
    // the first NoData round to the rollback.
    let first = chrono::DateTime::parse_from_rfc3339(results[0]["time"].as_str().unwrap()).unwrap();
    let rolled_back = chrono::DateTime::parse_from_rfc3339(
        condition(&failed, "Failed")["lastTransitionTime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        rolled_back - first >= chrono::TimeDelta::seconds(12),
        "held from {first} to {rolled_back}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn latency_over_its_threshold_rolls_back_on_the_p99() {
    let url = prometheus::shared().await;
    let service = "mc-slow";
    serve_with_a_healthy_original(
        service,
        Traffic {
            latency_ms: 800.0,
            ..Traffic::healthy()
        },
    );
    let (_clusters, app) = setup(service, &url).await;
    let mut client = create_over_grpc(
        &app,
        "slow",
        service,
        json!({
            "steps": [{"setWeight": 20}, {"analysis": {"count": 3}}, {"setWeight": 100}],
            "analysis": {"interval": "2s",
                         "metrics": [metric("success-rate", "successRate", json!({"min": 99})),
                                     metric("p99", "latencyP99", json!({"max": 500}))]}
        }),
    )
    .await;

    let failed = until_judged(&app, "slow", "Failed", phase_is("Failed")).await;
    let message = failed_message(&failed);
    assert!(
        message.contains("p99") && message.contains("is above 500"),
        "{message}"
    );
    let over_grpc = client
        .get_release(authed(meshrelease::pb::asm::v2::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: NS.into(),
            name: "slow".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let strategy = over_grpc.status.unwrap().strategy.unwrap();
    let p99 = strategy.checks.iter().find(|c| c.name == "p99").unwrap();
    assert_eq!(p99.verdict, "Fail");
    assert_eq!(p99.max, Some(500.0));
    // 800 ms is in Istio's (500, 1000] bucket.
    let value = p99.value.unwrap_or(0.0);
    assert!((500.0..=1000.0).contains(&value), "{value}");
    assert!(
        p99.query.starts_with("histogram_quantile(0.99, "),
        "{}",
        p99.query
    );
    let success = strategy
        .checks
        .iter()
        .find(|c| c.name == "success-rate")
        .unwrap();
    assert_eq!(
        success.verdict, "Pass",
        "the other check, in the same round"
    );
    let seen = history(&app, "slow", ("Failed", Some(0))).await;
    assert_in_order(
        &seen,
        &[
            ("Running", Some(20)),
            ("Failed", Some(20)),
            ("Failed", Some(0)),
        ],
    );
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn relative_to_a_worse_original_the_gray_version_passes_and_ends() {
    let url = prometheus::shared().await;
    let service = "mc-relative";
    prometheus::exporter().serve(
        NS,
        &gray(service),
        Traffic {
            errors: 0.3,
            ..Traffic::healthy()
        },
    );
    prometheus::exporter().serve(
        NS,
        &original(service),
        Traffic {
            errors: 0.4,
            ..Traffic::healthy()
        },
    );
    let (_clusters, app) = setup(service, &url).await;
    let body = with_strategy(
        "relative",
        service,
        json!({
            "steps": [{"setWeight": 50}, {"analysis": {"count": 2}}, {"setWeight": 100}],
            "analysis": {"interval": "2s",
                         "metrics": [metric("vs-original", "successRate",
                                            json!({"relativeTo": "original", "min": -1}))]}
        }),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    until_judged(&app, "relative", "Ended", phase_is("Ended")).await;
    let items = checks_of(&app, "relative").await;
    let results = results_of(&items, "vs-original");
    let passed: Vec<&&Value> = results.iter().filter(|r| r["verdict"] == "Pass").collect();
    assert!(passed.len() >= 2, "{results:?}");
    assert!(
        !verdicts(&results).iter().any(|v| v == "Fail"),
        "{results:?}"
    );
    for pass in passed {
        // 70 % against 60 %: ten points better.
        let value = pass["value"].as_f64().unwrap();
        assert!((3.0..=17.0).contains(&value), "{pass}");
        let query = pass["query"].as_str().unwrap();
        assert!(
            query.contains(&format!(r#"destination_workload="{}""#, gray(service)))
                && query.contains(&format!(r#"destination_workload="{}""#, original(service))),
            "{query}"
        );
        assert!(
            pass["message"]
                .as_str()
                .unwrap()
                .contains("(gray minus original)"),
            "{pass}"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "needs Prometheus: set MESHRELEASE_TEST_PROMETHEUS (see the README)"
)]
async fn prometheus_stopped_gives_error_rounds_that_hold_and_back_the_release_goes_on() {
    // This test stops its Prometheus: one of its own.
    let mut own = PrometheusProcess::start(prometheus::exporter(), true).await;
    let service = "mc-outage";
    serve_with_a_healthy_original(service, Traffic::healthy());
    let (_clusters, app) = setup(service, &own.url()).await;
    let body = with_strategy(
        "outage",
        service,
        json!({
            "steps": [{"setWeight": 20}, {"pause": {}}, {"analysis": {"count": 2}}, {"setWeight": 100}],
            "analysis": {"interval": "2s", "maxHold": "10m",
                         "metrics": [metric("success-rate", "successRate", json!({"min": 99}))]}
        }),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    // Paused at step 1, with rounds going on that pass.
    until_judged(&app, "outage", "a passing round while paused", |r| {
        strategy_of(r)["currentStep"] == 1 && verdict_is("success-rate", "Pass")(r)
    })
    .await;

    own.stop();
    let down = until_judged(
        &app,
        "outage",
        "an Error round",
        verdict_is("success-rate", "Error"),
    )
    .await;
    let check = latest_check(&down, "success-rate").unwrap();
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .starts_with("Prometheus is not reachable at http://127.0.0.1:"),
        "{check}"
    );
    assert_eq!(condition(&down, "Analysis")["reason"], "Error");
    // Resumed while Prometheus is down: the analysis step is held, not
    // counted, and nothing fails.
    let mut client = app.grpc().await;
    client
        .resume_release(authed(meshrelease::pb::asm::v2::ReleaseActionRequest {
            mesh_id: MESH.into(),
            namespace: NS.into(),
            name: "outage".into(),
            full: false,
        }))
        .await
        .unwrap();
    let held = until_judged(&app, "outage", "held by Error at the analysis step", |r| {
        strategy_of(r)["currentStep"] == 2 && strategy_of(r)["pauseReason"] == "Error: success-rate"
    })
    .await;
    let round_of =
        |r: &Value| latest_check(r, "success-rate").map_or(0, |c| c["round"].as_i64().unwrap_or(0));
    let round = round_of(&held);
    let later = until_judged(&app, "outage", "two more rounds", |r| {
        round_of(r) >= round + 2
    })
    .await;
    assert_eq!(
        latest_check(&later, "success-rate").unwrap()["verdict"],
        "Error"
    );
    assert_eq!(later["status"]["phase"], "Running");
    assert_eq!(strategy_of(&later)["currentStep"], 2, "not counted");
    assert_eq!(
        strategy_of(&later)["consecutiveFailures"]
            .as_i64()
            .unwrap_or(0),
        0,
        "an Error is not a failure"
    );
    let metrics = app.text_of("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"meshrelease_metric_queries_total{result="error"}"#)),
        "{metrics}"
    );

    own.resume().await;
    until_judged(&app, "outage", "Ended", phase_is("Ended")).await;
    let items = checks_of(&app, "outage").await;
    let mut order: Vec<String> = verdicts(&results_of(&items, "success-rate"))
        .into_iter()
        .filter(|v| v != "NoData")
        .collect();
    order.dedup();
    assert_eq!(order, ["Pass", "Error", "Pass"], "{items:?}");
}
