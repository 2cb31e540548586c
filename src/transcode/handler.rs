//! The REST entry point: everything that is not gRPC lands here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tonic::metadata::MetadataMap;

use super::CallError;
use super::json_depth::check_depth;
use super::request::assemble;
use super::routes::{Found, Route, RouteTable};
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
    let body_json = if route.body.is_empty() {
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
    match (route.call)(json, metadata, parts.extensions).await {
        Ok(bytes) => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response()),
        Err(CallError::Decode { path, message }) => {
            Err(decode_error(route, &path, &message).into())
        }
        Err(CallError::Status(status)) => Err(WireError::from_status(&status)),
        Err(CallError::Encode(reason)) => {
            Err(ApiError::Internal(anyhow::anyhow!("writing the response: {reason}")).into())
        }
    }
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
