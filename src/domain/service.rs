//! The release operations, shared by gRPC and REST: authorization, mesh
//! lookup, validation, naming, phases, and the store's conflict rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::authz::{Action, Principal};
use super::cursor::{self, Cursor};
use super::error::{ApiError, Violation};
use super::mesh::{Mesh, Meshes};
use super::release::{Phase, Release, ReleaseDraft, ReleaseStatus};
use super::validation::{self, ValidRelease};
use crate::store::{Created, Event, IdempotencyKey, ListQuery, ReleaseStore, StoreError};

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Events a watcher may have queued before its stream waits for it.
const WATCH_BUFFER: usize = 64;
/// Events read from the store at a time for one watcher.
const WATCH_BATCH: usize = 256;
/// Attempts of a read-modify-write that lost a race, when the client did not
/// pin a resourceVersion.
const WRITE_ATTEMPTS: usize = 8;

/// CreateRelease as the domain receives it from either protocol.
#[derive(Debug, Clone, Default)]
pub struct CreateRelease {
    pub mesh_id: String,
    pub namespace: String,
    pub draft: ReleaseDraft,
    pub dry_run: bool,
    /// The client's request id for safe retries (`X-Client-Token`).
    pub client_token: Option<String>,
}

/// Names one release.
#[derive(Debug, Clone, Default)]
pub struct ReleaseRef {
    pub mesh_id: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateRelease {
    pub target: ReleaseRef,
    pub draft: ReleaseDraft,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListReleases {
    pub mesh_id: String,
    pub namespace: Option<String>,
    pub limit: i64,
    pub continue_token: String,
    pub service_name: Option<String>,
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePage {
    pub releases: Vec<Release>,
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct WatchReleases {
    pub mesh_id: String,
    pub namespace: Option<String>,
    /// Resume after this resourceVersion; empty to start from the current
    /// releases.
    pub resource_version: String,
}

pub struct ReleaseManager {
    meshes: Meshes,
    store: Arc<dyn ReleaseStore>,
    stopping: watch::Sender<bool>,
    /// Watch streams open now.
    watchers: Arc<AtomicUsize>,
}

impl ReleaseManager {
    pub fn new(meshes: Meshes, store: Arc<dyn ReleaseStore>) -> Self {
        Self {
            meshes,
            store,
            stopping: watch::channel(false).0,
            watchers: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ReleaseStore> {
        &self.store
    }

    /// Watch streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Ends every watch stream (the server is shutting down).
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    fn mesh(
        &self,
        principal: &Principal,
        action: Action,
        mesh_id: &str,
    ) -> Result<&Mesh, ApiError> {
        let mesh = self.meshes.get(mesh_id);
        // Permission first: a caller learns nothing of meshes it may not use.
        if !principal.allows(action, mesh_id, mesh) {
            return Err(ApiError::PermissionDenied {
                subject: principal.subject.clone(),
                action,
                mesh_id: mesh_id.to_owned(),
            });
        }
        mesh.ok_or_else(|| ApiError::NotFound(format!("mesh {mesh_id:?} not found")))
    }

    /// Validates and stores a new release; it is durable when this returns Ok.
    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateRelease,
    ) -> Result<Release, ApiError> {
        let mesh = self.mesh(principal, Action::CreateRelease, &request.mesh_id)?;
        let key = match &request.client_token {
            Some(token) => Some(idempotency_key(principal, token, &request)?),
            None => None,
        };
        let valid = validation::validate(&request.draft, mesh, &request.namespace)
            .map_err(ApiError::invalid)?;
        let now = now();
        let release = new_release(request.mesh_id, request.namespace, valid, now);
        if request.dry_run {
            self.store
                .check_create(&release)
                .await
                .map_err(|e| conflict(e, &release))?;
            return Ok(release);
        }
        match self.store.create(&release, key.as_ref()).await {
            Ok(Created::New(stored) | Created::Replayed(stored)) => Ok(stored),
            Err(StoreError::IdempotencyMismatch) => Err(ApiError::AlreadyExists(format!(
                "X-Client-Token {:?} was already used, within the last 24 hours, for a different request",
                request.client_token.unwrap_or_default()
            ))),
            Err(e) => Err(conflict(e, &release)),
        }
    }

    pub async fn get(
        &self,
        principal: &Principal,
        target: ReleaseRef,
    ) -> Result<Release, ApiError> {
        self.mesh(principal, Action::GetRelease, &target.mesh_id)?;
        self.load(&target).await
    }

    async fn load(&self, target: &ReleaseRef) -> Result<Release, ApiError> {
        self.store
            .get(&target.mesh_id, &target.namespace, &target.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "release {:?} not found in mesh {:?}, namespace {:?}",
                    target.name, target.mesh_id, target.namespace
                ))
            })
    }

    pub async fn list(
        &self,
        principal: &Principal,
        request: ListReleases,
    ) -> Result<ReleasePage, ApiError> {
        self.mesh(principal, Action::ListReleases, &request.mesh_id)?;
        let mut violations = Vec::new();
        let limit = match request.limit {
            n if n < 0 => {
                violations.push(Violation::new(
                    "limit",
                    format!("must not be negative, got {n}"),
                ));
                0
            }
            0 => DEFAULT_PAGE,
            n => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
        };
        let phase = match request.phase.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(text) => {
                let phase = Phase::parse(text);
                if phase.is_none() {
                    let known: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
                    violations.push(Violation::new(
                        "phase",
                        format!("must be one of {}", known.join(", ")),
                    ));
                }
                phase
            }
        };
        let namespace = request.namespace.filter(|ns| !ns.is_empty());
        let service_name = request.service_name.filter(|s| !s.is_empty());
        let list = format!(
            "{}|{}|{}|{}",
            request.mesh_id,
            namespace.as_deref().unwrap_or_default(),
            service_name.as_deref().unwrap_or_default(),
            phase.map(Phase::as_str).unwrap_or_default()
        );
        let secret = self.store.cursor_secret();
        let after = if request.continue_token.is_empty() {
            None
        } else {
            match cursor::decode(&request.continue_token, &secret, &list) {
                Some(c) => Some(c.after),
                None => {
                    violations.push(Violation::new(
                        "continue",
                        "is not a continue token of this list (it was changed, or belongs to another mesh, namespace or filter)",
                    ));
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(ApiError::invalid(violations));
        }
        let page = self
            .store
            .list(&ListQuery {
                mesh_id: request.mesh_id,
                namespace,
                service_name,
                phase,
                after,
                limit,
            })
            .await
            .map_err(store_error)?;
        Ok(ReleasePage {
            releases: page.releases,
            continue_token: page
                .next
                .map(|after| cursor::encode(&Cursor { after, list }, &secret)),
        })
    }

    /// Replaces the gray Deployment templates of an active release.
    pub async fn update(
        &self,
        principal: &Principal,
        request: UpdateRelease,
    ) -> Result<Release, ApiError> {
        let target = &request.target;
        let mesh = self.mesh(principal, Action::UpdateRelease, &target.mesh_id)?;
        let mut violations = Vec::new();
        if !request.draft.name.is_empty() && request.draft.name != target.name {
            violations.push(Violation::new(
                "metadata.name",
                format!(
                    "is immutable: must be {:?}, the name in the path",
                    target.name
                ),
            ));
        }
        let pinned = match request.draft.resource_version.as_str() {
            "" => None,
            text => match text.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    violations.push(Violation::new(
                        "metadata.resourceVersion",
                        "is not a resourceVersion of this service",
                    ));
                    None
                }
            },
        };
        let valid = match validation::validate(&request.draft, mesh, &target.namespace) {
            Ok(valid) if violations.is_empty() => valid,
            Ok(_) => return Err(ApiError::invalid(violations)),
            Err(mut more) => {
                violations.append(&mut more);
                return Err(ApiError::invalid(violations));
            }
        };
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(target).await?;
            let immutable = [
                (
                    "spec.serviceName",
                    &valid.service_name,
                    &current.service_name,
                ),
                ("spec.clusterID", &valid.cluster_id, &current.cluster_id),
                (
                    "spec.deploymentName",
                    &valid.deployment_name,
                    &current.deployment_name,
                ),
                ("spec.version", &valid.version, &current.version),
            ];
            let mut changed: Vec<Violation> = immutable
                .iter()
                .filter(|(_, new, old)| new != old)
                .map(|(field, _, old)| {
                    Violation::new(*field, format!("is immutable: must stay {old:?}"))
                })
                .collect();
            if valid.release_type != current.release_type {
                changed.push(Violation::new(
                    "spec.type",
                    format!(
                        "is immutable: must stay {:?}",
                        current.release_type.as_str()
                    ),
                ));
            }
            if !changed.is_empty() {
                return Err(ApiError::invalid(changed));
            }
            if !current.status.phase.is_active() {
                return Err(ApiError::FailedPrecondition(format!(
                    "release {:?} is {} and can no longer be updated",
                    current.name,
                    current.status.phase.as_str()
                )));
            }
            if let Some(pinned) = pinned.filter(|p| *p != current.resource_version) {
                return Err(stale(&current, pinned));
            }
            let mut next = current.clone();
            next.gray_deployments = valid.gray_deployments.clone();
            next.status.gray_deployments = valid.completed.clone();
            next.status.update_time = later_than(current.status.update_time);
            if request.dry_run {
                return Ok(next);
            }
            match self.store.update(&next, current.resource_version).await {
                Ok(stored) => return Ok(stored),
                Err(StoreError::Stale { .. }) if pinned.is_none() => continue,
                Err(StoreError::Stale { current: now_at }) => {
                    return Err(ApiError::Aborted(format!(
                        "release {:?} changed while updating: its resourceVersion is now {now_at}",
                        current.name
                    )));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(busy(target))
    }

    /// `cancel` or `end` an active release; remove one that is over.
    pub async fn delete(
        &self,
        principal: &Principal,
        target: ReleaseRef,
        action: &str,
    ) -> Result<Release, ApiError> {
        self.mesh(principal, Action::DeleteRelease, &target.mesh_id)?;
        let ending = match action {
            "" => None,
            "cancel" => Some(Phase::Canceled),
            "end" => Some(Phase::Ended),
            other => {
                return Err(ApiError::invalid_field(
                    "action",
                    format!("must be cancel or end, got {other:?}"),
                ));
            }
        };
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(&target).await?;
            let outcome = if current.status.phase.is_active() {
                let Some(phase) = ending else {
                    return Err(ApiError::invalid_field(
                        "action",
                        format!(
                            "is required: release {:?} is active; cancel (the original version keeps all traffic) or end (the gray version takes over)",
                            current.name
                        ),
                    ));
                };
                let mut next = current.clone();
                next.status.phase = phase;
                next.status.update_time = later_than(current.status.update_time);
                self.store.update(&next, current.resource_version).await
            } else {
                self.store
                    .remove(
                        &target.mesh_id,
                        &target.namespace,
                        &target.name,
                        current.resource_version,
                    )
                    .await
            };
            match outcome {
                Ok(release) => return Ok(release),
                Err(StoreError::Stale { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(busy(&target))
    }

    /// The current releases (as ADDED events), then every change, in commit
    /// order; or, with a resourceVersion, every change after it. The stream
    /// ends when the receiver is dropped or the service shuts down.
    pub async fn watch(
        &self,
        principal: &Principal,
        request: WatchReleases,
    ) -> Result<mpsc::Receiver<Result<Event, ApiError>>, ApiError> {
        self.mesh(principal, Action::ListReleases, &request.mesh_id)?;
        let resume = match request.resource_version.as_str() {
            "" => None,
            text => Some(text.parse::<u64>().map_err(|_| {
                ApiError::invalid_field(
                    "resourceVersion",
                    "is not a resourceVersion of this service",
                )
            })?),
        };
        let namespace = request.namespace.filter(|ns| !ns.is_empty());
        let store = self.store.clone();
        let mut revisions = store.revisions();
        let mut stopping = self.stopping.subscribe();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let mut initial: Vec<Event> = Vec::new();
        let mut last = match resume {
            Some(revision) => {
                // Refuse a point too old now, rather than in the stream.
                store
                    .events_after(&request.mesh_id, namespace.as_deref(), revision, 1)
                    .await
                    .map_err(store_error)?;
                revision
            }
            None => {
                let (releases, at) = store
                    .snapshot(&request.mesh_id, namespace.as_deref())
                    .await
                    .map_err(store_error)?;
                initial = releases
                    .into_iter()
                    .map(|release| Event {
                        revision: release.resource_version,
                        kind: crate::store::EventType::Added,
                        release,
                    })
                    .collect();
                at
            }
        };
        let mesh_id = request.mesh_id;
        let watching = WatcherCount::enter(&self.watchers);
        tokio::spawn(async move {
            let _watching = watching;
            // The current releases first, then the changes after them, from
            // this one task so that nothing can overtake them.
            for event in initial {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                revisions.borrow_and_update();
                let events = match store
                    .events_after(&mesh_id, namespace.as_deref(), last, WATCH_BATCH)
                    .await
                {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = sender.send(Err(store_error(e))).await;
                        return;
                    }
                };
                if events.is_empty() {
                    tokio::select! {
                        changed = revisions.changed() => if changed.is_err() { return },
                        _ = stopping.wait_for(|s| *s) => return,
                        () = sender.closed() => return,
                    }
                    continue;
                }
                for event in events {
                    last = event.revision;
                    // Waits for a slow watcher: only its own stream slows.
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }
}

/// One open watch stream, counted while it lives.
struct WatcherCount(Arc<AtomicUsize>);

impl WatcherCount {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now() -> DateTime<Utc> {
    // Milliseconds: the JSON form then has a fixed, short fraction.
    let now = Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now)
}

/// Now, but strictly after `previous`, so that updateTime always advances.
fn later_than(previous: DateTime<Utc>) -> DateTime<Utc> {
    now().max(previous + TimeDelta::milliseconds(1))
}

fn new_release(
    mesh_id: String,
    namespace: String,
    valid: ValidRelease,
    now: DateTime<Utc>,
) -> Release {
    Release {
        mesh_id,
        namespace,
        name: valid.name,
        uid: Uuid::new_v4(),
        resource_version: 0,
        service_name: valid.service_name,
        cluster_id: valid.cluster_id,
        deployment_name: valid.deployment_name,
        version: valid.version,
        release_type: valid.release_type,
        gray_deployments: valid.gray_deployments,
        status: ReleaseStatus {
            phase: Phase::Pending,
            start_time: now,
            update_time: now,
            deployment: None,
            gray_deployments: valid.completed,
        },
    }
}

fn idempotency_key(
    principal: &Principal,
    token: &str,
    request: &CreateRelease,
) -> Result<IdempotencyKey, ApiError> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            "X-Client-Token",
            "must be 1 to 64 printable ASCII characters",
        ));
    }
    let request_json = serde_json::to_vec(&(&request.mesh_id, &request.namespace, &request.draft))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(IdempotencyKey {
        subject: principal.subject.clone(),
        token: token.to_owned(),
        request_hash: hex::encode(Sha256::digest(&request_json)),
    })
}

/// A store refusal of `release` in the client's terms.
fn conflict(error: StoreError, release: &Release) -> ApiError {
    match error {
        StoreError::NameTaken => ApiError::AlreadyExists(format!(
            "release {:?} already exists in mesh {:?}, namespace {:?}",
            release.name, release.mesh_id, release.namespace
        )),
        StoreError::ServiceBusy { holder } => ApiError::AlreadyExists(format!(
            "service {:?} in namespace {:?} already has an active release: {holder:?}",
            release.service_name, release.namespace
        )),
        other @ (StoreError::NotFound
        | StoreError::Stale { .. }
        | StoreError::IdempotencyMismatch
        | StoreError::TooOld { .. }
        | StoreError::Unavailable(_)
        | StoreError::Internal(_)) => store_error(other),
    }
}

fn stale(current: &Release, pinned: u64) -> ApiError {
    ApiError::Aborted(format!(
        "release {:?} has changed: metadata.resourceVersion {pinned} is stale, the current one is {}",
        current.name, current.resource_version
    ))
}

fn busy(target: &ReleaseRef) -> ApiError {
    ApiError::Aborted(format!(
        "release {:?} is changing too often to apply this; retry",
        target.name
    ))
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::NotFound("release not found".into()),
        StoreError::NameTaken => ApiError::AlreadyExists("a release of that name exists".into()),
        StoreError::ServiceBusy { holder } => ApiError::AlreadyExists(format!(
            "the service already has an active release: {holder:?}"
        )),
        StoreError::Stale { current } => ApiError::Aborted(format!(
            "the release has changed: its resourceVersion is now {current}"
        )),
        StoreError::IdempotencyMismatch => {
            ApiError::AlreadyExists("the client token was used for a different request".into())
        }
        StoreError::TooOld { requested, oldest } => ApiError::Gone(format!(
            "resourceVersion {requested} is too old to resume from (the oldest kept is {oldest}); watch again without one"
        )),
        StoreError::Unavailable(reason) => ApiError::Unavailable(reason),
        StoreError::Internal(cause) => ApiError::Internal(cause),
    }
}
