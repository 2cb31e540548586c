//! WatchReleases over REST, as the contract says: newline-delimited JSON,
//! `{"result": <WatchEvent>}` per line, the same auth, resume by
//! resourceVersion, and an end (not a hang) when the service stops.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::helpers::*;

/// A watch response read a line at a time.
struct Lines {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    pending: Vec<u8>,
}

impl Lines {
    fn new(response: reqwest::Response) -> Self {
        Lines {
            body: response.bytes_stream().boxed(),
            pending: Vec::new(),
        }
    }

    /// The next line as JSON; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(serde_json::from_slice(&line[..end]).unwrap_or_else(|e| {
                    panic!("not a JSON line ({e}): {}", String::from_utf8_lossy(&line))
                }));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.body.next())
                .await
                .expect("a line within 15 s");
            match chunk {
                Some(chunk) => self.pending.extend_from_slice(&chunk.unwrap()),
                None => {
                    assert!(self.pending.is_empty(), "a partial last line");
                    return None;
                }
            }
        }
    }

    /// The next event as (type, name, resourceVersion).
    async fn event(&mut self) -> (String, String, String) {
        let line = self.next().await.expect("an event, not the end");
        let event = &line["result"];
        assert!(event.is_object(), "{line}");
        (
            event["type"].as_str().unwrap().to_owned(),
            event["release"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
            event["resourceVersion"].as_str().unwrap().to_owned(),
        )
    }
}

async fn watch(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_rest_watch_streams_the_releases_then_their_changes_as_ndjson() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(&release_body("first", "reviews")).await.status(),
        200
    );
    let response = watch(
        &app,
        &format!("/v2/meshes/{MESH}/releases:watch"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-length").is_none(), "{headers:?}");
    assert!(headers.get("x-request-id").is_some());
    let mut lines = Lines::new(response);
    let (kind, name, _) = lines.event().await;
    assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "first"));

    // Changes as they happen: a create, an update of the traffic, a cancel.
    app.create(&release_body("second", "ratings")).await;
    let (kind, name, added_at) = lines.event().await;
    assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "second"));
    app.delete("second", Some("cancel")).await;
    let (kind, name, canceled_at) = lines.event().await;
    assert_eq!((kind.as_str(), name.as_str()), ("MODIFIED", "second"));
    assert!(canceled_at.parse::<u64>().unwrap() > added_at.parse::<u64>().unwrap());

    // The same event, byte for byte in its fields, as gRPC's watch gives.
    let mut grpc = app
        .grpc()
        .await
        .watch_releases(authed(meshrelease::pb::asm::v2::WatchReleasesRequest {
            mesh_id: MESH.into(),
            namespace: String::new(),
            resource_version: added_at.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let over_grpc = tokio::time::timeout(Duration::from_secs(15), grpc.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut rest = Lines::new(
        watch(
            &app,
            &format!("/v2/meshes/{MESH}/releases:watch?resourceVersion={added_at}"),
            Some(TOKEN),
        )
        .await,
    );
    let line = rest.next().await.unwrap();
    assert_eq!(line["result"], serde_json::to_value(&over_grpc).unwrap());
}

async fn create_in(app: &TestApp, namespace: &str, name: &str, service: &str) {
    let mut body = release_body(name, service);
    body["metadata"]["namespace"] = json!(namespace);
    let response = app.create_in(namespace, &body).await;
    assert_eq!(response.status(), 200, "{name}");
}

#[tokio::test]
async fn a_rest_watch_of_one_namespace_resumes_after_a_resource_version() {
    let app = spawn_app().await;
    create_in(&app, "default", "in-default", "reviews").await;
    create_in(&app, "shop", "in-shop", "details").await;
    let mut lines = Lines::new(
        watch(
            &app,
            &format!("/v2/meshes/{MESH}/namespaces/shop/releases:watch"),
            Some(TOKEN),
        )
        .await,
    );
    let (_, name, at) = lines.event().await;
    assert_eq!(name, "in-shop", "only the namespace's releases");

    create_in(&app, "default", "later-default", "ratings").await;
    create_in(&app, "shop", "later-shop", "productpage").await;
    let (kind, name, _) = lines.event().await;
    assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "later-shop"));

    // Resumed after the first event: what came after it, nothing before.
    let mut resumed = Lines::new(
        watch(
            &app,
            &format!("/v2/meshes/{MESH}/namespaces/shop/releases:watch?resourceVersion={at}"),
            Some(TOKEN),
        )
        .await,
    );
    let (_, name, _) = resumed.event().await;
    assert_eq!(name, "later-shop");
}

#[tokio::test]
async fn a_rest_watch_refuses_as_every_operation_does_before_streaming() {
    let app = spawn_app().await;
    let path = format!("/v2/meshes/{MESH}/releases:watch");
    let (status, body) = json_of(watch(&app, &path, None).await).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (401, Some("ASM.01000001"))
    );
    let (status, body) = json_of(watch(&app, &path, Some(OTHER_READER_TOKEN)).await).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (403, Some("ASM.01000002"))
    );
    let (status, body) = json_of(
        watch(
            &app,
            &format!("{path}?resourceVersion=yesterday"),
            Some(TOKEN),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&body), ["resourceVersion"]);
    let (status, _) =
        json_of(watch(&app, "/v2/meshes/no-such-mesh/releases:watch", Some(TOKEN)).await).await;
    assert_eq!(status, 404);
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .header("X-Auth-Token", TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn a_rest_watch_ends_with_an_unavailable_line_when_the_service_stops() {
    let app = spawn_app().await;
    app.create(&release_body("watched", "reviews")).await;
    let mut lines = Lines::new(
        watch(
            &app,
            &format!("/v2/meshes/{MESH}/releases:watch"),
            Some(TOKEN),
        )
        .await,
    );
    lines.event().await;
    let stopping = tokio::spawn(app.stop());
    // The stream ends (complete lines only), within the drain, rather than
    // holding the shutdown open; its last line says the service went away,
    // so that a client can tell a shutdown from a normal end and reconnect.
    let mut last = None;
    while let Some(line) = lines.next().await {
        assert!(
            line.get("result").is_some() || line.get("error").is_some(),
            "{line}"
        );
        last = Some(line);
    }
    let last = last.expect("no line before the end");
    assert_eq!(last["error"]["errorCode"], "ASM.01040002", "{last}");
    assert!(
        last["error"]["errorMsg"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{last}"
    );
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the service stops")
        .unwrap();
}

#[tokio::test]
async fn a_quiet_watch_outlives_the_idle_timeout_over_rest_and_grpc() {
    let app = spawn_app_with(|cli| cli.idle_timeout_secs = Some(2)).await;
    app.create(&release_body("early", "reviews")).await;
    let mut rest = Lines::new(
        watch(
            &app,
            &format!("/v2/meshes/{MESH}/releases:watch"),
            Some(TOKEN),
        )
        .await,
    );
    assert_eq!(rest.event().await.1, "early");
    let mut grpc = app
        .grpc()
        .await
        .watch_releases(authed(meshrelease::pb::asm::v2::WatchReleasesRequest {
            mesh_id: MESH.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(15), grpc.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.release.unwrap().metadata.unwrap().name, "early");

    // Nothing happens for more than twice the idle timeout...
    tokio::time::sleep(Duration::from_secs(5)).await;
    // ...and both streams are still there for the next change.
    app.create(&release_body("late", "ratings")).await;
    let (kind, name, _) = rest.event().await;
    assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "late"));
    let next = tokio::time::timeout(Duration::from_secs(15), grpc.next())
        .await
        .unwrap()
        .expect("the gRPC stream is still open")
        .unwrap();
    assert_eq!(next.release.unwrap().metadata.unwrap().name, "late");

    // An idle keep-alive connection with nothing in flight is still closed.
    let mut idle = tokio::net::TcpStream::connect(app.address).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("closed, not hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
