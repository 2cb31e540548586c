//! Authentication (401) before anything else, authorization (403) per action
//! and mesh, on both protocols.

use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_on_rest() {
    let app = spawn_app().await;
    for token in [None, Some("wrong-token"), Some("")] {
        let mut request = app
            .http
            .post(app.releases_url(MESH, "default"))
            .json(&release_body("no-auth", "reviews"));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        let (status, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["errorCode"], "ASM.01000001");
        assert!(
            !body.to_string().contains("wrong-token"),
            "the token must not be echoed"
        );
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthenticated_on_grpc() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let err = client
        .create_release(tonic::Request::new(grpc_request("no-auth", "reviews")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01000001"
    );
    let err = client
        .create_release(with_token(grpc_request("no-auth", "reviews"), "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_parsed() {
    let app = spawn_app().await;
    // Not JSON, wrong content type, no token: the answer is still 401.
    let (status, body) = json_of(
        app.http
            .post(app.releases_url(MESH, "default"))
            .header("Content-Type", "text/plain")
            .body("{{{ not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let app = spawn_app().await;
    // Announce a large body and send none of it: a 401 must come back anyway.
    let head = format!(
        "POST /v2/meshes/{MESH}/namespaces/default/releases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n"
    );
    let answer = app.raw_http(&head).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test]
async fn a_token_for_another_mesh_is_403_on_both_protocols() {
    let app = spawn_app().await;
    let (status, body) = json_of(
        app.http
            .post(app.releases_url(MESH, "default"))
            .header("X-Auth-Token", OTHER_MESH_TOKEN)
            .json(&release_body("forbidden", "reviews"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["errorCode"], "ASM.01000002");

    let err = app
        .grpc()
        .await
        .create_release(with_token(
            grpc_request("forbidden", "reviews"),
            OTHER_MESH_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01000002"
    );
}

#[tokio::test]
async fn permission_is_checked_before_the_mesh_exists() {
    let app = spawn_app().await;
    // A token limited to other-mesh asking about an unknown mesh learns nothing of it.
    let response = app
        .http
        .post(app.releases_url("secret-mesh", "default"))
        .header("X-Auth-Token", OTHER_MESH_TOKEN)
        .json(&release_body("probe", "reviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn an_explicit_deny_wins_over_allow() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", DENIED_TOKEN)
        .json(&release_body("denied", "reviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let app = spawn_app().await;
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
