//! The browser console at `/console/`: static HTML, CSS and a JavaScript
//! module, embedded in the binary (nothing to install, nothing to build),
//! talking to the service's own REST API on the same origin. The pages are
//! public; every call they make carries the user's token.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const DOM: &str = include_str!("assets/dom.js");
const STRATEGY: &str = include_str!("assets/strategy.js");
const MATCH: &str = include_str!("assets/match.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Scripts and styles from this origin only, no inline code, no framing,
/// and calls to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether `path` is one of the console's (public: the pages hold no data),
/// or the icon a browser asks every site for.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/") || path == FAVICON
}

/// Browsers ask for it whatever the page says: answered with nothing (the
/// console's pages name their icon), not a 401 in the browser's log.
const FAVICON: &str = "/favicon.ico";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { asset("index.html") }))
        .route(FAVICON, get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(file: &str) -> Response {
    let (content_type, body) = match file {
        "index.html" => ("text/html; charset=utf-8", INDEX),
        "app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "dom.js" => ("text/javascript; charset=utf-8", DOM),
        "strategy.js" => ("text/javascript; charset=utf-8", STRATEGY),
        "match.js" => ("text/javascript; charset=utf-8", MATCH),
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => return (StatusCode::NOT_FOUND, "no such file in the console\n").into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
