//! The errors the domain's operations answer. The protocol edges wrap them
//! in their own error (`crate::api::errors::ApiError`, which adds what only an
//! edge can refuse: authentication, body size, media type, deadlines, rate
//! limits) and map that, in `crate::api::errors` alone, to a gRPC status and
//! to an HTTP status with the contract's `errorCode`.

use super::authz::Action;

/// One broken rule, naming the field in the contract's JSON path form
/// (`spec.grayDeployments[0].template.spec.selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    /// A violation; a field path longer than [`super::names::MAX_ECHO`]
    /// characters (one built from a client's keys) is cut.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            field: match super::names::bounded(&field) {
                std::borrow::Cow::Borrowed(_) => field,
                std::borrow::Cow::Owned(cut) => cut,
            },
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{message}")]
    InvalidArgument {
        message: String,
        violations: Vec<Violation>,
    },
    #[error("{subject} may not {action} on mesh {mesh_id}", action = .action.as_str())]
    PermissionDenied {
        subject: String,
        action: Action,
        mesh_id: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or the service already has an active release.
    #[error("{0}")]
    AlreadyExists(String),
    /// A write lost to a concurrent one (stale resourceVersion).
    #[error("{0}")]
    Aborted(String),
    /// The release is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A watch resume point older than the kept history.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unavailable(String),
    /// The service is stopping: a stream it ends says so, so that the client
    /// reconnects elsewhere and resumes.
    #[error("the service is shutting down: reconnect and resume from the last resourceVersion")]
    ShuttingDown,
    /// A fault of the service. The cause is logged, never sent to a client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl DomainError {
    /// A 400 for rule violations, summarised in the message.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        let message = match violations.as_slice() {
            [only] => format!("invalid request: {}: {}", only.field, only.description),
            many => format!("invalid request: {} problems, see details", many.len()),
        };
        DomainError::InvalidArgument {
            message,
            violations,
        }
    }

    /// A 400 about one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![Violation::new(field, description)])
    }
}
