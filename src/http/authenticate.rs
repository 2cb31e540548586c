//! Authentication in front of both protocols, before any body is read: a
//! request without a valid `x-auth-token` gets 401 (gRPC UNAUTHENTICATED).
//! The caller's [`Principal`] is put on the request for the service to
//! authorize each action against.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::body_deadline::read_limited;
use super::is_grpc;
use crate::api::errors::ApiError;
use crate::api::errors::WireError;
use crate::auth::credentials::{CredentialEntry, CredentialRegistry, SignedRequest};
use crate::auth::{Caller, TOKEN_HEADER, TokenEntry, TokenRegistry, signature};
use crate::domain::Principal;

/// Paths anyone may call: liveness, readiness, metrics, gRPC health and
/// reflection (so that `grpcurl list` works without a token), and the
/// console's pages (they hold no data; their calls carry the token).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || crate::console::is_console(path)
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// The credentials requests are checked against.
pub struct Authenticator {
    /// Swapped whole by a configuration reload: a request sees the old set
    /// or the new one, never a mix.
    registries: ArcSwap<Registries>,
    /// A signed request's body is read (and hashed) before it is parsed; no
    /// more than this.
    max_body_bytes: usize,
}

/// Tokens and access keys, with the policies and rate limits they carry.
pub struct Registries {
    pub tokens: TokenRegistry,
    pub credentials: CredentialRegistry,
}

impl Authenticator {
    pub fn new(registries: Registries, max_body_bytes: usize) -> Self {
        Self {
            registries: ArcSwap::from_pointee(registries),
            max_body_bytes,
        }
    }

    /// Takes the tokens and access keys of a reloaded configuration; what
    /// callers kept (rate limit buckets, AK/SK nonces) carries over.
    pub fn replace(&self, tokens: Vec<TokenEntry>, credentials: Vec<CredentialEntry>) {
        let previous = self.registries.load();
        self.registries.store(Arc::new(Registries {
            tokens: TokenRegistry::renewed(tokens, &previous.tokens),
            credentials: CredentialRegistry::renewed(credentials, &previous.credentials),
        }));
    }
}

pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let grpc = is_grpc(request.headers());
    let grpc_web = grpc_web_content_type(request.headers());
    let signed = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| signature::is_signature(v.as_bytes()));
    let outcome = match request.headers().get(TOKEN_HEADER) {
        // Two identities in one request: refuse rather than pick one, so a
        // proxy adding a token to signed requests cannot go unnoticed.
        Some(_) if signed => Err(ApiError::Unauthenticated(
            "send X-Auth-Token or an SDK-HMAC-SHA256 Authorization, not both".into(),
        )),
        Some(token) => match auth.registries.load().tokens.authenticate(token.as_bytes()) {
            Some(caller) => admit(&caller).map(|()| (caller.principal.clone(), request)),
            None => Err(ApiError::Unauthenticated(
                "X-Auth-Token is not valid".into(),
            )),
        },
        None if signed && grpc => Err(ApiError::Unauthenticated(
            "gRPC calls authenticate with x-auth-token metadata; AK/SK signatures are for REST"
                .into(),
        )),
        None if signed => verify_signature(&auth, request).await,
        None => Err(ApiError::Unauthenticated(if grpc {
            "missing x-auth-token".into()
        } else {
            "missing X-Auth-Token (or an SDK-HMAC-SHA256 Authorization)".into()
        })),
    };
    match outcome {
        Ok((principal, mut request)) => {
            tracing::Span::current().record("subject", principal.subject.as_str());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            // Refused before any operation: audited with why (never the
            // token or the signature).
            let subject = if let ApiError::TooManyRequests { subject, .. } = &error {
                Some(subject.clone())
            } else {
                None
            };
            let error = WireError::from(error);
            tracing::info!(
                target: crate::telemetry::AUDIT,
                subject = subject.as_deref(),
                outcome = crate::metrics::grpc_code_name(error.grpc_code),
                reason = %error.message,
                "refused"
            );
            if grpc {
                grpc_error_as(grpc_web, error)
            } else {
                error.into_response()
            }
        }
    }
}

/// Reads the body (hashing it as it arrives, within the body limit), checks
/// the signature over the whole request, and gives the request back with its
/// body for the handler to parse.
async fn verify_signature(
    auth: &Authenticator,
    request: Request,
) -> Result<(Principal, Request), ApiError> {
    let (parts, body) = request.into_parts();
    let mut hasher = Sha256::new();
    let bytes = read_limited(body, &parts.headers, auth.max_body_bytes, |chunk| {
        hasher.update(chunk)
    })
    .await?;
    let body_sha256_hex = hex::encode(hasher.finalize());
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let registries = auth.registries.load();
    let caller = registries
        .credentials
        .verify(
            &SignedRequest {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                authorization,
                body_sha256_hex: &body_sha256_hex,
            },
            chrono::Utc::now(),
        )
        .map_err(ApiError::Unauthenticated)?;
    admit(&caller)?;
    Ok((
        caller.principal.clone(),
        Request::from_parts(parts, Body::from(bytes)),
    ))
}

/// Takes a request from the caller's rate limit, if it has one.
fn admit(caller: &Caller<'_>) -> Result<(), ApiError> {
    match caller.limiter {
        None => Ok(()),
        Some(limiter) => limiter
            .try_acquire()
            .map_err(|retry_after| ApiError::TooManyRequests {
                subject: caller.principal.subject.clone(),
                retry_after,
            }),
    }
}

/// A trailers-only gRPC answer, in the request's own flavour (gRPC or gRPC-Web).
pub fn grpc_error(request: &Request, error: WireError) -> Response {
    grpc_error_as(grpc_web_content_type(request.headers()), error)
}

/// The request's content type when it is gRPC-Web (the answer must match it).
fn grpc_web_content_type(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    headers
        .get(http::header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().starts_with(b"application/grpc-web"))
        .cloned()
}

fn grpc_error_as(grpc_web: Option<http::HeaderValue>, error: WireError) -> Response {
    let mut response = error.to_status().into_http::<axum::body::Body>();
    if let Some(ct) = grpc_web {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct);
    }
    response
}
