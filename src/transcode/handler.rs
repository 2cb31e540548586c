//! The REST entry point: everything that is not gRPC lands here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tonic::metadata::MetadataMap;

use axum::body::Bytes;
use futures_util::StreamExt as _;
use http::HeaderName;

use super::json_depth::check_depth;
use super::request::assemble;
use super::routes::{Found, Route, RouteTable};
use super::{CallError, MethodCall};
use crate::api::errors::ApiError;
use crate::api::errors::WireError;
use crate::domain::names::bounded;
use crate::http::body_deadline::read_limited;

/// How deep a JSON body may nest. Kubernetes Deployments nest about fifteen
/// levels; the release wraps them in five more.
pub const MAX_JSON_DEPTH: usize = 64;

#[derive(Clone)]
pub struct Transcoder {
    pub table: Arc<RouteTable>,
    pub max_body_bytes: usize,
}

pub async fn transcode(State(transcoder): State<Transcoder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match transcoder.table.find(&parts.method, parts.uri.path()) {
        Found::Route(route, bindings) => call(&transcoder, route, bindings, parts, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Found::WrongMethod(allowed) => {
            let allow = allowed
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = if parts.method == http::Method::OPTIONS {
                StatusCode::NO_CONTENT.into_response()
            } else {
                WireError::method_not_allowed(format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    bounded(parts.method.as_str()),
                    bounded(parts.uri.path())
                ))
                .into_response()
            };
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        Found::Nothing => WireError::from(ApiError::NotFound(format!(
            "no operation at {} {}",
            bounded(parts.method.as_str()),
            bounded(parts.uri.path())
        )))
        .into_response(),
    }
}

/// Builds the RPC's request from path, query and body, calls it, and writes
/// its response as JSON.
async fn call(
    transcoder: &Transcoder,
    route: &Route,
    bindings: Vec<(String, String)>,
    parts: http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, WireError> {
    let body_json = if route.body.is_empty() || optional_body_absent(route, &parts.headers) {
        None
    } else {
        check_content_type(&parts.headers)?;
        Some(read_json(body, &parts.headers, transcoder.max_body_bytes).await?)
    };
    let json = assemble(
        &route.input,
        &route.body,
        body_json,
        bindings,
        parts.uri.query(),
    )?;

    let metadata = MetadataMap::from_headers(parts.headers);
    let answer = match &route.call {
        MethodCall::Unary(call) => call(json, metadata, parts.extensions).await.map(|bytes| {
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response()
        }),
        MethodCall::ServerStreaming(call) => {
            call(json, metadata, parts.extensions).await.map(ndjson)
        }
    };
    answer.map_err(|error| match error {
        CallError::Decode { path, message } => decode_error(route, &path, &message).into(),
        CallError::Status(status) => WireError::from_status(&status),
        CallError::Encode(reason) => {
            ApiError::Internal(anyhow::anyhow!("writing the response: {reason}")).into()
        }
    })
}

/// The media type of a streamed answer: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

/// A server stream as newline-delimited JSON, grpc-gateway's way: each
/// message as `{"result": ...}`, and a failure as `{"error": {...}}` on the
/// last line (the status line went out with the first byte). Nothing is
/// buffered: each line is written as its message comes, and proxies are
/// asked not to buffer either.
fn ndjson(messages: super::JsonStream) -> Response {
    let lines = futures_util::stream::unfold(Some(messages), |messages| async move {
        let mut messages = messages?;
        let (line, more) = match messages.next().await? {
            Ok(message) => {
                let mut line = Vec::with_capacity(message.len() + 12);
                line.extend_from_slice(b"{\"result\":");
                line.extend_from_slice(&message);
                line.extend_from_slice(b"}\n");
                (line, Some(messages))
            }
            Err(status) => {
                let mut line = Vec::with_capacity(128);
                line.extend_from_slice(b"{\"error\":");
                line.extend_from_slice(&WireError::from_status(&status).body_json());
                line.extend_from_slice(b"}\n");
                (line, None)
            }
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), more))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// A request whose body fills the whole message (`body: "*"`: an action
/// such as `:pause`) may come without one, as grpc-gateway allows: no
/// Content-Type and nothing announced.
fn optional_body_absent(route: &Route, headers: &http::HeaderMap) -> bool {
    route.body == "*"
        && headers.get(header::CONTENT_TYPE).is_none()
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
        && headers.get(header::TRANSFER_ENCODING).is_none()
}

fn check_content_type(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = content_type.map(|ct| ct.split(';').next().unwrap_or_default().trim());
    match essence {
        Some(ct) if ct.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(_) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got {}",
            crate::domain::names::quoted(content_type.unwrap_or_default())
        ))),
        None => Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json; none was sent".into(),
        )),
    }
}

/// Reads the body, refusing it as soon as it passes `limit` (never buffering
/// more), and parses it after a nesting check on the raw bytes.
async fn read_json(
    body: axum::body::Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let bytes = read_limited(body, headers, limit, |_| {}).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_field("body", "a JSON object is required"));
    }
    if let Err(at) = check_depth(&bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::invalid_field(
            "body",
            format!("JSON nests deeper than {MAX_JSON_DEPTH} levels (at byte {at})"),
        ));
    }
    super::json_strict::parse(&bytes).map_err(|refusal| {
        let field = if refusal.path.is_empty() {
            "body".to_owned()
        } else {
            refusal.path
        };
        ApiError::invalid_field(field, refusal.reason)
    })
}

/// A message decoding failure, named in the client's terms: the path within
/// the body as the client sent it.
fn decode_error(route: &Route, path: &str, message: &str) -> ApiError {
    let mut field = path.to_owned();
    if route.body != "*" && !route.body.is_empty() {
        if let Some(inner) = field.strip_prefix(&format!("{}.", route.body)) {
            field = inner.to_owned();
        } else if field == route.body {
            field = "body".to_owned();
        }
    }
    if field == "." || field.is_empty() {
        field = "body".to_owned();
    }
    ApiError::invalid_field(field, message.to_owned())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn a_stream_is_one_result_per_line_and_a_failure_is_the_last_line() {
        let messages = futures_util::stream::iter(vec![
            Ok(br#"{"type":"ADDED"}"#.to_vec()),
            Ok(br#"{"type":"MODIFIED"}"#.to_vec()),
            Err(tonic::Status::unavailable("the service is stopping")),
            Ok(br#"{"type":"never sent"}"#.to_vec()),
        ])
        .boxed();
        let response = ndjson(messages);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], NDJSON);
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], r#"{"result":{"type":"ADDED"}}"#);
        assert_eq!(lines[1], r#"{"result":{"type":"MODIFIED"}}"#);
        let error: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(error["error"]["errorMsg"], "the service is stopping");
        assert!(error["error"]["errorCode"].is_string(), "{error}");
        assert!(text.ends_with('\n'));
    }
}
