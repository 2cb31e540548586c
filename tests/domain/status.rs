//! The cluster driver's status writes, the watch, and releases of clusters
//! the service has no connection to.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use meshrelease::domain::Phase;
use meshrelease::domain::StatusUpdate;
use meshrelease::domain::change::{ClusterError, PlannedObject};
use meshrelease::domain::conditions::{ConditionChange, ConditionType, Reason};
use meshrelease::domain::error::DomainError;
use meshrelease::domain::mesh::Meshes;
use meshrelease::domain::phase::Move;
use meshrelease::domain::plan::{Observation, Placement};
use meshrelease::domain::ports::{ClusterChange, ClusterPort, Event, EventType};
use meshrelease::domain::release::{SavedRouting, SeenDeployment};
use meshrelease::domain::service::{ReleaseManager, WatchReleases};
use meshrelease::domain::{Release, TrafficPolicy};
use meshrelease::store::MemoryStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn condition(kind: ConditionType, status: bool, reason: Reason) -> ConditionChange {
    ConditionChange::new(
        kind,
        status,
        reason,
        format!("{} is {status}", kind.as_str()),
    )
}

async fn write(
    manager: &ReleaseManager,
    release: &Release,
    update: StatusUpdate,
) -> Result<Release, DomainError> {
    manager
        .write_status(&target(&release.name), release.resource_version, update)
        .await
}

#[tokio::test]
async fn a_status_write_loses_to_any_write_since_and_writes_nothing_new_for_nothing() {
    let manager = manager();
    let created = create(&manager, "reviews-canary", "reviews").await;
    let deploying = drive(&manager, "reviews-canary", &[Move::StartDeploying]).await;
    assert_eq!(deploying.status.phase, Phase::Deploying);
    assert!(deploying.resource_version > created.resource_version);
    assert_eq!(
        deploying.status.phase_time,
        Some(deploying.status.update_time)
    );
    // Written from what it read before: aborted, nothing changed.
    let stale = write(
        &manager,
        &created,
        StatusUpdate {
            conditions: vec![condition(ConditionType::GrayReady, false, Reason::NotReady)],
            ..StatusUpdate::default()
        },
    )
    .await;
    assert!(matches!(stale, Err(DomainError::Aborted(_))), "{stale:?}");
    // Nothing new: the release as it is, no new resourceVersion.
    let same = write(&manager, &deploying, StatusUpdate::default())
        .await
        .unwrap();
    assert_eq!(same, deploying);
    // A move the phase machine refuses.
    let refused = write(
        &manager,
        &deploying,
        StatusUpdate {
            step: Some(Move::Finish),
            ..StatusUpdate::default()
        },
    )
    .await;
    assert!(
        matches!(refused, Err(DomainError::FailedPrecondition(_))),
        "{refused:?}"
    );
    let missing = manager
        .write_status(&target("nobody"), 1, StatusUpdate::default())
        .await;
    assert!(
        matches!(missing, Err(DomainError::NotFound(_))),
        "{missing:?}"
    );
}

/// The driver's write of a phase move on `read`, as its round read it.
async fn move_on(
    manager: &ReleaseManager,
    read: &Release,
    step: Move,
) -> Result<Option<Release>, DomainError> {
    manager
        .write_status_on(
            read,
            StatusUpdate {
                step: Some(step),
                ..StatusUpdate::default()
            },
        )
        .await
}

#[tokio::test]
async fn the_drivers_write_on_what_it_read_loses_to_any_write_since_without_reading_again() {
    let manager = manager();
    let created = create(&manager, "reviews-canary", "reviews").await;
    let deploying = move_on(&manager, &created, Move::StartDeploying)
        .await
        .unwrap()
        .expect("a phase move is written");
    assert_eq!(deploying.status.phase, Phase::Deploying);
    assert_eq!(
        manager.read(&target("reviews-canary")).await.unwrap(),
        deploying
    );
    // On what it read before that write: aborted, and nothing changed.
    let stale = manager
        .write_status_on(
            &created,
            StatusUpdate {
                conditions: vec![condition(ConditionType::GrayReady, false, Reason::NotReady)],
                ..StatusUpdate::default()
            },
        )
        .await;
    assert!(matches!(stale, Err(DomainError::Aborted(_))), "{stale:?}");
    // A move the phase machine refuses on a stale read is the lost race it
    // is, not a refusal of the current release.
    let refused_stale = move_on(&manager, &created, Move::Finish).await;
    assert!(
        matches!(refused_stale, Err(DomainError::Aborted(_))),
        "{refused_stale:?}"
    );
    let refused = move_on(&manager, &deploying, Move::Finish).await;
    assert!(
        matches!(refused, Err(DomainError::FailedPrecondition(_))),
        "{refused:?}"
    );
    // Nothing new: nothing written.
    let nothing = manager
        .write_status_on(&deploying, StatusUpdate::default())
        .await
        .unwrap();
    assert_eq!(nothing, None);
    assert_eq!(
        manager.read(&target("reviews-canary")).await.unwrap(),
        deploying
    );
}

/// The driver's write of one GrayReady condition.
async fn gray_ready(
    manager: &ReleaseManager,
    release: &Release,
    ready: bool,
    reason: Reason,
) -> Release {
    write(
        manager,
        release,
        StatusUpdate {
            conditions: vec![condition(ConditionType::GrayReady, ready, reason)],
            ..StatusUpdate::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_condition_keeps_its_transition_time_until_its_status_changes() {
    let manager = manager();
    let release = create(&manager, "reviews-canary", "reviews").await;
    let first = gray_ready(&manager, &release, false, Reason::NotReady).await;
    let find = |r: &Release, kind: &str| {
        r.status
            .conditions
            .iter()
            .find(|c| c.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}: {:?}", r.status.conditions))
    };
    let since = find(&first, "GrayReady").last_transition_time;
    assert_eq!(find(&first, "GrayReady").status, "False");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let reworded = gray_ready(&manager, &first, false, Reason::ProgressDeadlineExceeded).await;
    assert_eq!(
        find(&reworded, "GrayReady").reason,
        "ProgressDeadlineExceeded"
    );
    assert_eq!(find(&reworded, "GrayReady").last_transition_time, since);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let turned = gray_ready(&manager, &reworded, true, Reason::Ready).await;
    assert_eq!(find(&turned, "GrayReady").status, "True");
    assert!(find(&turned, "GrayReady").last_transition_time > since);
    assert_eq!(
        turned.status.conditions.len(),
        first.status.conditions.len(),
        "set by type, not added again"
    );
}

#[tokio::test]
async fn a_status_write_records_what_the_driver_saw_and_saves_the_routing_once() {
    let manager = manager();
    let release = create(&manager, "reviews-canary", "reviews").await;
    let routing = |name: &str| SavedRouting {
        virtual_service: Some(Arc::new(meshrelease::domain::JsonObject::from_iter([(
            "name".to_owned(),
            serde_json::Value::from(name),
        )]))),
        destination_rule: None,
    };
    let written = write(
        &manager,
        &release,
        StatusUpdate {
            observed_generation: Some(7),
            traffic: Some(TrafficPolicy::Weight(0)),
            deployment: Some(template("registry.example/reviews:1.0")),
            gray_seen: Some(vec![SeenDeployment {
                status: Some(Arc::new(
                    serde_json::json!({"readyReplicas": 2})
                        .as_object()
                        .unwrap()
                        .clone(),
                )),
                deleted: None,
            }]),
            saved_routing: Some(routing("first")),
            ..StatusUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        written.status.observed_generation, 1,
        "never past the release's generation"
    );
    assert_eq!(written.status.traffic, Some(TrafficPolicy::Weight(0)));
    assert_eq!(
        written.status.deployment,
        Some(template("registry.example/reviews:1.0"))
    );
    assert_eq!(
        written.status.gray_deployments, release.status.gray_deployments,
        "what the release applies never takes in what was seen"
    );
    assert_eq!(
        written.status.gray_deployments_shown()[0]["status"],
        serde_json::json!({"readyReplicas": 2}),
        "what was seen is shown"
    );
    assert_eq!(written.status.saved_routing, Some(routing("first")));
    assert_eq!(written.generation, release.generation, "the spec stays");
    let again = write(
        &manager,
        &written,
        StatusUpdate {
            saved_routing: Some(routing("second")),
            ..StatusUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        again.status.saved_routing,
        Some(routing("first")),
        "the routing before the release, never replaced"
    );
    assert_eq!(again, written, "and so nothing was written");
}

async fn next(events: &mut mpsc::Receiver<Result<Event, DomainError>>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

fn watch_request(resource_version: &str) -> WatchReleases {
    WatchReleases {
        mesh_id: MESH.into(),
        namespace: None,
        resource_version: resource_version.into(),
    }
}

#[tokio::test]
async fn a_watch_sends_the_current_releases_then_each_change_in_order() {
    let manager = manager();
    let first = create(&manager, "reviews-canary", "reviews").await;
    let mut events = manager.watch(&admin(), watch_request("")).await.unwrap();
    assert_eq!(manager.watchers(), 1);
    let added = next(&mut events).await;
    assert_eq!(
        (added.kind, added.release.name.as_str(), added.revision),
        (EventType::Added, "reviews-canary", first.resource_version)
    );
    let second = create(&manager, "ratings-canary", "ratings").await;
    let moved = drive(&manager, "reviews-canary", &[Move::StartDeploying]).await;
    let e = next(&mut events).await;
    assert_eq!(
        (e.kind, e.release.name.as_str(), e.revision),
        (EventType::Added, "ratings-canary", second.resource_version)
    );
    let e = next(&mut events).await;
    assert_eq!((e.kind, e.release), (EventType::Modified, moved.clone()));
    manager
        .delete(&admin(), target("ratings-canary"), "cancel")
        .await
        .unwrap();
    manager
        .delete(&admin(), target("ratings-canary"), "")
        .await
        .unwrap();
    assert_eq!(next(&mut events).await.kind, EventType::Modified);
    assert_eq!(next(&mut events).await.kind, EventType::Deleted);

    // Resumed after a revision: only what came after it.
    let mut resumed = manager
        .watch(&admin(), watch_request(&moved.resource_version.to_string()))
        .await
        .unwrap();
    let e = next(&mut resumed).await;
    assert_eq!(
        (e.kind, e.release.name.as_str()),
        (EventType::Modified, "ratings-canary")
    );
    drop(events);
    drop(resumed);
    for _ in 0..100 {
        if manager.watchers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(manager.watchers(), 0, "a dropped stream is not counted");
}

#[tokio::test]
async fn a_watch_refuses_a_bad_or_too_old_resume_point_and_ends_on_shutdown() {
    let shutdown = CancellationToken::new();
    let manager = ReleaseManager::new(
        Meshes::new([mesh()]),
        Arc::new(MemoryStore::with_event_retention(2)),
    )
    .with_shutdown(shutdown.clone());
    assert_eq!(
        fields(manager.watch(&admin(), watch_request("latest")).await),
        vec!["resourceVersion"]
    );
    for i in 0..5 {
        create(&manager, &format!("rel-{i}"), &format!("s-{i}")).await;
    }
    let gone = manager.watch(&admin(), watch_request("1")).await;
    assert!(matches!(gone, Err(DomainError::Gone(_))), "{gone:?}");

    let mut events = manager.watch(&admin(), watch_request("")).await.unwrap();
    for _ in 0..5 {
        assert_eq!(next(&mut events).await.kind, EventType::Added);
    }
    shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the stream ends within 10 s");
    assert!(
        matches!(end, Some(Err(DomainError::ShuttingDown))),
        "{end:?}"
    );
}

/// Clusters where only `cluster-a` has a connection.
struct OnlyClusterA;

#[async_trait]
impl ClusterPort for OnlyClusterA {
    fn connected(&self, cluster: &str) -> bool {
        cluster == "cluster-a"
    }

    async fn observe(&self, _: &Release, _: &Placement, _: bool) -> Observation {
        unreachable!("the manager never observes")
    }

    async fn carry_out(&self, _: &PlannedObject) -> Result<(), ClusterError> {
        unreachable!("the manager never carries out")
    }

    async fn try_out(&self, _: &PlannedObject) -> Result<(), ClusterError> {
        unreachable!("a dry run with a cluster not connected plans no routing")
    }

    fn changes(&self) -> BoxStream<'static, ClusterChange> {
        Box::pin(futures_util::stream::empty())
    }
}

#[tokio::test]
async fn a_release_in_a_cluster_with_no_connection_is_recorded_and_says_so() {
    let manager = manager().with_clusters(Arc::new(OnlyClusterA));
    let release = create(&manager, "reviews-canary", "reviews").await;
    let reachable = release
        .status
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::ClustersReachable.as_str())
        .expect("a ClustersReachable condition");
    assert_eq!(
        (reachable.status.as_str(), reachable.reason.as_str()),
        ("False", Reason::NotConnected.as_str())
    );
    assert!(reachable.message.contains("cluster-b"), "{reachable:?}");
    assert_eq!(
        manager.unconnected_cluster(&mesh(), &release).as_deref(),
        Some("cluster-b")
    );
    assert!(manager.drives(&mesh()), "cluster-a is connected");
    let mut elsewhere = mesh();
    elsewhere.clusters = vec!["cluster-c".into()];
    assert!(!manager.drives(&elsewhere));
    // With every cluster connected, no such condition.
    let mut both = draft("ratings-canary", "ratings");
    both.gray_deployments[0].cluster_id = "cluster-a".into();
    let connected = manager
        .create(&admin(), create_request(both))
        .await
        .unwrap();
    assert!(
        connected
            .status
            .conditions
            .iter()
            .all(|c| c.kind != ConditionType::ClustersReachable.as_str()),
        "{:?}",
        connected.status.conditions
    );
    assert_eq!(manager.unconnected_cluster(&mesh(), &connected), None);
}

#[tokio::test]
async fn a_watch_of_one_namespace_sees_only_its_releases() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let mut elsewhere = create_request(draft("reviews-canary", "reviews"));
    elsewhere.namespace = "other".into();
    elsewhere.draft.namespace = "other".into();
    manager.create(&admin(), elsewhere).await.unwrap();
    let mut events = manager
        .watch(
            &admin(),
            WatchReleases {
                mesh_id: MESH.into(),
                namespace: Some("other".into()),
                resource_version: String::new(),
            },
        )
        .await
        .unwrap();
    let first = next(&mut events).await;
    assert_eq!(first.release.namespace, "other");
    // A change in the watched namespace comes; one elsewhere does not.
    drive(&manager, "reviews-canary", &[Move::StartDeploying]).await;
    manager
        .delete(
            &admin(),
            meshrelease::domain::service::ReleaseRef {
                mesh_id: MESH.into(),
                namespace: "other".into(),
                name: "reviews-canary".into(),
            },
            "cancel",
        )
        .await
        .unwrap();
    let change = next(&mut events).await;
    assert_eq!(
        (
            change.release.namespace.as_str(),
            change.release.status.phase
        ),
        ("other", Phase::Canceled)
    );
}
