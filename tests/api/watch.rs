//! WatchReleases over gRPC: the current releases, then every change from
//! either protocol in commit order; resuming without gaps or duplicates.

use std::sync::Arc;
use std::time::Duration;

use meshrelease::pb::asm::v2 as pb;
use meshrelease::store::MemoryStore;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

type Events = tonic::Streaming<pb::WatchEvent>;

async fn watch(
    app: &TestApp,
    namespace: &str,
    resource_version: &str,
) -> Result<Events, tonic::Status> {
    app.grpc()
        .await
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            namespace: namespace.into(),
            resource_version: resource_version.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The next event as (type, name, phase, resourceVersion).
async fn next(events: &mut Events) -> (String, String, String, String) {
    let event = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("no event came")
        .expect("the stream ended")
        .expect("the stream failed");
    let release = event.release.unwrap();
    assert_eq!(
        release.metadata.as_ref().unwrap().resource_version,
        event.resource_version
    );
    (
        event.r#type,
        release.metadata.unwrap().name,
        release.status.unwrap().phase,
        event.resource_version,
    )
}

#[tokio::test]
async fn a_watch_sees_the_current_releases_then_changes_from_both_protocols_in_order() {
    let app = spawn_app().await;
    app.create(&release_body("before-watch", "reviews")).await;
    let mut events = watch(&app, "", "").await.unwrap();
    let first = next(&mut events).await;
    assert_eq!(
        (first.0.as_str(), first.1.as_str()),
        ("ADDED", "before-watch")
    );

    app.grpc()
        .await
        .create_release(authed(grpc_request("by-grpc", "ratings")))
        .await
        .unwrap();
    app.delete("before-watch", Some("cancel")).await;
    app.create(&release_body("by-rest", "details")).await;
    app.delete("before-watch", None).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut events).await);
    }
    let summary: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ADDED", "by-grpc", "Pending"),
            ("MODIFIED", "before-watch", "Canceled"),
            ("ADDED", "by-rest", "Pending"),
            ("DELETED", "before-watch", "Canceled"),
        ]
    );
    let versions: Vec<u64> = seen.iter().map(|e| e.3.parse().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[tokio::test]
async fn a_resumed_watch_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let mut events = watch(&app, "default", "").await.unwrap();
    app.create(&release_body("resume-one", "a-svc")).await;
    app.create(&release_body("resume-two", "b-svc")).await;
    next(&mut events).await;
    let (_, _, _, last) = next(&mut events).await;
    drop(events); // the client goes away

    app.create(&release_body("resume-three", "c-svc")).await;
    app.delete("resume-one", Some("cancel")).await;

    let mut events = watch(&app, "default", &last).await.unwrap();
    let a = next(&mut events).await;
    let b = next(&mut events).await;
    assert_eq!((a.0.as_str(), a.1.as_str()), ("ADDED", "resume-three"));
    assert_eq!(
        (b.0.as_str(), b.1.as_str(), b.2.as_str()),
        ("MODIFIED", "resume-one", "Canceled")
    );
    // Nothing else is pending: the next change is the next event.
    app.create(&release_body("resume-four", "d-svc")).await;
    assert_eq!(next(&mut events).await.1, "resume-four");
}

#[tokio::test]
async fn a_watch_of_one_namespace_sees_only_it() {
    let app = spawn_app().await;
    let mut events = watch(&app, "staging", "").await.unwrap();
    app.create(&release_body("not-staging", "reviews")).await;
    let mut body = release_body("in-staging", "reviews");
    body["metadata"]["namespace"] = serde_json::json!("staging");
    app.create_in("staging", &body).await;
    assert_eq!(next(&mut events).await.1, "in-staging");
}

#[tokio::test]
async fn a_resume_point_too_old_is_refused_clearly() {
    let app = spawn_app_on(Arc::new(MemoryStore::with_event_retention(3))).await;
    let mut first = String::new();
    for i in 0..6 {
        let (_, body) = json_of(
            app.create(&release_body(&format!("old-{i}"), &format!("svc-{i}")))
                .await,
        )
        .await;
        if i == 0 {
            first = body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }
    let err = watch(&app, "", &first).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010007"
    );
    assert!(err.message().contains("too old"), "{}", err.message());

    let err = watch(&app, "", "not-a-number").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_watch_needs_a_token_and_permission() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let request = || pb::WatchReleasesRequest {
        mesh_id: MESH.into(),
        ..Default::default()
    };
    let err = client
        .watch_releases(tonic::Request::new(request()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .watch_releases(with_token(request(), OTHER_READER_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_watcher_that_never_reads_does_not_slow_writers() {
    let app = spawn_app().await;
    // Opened and never read.
    let _idle = watch(&app, "", "").await.unwrap();
    for i in 0..300 {
        // A writer held up by the idle watcher would show as this timeout,
        // not as a hung test.
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            app.create(&release_body(
                &format!("flood-{i:03}"),
                &format!("flood-{i}"),
            )),
        )
        .await
        .expect("a create was held up by a watcher that does not read")
        .status();
        assert_eq!(status, 200);
    }
    // A second watcher still gets everything.
    let mut events = watch(&app, "", "").await.unwrap();
    for _ in 0..300 {
        next(&mut events).await;
    }
}

#[tokio::test]
async fn changes_never_overtake_the_initial_releases() {
    let app = spawn_app().await;
    for i in 0..150 {
        app.create(&release_body(
            &format!("initial-{i:03}"),
            &format!("svc-{i}"),
        ))
        .await;
    }
    let mut events = watch(&app, "", "").await.unwrap();
    app.create(&release_body("right-after", "late-svc")).await;
    for i in 0..150 {
        let (kind, name, _, _) = next(&mut events).await;
        assert_eq!((kind.as_str(), name), ("ADDED", format!("initial-{i:03}")));
    }
    assert_eq!(next(&mut events).await.1, "right-after");
}

/// Over gRPC (OUT_OF_RANGE) and REST (410), a resume point the store no
/// longer keeps is refused with the contract's code; one it keeps resumes.
async fn too_old_is_refused_and_kept_resumes(app: &TestApp, too_old: u64, oldest_kept: u64) {
    let err = watch(app, "", &too_old.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010007"
    );
    let (status, body) = json_of(
        app.http
            .get(format!(
                "{}/v2/meshes/{MESH}/releases:watch?resourceVersion={too_old}",
                app.base
            ))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["errorCode"], "ASM.01010007");
    let mut events = watch(app, "", &(oldest_kept - 1).to_string())
        .await
        .unwrap();
    assert_eq!(next(&mut events).await.3, oldest_kept.to_string());
}

/// The resourceVersions of `n` releases created now.
async fn created(app: &TestApp, n: usize) -> Vec<u64> {
    let mut revisions = Vec::new();
    for i in 0..n {
        let (status, body) = json_of(
            app.create(&release_body(&format!("old-{i}"), &format!("svc-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        revisions.push(
            body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    revisions
}

#[tokio::test]
async fn a_resume_point_older_than_sqlite_keeps_is_410() {
    let app = spawn_sqlite_app().await;
    let revisions = created(&app, 4).await;
    // As the store prunes its change log past the retention (100,000
    // changes), here done by hand: the first two changes are gone.
    let db =
        rusqlite::Connection::open(app.data_dir.path().join(meshrelease::store::DATABASE_FILE))
            .unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        db.execute(
            "DELETE FROM events WHERE revision <= ?1",
            [revisions[1] as i64]
        )
        .unwrap(),
        2
    );
    too_old_is_refused_and_kept_resumes(&app, revisions[0], revisions[2]).await;
}

/// Refused as an expired one (410, OUT_OF_RANGE), so that clients list
/// again: over gRPC and REST.
async fn assert_not_resumable(app: &TestApp, revision: &str) {
    let err = watch(app, "", revision).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{revision}: {err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010007"
    );
    assert!(
        err.message().contains("not one this service gave"),
        "{}",
        err.message()
    );
    let (status, body) = json_of(
        app.http
            .get(format!(
                "{}/v2/meshes/{MESH}/releases:watch?resourceVersion={revision}",
                app.base
            ))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410, "{revision}: {body}");
    assert_eq!(body["errorCode"], "ASM.01010007");
}

/// On whichever store the suite runs on (memory, SQLite, PostgreSQL).
#[tokio::test]
async fn a_resume_point_this_service_never_gave_is_410_not_a_silent_stream() {
    let app = spawn_app().await;
    // A fresh store: any resourceVersion is one it never gave.
    assert_not_resumable(&app, "999").await;
    let revisions = created(&app, 2).await;
    let latest = revisions[1];
    // Past the latest. On PostgreSQL a revision is the database's
    // transaction id (plus the store's offset), which every session of
    // the database takes, here the other tests': the store's latest is
    // the newest transaction id, so only far past it is never given.
    let past = if app.store.is_postgres() {
        1_000_000_000
    } else {
        1
    };
    assert_not_resumable(&app, &(latest + past).to_string()).await;
    assert_not_resumable(&app, &(latest + past * 1_000).to_string()).await;
    // The latest one it gave resumes (and waits for the next change).
    let mut events = watch(&app, "", &latest.to_string()).await.unwrap();
    app.create(&release_body("after-resume", "after-svc")).await;
    assert_eq!(next(&mut events).await.1, "after-resume");

    // The data replaced by another store (a new data directory, another
    // database): the resume point of the old one is refused, whether the
    // new store's revisions are larger or smaller.
    let other = spawn_app().await;
    created(&other, 3).await;
    for revision in &revisions {
        assert_not_resumable(&other, &revision.to_string()).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn a_resume_point_older_than_postgresql_keeps_is_410() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let store = Arc::new(
        meshrelease::store::PostgresStore::connect(&url, None, 4)
            .await
            .unwrap(),
    );
    let app = spawn_app_on(store.clone()).await;
    let mut revisions = Vec::new();
    for i in 0..4 {
        let (status, body) = json_of(
            app.create(&release_body(&format!("old-{i}"), &format!("svc-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        revisions.push(
            body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    // The store's own pruning, keeping the newest two changes.
    store.prune_change_log(2).await.unwrap();
    too_old_is_refused_and_kept_resumes(&app, revisions[0], revisions[2]).await;
    app.stop().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_grpc_watch_ends_unavailable_when_the_service_stops() {
    let app = spawn_app().await;
    app.create(&release_body("watched", "reviews")).await;
    let mut events = watch(&app, "", "").await.unwrap();
    assert_eq!(next(&mut events).await.1, "watched");
    let stopping = tokio::spawn(app.stop());
    // Not a clean end (None): UNAVAILABLE, so the client reconnects.
    let ended = tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .expect("the stream did not end within the drain");
    let status = match ended {
        Some(Err(status)) => status,
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the service stops")
        .unwrap();
}
