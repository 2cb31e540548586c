//! `GET /metrics`: what an operator's Prometheus scrapes after real traffic.

use std::time::Duration;

use meshrelease::pb::asm::v2 as pb;

use crate::helpers::*;

async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

/// The value of the series named exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn requests_are_counted_by_rpc_protocol_and_code() {
    let app = spawn_app().await;
    let mut grpc = app.grpc().await;
    grpc.create_release(authed(grpc_request("by-grpc", "reviews")))
        .await
        .unwrap();
    let status = grpc
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "missing".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        app.create(&release_body("by-rest", "ratings"))
            .await
            .status(),
        200
    );
    assert_eq!(app.get("missing").await.status(), 404);
    let unauthenticated = app
        .http
        .get(app.release_url("by-rest"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let text = scrape(&app).await;
    let create = "asm.v2.ReleaseService/CreateRelease";
    let get = "asm.v2.ReleaseService/GetRelease";
    for (series, expected) in [
        (
            format!(r#"meshrelease_requests_total{{rpc="{create}",protocol="grpc",code="OK"}}"#),
            1.0,
        ),
        (
            format!(
                r#"meshrelease_requests_total{{rpc="{get}",protocol="grpc",code="NOT_FOUND"}}"#
            ),
            1.0,
        ),
        (
            format!(r#"meshrelease_requests_total{{rpc="{create}",protocol="rest",code="200"}}"#),
            1.0,
        ),
        (
            format!(r#"meshrelease_requests_total{{rpc="{get}",protocol="rest",code="404"}}"#),
            1.0,
        ),
        (
            format!(r#"meshrelease_requests_total{{rpc="{get}",protocol="rest",code="401"}}"#),
            1.0,
        ),
        (
            format!(
                r#"meshrelease_request_duration_seconds_count{{rpc="{create}",protocol="grpc"}}"#
            ),
            1.0,
        ),
        (
            format!(r#"meshrelease_request_duration_seconds_count{{rpc="{get}",protocol="rest"}}"#),
            2.0,
        ),
        // Two creates committed, by one or two commits.
        ("meshrelease_store_commit_writes_sum".to_owned(), 2.0),
        (
            r#"meshrelease_requests_in_flight{protocol="rest"}"#.to_owned(),
            0.0,
        ),
    ] {
        assert_eq!(value(&text, &series), Some(expected), "{series} in\n{text}");
    }
    assert!(value(&text, "meshrelease_store_commit_duration_seconds_count").unwrap() >= 1.0);
    // Scrapes and probes are not API calls.
    assert!(!text.contains("/metrics"), "{text}");
}

#[tokio::test]
async fn made_up_grpc_paths_share_one_label() {
    let app = spawn_app().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for path in ["/x.Y/A", "/x.Y/B", "/asm.v2.ReleaseService/Nope"] {
        let response = h2
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-auth-token", TOKEN)
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "12");
    }
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            r#"meshrelease_requests_total{rpc="unknown",protocol="grpc",code="UNIMPLEMENTED"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(!text.contains("x.Y"), "{text}");
}

#[tokio::test]
async fn watchers_are_counted_while_connected() {
    let app = spawn_app().await;
    let stream = app
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
    let text = scrape(&app).await;
    assert_eq!(value(&text, "meshrelease_watchers"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, r#"meshrelease_requests_in_flight{protocol="grpc"}"#),
        Some(1.0),
        "{text}"
    );
    drop(stream);
    // The server notices the stream is gone when it next looks.
    let mut watchers = None;
    for _ in 0..100 {
        watchers = value(&scrape(&app).await, "meshrelease_watchers");
        if watchers == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(watchers, Some(0.0));
}
