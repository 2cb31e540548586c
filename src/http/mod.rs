//! The HTTP side of the one listener: connection handling and limits
//! (`server`, `idle`), per-request middleware (`request_id`, `authenticate`,
//! `body_deadline`, `observe` for metrics), gRPC error normalisation
//! (`grpc_errors`), and the health endpoints (`health`).

pub mod authenticate;
pub mod body_deadline;
pub mod cors;
pub mod grpc_errors;
pub mod health;
pub mod idle;
pub mod observe;
pub mod request_id;
pub mod server;
pub mod tls;

/// Whether a request is gRPC or gRPC-Web (by content type), rather than REST.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}
