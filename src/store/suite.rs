//! One behaviour suite for every store backend.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::{ReleaseStore, StoreError};
use crate::domain::release::ReleaseStatus;
use crate::domain::{Phase, Release, ReleaseType};

pub(super) fn release(name: &str, service: &str) -> Release {
    let now = Utc::now();
    Release {
        mesh_id: "mesh".into(),
        namespace: "default".into(),
        name: name.into(),
        uid: Uuid::new_v4(),
        service_name: service.into(),
        cluster_id: "c".into(),
        deployment_name: "d".into(),
        version: "v2".into(),
        release_type: ReleaseType::Canary,
        gray_deployments: vec![],
        status: ReleaseStatus {
            phase: Phase::Pending,
            start_time: now,
            update_time: now,
            deployment: None,
            gray_deployments: vec![],
        },
    }
}

pub(super) async fn stores_and_reads_back(store: Arc<dyn ReleaseStore>) {
    let r = release("one-release", "reviews");
    store.insert(&r).await.unwrap();
    assert_eq!(
        store.get("mesh", "default", "one-release").await.unwrap(),
        Some(r)
    );
    assert_eq!(
        store.get("mesh", "other", "one-release").await.unwrap(),
        None
    );
}

pub(super) async fn names_are_unique_per_namespace(store: Arc<dyn ReleaseStore>) {
    store.insert(&release("same-name", "a")).await.unwrap();
    let again = store.insert(&release("same-name", "b")).await;
    assert!(matches!(again, Err(StoreError::NameTaken)), "{again:?}");
    let mut elsewhere = release("same-name", "a");
    elsewhere.namespace = "other".into();
    store.insert(&elsewhere).await.unwrap();
}

pub(super) async fn one_active_release_per_service(store: Arc<dyn ReleaseStore>) {
    store
        .insert(&release("first-one", "reviews"))
        .await
        .unwrap();
    match store.insert(&release("second-one", "reviews")).await {
        Err(StoreError::ServiceBusy { holder }) => assert_eq!(holder, "first-one"),
        other => panic!("expected ServiceBusy, got {other:?}"),
    }
    let mut ended = release("ended-one", "reviews");
    ended.status.phase = Phase::Ended;
    store.insert(&ended).await.unwrap();
    assert!(
        store
            .get("mesh", "default", "second-one")
            .await
            .unwrap()
            .is_none()
    );
}

pub(super) async fn racing_inserts_of_one_name_store_one(store: Arc<dyn ReleaseStore>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert(&release("contested", &format!("svc-{i}")))
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::NameTaken) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

macro_rules! store_test_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn stores_and_reads_back() {
                let (store, _guard) = $make;
                super::stores_and_reads_back(store).await;
            }

            #[tokio::test]
            async fn names_are_unique_per_namespace() {
                let (store, _guard) = $make;
                super::names_are_unique_per_namespace(store).await;
            }

            #[tokio::test]
            async fn one_active_release_per_service() {
                let (store, _guard) = $make;
                super::one_active_release_per_service(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_inserts_of_one_name_store_one() {
                let (store, _guard) = $make;
                super::racing_inserts_of_one_name_store_one(store).await;
            }
        }
    };
}

store_test_suite!(
    memory,
    (
        Arc::new(crate::store::MemoryStore::new()) as Arc<dyn ReleaseStore>,
        ()
    )
);

store_test_suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(dir.path()).unwrap();
    (Arc::new(store) as Arc<dyn ReleaseStore>, dir)
});

#[tokio::test]
async fn sqlite_keeps_releases_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = release("durable", "reviews");
    {
        let store = crate::store::SqliteStore::open(dir.path()).unwrap();
        store.insert(&r).await.unwrap();
        store.close().await;
    }
    let store = crate::store::SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        store.get("mesh", "default", "durable").await.unwrap(),
        Some(r)
    );
}
