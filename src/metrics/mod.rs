//! What `GET /metrics` reports, in the Prometheus (OpenMetrics) text format:
//! requests by RPC, protocol and status code, a latency histogram per RPC,
//! requests in flight, store commit latency and writes per commit,
//! watchers connected, and the cluster driver's work (reconciles by result,
//! releases waiting in a round, time from create to `Running`, requests to
//! each cluster by verb and code).
//!
//! Label values are bounded: an RPC label is one of the methods the server
//! serves (anything else is `unknown`), so a client cannot grow the series
//! without bound by calling made-up paths.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod process;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The OpenMetrics content type Prometheus asks for and reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    grpc,
    grpc_web,
    rest,
}

impl Protocol {
    pub fn of(headers: &http::HeaderMap) -> Self {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if content_type.starts_with(b"application/grpc-web") {
            Protocol::grpc_web
        } else if content_type.starts_with(b"application/grpc") {
            Protocol::grpc
        } else {
            Protocol::rest
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: Arc<String>,
    protocol: Protocol,
    code: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: Arc<String>,
    protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterRequestLabels {
    /// A configured cluster's id: bounded by the configuration.
    pub cluster: String,
    pub verb: Cow<'static, str>,
    /// The HTTP status, or `error` when there was no answer.
    pub code: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Pass, Fail, NoData or Error.
    pub verdict: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The webhook's type (Flagger's vocabulary): bounded.
    pub r#type: Cow<'static, str>,
    /// yes, no, timeout or error.
    pub result: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// ok, several_series or error.
    pub result: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Cow<'static, str>,
}

/// What the cluster driver reports. Cheap to clone: the driver and the
/// cluster clients hold handles on the same series.
#[derive(Debug, Clone)]
pub struct DriverMetrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub queue_depth: Gauge,
    pub time_to_running: Histogram,
    pub cluster_requests: Family<ClusterRequestLabels, Counter>,
    /// Watch caches running (one per cluster, kind and namespace with an
    /// active release).
    pub watch_caches: Gauge,
    /// Requests to the clusters that waited for their cluster's rate limit.
    pub throttled: Family<ClusterLabels, Counter>,
    /// Rounds of a strategy's checks, by verdict.
    pub rounds: Family<VerdictLabels, Counter>,
    /// Webhook calls, by type and result.
    pub webhook_calls: Family<WebhookLabels, Counter>,
    /// Queries of the meshes' Prometheus, by result.
    pub metric_queries: Family<QueryLabels, Counter>,
    /// Strategies rolled back, by reason.
    pub rollbacks: Family<ReasonLabels, Counter>,
    /// Time a strategy spent in each step it finished.
    pub step_seconds: Histogram,
}

impl Default for DriverMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            queue_depth: Gauge::default(),
            // Seconds: a release reaches Running in seconds to tens of minutes.
            time_to_running: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            cluster_requests: Family::default(),
            watch_caches: Gauge::default(),
            throttled: Family::default(),
            rounds: Family::default(),
            webhook_calls: Family::default(),
            metric_queries: Family::default(),
            rollbacks: Family::default(),
            // Seconds: steps last from an instant to hours.
            step_seconds: Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 86400.0,
            ]),
        }
    }
}

impl DriverMetrics {
    pub fn reconciled(&self, result: &'static str) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: Cow::Borrowed(result),
            })
            .inc();
    }

    pub fn cluster_request(&self, cluster: &str, verb: &'static str, code: Option<u16>) {
        let code = match code {
            Some(code) => Cow::Owned(code.to_string()),
            None => Cow::Borrowed("error"),
        };
        self.cluster_requests
            .get_or_create(&ClusterRequestLabels {
                cluster: cluster.to_owned(),
                verb: Cow::Borrowed(verb),
                code,
            })
            .inc();
    }
}

/// Seconds: from 50 µs (an in-memory read) to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// What a store reports of each commit: how long it took (including the
/// fsync) and how many writes it carried.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    pub duration: Histogram,
    pub writes: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            duration: latency_histogram(),
            writes: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        }
    }
}

impl CommitMetrics {
    pub fn observe(&self, took: Duration, writes: usize) {
        self.duration.observe(took.as_secs_f64());
        self.writes.observe(writes as f64);
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ProtocolLabels, Gauge>,
    watchers: Gauge,
    process: process::Process,
    /// gRPC path (`/asm.v2.ReleaseService/CreateRelease`) to its label.
    grpc_methods: HashMap<String, Arc<String>>,
    unknown: Arc<String>,
    unmatched: Arc<String>,
}

impl Metrics {
    /// `grpc_methods`: every `package.Service/Method` the server serves.
    pub fn new(
        grpc_methods: impl IntoIterator<Item = String>,
        commits: CommitMetrics,
        driver: &DriverMetrics,
    ) -> Self {
        let mut registry = Registry::with_prefix("meshrelease");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Family::<ProtocolLabels, Gauge>::default();
        let watchers = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by RPC, protocol and code (gRPC status name, or HTTP status for REST)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response, by RPC and protocol",
            durations.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being served (watch streams count while open)",
            in_flight.clone(),
        );
        registry.register("watchers", "WatchReleases streams open", watchers.clone());
        registry.register(
            "store_commit_duration_seconds",
            "Time to commit one store transaction, fsync included",
            commits.duration,
        );
        registry.register(
            "store_commit_writes",
            "Writes carried by one store commit (group commit)",
            commits.writes,
        );
        registry.register(
            "reconciles",
            "Reconciles of a release by the cluster driver, by result",
            driver.reconciles.clone(),
        );
        registry.register(
            "reconcile_queue_depth",
            "Releases due in the driver's current round and not yet reconciled",
            driver.queue_depth.clone(),
        );
        registry.register(
            "release_time_to_running_seconds",
            "Time from a release's create to its Running phase",
            driver.time_to_running.clone(),
        );
        registry.register(
            "cluster_requests",
            "Requests to the clusters, by cluster, verb and HTTP status (error: no answer)",
            driver.cluster_requests.clone(),
        );
        registry.register(
            "watch_caches",
            "Watch caches of cluster objects running (one per cluster, kind and namespace with an active release)",
            driver.watch_caches.clone(),
        );
        registry.register(
            "cluster_requests_throttled",
            "Requests to a cluster that waited for its client-side rate limit (qps, burst) or a Retry-After",
            driver.throttled.clone(),
        );
        registry.register(
            "strategy_rounds",
            "Rounds of a strategy's checks, by verdict (Pass, Fail, NoData, Error)",
            driver.rounds.clone(),
        );
        registry.register(
            "webhook_calls",
            "Calls of a strategy's webhooks, by type and result (yes, no, timeout, error)",
            driver.webhook_calls.clone(),
        );
        registry.register(
            "metric_queries",
            "Queries of the meshes' Prometheus for metric checks, by result (ok, several_series, error)",
            driver.metric_queries.clone(),
        );
        registry.register(
            "strategy_rollbacks",
            "Strategies rolled back, by reason (AnalysisFailed, Aborted, RollbackWebhook)",
            driver.rollbacks.clone(),
        );
        registry.register(
            "strategy_step_seconds",
            "Time a strategy spent in a step, once the step is done",
            driver.step_seconds.clone(),
        );
        let process = process::Process::register(&mut registry);
        let grpc_methods = grpc_methods
            .into_iter()
            .map(|name| (format!("/{name}"), Arc::new(name)))
            .collect();
        Self {
            registry,
            requests,
            durations,
            in_flight,
            watchers,
            process,
            grpc_methods,
            unknown: Arc::new("unknown".into()),
            unmatched: Arc::new("none".into()),
        }
    }

    /// The RPC label of a gRPC request path.
    pub fn grpc_rpc(&self, path: &str) -> Arc<String> {
        self.grpc_methods
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.unknown.clone())
    }

    /// The RPC label of a request that matched no route.
    pub fn unmatched(&self) -> Arc<String> {
        self.unmatched.clone()
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(&self, protocol: Protocol) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create_owned(&ProtocolLabels { protocol });
        gauge.inc();
        InFlight(gauge)
    }

    pub fn record(
        &self,
        rpc: Arc<String>,
        protocol: Protocol,
        code: Cow<'static, str>,
        took: Duration,
    ) {
        self.durations
            .get_or_create(&RpcLabels {
                rpc: rpc.clone(),
                protocol,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                rpc,
                protocol,
                code,
            })
            .inc();
    }

    /// The exposition, with the watcher count read now.
    pub fn encode(&self, watchers: usize) -> String {
        self.watchers
            .set(i64::try_from(watchers).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        self.process.refresh();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A request in flight; dropping it counts it out.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The name of a gRPC status code, as Prometheus labels usually carry it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        let metrics = Metrics::new(
            ["asm.v2.ReleaseService/CreateRelease".to_owned()],
            CommitMetrics::default(),
            &DriverMetrics::default(),
        );
        assert_eq!(
            *metrics.grpc_rpc("/asm.v2.ReleaseService/CreateRelease"),
            "asm.v2.ReleaseService/CreateRelease"
        );
        assert_eq!(*metrics.grpc_rpc("/x.Y/Z"), "unknown");
        assert_eq!(*metrics.grpc_rpc("/x.Y/W"), "unknown");
    }

    #[test]
    fn the_exposition_names_rpc_protocol_and_code() {
        let metrics = Metrics::new(
            ["asm.v2.ReleaseService/GetRelease".to_owned()],
            CommitMetrics::default(),
            &DriverMetrics::default(),
        );
        let rpc = metrics.grpc_rpc("/asm.v2.ReleaseService/GetRelease");
        metrics.record(
            rpc,
            Protocol::grpc,
            Cow::Borrowed("NOT_FOUND"),
            Duration::from_millis(1),
        );
        let text = metrics.encode(3);
        assert!(text.contains(
            r#"meshrelease_requests_total{rpc="asm.v2.ReleaseService/GetRelease",protocol="grpc",code="NOT_FOUND"} 1"#
        ), "{text}");
        assert!(text.contains("meshrelease_watchers 3"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
