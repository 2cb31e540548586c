//! The console's files as a browser fetches them: no token needed (they
//! hold no data), the right types, a strict Content-Security-Policy, and
//! nothing else under `/console/`. Its behaviour in a browser is tested by
//! `.ci/console.sh` (Chromium with Playwright).

use crate::helpers::*;

#[tokio::test]
async fn the_console_is_served_without_a_token_with_a_strict_policy() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/console", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/console/");

    for (path, content_type, needle) in [
        (
            "/console/",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"app.js\">",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "releases:watch",
        ),
        (
            "/console/style.css",
            "text/css; charset=utf-8",
            ":focus-visible",
        ),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
    }
    let response = client
        .get(format!("{}/console/../metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 500);
    let response = client
        .get(format!("{}/console/secrets.txt", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // The icon every browser asks for: no 401 in its log (the page names
    // its own, icon.svg).
    let response = client
        .get(format!("{}/favicon.ico", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let page = app.text_of("/console/").await;
    assert!(
        page.contains(r#"<link rel="icon" href="icon.svg""#),
        "{page}"
    );
}

#[tokio::test]
async fn the_console_never_puts_the_token_in_a_url_or_local_storage() {
    let app = spawn_app().await;
    let script = app.text_of("/console/app.js").await;
    assert!(script.contains("sessionStorage"));
    assert!(!script.contains("localStorage"));
    assert!(!script.contains("document.cookie"));
    assert!(script.contains("\"X-Auth-Token\": token()"));
}
