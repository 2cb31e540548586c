//! The release operations, shared by gRPC and REST: authorization, mesh
//! lookup, validation, naming, phases, and the store's conflict rules.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::authz::{Action, Principal};
use super::cursor::{self, Cursor};
use super::error::{DomainError, Violation};
use super::mesh::{Mesh, Meshes};
use super::names::quoted;
use super::phase::{self, Move, Outcome};
use super::plan;
use super::ports::{
    ClusterPort, Created, Event, EventType, IdempotencyKey, ListQuery, ReleaseStore, StoreError,
};
use super::release::{
    JsonObject, Phase, Release, ReleaseDraft, ReleaseStatus, SavedRouting, SeenDeployment,
    StatusCondition,
};
use super::traffic::{self, TrafficPolicy, TrafficPolicyDraft};
use super::validation::{self, ValidRelease};

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

/// PatchRelease: the fields of `draft` that `mask` names (JSON field paths
/// such as `spec.trafficPolicy.weight`) are applied.
#[derive(Debug, Clone, Default)]
pub struct PatchRelease {
    pub target: ReleaseRef,
    pub draft: ReleaseDraft,
    pub mask: Vec<String>,
    pub dry_run: bool,
}

/// What the cluster driver writes after a step: status only, never the spec.
#[derive(Debug, Clone, Default)]
pub struct StatusUpdate {
    /// The phase move the step made, if any.
    pub step: Option<Move>,
    /// The generation of the spec the step carried out.
    pub observed_generation: Option<u32>,
    /// Conditions to set, by type (others stay).
    pub conditions: Vec<(String, bool, String, String)>,
    /// The traffic policy now applied.
    pub traffic: Option<TrafficPolicy>,
    /// The original Deployment as read.
    pub deployment: Option<Arc<JsonObject>>,
    /// What was seen of the gray Deployments.
    pub gray_seen: Option<Vec<SeenDeployment>>,
    /// The routing before this release changed it (written once).
    pub saved_routing: Option<SavedRouting>,
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
    /// Swapped whole when the configuration is reloaded.
    meshes: ArcSwap<Meshes>,
    store: Arc<dyn ReleaseStore>,
    /// The service's one shutdown signal: watch streams end when it fires.
    shutdown: CancellationToken,
    /// The clusters, where the service drives releases.
    clusters: Option<Arc<dyn ClusterPort>>,
    /// Watch streams open now.
    watchers: Arc<AtomicUsize>,
}

impl ReleaseManager {
    pub fn new(meshes: Meshes, store: Arc<dyn ReleaseStore>) -> Self {
        Self {
            meshes: ArcSwap::from_pointee(meshes),
            store,
            shutdown: CancellationToken::new(),
            clusters: None,
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

    /// The clusters the service reaches: a release whose clusters are not
    /// all connected is recorded only, and its first status says so.
    pub fn with_clusters(mut self, clusters: Arc<dyn ClusterPort>) -> Self {
        self.clusters = Some(clusters);
        self
    }

    /// Why a release of `mesh` cannot be driven, if it cannot: the first of
    /// its clusters with no connection.
    pub fn unconnected_cluster(&self, mesh: &Mesh, release: &Release) -> Option<String> {
        let clusters = self.clusters.as_ref()?;
        let context = plan::Context::for_release(mesh, release);
        std::iter::once(&release.cluster_id)
            .chain(std::iter::once(&context.istio_cluster))
            .chain(release.gray_deployments.iter().map(|g| &g.cluster_id))
            .find(|c| !clusters.connected(c))
            .cloned()
    }

    /// Whether any cluster of `mesh` has a connection: the driver has
    /// nothing to carry out for the releases of a mesh that has none (their
    /// creates recorded that they are not connected).
    pub fn drives(&self, mesh: &Mesh) -> bool {
        let Some(clusters) = self.clusters.as_ref() else {
            return true;
        };
        mesh.clusters
            .iter()
            .chain(mesh.istio_config_cluster.as_ref())
            .any(|c| clusters.connected(c))
    }

    /// Ties the watch streams to the service's shutdown signal.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    fn mesh(
        &self,
        principal: &Principal,
        action: Action,
        mesh_id: &str,
    ) -> Result<Arc<Mesh>, DomainError> {
        let mesh = self.meshes.load().shared(mesh_id);
        // Permission first: a caller learns nothing of meshes it may not use.
        if !principal.allows(action, mesh_id, mesh.as_deref()) {
            return Err(DomainError::PermissionDenied {
                subject: principal.subject.clone(),
                action,
                mesh_id: mesh_id.to_owned(),
            });
        }
        mesh.ok_or_else(|| DomainError::NotFound(format!("mesh {} not found", quoted(mesh_id))))
    }

    /// Validates and stores a new release; it is durable when this returns Ok.
    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateRelease,
    ) -> Result<Release, DomainError> {
        let mesh = self.mesh(principal, Action::CreateRelease, &request.mesh_id)?;
        let mesh = &*mesh;
        let key = match &request.client_token {
            Some(token) => Some(idempotency_key(principal, token, &request)?),
            None => None,
        };
        let valid = validation::validate(&request.draft, mesh, &request.namespace)
            .map_err(DomainError::invalid)?;
        let now = now();
        let mut release = new_release(request.mesh_id, request.namespace, valid, now);
        if let Some(cluster) = self.unconnected_cluster(mesh, &release) {
            set_condition(
                &mut release.status.conditions,
                plan::REACHABLE,
                false,
                NOT_CONNECTED.into(),
                not_connected_message(&cluster),
                now,
            );
        }
        if request.dry_run {
            self.store
                .check_create(&release)
                .await
                .map_err(|e| conflict(e, &release))?;
            return Ok(with_plan(release));
        }
        match self.store.create(&release, key.as_ref()).await {
            Ok(Created::New(stored) | Created::Replayed(stored)) => Ok(stored),
            Err(StoreError::IdempotencyMismatch) => Err(DomainError::AlreadyExists(format!(
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
    ) -> Result<Release, DomainError> {
        self.mesh(principal, Action::GetRelease, &target.mesh_id)?;
        self.load(&target).await
    }

    /// A release as stored, for the cluster driver (which acts for no caller).
    pub async fn read(&self, target: &ReleaseRef) -> Result<Release, DomainError> {
        self.load(target).await
    }

    /// The meshes this service runs releases for, as configured now.
    pub fn meshes(&self) -> Arc<Meshes> {
        self.meshes.load_full()
    }

    /// Takes another set of meshes (a configuration reload). Releases of a
    /// mesh no longer configured stay stored; requests for that mesh answer
    /// 404 and the driver leaves them alone until the mesh is back.
    pub fn replace_meshes(&self, meshes: Meshes) {
        self.meshes.store(Arc::new(meshes));
    }

    async fn load(&self, target: &ReleaseRef) -> Result<Release, DomainError> {
        self.store
            .get(&target.mesh_id, &target.namespace, &target.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                DomainError::NotFound(format!(
                    "release {} not found in mesh {}, namespace {}",
                    quoted(&target.name),
                    quoted(&target.mesh_id),
                    quoted(&target.namespace)
                ))
            })
    }

    pub async fn list(
        &self,
        principal: &Principal,
        request: ListReleases,
    ) -> Result<ReleasePage, DomainError> {
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
            return Err(DomainError::invalid(violations));
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
    ) -> Result<Release, DomainError> {
        let target = &request.target;
        let mesh = self.mesh(principal, Action::UpdateRelease, &target.mesh_id)?;
        let mesh = &*mesh;
        let mut violations = Vec::new();
        if !request.draft.name.is_empty() && request.draft.name != target.name {
            violations.push(Violation::new(
                "metadata.name",
                format!(
                    "is immutable: must be {}, the name in the path",
                    quoted(&target.name)
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
            Ok(_) => return Err(DomainError::invalid(violations)),
            Err(mut more) => {
                violations.append(&mut more);
                return Err(DomainError::invalid(violations));
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
                return Err(DomainError::invalid(changed));
            }
            if !current.status.phase.is_active() {
                return Err(over(&current));
            }
            if let Some(pinned) = pinned.filter(|p| *p != current.resource_version) {
                return Err(stale(&current, pinned));
            }
            let change = SpecChange {
                templates: Some((valid.gray_deployments.clone(), valid.completed.clone())),
                policy: valid.traffic_policy.clone(),
            };
            let next = change.apply_to(&current)?;
            if request.dry_run {
                return Ok(with_plan(next));
            }
            if let Some(stored) = self.write_spec(&next, &current, pinned).await? {
                return Ok(stored);
            }
        }
        Err(busy(target))
    }

    /// Stores a spec change made from `current`. `None`: it lost a race that
    /// a retry may win (the client pinned no resourceVersion).
    async fn write_spec(
        &self,
        next: &Release,
        current: &Release,
        pinned: Option<u64>,
    ) -> Result<Option<Release>, DomainError> {
        match self.store.update(next, current.resource_version).await {
            Ok(stored) => Ok(Some(stored)),
            Err(StoreError::Stale { .. }) if pinned.is_none() => Ok(None),
            Err(StoreError::Stale { current: now_at }) => Err(DomainError::Aborted(format!(
                "release {:?} changed while updating: its resourceVersion is now {now_at}",
                current.name
            ))),
            Err(e) => Err(store_error(e)),
        }
    }

    /// `cancel` or `end` a release, as the phase machine allows; remove the
    /// record of one that is over. A retried cancel or end answers the
    /// release as it is and changes nothing.
    pub async fn delete(
        &self,
        principal: &Principal,
        target: ReleaseRef,
        action: &str,
    ) -> Result<Release, DomainError> {
        self.mesh(principal, Action::DeleteRelease, &target.mesh_id)?;
        let step = match action {
            "" => None,
            "cancel" => Some(Move::Cancel),
            "end" => Some(Move::End),
            other => {
                return Err(DomainError::invalid_field(
                    "action",
                    format!("must be cancel or end, got {}", quoted(other)),
                ));
            }
        };
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(&target).await?;
            let outcome = match step {
                None if current.status.phase.is_active() => {
                    return Err(DomainError::invalid_field(
                        "action",
                        format!(
                            "is required: release {:?} is {}, not over; cancel (the original version keeps all traffic) or end (the gray version takes over) first",
                            current.name,
                            current.status.phase.as_str()
                        ),
                    ));
                }
                None => {
                    self.store
                        .remove(
                            &target.mesh_id,
                            &target.namespace,
                            &target.name,
                            current.resource_version,
                        )
                        .await
                }
                Some(step) => {
                    match phase::transition(current.status.phase, step, &current.traffic_policy) {
                        Outcome::AlreadyThere => return Ok(current),
                        Outcome::Refused(why) => {
                            return Err(DomainError::FailedPrecondition(format!(
                                "release {:?} is {}: {why}",
                                current.name,
                                current.status.phase.as_str()
                            )));
                        }
                        Outcome::To(phase) => {
                            let mut next = current.clone();
                            enter_phase(&mut next, phase);
                            self.store.update(&next, current.resource_version).await
                        }
                    }
                }
            };
            match outcome {
                Ok(release) => return Ok(release),
                Err(StoreError::Stale { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(busy(&target))
    }

    /// Changes the fields the mask names (AIP-134).
    pub async fn patch(
        &self,
        principal: &Principal,
        request: PatchRelease,
    ) -> Result<Release, DomainError> {
        let target = &request.target;
        let mesh = self.mesh(principal, Action::UpdateRelease, &target.mesh_id)?;
        let mesh = &*mesh;
        let masked = read_mask(&request.mask, &request.draft, target, &mesh.id)?;
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(target).await?;
            if !current.status.phase.is_active() {
                return Err(over(&current));
            }
            if let Some(pinned) = masked.pinned.filter(|p| *p != current.resource_version) {
                return Err(stale(&current, pinned));
            }
            let mut violations = Vec::new();
            let policy = masked.policy.as_ref().and_then(|draft| {
                traffic::validate(
                    draft,
                    Some(current.release_type),
                    "spec.trafficPolicy",
                    &mut violations,
                )
            });
            let templates = if masked.templates {
                let mut draft = request.draft.clone();
                fill_identity(&mut draft, &current);
                match validation::validate(&draft, mesh, &target.namespace) {
                    Ok(valid) => Some((valid.gray_deployments, valid.completed)),
                    Err(mut more) => {
                        more.retain(|v| v.field.starts_with("spec.grayDeployments"));
                        violations.append(&mut more);
                        None
                    }
                }
            } else {
                None
            };
            if !violations.is_empty() {
                return Err(DomainError::invalid(violations));
            }
            let next = SpecChange { templates, policy }.apply_to(&current)?;
            if request.dry_run {
                return Ok(with_plan(next));
            }
            if next == current {
                return Ok(current);
            }
            if let Some(stored) = self.write_spec(&next, &current, masked.pinned).await? {
                return Ok(stored);
            }
        }
        Err(busy(target))
    }

    /// The cluster driver's write: status only. The spec and generation stay
    /// as they are; the write still takes the next resourceVersion, and loses
    /// (`Aborted`) to any write since `expected`, a client's included.
    pub async fn write_status(
        &self,
        target: &ReleaseRef,
        expected: u64,
        update: StatusUpdate,
    ) -> Result<Release, DomainError> {
        let current = self.load(target).await?;
        if current.resource_version != expected {
            return Err(stale(&current, expected));
        }
        let mut next = current.clone();
        if let Some(step) = update.step {
            match phase::transition(current.status.phase, step, &current.traffic_policy) {
                Outcome::To(phase) => enter_phase(&mut next, phase),
                Outcome::AlreadyThere => {}
                Outcome::Refused(why) => return Err(DomainError::FailedPrecondition(why)),
            }
        }
        let now = later_than(current.status.update_time);
        for (kind, status, reason, message) in update.conditions {
            set_condition(
                &mut next.status.conditions,
                &kind,
                status,
                reason,
                message,
                now,
            );
        }
        if let Some(generation) = update.observed_generation {
            next.status.observed_generation = generation.min(current.generation);
        }
        if update.traffic.is_some() {
            next.status.traffic = update.traffic;
        }
        if update.deployment.is_some() {
            next.status.deployment = update.deployment;
        }
        if let Some(seen) = update.gray_seen {
            next.status.gray_seen = seen;
        }
        if next.status.saved_routing.is_none() {
            next.status.saved_routing = update.saved_routing;
        }
        next.status.update_time = current.status.update_time;
        if next == current {
            // Nothing new: no write, so no event and no new round of the driver.
            return Ok(current);
        }
        next.status.update_time = now;
        self.store
            .update(&next, expected)
            .await
            .map_err(|e| match e {
                StoreError::Stale { current: now_at } => DomainError::Aborted(format!(
                    "release {:?} changed: its resourceVersion is now {now_at}",
                    current.name
                )),
                other @ (StoreError::NameTaken
                | StoreError::ServiceBusy { .. }
                | StoreError::NotFound
                | StoreError::IdempotencyMismatch
                | StoreError::TooOld { .. }
                | StoreError::NotGiven { .. }
                | StoreError::Unavailable(_)
                | StoreError::Internal(_)) => store_error(other),
            })
    }

    /// The current releases (as ADDED events), then every change, in commit
    /// order; or, with a resourceVersion, every change after it. The stream
    /// ends when the receiver is dropped or the service shuts down.
    pub async fn watch(
        &self,
        principal: &Principal,
        request: WatchReleases,
    ) -> Result<mpsc::Receiver<Result<Event, DomainError>>, DomainError> {
        self.mesh(principal, Action::ListReleases, &request.mesh_id)?;
        let resume = match request.resource_version.as_str() {
            "" => None,
            text => Some(text.parse::<u64>().map_err(|_| {
                DomainError::invalid_field(
                    "resourceVersion",
                    "is not a resourceVersion of this service",
                )
            })?),
        };
        let namespace = request.namespace.filter(|ns| !ns.is_empty());
        let store = self.store.clone();
        let mut revisions = store.revisions();
        let shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let mut initial: Vec<Event> = Vec::new();
        let mut reflected = HashSet::new();
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
                let snapshot = store
                    .snapshot(&request.mesh_id, namespace.as_deref())
                    .await
                    .map_err(store_error)?;
                reflected = snapshot.reflected.into_iter().collect();
                initial = snapshot
                    .releases
                    .into_iter()
                    .map(|release| Event {
                        revision: release.resource_version,
                        kind: EventType::Added,
                        release,
                    })
                    .collect();
                snapshot.revision
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
                        () = shutdown.cancelled() => {
                            // Not a normal end: the client reconnects (to
                            // another replica) and resumes.
                            let _ = sender.send(Err(DomainError::ShuttingDown)).await;
                            return;
                        }
                        () = sender.closed() => return,
                    }
                    continue;
                }
                for event in events {
                    last = event.revision;
                    // Already in the snapshot the watch started from.
                    if reflected.remove(&event.revision) {
                        continue;
                    }
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

/// The reason of the condition a release of an unconnected cluster carries.
pub const NOT_CONNECTED: &str = "NotConnected";

pub fn not_connected_message(cluster: &str) -> String {
    format!(
        "cluster {cluster:?} has no connection configured ([[clusters]]); the release is recorded and validated only"
    )
}

/// A change of the spec by PUT or PATCH, checked against the phase machine.
struct SpecChange {
    templates: Option<(Vec<super::release::GrayDeployment>, Vec<Arc<JsonObject>>)>,
    policy: Option<TrafficPolicy>,
}

impl SpecChange {
    fn apply_to(self, current: &Release) -> Result<Release, DomainError> {
        let phase = current.status.phase;
        let mut next = current.clone();
        let mut changed = false;
        if let Some((gray, completed)) = self.templates
            && gray != current.gray_deployments
        {
            if !phase::templates_may_change(phase) {
                return Err(DomainError::FailedPrecondition(format!(
                    "release {:?} is {}: its gray Deployments can change only while Pending, Deploying or Running",
                    current.name,
                    phase.as_str()
                )));
            }
            next.gray_deployments = gray;
            next.status.gray_deployments = completed;
            changed = true;
        }
        if let Some(policy) = self.policy
            && policy != current.traffic_policy
        {
            if !phase::policy_may_change(phase) {
                return Err(DomainError::FailedPrecondition(format!(
                    "release {:?} is {}: its traffic policy can change only while Running",
                    current.name,
                    phase.as_str()
                )));
            }
            next.traffic_policy = policy;
            changed = true;
        }
        if changed {
            next.generation = current.generation.saturating_add(1);
            next.status.update_time = later_than(current.status.update_time);
        }
        Ok(next)
    }
}

/// What a PATCH mask asks for.
struct Masked {
    pinned: Option<u64>,
    policy: Option<TrafficPolicyDraft>,
    templates: bool,
}

/// Reads a mask of JSON field paths against the draft: what to change, what
/// to check, and a violation for every path that may not be named.
fn read_mask(
    mask: &[String],
    draft: &ReleaseDraft,
    target: &ReleaseRef,
    mesh_id: &str,
) -> Result<Masked, DomainError> {
    let mut violations = Vec::new();
    let mut masked = Masked {
        pinned: None,
        policy: None,
        templates: false,
    };
    if mask.is_empty() {
        return Err(DomainError::invalid_field(
            "updateMask",
            "names no field to change: give spec.trafficPolicy or spec.grayDeployments",
        ));
    }
    let given = draft.traffic_policy.clone().unwrap_or_default();
    let (mut weight, mut rules) = (false, false);
    let must_equal = |field: &str, got: &str, want: &str, violations: &mut Vec<Violation>| {
        if got != want {
            violations.push(Violation::new(
                field,
                format!("must be {} where given", quoted(want)),
            ));
        }
    };
    for path in mask {
        match path.as_str() {
            "spec.trafficPolicy" => (weight, rules) = (true, true),
            "spec.trafficPolicy.weight" => weight = true,
            "spec.trafficPolicy.match" => rules = true,
            "spec.grayDeployments" => masked.templates = true,
            "metadata.resourceVersion" => match draft.resource_version.parse::<u64>() {
                Ok(v) => masked.pinned = Some(v),
                Err(_) => violations.push(Violation::new(
                    "metadata.resourceVersion",
                    "is not a resourceVersion of this service",
                )),
            },
            "kind" => must_equal(path, &draft.kind, super::release::KIND, &mut violations),
            "apiVersion" => must_equal(
                path,
                &draft.api_version,
                super::release::API_VERSION,
                &mut violations,
            ),
            "metadata.meshID" => must_equal(path, &draft.mesh_id, mesh_id, &mut violations),
            "metadata.name" => must_equal(path, &draft.name, &target.name, &mut violations),
            "metadata.namespace" => {
                must_equal(path, &draft.namespace, &target.namespace, &mut violations);
            }
            "spec.serviceName" | "spec.clusterID" | "spec.deploymentName" | "spec.version"
            | "spec.type" => violations.push(Violation::new(
                path,
                "is immutable: PATCH changes spec.trafficPolicy and spec.grayDeployments only",
            )),
            "metadata.uid" | "metadata.generation" | "status" => {
                violations.push(Violation::new(path, "is output only"));
            }
            "spec" | "metadata" | "*" | "" => violations.push(Violation::new(
                "updateMask",
                format!(
                    "names {}, which is too wide: name spec.trafficPolicy or spec.grayDeployments (PUT replaces a release)",
                    quoted(path)
                ),
            )),
            other if other.starts_with("status.") => {
                violations.push(Violation::new(other, "is output only"));
            }
            other if other.starts_with("spec.trafficPolicy.match.") => {
                violations.push(Violation::new(
                    other,
                    "match rules are replaced whole: name spec.trafficPolicy.match",
                ));
            }
            other if other.starts_with("spec.grayDeployments.") => {
                violations.push(Violation::new(
                    other,
                    "gray Deployments are replaced whole: name spec.grayDeployments",
                ));
            }
            other => violations.push(Violation::new(
                "updateMask",
                format!("names {}, which is not a field of Release", quoted(other)),
            )),
        }
    }
    if weight || rules {
        // Weight and match replace each other, as the members of a oneof do.
        masked.policy = Some(TrafficPolicyDraft {
            weight: if weight { given.weight } else { None },
            match_rules: if rules { given.match_rules } else { Vec::new() },
        });
    }
    if violations.is_empty() {
        Ok(masked)
    } else {
        Err(DomainError::invalid(violations))
    }
}

/// A PATCH draft carries only what changes; the template checks need the
/// release's identity, taken from the stored release.
fn fill_identity(draft: &mut ReleaseDraft, current: &Release) {
    draft.name.clone_from(&current.name);
    draft.namespace.clone_from(&current.namespace);
    draft.mesh_id.clone_from(&current.mesh_id);
    draft.kind.clear();
    draft.api_version.clear();
    draft.service_name.clone_from(&current.service_name);
    draft.cluster_id.clone_from(&current.cluster_id);
    draft.deployment_name.clone_from(&current.deployment_name);
    draft.version.clone_from(&current.version);
    draft.release_type = current.release_type.as_str().to_owned();
    draft.traffic_policy = None;
}

/// The release with what its next step would change, for a dry-run answer.
fn with_plan(mut release: Release) -> Release {
    release.status.plan = plan::preview(&release);
    release
}

fn enter_phase(release: &mut Release, phase: Phase) {
    let now = later_than(release.status.update_time);
    release.status.phase = phase;
    release.status.phase_time = Some(now);
    release.status.update_time = now;
}

/// Sets a condition by type; its transition time moves only when its status
/// does.
fn set_condition(
    conditions: &mut Vec<StatusCondition>,
    kind: &str,
    status: bool,
    reason: String,
    message: String,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    match conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason;
            c.message = message;
        }
        None => conditions.push(StatusCondition {
            kind: kind.to_owned(),
            status,
            reason,
            message,
            last_transition_time: now,
        }),
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
        traffic_policy: valid.traffic_policy.unwrap_or_default(),
        generation: 1,
        status: ReleaseStatus::pending(now, valid.completed),
    }
}

fn idempotency_key(
    principal: &Principal,
    token: &str,
    request: &CreateRelease,
) -> Result<IdempotencyKey, DomainError> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid_field(
            "X-Client-Token",
            "must be 1 to 64 printable ASCII characters",
        ));
    }
    let request_json = serde_json::to_vec(&(&request.mesh_id, &request.namespace, &request.draft))
        .map_err(|e| DomainError::Internal(e.into()))?;
    Ok(IdempotencyKey {
        subject: principal.subject.clone(),
        token: token.to_owned(),
        request_hash: hex::encode(Sha256::digest(&request_json)),
    })
}

/// A store refusal of `release` in the client's terms.
fn conflict(error: StoreError, release: &Release) -> DomainError {
    match error {
        StoreError::NameTaken => DomainError::AlreadyExists(format!(
            "release {:?} already exists in mesh {:?}, namespace {:?}",
            release.name, release.mesh_id, release.namespace
        )),
        StoreError::ServiceBusy { holder } => DomainError::AlreadyExists(format!(
            "service {:?} in namespace {:?} already has an active release: {holder:?}",
            release.service_name, release.namespace
        )),
        other @ (StoreError::NotFound
        | StoreError::Stale { .. }
        | StoreError::IdempotencyMismatch
        | StoreError::TooOld { .. }
        | StoreError::NotGiven { .. }
        | StoreError::Unavailable(_)
        | StoreError::Internal(_)) => store_error(other),
    }
}

fn stale(current: &Release, pinned: u64) -> DomainError {
    DomainError::Aborted(format!(
        "release {:?} has changed: metadata.resourceVersion {pinned} is stale, the current one is {}",
        current.name, current.resource_version
    ))
}

fn over(current: &Release) -> DomainError {
    DomainError::FailedPrecondition(format!(
        "release {:?} is {} and can no longer be updated",
        current.name,
        current.status.phase.as_str()
    ))
}

fn busy(target: &ReleaseRef) -> DomainError {
    DomainError::Aborted(format!(
        "release {:?} is changing too often to apply this; retry",
        target.name
    ))
}

fn store_error(error: StoreError) -> DomainError {
    match error {
        StoreError::NotFound => DomainError::NotFound("release not found".into()),
        StoreError::NameTaken => DomainError::AlreadyExists("a release of that name exists".into()),
        StoreError::ServiceBusy { holder } => DomainError::AlreadyExists(format!(
            "the service already has an active release: {holder:?}"
        )),
        StoreError::Stale { current } => DomainError::Aborted(format!(
            "the release has changed: its resourceVersion is now {current}"
        )),
        StoreError::IdempotencyMismatch => {
            DomainError::AlreadyExists("the client token was used for a different request".into())
        }
        StoreError::TooOld { requested, oldest } => DomainError::Gone(format!(
            "resourceVersion {requested} is too old to resume from (the oldest kept is {oldest}); watch again without one"
        )),
        StoreError::NotGiven { requested, .. } => DomainError::Gone(format!(
            "resourceVersion {requested} is not one this service gave: its data may have been replaced since (a new data directory or database); watch again without one"
        )),
        StoreError::Unavailable(reason) => DomainError::Unavailable(reason),
        StoreError::Internal(cause) => DomainError::Internal(cause),
    }
}
