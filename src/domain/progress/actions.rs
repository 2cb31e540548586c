//! A client's actions on a release that runs itself: pause, resume,
//! promote (`full`: to the end at once), abort and retry. Each is
//! idempotent (a repeat changes nothing) and refused, with what to do
//! instead, where the release's phase or strategy does not allow it.

use chrono::{DateTime, Utc};

use super::{
    ANALYSIS_FAILED, Decision, News, PAUSED_BY_USER, WAITING_FOR_RESUME, rollback, running,
};
use crate::domain::conditions::{ConditionChange, ConditionType, Reason};
use crate::domain::kinds::Phase;
use crate::domain::phase::Move;
use crate::domain::release::Release;
use crate::domain::strategy::{Step, StrategyStatus, WebhookType};
use crate::domain::traffic::TrafficPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Promote { full: bool },
    Abort,
    Retry,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote { .. } => "promote",
            Action::Abort => "abort",
            Action::Retry => "retry",
        }
    }
}

/// What `action` does to `release` at `now`: `Ok(None)` when it is done
/// already (a repeat), `Err` (what to do instead) when it is not allowed.
pub fn act(
    release: &Release,
    action: Action,
    now: DateTime<Utc>,
) -> Result<Option<Decision>, String> {
    let Some(strategy) = release.strategy.as_ref() else {
        return Err(format!(
            "release {:?} has no spec.strategy: its traffic moves only by spec.trafficPolicy",
            release.name
        ));
    };
    if action == Action::Retry {
        return retry(release, now);
    }
    let Some((_, mut status)) = running(release) else {
        return Err(match (action, release.status.phase) {
            (Action::Abort, Phase::Failed) => return Ok(None),
            (_, phase) => format!(
                "release {:?} is {}: {} applies while its strategy runs (Running)",
                release.name,
                phase.as_str(),
                action.as_str()
            ),
        });
    };
    let note = |message: String| News {
        kind: WebhookType::Event,
        message,
    };
    let decision = |status: StrategyStatus,
                    policy: Option<TrafficPolicy>,
                    conditions: Vec<ConditionChange>,
                    news: Vec<News>| Decision {
        status,
        policy,
        step: None,
        conditions,
        news,
    };
    match action {
        Action::Pause => {
            if status.paused {
                return Ok(None);
            }
            if status.outcome.is_some() {
                return Err("the strategy is done: there is nothing to pause".into());
            }
            status.paused = true;
            status.pause_reason = PAUSED_BY_USER.into();
            Ok(Some(decision(
                status,
                None,
                vec![ConditionChange::new(
                    ConditionType::Progressing,
                    true,
                    Reason::Paused,
                    "paused by a user: checks go on running; resume, promote or abort",
                )],
                vec![note("paused by a user".into())],
            )))
        }
        Action::Resume => {
            if !status.paused {
                return Ok(None);
            }
            let waiting_step = status.pause_reason == WAITING_FOR_RESUME;
            status.paused = false;
            status.pause_reason.clear();
            if waiting_step {
                // The `{"pause": {}}` step is done.
                next_step(&mut status, now);
            }
            // A pause that onFailure made starts the count again.
            status.consecutive_failures = 0;
            status.hold_since = None;
            Ok(Some(decision(
                status,
                None,
                vec![ConditionChange::new(
                    ConditionType::Progressing,
                    true,
                    Reason::Stepping,
                    "resumed",
                )],
                vec![note("resumed".into())],
            )))
        }
        Action::Promote { full } => {
            if status.outcome.is_some() {
                return Ok(None);
            }
            status.paused = false;
            status.pause_reason.clear();
            status.consecutive_failures = 0;
            status.hold_since = None;
            status.started = true;
            status.pre_rollout_done = true;
            let total = strategy.steps.len() as u32;
            let mut policy = None;
            if full {
                status.current_step = total;
                status.step_start_time = Some(now);
                let all = TrafficPolicy::Weight(100);
                if release.traffic_policy != all {
                    policy = Some(all);
                }
            } else {
                match strategy.steps.get(status.current_step as usize) {
                    // Passed: its weight is set now.
                    Some(Step::SetWeight(w)) => {
                        let wanted = TrafficPolicy::Weight(*w);
                        if release.traffic_policy != wanted {
                            policy = Some(wanted);
                        }
                        next_step(&mut status, now);
                    }
                    Some(Step::Pause(_) | Step::Analysis(_)) => next_step(&mut status, now),
                    None => {}
                }
            }
            let message = if full {
                "promoted in full: weight 100, then onSuccess".to_owned()
            } else {
                format!("promoted past step {}", status.current_step)
            };
            Ok(Some(decision(
                status,
                policy,
                vec![ConditionChange::new(
                    ConditionType::Progressing,
                    true,
                    Reason::Stepping,
                    message.clone(),
                )],
                vec![note(message)],
            )))
        }
        Action::Abort => Ok(Some(rollback(
            release,
            status,
            now,
            Reason::Aborted,
            "aborted by a user: all traffic back to the original".into(),
        ))),
        Action::Retry => unreachable!("answered above"),
    }
}

fn next_step(status: &mut StrategyStatus, now: DateTime<Utc>) {
    status.current_step += 1;
    status.step_start_time = Some(now);
    status.passes = 0;
}

/// From a Failed its strategy reached (by analysis, a rollback webhook, or
/// an abort), with the gray Deployments ready: Running again, at the first
/// step, the original holding all traffic.
fn retry(release: &Release, now: DateTime<Utc>) -> Result<Option<Decision>, String> {
    let rolled_back = release
        .status
        .strategy
        .as_ref()
        .and_then(|s| s.outcome.as_deref())
        .is_some_and(|o| o != Reason::Completed.as_str());
    if release.status.phase == Phase::Running {
        // Retried already (or running as it is): nothing to do.
        return Ok(None);
    }
    if release.status.phase != Phase::Failed || !rolled_back {
        return Err(format!(
            "release {:?} is {}: only a release its strategy rolled back (analysis, a rollback webhook or an abort) can be retried; cancel it instead",
            release.name,
            release.status.phase.as_str()
        ));
    }
    let ready = release
        .status
        .conditions
        .iter()
        .any(|c| c.kind == ConditionType::GrayReady.as_str() && c.status == "True");
    if !ready {
        return Err(
            "the gray Deployments are not ready: a retry would start with nothing to move traffic to; cancel and start again"
                .into(),
        );
    }
    let previous = release.status.strategy.clone().unwrap_or_default();
    let status = StrategyStatus {
        round: previous.round,
        checks: previous.checks,
        ..StrategyStatus::default()
    };
    let original = TrafficPolicy::Weight(0);
    Ok(Some(Decision {
        status,
        policy: (release.traffic_policy != original).then_some(original),
        step: Some(Move::Retry),
        conditions: vec![
            ConditionChange::new(
                ConditionType::Failed,
                false,
                Reason::Retried,
                format!("retried at {now}: the strategy starts again at its first step"),
            ),
            ConditionChange::new(
                ConditionType::Progressing,
                true,
                Reason::Stepping,
                "retried: starting again at the first step",
            ),
        ],
        news: vec![News {
            kind: WebhookType::Event,
            message: format!("retried (after {ANALYSIS_FAILED} or an abort)"),
        }],
    }))
}
