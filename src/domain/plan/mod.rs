//! The planner: from a release and what was observed in its clusters, the
//! objects to apply or delete in each cluster, the phase move to record
//! after them, and the status they imply. Pure: the cluster driver only
//! reads, carries out the plan and records what `after` makes of it; every
//! decision is here, where golden files and property tests pin it.
//!
//! - this file: the vocabulary (`Placement`, `Observation`, `Plan`) and what
//!   each phase does;
//! - `routing.rs`: Istio routing (the owners' objects, split, ended,
//!   restored);
//! - `gray.rs`: the gray Deployments (as applied, ready, seen, whose);
//! - `marks.rs`: how an object is marked as a release's, and told apart;
//! - `after.rs`: what a round's outcome makes of the release's status.
//!
//! Routing is always computed from the routing as its owners left it (saved
//! before the first change), never from what this service wrote before, so
//! that a plan is the same however many times it runs, and a cancel restores
//! exactly what was there.

mod after;
mod gray;
mod marks;
mod routing;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

pub use after::{CONFLICTS_TO_REFUSAL, after};
pub use gray::{
    DEFAULT_PROGRESS_DEADLINE_SECS, TEMPLATE_HASH_ANNOTATION, deployment_ready, gray_object,
    gray_seen, preview,
};
pub use marks::{MANAGED_BY, MANAGED_BY_LABEL, RELEASE_UID_ANNOTATION};
pub use routing::subset_name;

use self::gray::{deleted, foreign_gray, gray_changes, gray_ready, progress_deadline};
use self::marks::{is_ours, pinned_identity};
use self::routing::{Refusal, Routing};
use super::change::{Change, ObjectKind, PlannedObject};
use super::conditions::{ConditionChange, ConditionType, Reason};
use super::istio::IstioApi;
use super::kinds::Phase;
use super::mesh::{Mesh, OriginalOnEnd};
use super::object::{JsonObject, name_of, object_mut};
use super::phase::Move;
use super::release::{Release, SavedRouting, SeenDeployment};
use super::traffic::TrafficPolicy;

/// Where a release's objects are and how to write them, from its mesh's
/// configuration.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Where VirtualServices and DestinationRules live.
    pub istio_cluster: String,
    pub istio_api: IstioApi,
    pub original_on_end: OriginalOnEnd,
}

impl Placement {
    pub fn for_release(mesh: &Mesh, release: &Release) -> Self {
        Placement {
            istio_cluster: mesh
                .istio_config_cluster
                .clone()
                .unwrap_or_else(|| release.cluster_id.clone()),
            istio_api: mesh.istio_api,
            original_on_end: mesh.original_on_end,
        }
    }
}

/// What the driver read in the clusters, just before planning.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Clusters that did not answer (the plan waits for them).
    pub unreachable: Vec<String>,
    /// The original Deployment, if it exists.
    pub original: Option<JsonObject>,
    /// The Service `spec.serviceName`, if it exists.
    pub service: Option<JsonObject>,
    /// The VirtualServices and DestinationRules of the release's namespace
    /// in the Istio config cluster whose hosts name its service (a port may
    /// give more: the planner picks those for the host).
    pub virtual_services: Arc<Vec<JsonObject>>,
    pub destination_rules: Arc<Vec<JsonObject>>,
    /// Each gray Deployment (in the order of the spec), if it exists.
    pub gray: Vec<Option<JsonObject>>,
    pub now: DateTime<Utc>,
}

/// The outcome of one planning round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Carried out in order; a failure stops the round.
    pub changes: Vec<PlannedObject>,
    /// The phase move to record once the changes are made.
    pub step: Option<Move>,
    /// The traffic policy in force once the changes are made.
    pub traffic: Option<TrafficPolicy>,
    /// Conditions to set.
    pub conditions: Vec<ConditionChange>,
    /// The routing to save before the first change (on the move to Deploying).
    pub saved_routing: Option<SavedRouting>,
    /// The original Deployment as it will be once the changes are made, for
    /// `status.deployment` (marked deleted by an end that deletes it).
    pub deployment: Option<Arc<JsonObject>>,
    /// The gray Deployments as they will be once the changes are made.
    pub gray_seen: Option<Vec<SeenDeployment>>,
}

impl Plan {
    fn condition(
        mut self,
        kind: ConditionType,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        self.conditions
            .push(ConditionChange::new(kind, status, reason, message));
        self
    }

    fn fail(reason: Reason, message: impl Into<String>) -> Self {
        Plan {
            step: Some(Move::Fail),
            ..Plan::default()
        }
        .condition(ConditionType::Failed, true, reason, message)
    }

    /// Whether carrying out this plan rests on an object being absent (a
    /// routing object to create) or on the routing as read now (to save
    /// it): such a decision is taken on a fresh read of the cluster, never
    /// on a list kept from earlier, or a second VirtualService for a host
    /// that has one can follow.
    pub fn rests_on_absence(&self) -> bool {
        self.saved_routing.is_some()
            || self.changes.iter().any(|c| {
                c.kind != ObjectKind::Deployment
                    && c.change == Change::Apply
                    && c.object
                        .get("metadata")
                        .and_then(|m| m.get("resourceVersion"))
                        .is_none()
            })
    }
}

/// The next step of `release`, given what was observed.
pub fn plan(release: &Release, observed: &Observation, placement: &Placement) -> Plan {
    let phase = release.status.phase;
    if matches!(phase, Phase::Ended | Phase::Canceled) {
        return Plan::default();
    }
    if !observed.unreachable.is_empty() {
        return Plan::default().condition(
            ConditionType::ClustersReachable,
            false,
            Reason::Unreachable,
            format!(
                "waiting for cluster(s) {} to answer",
                observed.unreachable.join(", ")
            ),
        );
    }
    let reachable = |plan: Plan| {
        plan.condition(
            ConditionType::ClustersReachable,
            true,
            Reason::Reachable,
            "every cluster of the release answered",
        )
    };
    let mut plan = reachable(plan_reachable(release, observed, placement));
    if plan.deployment.is_none() {
        plan.deployment = observed.original.clone().map(Arc::new);
    }
    if plan.gray_seen.is_none() {
        plan.gray_seen = Some(gray_seen(release, observed));
    }
    plan
}

/// The plan once every cluster answered.
fn plan_reachable(release: &Release, observed: &Observation, placement: &Placement) -> Plan {
    let phase = release.status.phase;
    let active = matches!(phase, Phase::Pending | Phase::Deploying | Phase::Running);
    // A gray Deployment of another release, or of nobody's, is never
    // adopted: applying over it would hand it to this release, whose
    // cancel would then delete it.
    if active && let Some(message) = foreign_gray(release, observed) {
        return Plan::fail(Reason::NotOwned, message);
    }
    // A release that failed or is canceled before it changed any routing
    // has none to put back.
    let touched_routing = release.status.saved_routing.is_some();
    if !touched_routing {
        match phase {
            Phase::Failed => return Plan::default(),
            Phase::Canceling => return cancel(release, observed, None),
            Phase::Pending
            | Phase::Deploying
            | Phase::Running
            | Phase::Ending
            | Phase::Ended
            | Phase::Canceled => {}
        }
    }
    let routing = match Routing::read(release, observed) {
        Ok(routing) => routing,
        Err(Refusal { reason, message }) => {
            return match phase {
                Phase::Pending | Phase::Deploying | Phase::Running => Plan::fail(reason, message),
                Phase::Failed
                | Phase::Ending
                | Phase::Canceling
                | Phase::Ended
                | Phase::Canceled => {
                    Plan::default().condition(ConditionType::TrafficApplied, false, reason, message)
                }
            };
        }
    };
    if !routing.foreign.is_empty() && phase != Phase::Canceling {
        return foreign_routing(release, placement, &routing);
    }
    match phase {
        Phase::Pending => Plan {
            step: Some(Move::StartDeploying),
            saved_routing: Some(routing.saved.clone()),
            ..Plan::default()
        },
        Phase::Deploying | Phase::Running => deploy(release, observed, placement, &routing),
        Phase::Failed => {
            let mut plan = routing.put(placement, release, &TrafficPolicy::Weight(0));
            plan.traffic = Some(TrafficPolicy::Weight(0));
            plan
        }
        Phase::Ending => end(release, observed, placement, &routing),
        Phase::Canceling => cancel(release, observed, Some((placement, &routing))),
        Phase::Ended | Phase::Canceled => Plan::default(),
    }
}

/// A VirtualService or DestinationRule for the host appeared that is
/// neither the one its owners had nor this release's: two of one kind for
/// a host are undefined in Istio (each proxy picks one). The release never
/// writes someone else's object; it puts the routing back as its owners
/// left it (deleting what it created) and, if active, fails saying why.
fn foreign_routing(release: &Release, placement: &Placement, routing: &Routing) -> Plan {
    let message = format!(
        "{} also name{} host {:?}, beside the routing this release edits; two VirtualServices (or DestinationRules) for one host are undefined in Istio. The routing is put back as its owners left it and what this release created is deleted; remove the extra object, then cancel this release and start again",
        routing.foreign.join(", "),
        if routing.foreign.len() == 1 { "s" } else { "" },
        release.service_name
    );
    let mut plan = routing.restored(release, placement);
    plan.traffic = Some(TrafficPolicy::Weight(0));
    let plan = plan.condition(
        ConditionType::TrafficApplied,
        false,
        Reason::AmbiguousRouting,
        message.clone(),
    );
    match release.status.phase {
        Phase::Pending | Phase::Deploying | Phase::Running => Plan {
            step: Some(Move::Fail),
            ..plan
        }
        .condition(
            ConditionType::Failed,
            true,
            Reason::AmbiguousRouting,
            message,
        ),
        Phase::Failed | Phase::Ending | Phase::Canceling | Phase::Ended | Phase::Canceled => plan,
    }
}

/// Deploying and Running: the gray Deployments applied, the subsets in
/// place, and traffic per the policy once every gray Deployment is ready.
fn deploy(
    release: &Release,
    observed: &Observation,
    placement: &Placement,
    routing: &Routing,
) -> Plan {
    let mut changes = gray_changes(release, observed);
    let ready = gray_ready(release, observed);
    let policy = if ready {
        release.traffic_policy.clone()
    } else {
        // Weight never goes to a subset that is not ready.
        TrafficPolicy::Weight(0)
    };
    let mut plan = routing.put(placement, release, &policy);
    changes.append(&mut plan.changes);
    plan.changes = changes;
    plan.traffic = Some(policy);
    let phase = release.status.phase;
    if ready {
        if phase == Phase::Deploying {
            plan.step = Some(Move::GrayReady);
        }
        return plan.condition(
            ConditionType::GrayReady,
            true,
            Reason::Ready,
            "every gray Deployment is ready",
        );
    }
    let deadline = progress_deadline(release);
    let since = release
        .status
        .phase_time
        .unwrap_or(release.status.start_time);
    if phase == Phase::Deploying && observed.now > since + deadline {
        plan.step = Some(Move::Fail);
        return plan
            .condition(
                ConditionType::GrayReady,
                false,
                Reason::ProgressDeadlineExceeded,
                format!(
                    "the gray Deployments were not ready within {} s; traffic stays on the original",
                    deadline.num_seconds()
                ),
            )
            .condition(
                ConditionType::Failed,
                true,
                Reason::ProgressDeadlineExceeded,
                "gray Deployments not ready in time",
            );
    }
    plan.condition(
        ConditionType::GrayReady,
        false,
        Reason::NotReady,
        "waiting for the gray Deployments to become ready",
    )
}

/// Ending: traffic all to the gray version first; then, once the routing
/// the cluster holds says so, the original goes.
fn end(
    release: &Release,
    observed: &Observation,
    placement: &Placement,
    routing: &Routing,
) -> Plan {
    let final_routes = routing.ended(release, placement);
    if !final_routes.changes.is_empty() {
        return final_routes;
    }
    let change = match placement.original_on_end {
        OriginalOnEnd::Delete => Change::Delete,
        OriginalOnEnd::ScaleToZero => Change::ScaleToZero,
    };
    let (changes, deployment, done) = match (&observed.original, change) {
        (None, _) => (
            Vec::new(),
            release.status.deployment.as_deref().map(|last| {
                // Gone: shown as the service last read it, deleted.
                deleted(last, observed.now)
            }),
            "deleted",
        ),
        (Some(d), Change::ScaleToZero) => {
            let mut scaled = d.clone();
            object_mut(&mut scaled, "spec").insert("replicas".into(), json!(0));
            let already = d.get("spec").and_then(|s| s.get("replicas")) == Some(&json!(0));
            let changes = if already {
                Vec::new()
            } else {
                vec![PlannedObject {
                    cluster_id: release.cluster_id.clone(),
                    kind: ObjectKind::Deployment,
                    change,
                    object: pinned_identity("apps/v1", "Deployment", d, &release.namespace),
                }]
            };
            (changes, Some(scaled), "scaled to 0 replicas")
        }
        (Some(d), Change::Delete | Change::Apply) => (
            vec![PlannedObject {
                cluster_id: release.cluster_id.clone(),
                kind: ObjectKind::Deployment,
                change: Change::Delete,
                object: pinned_identity("apps/v1", "Deployment", d, &release.namespace),
            }],
            Some(deleted(d, observed.now)),
            "deleted",
        ),
    };
    Plan {
        changes,
        step: Some(Move::Finish),
        traffic: Some(TrafficPolicy::Weight(100)),
        deployment: deployment.map(Arc::new),
        ..Plan::default()
    }
    .condition(
        ConditionType::TrafficApplied,
        true,
        Reason::Applied,
        format!(
            "the gray version takes all traffic; the original Deployment {:?} is {done}",
            release.deployment_name
        ),
    )
}

/// Canceling: the routing restored as its owners left it first (when the
/// release changed it); then, once the cluster holds it, this release's
/// gray Deployments go, and only they: one that is not this release's
/// stays where it is.
fn cancel(
    release: &Release,
    observed: &Observation,
    routing: Option<(&Placement, &Routing)>,
) -> Plan {
    if let Some((placement, routing)) = routing {
        let restore = routing.restored(release, placement);
        if !restore.changes.is_empty() {
            return restore;
        }
    }
    let mut changes = Vec::new();
    let mut seen = gray_seen(release, observed);
    let mut gone = Vec::new();
    let mut left = Vec::new();
    for (i, gray) in release.gray_deployments.iter().enumerate() {
        let name = release
            .status
            .gray_deployments
            .get(i)
            .map(|o| name_of(o).to_owned())
            .unwrap_or_default();
        let place = format!("{name} ({})", gray.cluster_id);
        match observed.gray.get(i).and_then(Option::as_ref) {
            Some(object) if is_ours(object, release) => {
                changes.push(PlannedObject {
                    cluster_id: gray.cluster_id.clone(),
                    kind: ObjectKind::Deployment,
                    change: Change::Delete,
                    object: pinned_identity("apps/v1", "Deployment", object, &release.namespace),
                });
                gone.push(place);
            }
            Some(_) => {
                left.push(place);
                continue;
            }
            None => gone.push(place),
        }
        if let Some(seen) = seen.get_mut(i) {
            seen.status = None;
            seen.deleted = release
                .status
                .gray_seen
                .get(i)
                .and_then(|s| s.deleted)
                .or(Some(observed.now));
        }
    }
    let (reason, message) = if left.is_empty() {
        (
            Reason::Deleted,
            format!("the gray Deployments are deleted: {}", gone.join(", ")),
        )
    } else {
        (
            Reason::NotOwned,
            format!(
                "left as they are, not being this release's: {}{}",
                left.join(", "),
                if gone.is_empty() {
                    String::new()
                } else {
                    format!("; deleted: {}", gone.join(", "))
                }
            ),
        )
    };
    let (routing_reason, routing_message) = if routing.is_some() {
        (
            Reason::Restored,
            "the routing is back as its owners left it",
        )
    } else {
        (
            Reason::Untouched,
            "the release had not changed the routing: nothing to restore",
        )
    };
    Plan {
        changes,
        step: Some(Move::Finish),
        traffic: Some(TrafficPolicy::Weight(0)),
        gray_seen: Some(seen),
        ..Plan::default()
    }
    .condition(ConditionType::GrayReady, false, reason, message)
    .condition(
        ConditionType::TrafficApplied,
        true,
        routing_reason,
        routing_message,
    )
}
