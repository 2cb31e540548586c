//! Metric checks: the PromQL a check sends (a built-in over Istio's
//! standard telemetry, or the client's query with its placeholders filled
//! in, escaped), the window it reads (never one that straddles a traffic
//! change), and the verdict on what Prometheus answered. Pure, with time an
//! argument: the driver sends the queries and passes the answers in.
//!
//! The three verdicts that are not a pass are kept apart, as the anchors'
//! users keep asking: a value outside its bounds is `Fail`; no sample, NaN
//! or too few requests is `NoData` (an idle version is not a failing one);
//! a query that could not be evaluated, or that gave several series, is
//! `Error`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::super::object::name_of;
use super::super::release::Release;
use super::super::strategy::{Builtin, CheckResult, MetricCheck, MetricSource, Verdict};

/// The kind of a metric check's results (a webhook's is its type).
pub const METRIC: &str = "metric";

/// What Prometheus answered to one query, as far as a check cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// One number: a scalar, or a vector of one series (NaN included).
    Number(f64),
    /// No series at all.
    Empty,
    /// Several series where one number was expected: how many, and the
    /// labels of the first ones.
    Several { count: usize, first: Vec<String> },
    /// Not evaluated: Prometheus unreachable, a timeout, a bad query, an
    /// answer of another type. The message says which.
    Failed(String),
}

/// What a check sends this round.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricQueries {
    /// The window the queries read: the check's, clipped to the time since
    /// the traffic last changed.
    pub window: Duration,
    /// The query whose value is judged, as sent.
    pub value: String,
    /// Requests that reached the gray version in the window (when
    /// `minRequests` applies).
    pub requests: Option<String>,
    /// Requests that reached the original version (for `relativeTo`).
    pub original_requests: Option<String>,
    /// Fewer requests than this in the window (on either side) is NoData.
    pub min_requests: u32,
}

/// What a check does this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Too soon after the traffic changed for any window: the result says
    /// until when (NoData: it holds, never fails).
    NotYet(CheckResult),
    /// Send these.
    Ask(MetricQueries),
}

/// What Prometheus answered to a check's queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    pub value: Sample,
    pub requests: Option<Sample>,
    pub original_requests: Option<Sample>,
}

/// Since when the gray version has been judged as it is now: the latest
/// of the last change of `status.traffic` and the release entering its
/// phase (Running: a retry starts afresh, never judged by the rounds that
/// failed it).
pub fn traffic_since(release: &Release) -> DateTime<Utc> {
    release
        .status
        .traffic_time
        .into_iter()
        .chain(release.status.phase_time)
        .max()
        .unwrap_or(release.status.start_time)
}

/// What `check` sends in a round at `now` (rounds every `interval`), or
/// why it is not judged yet.
pub fn prepare(
    release: &Release,
    interval: Duration,
    check: &MetricCheck,
    now: DateTime<Utc>,
) -> Prepared {
    let changed = traffic_since(release);
    let since = now - changed;
    let interval_delta = TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX);
    let queries_for = |window: Duration| queries(release, check, window);
    if since < interval_delta {
        let window = check.window.unwrap_or(interval);
        let preview = queries_for(window);
        return Prepared::NotYet(CheckResult {
            message: format!(
                "not judged before {}: the traffic changed at {} and a window must not read from before it",
                shown_time(changed + interval_delta),
                shown_time(changed),
            ),
            ..result(check, Verdict::NoData, preview.value, now)
        });
    }
    let since = Duration::from_secs(u64::try_from(since.num_seconds()).unwrap_or(0));
    let window = check.window.unwrap_or(interval).min(since);
    Prepared::Ask(queries_for(window))
}

fn shown_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The queries of `check` over `window`.
pub fn queries(release: &Release, check: &MetricCheck, window: Duration) -> MetricQueries {
    let gray = Selector::gray(release);
    let original = Selector::original(release);
    let window_text = prometheus_duration(window);
    let min_requests = match &check.source {
        MetricSource::Builtin(_) => check.min_requests.unwrap_or(1),
        MetricSource::Query(_) => check.min_requests.unwrap_or(0),
    };
    let requests_of = |selector: &Selector| {
        format!(
            "sum(increase(istio_requests_total{{{}}}[{window_text}]))",
            selector.matchers()
        )
    };
    let value = match &check.source {
        MetricSource::Builtin(builtin) => {
            let gray_value = builtin_query(*builtin, &gray, &window_text);
            if check.relative_to_original {
                format!(
                    "({gray_value}) - ({})",
                    builtin_query(*builtin, &original, &window_text)
                )
            } else {
                gray_value
            }
        }
        MetricSource::Query(text) => fill_placeholders(text, release, &window_text),
    };
    MetricQueries {
        window,
        value,
        requests: (min_requests > 0).then(|| requests_of(&gray)),
        original_requests: (min_requests > 0 && check.relative_to_original)
            .then(|| requests_of(&original)),
        min_requests,
    }
}

/// The PromQL of a built-in metric over the workloads `selector` names.
fn builtin_query(builtin: Builtin, selector: &Selector, window: &str) -> String {
    let matchers = selector.matchers();
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{matchers}}}[{window}])))"
        )
    };
    match builtin {
        // A version whose every request fails has no series of non-5xx
        // codes: that is 0 %, not "no data".
        Builtin::SuccessRate => format!(
            "100 * (sum(rate(istio_requests_total{{{matchers},response_code!~\"5..\"}}[{window}])) or on() vector(0)) / sum(rate(istio_requests_total{{{matchers}}}[{window}]))"
        ),
        Builtin::LatencyP50 => quantile("0.5"),
        Builtin::LatencyP95 => quantile("0.95"),
        Builtin::LatencyP99 => quantile("0.99"),
        Builtin::RequestRate => format!("sum(rate(istio_requests_total{{{matchers}}}[{window}]))"),
    }
}

/// Istio's standard labels for a release's workloads, as the destination
/// reports them.
struct Selector {
    namespace: String,
    /// Deployment names (one per name: gray Deployments in several
    /// clusters usually share theirs).
    workloads: Vec<String>,
}

impl Selector {
    fn gray(release: &Release) -> Self {
        let mut workloads: Vec<String> = release
            .status
            .gray_deployments
            .iter()
            .map(|d| name_of(d).to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        workloads.sort();
        workloads.dedup();
        Selector {
            namespace: release.namespace.clone(),
            workloads,
        }
    }

    fn original(release: &Release) -> Self {
        Selector {
            namespace: release.namespace.clone(),
            workloads: vec![release.deployment_name.clone()],
        }
    }

    fn matchers(&self) -> String {
        let workload = match self.workloads.as_slice() {
            [one] => format!("destination_workload=\"{}\"", escape_label_value(one)),
            several => format!(
                "destination_workload=~\"{}\"",
                escape_label_value(
                    &several
                        .iter()
                        .map(|w| escape_regex(w))
                        .collect::<Vec<_>>()
                        .join("|")
                )
            ),
        };
        format!(
            "reporter=\"destination\",destination_workload_namespace=\"{}\",{workload}",
            escape_label_value(&self.namespace)
        )
    }
}

/// `text` with the contract's placeholders replaced: label values escaped
/// for a PromQL string in double quotes, so that no value can end the
/// string it stands in and write PromQL of its own.
pub fn fill_placeholders(text: &str, release: &Release, window: &str) -> String {
    let gray = Selector::gray(release);
    let workload = match gray.workloads.as_slice() {
        [one] => one.clone(),
        several => several
            .iter()
            .map(|w| escape_regex(w))
            .collect::<Vec<_>>()
            .join("|"),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value = match after[..close].trim() {
            "namespace" => escape_label_value(&release.namespace),
            "service" => escape_label_value(&release.service_name),
            "release" => escape_label_value(&release.name),
            "version" => escape_label_value(&release.version),
            "workload" => escape_label_value(&workload),
            "originalWorkload" => escape_label_value(&release.deployment_name),
            "window" => window.to_owned(),
            // Validation refuses unknown placeholders: kept as written.
            _ => rest[open..open + 2 + close + 2].to_owned(),
        };
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// A label value inside a PromQL string in double quotes.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// A literal inside a regular expression (RE2) matcher.
fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A duration as PromQL writes it, in whole seconds.
pub fn prometheus_duration(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// The verdict on what Prometheus answered to `queries` for `check`.
pub fn judge(
    check: &MetricCheck,
    queries: &MetricQueries,
    answers: &Answers,
    now: DateTime<Utc>,
) -> CheckResult {
    let base = |verdict: Verdict| result(check, verdict, queries.value.clone(), now);
    let window = prometheus_duration(queries.window);
    // Whatever could not be evaluated says so first: an answer that is
    // missing is not an answer of zero.
    for sample in [
        Some(&answers.value),
        answers.requests.as_ref(),
        answers.original_requests.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Sample::Failed(why) = sample {
            return CheckResult {
                message: why.clone(),
                ..base(Verdict::Error)
            };
        }
    }
    let requests = match answers.requests.as_ref().map(count) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(why)) => {
            return CheckResult {
                message: format!("counting the gray version's requests: {why}"),
                ..base(Verdict::Error)
            };
        }
    };
    if let Some(n) = requests
        && n < u64::from(queries.min_requests)
    {
        return CheckResult {
            requests,
            message: format!(
                "{n} request(s) reached the gray version in the last {window}; minRequests is {}",
                queries.min_requests
            ),
            ..base(Verdict::NoData)
        };
    }
    match answers.original_requests.as_ref().map(count) {
        None => {}
        Some(Ok(n)) if n < u64::from(queries.min_requests) => {
            return CheckResult {
                requests,
                message: format!(
                    "{n} request(s) reached the original version in the last {window}; minRequests is {}",
                    queries.min_requests
                ),
                ..base(Verdict::NoData)
            };
        }
        Some(Ok(_)) => {}
        Some(Err(why)) => {
            return CheckResult {
                requests,
                message: format!("counting the original version's requests: {why}"),
                ..base(Verdict::Error)
            };
        }
    }
    let value = match &answers.value {
        Sample::Number(v) if v.is_nan() => {
            return CheckResult {
                requests,
                message: format!("the query gave NaN over the last {window}: nothing to judge"),
                ..base(Verdict::NoData)
            };
        }
        Sample::Number(v) => *v,
        Sample::Empty => {
            return CheckResult {
                requests,
                message: format!("the query gave no sample over the last {window}"),
                ..base(Verdict::NoData)
            };
        }
        Sample::Several { count, first } => {
            return CheckResult {
                requests,
                message: format!(
                    "the query gave {count} series where one number was expected ({}{}): aggregate them (sum, max, ...) into one",
                    first.join(", "),
                    if *count > first.len() { ", ..." } else { "" }
                ),
                ..base(Verdict::Error)
            };
        }
        Sample::Failed(why) => {
            return CheckResult {
                message: why.clone(),
                ..base(Verdict::Error)
            };
        }
    };
    let shown = shown_value(value, check.min, check.max);
    let relative = if check.relative_to_original {
        " (gray minus original)"
    } else {
        ""
    };
    let (verdict, message) = match (check.min, check.max) {
        (Some(min), _) if value < min => (
            Verdict::Fail,
            format!("{shown}{relative} is below {}", number(min)),
        ),
        (_, Some(max)) if value > max => (
            Verdict::Fail,
            format!("{shown}{relative} is above {}", number(max)),
        ),
        (Some(min), Some(max)) => (
            Verdict::Pass,
            format!(
                "{shown}{relative} is within {}..{}",
                number(min),
                number(max)
            ),
        ),
        (Some(min), None) => (
            Verdict::Pass,
            format!("{shown}{relative} is at least {}", number(min)),
        ),
        (None, Some(max)) => (
            Verdict::Pass,
            format!("{shown}{relative} is at most {}", number(max)),
        ),
        (None, None) => (Verdict::Pass, format!("{shown}{relative}")),
    };
    CheckResult {
        value: Some(rounded(value)),
        requests,
        message,
        ..base(verdict)
    }
}

/// A count of requests from a `sum(increase(...))` answer: no series is
/// none (the version has never been asked), NaN is none.
fn count(sample: &Sample) -> Result<u64, String> {
    match sample {
        Sample::Number(v) if v.is_nan() || *v <= 0.0 => Ok(0),
        // increase() extrapolates: 11.98 requests were 12.
        Sample::Number(v) => Ok(v.round().min(u64::MAX as f64) as u64),
        Sample::Empty => Ok(0),
        Sample::Several { count, .. } => Err(format!("{count} series where one was expected")),
        Sample::Failed(why) => Err(why.clone()),
    }
}

fn result(check: &MetricCheck, verdict: Verdict, query: String, now: DateTime<Utc>) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        kind: METRIC.into(),
        verdict,
        value: None,
        min: check.min,
        max: check.max,
        query,
        requests: None,
        time: now,
        message: String::new(),
        round: 0,
    }
}

/// A value as kept: six decimals are more than any threshold tells apart.
fn rounded(value: f64) -> f64 {
    if value.is_finite() {
        (value * 1e6).round() / 1e6
    } else {
        value
    }
}

/// A bound as written.
fn number(value: f64) -> String {
    let text = format!("{value}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// A value in a message: as few decimals as keep it on the same side of
/// its bounds (98.9996 below 99 is never shown as "99").
fn shown_value(value: f64, min: Option<f64>, max: Option<f64>) -> String {
    if !value.is_finite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    for decimals in 2..=9 {
        let text = format!("{value:.decimals$}");
        let Ok(back) = text.parse::<f64>() else {
            continue;
        };
        let same_side = |bound: Option<f64>, below: bool| {
            bound.is_none_or(|b| {
                if below {
                    (back < b) == (value < b)
                } else {
                    (back > b) == (value > b)
                }
            })
        };
        if same_side(min, true) && same_side(max, false) {
            return trim_zeros(&text);
        }
    }
    format!("{value}")
}

fn trim_zeros(text: &str) -> String {
    if !text.contains('.') {
        return text.to_owned();
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" {
        "0".into()
    } else {
        trimmed.to_owned()
    }
}
