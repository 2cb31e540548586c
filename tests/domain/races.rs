//! Writes that lose a race, and a store that is down: the in-memory store
//! behind a wrapper that makes a rival write just before the manager's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use meshrelease::domain::StatusUpdate;
use meshrelease::domain::error::DomainError;
use meshrelease::domain::mesh::Meshes;
use meshrelease::domain::phase::Move;
use meshrelease::domain::ports::{
    Created, Event, IdempotencyKey, ListQuery, Page, ReleaseStore, Snapshot, StoreError,
};
use meshrelease::domain::service::{ReleaseManager, ReleaseRef, UpdateRelease};
use meshrelease::domain::{Release, TrafficPolicy};
use meshrelease::store::MemoryStore;
use tokio::sync::watch;

use crate::support::*;

#[derive(Default)]
struct Racing {
    inner: MemoryStore,
    /// Updates still to be preceded by a rival write of the same release.
    rivals: AtomicUsize,
    /// Every read and write answers `Unavailable`.
    down: AtomicBool,
}

impl Racing {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("the database is restarting".into()))
        } else {
            Ok(())
        }
    }

    /// Another writer changes the release first (a client or a replica).
    async fn rival(&self, release: &Release) {
        let taken = self
            .rivals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if taken.is_ok() {
            let current = self
                .inner
                .get(&release.mesh_id, &release.namespace, &release.name)
                .await
                .unwrap()
                .expect("the release");
            self.inner
                .update(&current, current.resource_version)
                .await
                .expect("the rival's write");
        }
    }
}

#[async_trait]
impl ReleaseStore for Racing {
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.check()?;
        self.inner.create(release, idempotency).await
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        self.check()?;
        self.inner.get(mesh_id, namespace, name).await
    }

    async fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        self.check()?;
        self.inner.check_create(release).await
    }

    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError> {
        self.check()?;
        self.rival(release).await;
        self.inner.update(release, expected).await
    }

    async fn remove(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<Release, StoreError> {
        self.check()?;
        self.inner.remove(mesh_id, namespace, name, expected).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.check()?;
        self.inner.list(query).await
    }

    async fn active_names(&self, mesh_id: &str) -> Result<Vec<ReleaseRef>, StoreError> {
        self.check()?;
        self.inner.active_names(mesh_id).await
    }

    async fn running_strategies(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError> {
        self.check()?;
        self.inner.running_strategies(mesh_id).await
    }

    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        self.check()?;
        self.inner.snapshot(mesh_id, namespace).await
    }

    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.check()?;
        self.inner
            .events_after(mesh_id, namespace, revision, limit)
            .await
    }

    async fn record_checks(
        &self,
        uid: uuid::Uuid,
        results: &[meshrelease::domain::strategy::CheckResult],
    ) -> Result<(), StoreError> {
        self.inner.record_checks(uid, results).await
    }

    async fn checks(
        &self,
        uid: uuid::Uuid,
    ) -> Result<Vec<meshrelease::domain::strategy::CheckResult>, StoreError> {
        self.inner.checks(uid).await
    }

    fn revisions(&self) -> watch::Receiver<u64> {
        self.inner.revisions()
    }

    fn cursor_secret(&self) -> [u8; 32] {
        self.inner.cursor_secret()
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.check()
    }
}

fn racing() -> (ReleaseManager, Arc<Racing>) {
    let store = Arc::new(Racing::default());
    (
        ReleaseManager::new(Meshes::new([mesh()]), store.clone()),
        store,
    )
}

fn new_template(name: &str, image: &str) -> UpdateRelease {
    let mut draft = draft(name, "reviews");
    draft.gray_deployments[0].template = Some(template(image));
    UpdateRelease {
        target: target(name),
        draft,
        dry_run: false,
    }
}

#[tokio::test]
async fn an_unpinned_update_that_loses_a_race_is_made_again_on_the_release_as_it_is_now() {
    let (manager, store) = racing();
    create(&manager, "reviews-canary", "reviews").await;
    store.rivals.store(2, Ordering::SeqCst);
    let updated = manager
        .update(
            &admin(),
            new_template("reviews-canary", "registry.example/reviews:2.1"),
        )
        .await
        .expect("retried until it won");
    assert_eq!(store.rivals.load(Ordering::SeqCst), 0, "both rivals wrote");
    assert_eq!(updated.generation, 2);
    assert_eq!(
        updated.gray_deployments[0].template,
        template("registry.example/reviews:2.1")
    );
}

#[tokio::test]
async fn a_pinned_update_that_loses_a_race_is_aborted() {
    let (manager, store) = racing();
    let created = create(&manager, "reviews-canary", "reviews").await;
    store.rivals.store(1, Ordering::SeqCst);
    let mut pinned = new_template("reviews-canary", "registry.example/reviews:2.1");
    pinned.draft.resource_version = created.resource_version.to_string();
    let lost = manager.update(&admin(), pinned).await;
    assert!(
        matches!(&lost, Err(DomainError::Aborted(m)) if m.contains("changed while updating")),
        "{lost:?}"
    );
    let now = manager.read(&target("reviews-canary")).await.unwrap();
    assert_eq!(now.generation, 1, "the client's change was not written");
}

#[tokio::test]
async fn a_write_that_always_loses_gives_up_and_says_retry() {
    let (manager, store) = racing();
    create(&manager, "reviews-canary", "reviews").await;
    store.rivals.store(1_000, Ordering::SeqCst);
    let busy = manager
        .update(
            &admin(),
            new_template("reviews-canary", "registry.example/reviews:2.1"),
        )
        .await;
    assert!(
        matches!(&busy, Err(DomainError::Aborted(m)) if m.contains("changing too often")),
        "{busy:?}"
    );
    let attempts = 1_000 - store.rivals.load(Ordering::SeqCst);
    assert!(
        (2..=16).contains(&attempts),
        "a few attempts, not one and not endless: {attempts}"
    );
    let cancel = manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await;
    assert!(
        matches!(&cancel, Err(DomainError::Aborted(m)) if m.contains("changing too often")),
        "{cancel:?}"
    );
}

#[tokio::test]
async fn a_cancel_and_a_patch_that_lose_a_race_are_made_again() {
    let (manager, store) = racing();
    running(&manager, "reviews-canary", "reviews").await;
    store.rivals.store(1, Ordering::SeqCst);
    let patch = weight_patch("reviews-canary", 0);
    // The same weight: nothing to write, so nothing to lose.
    manager.patch(&admin(), patch.clone()).await.unwrap();
    assert_eq!(store.rivals.load(Ordering::SeqCst), 1);
    let patch = weight_patch("reviews-canary", 20);
    let patched = manager.patch(&admin(), patch).await.unwrap();
    assert_eq!(patched.traffic_policy, TrafficPolicy::Weight(20));
    assert_eq!(store.rivals.load(Ordering::SeqCst), 0);

    store.rivals.store(1, Ordering::SeqCst);
    let canceling = manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await;
    assert!(
        matches!(&canceling, Err(DomainError::FailedPrecondition(_))),
        "weight 20: the original must hold all traffic first: {canceling:?}"
    );
    manager
        .patch(&admin(), weight_patch("reviews-canary", 0))
        .await
        .unwrap();
    store.rivals.store(1, Ordering::SeqCst);
    let canceling = manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await
        .expect("retried");
    assert_eq!(
        canceling.status.phase,
        meshrelease::domain::Phase::Canceling
    );
    assert_eq!(store.rivals.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_drivers_status_write_never_retries_over_a_newer_write() {
    let (manager, store) = racing();
    let created = create(&manager, "reviews-canary", "reviews").await;
    store.rivals.store(1, Ordering::SeqCst);
    let lost = manager
        .write_status(
            &target("reviews-canary"),
            created.resource_version,
            StatusUpdate {
                step: Some(Move::StartDeploying),
                ..StatusUpdate::default()
            },
        )
        .await;
    assert!(matches!(lost, Err(DomainError::Aborted(_))), "{lost:?}");
    let now = manager.read(&target("reviews-canary")).await.unwrap();
    assert_eq!(now.status.phase, meshrelease::domain::Phase::Pending);
}

#[tokio::test]
async fn a_store_that_is_down_answers_unavailable_not_internal() {
    let (manager, store) = racing();
    create(&manager, "reviews-canary", "reviews").await;
    store.down.store(true, Ordering::SeqCst);
    let get = manager.get(&admin(), target("reviews-canary")).await;
    assert!(
        matches!(&get, Err(DomainError::Unavailable(m)) if m.contains("restarting")),
        "{get:?}"
    );
    let list = manager
        .list(
            &admin(),
            meshrelease::domain::service::ListReleases {
                mesh_id: MESH.into(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(list, Err(DomainError::Unavailable(_))), "{list:?}");
    let made = manager
        .create(&admin(), create_request(draft("ratings-canary", "ratings")))
        .await;
    assert!(matches!(made, Err(DomainError::Unavailable(_))), "{made:?}");
    let watch = manager
        .watch(
            &admin(),
            meshrelease::domain::service::WatchReleases {
                mesh_id: MESH.into(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(watch, Err(DomainError::Unavailable(_))),
        "{watch:?}"
    );
}
