//! One behaviour suite for every store backend.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::{Created, EventType, IdempotencyKey, ListQuery, ReleaseStore, StoreError};
use crate::domain::release::ReleaseStatus;
use crate::domain::service::ReleaseRef;
use crate::domain::strategy::{OnFailure, OnSuccess, Step, Strategy};
use crate::domain::{Phase, Release, ReleaseType};

pub(super) fn release(name: &str, service: &str) -> Release {
    let now = Utc::now();
    Release {
        mesh_id: "mesh".into(),
        namespace: "default".into(),
        name: name.into(),
        uid: Uuid::new_v4(),
        resource_version: 0,
        service_name: service.into(),
        cluster_id: "c".into(),
        deployment_name: "d".into(),
        version: "v2".into(),
        release_type: ReleaseType::Canary,
        gray_deployments: vec![],
        traffic_policy: Default::default(),
        strategy: None,
        generation: 1,
        status: ReleaseStatus::pending(now, vec![]),
    }
}

async fn create(store: &Arc<dyn ReleaseStore>, release: &Release) -> Result<Release, StoreError> {
    match store.create(release, None).await? {
        Created::New(r) => Ok(r),
        Created::Replayed(r) => panic!("unexpected replay of {}", r.name),
    }
}

fn query(limit: usize) -> ListQuery {
    ListQuery {
        mesh_id: "mesh".into(),
        namespace: None,
        service_name: None,
        phase: None,
        after: None,
        limit,
    }
}

pub(super) async fn stores_and_reads_back(store: Arc<dyn ReleaseStore>) {
    let stored = create(&store, &release("one-release", "reviews"))
        .await
        .unwrap();
    assert!(stored.resource_version > 0);
    assert_eq!(
        store.get("mesh", "default", "one-release").await.unwrap(),
        Some(stored)
    );
    assert_eq!(
        store.get("mesh", "other", "one-release").await.unwrap(),
        None
    );
}

pub(super) async fn names_are_unique_per_namespace(store: Arc<dyn ReleaseStore>) {
    create(&store, &release("same-name", "a")).await.unwrap();
    let again = store.create(&release("same-name", "b"), None).await;
    assert!(matches!(again, Err(StoreError::NameTaken)), "{again:?}");
    assert!(matches!(
        store.check_create(&release("same-name", "z")).await,
        Err(StoreError::NameTaken)
    ));
    let mut elsewhere = release("same-name", "a");
    elsewhere.namespace = "other".into();
    create(&store, &elsewhere).await.unwrap();
}

pub(super) async fn one_active_release_per_service(store: Arc<dyn ReleaseStore>) {
    let first = create(&store, &release("first-one", "reviews"))
        .await
        .unwrap();
    match store.create(&release("second-one", "reviews"), None).await {
        Err(StoreError::ServiceBusy { holder }) => assert_eq!(holder, "first-one"),
        other => panic!("expected ServiceBusy, got {other:?}"),
    }
    // Ending the first frees the service.
    let mut ended = first.clone();
    ended.status.phase = Phase::Ended;
    store.update(&ended, first.resource_version).await.unwrap();
    let second = create(&store, &release("second-one", "reviews"))
        .await
        .unwrap();
    let third = create(&store, &release("third-one", "ratings"))
        .await
        .unwrap();
    let mut elsewhere = release("other-mesh-one", "reviews");
    elsewhere.mesh_id = "other-mesh".into();
    create(&store, &elsewhere).await.unwrap();
    // What the driver works on: the active ones of the mesh, oldest first.
    assert_eq!(
        store.active_names("mesh").await.unwrap(),
        [ReleaseRef::of(&second), ReleaseRef::of(&third)]
    );
}

pub(super) async fn the_releases_whose_strategies_run_are_found_without_the_others(
    store: Arc<dyn ReleaseStore>,
) {
    let runs = |name: &str, service: &str, phase: Phase, strategy: bool| {
        let mut r = release(name, service);
        r.status.phase = phase;
        r.strategy = strategy.then(|| Strategy {
            steps: vec![Step::SetWeight(100)],
            analysis: Default::default(),
            on_success: OnSuccess::End,
            on_failure: OnFailure::Rollback,
        });
        r
    };
    let running = create(&store, &runs("runs-one", "reviews", Phase::Running, true))
        .await
        .unwrap();
    for (name, service, phase, strategy) in [
        ("no-strategy", "ratings", Phase::Running, false),
        ("deploying", "details", Phase::Deploying, true),
        ("failed", "product", Phase::Failed, true),
    ] {
        create(&store, &runs(name, service, phase, strategy))
            .await
            .unwrap();
    }
    let mut ended = runs("ended-one", "reviews-2", Phase::Running, true);
    ended.status.phase = Phase::Ended;
    create(&store, &ended).await.unwrap();
    assert_eq!(store.running_strategies("mesh").await.unwrap(), [running]);
    assert!(
        store
            .running_strategies("other-mesh")
            .await
            .unwrap()
            .is_empty()
    );
}

pub(super) async fn the_change_log_says_who_was_written_and_who_runs_a_strategy(
    store: Arc<dyn ReleaseStore>,
) {
    let start = store.snapshot("mesh", None).await.unwrap().revision;
    let mut steps = release("steps", "reviews");
    steps.status.phase = Phase::Deploying;
    steps.strategy = Some(Strategy {
        steps: vec![Step::SetWeight(100)],
        analysis: Default::default(),
        on_success: OnSuccess::End,
        on_failure: OnFailure::Rollback,
    });
    let steps = create(&store, &steps).await.unwrap();
    let mut plain = release("plain", "ratings");
    plain.status.phase = Phase::Running;
    create(&store, &plain).await.unwrap();
    let mut running = steps.clone();
    running.status.phase = Phase::Running;
    let running = store
        .update(&running, steps.resource_version)
        .await
        .unwrap();
    let mut ended = running.clone();
    ended.status.phase = Phase::Ended;
    let ended = store
        .update(&ended, running.resource_version)
        .await
        .unwrap();
    store
        .remove("mesh", "default", "steps", ended.resource_version)
        .await
        .unwrap();
    let mut elsewhere = release("elsewhere", "details");
    elsewhere.mesh_id = "other-mesh".into();
    create(&store, &elsewhere).await.unwrap();

    // A store may hold changes back while older writes are in flight.
    let written = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let written = store.written_after("mesh", start, 100).await.unwrap();
            if written.len() >= 5 {
                return written;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the five changes never became readable");
    let told: Vec<(&str, bool)> = written
        .iter()
        .map(|w| (w.release.name.as_str(), w.runs_strategy))
        .collect();
    assert_eq!(
        told,
        [
            ("steps", false),
            ("plain", false),
            ("steps", true),
            ("steps", false),
            ("steps", false),
        ]
    );
    assert!(written.iter().all(|w| w.release.mesh_id == "mesh"));
    // The same as the events, decoded, say.
    let events = store.events_after("mesh", None, start, 100).await.unwrap();
    let from_events: Vec<super::Written> = events.iter().map(super::Written::of).collect();
    assert_eq!(written, from_events);
    // From a revision on, and up to a limit, as the events are.
    let later = store
        .written_after("mesh", written[2].revision, 100)
        .await
        .unwrap();
    assert_eq!(later, written[3..]);
    let first = store.written_after("mesh", start, 2).await.unwrap();
    assert_eq!(first, written[..2]);
    // A resume point this store never gave is refused as the events' is
    // (the latest revision may move between the two: other tests write to
    // the same database).
    let beyond = written[4].revision + 1_000_000;
    let refused = |error: Option<StoreError>| match error {
        Some(StoreError::NotGiven {
            requested, first, ..
        }) => Some((requested, first)),
        _ => None,
    };
    let written_refused = refused(store.written_after("mesh", beyond, 10).await.err());
    assert!(
        written_refused.is_some(),
        "a resume point never given was taken"
    );
    assert_eq!(
        written_refused,
        refused(store.events_after("mesh", None, beyond, 10).await.err())
    );
}

pub(super) async fn updates_are_compare_and_swap(store: Arc<dyn ReleaseStore>) {
    let stored = create(&store, &release("cas-release", "reviews"))
        .await
        .unwrap();
    let mut changed = stored.clone();
    changed.version = "v3".into();
    let updated = store
        .update(&changed, stored.resource_version)
        .await
        .unwrap();
    assert!(updated.resource_version > stored.resource_version);
    match store.update(&changed, stored.resource_version).await {
        Err(StoreError::Stale { current }) => assert_eq!(current, updated.resource_version),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert!(matches!(
        store.update(&release("missing", "x"), 1).await,
        Err(StoreError::NotFound)
    ));
    // Only a release that is no longer active can be removed.
    assert!(matches!(
        store
            .remove("mesh", "default", "cas-release", updated.resource_version)
            .await,
        Err(StoreError::Stale { .. })
    ));
    let mut ended = updated.clone();
    ended.status.phase = Phase::Canceled;
    let ended = store
        .update(&ended, updated.resource_version)
        .await
        .unwrap();
    let removed = store
        .remove("mesh", "default", "cas-release", ended.resource_version)
        .await
        .unwrap();
    assert_eq!(removed.status.phase, Phase::Canceled);
    assert_eq!(
        store.get("mesh", "default", "cas-release").await.unwrap(),
        None
    );
}

pub(super) async fn lists_in_creation_order_by_keyset(store: Arc<dyn ReleaseStore>) {
    for i in 0..7 {
        let mut r = release(&format!("listed-{i}"), &format!("svc-{i}"));
        if i % 2 == 1 {
            r.namespace = "odd".into();
        }
        create(&store, &r).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut q = query(3);
    loop {
        let page = store.list(&q).await.unwrap();
        seen.extend(page.releases.iter().map(|r| r.name.clone()));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("listed-{i}")).collect();
    assert_eq!(seen, expected);

    let mut q = query(10);
    q.namespace = Some("odd".into());
    let page = store.list(&q).await.unwrap();
    assert_eq!(page.releases.len(), 3);
    assert_eq!(page.next, None);
    let mut q = query(10);
    q.service_name = Some("svc-4".into());
    q.phase = Some(Phase::Pending);
    assert_eq!(store.list(&q).await.unwrap().releases[0].name, "listed-4");

    // The phase filter among several phases: two releases move on.
    for (name, phase) in [
        ("listed-1", Phase::Running),
        ("listed-5", Phase::Running),
        ("listed-2", Phase::Failed),
    ] {
        let namespace = if name == "listed-1" || name == "listed-5" {
            "odd"
        } else {
            "default"
        };
        let mut moved = store.get("mesh", namespace, name).await.unwrap().unwrap();
        moved.status.phase = phase;
        store.update(&moved, moved.resource_version).await.unwrap();
    }
    let named = |phase: Phase| {
        let mut q = query(10);
        q.phase = Some(phase);
        let store = store.clone();
        async move {
            store
                .list(&q)
                .await
                .unwrap()
                .releases
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(named(Phase::Running).await, ["listed-1", "listed-5"]);
    assert_eq!(named(Phase::Failed).await, ["listed-2"]);
    assert_eq!(
        named(Phase::Pending).await,
        ["listed-0", "listed-3", "listed-4", "listed-6"]
    );
    assert!(named(Phase::Ended).await.is_empty());
}

pub(super) async fn events_follow_every_write_in_order(store: Arc<dyn ReleaseStore>) {
    let start = store.snapshot("mesh", None).await.unwrap().revision;
    let mut revisions = store.revisions();
    let a = create(&store, &release("event-a", "a")).await.unwrap();
    // Watchers are told of the create soon (at once for most stores).
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        revisions.wait_for(|r| *r >= a.resource_version),
    )
    .await
    .expect("the create's revision was never published")
    .unwrap();
    let mut ended = a.clone();
    ended.status.phase = Phase::Ended;
    let ended = store.update(&ended, a.resource_version).await.unwrap();
    store
        .remove("mesh", "default", "event-a", ended.resource_version)
        .await
        .unwrap();
    let mut elsewhere = release("event-b", "b");
    elsewhere.mesh_id = "other-mesh".into();
    create(&store, &elsewhere).await.unwrap();

    // A store may hold changes back while older writes (anyone's, on a
    // shared database) are in flight: wait for all three, boundedly.
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let events = store.events_after("mesh", None, start, 100).await.unwrap();
            if events.len() >= 3 {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the three changes never became readable");
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventType::Added, EventType::Modified, EventType::Deleted]
    );
    assert!(events.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(events[1].release.resource_version, events[1].revision);
    let later = store
        .events_after("mesh", None, events[0].revision, 100)
        .await
        .unwrap();
    assert_eq!(later.len(), 2);
    let snapshot = store.snapshot("other-mesh", None).await.unwrap();
    assert_eq!(snapshot.releases.len(), 1);
    let listed = snapshot.releases[0].resource_version;
    assert!(snapshot.revision >= listed || snapshot.reflected.contains(&listed));
}

pub(super) async fn idempotency_keys_replay_or_refuse(store: Arc<dyn ReleaseStore>) {
    let key = IdempotencyKey {
        subject: "bot".into(),
        token: "retry-1".into(),
        request_hash: "h1".into(),
    };
    let first = match store
        .create(&release("idem-one", "a"), Some(&key))
        .await
        .unwrap()
    {
        Created::New(r) => r,
        Created::Replayed(_) => panic!("first create replayed"),
    };
    // The same key and request: the first answer, nothing new stored.
    match store
        .create(&release("idem-one", "a"), Some(&key))
        .await
        .unwrap()
    {
        Created::Replayed(r) => assert_eq!(r, first),
        Created::New(_) => panic!("a retry stored again"),
    }
    let different = IdempotencyKey {
        request_hash: "h2".into(),
        ..key.clone()
    };
    assert!(matches!(
        store
            .create(&release("idem-two", "b"), Some(&different))
            .await,
        Err(StoreError::IdempotencyMismatch)
    ));
    // Another caller's key of the same text is another key.
    let other = IdempotencyKey {
        subject: "someone-else".into(),
        ..different
    };
    assert!(matches!(
        store.create(&release("idem-two", "b"), Some(&other)).await,
        Ok(Created::New(_))
    ));
}

pub(super) async fn racing_inserts_of_one_name_store_one(store: Arc<dyn ReleaseStore>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create(&release("contested", &format!("svc-{i}")), None)
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::NameTaken) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

macro_rules! store_test_suite {
    ($backend:ident, $make:expr $(, #[$attr:meta])?) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    $(#[$attr])?
                    async fn $name() {
                        let Some((store, _guard)) = ($make) else {
                            eprintln!("skipped: set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL suite");
                            return;
                        };
                        super::$name(store).await;
                    }
                };
            }

            case!(stores_and_reads_back);
            case!(names_are_unique_per_namespace);
            case!(one_active_release_per_service);
            case!(the_releases_whose_strategies_run_are_found_without_the_others);
            case!(the_change_log_says_who_was_written_and_who_runs_a_strategy);
            case!(updates_are_compare_and_swap);
            case!(lists_in_creation_order_by_keyset);
            case!(events_follow_every_write_in_order);
            case!(idempotency_keys_replay_or_refuse);
            case!(racing_inserts_of_one_name_store_one);
        }
    };
}

store_test_suite!(
    memory,
    Some((
        Arc::new(crate::store::MemoryStore::new()) as Arc<dyn ReleaseStore>,
        ()
    ))
);

store_test_suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(dir.path()).unwrap();
    Some((Arc::new(store) as Arc<dyn ReleaseStore>, dir))
});

store_test_suite!(
    postgres,
    postgres_store().await,
    #[cfg_attr(not(pg_tests), ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL suite")]
);

/// A schema of its own in the test database, dropped when the test ends.
pub(super) struct Schema {
    pub(super) url: String,
    pub(super) name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A PostgreSQL store in a fresh schema, when MESHRELEASE_TEST_DATABASE_URL is set.
pub(super) async fn postgres_store() -> Option<(Arc<dyn ReleaseStore>, Schema)> {
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").ok()?;
    let name = format!("mr_test_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let store = crate::store::PostgresStore::connect(&url, Some(&name), 8)
        .await
        .unwrap();
    Some((
        Arc::new(store) as Arc<dyn ReleaseStore>,
        Schema { url, name },
    ))
}

#[tokio::test]
async fn sqlite_keeps_releases_and_revisions_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stored = {
        let store: Arc<dyn ReleaseStore> =
            Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap());
        let stored = create(&store, &release("durable", "reviews"))
            .await
            .unwrap();
        store.close().await;
        stored
    };
    let store: Arc<dyn ReleaseStore> =
        Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap());
    assert_eq!(
        store.get("mesh", "default", "durable").await.unwrap(),
        Some(stored.clone())
    );
    let next = create(&store, &release("after-reopen", "ratings"))
        .await
        .unwrap();
    assert!(
        next.resource_version > stored.resource_version,
        "revisions must not restart"
    );
}

#[tokio::test]
async fn sqlite_reads_the_change_logs_bounds_through_its_key_not_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ReleaseStore> =
        Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap());
    let first = create(&store, &release("first", "reviews")).await.unwrap();
    let second = create(&store, &release("second", "ratings")).await.unwrap();
    store.close().await;
    let conn = rusqlite::Connection::open(dir.path().join(crate::store::DATABASE_FILE)).unwrap();
    let bounds: (Option<i64>, i64) = conn
        .query_row(super::sqlite::CHANGE_LOG_BOUNDS, [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        bounds,
        (
            Some(first.resource_version as i64),
            second.resource_version as i64
        )
    );
    // Read on every look at the log: a scan would cost each look as many
    // rows as events are kept (up to 100,000).
    let mut plan = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::sqlite::CHANGE_LOG_BOUNDS
        ))
        .unwrap();
    let steps: Vec<String> = plan
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        steps
            .iter()
            .filter(|s| s.contains("events"))
            .all(|s| !s.starts_with("SCAN")),
        "{steps:?}"
    );
    // With no event kept, the releases say how far revisions went.
    conn.execute("DELETE FROM events", []).unwrap();
    let bounds: (Option<i64>, i64) = conn
        .query_row(super::sqlite::CHANGE_LOG_BOUNDS, [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(bounds, (None, second.resource_version as i64));
}

#[tokio::test]
async fn the_sqlite_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    {
        let store: Arc<dyn ReleaseStore> =
            Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap());
        create(&store, &release("secretive", "reviews"))
            .await
            .unwrap();
        assert_eq!(mode(crate::store::DATABASE_FILE), 0o600);
        let wal = format!("{}-wal", crate::store::DATABASE_FILE);
        if dir.path().join(&wal).exists() {
            assert_eq!(mode(&wal), 0o600);
        }
        store.close().await;
    }
    // One left readable by others (an older version, a copy) is narrowed.
    std::fs::set_permissions(
        dir.path().join(crate::store::DATABASE_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let store = crate::store::SqliteStore::open(dir.path()).unwrap();
    assert_eq!(mode(crate::store::DATABASE_FILE), 0o600);
    store.close().await;
}
