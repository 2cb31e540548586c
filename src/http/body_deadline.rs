//! A request body must arrive whole within `body_read_timeout` of the
//! request's start: a client that trickles its body forever would otherwise
//! hold a connection (or an HTTP/2 stream) and a handler without end. Past
//! the deadline the body fails with [`BodyTimedOut`], which REST answers
//! 408 and gRPC DEADLINE_EXCEEDED. Response streams (Watch) are not limited.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;

use crate::api::errors::ApiError;
use crate::api::errors::WireError;

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Whether a body-reading error was this deadline passing.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

pub async fn body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = if body.is_end_stream() {
        body
    } else {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            grpc: super::is_grpc(&parts.headers),
        })
    };
    next.run(Request::from_parts(parts, body)).await
}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    /// tonic turns a body error that is a `Status` into that status.
    grpc: bool,
}

impl DeadlineBody {
    fn timed_out(&self) -> axum::Error {
        if self.grpc {
            axum::Error::new(
                WireError::from(ApiError::RequestTimeout(
                    BodyTimedOut(self.limit).to_string(),
                ))
                .to_status(),
            )
        } else {
            axum::Error::new(BodyTimedOut(self.limit))
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(self.timed_out()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole request body, refusing it as soon as it passes `limit`
/// (never buffering more; a declared `Content-Length` over it is refused
/// before reading), and hands each chunk to `on_chunk` as it arrives (the
/// AK/SK check hashes it there). The one place REST bodies are read.
pub async fn read_limited(
    mut body: Body,
    headers: &http::HeaderMap,
    limit: usize,
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut bytes = Vec::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.map_err(|e| {
            if is_body_timeout(&e) {
                return ApiError::RequestTimeout(e.to_string());
            }
            tracing::debug!(error = %e, "reading the request body failed");
            ApiError::invalid_field("body", "the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            on_chunk(&data);
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(bytes))
}
