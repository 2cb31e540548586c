//! `GET /healthz` (the process is up) and `GET /readyz` (the store is open and
//! writable, and the service is not shutting down).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::errors::ApiError;
use crate::store::ReleaseStore;

#[derive(Clone)]
pub struct Readiness {
    pub store: Arc<dyn ReleaseStore>,
    pub shutdown: CancellationToken,
    /// Fired at the stop signal, before the drain (`shutdown_delay_secs`).
    pub stopping: CancellationToken,
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.shutdown.is_cancelled() || readiness.stopping.is_cancelled() {
        return ApiError::Unavailable("shutting down".into()).into_response();
    }
    match readiness.store.check_writable().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::Unavailable(format!("store not writable: {e}")).into_response(),
    }
}
