//! Per-token rate limits: 429 with Retry-After on REST, RESOURCE_EXHAUSTED
//! with RetryInfo on gRPC; other callers are not slowed.

use tonic_types::StatusExt;

use crate::helpers::*;

const LIMITED_TOKEN: &str = "limited-token";

async fn spawn_limited_app() -> TestApp {
    spawn_app_with(|cli| {
        let tokens = cli.tokens.take().unwrap();
        // One request per 100 s, two at once: the third is refused however
        // slow this machine is.
        cli.tokens = Some(tokens.replacen(
            "[",
            &format!(
                r#"[ {{ subject = "limited", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 0.01, burst = 2 }} }},"#,
                sha(LIMITED_TOKEN)
            ),
            1,
        ));
    })
    .await
}

async fn rest_get(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_limited_token_gets_429_with_retry_after_and_others_go_on() {
    let app = spawn_limited_app().await;
    assert_eq!(rest_get(&app, LIMITED_TOKEN).await.status(), 200);
    assert_eq!(rest_get(&app, LIMITED_TOKEN).await.status(), 200);
    let refused = rest_get(&app, LIMITED_TOKEN).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((90..=100).contains(&retry_after), "{retry_after}");
    let (_, body) = json_of(refused).await;
    assert_eq!(body["errorCode"], "ASM.01010008");
    assert!(body["errorMsg"].as_str().unwrap().contains("limited"));

    // gRPC shares the same bucket.
    let status = app
        .grpc()
        .await
        .create_release(with_token(grpc_request("over", "reviews"), LIMITED_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let delay = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(delay.as_secs() >= 90, "{delay:?}");

    // Another caller is not slowed, on either protocol.
    assert_eq!(rest_get(&app, TOKEN).await.status(), 200);
    app.grpc()
        .await
        .create_release(authed(grpc_request("other", "reviews")))
        .await
        .unwrap();
}

#[test]
fn rate_limits_are_checked_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cli = test_cli(dir.path());
    cli.tokens = Some(format!(
        r#"[{{ subject = "x", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 0 }} }}]"#,
        sha("x")
    ));
    let err = meshrelease::configuration::Settings::load(&cli)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokens[0].rate_limit.requests_per_second"),
        "{err}"
    );
}
