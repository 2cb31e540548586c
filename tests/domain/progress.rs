//! What a strategy does next, decided with time as an argument and check
//! results given: no server, no cluster, no sleep. "At step 2, paused
//! since T, now T+31s: advance."

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use meshrelease::domain::conditions::{ConditionType, Reason};
use meshrelease::domain::mesh::Mesh;
use meshrelease::domain::phase::Move;
use meshrelease::domain::progress::{self, Action, Decision, ProgressUpdate};
use meshrelease::domain::strategy::{
    self, AnalysisDraft, CheckResult, StepDraft, StrategyDraft, Verdict, WebhookDraft,
};
use meshrelease::domain::{Phase, Release, ReleaseType, TrafficPolicy};

use crate::support::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn weight(w: i64) -> StepDraft {
    StepDraft {
        set_weight: Some(w),
        ..StepDraft::default()
    }
}

fn pause(duration: &str) -> StepDraft {
    StepDraft {
        pause: Some(duration.into()),
        ..StepDraft::default()
    }
}

fn analysis(count: i64) -> StepDraft {
    StepDraft {
        analysis: Some(count),
        ..StepDraft::default()
    }
}

fn hook(name: &str, kind: &str) -> WebhookDraft {
    WebhookDraft {
        name: name.into(),
        kind: kind.into(),
        url: format!("http://hooks.test/{name}"),
        ..WebhookDraft::default()
    }
}

fn mesh_with_hooks() -> Mesh {
    Mesh {
        webhook_url_prefixes: vec!["http://hooks.test/".into()],
        ..mesh()
    }
}

/// A Running release (since t(0)) with this strategy.
fn running(steps: Vec<StepDraft>, failure_limit: i64, hooks: Vec<WebhookDraft>) -> Release {
    let draft = StrategyDraft {
        steps,
        analysis: Some(AnalysisDraft {
            interval: "10s".into(),
            failure_limit,
            max_hold: "1m".into(),
            webhooks: hooks,
            ..AnalysisDraft::default()
        }),
        ..StrategyDraft::default()
    };
    let mut violations = Vec::new();
    let strategy = strategy::validate(
        &draft,
        Some(ReleaseType::Canary),
        &mesh_with_hooks(),
        "spec.strategy",
        &mut violations,
    )
    .unwrap_or_else(|| panic!("{violations:?}"));
    let status =
        meshrelease::domain::release::ReleaseStatus::pending(t(0), vec![template("reviews:2")]);
    let mut release = Release {
        mesh_id: MESH.into(),
        namespace: NS.into(),
        name: "reviews-canary".into(),
        uid: uuid::Uuid::from_u128(7),
        resource_version: 1,
        service_name: "reviews".into(),
        cluster_id: "cluster-a".into(),
        deployment_name: "reviews-v1".into(),
        version: "v2".into(),
        release_type: ReleaseType::Canary,
        gray_deployments: vec![],
        traffic_policy: TrafficPolicy::Weight(0),
        strategy: Some(strategy),
        generation: 1,
        status,
    };
    release.status.phase = Phase::Running;
    release.status.phase_time = Some(t(0));
    release.status.traffic = Some(TrafficPolicy::Weight(0));
    release
}

fn result(name: &str, kind: &str, verdict: Verdict) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: kind.into(),
        verdict,
        value: None,
        min: None,
        max: None,
        query: String::new(),
        requests: None,
        time: t(0),
        message: format!("{name} {}", verdict.as_str()),
        round: 0,
    }
}

/// Applies a decision as the store write does.
fn apply(release: &mut Release, decision: Decision, at: DateTime<Utc>) {
    if let Some(next) = ProgressUpdate(decision).apply_to(release, at).unwrap() {
        *release = next;
    }
}

/// Decides at `at` (after a round with `results` if given) and applies.
fn decide(release: &mut Release, at: i64, results: Option<&[CheckResult]>) -> Decision {
    let decision = progress::decide(release, t(at), results).expect("a decision");
    apply(release, decision.clone(), t(at));
    decision
}

/// The clusters now hold what the spec says.
fn applied(release: &mut Release) {
    release.status.traffic = Some(release.traffic_policy.clone());
}

fn status(release: &Release) -> &meshrelease::domain::strategy::StrategyStatus {
    release.status.strategy.as_ref().unwrap()
}

fn reason(decision: &Decision, kind: ConditionType) -> Option<Reason> {
    decision
        .conditions
        .iter()
        .rev()
        .find(|c| c.kind == kind)
        .map(|c| c.reason)
}

#[test]
fn a_weight_is_stored_first_and_the_step_done_once_the_clusters_hold_it() {
    let mut r = running(vec![weight(20), weight(100)], 1, vec![]);
    decide(&mut r, 0, Some(&[]));
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(20), "stored");
    assert_eq!(status(&r).current_step, 0, "not done: not applied yet");
    decide(&mut r, 1, None);
    assert_eq!(status(&r).current_step, 0, "still not applied");
    applied(&mut r);
    decide(&mut r, 2, None);
    assert_eq!(status(&r).current_step, 1);
    assert_eq!(status(&r).step_start_time, Some(t(2)));
}

#[test]
fn a_timed_pause_ends_when_its_time_is_up_counted_from_its_stored_start() {
    let mut r = running(vec![weight(20), pause("30s"), weight(100)], 1, vec![]);
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(&mut r, 1, None);
    assert_eq!(status(&r).current_step, 1);
    assert_eq!(status(&r).step_start_time, Some(t(1)));
    decide(&mut r, 30, None);
    assert_eq!(status(&r).current_step, 1, "29 s of a 30 s pause");
    decide(&mut r, 31, None);
    assert_eq!(
        status(&r).current_step,
        2,
        "paused since 1, now 31: advance"
    );
}

#[test]
fn a_pause_without_a_duration_waits_for_a_resume_and_a_resume_ends_it() {
    let mut r = running(vec![pause(""), weight(100)], 1, vec![]);
    decide(&mut r, 0, Some(&[]));
    assert!(status(&r).paused);
    assert_eq!(status(&r).pause_reason, "WaitingForResume");
    decide(&mut r, 3600, None);
    assert_eq!(status(&r).current_step, 0, "an hour later, still waiting");
    let resumed = progress::act(&r, Action::Resume, t(3601)).unwrap().unwrap();
    apply(&mut r, resumed, t(3601));
    assert_eq!(status(&r).current_step, 1);
    assert!(!status(&r).paused);
    assert_eq!(
        progress::act(&r, Action::Resume, t(3602)).unwrap(),
        None,
        "a repeat changes nothing"
    );
}

#[test]
fn an_analysis_step_counts_passing_rounds_and_a_failure_starts_the_count_again() {
    let hooks = vec![hook("smoke", "rollout")];
    let mut r = running(vec![analysis(2), weight(100)], 5, hooks);
    let pass = [result("smoke", "rollout", Verdict::Pass)];
    let fail = [result("smoke", "rollout", Verdict::Fail)];
    let none = [result("smoke", "rollout", Verdict::NoData)];
    decide(&mut r, 0, Some(&[]));
    decide(&mut r, 10, Some(&pass));
    assert_eq!(status(&r).passes, 1);
    decide(&mut r, 20, Some(&none));
    assert_eq!(
        (status(&r).passes, status(&r).current_step),
        (1, 0),
        "NoData does not count"
    );
    decide(&mut r, 30, Some(&fail));
    assert_eq!(status(&r).passes, 0, "a failure starts the count again");
    decide(&mut r, 40, Some(&pass));
    decide(&mut r, 50, Some(&pass));
    assert_eq!(status(&r).current_step, 1, "two passing rounds in a row");
}

#[test]
fn failure_limit_rounds_in_a_row_roll_back_and_one_between_passes_does_not() {
    let hooks = vec![hook("smoke", "rollout")];
    let mut r = running(vec![weight(20), analysis(10), weight(100)], 2, hooks);
    let pass = [result("smoke", "rollout", Verdict::Pass)];
    let fail = [result("smoke", "rollout", Verdict::Fail)];
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(&mut r, 10, Some(&fail));
    decide(&mut r, 20, Some(&pass));
    let d = decide(&mut r, 30, Some(&fail));
    assert_eq!(d.step, None, "one failure between passes");
    assert_eq!(r.status.phase, Phase::Running);
    let d = decide(&mut r, 40, Some(&fail));
    assert_eq!(d.step, Some(Move::Fail));
    assert_eq!(r.status.phase, Phase::Failed);
    assert_eq!(
        r.traffic_policy,
        TrafficPolicy::Weight(0),
        "all back to the original"
    );
    assert_eq!(
        reason(&d, ConditionType::Failed),
        Some(Reason::AnalysisFailed)
    );
    let failed = d
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::Failed)
        .unwrap();
    assert!(failed.message.contains("smoke"), "{}", failed.message);
    assert_eq!(status(&r).outcome.as_deref(), Some("AnalysisFailed"));
}

#[test]
fn nothing_but_no_data_holds_and_only_max_hold_trips_on_failure() {
    let hooks = vec![hook("smoke", "rollout")];
    let mut r = running(vec![weight(20), analysis(3), weight(100)], 1, hooks);
    let none = [result("smoke", "rollout", Verdict::NoData)];
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(&mut r, 10, None);
    for at in [20, 30, 40, 50, 60] {
        let d = decide(&mut r, at, Some(&none));
        assert_eq!(
            d.step, None,
            "an idle service is never rolled back for being idle"
        );
        assert_eq!(reason(&d, ConditionType::Analysis), Some(Reason::NoData));
    }
    assert_eq!(status(&r).pause_reason, "NoData: smoke");
    assert_eq!(status(&r).hold_since, Some(t(20)));
    let d = decide(&mut r, 80, Some(&none));
    assert_eq!(
        d.step,
        Some(Move::Fail),
        "a minute (maxHold) of nothing but NoData"
    );
    let failed = d
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::Failed)
        .unwrap();
    assert!(failed.message.contains("maxHold"), "{}", failed.message);
}

#[test]
fn gates_hold_until_they_say_yes() {
    let hooks = vec![
        hook("start", "confirm-rollout"),
        hook("more", "confirm-traffic-increase"),
        hook("ship", "confirm-promotion"),
    ];
    let mut r = running(vec![weight(20), weight(100)], 1, hooks);
    let no = |name: &str, kind: &str| result(name, kind, Verdict::Fail);
    let yes = |name: &str, kind: &str| result(name, kind, Verdict::Pass);
    // confirm-rollout: before the first step.
    let plan = progress::round_plan(&r);
    assert_eq!(plan.first.len(), 1);
    decide(&mut r, 0, Some(&[no("start", "confirm-rollout")]));
    assert!(!status(&r).started);
    assert_eq!(status(&r).pause_reason, "HeldByWebhook: start");
    decide(&mut r, 5, None);
    assert_eq!(
        status(&r).pause_reason,
        "HeldByWebhook: start",
        "kept between rounds"
    );
    decide(&mut r, 10, Some(&[yes("start", "confirm-rollout")]));
    assert!(status(&r).started);
    // confirm-traffic-increase: before 0 -> 20.
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(0));
    assert_eq!(status(&r).pause_reason, "HeldByWebhook: more");
    let plan = progress::round_plan(&r);
    assert!(plan.webhooks.iter().any(|h| h.name == "more"), "{plan:?}");
    decide(&mut r, 20, Some(&[no("more", "confirm-traffic-increase")]));
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(0));
    decide(&mut r, 30, Some(&[yes("more", "confirm-traffic-increase")]));
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(20));
    applied(&mut r);
    decide(&mut r, 31, None);
    // confirm-promotion: the last step (20 -> 100) waits for both gates.
    decide(
        &mut r,
        40,
        Some(&[
            yes("more", "confirm-traffic-increase"),
            no("ship", "confirm-promotion"),
        ]),
    );
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(20));
    assert_eq!(status(&r).pause_reason, "HeldByWebhook: ship");
    decide(
        &mut r,
        50,
        Some(&[
            yes("more", "confirm-traffic-increase"),
            yes("ship", "confirm-promotion"),
        ]),
    );
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(100));
}

#[test]
fn a_rollback_webhook_saying_yes_rolls_back_at_once() {
    let hooks = vec![hook("stop", "rollback")];
    let mut r = running(vec![weight(50), pause(""), weight(100)], 3, hooks);
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(
        &mut r,
        10,
        Some(&[result("stop", "rollback", Verdict::Fail)]),
    );
    assert_eq!(r.status.phase, Phase::Running, "no rollback asked");
    let d = decide(
        &mut r,
        20,
        Some(&[result("stop", "rollback", Verdict::Pass)]),
    );
    assert_eq!(d.step, Some(Move::Fail));
    assert_eq!(
        reason(&d, ConditionType::Failed),
        Some(Reason::RollbackWebhook)
    );
    assert!(d.news.iter().any(|n| n.kind.as_str() == "post-rollout"));
}

#[test]
fn the_end_moves_to_100_and_ending_in_the_same_write_or_holds() {
    let mut r = running(vec![weight(50), weight(100)], 1, vec![]);
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(&mut r, 1, None);
    decide(&mut r, 2, None);
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(100));
    applied(&mut r);
    let d = decide(&mut r, 3, None);
    assert_eq!(d.step, Some(Move::End));
    assert_eq!(r.status.phase, Phase::Ending);
    assert_eq!(
        reason(&d, ConditionType::Progressing),
        Some(Reason::Completed)
    );

    let mut held = running(vec![weight(50), weight(100)], 1, vec![]);
    held.strategy.as_mut().unwrap().steps.pop();
    held.strategy.as_mut().unwrap().on_success = strategy::OnSuccess::Hold;
    decide(&mut held, 0, Some(&[]));
    applied(&mut held);
    let d = decide(&mut held, 1, None);
    assert_eq!(d.step, None);
    assert_eq!(held.status.phase, Phase::Running);
    assert_eq!(status(&held).outcome.as_deref(), Some("Completed"));
    assert_eq!(
        progress::decide(&held, t(2), None),
        None,
        "done: nothing more"
    );
}

#[test]
fn on_failure_pause_keeps_the_traffic_and_waits() {
    let hooks = vec![hook("smoke", "rollout")];
    let mut r = running(vec![weight(30), analysis(2), weight(100)], 1, hooks);
    r.strategy.as_mut().unwrap().on_failure = strategy::OnFailure::Pause;
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(
        &mut r,
        10,
        Some(&[result("smoke", "rollout", Verdict::Fail)]),
    );
    assert_eq!(r.status.phase, Phase::Running);
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(30), "kept");
    assert!(status(&r).paused);
    assert_eq!(status(&r).pause_reason, "AnalysisFailed");
    let resumed = progress::act(&r, Action::Resume, t(11)).unwrap().unwrap();
    apply(&mut r, resumed, t(11));
    assert_eq!(
        status(&r).consecutive_failures,
        0,
        "a resume starts the count again"
    );
}

#[test]
fn actions_are_idempotent_and_say_why_not() {
    let mut r = running(vec![weight(20), pause("1h"), weight(100)], 1, vec![]);
    decide(&mut r, 0, Some(&[]));
    applied(&mut r);
    decide(&mut r, 1, None);
    let paused = progress::act(&r, Action::Pause, t(2)).unwrap().unwrap();
    apply(&mut r, paused, t(2));
    assert_eq!(progress::act(&r, Action::Pause, t(3)).unwrap(), None);
    decide(&mut r, 7200, None);
    assert_eq!(
        status(&r).current_step,
        1,
        "a user's pause holds a timed one too"
    );
    let promoted = progress::act(&r, Action::Promote { full: false }, t(7201))
        .unwrap()
        .unwrap();
    apply(&mut r, promoted, t(7201));
    assert_eq!(status(&r).current_step, 2);
    let full = progress::act(&r, Action::Promote { full: true }, t(7202))
        .unwrap()
        .unwrap();
    apply(&mut r, full, t(7202));
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(100));
    assert_eq!(status(&r).current_step, 3);

    let aborted = progress::act(&r, Action::Abort, t(7203)).unwrap().unwrap();
    apply(&mut r, aborted, t(7203));
    assert_eq!(r.status.phase, Phase::Failed);
    assert_eq!(progress::act(&r, Action::Abort, t(7204)).unwrap(), None);
    let why = progress::act(&r, Action::Pause, t(7205)).unwrap_err();
    assert!(why.contains("Failed"), "{why}");
    // A retry needs the gray version ready.
    let why = progress::act(&r, Action::Retry, t(7206)).unwrap_err();
    assert!(why.contains("not ready"), "{why}");
    r.status
        .conditions
        .push(meshrelease::domain::conditions::StatusCondition {
            kind: "GrayReady".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: String::new(),
            last_transition_time: t(0),
        });
    let retried = progress::act(&r, Action::Retry, t(7207)).unwrap().unwrap();
    apply(&mut r, retried, t(7207));
    assert_eq!(r.status.phase, Phase::Running);
    assert_eq!(status(&r).current_step, 0);
    assert_eq!(r.traffic_policy, TrafficPolicy::Weight(0));
    assert_eq!(progress::act(&r, Action::Retry, t(7208)).unwrap(), None);

    let plain = Release {
        strategy: None,
        ..r.clone()
    };
    let why = progress::act(&plain, Action::Pause, t(1)).unwrap_err();
    assert!(why.contains("spec.strategy"), "{why}");
}

#[test]
fn rounds_are_due_every_interval_from_the_last_one() {
    let mut r = running(vec![weight(20), pause("1h"), weight(100)], 1, vec![]);
    assert_eq!(progress::next_round(&r), Some(t(0)), "at once when Running");
    decide(&mut r, 0, Some(&[]));
    assert_eq!(progress::next_round(&r), Some(t(10)));
}
