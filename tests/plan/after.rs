//! What a round makes of a release's status (`plan::after`), on its
//! failure paths as on its happy one, without a server: a cluster that
//! refuses, one that does not answer (a write, or a read), a storm of lost
//! races, and a round that changed nothing.

use meshrelease::domain::change::ClusterError;
use meshrelease::domain::conditions::{ConditionType, Reason};
use meshrelease::domain::phase::Move;
use meshrelease::domain::plan::{CONFLICTS_TO_REFUSAL, Plan, after, plan};
use meshrelease::domain::{Phase, Release, ReleaseType, StatusUpdate, TrafficPolicy};

use crate::world::*;

/// A release Running at weight 0, and the plan of moving it to 30 (the
/// routing changes) with what was observed.
fn moving_to_30() -> (Release, World, Plan, meshrelease::domain::plan::Observation) {
    let mut world = World::new(vec![]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    settle(&mut release, &mut world, 5);
    assert_eq!(release.status.phase, Phase::Running);
    release.traffic_policy = TrafficPolicy::Weight(30);
    release.generation += 1;
    let observed = world.observe(&release);
    let p = plan(&release, &observed, &context());
    assert!(!p.changes.is_empty(), "the move to 30 changes the routing");
    (release, world, p, observed)
}

fn condition(update: &StatusUpdate, kind: ConditionType) -> Option<(bool, Reason, String)> {
    update
        .conditions
        .iter()
        .rev()
        .find(|c| c.kind == kind)
        .map(|c| (c.status, c.reason, c.message.clone()))
}

fn refused() -> ClusterError {
    ClusterError::Refused {
        cluster: "cluster-a".into(),
        message: "virtualservices.networking.istio.io is forbidden (403)".into(),
    }
}

fn conflict() -> ClusterError {
    ClusterError::Conflict {
        cluster: "cluster-a".into(),
        message: "the object has been modified (409)".into(),
    }
}

#[test]
fn carried_out_the_round_records_the_traffic_and_observes_the_generation_only_once_nothing_is_left()
{
    let (release, _, p, observed) = moving_to_30();
    let (update, ended) = after(&release, p.clone(), &observed, None, 0);
    assert_eq!(ended, None);
    assert_eq!(update.traffic, Some(TrafficPolicy::Weight(30)));
    assert_eq!(
        update.observed_generation, None,
        "changes were made: the next round says whether the cluster holds them"
    );
    let quiet = Plan {
        changes: Vec::new(),
        ..p
    };
    let (update, _) = after(&release, quiet, &observed, None, 0);
    assert_eq!(update.observed_generation, Some(release.generation));
}

#[test]
fn a_refusal_fails_a_release_going_forward_in_the_clusters_words() {
    let (release, _, p, observed) = moving_to_30();
    let (update, ended) = after(&release, p, &observed, Some(refused()), 0);
    assert_eq!(ended, Some(refused()));
    assert_eq!(update.step, Some(Move::Fail));
    let (status, reason, message) = condition(&update, ConditionType::Failed).unwrap();
    assert!(status);
    assert_eq!(reason, Reason::ClusterRefused);
    assert!(
        message.contains("cluster-a") && message.contains("forbidden"),
        "{message}"
    );
    assert_eq!(
        update.traffic, None,
        "what was not carried out is not recorded"
    );
    let next = update.apply_to(&release, t0()).unwrap().unwrap();
    assert_eq!(next.status.phase, Phase::Failed);
}

#[test]
fn a_refusal_while_canceling_says_so_without_failing_the_release() {
    let (mut release, _, p, observed) = moving_to_30();
    release.status.phase = Phase::Canceling;
    let (update, _) = after(&release, p, &observed, Some(refused()), 0);
    assert_eq!(update.step, None, "a cancel is never turned into a failure");
    let (status, reason, _) = condition(&update, ConditionType::Failed).unwrap();
    assert!(!status);
    assert_eq!(reason, Reason::ClusterRefused);
}

#[test]
fn a_cluster_that_does_not_answer_a_write_makes_the_release_wait_saying_which() {
    let (release, _, p, observed) = moving_to_30();
    let down = ClusterError::Unreachable {
        cluster: "cluster-a".into(),
        message: "connection refused".into(),
    };
    let (update, ended) = after(&release, p, &observed, Some(down.clone()), 0);
    assert_eq!(ended, Some(down));
    assert_eq!((update.step, &update.traffic), (None, &None));
    let (status, reason, message) = condition(&update, ConditionType::ClustersReachable).unwrap();
    assert_eq!((status, reason), (false, Reason::Unreachable));
    assert!(message.contains("cluster-a"), "{message}");
}

#[test]
fn a_read_that_got_no_answer_ends_the_round_as_unreachable() {
    let (release, world, _, _) = moving_to_30();
    let mut observed = world.observe(&release);
    observed.unreachable = vec!["cluster-b".into()];
    let p = plan(&release, &observed, &context());
    assert!(p.changes.is_empty(), "nothing is planned on a partial read");
    let (_, ended) = after(&release, p, &observed, None, 0);
    assert!(
        matches!(ended, Some(ClusterError::Unreachable { ref cluster, .. }) if cluster == "cluster-b"),
        "{ended:?}"
    );
}

#[test]
fn lost_races_are_retried_until_a_storm_of_them_fails_the_release() {
    let (release, _, p, observed) = moving_to_30();
    for before in 0..CONFLICTS_TO_REFUSAL - 1 {
        let (update, ended) = after(&release, p.clone(), &observed, Some(conflict()), before);
        assert_eq!(ended, Some(conflict()), "after {before} in a row");
        assert_eq!(update.step, None);
        let (status, reason, _) = condition(&update, ConditionType::TrafficApplied).unwrap();
        assert_eq!((status, reason), (false, Reason::Conflict));
    }
    let (update, ended) = after(
        &release,
        p,
        &observed,
        Some(conflict()),
        CONFLICTS_TO_REFUSAL - 1,
    );
    assert!(
        matches!(ended, Some(ClusterError::Refused { ref message, .. }) if message.contains("did not clear after 8 tries")),
        "{ended:?}"
    );
    assert_eq!(update.step, Some(Move::Fail));
}

#[test]
fn an_end_whose_delete_failed_still_shows_the_original_as_it_was() {
    let mut world = World::new(vec![]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    settle(&mut release, &mut world, 5);
    release.traffic_policy = TrafficPolicy::Weight(100);
    settle(&mut release, &mut world, 3);
    client(&mut release, Move::End);
    // Routing first, then the delete of the original.
    settle_until_delete(&mut release, &mut world);
    let observed = world.observe(&release);
    let p = plan(&release, &observed, &context());
    let shown_if_done = p.deployment.clone().unwrap();
    assert!(
        shown_if_done["metadata"]["deletionTimestamp"].is_string(),
        "{shown_if_done:?}"
    );
    let (update, _) = after(&release, p, &observed, Some(conflict()), 0);
    let shown = update.deployment.unwrap();
    assert!(
        shown["metadata"]["deletionTimestamp"].is_null(),
        "not deleted, so not shown deleted: {shown:?}"
    );
    assert_eq!(update.step, None, "not Ended");
}

/// Rounds until the next one would delete the original.
fn settle_until_delete(release: &mut Release, world: &mut World) {
    for _ in 0..5 {
        let observed = world.observe(release);
        let p = plan(release, &observed, &context());
        if p.changes
            .iter()
            .any(|c| c.change == meshrelease::domain::change::Change::Delete)
        {
            return;
        }
        world.carry_out(&p);
        record(release, &p, &observed, world.now);
    }
    panic!("the end never came to delete the original");
}
