//! `spec.strategy`: the steps a release runs by itself once it is
//! `Running`, the checks that judge its gray version (metrics and
//! webhooks), and what happens at the end or on a failure; and
//! `status.strategy`, how far it got. The rules each field is held to are
//! here, every violation named by its field path; what the service decides
//! from them each round is in `domain::progress`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::durations::{self, as_secs, as_secs_opt};
use super::error::Violation;
use super::kinds::ReleaseType;
use super::mesh::Mesh;
use super::names::quoted;

pub const MAX_STEPS: usize = 32;
pub const MAX_CHECKS: usize = 16;
pub const MAX_ANALYSIS_COUNT: i64 = 100;
pub const MAX_FAILURE_LIMIT: i64 = 100;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(600);
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
/// Metadata a webhook carries, at most, and the size of each value.
const MAX_METADATA: usize = 32;
const MAX_METADATA_VALUE: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_QUERY: usize = 4096;

/// A strategy as the client sent it: nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StrategyDraft {
    pub steps: Vec<StepDraft>,
    pub analysis: Option<AnalysisDraft>,
    pub on_success: String,
    pub on_failure: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepDraft {
    pub set_weight: Option<i64>,
    /// `{"pause": {}}` is a pause with an empty duration.
    pub pause: Option<String>,
    pub analysis: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnalysisDraft {
    pub interval: String,
    /// 0 when not given.
    pub failure_limit: i64,
    pub max_hold: String,
    pub metrics: Vec<MetricDraft>,
    pub webhooks: Vec<WebhookDraft>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricDraft {
    pub name: String,
    pub builtin: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub window: String,
    pub min_requests: Option<i64>,
    pub relative_to: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebhookDraft {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub timeout: String,
    pub metadata: BTreeMap<String, String>,
}

/// A checked strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    pub on_success: OnSuccess,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Percent of requests to the gray version.
    SetWeight(u8),
    /// For this long, or (`None`) until a resume.
    Pause(#[serde(with = "as_secs_opt")] Option<Duration>),
    /// Until this many passing rounds of checks in a row.
    Analysis(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    #[serde(with = "as_secs")]
    pub interval: Duration,
    pub failure_limit: u32,
    #[serde(with = "as_secs")]
    pub max_hold: Duration,
    pub metrics: Vec<MetricCheck>,
    pub webhooks: Vec<Webhook>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: DEFAULT_INTERVAL,
            failure_limit: 1,
            max_hold: DEFAULT_MAX_HOLD,
            metrics: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    pub name: String,
    pub source: MetricSource,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// `None`: the analysis interval.
    #[serde(with = "as_secs_opt")]
    pub window: Option<Duration>,
    pub min_requests: Option<u32>,
    /// Gray minus original over the same window.
    pub relative_to_original: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricSource {
    Builtin(Builtin),
    /// PromQL with the contract's placeholders.
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builtin {
    SuccessRate,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    RequestRate,
}

impl Builtin {
    pub const ALL: [Builtin; 5] = [
        Builtin::SuccessRate,
        Builtin::LatencyP50,
        Builtin::LatencyP95,
        Builtin::LatencyP99,
        Builtin::RequestRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::SuccessRate => "successRate",
            Builtin::LatencyP50 => "latencyP50",
            Builtin::LatencyP95 => "latencyP95",
            Builtin::LatencyP99 => "latencyP99",
            Builtin::RequestRate => "requestRate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    pub kind: WebhookType,
    pub url: String,
    #[serde(with = "as_secs")]
    pub timeout: Duration,
    pub metadata: BTreeMap<String, String>,
}

/// Flagger's webhook vocabulary, with its meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookType {
    /// Before the first step, asked every interval: a no holds.
    ConfirmRollout,
    /// Once before the first step: a no is a failed round.
    PreRollout,
    /// Each round, as a check: a no is a failed check.
    Rollout,
    /// Before each step that raises the gray weight: a no holds.
    ConfirmTrafficIncrease,
    /// Before the last step (and before the end): a no holds.
    ConfirmPromotion,
    /// Each round: a yes rolls back now.
    Rollback,
    /// After Ended or after a rollback: recorded.
    PostRollout,
    /// Every step, pause, verdict change and phase change: recorded.
    Event,
}

impl WebhookType {
    pub const ALL: [WebhookType; 8] = [
        WebhookType::ConfirmRollout,
        WebhookType::PreRollout,
        WebhookType::Rollout,
        WebhookType::ConfirmTrafficIncrease,
        WebhookType::ConfirmPromotion,
        WebhookType::Rollback,
        WebhookType::PostRollout,
        WebhookType::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookType::ConfirmRollout => "confirm-rollout",
            WebhookType::PreRollout => "pre-rollout",
            WebhookType::Rollout => "rollout",
            WebhookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            WebhookType::ConfirmPromotion => "confirm-promotion",
            WebhookType::Rollback => "rollback",
            WebhookType::PostRollout => "post-rollout",
            WebhookType::Event => "event",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OnSuccess {
    /// After the last step, end as `DELETE ?action=end` does.
    #[default]
    End,
    /// Stay Running.
    Hold,
}

impl OnSuccess {
    pub fn as_str(self) -> &'static str {
        match self {
            OnSuccess::End => "end",
            OnSuccess::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OnFailure {
    /// All traffic to the original, phase Failed.
    #[default]
    Rollback,
    /// Keep the traffic, pause.
    Pause,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
        }
    }
}

impl Strategy {
    /// The webhooks of one type, in the order written.
    pub fn webhooks(&self, kind: WebhookType) -> impl Iterator<Item = &Webhook> {
        self.analysis
            .webhooks
            .iter()
            .filter(move |w| w.kind == kind)
    }

    /// The weight the steps before `step` leave, starting from `initial`.
    pub fn weight_before(&self, step: usize, initial: u8) -> u8 {
        self.steps[..step.min(self.steps.len())]
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::SetWeight(w) => Some(*w),
                Step::Pause(_) | Step::Analysis(_) => None,
            })
            .unwrap_or(initial)
    }
}

/// How far a strategy got: stored in `status.strategy` before the traffic
/// it implies is applied, so that a restart (or another replica) continues
/// at the stored step, a pause counts from its stored start, and no step is
/// carried out twice or skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyStatus {
    /// Index into the steps; the number of steps once all are done.
    pub current_step: u32,
    /// When the current step began (`None` until the first step does).
    pub step_start_time: Option<DateTime<Utc>>,
    pub paused: bool,
    /// Why it does not advance, in the contract's words.
    pub pause_reason: String,
    /// Failed rounds in a row.
    pub consecutive_failures: u32,
    /// The latest result of each check (metric or webhook).
    pub checks: Vec<CheckResult>,
    /// Rounds of checks so far.
    #[serde(default)]
    pub round: u64,
    /// When the latest round ran.
    #[serde(default)]
    pub last_round: Option<DateTime<Utc>>,
    /// The latest round's verdict, when it had checks.
    #[serde(default)]
    pub last_verdict: Option<Verdict>,
    /// Since when the rounds have held (nothing but NoData or Error).
    #[serde(default)]
    pub hold_since: Option<DateTime<Utc>>,
    /// Passing rounds in a row in the current analysis step.
    #[serde(default)]
    pub passes: u32,
    /// The confirm-rollout and pre-rollout webhooks said yes.
    #[serde(default)]
    pub started: bool,
    #[serde(default)]
    pub pre_rollout_done: bool,
    /// How it ended, when it did: "Completed", or the reason of a
    /// rollback ("AnalysisFailed", "Aborted", "RollbackWebhook").
    #[serde(default)]
    pub outcome: Option<String>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Pass,
    Fail,
    /// No sample, NaN, or too few requests: holds, never fails by itself.
    NoData,
    /// The check could not be evaluated (unreachable, timeout, bad query):
    /// holds, counted apart.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::NoData => "NoData",
            Verdict::Error => "Error",
        }
    }
}

/// One check's result in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// "metric", or the webhook's type.
    pub kind: String,
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The PromQL as sent, or the webhook's URL.
    pub query: String,
    pub requests: Option<u64>,
    pub time: DateTime<Utc>,
    pub message: String,
    /// The round it belongs to.
    #[serde(default)]
    pub round: u64,
}

/// The placeholders a `query` may use, as written in it.
pub const PLACEHOLDERS: [&str; 7] = [
    "namespace",
    "service",
    "release",
    "version",
    "workload",
    "originalWorkload",
    "window",
];

/// The placeholders of `text` this service does not know (validation
/// names them).
pub fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            unknown.push(format!(
                "{{{{{}",
                after.chars().take(20).collect::<String>()
            ));
            break;
        };
        let name = after[..close].trim();
        if !PLACEHOLDERS.contains(&name) {
            unknown.push(format!("{{{{ {name} }}}}"));
        }
        rest = &after[close + 2..];
    }
    unknown
}

/// Adds `new` results to the `kept` ones of a release, each by its round
/// and name (a result of the same round and name replaces the one kept),
/// in order, keeping the newest `limit`.
pub fn merge_checks(kept: &mut Vec<CheckResult>, new: &[CheckResult], limit: usize) {
    for result in new {
        match kept
            .iter_mut()
            .find(|k| k.round == result.round && k.name == result.name)
        {
            Some(same) => *same = result.clone(),
            None => kept.push(result.clone()),
        }
    }
    kept.sort_by_key(|k| k.round);
    if kept.len() > limit {
        kept.drain(..kept.len() - limit);
    }
}

/// Checks `draft` (at `base`, the field path of the strategy) for a release
/// of `release_type` in `mesh`; every violation is pushed.
pub fn validate(
    draft: &StrategyDraft,
    release_type: Option<ReleaseType>,
    mesh: &Mesh,
    base: &str,
    violations: &mut Vec<Violation>,
) -> Option<Strategy> {
    let before = violations.len();
    let mut fail = |field: String, description: String| {
        violations.push(Violation::new(field, description));
    };
    let steps_field = format!("{base}.steps");
    if draft.steps.is_empty() {
        fail(
            steps_field.clone(),
            format!("must hold 1 to {MAX_STEPS} steps"),
        );
    } else if draft.steps.len() > MAX_STEPS {
        fail(
            steps_field.clone(),
            format!(
                "holds {} steps; at most {MAX_STEPS} are allowed",
                draft.steps.len()
            ),
        );
    }
    let mut steps = Vec::new();
    for (i, step) in draft.steps.iter().take(MAX_STEPS).enumerate() {
        let field = format!("{steps_field}[{i}]");
        let given = [
            step.set_weight.is_some(),
            step.pause.is_some(),
            step.analysis.is_some(),
        ]
        .into_iter()
        .filter(|g| *g)
        .count();
        if given != 1 {
            fail(
                field,
                "must give exactly one of setWeight, pause and analysis".into(),
            );
            continue;
        }
        if let Some(weight) = step.set_weight {
            let weight_field = format!("{field}.setWeight");
            match u8::try_from(weight).ok().filter(|w| *w <= 100) {
                None => fail(weight_field, format!("must be 0 to 100, got {weight}")),
                Some(w) if release_type == Some(ReleaseType::BlueGreen) && w != 0 && w != 100 => {
                    fail(
                        weight_field,
                        format!("a blue-green release switches: 0 or 100 only, got {w}"),
                    )
                }
                Some(w) => steps.push(Step::SetWeight(w)),
            }
        } else if let Some(duration) = &step.pause {
            if duration.is_empty() {
                steps.push(Step::Pause(None));
            } else {
                match durations::parse_within(duration, MIN_SECOND, DAY) {
                    Ok(d) => steps.push(Step::Pause(Some(d))),
                    Err(e) => fail(format!("{field}.pause.duration"), e),
                }
            }
        } else if let Some(count) = step.analysis {
            match u32::try_from(count)
                .ok()
                .filter(|c| (1..=MAX_ANALYSIS_COUNT as u32).contains(c))
            {
                Some(c) => steps.push(Step::Analysis(c)),
                None => fail(
                    format!("{field}.analysis.count"),
                    format!("must be 1 to {MAX_ANALYSIS_COUNT}, got {count}"),
                ),
            }
        }
    }
    let on_success = match draft.on_success.as_str() {
        "" | "end" => OnSuccess::End,
        "hold" => OnSuccess::Hold,
        other => {
            fail(
                format!("{base}.onSuccess"),
                format!("must be \"end\" or \"hold\", got {}", quoted(other)),
            );
            OnSuccess::End
        }
    };
    let on_failure = match draft.on_failure.as_str() {
        "" | "rollback" => OnFailure::Rollback,
        "pause" => OnFailure::Pause,
        other => {
            fail(
                format!("{base}.onFailure"),
                format!("must be \"rollback\" or \"pause\", got {}", quoted(other)),
            );
            OnFailure::Rollback
        }
    };
    if on_success == OnSuccess::End && !draft.steps.is_empty() {
        let last = draft.steps.iter().rev().find_map(|s| s.set_weight);
        if last != Some(100) {
            fail(
                steps_field.clone(),
                "must reach weight 100 (a last setWeight of 100) to end on success; or set onSuccess to \"hold\"".into(),
            );
        }
    }
    let analysis = validate_analysis(
        draft.analysis.as_ref(),
        mesh,
        &format!("{base}.analysis"),
        violations,
    );
    (violations.len() == before).then(|| Strategy {
        steps,
        analysis: analysis.unwrap_or_default(),
        on_success,
        on_failure,
    })
}

fn validate_analysis(
    draft: Option<&AnalysisDraft>,
    mesh: &Mesh,
    base: &str,
    violations: &mut Vec<Violation>,
) -> Option<Analysis> {
    let draft = draft?;
    let before = violations.len();
    let mut fail = |field: String, description: String| {
        violations.push(Violation::new(field, description));
    };
    let interval = if draft.interval.is_empty() {
        DEFAULT_INTERVAL
    } else {
        durations::parse_within(&draft.interval, MIN_SECOND, HOUR).unwrap_or_else(|e| {
            fail(format!("{base}.interval"), e);
            DEFAULT_INTERVAL
        })
    };
    let failure_limit = match draft.failure_limit {
        0 => 1,
        n if (1..=MAX_FAILURE_LIMIT).contains(&n) => n as u32,
        n => {
            fail(
                format!("{base}.failureLimit"),
                format!("must be 1 to {MAX_FAILURE_LIMIT}, got {n}"),
            );
            1
        }
    };
    let max_hold = if draft.max_hold.is_empty() {
        DEFAULT_MAX_HOLD
    } else {
        durations::parse_within(&draft.max_hold, MIN_SECOND, DAY).unwrap_or_else(|e| {
            fail(format!("{base}.maxHold"), e);
            DEFAULT_MAX_HOLD
        })
    };
    let mut names = BTreeSet::new();
    let mut name_ok = |name: &str, field: String, fail: &mut dyn FnMut(String, String)| {
        if !is_check_name(name) {
            fail(
                field,
                format!(
                    "must be 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit, got {}",
                    quoted(name)
                ),
            );
        } else if !names.insert(name.to_owned()) {
            fail(
                field,
                format!("{} names another check of this strategy", quoted(name)),
            );
        }
    };
    if draft.metrics.len() > MAX_CHECKS {
        fail(
            format!("{base}.metrics"),
            format!(
                "holds {} metrics; at most {MAX_CHECKS} are allowed",
                draft.metrics.len()
            ),
        );
    }
    let mut metrics = Vec::new();
    for (i, metric) in draft.metrics.iter().take(MAX_CHECKS).enumerate() {
        let field = format!("{base}.metrics[{i}]");
        name_ok(&metric.name, format!("{field}.name"), &mut fail);
        if mesh.prometheus_url.is_none() {
            fail(
                field.clone(),
                format!(
                    "mesh {} has no prometheus_url: metric checks need the mesh's Prometheus (configuration, [[meshes]])",
                    quoted(&mesh.id)
                ),
            );
        }
        let source = match (metric.builtin.as_str(), metric.query.as_str()) {
            ("", "") => {
                fail(
                    field.clone(),
                    "must give exactly one of builtin and query".into(),
                );
                None
            }
            (builtin, "") => {
                let parsed = Builtin::ALL.into_iter().find(|b| b.as_str() == builtin);
                if parsed.is_none() {
                    fail(
                        format!("{field}.builtin"),
                        format!(
                            "must be one of {}, got {}",
                            Builtin::ALL.map(Builtin::as_str).join(", "),
                            quoted(builtin)
                        ),
                    );
                }
                parsed.map(MetricSource::Builtin)
            }
            ("", query) => {
                if query.len() > MAX_QUERY {
                    fail(
                        format!("{field}.query"),
                        format!("is {} bytes; at most {MAX_QUERY}", query.len()),
                    );
                }
                let unknown = unknown_placeholders(query);
                if !unknown.is_empty() {
                    fail(
                        format!("{field}.query"),
                        format!(
                            "uses {}; the placeholders are {}",
                            unknown.join(", "),
                            PLACEHOLDERS.map(|p| format!("{{{{ {p} }}}}")).join(", ")
                        ),
                    );
                }
                Some(MetricSource::Query(query.to_owned()))
            }
            (_, _) => {
                fail(
                    field.clone(),
                    "must give exactly one of builtin and query".into(),
                );
                None
            }
        };
        for (bound, value) in [("min", metric.min), ("max", metric.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                fail(format!("{field}.{bound}"), "must be a finite number".into());
            }
        }
        if metric.min.is_none() && metric.max.is_none() {
            fail(
                field.clone(),
                "must give min, max or both: the bounds a passing value keeps within".into(),
            );
        }
        if let (Some(min), Some(max)) = (metric.min, metric.max)
            && min > max
        {
            fail(format!("{field}.min"), format!("{min} is above max {max}"));
        }
        let window = if metric.window.is_empty() {
            None
        } else {
            match durations::parse_within(&metric.window, MIN_SECOND, DAY) {
                Ok(w) => Some(w),
                Err(e) => {
                    fail(format!("{field}.window"), e);
                    None
                }
            }
        };
        let min_requests = match metric.min_requests {
            None => None,
            Some(n) => match u32::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    fail(
                        format!("{field}.minRequests"),
                        format!("must be 0 or more, got {n}"),
                    );
                    None
                }
            },
        };
        let relative_to_original = match metric.relative_to.as_str() {
            "" => false,
            "original" => {
                if !matches!(source, Some(MetricSource::Builtin(_))) {
                    fail(
                        format!("{field}.relativeTo"),
                        "compares a builtin metric only: a query says what it compares itself"
                            .into(),
                    );
                }
                true
            }
            other => {
                fail(
                    format!("{field}.relativeTo"),
                    format!("must be \"original\" where given, got {}", quoted(other)),
                );
                false
            }
        };
        if let Some(source) = source {
            metrics.push(MetricCheck {
                name: metric.name.clone(),
                source,
                min: metric.min,
                max: metric.max,
                window,
                min_requests,
                relative_to_original,
            });
        }
    }
    if draft.webhooks.len() > MAX_CHECKS {
        fail(
            format!("{base}.webhooks"),
            format!(
                "holds {} webhooks; at most {MAX_CHECKS} are allowed",
                draft.webhooks.len()
            ),
        );
    }
    let mut webhooks = Vec::new();
    for (i, webhook) in draft.webhooks.iter().take(MAX_CHECKS).enumerate() {
        let field = format!("{base}.webhooks[{i}]");
        name_ok(&webhook.name, format!("{field}.name"), &mut fail);
        let kind = WebhookType::parse(&webhook.kind);
        if kind.is_none() {
            fail(
                format!("{field}.type"),
                format!(
                    "must be one of {}, got {}",
                    WebhookType::ALL.map(WebhookType::as_str).join(", "),
                    quoted(&webhook.kind)
                ),
            );
        }
        if let Err(why) = check_webhook_url(&webhook.url, mesh) {
            fail(format!("{field}.url"), why);
        }
        let timeout = if webhook.timeout.is_empty() {
            DEFAULT_WEBHOOK_TIMEOUT
        } else {
            durations::parse_within(&webhook.timeout, MIN_SECOND, MAX_WEBHOOK_TIMEOUT)
                .unwrap_or_else(|e| {
                    fail(format!("{field}.timeout"), e);
                    DEFAULT_WEBHOOK_TIMEOUT
                })
        };
        if webhook.metadata.len() > MAX_METADATA {
            fail(
                format!("{field}.metadata"),
                format!(
                    "holds {} entries; at most {MAX_METADATA}",
                    webhook.metadata.len()
                ),
            );
        }
        for (key, value) in &webhook.metadata {
            if value.len() > MAX_METADATA_VALUE || key.len() > 253 {
                fail(
                    format!("{field}.metadata.{key}"),
                    format!("is too long: keys up to 253 bytes, values up to {MAX_METADATA_VALUE}"),
                );
            }
        }
        if let Some(kind) = kind {
            webhooks.push(Webhook {
                name: webhook.name.clone(),
                kind,
                url: webhook.url.clone(),
                timeout,
                metadata: webhook.metadata.clone(),
            });
        }
    }
    (violations.len() == before).then_some(Analysis {
        interval,
        failure_limit,
        max_hold,
        metrics,
        webhooks,
    })
}

/// A check's name: a DNS label.
fn is_check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A webhook may call only an http(s) address under one of the mesh's
/// `webhook_url_prefixes`: the guard against making the service call
/// arbitrary addresses.
fn check_webhook_url(url: &str, mesh: &Mesh) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("is {} bytes; at most {MAX_URL}", url.len()));
    }
    let parsed = url.parse::<http::Uri>().ok();
    let well_formed = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some_and(|a| !a.host().is_empty())
    });
    if !well_formed {
        return Err(format!("{} is not an http or https URL", quoted(url)));
    }
    if mesh.webhook_url_prefixes.is_empty() {
        return Err(format!(
            "mesh {} allows no webhooks: its configuration names no webhook_url_prefixes",
            quoted(&mesh.id)
        ));
    }
    if !mesh
        .webhook_url_prefixes
        .iter()
        .any(|prefix| url.starts_with(prefix.as_str()))
    {
        return Err(format!(
            "{} is under none of the addresses mesh {} allows webhooks to call ({})",
            quoted(url),
            quoted(&mesh.id),
            mesh.webhook_url_prefixes.join(", ")
        ));
    }
    Ok(())
}
