//! Exact data and strict input: numbers are never rounded, duplicate keys
//! and repeated single-valued parameters are refused, HEAD and OPTIONS work
//! where HTTP says they must, echoes are bounded, and tonic's own errors are
//! rewritten the same way every time.

use meshrelease::pb::asm::v2 as pb;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

async fn post_raw(app: &TestApp, body: &str) -> (u16, Value) {
    json_of(
        app.http
            .post(app.releases_url(MESH, "default"))
            .header("X-Auth-Token", TOKEN)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn big_integers_are_refused_naming_the_field_and_others_come_back_exactly() {
    let app = spawn_app().await;
    let body = release_body("exact-numbers", "reviews")
        .to_string()
        .replace(
            r#""replicas":2"#,
            r#""replicas":2,"progressDeadlineSeconds":9007199254740993"#,
        );
    assert!(body.contains("9007199254740993"));
    let (status, error) = post_raw(&app, &body).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        detail_fields(&error),
        vec!["spec.grayDeployments[0].template.spec.progressDeadlineSeconds"]
    );

    // At the edge of what a double holds, and small ones: kept as sent.
    let body = release_body("exact-numbers", "reviews")
        .to_string()
        .replace(
            r#""replicas":2"#,
            r#""replicas":2,"minReadySeconds":0,"revisionHistoryLimit":9007199254740992"#,
        );
    let (status, created) = post_raw(&app, &body).await;
    assert_eq!(status, 200, "{created}");
    let (_, read) = json_of(app.get("exact-numbers").await).await;
    let raw = read.to_string();
    assert!(
        raw.contains(r#""revisionHistoryLimit":9007199254740992"#),
        "{raw}"
    );
    assert!(
        raw.contains(r#""replicas":2,"#) || raw.contains(r#""replicas":2}"#),
        "{raw}"
    );
    assert!(
        !raw.contains("9007199254740992.0"),
        "no integer turned into a float: {raw}"
    );
    assert!(raw.contains(r#""minReadySeconds":0,"#), "{raw}");

    // gRPC: a double beyond 2^53 may already be rounded: refused too.
    let mut request = grpc_request("exact-grpc", "details");
    let template = request
        .release
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .gray_deployments[0]
        .template
        .as_mut()
        .unwrap();
    let spec = template.fields_mut().get_mut("spec").unwrap();
    let Some(meshrelease::pb::wkt::value::Kind::StructValue(spec)) = spec.kind.as_mut() else {
        panic!("spec is an object")
    };
    spec.fields_mut().insert(
        "progressDeadlineSeconds".into(),
        meshrelease::pb::wkt::value::Kind::NumberValue(9_007_199_254_740_994.0).into(),
    );
    let status = app
        .grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec!["spec.grayDeployments[0].template.spec.progressDeadlineSeconds"]
    );
}

#[tokio::test]
async fn a_key_given_twice_is_refused_at_any_depth() {
    let app = spawn_app().await;
    let body = release_body("twice", "reviews")
        .to_string()
        .replace(r#""version":"v2""#, r#""version":"v2","version":"v9""#);
    let (status, error) = post_raw(&app, &body).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(detail_fields(&error), vec!["spec.version"]);

    let body = release_body("twice", "reviews").to_string().replacen(
        r#""labels":{"app":"reviews"}"#,
        r#""labels":{"app":"reviews","app":"ratings"}"#,
        2,
    );
    let (status, error) = post_raw(&app, &body).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        detail_fields(&error),
        vec!["spec.grayDeployments[0].template.metadata.labels.app"]
    );
    assert_eq!(app.get("twice").await.status(), 404, "nothing stored");

    // A query parameter that takes one value, given twice.
    let (status, error) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=1&limit=2"))
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(detail_fields(&error), vec!["limit"]);
}

#[tokio::test]
async fn head_and_options_answer_where_http_says_they_must() {
    let app = spawn_app().await;
    app.create(&release_body("headed", "reviews")).await;
    let get = app.get("headed").await;
    let head = app
        .http
        .head(app.release_url("headed"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-type"],
        get.headers()["content-type"]
    );
    assert!(head.headers().contains_key("x-request-id"));
    // No body (a raw read: reqwest would hide one).
    let answer = app
        .raw_http(&format!(
            "HEAD /v2/meshes/{MESH}/namespaces/default/releases/headed HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOKEN}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n"),
        "a HEAD answer carries no body: {answer:?}"
    );
    let missing = app
        .http
        .head(app.release_url("never-made"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let options = app
        .http
        .request(reqwest::Method::OPTIONS, app.release_url("headed"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(
        options.headers()["allow"],
        "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"
    );
    let refused = app
        .http
        .post(app.release_url("headed"))
        .header("X-Auth-Token", TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(
        refused.headers()["allow"],
        "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"
    );
    // A custom method's path is that method's only: not also a release
    // named "headed:pause" that GET, PUT or DELETE would take.
    let action = format!("{}:pause", app.release_url("headed"));
    let options = app
        .http
        .request(reqwest::Method::OPTIONS, &action)
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["allow"], "POST, OPTIONS");
    let get = app
        .http
        .get(&action)
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test]
async fn errors_quote_at_most_128_characters_of_what_the_client_sent() {
    let app = spawn_app().await;
    let long = "m".repeat(5000);
    let (status, error) = app.list(&format!("/v2/meshes/{long}/releases")).await;
    assert_eq!(status, 404, "{error}");
    let message = error["errorMsg"].as_str().unwrap();
    assert!(message.len() < 400, "{message}");
    assert!(message.contains('…'), "{message}");

    let (status, error) = app
        .list(&format!("/v2/meshes/{MESH}/releases?phase={long}"))
        .await;
    assert_eq!(status, 400);
    assert!(error.to_string().len() < 1000, "{error}");

    let status = app
        .grpc()
        .await
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: long.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().len() < 400, "{}", status.message());
}

/// tonic's own errors, rewritten into the contract's shape: each case, so
/// that a tonic upgrade that changes its wording fails here.
#[tokio::test]
async fn tonic_errors_are_rewritten_every_time() {
    let app = spawn_app_with(|cli| cli.max_body_bytes = Some(64 * 1024)).await;
    let mut request = grpc_request("too-big", "reviews");
    request
        .release
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .uid = "x".repeat(70 * 1024);
    let err = app
        .grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("65536"),
        "the limit, read from tonic's text: {err:?}"
    );
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010004"
    );

    // A message that does not decode: tonic says INTERNAL; the contract 400.
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut frame = vec![0u8, 0, 0, 0, 3];
    frame.extend_from_slice(&[0x0a, 0xff, 0xff]);
    let response = client
        .post(format!("{}/asm.v2.ReleaseService/CreateRelease", app.base))
        .header("Content-Type", "application/grpc-web+proto")
        .header("X-Auth-Token", TOKEN)
        .body(frame)
        .send()
        .await
        .unwrap();
    let status = response.headers()["grpc-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(status, "3", "INVALID_ARGUMENT");
    let message = response.headers()["grpc-message"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("could%20not%20be%20decoded") || message.contains("could not be decoded"),
        "{message}"
    );
}
