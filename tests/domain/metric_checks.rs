//! Metric checks decided without a Prometheus: the PromQL each check
//! sends, the window it reads (never across a traffic change), and the
//! verdict on canned answers (a number, none, NaN, several series, an
//! error), then what a strategy makes of those verdicts. The same PromQL
//! runs against a real Prometheus in tests/api/metric_checks.rs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use meshrelease::domain::mesh::Mesh;
use meshrelease::domain::progress::metrics::{self, Answers, MetricQueries, Prepared, Sample};
use meshrelease::domain::progress::{self, ProgressUpdate};
use meshrelease::domain::strategy::{
    self, AnalysisDraft, MetricDraft, StepDraft, StrategyDraft, Verdict,
};
use meshrelease::domain::{JsonObject, Phase, Release, ReleaseType, StatusUpdate, TrafficPolicy};
use serde_json::json;

use crate::support::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn mesh_with_prometheus() -> Mesh {
    Mesh {
        prometheus_url: Some("http://prometheus.test:9090".into()),
        ..mesh()
    }
}

fn metric(name: &str, builtin: &str) -> MetricDraft {
    MetricDraft {
        name: name.into(),
        builtin: builtin.into(),
        ..MetricDraft::default()
    }
}

fn gray_named(name: &str) -> Arc<JsonObject> {
    let serde_json::Value::Object(map) = json!({"metadata": {"name": name}}) else {
        unreachable!()
    };
    Arc::new(map)
}

/// A Running release of `reviews` (gray `reviews-v2`, original
/// `reviews-v1`) in namespace `shop`, whose strategy checks `metrics`
/// every 30 s, with the traffic it holds since t(0).
fn release_checking(metrics: Vec<MetricDraft>, failure_limit: i64) -> Release {
    let draft = StrategyDraft {
        steps: vec![
            StepDraft {
                set_weight: Some(20),
                ..StepDraft::default()
            },
            StepDraft {
                analysis: Some(2),
                ..StepDraft::default()
            },
            StepDraft {
                set_weight: Some(100),
                ..StepDraft::default()
            },
        ],
        analysis: Some(AnalysisDraft {
            interval: "30s".into(),
            failure_limit,
            max_hold: "5m".into(),
            metrics,
            ..AnalysisDraft::default()
        }),
        ..StrategyDraft::default()
    };
    let mut violations = Vec::new();
    let strategy = strategy::validate(
        &draft,
        Some(ReleaseType::Canary),
        &mesh_with_prometheus(),
        "spec.strategy",
        &mut violations,
    )
    .unwrap_or_else(|| panic!("{violations:?}"));
    let status = meshrelease::domain::release::ReleaseStatus::pending(
        t(-600),
        vec![gray_named("reviews-v2")],
    );
    let mut release = Release {
        mesh_id: MESH.into(),
        namespace: "shop".into(),
        name: "reviews-canary".into(),
        uid: uuid::Uuid::from_u128(7),
        resource_version: 1,
        service_name: "reviews".into(),
        cluster_id: "cluster-a".into(),
        deployment_name: "reviews-v1".into(),
        version: "v2".into(),
        release_type: ReleaseType::Canary,
        gray_deployments: vec![],
        traffic_policy: TrafficPolicy::Weight(20),
        strategy: Some(strategy),
        generation: 1,
        status,
    };
    release.status.phase = Phase::Running;
    release.status.phase_time = Some(t(-300));
    release.status.traffic = Some(TrafficPolicy::Weight(20));
    release.status.traffic_time = Some(t(0));
    release
}

fn check_of(release: &Release, i: usize) -> strategy::MetricCheck {
    release.strategy.as_ref().unwrap().analysis.metrics[i].clone()
}

const INTERVAL: Duration = Duration::from_secs(30);

fn asked(release: &Release, i: usize, at: i64) -> MetricQueries {
    match metrics::prepare(release, INTERVAL, &check_of(release, i), t(at)) {
        Prepared::Ask(queries) => queries,
        Prepared::NotYet(result) => panic!("not judged: {}", result.message),
    }
}

fn answers(value: Sample, requests: Option<Sample>) -> Answers {
    Answers {
        value,
        requests,
        original_requests: None,
    }
}

const SELECTOR: &str = r#"reporter="destination",destination_workload_namespace="shop",destination_workload="reviews-v2""#;

#[test]
fn built_ins_read_istios_standard_telemetry_of_the_gray_workload() {
    let release = release_checking(
        vec![
            MetricDraft {
                min: Some(99.0),
                ..metric("success-rate", "successRate")
            },
            MetricDraft {
                max: Some(500.0),
                ..metric("p99", "latencyP99")
            },
            MetricDraft {
                min: Some(1.0),
                ..metric("rps", "requestRate")
            },
        ],
        1,
    );
    let success = asked(&release, 0, 60);
    assert_eq!(
        success.value,
        format!(
            r#"100 * (sum(rate(istio_requests_total{{{SELECTOR},response_code!~"5.."}}[30s])) or on() vector(0)) / sum(rate(istio_requests_total{{{SELECTOR}}}[30s]))"#
        )
    );
    assert_eq!(
        success.requests.as_deref(),
        Some(format!("sum(increase(istio_requests_total{{{SELECTOR}}}[30s]))").as_str()),
        "built-ins count requests: minRequests is 1 unless set"
    );
    assert_eq!(success.min_requests, 1);
    assert_eq!(
        asked(&release, 1, 60).value,
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{SELECTOR}}}[30s])))"
        )
    );
    assert_eq!(
        asked(&release, 2, 60).value,
        format!("sum(rate(istio_requests_total{{{SELECTOR}}}[30s]))")
    );
}

#[test]
fn gray_deployments_named_apart_in_their_clusters_are_read_as_one_union() {
    let mut release = release_checking(
        vec![MetricDraft {
            max: Some(1.0),
            ..metric("rps", "requestRate")
        }],
        1,
    );
    release.status.gray_deployments = vec![
        gray_named("reviews-v2"),
        gray_named("reviews.v2-b"),
        gray_named("reviews-v2"),
    ];
    let query = asked(&release, 0, 60).value;
    assert!(
        query.contains(r#"destination_workload=~"reviews-v2|reviews\\.v2-b""#),
        "{query}"
    );
}

#[test]
fn no_window_reads_from_before_the_traffic_changed() {
    let release = release_checking(
        vec![MetricDraft {
            min: Some(99.0),
            window: "2m".into(),
            ..metric("success-rate", "successRate")
        }],
        1,
    );
    // Changed at t(0); interval 30 s: no verdict before t(30).
    let Prepared::NotYet(held) =
        metrics::prepare(&release, INTERVAL, &check_of(&release, 0), t(29))
    else {
        panic!("29 s after a traffic change is too soon");
    };
    assert_eq!(held.verdict, Verdict::NoData, "held, never failed");
    assert_eq!(
        held.message,
        "not judged before 2026-12-06T10:00:30Z: the traffic changed at 2026-12-06T10:00:00Z and a window must not read from before it"
    );
    assert!(held.query.contains("[2m") || held.query.contains("[120s]"));
    // Then the window is the time since the change, up to its own length.
    assert_eq!(asked(&release, 0, 45).window, Duration::from_secs(45));
    assert!(asked(&release, 0, 45).value.contains("[45s]"));
    assert_eq!(asked(&release, 0, 600).window, Duration::from_secs(120));
}

#[test]
fn a_traffic_change_is_timed_when_the_clusters_take_it_and_only_then() {
    let release = release_checking(vec![], 1);
    let same = StatusUpdate {
        traffic: Some(TrafficPolicy::Weight(20)),
        ..StatusUpdate::default()
    }
    .apply_to(&release, t(50))
    .unwrap();
    assert_eq!(same, None, "the same traffic again changes nothing");
    let moved = StatusUpdate {
        traffic: Some(TrafficPolicy::Weight(50)),
        ..StatusUpdate::default()
    }
    .apply_to(&release, t(60))
    .unwrap()
    .unwrap();
    assert_eq!(moved.status.traffic_time, Some(t(60)));
    assert_eq!(metrics::traffic_since(&moved), t(60));
    // A retry (Running again, the traffic as the rollback left it) is
    // judged from its own start, never by the rounds that failed it.
    let mut retried = moved;
    retried.status.phase_time = Some(t(500));
    assert_eq!(metrics::traffic_since(&retried), t(500));
}

#[test]
fn verdicts_on_canned_answers() {
    let release = release_checking(
        vec![
            MetricDraft {
                min: Some(99.0),
                min_requests: Some(50),
                ..metric("success-rate", "successRate")
            },
            MetricDraft {
                max: Some(500.0),
                ..metric("p99", "latencyP99")
            },
        ],
        1,
    );
    let success = check_of(&release, 0);
    let q = asked(&release, 0, 60);
    let judge = |value: Sample, requests: Option<Sample>| {
        metrics::judge(&success, &q, &answers(value, requests), t(60))
    };

    let pass = judge(Sample::Number(99.8), Some(Sample::Number(812.0)));
    assert_eq!(pass.verdict, Verdict::Pass);
    assert_eq!(pass.value, Some(99.8));
    assert_eq!(pass.min, Some(99.0));
    assert_eq!(pass.requests, Some(812));
    assert_eq!(pass.query, q.value, "the query as sent");
    assert_eq!(pass.message, "99.8 is at least 99");

    let fail = judge(Sample::Number(97.2), Some(Sample::Number(811.6)));
    assert_eq!(fail.verdict, Verdict::Fail);
    assert_eq!(fail.message, "97.2 is below 99");
    assert_eq!(fail.requests, Some(812), "increase() extrapolates: rounded");

    let close = judge(Sample::Number(98.9996), Some(Sample::Number(900.0)));
    assert_eq!(
        close.message, "98.9996 is below 99",
        "never shown as 99 below 99"
    );

    let idle = judge(Sample::Empty, Some(Sample::Empty));
    assert_eq!(idle.verdict, Verdict::NoData);
    assert_eq!(
        idle.message,
        "0 request(s) reached the gray version in the last 30s; minRequests is 50"
    );
    let few = judge(Sample::Number(50.0), Some(Sample::Number(12.0)));
    assert_eq!(few.verdict, Verdict::NoData, "a bad value on 12 requests");
    assert_eq!(few.requests, Some(12));

    let nan = judge(Sample::Number(f64::NAN), Some(Sample::Number(60.0)));
    assert_eq!(nan.verdict, Verdict::NoData);
    assert!(nan.message.contains("NaN"), "{}", nan.message);
    let empty = judge(Sample::Empty, Some(Sample::Number(60.0)));
    assert_eq!(empty.verdict, Verdict::NoData);
    assert_eq!(empty.message, "the query gave no sample over the last 30s");

    let several = judge(
        Sample::Several {
            count: 3,
            first: vec![r#"{pod="a"}"#.into(), r#"{pod="b"}"#.into()],
        },
        Some(Sample::Number(60.0)),
    );
    assert_eq!(several.verdict, Verdict::Error);
    assert_eq!(
        several.message,
        r#"the query gave 3 series where one number was expected ({pod="a"}, {pod="b"}, ...): aggregate them (sum, max, ...) into one"#
    );

    let down = judge(
        Sample::Failed("Prometheus gave no answer within 10s".into()),
        Some(Sample::Number(60.0)),
    );
    assert_eq!(down.verdict, Verdict::Error);
    assert_eq!(down.message, "Prometheus gave no answer within 10s");
    let count_down = judge(
        Sample::Number(99.9),
        Some(Sample::Failed("Prometheus answered 503".into())),
    );
    assert_eq!(
        count_down.verdict,
        Verdict::Error,
        "an unanswered count is not a count of zero"
    );

    let p99 = check_of(&release, 1);
    let q99 = asked(&release, 1, 60);
    let slow = metrics::judge(
        &p99,
        &q99,
        &answers(Sample::Number(612.5), Some(Sample::Number(100.0))),
        t(60),
    );
    assert_eq!(slow.verdict, Verdict::Fail);
    assert_eq!(slow.message, "612.5 is above 500");
    let all_in_inf = metrics::judge(
        &p99,
        &q99,
        &answers(Sample::Number(f64::INFINITY), Some(Sample::Number(100.0))),
        t(60),
    );
    assert_eq!(all_in_inf.verdict, Verdict::Fail, "+Inf ms is above 500");
    assert_eq!(all_in_inf.message, "+Inf is above 500");
}

#[test]
fn relative_to_the_original_is_gray_minus_original_over_the_same_window() {
    let release = release_checking(
        vec![MetricDraft {
            min: Some(-1.0),
            relative_to: "original".into(),
            ..metric("vs-original", "successRate")
        }],
        1,
    );
    let check = check_of(&release, 0);
    let q = asked(&release, 0, 45);
    let original = SELECTOR.replace("reviews-v2", "reviews-v1");
    assert!(
        q.value
            .starts_with("(100 * (sum(rate(istio_requests_total{")
            && q.value.contains(") - (100 * ")
            && q.value.contains(&original)
            && q.value.matches("[30s]").count() == 4,
        "{}",
        q.value
    );
    assert_eq!(
        q.original_requests.as_deref(),
        Some(format!("sum(increase(istio_requests_total{{{original}}}[30s]))").as_str()),
        "the window defaults to the interval"
    );
    let judged = |value: f64, original_requests: Sample| {
        metrics::judge(
            &check,
            &q,
            &Answers {
                value: Sample::Number(value),
                requests: Some(Sample::Number(100.0)),
                original_requests: Some(original_requests),
            },
            t(45),
        )
    };
    let better = judged(29.5, Sample::Number(300.0));
    assert_eq!(better.verdict, Verdict::Pass, "{}", better.message);
    assert_eq!(better.message, "29.5 (gray minus original) is at least -1");
    let worse = judged(-2.5, Sample::Number(300.0));
    assert_eq!(worse.verdict, Verdict::Fail);
    assert_eq!(worse.message, "-2.5 (gray minus original) is below -1");
    let original_idle = judged(5.0, Sample::Empty);
    assert_eq!(original_idle.verdict, Verdict::NoData);
    assert_eq!(
        original_idle.message,
        "0 request(s) reached the original version in the last 30s; minRequests is 1"
    );
}

#[test]
fn a_query_gets_its_placeholders_filled_and_no_value_can_write_promql() {
    let mut release = release_checking(
        vec![MetricDraft {
            name: "queue".into(),
            query: r#"sum(rate(app_errors_total{ns="{{ namespace }}",svc="{{service}}",rel="{{ release }}",v="{{ version }}",w="{{ workload }}",o="{{ originalWorkload }}"}[{{ window }}]))"#.into(),
            max: Some(0.5),
            ..MetricDraft::default()
        }],
        1,
    );
    let q = asked(&release, 0, 90);
    assert_eq!(
        q.value,
        r#"sum(rate(app_errors_total{ns="shop",svc="reviews",rel="reviews-canary",v="v2",w="reviews-v2",o="reviews-v1"}[30s]))"#
    );
    assert_eq!(
        q.requests, None,
        "a query counts requests only when minRequests is set"
    );
    // Validation keeps such names out; were one to get in, it stays a
    // label value.
    release.version = r#"v2"} or vector(1) or {a="\"#.into();
    let q = asked(&release, 0, 90);
    assert!(
        q.value.contains(r#"v="v2\"} or vector(1) or {a=\"\\",w="#),
        "{}",
        q.value
    );
}

#[test]
fn unknown_placeholders_are_refused_naming_the_field_and_the_known_ones() {
    let draft = StrategyDraft {
        steps: vec![StepDraft {
            set_weight: Some(100),
            ..StepDraft::default()
        }],
        analysis: Some(AnalysisDraft {
            metrics: vec![MetricDraft {
                name: "q".into(),
                query: "sum(x{pod=\"{{ pod }}\"})".into(),
                max: Some(1.0),
                ..MetricDraft::default()
            }],
            ..AnalysisDraft::default()
        }),
        ..StrategyDraft::default()
    };
    let mut violations = Vec::new();
    let checked = strategy::validate(
        &draft,
        Some(ReleaseType::Canary),
        &mesh_with_prometheus(),
        "spec.strategy",
        &mut violations,
    );
    assert!(checked.is_none());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].field,
        "spec.strategy.analysis.metrics[0].query"
    );
    assert!(
        violations[0].description.contains("{{ pod }}")
            && violations[0].description.contains("{{ originalWorkload }}"),
        "{}",
        violations[0].description
    );
}

/// Results of one round of `release`'s checks at `at`, on these answers.
fn round(
    release: &Release,
    at: i64,
    value: Sample,
    requests: Sample,
) -> Vec<strategy::CheckResult> {
    let check = check_of(release, 0);
    match metrics::prepare(release, INTERVAL, &check, t(at)) {
        Prepared::NotYet(result) => vec![result],
        Prepared::Ask(q) => vec![metrics::judge(
            &check,
            &q,
            &answers(value, Some(requests)),
            t(at),
        )],
    }
}

fn decide(release: &mut Release, at: i64, results: &[strategy::CheckResult]) {
    let decision = progress::decide(release, t(at), Some(results)).expect("a decision");
    if let Some(next) = ProgressUpdate(decision).apply_to(release, t(at)).unwrap() {
        *release = next;
    }
}

#[test]
fn an_idle_gray_version_holds_and_only_max_hold_rolls_it_back() {
    let mut release = release_checking(
        vec![MetricDraft {
            min: Some(99.0),
            ..metric("success-rate", "successRate")
        }],
        1,
    );
    // Started, at step 1 (analysis 2), weight 20 held since t(0).
    release.status.strategy = Some(strategy::StrategyStatus {
        current_step: 1,
        started: true,
        pre_rollout_done: true,
        step_start_time: Some(t(0)),
        ..Default::default()
    });
    for at in [10, 40, 70, 100, 130, 160, 190, 220, 250, 280] {
        let results = round(&release, at, Sample::Empty, Sample::Empty);
        decide(&mut release, at, &results);
        assert_eq!(release.status.phase, Phase::Running, "idle at t({at})");
        let s = release.status.strategy.as_ref().unwrap();
        assert_eq!(s.current_step, 1, "held");
        assert_eq!(s.passes, 0, "NoData is not a pass");
        assert_eq!(s.consecutive_failures, 0, "NoData is not a failure");
        assert_eq!(s.pause_reason, "NoData: success-rate");
    }
    // Held since t(10); maxHold 5m: the round at t(310) trips onFailure.
    let results = round(&release, 310, Sample::Empty, Sample::Empty);
    decide(&mut release, 310, &results);
    assert_eq!(release.status.phase, Phase::Failed);
    assert_eq!(release.traffic_policy, TrafficPolicy::Weight(0));
    let failed = release
        .status
        .conditions
        .iter()
        .find(|c| c.kind.as_str() == "Failed")
        .expect("a Failed condition");
    assert!(
        failed.message.contains("maxHold") && failed.message.contains("success-rate"),
        "{}",
        failed.message
    );
}

#[test]
fn a_failing_value_rolls_back_naming_the_check_its_value_and_threshold() {
    let mut release = release_checking(
        vec![MetricDraft {
            min: Some(99.0),
            ..metric("success-rate", "successRate")
        }],
        2,
    );
    release.status.strategy = Some(strategy::StrategyStatus {
        current_step: 1,
        started: true,
        pre_rollout_done: true,
        step_start_time: Some(t(0)),
        ..Default::default()
    });
    let results = round(&release, 40, Sample::Number(70.0), Sample::Number(400.0));
    decide(&mut release, 40, &results);
    assert_eq!(release.status.phase, Phase::Running, "1 failed round of 2");
    let s = release.status.strategy.as_ref().unwrap();
    assert_eq!(s.consecutive_failures, 1);
    let latest = &s.checks[0];
    assert_eq!(
        (latest.verdict, latest.value, latest.min, latest.requests),
        (Verdict::Fail, Some(70.0), Some(99.0), Some(400))
    );
    let results = round(&release, 70, Sample::Number(70.0), Sample::Number(400.0));
    decide(&mut release, 70, &results);
    assert_eq!(release.status.phase, Phase::Failed);
    let failed = release
        .status
        .conditions
        .iter()
        .find(|c| c.kind.as_str() == "Failed")
        .expect("a Failed condition");
    assert_eq!(failed.reason.as_str(), "AnalysisFailed");
    assert!(
        failed.message.contains("success-rate") && failed.message.contains("70 is below 99"),
        "{}",
        failed.message
    );
}

#[test]
fn the_first_round_after_a_weight_change_is_not_judged_and_not_counted() {
    let mut release = release_checking(
        vec![MetricDraft {
            min: Some(99.0),
            ..metric("success-rate", "successRate")
        }],
        1,
    );
    release.status.strategy = Some(strategy::StrategyStatus {
        current_step: 1,
        started: true,
        pre_rollout_done: true,
        step_start_time: Some(t(0)),
        ..Default::default()
    });
    // A round 10 s after the change: the old weight's failures are not read.
    let results = round(&release, 10, Sample::Number(0.0), Sample::Number(400.0));
    assert_eq!(results[0].verdict, Verdict::NoData);
    decide(&mut release, 10, &results);
    assert_eq!(release.status.phase, Phase::Running);
    assert_eq!(release.status.strategy.as_ref().unwrap().passes, 0);
    for at in [40, 70] {
        let results = round(&release, at, Sample::Number(99.5), Sample::Number(400.0));
        decide(&mut release, at, &results);
    }
    assert_eq!(
        release.status.strategy.as_ref().unwrap().current_step,
        2,
        "two passing rounds end the analysis step"
    );
}
