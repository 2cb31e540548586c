//! The planner: from a release and what was observed in its clusters, the
//! objects to apply or delete in each cluster and the phase move to record
//! after them. Pure: the cluster driver only reads, carries out the plan and
//! writes the status; every decision is here, where golden files and
//! property tests pin it.
//!
//! Routing is always computed from the routing as its owners left it (saved
//! before the first change), never from what this service wrote before, so
//! that a plan is the same however many times it runs, and a cancel restores
//! exactly what was there.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::deployment::VERSION_LABEL;
use super::istio::{
    Destination, DestinationRuleSpec, HttpMatchRequest, HttpRoute, HttpRouteDestination, IstioApi,
    Subset, VirtualServiceSpec, names_service, spec_of,
};
use super::mesh::Mesh;
use super::phase::Move;
use super::release::{JsonObject, Phase, Release, SavedRouting, SeenDeployment};
use super::traffic::{MatchRule, MatchValue, TrafficPolicy};

/// The label on every object this service creates or edits.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "meshrelease";
/// The annotation naming the release that created or edited an object.
pub const RELEASE_UID_ANNOTATION: &str = "meshrelease.io/release-uid";
/// The annotation holding a digest of the gray Deployment as this release
/// last applied it: the object in the cluster is up to date when it matches
/// (the API server's defaults and normalisations make a field-by-field
/// comparison unreliable).
pub const TEMPLATE_HASH_ANNOTATION: &str = "meshrelease.io/template-hash";
/// The label the original Deployment's pods must carry besides `version`.
pub const APP_LABEL: &str = "app";
/// How long a gray Deployment may take to become ready when its template
/// does not say (`spec.progressDeadlineSeconds`), as in Kubernetes.
pub const DEFAULT_PROGRESS_DEADLINE_SECS: i64 = 600;

pub const READY: &str = "GrayReady";
pub const REACHABLE: &str = "ClustersReachable";
pub const TRAFFIC_APPLIED: &str = "TrafficApplied";
pub const FAILED: &str = "Failed";

/// A gray Deployment (or a routing object) that is not this release's.
pub const NOT_OWNED: &str = "NotOwned";
/// More than one VirtualService or DestinationRule for the host.
pub const AMBIGUOUS_ROUTING: &str = "AmbiguousRouting";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum ObjectKind {
    Deployment,
    VirtualService,
    DestinationRule,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Deployment => "Deployment",
            ObjectKind::VirtualService => "VirtualService",
            ObjectKind::DestinationRule => "DestinationRule",
        }
    }
}

/// What to do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Create it or change it to this (gray Deployments by server-side
    /// apply; Istio objects by a replace pinned to the resourceVersion read).
    Apply,
    /// Delete it.
    Delete,
    /// Set its replicas to 0 (the original on end, when so configured).
    ScaleToZero,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Apply => "apply",
            Change::Delete => "delete",
            Change::ScaleToZero => "scale",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedObject {
    pub cluster_id: String,
    pub kind: ObjectKind,
    pub change: Change,
    /// The whole object for an apply; its apiVersion, kind and metadata
    /// (name, namespace) for a delete or scale.
    pub object: JsonObject,
}

/// What happens to the original Deployment when a release ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OriginalOnEnd {
    /// As the cloud service does.
    #[default]
    Delete,
    ScaleToZero,
}

/// Where things are and how to write them, from the mesh's configuration.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where VirtualServices and DestinationRules live.
    pub istio_cluster: String,
    pub istio_api: IstioApi,
    pub original_on_end: OriginalOnEnd,
}

impl Context {
    pub fn for_release(mesh: &Mesh, release: &Release) -> Self {
        Context {
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
    /// in the Istio config cluster (the planner picks those for the host);
    /// shared, since every release of a namespace reads the same lists.
    pub virtual_services: std::sync::Arc<Vec<JsonObject>>,
    pub destination_rules: std::sync::Arc<Vec<JsonObject>>,
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
    /// Conditions to set: type, true or false, reason, message.
    pub conditions: Vec<(String, bool, String, String)>,
    /// The routing to save before the first change (on the move to Deploying).
    pub saved_routing: Option<SavedRouting>,
    /// The original Deployment as it will be once the changes are made, for
    /// `status.deployment` (marked deleted by an end that deletes it).
    pub deployment: Option<Arc<JsonObject>>,
    /// The gray Deployments as they will be once the changes are made.
    pub gray_seen: Option<Vec<SeenDeployment>>,
}

impl Plan {
    fn condition(mut self, kind: &str, status: bool, reason: &str, message: String) -> Self {
        self.conditions
            .push((kind.to_owned(), status, reason.to_owned(), message));
        self
    }

    fn fail(reason: &str, message: String) -> Self {
        Plan {
            step: Some(Move::Fail),
            ..Plan::default()
        }
        .condition(FAILED, true, reason, message)
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
pub fn plan(release: &Release, observed: &Observation, ctx: &Context) -> Plan {
    let phase = release.status.phase;
    if matches!(phase, Phase::Ended | Phase::Canceled) {
        return Plan::default();
    }
    if !observed.unreachable.is_empty() {
        return Plan::default().condition(
            REACHABLE,
            false,
            "Unreachable",
            format!(
                "waiting for cluster(s) {} to answer",
                observed.unreachable.join(", ")
            ),
        );
    }
    let reachable = |plan: Plan| {
        plan.condition(
            REACHABLE,
            true,
            "Reachable",
            "every cluster of the release answered".into(),
        )
    };
    let mut plan = reachable(plan_reachable(release, observed, ctx));
    if plan.deployment.is_none() {
        plan.deployment = observed.original.clone().map(Arc::new);
    }
    if plan.gray_seen.is_none() {
        plan.gray_seen = Some(gray_seen(release, observed));
    }
    plan
}

/// The plan once every cluster answered.
fn plan_reachable(release: &Release, observed: &Observation, ctx: &Context) -> Plan {
    let phase = release.status.phase;
    let active = matches!(phase, Phase::Pending | Phase::Deploying | Phase::Running);
    // A gray Deployment of another release, or of nobody's, is never
    // adopted: applying over it would hand it to this release, whose
    // cancel would then delete it.
    if active && let Some(message) = foreign_gray(release, observed) {
        return Plan::fail(NOT_OWNED, message);
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
        Err((reason, message)) => {
            return match phase {
                Phase::Pending | Phase::Deploying | Phase::Running => Plan::fail(reason, message),
                Phase::Failed
                | Phase::Ending
                | Phase::Canceling
                | Phase::Ended
                | Phase::Canceled => {
                    Plan::default().condition(TRAFFIC_APPLIED, false, reason, message)
                }
            };
        }
    };
    if !routing.foreign.is_empty() && phase != Phase::Canceling {
        return foreign_routing(release, ctx, &routing);
    }
    match phase {
        Phase::Pending => Plan {
            step: Some(Move::StartDeploying),
            saved_routing: Some(routing.saved.clone()),
            ..Plan::default()
        },
        Phase::Deploying | Phase::Running => deploy(release, observed, ctx, &routing),
        Phase::Failed => {
            let mut plan = routing.put(ctx, release, &TrafficPolicy::Weight(0));
            plan.traffic = Some(TrafficPolicy::Weight(0));
            plan
        }
        Phase::Ending => end(release, observed, ctx, &routing),
        Phase::Canceling => cancel(release, observed, Some((ctx, &routing))),
        Phase::Ended | Phase::Canceled => Plan::default(),
    }
}

/// A VirtualService or DestinationRule for the host appeared that is
/// neither the one its owners had nor this release's: two of one kind for
/// a host are undefined in Istio (each proxy picks one). The release never
/// writes someone else's object; it puts the routing back as its owners
/// left it (deleting what it created) and, if active, fails saying why.
fn foreign_routing(release: &Release, ctx: &Context, routing: &Routing) -> Plan {
    let message = format!(
        "{} also name{} host {:?}, beside the routing this release edits; two VirtualServices (or DestinationRules) for one host are undefined in Istio. The routing is put back as its owners left it and what this release created is deleted; remove the extra object, then cancel this release and start again",
        routing.foreign.join(", "),
        if routing.foreign.len() == 1 { "s" } else { "" },
        release.service_name
    );
    let mut plan = routing.restored(release, ctx);
    plan.traffic = Some(TrafficPolicy::Weight(0));
    let plan = plan.condition(TRAFFIC_APPLIED, false, AMBIGUOUS_ROUTING, message.clone());
    match release.status.phase {
        Phase::Pending | Phase::Deploying | Phase::Running => Plan {
            step: Some(Move::Fail),
            ..plan
        }
        .condition(FAILED, true, AMBIGUOUS_ROUTING, message),
        Phase::Failed | Phase::Ending | Phase::Canceling | Phase::Ended | Phase::Canceled => plan,
    }
}

/// Deploying and Running: the gray Deployments applied, the subsets in
/// place, and traffic per the policy once every gray Deployment is ready.
fn deploy(release: &Release, observed: &Observation, ctx: &Context, routing: &Routing) -> Plan {
    let mut changes = gray_changes(release, observed);
    let ready = gray_ready(release, observed);
    let policy = if ready {
        release.traffic_policy.clone()
    } else {
        // Weight never goes to a subset that is not ready.
        TrafficPolicy::Weight(0)
    };
    let mut plan = routing.put(ctx, release, &policy);
    changes.append(&mut plan.changes);
    plan.changes = changes;
    plan.traffic = Some(policy);
    let phase = release.status.phase;
    if ready {
        if phase == Phase::Deploying {
            plan.step = Some(Move::GrayReady);
        }
        return plan.condition(
            READY,
            true,
            "Ready",
            "every gray Deployment is ready".into(),
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
                READY,
                false,
                "ProgressDeadlineExceeded",
                format!(
                    "the gray Deployments were not ready within {} s; traffic stays on the original",
                    deadline.num_seconds()
                ),
            )
            .condition(
                FAILED,
                true,
                "ProgressDeadlineExceeded",
                "gray Deployments not ready in time".into(),
            );
    }
    plan.condition(
        READY,
        false,
        "NotReady",
        "waiting for the gray Deployments to become ready".into(),
    )
}

/// Ending: traffic all to the gray version first; then, once the routing
/// the cluster holds says so, the original goes.
fn end(release: &Release, observed: &Observation, ctx: &Context, routing: &Routing) -> Plan {
    let final_routes = routing.ended(release, ctx);
    if !final_routes.changes.is_empty() {
        return final_routes;
    }
    let change = match ctx.original_on_end {
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
        TRAFFIC_APPLIED,
        true,
        "Applied",
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
    routing: Option<(&Context, &Routing)>,
) -> Plan {
    if let Some((ctx, routing)) = routing {
        let restore = routing.restored(release, ctx);
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
            "Deleted",
            format!("the gray Deployments are deleted: {}", gone.join(", ")),
        )
    } else {
        (
            NOT_OWNED,
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
        ("Restored", "the routing is back as its owners left it")
    } else {
        (
            "Untouched",
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
    .condition(READY, false, reason, message)
    .condition(
        TRAFFIC_APPLIED,
        true,
        routing_reason,
        routing_message.into(),
    )
}

/// What was seen of each gray Deployment: its status while it exists and
/// is this release's (what another made is none of this release's to
/// show), and a deletion recorded earlier.
pub fn gray_seen(release: &Release, observed: &Observation) -> Vec<SeenDeployment> {
    (0..release.gray_deployments.len())
        .map(|i| {
            let status = observed
                .gray
                .get(i)
                .and_then(Option::as_ref)
                .filter(|object| is_ours(object, release))
                .and_then(|object| object.get("status"))
                .and_then(Value::as_object)
                .map(|status| Arc::new(status.clone()));
            let deleted = match status {
                Some(_) => None,
                None => release.status.gray_seen.get(i).and_then(|s| s.deleted),
            };
            SeenDeployment { status, deleted }
        })
        .collect()
}

/// The first gray Deployment that exists but is not this release's, said
/// as the reason the release cannot go on.
fn foreign_gray(release: &Release, observed: &Observation) -> Option<String> {
    release
        .gray_deployments
        .iter()
        .zip(&observed.gray)
        .find_map(|(gray, seen)| {
            let object = seen.as_ref()?;
            if is_ours(object, release) {
                return None;
            }
            let owner = match uid_of(object) {
                Some(uid) => format!("belongs to another release (meshrelease.io/release-uid {uid})"),
                None => {
                    let managers = managers_of(object);
                    if managers.is_empty() {
                        "was not made by this release".to_owned()
                    } else {
                        format!(
                            "was not made by this release (field managers: {})",
                            managers.join(", ")
                        )
                    }
                }
            };
            Some(format!(
                "Deployment {:?} in cluster {} {owner}: a release never takes over or deletes what it did not create. Remove that Deployment, or name the gray one differently (its template's metadata.name), and start a new release",
                name_of(object),
                gray.cluster_id
            ))
        })
}

/// An object as shown once deleted: as last read, without its status, with
/// `metadata.deletionTimestamp`.
fn deleted(object: &JsonObject, now: DateTime<Utc>) -> JsonObject {
    let mut shown = object.clone();
    shown.remove("status");
    let meta = object_mut(&mut shown, "metadata");
    if !meta.contains_key("deletionTimestamp") {
        meta.insert(
            "deletionTimestamp".into(),
            Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    shown
}

/// The gray Deployments to apply: each missing, or last applied from
/// another template (its digest annotation differs).
fn gray_changes(release: &Release, observed: &Observation) -> Vec<PlannedObject> {
    release
        .status
        .gray_deployments
        .iter()
        .zip(&release.gray_deployments)
        .enumerate()
        .filter_map(|(i, (completed, gray))| {
            let desired = gray_object(completed, release);
            let current = observed.gray.get(i).and_then(Option::as_ref);
            // Only this release's own, or a new one (what is not its own
            // fails the release before this: see `foreign_gray`).
            let up_to_date = current.is_some_and(|current| {
                !is_ours(current, release) || template_hash(current) == template_hash(&desired)
            });
            (!up_to_date).then(|| PlannedObject {
                cluster_id: gray.cluster_id.clone(),
                kind: ObjectKind::Deployment,
                change: Change::Apply,
                object: desired,
            })
        })
        .collect()
}

/// A gray Deployment as applied: the completed template, marked, with the
/// digest of what was applied. A function of the spec alone: nothing
/// observed in a cluster (a `status` that an older version of this service
/// stored beside the template) is ever part of it, or every observation
/// would be a change, applied again and again.
pub fn gray_object(completed: &JsonObject, release: &Release) -> JsonObject {
    use sha2::{Digest, Sha256};
    let mut object = completed.clone();
    object.remove("status");
    mark(&mut object, release);
    let digest = Sha256::digest(serde_json::to_vec(&object).unwrap_or_default());
    object_mut(object_mut(&mut object, "metadata"), "annotations").insert(
        TEMPLATE_HASH_ANNOTATION.into(),
        Value::from(hex::encode(&digest[..16])),
    );
    object
}

fn template_hash(object: &JsonObject) -> Option<&str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(TEMPLATE_HASH_ANNOTATION)?
        .as_str()
}

/// Whether every gray Deployment is ready, as Kubernetes' rollout status
/// tells it: the controller saw the latest spec, and every desired replica
/// is updated and available, with no old one left.
fn gray_ready(release: &Release, observed: &Observation) -> bool {
    release.gray_deployments.len() == observed.gray.len()
        && observed
            .gray
            .iter()
            .zip(&release.status.gray_deployments)
            .all(|(object, completed)| {
                let desired = gray_object(completed, release);
                object.as_ref().is_some_and(|o| {
                    template_hash(o) == template_hash(&desired) && deployment_ready(o)
                })
            })
}

pub fn deployment_ready(object: &JsonObject) -> bool {
    let Ok(deployment) = serde_json::from_value::<Deployment>(Value::Object(object.clone())) else {
        return false;
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status else {
        return false;
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
}

fn progress_deadline(release: &Release) -> TimeDelta {
    let secs = release
        .status
        .gray_deployments
        .iter()
        .filter_map(|d| d.get("spec")?.get("progressDeadlineSeconds")?.as_i64())
        .max()
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECS);
    TimeDelta::seconds(secs.max(1))
}

/// The VirtualService and DestinationRule of the host, and the routing as
/// the owners left it.
#[derive(Debug, Clone)]
struct Routing {
    /// The original's `version` label value.
    original_version: String,
    /// The objects this release edits, as read now (for their metadata and
    /// resourceVersion): the owners' (by the name saved), or the one this
    /// release created where the owners had none.
    current_vs: Option<JsonObject>,
    current_dr: Option<JsonObject>,
    /// Objects for the host that are neither: never written or deleted,
    /// each as "Kind name".
    foreign: Vec<String>,
    saved: SavedRouting,
}

type Refusal = (&'static str, String);

impl Routing {
    fn read(release: &Release, observed: &Observation) -> Result<Self, Refusal> {
        let service = &release.service_name;
        let namespace = &release.namespace;
        let Some(original) = &observed.original else {
            return match release.status.phase {
                // Ended with the original deleted, or canceled whatever
                // became of it: nothing to route around.
                Phase::Ending | Phase::Canceling => Ok(Self::after_original(release, observed)?),
                Phase::Pending
                | Phase::Deploying
                | Phase::Running
                | Phase::Failed
                | Phase::Ended
                | Phase::Canceled => Err((
                    "OriginalNotFound",
                    format!(
                        "Deployment {:?} is not in namespace {namespace:?} of cluster {:?}",
                        release.deployment_name, release.cluster_id
                    ),
                )),
            };
        };
        let labels = pod_labels(original);
        let (Some(_app), Some(version)) = (labels.get(APP_LABEL), labels.get(VERSION_LABEL)) else {
            return Err((
                "OriginalUnlabeled",
                format!(
                    "the pods of Deployment {:?} must carry the labels \"app\" and \"version\"",
                    release.deployment_name
                ),
            ));
        };
        if *version == release.version {
            return Err((
                "SameVersion",
                format!(
                    "the original Deployment is already version {version:?}; the gray version must differ"
                ),
            ));
        }
        match &observed.service {
            None => {
                return Err((
                    "ServiceNotFound",
                    format!("Service {service:?} is not in namespace {namespace:?}"),
                ));
            }
            Some(svc) => {
                let selects_version = svc
                    .get("spec")
                    .and_then(|s| s.get("selector"))
                    .and_then(Value::as_object)
                    .is_some_and(|s| s.contains_key(VERSION_LABEL));
                if selects_version {
                    return Err((
                        "ServiceSelectsVersion",
                        format!(
                            "the selector of Service {service:?} names \"version\": it would send traffic to one version only"
                        ),
                    ));
                }
            }
        }
        let mut routing = Self::after_original(release, observed)?;
        routing.original_version = version.clone();
        Ok(routing)
    }

    /// The host's objects, without reading the original Deployment.
    fn after_original(release: &Release, observed: &Observation) -> Result<Self, Refusal> {
        let for_host = |objects: &[JsonObject], host_of: fn(&JsonObject) -> Vec<String>| {
            objects
                .iter()
                .filter(|o| {
                    host_of(o)
                        .iter()
                        .any(|h| names_service(h, &release.service_name, &release.namespace))
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        let vs = for_host(&observed.virtual_services, |o| {
            spec_of::<VirtualServiceSpec>(o)
                .map(|s| s.hosts)
                .unwrap_or_default()
        });
        let dr = for_host(&observed.destination_rules, |o| {
            spec_of::<DestinationRuleSpec>(o)
                .map(|s| vec![s.host])
                .unwrap_or_default()
        });
        let original_version = release
            .status
            .deployment
            .as_deref()
            .and_then(|d| pod_labels(d).get(VERSION_LABEL).cloned())
            .unwrap_or_default();
        let Some(saved) = release.status.saved_routing.clone() else {
            // Not started yet: what is there now is the owners' routing,
            // to be saved; two of a kind for the host is not a routing
            // this release can build on.
            for (kind, found) in [("VirtualServices", &vs), ("DestinationRules", &dr)] {
                if found.len() > 1 {
                    let names: Vec<&str> = found.iter().map(name_of).collect();
                    return Err((
                        AMBIGUOUS_ROUTING,
                        format!(
                            "{kind} {} all name host {:?}; Istio would pick one at random",
                            names.join(", "),
                            release.service_name
                        ),
                    ));
                }
            }
            let current_vs = vs.into_iter().next();
            let current_dr = dr.into_iter().next();
            return Ok(Routing {
                original_version,
                saved: SavedRouting {
                    virtual_service: current_vs.clone().map(Arc::new),
                    destination_rule: current_dr.clone().map(Arc::new),
                },
                current_vs,
                current_dr,
                foreign: Vec::new(),
            });
        };
        // Started: the objects it edits are the owners' saved ones (by
        // name), or its own where the owners had none; anything else for
        // the host appeared since, and is someone else's.
        let mut foreign = Vec::new();
        let mut edited = |found: Vec<JsonObject>, saved: Option<&JsonObject>, kind: &str| {
            let mut current = None;
            for object in found {
                let edits = match saved {
                    Some(saved) => name_of(&object) == name_of(saved),
                    None => is_ours(&object, release),
                };
                if edits && current.is_none() {
                    current = Some(object);
                } else {
                    foreign.push(format!("{kind} {:?}", name_of(&object)));
                }
            }
            current
        };
        let current_vs = edited(vs, saved.virtual_service.as_deref(), "VirtualService");
        let current_dr = edited(dr, saved.destination_rule.as_deref(), "DestinationRule");
        Ok(Routing {
            original_version,
            current_vs,
            current_dr,
            foreign,
            saved,
        })
    }

    /// The owners' VirtualService spec, or the one this service creates.
    fn base_vs(&self, release: &Release) -> VirtualServiceSpec {
        self.saved
            .virtual_service
            .as_deref()
            .and_then(|o| spec_of(o).ok())
            .unwrap_or_else(|| VirtualServiceSpec {
                hosts: vec![release.service_name.clone()],
                http: Some(vec![HttpRoute {
                    route: Some(vec![HttpRouteDestination {
                        destination: Destination {
                            host: release.service_name.clone(),
                            ..Destination::default()
                        },
                        ..HttpRouteDestination::default()
                    }]),
                    ..HttpRoute::default()
                }]),
                rest: JsonObject::new(),
            })
    }

    fn base_dr(&self, release: &Release) -> DestinationRuleSpec {
        self.saved
            .destination_rule
            .as_deref()
            .and_then(|o| spec_of(o).ok())
            .unwrap_or_else(|| DestinationRuleSpec {
                host: release.service_name.clone(),
                ..DestinationRuleSpec::default()
            })
    }

    /// The objects for traffic split by `policy`, where they differ from
    /// what the cluster holds.
    fn put(&self, ctx: &Context, release: &Release, policy: &TrafficPolicy) -> Plan {
        let plan = self.routing_changes(release, ctx, policy, true);
        let applied = plan.changes.is_empty();
        plan.condition(
            TRAFFIC_APPLIED,
            applied,
            if applied { "Applied" } else { "Applying" },
            if applied {
                "the routing in the cluster matches the traffic policy".into()
            } else {
                "changing the VirtualService and DestinationRule".into()
            },
        )
    }

    /// All traffic to the gray version, the original's subset out of the
    /// routes (and of the DestinationRule, where this release added it).
    fn ended(&self, release: &Release, ctx: &Context) -> Plan {
        self.routing_changes(release, ctx, &TrafficPolicy::Weight(100), false)
    }

    /// The DestinationRule and VirtualService for `policy`, in the order that
    /// never leaves a route naming a missing subset: with the original's
    /// subset kept, make before break (subsets, then routes); without it,
    /// break after make (routes, then subsets).
    fn routing_changes(
        &self,
        release: &Release,
        ctx: &Context,
        policy: &TrafficPolicy,
        with_original: bool,
    ) -> Plan {
        let subsets = match self.subsets(release, with_original) {
            Ok(subsets) => subsets,
            // Only an active release can fail; one that failed, ends or is
            // canceled says why its routing is not applied (asking to fail
            // it again was a move the phase machine refuses, every round).
            Err(message) => {
                return match release.status.phase {
                    Phase::Pending | Phase::Deploying | Phase::Running => {
                        Plan::fail("SubsetConflict", message)
                    }
                    Phase::Failed
                    | Phase::Ending
                    | Phase::Canceling
                    | Phase::Ended
                    | Phase::Canceled => {
                        Plan::default().condition(TRAFFIC_APPLIED, false, "SubsetConflict", message)
                    }
                };
            }
        };
        let http = routes_for(
            &self.base_vs(release),
            release,
            &self.original_version,
            policy,
        );
        let dr = self.put_dr(release, ctx, subsets);
        let vs = self.put_vs(release, ctx, Some(http));
        let changes = if with_original {
            dr.into_iter().chain(vs).collect()
        } else {
            vs.into_iter().chain(dr).collect()
        };
        Plan {
            changes,
            ..Plan::default()
        }
    }

    /// The routing as its owners left it: their objects restored, the ones
    /// this release created deleted.
    fn restored(&self, release: &Release, ctx: &Context) -> Plan {
        let mut changes = Vec::new();
        // The routes first, so that no route names a subset that is gone.
        for (kind, saved, current) in [
            (
                ObjectKind::VirtualService,
                &self.saved.virtual_service,
                &self.current_vs,
            ),
            (
                ObjectKind::DestinationRule,
                &self.saved.destination_rule,
                &self.current_dr,
            ),
        ] {
            match (saved, current) {
                (None, None) => {}
                (None, Some(current)) => {
                    if is_ours(current, release) {
                        changes.push(PlannedObject {
                            cluster_id: ctx.istio_cluster.clone(),
                            kind,
                            change: Change::Delete,
                            object: pinned_identity(
                                ctx.istio_api.api_version(),
                                kind.as_str(),
                                current,
                                &release.namespace,
                            ),
                        });
                    }
                }
                // The owners deleted their object meanwhile: that is
                // theirs to decide, and it is not made again.
                (Some(_), None) => {}
                (Some(saved), Some(current)) => {
                    let mut object = current.clone();
                    let meta = object_mut(&mut object, "metadata");
                    for key in ["labels", "annotations"] {
                        match saved.get("metadata").and_then(|m| m.get(key)) {
                            Some(v) => {
                                meta.insert(key.into(), v.clone());
                            }
                            None => {
                                meta.remove(key);
                            }
                        }
                    }
                    match saved.get("spec") {
                        Some(spec) => object.insert("spec".into(), spec.clone()),
                        None => object.remove("spec"),
                    };
                    if current != &object {
                        changes.push(PlannedObject {
                            cluster_id: ctx.istio_cluster.clone(),
                            kind,
                            change: Change::Apply,
                            object,
                        });
                    }
                }
            }
        }
        Plan {
            changes,
            ..Plan::default()
        }
    }

    /// The DestinationRule's subsets with one per version (or, after an
    /// end, without the original's where this release added it).
    fn subsets(&self, release: &Release, with_original: bool) -> Result<Vec<Subset>, String> {
        let mut subsets = self.base_dr(release).subsets.unwrap_or_default();
        let owners_had = |name: &str| subsets.iter().any(|s| s.name == name);
        let original = subset_name(&self.original_version);
        let original_was_theirs = owners_had(&original);
        for version in [self.original_version.as_str(), release.version.as_str()] {
            let name = subset_name(version);
            let labels = BTreeMap::from([(VERSION_LABEL.to_owned(), version.to_owned())]);
            match subsets.iter().find(|s| s.name == name) {
                Some(s) if s.labels.as_ref() == Some(&labels) => {}
                Some(s) => {
                    return Err(format!(
                        "the DestinationRule already has a subset {:?} with labels {:?}; it must select version {version:?} alone",
                        s.name,
                        s.labels.clone().unwrap_or_default()
                    ));
                }
                None => subsets.push(Subset {
                    name,
                    labels: Some(labels),
                    rest: JsonObject::new(),
                }),
            }
        }
        if !with_original && !original_was_theirs {
            subsets.retain(|s| s.name != original);
        }
        Ok(subsets)
    }

    fn put_dr(
        &self,
        release: &Release,
        ctx: &Context,
        subsets: Vec<Subset>,
    ) -> Option<PlannedObject> {
        let mut spec = self.base_dr(release);
        if let Some(current) = &self.current_dr
            && let Ok(now) = spec_of::<DestinationRuleSpec>(current)
        {
            // Whatever else the owners changed since, stays.
            spec.rest = now.rest;
            spec.host = now.host;
        }
        spec.subsets = Some(subsets);
        self.put_object(
            release,
            ctx,
            ObjectKind::DestinationRule,
            &self.current_dr,
            to_json(&spec),
        )
    }

    fn put_vs(
        &self,
        release: &Release,
        ctx: &Context,
        http: Option<Vec<HttpRoute>>,
    ) -> Option<PlannedObject> {
        let mut spec = self.base_vs(release);
        if let Some(current) = &self.current_vs
            && let Ok(now) = spec_of::<VirtualServiceSpec>(current)
        {
            spec.rest = now.rest;
            spec.hosts = now.hosts;
        }
        spec.http = http;
        self.put_object(
            release,
            ctx,
            ObjectKind::VirtualService,
            &self.current_vs,
            to_json(&spec),
        )
    }

    /// The object with `spec`, marked, unless the cluster holds it already.
    fn put_object(
        &self,
        release: &Release,
        ctx: &Context,
        kind: ObjectKind,
        current: &Option<JsonObject>,
        spec: Value,
    ) -> Option<PlannedObject> {
        let mut object = match current {
            Some(current) => current.clone(),
            None => identity(
                ctx.istio_api.api_version(),
                kind.as_str(),
                &release.service_name,
                &release.namespace,
            ),
        };
        object.insert("spec".into(), spec);
        mark(&mut object, release);
        if current.as_ref() == Some(&object) {
            return None;
        }
        Some(PlannedObject {
            cluster_id: ctx.istio_cluster.clone(),
            kind,
            change: Change::Apply,
            object,
        })
    }
}

/// The HTTP routes for `policy`: every route that sends only to the
/// Service is split between the versions (a match rule gets a copy of the
/// route in front of it, for the gray version); routes to other hosts stay
/// exactly as they are.
fn routes_for(
    base: &VirtualServiceSpec,
    release: &Release,
    original_version: &str,
    policy: &TrafficPolicy,
) -> Vec<HttpRoute> {
    let service = &release.service_name;
    let namespace = &release.namespace;
    let original = subset_name(original_version);
    let gray = subset_name(&release.version);
    let mut out = Vec::new();
    for (index, route) in base
        .http
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let destinations = route.route.clone().unwrap_or_default();
        let ours = !destinations.is_empty()
            && destinations
                .iter()
                .all(|d| names_service(&d.destination.host, service, namespace));
        if !ours {
            out.push(route);
            continue;
        }
        let template = destinations[0].clone();
        let to = |subset: &str, weight: Option<i64>| HttpRouteDestination {
            destination: Destination {
                subset: Some(subset.to_owned()),
                ..template.destination.clone()
            },
            weight,
            rest: template.rest.clone(),
        };
        match policy {
            TrafficPolicy::Weight(w) => {
                let w = i64::from(*w);
                let split = match w {
                    0 => vec![to(&original, None)],
                    100 => vec![to(&gray, None)],
                    _ => vec![to(&original, Some(100 - w)), to(&gray, Some(w))],
                };
                out.push(HttpRoute {
                    route: Some(split),
                    ..route
                });
            }
            TrafficPolicy::Match(rules) => {
                let matches = merged_matches(route.matches.as_deref(), rules);
                if !matches.is_empty() {
                    out.push(HttpRoute {
                        name: Some(gray_route_name(&release.name, route.name.as_deref(), index)),
                        matches: Some(matches),
                        route: Some(vec![to(&gray, None)]),
                        ..route.clone()
                    });
                }
                out.push(HttpRoute {
                    route: Some(vec![to(&original, None)]),
                    ..route
                });
            }
        }
    }
    out
}

fn gray_route_name(release: &str, route: Option<&str>, index: usize) -> String {
    match route {
        Some(name) => format!("{name}-{release}-gray"),
        None => format!("{release}-gray-{index}"),
    }
}

/// Each of the route's own match requests ANDed with each rule (both must
/// hold). A pair that would match one header two ways is left out: no
/// request could satisfy both as one Istio match.
fn merged_matches(
    route: Option<&[HttpMatchRequest]>,
    rules: &[MatchRule],
) -> Vec<HttpMatchRequest> {
    let owners: Vec<HttpMatchRequest> = match route {
        Some(m) if !m.is_empty() => m.to_vec(),
        _ => vec![HttpMatchRequest::default()],
    };
    let mut out = Vec::new();
    for base in &owners {
        'rules: for rule in rules {
            let mut merged = base.clone();
            let (headers, params) = rule_conditions(rule);
            for (target, extra) in [
                (&mut merged.headers, headers),
                (&mut merged.query_params, params),
            ] {
                if extra.is_empty() {
                    continue;
                }
                let map = target.get_or_insert_with(Default::default);
                for (k, v) in extra {
                    if map.contains_key(&k) {
                        continue 'rules;
                    }
                    map.insert(k, v);
                }
            }
            out.push(merged);
        }
    }
    out
}

/// A rule as Istio match conditions: headers (cookie and User-Agent
/// included) and query parameters.
fn rule_conditions(rule: &MatchRule) -> (JsonObject, JsonObject) {
    let string_match = |value: &MatchValue| match value {
        MatchValue::Exact(v) => json!({"exact": v}),
        MatchValue::Regex(v) => json!({"regex": v}),
    };
    let mut headers = JsonObject::new();
    for h in &rule.headers {
        headers.insert(h.name.clone(), string_match(&h.value));
    }
    if let Some(cookie) = &rule.cookie {
        headers.insert("cookie".into(), json!({"regex": cookie}));
    }
    let alternatives = |patterns: Vec<&str>| format!("(?:{})", patterns.join("|"));
    let ua = match (rule.os.is_empty(), rule.browsers.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!(
            ".*{}.*",
            alternatives(rule.os.iter().map(|o| o.user_agent_pattern()).collect())
        )),
        (true, false) => Some(format!(
            ".*{}.*",
            alternatives(
                rule.browsers
                    .iter()
                    .map(|b| b.user_agent_pattern())
                    .collect()
            )
        )),
        (false, false) => {
            // Both must appear, in either order (RE2 has no look-ahead).
            let os = alternatives(rule.os.iter().map(|o| o.user_agent_pattern()).collect());
            let browser = alternatives(
                rule.browsers
                    .iter()
                    .map(|b| b.user_agent_pattern())
                    .collect(),
            );
            Some(format!(".*{os}.*{browser}.*|.*{browser}.*{os}.*"))
        }
    };
    if let Some(ua) = ua {
        headers.insert("user-agent".into(), json!({"regex": ua}));
    }
    let mut params = JsonObject::new();
    for q in &rule.query_params {
        params.insert(q.name.clone(), string_match(&q.value));
    }
    (headers, params)
}

/// A DestinationRule subset name for a version label value (a DNS label:
/// lowercase, with '.' and '_' as '-').
pub fn subset_name(version: &str) -> String {
    version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The labels of a Deployment's pods.
fn pod_labels(deployment: &JsonObject) -> BTreeMap<String, String> {
    deployment
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn name_of(object: &JsonObject) -> &str {
    object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether the object carries this release's uid: only then may the
/// release change or delete an object it did not find as the owners'
/// routing.
fn is_ours(object: &JsonObject, release: &Release) -> bool {
    uid_of(object) == Some(release.uid.to_string().as_str())
}

/// The release uid an object carries, if any.
fn uid_of(object: &JsonObject) -> Option<&str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(RELEASE_UID_ANNOTATION)?
        .as_str()
}

/// The field managers of an object, as its `managedFields` name them.
fn managers_of(object: &JsonObject) -> Vec<String> {
    let mut managers: Vec<String> = object
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("manager")?.as_str().map(str::to_owned))
        .collect();
    managers.dedup();
    managers
}

/// The identity of an object seen in a cluster, with its Kubernetes uid:
/// a delete (or scale) of it carries the uid as a precondition, so that it
/// can never remove a newer object of the same name.
fn pinned_identity(
    api_version: &str,
    kind: &str,
    seen: &JsonObject,
    namespace: &str,
) -> JsonObject {
    let mut object = identity(api_version, kind, name_of(seen), namespace);
    if let Some(uid) = seen.get("metadata").and_then(|m| m.get("uid")) {
        object_mut(&mut object, "metadata").insert("uid".into(), uid.clone());
    }
    object
}

fn identity(api_version: &str, kind: &str, name: &str, namespace: &str) -> JsonObject {
    let Value::Object(object) = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }) else {
        unreachable!("an object literal")
    };
    object
}

/// Marks an object as created or edited by this release.
fn mark(object: &mut JsonObject, release: &Release) {
    let meta = object_mut(object, "metadata");
    object_mut(meta, "labels").insert(MANAGED_BY_LABEL.into(), Value::from(MANAGED_BY));
    object_mut(meta, "annotations").insert(
        RELEASE_UID_ANNOTATION.into(),
        Value::from(release.uid.to_string()),
    );
}

fn object_mut<'a>(object: &'a mut JsonObject, key: &str) -> &'a mut JsonObject {
    let entry = object
        .entry(key)
        .or_insert_with(|| Value::Object(JsonObject::new()));
    if !entry.is_object() {
        *entry = Value::Object(JsonObject::new());
    }
    if let Value::Object(map) = entry {
        map
    } else {
        unreachable!("made an object just above")
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// What a dry run shows: the gray Deployments exactly as the first step
/// applies them. The routing objects depend on what the clusters hold (the
/// original's version label, the owners' VirtualService and
/// DestinationRule), which a dry run does not read.
pub fn preview(release: &Release) -> Vec<PlannedObject> {
    release
        .status
        .gray_deployments
        .iter()
        .zip(&release.gray_deployments)
        .map(|(completed, gray)| PlannedObject {
            cluster_id: gray.cluster_id.clone(),
            kind: ObjectKind::Deployment,
            change: Change::Apply,
            object: gray_object(completed, release),
        })
        .collect()
}
