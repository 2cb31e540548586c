//! `X-Request-Id`: the client's when it is sane, a new UUID otherwise; set on
//! every response and recorded on the request's span, so that every log line
//! of the request names it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument as _;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id, for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// At most 128 characters of `[A-Za-z0-9._:-]`: safe to log and to echo.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|id| is_sane(id))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let peer = request
        .extensions()
        .get::<super::server::PeerAddr>()
        .map(|p| p.0.to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %crate::domain::names::bounded(request.uri().path()),
        peer = peer.as_deref().unwrap_or("unknown"),
        subject = tracing::field::Empty,
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header.clone());
    async move {
        let mut response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "request done");
        response.headers_mut().insert(REQUEST_ID_HEADER, header);
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::is_sane;

    #[test]
    fn sane_ids() {
        assert!(is_sane(b"abc-123_x.y:z"));
        assert!(!is_sane(b""));
        assert!(!is_sane(b"has space"));
        assert!(!is_sane(b"line\nbreak"));
        assert!(!is_sane(&[b'a'; 129]));
    }
}
