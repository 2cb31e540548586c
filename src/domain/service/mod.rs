//! The release operations, shared by gRPC and REST: authorization, mesh
//! lookup, validation, naming, phases, and the store's conflict rules. One
//! type, `ReleaseManager`, its methods split by who calls them (as qdrant
//! splits its `Collection`):
//!
//! - this file: the requests, and create, get, list, update, patch, delete;
//! - `actions.rs`: pause, resume, promote, abort, retry, and the checks;
//! - `watch.rs`: the watch streams;
//! - `driver.rs`: what the cluster driver calls (its reads and its
//!   status-only write);
//! - `patch_mask.rs`: reading a PATCH's field mask, and a spec change
//!   checked against the phase machine;
//! - `errors.rs`: the store's refusals in the client's terms.

mod actions;
mod driver;
mod errors;
mod patch_mask;
mod preview;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::errors::{busy, conflict, over, stale, store_error};
use self::patch_mask::{SpecChange, fill_identity, read_mask};
use super::authz::{Action, Principal};
use super::conditions;
use super::cursor::{self, Cursor};
use super::error::{DomainError, Violation};
use super::kinds::Phase;
use super::mesh::{Mesh, Meshes};
use super::names::quoted;
use super::phase::{self, Move, Outcome};
use super::ports::{ClusterPort, Created, IdempotencyKey, ListQuery, ReleaseStore, StoreError};
pub use super::release::ReleaseRef;
use super::release::{Release, ReleaseDraft, ReleaseStatus};
use super::status;
use super::strategy;
use super::traffic;
use super::validation::{self, ValidRelease};

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Attempts of a read-modify-write that lost a race, when the client did not
/// pin a resourceVersion.
pub(super) const WRITE_ATTEMPTS: usize = 8;

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
            conditions::set(
                &mut release.status.conditions,
                &conditions::not_connected(&cluster),
                now,
            );
        }
        if request.dry_run {
            self.store
                .check_create(&release)
                .await
                .map_err(|e| conflict(e, &release))?;
            return Ok(self.with_plan(mesh, release).await);
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
                // A PUT without a strategy leaves it as it is.
                strategy: valid.strategy.clone().map(Some),
            };
            let next = change.apply_to(&current)?;
            if request.dry_run {
                return Ok(self.with_plan(mesh, next).await);
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
                            "is required while release {:?} is {}: it is not over; cancel it (action=cancel: the original version keeps all traffic) or end it (action=end: the gray version takes over), then remove its record",
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
            let strategy = if masked.strategy {
                match &request.draft.strategy {
                    None => Some(None),
                    Some(draft) => strategy::validate(
                        draft,
                        Some(current.release_type),
                        mesh,
                        "spec.strategy",
                        &mut violations,
                    )
                    .map(Some),
                }
            } else {
                None
            };
            if !violations.is_empty() {
                return Err(DomainError::invalid(violations));
            }
            let next = SpecChange {
                templates,
                policy,
                strategy,
            }
            .apply_to(&current)?;
            if request.dry_run {
                return Ok(self.with_plan(mesh, next).await);
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
}

/// The release enters `phase` now (a client's move).
fn enter_phase(release: &mut Release, phase: Phase) {
    let now = later_than(release.status.update_time);
    status::enter_phase(release, phase, now);
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
        strategy: valid.strategy,
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
