//! Counting and timing every request for `/metrics`, whichever protocol. A
//! gRPC answer's status usually arrives in the trailers, after the body, so a
//! gRPC response is timed and counted when its body ends (or is dropped, if the
//! client went away first).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use http_body::{Body as _, Frame, SizeHint};

use crate::domain::ReleaseManager;
use crate::metrics::{self, InFlight, Metrics, Protocol};
use crate::transcode::RouteTable;
use crate::transcode::routes::Found;

/// Paths that are not API calls: probes, scrapes, the API description and
/// the console's files are not counted.
fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || crate::console::is_console(path)
}

/// What the metrics layer needs: where to count, and the REST routes to name
/// a REST request's RPC before anything (authentication, say) answers it.
#[derive(Clone)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub routes: Arc<RouteTable>,
}

pub async fn observe(State(observer): State<Observer>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_operational(path) {
        return next.run(request).await;
    }
    let metrics = observer.metrics;
    let protocol = Protocol::of(request.headers());
    let rpc = if protocol == Protocol::rest {
        match observer.routes.find(request.method(), path) {
            Found::Route(route, _) => route.method_path.clone(),
            Found::WrongMethod(_) | Found::Nothing => metrics.unmatched(),
        }
    } else {
        metrics.grpc_rpc(path)
    };
    let started = Instant::now();
    let in_flight = metrics.start(protocol);
    let response = next.run(request).await;

    if protocol == Protocol::rest {
        let code = Cow::Owned(response.status().as_str().to_owned());
        metrics.record(rpc, protocol, code, started.elapsed());
        return response;
    }
    // A trailers-only answer (every error tonic makes) has its status here.
    if let Some(code) = grpc_status(response.headers()) {
        metrics.record(rpc, protocol, code.into(), started.elapsed());
        return response;
    }
    let (parts, body) = response.into_parts();
    let observed = ObservedBody {
        inner: body,
        finish: Some(Finish {
            metrics,
            rpc,
            protocol,
            started,
            _in_flight: in_flight,
        }),
        code: None,
    };
    Response::from_parts(parts, Body::new(observed))
}

fn grpc_status(headers: &HeaderMap) -> Option<&'static str> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(metrics::grpc_code_name(tonic::Code::from_i32(code)))
}

struct Finish {
    metrics: Arc<Metrics>,
    rpc: Arc<String>,
    protocol: Protocol,
    started: Instant,
    _in_flight: InFlight,
}

/// A gRPC response body that records the request once it ends.
struct ObservedBody {
    inner: Body,
    finish: Option<Finish>,
    code: Option<&'static str>,
}

impl ObservedBody {
    fn finish(&mut self, ended: bool) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let code = match (self.code, ended, finish.protocol) {
            (Some(code), _, _) => code,
            // gRPC-Web carries its trailers inside the body: a stream that
            // ended cleanly without a trailers-only error is counted as OK.
            (None, true, Protocol::grpc_web) => "OK",
            (None, true, _) => "UNKNOWN",
            (None, false, _) => "CANCELLED",
        };
        finish.metrics.record(
            finish.rpc,
            finish.protocol,
            code.into(),
            finish.started.elapsed(),
        );
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.code = grpc_status(trailers);
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        let ended = self.inner.is_end_stream();
        self.finish(ended);
    }
}

/// `GET /metrics`.
#[derive(Clone)]
pub struct MetricsEndpoint {
    pub metrics: Arc<Metrics>,
    pub manager: Arc<ReleaseManager>,
}

pub async fn metrics_endpoint(State(endpoint): State<MetricsEndpoint>) -> Response {
    let text = endpoint.metrics.encode(endpoint.manager.watchers());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}
