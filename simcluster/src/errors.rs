//! Failures as the API server answers them: a `Status` object with the
//! HTTP code, a machine-readable `reason` and a message.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::resources::Resource;

#[derive(Debug, Clone, PartialEq)]
pub struct KubeError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl KubeError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>, details: Value) -> Self {
        KubeError {
            code,
            reason,
            message: message.into(),
            details,
        }
    }

    fn details(resource: Resource, name: &str) -> Value {
        json!({"name": name, "group": resource.group, "kind": resource.plural})
    }

    pub fn not_found(resource: Resource, name: &str) -> Self {
        let qualified = qualified(resource);
        Self::new(
            404,
            "NotFound",
            format!("{qualified} \"{name}\" not found"),
            Self::details(resource, name),
        )
    }

    pub fn already_exists(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource)),
            Self::details(resource, name),
        )
    }

    /// What an API server answers when a validating admission webhook
    /// denies a write.
    pub fn denied_by_admission(message: &str) -> Self {
        Self::new(
            400,
            "BadRequest",
            format!("admission webhook \"policy.example.com\" denied the request: {message}"),
            json!({}),
        )
    }

    /// A write with a stale resourceVersion.
    pub fn conflict(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(resource)
            ),
            Self::details(resource, name),
        )
    }

    /// A delete whose preconditions (uid, resourceVersion) do not hold.
    pub fn precondition_failed(resource: Resource, name: &str, message: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {message}",
                qualified(resource)
            ),
            Self::details(resource, name),
        )
    }

    /// A server-side apply that would take fields another manager owns.
    pub fn apply_conflict(conflicts: &[String]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": c}))
            .collect();
        Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join("; ")
            ),
            json!({"causes": causes}),
        )
    }

    pub fn invalid(resource: Resource, name: &str, message: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {message}", resource.kind),
            Self::details(resource, name),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, json!({}))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type:?}"
            ),
            json!({}),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message, json!({}))
    }

    /// As API Priority and Fairness answers: the wait is in the details
    /// and in the `Retry-After` header.
    pub fn too_many_requests(retry_after_secs: u32) -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            json!({"retryAfterSeconds": retry_after_secs}),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message, json!({}))
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
    }
}

fn qualified(resource: Resource) -> String {
    if resource.group.is_empty() {
        resource.plural.to_owned()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

impl IntoResponse for KubeError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response();
        if let Some(seconds) = self.details.get("retryAfterSeconds")
            && let Ok(value) = http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        response
    }
}
