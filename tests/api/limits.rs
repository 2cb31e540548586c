//! Body and nesting limits, HTTP/2 settings, header timeouts: each refused
//! cleanly, with the server still answering afterwards.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::*;

async fn still_serving(app: &TestApp, name: &str) {
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.create(&release_body(name, name)).await.status(), 200);
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|cli| cli.max_body_bytes = Some(64 * 1024)).await;
    let mut body = release_body("too-big", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["metadata"]["annotations"] =
        json!({"blob": "x".repeat(70 * 1024)});
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 413);
    assert_eq!(error["errorCode"], "ASM.01010004");
    still_serving(&app, "after-big").await;
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413() {
    let app = spawn_app_with(|cli| cli.max_body_bytes = Some(64 * 1024)).await;
    // No Content-Length: the limit must hold while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    still_serving(&app, "after-chunked").await;
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let app = spawn_app().await;
    let head = format!(
        "POST /v2/meshes/{MESH}/namespaces/default/releases HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    let answer = app.raw_http(&head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_hostile_deep_document_is_400_and_harmless() {
    let app = spawn_app().await;
    let depth = 100_000;
    let hostile = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let response = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("Content-Type", "application/json")
        .body(hostile)
        .send()
        .await
        .unwrap();
    let (status, error) = json_of(response).await;
    assert_eq!(status, 400);
    assert!(
        error["errorMsg"].as_str().unwrap().contains("nests deeper"),
        "{error}"
    );
    still_serving(&app, "after-deep").await;
}

#[tokio::test]
async fn deep_nesting_inside_a_template_is_400() {
    let app = spawn_app().await;
    let mut nested = json!("leaf");
    for _ in 0..70 {
        nested = json!({ "x": nested });
    }
    let mut body = release_body("deep-template", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["metadata"]["annotations"] = nested;
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400, "{error}");
    still_serving(&app, "after-template").await;
}

#[tokio::test]
async fn an_oversized_grpc_message_is_resource_exhausted() {
    let app = spawn_app_with(|cli| cli.max_body_bytes = Some(64 * 1024)).await;
    let mut request = grpc_request("too-big", "reviews");
    let release = request.release.as_mut().unwrap();
    release.metadata.as_mut().unwrap().uid = "x".repeat(70 * 1024);
    let mut client = app.grpc().await;
    let err = client.create_release(authed(request)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        tonic_types::StatusExt::get_details_error_info(&err)
            .unwrap()
            .metadata["errorCode"],
        "ASM.01010004"
    );
    client
        .create_release(authed(grpc_request("after-big", "reviews")))
        .await
        .unwrap();
}

#[tokio::test]
async fn http2_advertises_a_concurrent_stream_limit() {
    let app = spawn_app_with(|cli| cli.max_concurrent_streams = Some(37)).await;
    let tcp = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The server's SETTINGS arrive with the first exchange.
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("{}/healthz", app.base))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(client.current_max_send_streams(), 37);
}

#[tokio::test]
async fn a_client_too_slow_with_its_headers_is_cut_off() {
    let app = spawn_app_with(|cli| cli.header_read_timeout_secs = Some(1)).await;
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must close the connection.
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the connection stayed open");
    still_serving(&app, "after-slow").await;
}
