//! The mesh's Prometheus, read through its HTTP API (`/api/v1/query`, an
//! instant query at the round's time, sent as a form so that a long query
//! never meets a URL limit), each query bounded by 10 s. What it answers is
//! reduced to what a check cares about (`Sample`): one number, none,
//! several series, or why there is no answer. The verdict is the domain's
//! (`domain::progress::metrics`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::Mesh;
use crate::domain::progress::metrics::Sample;
use crate::metrics::{DriverMetrics, QueryLabels};

/// How long a query may take, the connection included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Series labels shown in a message about several series.
const SERIES_SHOWN: usize = 2;

#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    timeout: Duration,
    metrics: DriverMetrics,
}

impl Prometheus {
    pub fn new(metrics: DriverMetrics) -> Self {
        Self::with_timeout(metrics, QUERY_TIMEOUT)
    }

    pub fn with_timeout(metrics: DriverMetrics, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("meshrelease/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Prometheus {
            http,
            timeout,
            metrics,
        }
    }

    /// `promql` at `at`, asked of `mesh`'s Prometheus.
    pub async fn query(&self, mesh: &Mesh, promql: &str, at: DateTime<Utc>) -> Sample {
        let sample = match &mesh.prometheus_url {
            None => Sample::Failed(format!(
                "the mesh {:?} has no prometheus_url to ask (configuration)",
                mesh.id
            )),
            Some(base) => self.ask(base, mesh, promql, at).await,
        };
        let result = match &sample {
            Sample::Number(_) | Sample::Empty => "ok",
            Sample::Several { .. } => "several_series",
            Sample::Failed(_) => "error",
        };
        self.metrics
            .metric_queries
            .get_or_create(&QueryLabels {
                result: result.into(),
            })
            .inc();
        sample
    }

    async fn ask(&self, base: &str, mesh: &Mesh, promql: &str, at: DateTime<Utc>) -> Sample {
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let time = format!("{:.3}", at.timestamp_millis() as f64 / 1000.0);
        let mut request = self
            .http
            .post(&url)
            .timeout(self.timeout)
            .form(&[("query", promql), ("time", &time)]);
        if let Some(token) = &mesh.prometheus_token {
            request = request.bearer_auth(token.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Sample::Failed(format!(
                    "Prometheus gave no answer within {}",
                    crate::domain::durations::format(self.timeout)
                ));
            }
            Err(e) => {
                return Sample::Failed(format!(
                    "Prometheus is not reachable at {base}: {}",
                    root_cause(&e)
                ));
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) if e.is_timeout() => {
                return Sample::Failed(format!(
                    "Prometheus gave no whole answer within {}",
                    crate::domain::durations::format(self.timeout)
                ));
            }
            Err(e) => {
                return Sample::Failed(format!(
                    "Prometheus's answer was cut: {}",
                    super::webhooks::error_chain(&e)
                ));
            }
        };
        sample_of(status.as_u16(), &body)
    }
}

/// The innermost cause of `error` ("Connection refused (os error 111)"):
/// what a person can act on, without the client's layers around it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Prometheus's answer envelope.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    value: (serde_json::Value, String),
}

/// What an answer of status `status` and body `body` says.
pub(super) fn sample_of(status: u16, body: &[u8]) -> Sample {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) => {
            return Sample::Failed(if (200..300).contains(&status) {
                "Prometheus answered something that is not its API's JSON".into()
            } else {
                format!("Prometheus answered {status}")
            });
        }
    };
    if envelope.status != "success" {
        return Sample::Failed(format!(
            "Prometheus answered {status}: {}: {}",
            envelope.error_type.as_deref().unwrap_or("error"),
            envelope.error.as_deref().unwrap_or("(no message)")
        ));
    }
    let Some(data) = envelope.data else {
        return Sample::Failed("Prometheus's answer has no data".into());
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> = match serde_json::from_value(data.result) {
                Ok(series) => series,
                Err(e) => return Sample::Failed(format!("Prometheus's vector is malformed: {e}")),
            };
            match series.as_slice() {
                [] => Sample::Empty,
                [one] => number(&one.value.1),
                several => Sample::Several {
                    count: several.len(),
                    first: several
                        .iter()
                        .take(SERIES_SHOWN)
                        .map(|s| labels(&s.metric))
                        .collect(),
                },
            }
        }
        "scalar" => match serde_json::from_value::<(serde_json::Value, String)>(data.result) {
            Ok((_, value)) => number(&value),
            Err(e) => Sample::Failed(format!("Prometheus's scalar is malformed: {e}")),
        },
        other => Sample::Failed(format!(
            "the query gave a {other} where one number was expected (an instant vector or a scalar)"
        )),
    }
}

/// A sample value as Prometheus writes it ("1.5", "NaN", "+Inf").
fn number(text: &str) -> Sample {
    match text.parse::<f64>() {
        Ok(v) => Sample::Number(v),
        Err(_) => Sample::Failed(format!(
            "Prometheus gave a value that is not a number: {text:?}"
        )),
    }
}

/// A series' labels as PromQL writes them: `{a="1", b="2"}`.
fn labels(metric: &serde_json::Map<String, serde_json::Value>) -> String {
    let pairs: Vec<String> = metric
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str()
                    .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
            )
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
