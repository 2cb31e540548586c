//! CORS as a browser on another origin meets it: off by default; with
//! `cors_allowed_origins`, preflights answered before authentication for
//! REST and gRPC-Web, the gRPC status and request id exposed, credentials
//! never allowed, and other origins given nothing.

use crate::helpers::*;

const CONSOLE: &str = "https://console.example.com";

async fn preflight(
    app: &TestApp,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .unwrap()
}

/// A token-bearing GET from a page of `origin`.
async fn get_from(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .header("Origin", origin)
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap()
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn lists(value: Option<&str>, wanted: &[&str]) -> bool {
    let listed: Vec<String> = value
        .unwrap_or_default()
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    wanted.iter().all(|w| listed.iter().any(|l| l == w))
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_sent() {
    let app = spawn_app().await;
    let response = preflight(
        &app,
        &app.releases_url(MESH, "default")[app.base.len()..],
        CONSOLE,
        "POST",
        "x-auth-token,content-type",
    )
    .await;
    assert!(header(&response, "access-control-allow-origin").is_none());
    let response = app
        .http
        .get(app.releases_url(MESH, "default"))
        .header("Origin", CONSOLE)
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_named_origin_gets_preflights_and_exposed_headers_and_others_get_nothing() {
    let app = spawn_app_with(|cli| {
        cli.cors_allowed_origins = Some(vec![CONSOLE.into()]);
    })
    .await;
    let path = format!("/v2/meshes/{MESH}/namespaces/default/releases");

    // A REST preflight: no token, answered anyway, naming what may be sent.
    let response = preflight(&app, &path, CONSOLE, "POST", "x-auth-token,content-type").await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(CONSOLE)
    );
    assert!(lists(
        header(&response, "access-control-allow-methods"),
        &["post", "patch", "delete"]
    ));
    assert!(lists(
        header(&response, "access-control-allow-headers"),
        &["x-auth-token", "content-type"]
    ));
    assert!(header(&response, "access-control-allow-credentials").is_none());
    assert!(lists(header(&response, "vary"), &["origin"]));

    // A gRPC-Web preflight, with the headers its clients send.
    let response = preflight(
        &app,
        "/asm.v2.ReleaseService/GetRelease",
        CONSOLE,
        "POST",
        "x-grpc-web,content-type,x-user-agent,x-auth-token",
    )
    .await;
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(CONSOLE)
    );
    assert!(lists(
        header(&response, "access-control-allow-headers"),
        &["x-grpc-web", "content-type", "x-user-agent", "x-auth-token"]
    ));

    // The request itself: the answer names the origin and exposes what a
    // script must read.
    let response = get_from(&app, &path, CONSOLE).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(CONSOLE)
    );
    assert!(lists(
        header(&response, "access-control-expose-headers"),
        &[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "x-request-id"
        ]
    ));

    // A gRPC-Web call from the browser's origin: its status is readable.
    let response = app
        .http
        .post(format!("{}/asm.v2.ReleaseService/GetRelease", app.base))
        .header("Origin", CONSOLE)
        .header("Content-Type", "application/grpc-web+proto")
        .header("X-Grpc-Web", "1")
        .header("X-Auth-Token", TOKEN)
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(CONSOLE)
    );
    assert!(
        header(&response, "grpc-status").is_some(),
        "{:?}",
        response.headers()
    );

    // Another origin: nothing that would let its page read an answer.
    let response = preflight(&app, &path, "https://evil.example", "POST", "x-auth-token").await;
    assert!(header(&response, "access-control-allow-origin").is_none());
    let response = get_from(&app, &path, "https://evil.example").await;
    assert!(header(&response, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn any_origin_is_a_star_and_never_with_credentials() {
    let app = spawn_app_with(|cli| {
        cli.cors_allowed_origins = Some(vec!["*".into()]);
    })
    .await;
    let path = format!("/v2/meshes/{MESH}/releases");
    let response = preflight(
        &app,
        &path,
        "https://anywhere.example",
        "GET",
        "x-auth-token",
    )
    .await;
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert!(header(&response, "access-control-allow-credentials").is_none());
    let response = get_from(&app, &path, "https://anywhere.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
}
