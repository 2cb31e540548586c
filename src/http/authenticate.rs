//! Authentication in front of both protocols, before any body is read: a
//! request without a valid `x-auth-token` gets 401 (gRPC UNAUTHENTICATED).
//! The caller's [`Principal`] is put on the request for the service to
//! authorize each action against.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::is_grpc;
use crate::api::errors::WireError;
use crate::auth::{TOKEN_HEADER, TokenRegistry};
use crate::domain::ApiError;

/// Paths anyone may call: liveness, readiness, metrics, gRPC health and
/// reflection (so that `grpcurl list` works without a token).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

pub async fn authenticate(
    State(tokens): State<Arc<TokenRegistry>>,
    mut request: Request,
    next: Next,
) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let principal = match request.headers().get(TOKEN_HEADER) {
        None => Err("missing X-Auth-Token"),
        Some(token) => tokens
            .authenticate(token.as_bytes())
            .cloned()
            .ok_or("X-Auth-Token is not valid"),
    };
    match principal {
        Ok(principal) => {
            tracing::Span::current().record("subject", principal.subject.as_str());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(reason) => {
            let error = WireError::from(ApiError::Unauthenticated(reason.into()));
            if is_grpc(request.headers()) {
                grpc_error(&request, error)
            } else {
                error.into_response()
            }
        }
    }
}

/// A trailers-only gRPC answer, in the request's own flavour (gRPC or gRPC-Web).
pub fn grpc_error(request: &Request, error: WireError) -> Response {
    let mut response = error.to_status().into_http::<axum::body::Body>();
    if let Some(ct) = request.headers().get(http::header::CONTENT_TYPE)
        && ct.as_bytes().starts_with(b"application/grpc-web")
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.clone());
    }
    response
}
