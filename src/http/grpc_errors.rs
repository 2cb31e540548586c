//! Errors tonic raises itself, before our service runs, brought into the
//! contract's shape: a message over the size limit is RESOURCE_EXHAUSTED
//! (tonic says OUT_OF_RANGE), and a message that does not decode (too deep,
//! say) is INVALID_ARGUMENT (tonic says INTERNAL). Both get `ErrorInfo` with
//! the contract's `errorCode`, like every other error.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tonic::Code;

use crate::api::errors::ApiError;
use crate::api::errors::WireError;

pub async fn normalize_grpc_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    let replacement = if status.code() == Code::OutOfRange
        && message.contains("decoded message length too large")
    {
        let limit = message
            .rsplit("limit is: ")
            .next()
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        ApiError::PayloadTooLarge { limit }
    } else if status.code() == Code::Internal
        && message.starts_with("failed to decode Protobuf message")
    {
        let reason = message.rsplit(": ").next().unwrap_or("malformed");
        ApiError::invalid_field(
            "message",
            format!("the request message could not be decoded: {reason}"),
        )
    } else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let mut replaced = WireError::from(replacement)
        .to_status()
        .into_http::<axum::body::Body>();
    for name in [
        http::header::CONTENT_TYPE,
        http::HeaderName::from_static("x-request-id"),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}
