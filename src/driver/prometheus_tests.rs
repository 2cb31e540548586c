//! The Prometheus client against canned answers: what each shape of
//! answer becomes (one number, none, NaN, several series, errors of the
//! server and of the query), and over real HTTP the form it sends, the
//! bearer token, a timeout and a server that is not there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone as _, Utc};

use super::*;
use crate::domain::mesh::BearerToken;

fn vector(series: &str) -> Vec<u8> {
    format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#)
        .into_bytes()
}

#[test]
fn a_vector_of_one_series_is_its_number() {
    let body = vector(r#"{"metric":{},"value":[1765000000.5,"99.25"]}"#);
    assert_eq!(sample_of(200, &body), Sample::Number(99.25));
}

#[test]
fn a_scalar_is_its_number() {
    let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1765000000,"12"]}}"#;
    assert_eq!(sample_of(200, body), Sample::Number(12.0));
}

#[test]
fn an_empty_vector_is_no_sample() {
    assert_eq!(sample_of(200, &vector("")), Sample::Empty);
}

#[test]
fn nan_and_infinities_are_read_as_prometheus_writes_them() {
    for (text, check) in [
        ("NaN", f64::is_nan as fn(f64) -> bool),
        ("+Inf", |v: f64| v == f64::INFINITY),
        ("-Inf", |v: f64| v == f64::NEG_INFINITY),
    ] {
        let body = vector(&format!(r#"{{"metric":{{}},"value":[1,"{text}"]}}"#));
        let sample = sample_of(200, &body);
        let Sample::Number(v) = sample else {
            panic!("{text} read as {sample:?}");
        };
        assert!(check(v), "{text} read as {v}");
    }
}

#[test]
fn several_series_are_counted_and_the_first_named() {
    let body = vector(
        r#"{"metric":{"destination_workload":"a"},"value":[1,"1"]},
           {"metric":{"destination_workload":"b"},"value":[1,"2"]},
           {"metric":{"destination_workload":"c"},"value":[1,"3"]}"#,
    );
    assert_eq!(
        sample_of(200, &body),
        Sample::Several {
            count: 3,
            first: vec![
                r#"{destination_workload="a"}"#.to_owned(),
                r#"{destination_workload="b"}"#.to_owned()
            ],
        }
    );
}

#[test]
fn a_bad_query_is_an_error_with_prometheus_words() {
    let body = br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected <EOF>"}"#;
    assert_eq!(
        sample_of(400, body),
        Sample::Failed(
            "Prometheus answered 400: bad_data: 1:5: parse error: unexpected <EOF>".into()
        )
    );
}

#[test]
fn a_server_error_without_json_is_an_error_with_its_status() {
    assert_eq!(
        sample_of(503, b"Service Unavailable"),
        Sample::Failed("Prometheus answered 503".into())
    );
    assert_eq!(
        sample_of(200, b"<html>a proxy's page</html>"),
        Sample::Failed("Prometheus answered something that is not its API's JSON".into())
    );
}

#[test]
fn a_range_vector_or_a_string_is_not_one_number() {
    let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    let Sample::Failed(why) = sample_of(200, matrix) else {
        panic!("a matrix is not a number");
    };
    assert!(why.contains("matrix"), "{why}");
    let string = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
    assert!(matches!(sample_of(200, string), Sample::Failed(_)));
}

/// A Prometheus that answers `body` after `delay`, and remembers what it
/// was sent (the form and the Authorization header).
async fn canned(
    body: &'static str,
    delay: Duration,
) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/prom/api/v1/query",
        axum::routing::post(move |headers: http::HeaderMap, form: String| {
            let kept = kept.clone();
            async move {
                let auth = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock().unwrap().push((form, auth));
                tokio::time::sleep(delay).await;
                ([(http::header::CONTENT_TYPE, "application/json")], body)
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/prom/"), seen)
}

fn mesh(url: &str, token: Option<&str>) -> Mesh {
    Mesh {
        id: "m".into(),
        prometheus_url: Some(url.into()),
        prometheus_token: token.map(BearerToken::new),
        ..Mesh::default()
    }
}

#[tokio::test]
async fn a_query_is_a_form_at_the_rounds_time_with_the_meshs_token() {
    let (url, seen) = canned(
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}"#,
        Duration::ZERO,
    )
    .await;
    let prometheus = Prometheus::new(DriverMetrics::default());
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
    let sample = prometheus
        .query(&mesh(&url, Some("s3cret")), "sum(up{job=\"a b\"})", at)
        .await;
    assert_eq!(sample, Sample::Number(7.0));
    let seen = seen.lock().unwrap().clone();
    let (form, auth) = &seen[0];
    let fields: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        fields,
        vec![
            ("query".to_owned(), "sum(up{job=\"a b\"})".to_owned()),
            ("time".to_owned(), "1796551200.000".to_owned()),
        ]
    );
    assert_eq!(auth, "Bearer s3cret");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_an_error_that_says_so() {
    let (url, _) = canned(r#"{"status":"success"}"#, Duration::from_secs(5)).await;
    let prometheus = Prometheus::with_timeout(DriverMetrics::default(), Duration::from_secs(1));
    let sample = prometheus.query(&mesh(&url, None), "up", Utc::now()).await;
    assert_eq!(
        sample,
        Sample::Failed("Prometheus gave no answer within 1s".into())
    );
}

#[tokio::test]
async fn a_prometheus_that_is_not_there_is_an_error_naming_it() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let metrics = DriverMetrics::default();
    let prometheus = Prometheus::new(metrics.clone());
    let Sample::Failed(why) = prometheus.query(&mesh(&url, None), "up", Utc::now()).await else {
        panic!("nothing listens");
    };
    assert!(
        why.starts_with(&format!("Prometheus is not reachable at {url}")),
        "{why}"
    );
    assert_eq!(
        metrics
            .metric_queries
            .get_or_create(&QueryLabels {
                result: "error".into()
            })
            .get(),
        1
    );
}

#[tokio::test]
async fn a_mesh_without_prometheus_is_an_error_naming_the_setting() {
    let prometheus = Prometheus::new(DriverMetrics::default());
    let sample = prometheus.query(&Mesh::default(), "up", Utc::now()).await;
    let Sample::Failed(why) = sample else {
        panic!("no Prometheus to ask");
    };
    assert!(why.contains("prometheus_url"), "{why}");
}
