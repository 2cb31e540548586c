//! The audit trail of the API: one record per call that changes something
//! (dry runs included, marked) and per call refused for who made it
//! (permission, authentication, rate), with its outcome. Each is emitted
//! inside the call's spans, so the record names the request id, the peer,
//! the subject, the operation, the mesh, the namespace and the release;
//! never a token, a key or a body. `crate::telemetry` writes them apart
//! from the logs.

use tonic::{Code, Status};

use crate::metrics::grpc_code_name;
use crate::telemetry::AUDIT;

/// Records the outcome of `rpc` (`changes`: whether it writes) by `subject`.
pub(super) fn record<T>(
    span: &tracing::Span,
    changes: bool,
    dry_run: bool,
    subject: &str,
    result: &Result<T, Status>,
) {
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    let refused = matches!(
        code,
        Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted
    );
    if !(changes || refused) {
        return;
    }
    span.in_scope(|| {
        tracing::info!(
            target: AUDIT,
            subject,
            outcome = grpc_code_name(code),
            dry_run,
            "{}",
            if refused { "refused" } else { "called" }
        );
    });
}
