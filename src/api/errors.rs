//! The one place where a domain error becomes what a client sees: a gRPC
//! status with `ErrorInfo` and `BadRequest` details, or an HTTP status with the
//! contract's `{"errorCode", "errorMsg", "details"}` body. REST answers are
//! made from the same gRPC status the service returned, so both protocols
//! always agree.

use std::collections::HashMap;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Action, DomainError, Violation};

/// The `ErrorInfo.domain` of every error this service returns.
const ERROR_DOMAIN: &str = "meshrelease";
const ERROR_CODE_KEY: &str = "errorCode";

/// An error as the protocol edges know it: everything the domain answers,
/// and what only an edge can refuse (authentication, body size, media type,
/// deadlines, rate limits).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidArgument {
        message: String,
        violations: Vec<Violation>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{subject} may not {action} on mesh {mesh_id}", action = .action.as_str())]
    PermissionDenied {
        subject: String,
        action: Action,
        mesh_id: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Gone(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The caller's rate limit is used up for now.
    #[error("{subject} is over its request rate limit; retry in {} ms", .retry_after.as_millis().max(1))]
    TooManyRequests {
        subject: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("the service is shutting down: reconnect and resume from the last resourceVersion")]
    ShuttingDown,
    /// A fault of the service. The cause is logged, never sent to a client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 for rule violations, summarised in the message.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        DomainError::invalid(violations).into()
    }

    /// A 400 about one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        DomainError::invalid_field(field, description).into()
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::InvalidArgument {
                message,
                violations,
            } => ApiError::InvalidArgument {
                message,
                violations,
            },
            DomainError::PermissionDenied {
                subject,
                action,
                mesh_id,
            } => ApiError::PermissionDenied {
                subject,
                action,
                mesh_id,
            },
            DomainError::NotFound(m) => ApiError::NotFound(m),
            DomainError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            DomainError::Aborted(m) => ApiError::Aborted(m),
            DomainError::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            DomainError::Gone(m) => ApiError::Gone(m),
            DomainError::Unavailable(m) => ApiError::Unavailable(m),
            DomainError::ShuttingDown => ApiError::ShuttingDown,
            DomainError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// The contract's error codes, with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    Gone,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    TooManyRequests,
    RequestTimeout,
    Internal,
    Unavailable,
}

impl ErrorCode {
    const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Gone,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooManyRequests,
        ErrorCode::RequestTimeout,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "ASM.01010001",
            ErrorCode::Unauthenticated => "ASM.01000001",
            ErrorCode::Forbidden => "ASM.01000002",
            ErrorCode::NotFound => "ASM.01010002",
            ErrorCode::Conflict => "ASM.01010003",
            ErrorCode::Gone => "ASM.01010007",
            ErrorCode::PayloadTooLarge => "ASM.01010004",
            ErrorCode::UnsupportedMediaType => "ASM.01010005",
            ErrorCode::MethodNotAllowed => "ASM.01010006",
            ErrorCode::TooManyRequests => "ASM.01010008",
            ErrorCode::RequestTimeout => "ASM.01010009",
            ErrorCode::Internal => "ASM.01040001",
            ErrorCode::Unavailable => "ASM.01040002",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason in `ErrorInfo`: a stable UPPER_SNAKE name.
    fn reason(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Gone => "GONE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// For a status that carries no `ErrorInfo` (one made by tonic itself),
    /// the usual gRPC to HTTP table.
    fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                ErrorCode::InvalidRequest
            }
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::Forbidden,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists | Code::Aborted => ErrorCode::Conflict,
            Code::ResourceExhausted => ErrorCode::PayloadTooLarge,
            Code::Unavailable => ErrorCode::Unavailable,
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => ErrorCode::Internal,
        }
    }
}

/// An error as both protocols show it.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub code: ErrorCode,
    pub grpc_code: Code,
    pub message: String,
    pub violations: Vec<Violation>,
    /// When to try again (429): `Retry-After` on REST, `RetryInfo` on gRPC.
    pub retry_after: Option<Duration>,
}

impl WireError {
    fn new(code: ErrorCode, grpc_code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            grpc_code,
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::with_error_info(
            self.code.reason(),
            ERROR_DOMAIN,
            HashMap::from([(ERROR_CODE_KEY.to_owned(), self.code.as_str().to_owned())]),
        );
        for v in &self.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        if let Some(wait) = self.retry_after {
            details.set_retry_info(Some(wait));
        }
        tonic::Status::with_error_details(self.grpc_code, self.message.clone(), details)
    }

    /// Reads back a status made by [`WireError::to_status`], or maps one that
    /// tonic made by its code.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status
            .get_details_error_info()
            .and_then(|info| {
                info.metadata
                    .get(ERROR_CODE_KEY)
                    .and_then(|c| ErrorCode::parse(c))
            })
            .unwrap_or_else(|| ErrorCode::from_grpc(status.code()));
        let violations = status
            .get_details_bad_request()
            .map(|br| {
                br.field_violations
                    .into_iter()
                    .map(|v| Violation::new(v.field, v.description))
                    .collect()
            })
            .unwrap_or_default();
        // A status without our details may carry anything; say nothing of it.
        let message = if code == ErrorCode::Internal {
            "internal error".to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            grpc_code: status.code(),
            message,
            violations,
            retry_after: status.get_details_retry_info().and_then(|r| r.retry_delay),
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MethodNotAllowed, Code::Unimplemented, message)
    }
}

impl From<ApiError> for WireError {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument { violations, .. } => WireError {
                violations,
                ..WireError::new(ErrorCode::InvalidRequest, Code::InvalidArgument, message)
            },
            ApiError::Unauthenticated(_) => {
                WireError::new(ErrorCode::Unauthenticated, Code::Unauthenticated, message)
            }
            ApiError::PermissionDenied { .. } => {
                WireError::new(ErrorCode::Forbidden, Code::PermissionDenied, message)
            }
            ApiError::NotFound(_) => WireError::new(ErrorCode::NotFound, Code::NotFound, message),
            ApiError::AlreadyExists(_) => {
                WireError::new(ErrorCode::Conflict, Code::AlreadyExists, message)
            }
            ApiError::Aborted(_) => WireError::new(ErrorCode::Conflict, Code::Aborted, message),
            ApiError::FailedPrecondition(_) => {
                WireError::new(ErrorCode::Conflict, Code::FailedPrecondition, message)
            }
            ApiError::Gone(_) => WireError::new(ErrorCode::Gone, Code::OutOfRange, message),
            ApiError::PayloadTooLarge { .. } => {
                WireError::new(ErrorCode::PayloadTooLarge, Code::ResourceExhausted, message)
            }
            ApiError::UnsupportedMediaType(_) => WireError::new(
                ErrorCode::UnsupportedMediaType,
                Code::InvalidArgument,
                message,
            ),
            ApiError::TooManyRequests { retry_after, .. } => WireError {
                retry_after: Some(retry_after),
                ..WireError::new(ErrorCode::TooManyRequests, Code::ResourceExhausted, message)
            },
            ApiError::RequestTimeout(_) => {
                WireError::new(ErrorCode::RequestTimeout, Code::DeadlineExceeded, message)
            }
            ApiError::Unavailable(reason) => {
                tracing::warn!(%reason, "request failed: service unavailable");
                WireError::new(
                    ErrorCode::Unavailable,
                    Code::Unavailable,
                    "service unavailable, retry later",
                )
            }
            ApiError::ShuttingDown => {
                WireError::new(ErrorCode::Unavailable, Code::Unavailable, message)
            }
            ApiError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "request failed: internal error"
                );
                WireError::new(ErrorCode::Internal, Code::Internal, "internal error")
            }
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        WireError::from(error).to_status()
    }
}

impl From<DomainError> for tonic::Status {
    fn from(error: DomainError) -> Self {
        WireError::from(ApiError::from(error)).to_status()
    }
}

impl From<DomainError> for WireError {
    fn from(error: DomainError) -> Self {
        WireError::from(ApiError::from(error))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorCode")]
    error_code: &'a str,
    #[serde(rename = "errorMsg")]
    error_msg: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<FieldDetail<'a>>,
}

#[derive(Serialize)]
struct FieldDetail<'a> {
    field: &'a str,
    description: &'a str,
}

impl WireError {
    fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error_code: self.code.as_str(),
            error_msg: &self.message,
            details: self
                .violations
                .iter()
                .map(|v| FieldDetail {
                    field: &v.field,
                    description: &v.description,
                })
                .collect(),
        }
    }

    /// The contract's error body, as JSON bytes (the last line of a stream
    /// that failed).
    pub fn body_json(&self) -> Vec<u8> {
        // Strings and a list of them: writing cannot fail.
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }
}

impl IntoResponse for WireError {
    fn into_response(self) -> Response {
        let mut response = (self.code.http_status(), axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: a client that waits this long gets in.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        WireError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_code_and_violations() {
        let wire = WireError::from(ApiError::invalid(vec![
            Violation::new("metadata.name", "is required"),
            Violation::new("spec.type", "is required"),
        ]));
        let back = WireError::from_status(&wire.to_status());
        assert_eq!(back, wire);
        assert_eq!(back.code.http_status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let wire = WireError::from(ApiError::Internal(anyhow::anyhow!(
            "disk /secret/path is full"
        )));
        assert_eq!(wire.message, "internal error");
        let foreign = tonic::Status::internal("h2 protocol error: details");
        assert_eq!(WireError::from_status(&foreign).message, "internal error");
    }

    #[test]
    fn codes_are_distinct() {
        // A set: two equal codes anywhere in the list collapse into one.
        let seen: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(seen.len(), ErrorCode::ALL.len());
    }
}
