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
use crate::auth::rate_limit::Replicas;
use crate::auth::replay::{self, SignedWrites};
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
    /// The signed requests that may not run again.
    signed_writes: Arc<dyn SignedWrites>,
    /// How many replicas share each rate limit.
    pub replicas: Arc<Replicas>,
}

/// Tokens and access keys, with the policies and rate limits they carry.
pub struct Registries {
    pub tokens: TokenRegistry,
    pub credentials: CredentialRegistry,
}

impl Authenticator {
    pub fn new(
        registries: Registries,
        max_body_bytes: usize,
        signed_writes: Arc<dyn SignedWrites>,
    ) -> Self {
        Self {
            registries: ArcSwap::from_pointee(registries),
            max_body_bytes,
            signed_writes,
            replicas: Arc::default(),
        }
    }

    /// Takes the tokens and access keys of a reloaded configuration; what
    /// callers kept (rate limit buckets, signed requests already run)
    /// carries over.
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
            Some(caller) => {
                admit(&caller, &auth.replicas).map(|()| (caller.principal.clone(), request, None))
            }
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
        Ok((principal, mut request, claimed)) => {
            tracing::Span::current().record("subject", principal.subject.as_str());
            request.extensions_mut().insert(principal);
            let response = next.run(request).await;
            if let Some(key) = claimed
                && replay::refused_before_it_ran(response.status())
            {
                auth.signed_writes.release(&key).await;
            }
            response
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
/// the signature over the whole request, claims it if it may run only once
/// (a write, or any request with a nonce), and gives the request back with
/// its body for the handler to parse, and the claim made.
async fn verify_signature(
    auth: &Authenticator,
    request: Request,
) -> Result<(Principal, Request, Option<String>), ApiError> {
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
    let verified = registries
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
    admit(&verified.caller, &auth.replicas)?;
    let claimed = if verified.has_nonce || replay::is_write(&parts.method) {
        match auth.signed_writes.claim(&verified.replay_key).await {
            Ok(true) => Some(verified.replay_key),
            Ok(false) => {
                return Err(ApiError::Unauthenticated(if verified.has_nonce {
                    "X-Sdk-Nonce was already used: this request is a replay".into()
                } else {
                    "this signed request was already carried out: a replay is refused; \
                     to repeat it, sign it again (a new X-Sdk-Date)"
                        .into()
                }));
            }
            Err(why) => {
                // Fail closed: it is not run. (The reason is logged; the
                // client is told to retry.)
                return Err(ApiError::Unavailable(format!(
                    "cannot tell whether a signed request is a replay, so it was not \
                     carried out: {why}"
                )));
            }
        }
    } else {
        None
    };
    Ok((
        verified.caller.principal.clone(),
        Request::from_parts(parts, Body::from(bytes)),
        claimed,
    ))
}

/// Takes a request from the caller's rate limit, if it has one, this
/// replica's part of it.
fn admit(caller: &Caller<'_>, replicas: &Replicas) -> Result<(), ApiError> {
    match caller.limiter {
        None => Ok(()),
        Some(limiter) => {
            limiter
                .try_acquire(replicas.get())
                .map_err(|retry_after| ApiError::TooManyRequests {
                    subject: caller.principal.subject.clone(),
                    retry_after,
                })
        }
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
