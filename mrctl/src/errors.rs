//! How a failure reaches the user: the server's refusals with every field
//! violation on its own line, and the exit code a pipeline can act on.

use std::fmt;
use std::process::ExitCode;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Waiting ran out of time: exit 2.
#[derive(Debug)]
pub struct TimedOut(pub String);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out {}", self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Already told to the user (as each failed document of an `apply`): exit 1
/// with nothing more to print.
#[derive(Debug)]
pub struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Reported {}

/// A request the server refused, or could not be reached for.
#[derive(Debug)]
pub struct ServerError {
    pub status: Status,
    pub server: String,
}

impl std::error::Error for ServerError {}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = &self.status;
        if let Some(cause) = transport_cause(status) {
            return write!(
                f,
                "cannot reach the service at {}: {cause}\n  (is it running? set the address with --server or MESHRELEASE_SERVER)",
                self.server
            );
        }
        let details = status.get_error_details();
        let code = details
            .error_info()
            .and_then(|info| info.metadata.get("errorCode").cloned());
        write!(
            f,
            "Error from server ({}): {}",
            code_name(status.code()),
            status.message()
        )?;
        if let Some(code) = code {
            write!(f, " [{code}]")?;
        }
        if let Some(bad) = details.bad_request() {
            for violation in &bad.field_violations {
                let line = format!("{}: {}", violation.field, violation.description);
                // Said once: a single problem is often the message itself.
                if !status.message().contains(&line) {
                    write!(f, "\n  {line}")?;
                }
            }
        }
        if status.code() == Code::Unauthenticated {
            write!(
                f,
                "\n  (give a token with MESHRELEASE_TOKEN, --token-file or the context's token-file)"
            )?;
        }
        Ok(())
    }
}

/// Attaches the server's address so that the message can name it.
pub trait ServerResult<T> {
    fn via(self, server: &str) -> Result<T, ServerError>;
}

impl<T> ServerResult<T> for Result<T, Status> {
    fn via(self, server: &str) -> Result<T, ServerError> {
        self.map_err(|status| ServerError {
            status,
            server: server.to_owned(),
        })
    }
}

/// The transport failure behind a status that never reached the server.
fn transport_cause(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable && status.code() != Code::Unknown {
        return None;
    }
    let mut source = std::error::Error::source(status)?;
    let mut cause = source.to_string();
    while let Some(next) = source.source() {
        cause = next.to_string();
        source = next;
    }
    Some(cause)
}

/// kubectl's words for the codes (`Error from server (NotFound)`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "BadRequest",
        Code::DeadlineExceeded => "Timeout",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "Forbidden",
        Code::ResourceExhausted => "TooManyRequests",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Conflict",
        Code::OutOfRange => "Gone",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "InternalError",
        Code::Unavailable => "ServiceUnavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthorized",
    }
}

/// Prints the failure (unless already printed) and picks the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<Reported>().is_some() {
        return ExitCode::from(1);
    }
    let timed_out = error.downcast_ref::<TimedOut>().is_some();
    match error.downcast_ref::<ServerError>() {
        Some(server) => eprintln!("{server}"),
        None => eprintln!("error: {error:#}"),
    }
    ExitCode::from(if timed_out { 2 } else { 1 })
}
