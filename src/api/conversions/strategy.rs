//! `spec.strategy` and `status.strategy` between the wire and the domain.

use crate::domain::durations;
use crate::domain::strategy::{
    AnalysisDraft, CheckResult, MetricDraft, MetricSource, OnFailure, OnSuccess, Step, StepDraft,
    Strategy, StrategyDraft, StrategyStatus, WebhookDraft,
};
use crate::pb::asm::v2 as pb;

impl From<pb::Strategy> for StrategyDraft {
    fn from(strategy: pb::Strategy) -> Self {
        StrategyDraft {
            steps: strategy
                .steps
                .into_iter()
                .map(|step| StepDraft {
                    set_weight: step.set_weight.map(i64::from),
                    pause: step.pause.map(|p| p.duration),
                    analysis: step.analysis.map(|a| i64::from(a.count)),
                })
                .collect(),
            analysis: strategy.analysis.map(|a| AnalysisDraft {
                interval: a.interval,
                failure_limit: i64::from(a.failure_limit),
                max_hold: a.max_hold,
                metrics: a
                    .metrics
                    .into_iter()
                    .map(|m| MetricDraft {
                        name: m.name,
                        builtin: m.builtin,
                        query: m.query,
                        min: m.min,
                        max: m.max,
                        window: m.window,
                        min_requests: m.min_requests.map(i64::from),
                        relative_to: m.relative_to,
                    })
                    .collect(),
                webhooks: a
                    .webhooks
                    .into_iter()
                    .map(|w| WebhookDraft {
                        name: w.name,
                        kind: w.r#type,
                        url: w.url,
                        timeout: w.timeout,
                        metadata: w.metadata.into_iter().collect(),
                    })
                    .collect(),
            }),
            on_success: strategy.on_success,
            on_failure: strategy.on_failure,
        }
    }
}

impl From<&Strategy> for pb::Strategy {
    fn from(strategy: &Strategy) -> Self {
        let analysis = &strategy.analysis;
        pb::Strategy {
            steps: strategy
                .steps
                .iter()
                .map(|step| match step {
                    Step::SetWeight(w) => pb::Step {
                        set_weight: Some(i32::from(*w)),
                        ..pb::Step::default()
                    },
                    Step::Pause(duration) => pb::Step {
                        pause: Some(pb::PauseStep {
                            duration: duration.map(durations::format).unwrap_or_default(),
                        }),
                        ..pb::Step::default()
                    },
                    Step::Analysis(count) => pb::Step {
                        analysis: Some(pb::AnalysisStep {
                            count: i32::try_from(*count).unwrap_or(i32::MAX),
                        }),
                        ..pb::Step::default()
                    },
                })
                .collect(),
            analysis: Some(pb::Analysis {
                interval: durations::format(analysis.interval),
                failure_limit: i32::try_from(analysis.failure_limit).unwrap_or(i32::MAX),
                max_hold: durations::format(analysis.max_hold),
                metrics: analysis
                    .metrics
                    .iter()
                    .map(|m| {
                        let (builtin, query) = match &m.source {
                            MetricSource::Builtin(b) => (b.as_str().to_owned(), String::new()),
                            MetricSource::Query(q) => (String::new(), q.clone()),
                        };
                        pb::MetricCheck {
                            name: m.name.clone(),
                            builtin,
                            query,
                            min: m.min,
                            max: m.max,
                            window: m.window.map(durations::format).unwrap_or_default(),
                            min_requests: m
                                .min_requests
                                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                            relative_to: if m.relative_to_original {
                                "original".into()
                            } else {
                                String::new()
                            },
                        }
                    })
                    .collect(),
                webhooks: analysis
                    .webhooks
                    .iter()
                    .map(|w| pb::Webhook {
                        name: w.name.clone(),
                        r#type: w.kind.as_str().to_owned(),
                        url: w.url.clone(),
                        timeout: durations::format(w.timeout),
                        metadata: w.metadata.clone().into_iter().collect(),
                    })
                    .collect(),
            }),
            on_success: match strategy.on_success {
                OnSuccess::End => OnSuccess::End.as_str().into(),
                OnSuccess::Hold => OnSuccess::Hold.as_str().into(),
            },
            on_failure: match strategy.on_failure {
                OnFailure::Rollback => OnFailure::Rollback.as_str().into(),
                OnFailure::Pause => OnFailure::Pause.as_str().into(),
            },
        }
    }
}

impl From<&StrategyStatus> for pb::StrategyStatus {
    fn from(status: &StrategyStatus) -> Self {
        pb::StrategyStatus {
            current_step: i32::try_from(status.current_step).unwrap_or(i32::MAX),
            step_start_time: status.step_start_time.map(Into::into),
            paused: status.paused,
            pause_reason: status.pause_reason.clone(),
            consecutive_failures: i32::try_from(status.consecutive_failures).unwrap_or(i32::MAX),
            checks: status.checks.iter().map(Into::into).collect(),
        }
    }
}

impl From<&CheckResult> for pb::CheckResult {
    fn from(check: &CheckResult) -> Self {
        pb::CheckResult {
            name: check.name.clone(),
            r#type: check.kind.clone(),
            verdict: check.verdict.as_str().to_owned(),
            value: check.value,
            min: check.min,
            max: check.max,
            query: check.query.clone(),
            requests: check.requests.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            time: Some(check.time.into()),
            message: check.message.clone(),
            round: i32::try_from(check.round).unwrap_or(i32::MAX),
        }
    }
}
