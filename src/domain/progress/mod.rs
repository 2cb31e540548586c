//! A release that runs itself: what its strategy does next. Pure, with
//! time an argument: which checks a round calls (`round_plan`), and what a
//! round's results, or the time passing, make of the strategy's status,
//! its traffic policy and its phase (`decide`). The driver only calls the
//! checks, passes the results and the time in, and writes the outcome
//! (before the traffic it implies is applied: the step, its start, the
//! failure count and the pause are stored first).
//!
//! - this file: rounds, verdicts, steps and the end;
//! - `actions.rs`: the client's pause, resume, promote, abort and retry;
//! - `update.rs`: the write of a decision, and how it applies.

mod actions;
pub mod metrics;
mod update;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use self::actions::{Action, act};
pub use self::update::ProgressUpdate;
use super::conditions::{ConditionChange, ConditionType, Reason};
use super::kinds::Phase;
use super::phase::Move;
use super::release::Release;
use super::strategy::{
    CheckResult, MetricCheck, OnFailure, OnSuccess, Step, Strategy, StrategyStatus, Verdict,
    Webhook, WebhookType,
};
use super::traffic::TrafficPolicy;

/// Check results kept in `status.strategy.checks`, one per check.
pub const LATEST_CHECKS: usize = 64;

/// The pause reasons a client sees (`status.strategy.pauseReason`).
pub const PAUSED_BY_USER: &str = "PausedByUser";
pub const WAITING_FOR_RESUME: &str = "WaitingForResume";
pub const ANALYSIS_FAILED: &str = "AnalysisFailed";

/// What a round of checks calls, in order: the gates that must all say yes
/// before the first step (`first`), then the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundPlan {
    /// confirm-rollout webhooks: until all say yes, nothing else is called.
    pub first: Vec<Webhook>,
    /// Every other webhook due this round.
    pub webhooks: Vec<Webhook>,
    /// The metric checks (`metrics::prepare` says what each sends).
    pub metrics: Vec<MetricCheck>,
    /// The analysis interval: a metric is judged once the traffic has
    /// held this long.
    pub interval: Duration,
}

impl RoundPlan {
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.webhooks.is_empty() && self.metrics.is_empty()
    }
}

/// What a decision changes: the strategy's status, the traffic policy the
/// steps set, a phase move, conditions, and news for `event` and
/// `post-rollout` webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: StrategyStatus,
    /// The policy to store in `spec.trafficPolicy`, when it changes.
    pub policy: Option<TrafficPolicy>,
    pub step: Option<Move>,
    pub conditions: Vec<ConditionChange>,
    /// Said to the `event` webhooks (and, for a rollback or an end, the
    /// `post-rollout` ones), after the decision is stored.
    pub news: Vec<News>,
}

/// Something an `event` (or `post-rollout`) webhook hears of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct News {
    pub kind: WebhookType,
    pub message: String,
}

/// The strategy of a release that runs one and is Running, with its status
/// (a fresh one before the first decision).
pub fn running(release: &Release) -> Option<(&Strategy, StrategyStatus)> {
    let strategy = release.strategy.as_ref()?;
    if release.status.phase != Phase::Running {
        return None;
    }
    Some((
        strategy,
        release.status.strategy.clone().unwrap_or_default(),
    ))
}

/// When the next round of checks is due (`None`: the release runs no
/// strategy now).
pub fn next_round(release: &Release) -> Option<DateTime<Utc>> {
    let (strategy, status) = running(release)?;
    if status.outcome.is_some() {
        return None;
    }
    Some(match status.last_round {
        None => release
            .status
            .phase_time
            .unwrap_or(release.status.start_time),
        Some(last) => last + delta(strategy.analysis.interval),
    })
}

/// The checks a round calls now.
pub fn round_plan(release: &Release) -> RoundPlan {
    let Some((strategy, status)) = running(release) else {
        return RoundPlan::default();
    };
    let hooks = |kind| strategy.webhooks(kind).cloned().collect::<Vec<_>>();
    if !status.started {
        let mut plan = RoundPlan {
            first: hooks(WebhookType::ConfirmRollout),
            ..RoundPlan::default()
        };
        if !status.pre_rollout_done {
            plan.webhooks = hooks(WebhookType::PreRollout);
        }
        return plan;
    }
    let mut webhooks = hooks(WebhookType::Rollout);
    webhooks.extend(hooks(WebhookType::Rollback));
    let step = status.current_step as usize;
    if let Some(Step::SetWeight(w)) = strategy.steps.get(step)
        && raises(release, *w)
    {
        webhooks.extend(hooks(WebhookType::ConfirmTrafficIncrease));
    }
    if step + 1 >= strategy.steps.len() {
        webhooks.extend(hooks(WebhookType::ConfirmPromotion));
    }
    RoundPlan {
        first: Vec::new(),
        webhooks,
        metrics: strategy.analysis.metrics.clone(),
        interval: strategy.analysis.interval,
    }
}

/// The gray weight the release's policy gives now (a match rule counts as
/// a partial weight: never 100).
fn weight_of(policy: &TrafficPolicy) -> u8 {
    match policy {
        TrafficPolicy::Weight(w) => *w,
        TrafficPolicy::Match(_) => 1,
    }
}

fn raises(release: &Release, to: u8) -> bool {
    to > weight_of(&release.traffic_policy)
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 1000))
}

/// What `release`'s strategy does at `now`, after the round of checks that
/// just ran (`round`, its results), or with no round (time passing, a
/// traffic change applied). `None`: nothing changes (a release that runs
/// no strategy now).
pub fn decide(
    release: &Release,
    now: DateTime<Utc>,
    round: Option<&[CheckResult]>,
) -> Option<Decision> {
    let (strategy, mut status) = running(release)?;
    if status.outcome.is_some() {
        return None;
    }
    let mut decision = Decision {
        status: status.clone(),
        policy: None,
        step: None,
        conditions: Vec::new(),
        news: Vec::new(),
    };
    let mut gates = Gates::default();
    if let Some(results) = round {
        status.round += 1;
        status.last_round = Some(now);
        for result in results {
            let mut result = result.clone();
            result.round = status.round;
            match status.checks.iter_mut().find(|c| c.name == result.name) {
                Some(latest) => *latest = result,
                None => status.checks.push(result),
            }
        }
        status.checks.truncate(LATEST_CHECKS);
        gates = Gates::of(results);
        if let Some(yes) = gates.rollback_yes {
            return Some(rollback(
                release,
                status,
                now,
                Reason::RollbackWebhook,
                format!("the rollback webhook {yes:?} said yes: rolled back"),
            ));
        }
        if !status.started {
            if gates.confirm_rollout_held.is_none() {
                if let Some(no) = &gates.pre_rollout_no {
                    // A no from pre-rollout is a failed round.
                    status.consecutive_failures += 1;
                    if status.consecutive_failures >= strategy.analysis.failure_limit {
                        return Some(on_failure(
                            release,
                            strategy,
                            status,
                            now,
                            format!("the pre-rollout webhook {no:?} said no"),
                        ));
                    }
                } else {
                    status.pre_rollout_done = true;
                    status.started = true;
                    status.consecutive_failures = 0;
                    status.step_start_time = Some(now);
                    decision.news.push(News {
                        kind: WebhookType::Event,
                        message: "the strategy started".into(),
                    });
                }
            }
        } else if judge(results).is_none() {
            // A strategy without checks: every round passes.
            if let Some(Step::Analysis(_)) = strategy.steps.get(status.current_step as usize) {
                status.passes += 1;
            }
        } else if let Some(verdict) = judge(results) {
            match verdict.verdict {
                Verdict::Fail => {
                    status.consecutive_failures += 1;
                    status.passes = 0;
                    status.hold_since = None;
                    decision.conditions.push(ConditionChange::new(
                        ConditionType::Analysis,
                        false,
                        Reason::CheckFailed,
                        verdict.message.clone(),
                    ));
                    if status.consecutive_failures >= strategy.analysis.failure_limit {
                        return Some(on_failure(release, strategy, status, now, verdict.message));
                    }
                }
                Verdict::NoData | Verdict::Error => {
                    let since = *status.hold_since.get_or_insert(now);
                    decision.conditions.push(ConditionChange::new(
                        ConditionType::Analysis,
                        false,
                        if verdict.verdict == Verdict::NoData {
                            Reason::NoData
                        } else {
                            Reason::CheckError
                        },
                        verdict.message.clone(),
                    ));
                    if now - since >= delta(strategy.analysis.max_hold) {
                        let held = format!(
                            "{}, and nothing but NoData or Error for {} (maxHold)",
                            verdict.message,
                            super::durations::format(strategy.analysis.max_hold)
                        );
                        return Some(on_failure(release, strategy, status, now, held));
                    }
                }
                Verdict::Pass => {
                    status.consecutive_failures = 0;
                    status.hold_since = None;
                    if let Some(Step::Analysis(_)) =
                        strategy.steps.get(status.current_step as usize)
                    {
                        status.passes += 1;
                    }
                    decision.conditions.push(ConditionChange::new(
                        ConditionType::Analysis,
                        true,
                        Reason::Passed,
                        verdict.message.clone(),
                    ));
                }
            }
            if status.last_verdict != Some(verdict.verdict) {
                decision.news.push(News {
                    kind: WebhookType::Event,
                    message: format!("the checks' verdict is {}", verdict.verdict.as_str()),
                });
            }
            status.last_verdict = Some(verdict.verdict);
        }
    }
    decision.status = status;
    step(release, strategy, now, &gates, &mut decision);
    Some(decision)
}

/// What the gates of a round said.
#[derive(Debug, Default)]
struct Gates {
    /// Whether a round asked them (else: time passing, nothing asked).
    asked: bool,
    /// The first confirm-rollout webhook that said no.
    confirm_rollout_held: Option<String>,
    pre_rollout_no: Option<String>,
    /// The first confirm-traffic-increase that said no; `Some("")` when
    /// none was asked.
    traffic_increase_held: Option<String>,
    traffic_increase_asked: bool,
    promotion_held: Option<String>,
    promotion_asked: bool,
    rollback_yes: Option<String>,
}

impl Gates {
    fn of(results: &[CheckResult]) -> Self {
        let mut gates = Gates {
            asked: true,
            ..Gates::default()
        };
        for result in results {
            let yes = result.verdict == Verdict::Pass;
            let name = Some(result.name.clone());
            match WebhookType::parse(&result.kind) {
                Some(WebhookType::ConfirmRollout) if !yes => {
                    gates.confirm_rollout_held = gates.confirm_rollout_held.or(name)
                }
                Some(WebhookType::PreRollout) if !yes => {
                    gates.pre_rollout_no = gates.pre_rollout_no.or(name)
                }
                Some(WebhookType::ConfirmTrafficIncrease) => {
                    gates.traffic_increase_asked = true;
                    if !yes {
                        gates.traffic_increase_held = gates.traffic_increase_held.or(name);
                    }
                }
                Some(WebhookType::ConfirmPromotion) => {
                    gates.promotion_asked = true;
                    if !yes {
                        gates.promotion_held = gates.promotion_held.or(name);
                    }
                }
                Some(WebhookType::Rollback) if yes => {
                    gates.rollback_yes = gates.rollback_yes.or(name)
                }
                Some(
                    WebhookType::ConfirmRollout
                    | WebhookType::PreRollout
                    | WebhookType::Rollout
                    | WebhookType::Rollback
                    | WebhookType::PostRollout
                    | WebhookType::Event,
                )
                | None => {}
            }
        }
        gates
    }
}

/// A round's verdict over its checks (metrics and rollout webhooks), and
/// the message that says why: `None` when it had none.
struct RoundVerdict {
    verdict: Verdict,
    message: String,
}

fn judge(results: &[CheckResult]) -> Option<RoundVerdict> {
    let checks: Vec<&CheckResult> = results
        .iter()
        .filter(|r| r.kind == metrics::METRIC || r.kind == WebhookType::Rollout.as_str())
        .collect();
    if checks.is_empty() {
        return None;
    }
    let first = |verdict: Verdict| checks.iter().find(|c| c.verdict == verdict);
    let about = |c: &CheckResult| format!("{} ({}): {}", c.name, c.verdict.as_str(), c.message);
    Some(if let Some(failed) = first(Verdict::Fail) {
        RoundVerdict {
            verdict: Verdict::Fail,
            message: about(failed),
        }
    } else if let Some(empty) = first(Verdict::NoData) {
        RoundVerdict {
            verdict: Verdict::NoData,
            message: about(empty),
        }
    } else if let Some(error) = first(Verdict::Error) {
        RoundVerdict {
            verdict: Verdict::Error,
            message: about(error),
        }
    } else {
        RoundVerdict {
            verdict: Verdict::Pass,
            message: format!("{} check(s) passed", checks.len()),
        }
    })
}

/// The steps: what the current one waits for, and whether it is done.
fn step(
    release: &Release,
    strategy: &Strategy,
    now: DateTime<Utc>,
    gates: &Gates,
    decision: &mut Decision,
) {
    let status = &mut decision.status;
    let progressing = |reason: Reason, message: String| {
        ConditionChange::new(
            ConditionType::Progressing,
            reason != Reason::Held,
            reason,
            message,
        )
    };
    if !status.started {
        let why = match &gates.confirm_rollout_held {
            Some(hook) => format!("HeldByWebhook: {hook}"),
            // Between rounds, what the last one said holds.
            None if !gates.asked && !status.pause_reason.is_empty() => status.pause_reason.clone(),
            None => "waiting for the first round of checks".into(),
        };
        status.pause_reason = why.clone();
        decision.conditions.push(progressing(
            Reason::Held,
            format!("before the first step: {why}"),
        ));
        return;
    }
    if status.paused {
        decision.conditions.push(progressing(
            Reason::Paused,
            format!(
                "paused at step {}/{}: {}",
                status.current_step.min(strategy.steps.len() as u32) + 1,
                strategy.steps.len(),
                status.pause_reason
            ),
        ));
        return;
    }
    // A round that failed or held holds the step where it is.
    if let Some(verdict) = status.last_verdict
        && verdict != Verdict::Pass
        && (status.consecutive_failures > 0 || status.hold_since.is_some())
    {
        let check = status
            .checks
            .iter()
            .find(|c| {
                c.verdict == verdict
                    && (c.kind == metrics::METRIC || c.kind == WebhookType::Rollout.as_str())
            })
            .map(|c| c.name.clone())
            .unwrap_or_default();
        status.pause_reason = format!("{}: {check}", verdict.as_str());
        decision.conditions.push(progressing(
            Reason::Held,
            format!(
                "held at step {}/{}: {}",
                status.current_step + 1,
                strategy.steps.len(),
                status.pause_reason
            ),
        ));
        return;
    }
    status.pause_reason.clear();
    let index = status.current_step as usize;
    let total = strategy.steps.len();
    let Some(current) = strategy.steps.get(index) else {
        finish(release, strategy, gates, decision);
        return;
    };
    let at = |status: &StrategyStatus| format!("step {}/{total}", status.current_step + 1);
    let started = status.step_start_time.unwrap_or(now);
    let done = match current {
        Step::SetWeight(w) => {
            let wanted = TrafficPolicy::Weight(*w);
            if release.traffic_policy != wanted {
                let held = if raises(release, *w) {
                    gates.traffic_increase_held.clone().or_else(|| {
                        (!gates.traffic_increase_asked
                            && strategy
                                .webhooks(WebhookType::ConfirmTrafficIncrease)
                                .next()
                                .is_some())
                        .then(|| {
                            strategy
                                .webhooks(WebhookType::ConfirmTrafficIncrease)
                                .next()
                                .map(|h| h.name.clone())
                                .unwrap_or_default()
                        })
                    })
                } else {
                    None
                };
                let held = held.or_else(|| promotion_hold(strategy, index, gates));
                if let Some(hook) = held {
                    status.pause_reason = format!("HeldByWebhook: {hook}");
                    decision.conditions.push(progressing(
                        Reason::Held,
                        format!("{}: setWeight {w} waits for {hook}", at(status)),
                    ));
                    return;
                }
                decision.policy = Some(wanted);
                decision.news.push(News {
                    kind: WebhookType::Event,
                    message: format!("{}: setWeight {w}", at(status)),
                });
                false
            } else {
                // Done once the clusters hold it.
                release.status.traffic.as_ref() == Some(&wanted)
            }
        }
        Step::Pause(Some(duration)) => now >= started + delta(*duration),
        Step::Pause(None) => {
            status.paused = true;
            status.pause_reason = WAITING_FOR_RESUME.into();
            decision.conditions.push(progressing(
                Reason::Paused,
                format!("{}: paused until a resume", at(status)),
            ));
            decision.news.push(News {
                kind: WebhookType::Event,
                message: format!("{}: paused until a resume", at(status)),
            });
            return;
        }
        Step::Analysis(count) => status.passes >= *count,
    };
    if done {
        status.current_step += 1;
        status.step_start_time = Some(now);
        status.passes = 0;
        decision.news.push(News {
            kind: WebhookType::Event,
            message: format!("step {}/{total} done", index + 1),
        });
        if status.current_step as usize >= total {
            finish(release, strategy, gates, decision);
            return;
        }
    }
    let status = &decision.status;
    decision.conditions.push(progressing(
        Reason::Stepping,
        format!(
            "{}: {}",
            at(status),
            describe(&strategy.steps[status.current_step as usize])
        ),
    ));
}

/// The confirm-promotion webhook holding the last step, if one does.
fn promotion_hold(strategy: &Strategy, index: usize, gates: &Gates) -> Option<String> {
    if index + 1 < strategy.steps.len() {
        return None;
    }
    gates.promotion_held.clone().or_else(|| {
        (!gates.promotion_asked)
            .then(|| {
                strategy
                    .webhooks(WebhookType::ConfirmPromotion)
                    .next()
                    .map(|h| h.name.clone())
            })
            .flatten()
    })
}

/// Every step done: end, or hold.
fn finish(release: &Release, strategy: &Strategy, gates: &Gates, decision: &mut Decision) {
    let total = strategy.steps.len();
    match strategy.on_success {
        OnSuccess::Hold => {
            decision.status.outcome = Some(Reason::Completed.as_str().into());
            decision.conditions.push(ConditionChange::new(
                ConditionType::Progressing,
                true,
                Reason::Completed,
                format!("all {total} steps done; the release holds as it is (onSuccess: hold)"),
            ));
            decision.news.push(News {
                kind: WebhookType::Event,
                message: "all steps done".into(),
            });
        }
        OnSuccess::End => {
            if let Some(hook) = promotion_hold(strategy, total.saturating_sub(1), gates) {
                decision.status.pause_reason = format!("HeldByWebhook: {hook}");
                decision.conditions.push(ConditionChange::new(
                    ConditionType::Progressing,
                    false,
                    Reason::Held,
                    format!("all {total} steps done; the end waits for {hook}"),
                ));
                return;
            }
            decision.status.outcome = Some(Reason::Completed.as_str().into());
            let full = TrafficPolicy::Weight(100);
            if release.traffic_policy != full {
                decision.policy = Some(full);
            }
            decision.step = Some(Move::End);
            decision.conditions.push(ConditionChange::new(
                ConditionType::Progressing,
                true,
                Reason::Completed,
                format!("all {total} steps done: the release ends (onSuccess: end)"),
            ));
            decision.news.push(News {
                kind: WebhookType::Event,
                message: "all steps done: ending".into(),
            });
            decision.news.push(News {
                kind: WebhookType::PostRollout,
                message: "all steps done: the release ends".into(),
            });
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("setWeight {w}"),
        Step::Pause(Some(d)) => format!("pause {}", super::durations::format(*d)),
        Step::Pause(None) => "pause until a resume".into(),
        Step::Analysis(n) => format!("analysis: {n} passing round(s)"),
    }
}

/// What `onFailure` does: roll back, or pause where it is.
fn on_failure(
    release: &Release,
    strategy: &Strategy,
    mut status: StrategyStatus,
    now: DateTime<Utc>,
    why: String,
) -> Decision {
    match strategy.on_failure {
        OnFailure::Rollback => rollback(release, status, now, Reason::AnalysisFailed, why),
        OnFailure::Pause => {
            status.paused = true;
            status.pause_reason = ANALYSIS_FAILED.into();
            Decision {
                status,
                policy: None,
                step: None,
                conditions: vec![ConditionChange::new(
                    ConditionType::Progressing,
                    true,
                    Reason::Paused,
                    format!(
                        "{ANALYSIS_FAILED}: {why}; paused (onFailure: pause): resume, promote or abort"
                    ),
                )],
                news: vec![News {
                    kind: WebhookType::Event,
                    message: format!("paused: {why}"),
                }],
            }
        }
    }
}

/// All traffic to the original, phase Failed; the gray Deployments stay
/// until a cancel.
pub(crate) fn rollback(
    release: &Release,
    mut status: StrategyStatus,
    _now: DateTime<Utc>,
    reason: Reason,
    why: String,
) -> Decision {
    status.outcome = Some(reason.as_str().into());
    status.paused = false;
    status.pause_reason.clear();
    let original = TrafficPolicy::Weight(0);
    Decision {
        status,
        policy: (release.traffic_policy != original).then_some(original),
        step: Some(Move::Fail),
        conditions: vec![
            ConditionChange::new(ConditionType::Failed, true, reason, why.clone()),
            ConditionChange::new(
                ConditionType::Progressing,
                false,
                Reason::RolledBack,
                format!("rolled back: {why}"),
            ),
        ],
        news: vec![
            News {
                kind: WebhookType::Event,
                message: format!("rolled back: {why}"),
            },
            News {
                kind: WebhookType::PostRollout,
                message: format!("rolled back: {why}"),
            },
        ],
    }
}
