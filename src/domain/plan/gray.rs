//! The gray Deployments: each as applied (a function of the spec alone),
//! whether the cluster holds it as applied and ready, whose it is, and
//! what a client is shown of it.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

use super::Observation;
use super::marks::{is_ours, mark, owner_in_words};
use crate::domain::change::{Change, ObjectKind, PlannedObject};
use crate::domain::object::{JsonObject, name_of, object_mut};
use crate::domain::release::{Release, SeenDeployment};

/// The annotation holding a digest of the gray Deployment as this release
/// last applied it: the object in the cluster is up to date when it matches
/// (the API server's defaults and normalisations make a field-by-field
/// comparison unreliable).
pub const TEMPLATE_HASH_ANNOTATION: &str = "meshrelease.io/template-hash";
/// How long a gray Deployment may take to become ready when its template
/// does not say (`spec.progressDeadlineSeconds`), as in Kubernetes.
pub const DEFAULT_PROGRESS_DEADLINE_SECS: i64 = 600;

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
pub(super) fn foreign_gray(release: &Release, observed: &Observation) -> Option<String> {
    release
        .gray_deployments
        .iter()
        .zip(&observed.gray)
        .find_map(|(gray, seen)| {
            let object = seen.as_ref()?;
            if is_ours(object, release) {
                return None;
            }
            let owner = owner_in_words(object);
            Some(format!(
                "Deployment {:?} in cluster {} {owner}: a release never takes over or deletes what it did not create. Remove that Deployment, or name the gray one differently (its template's metadata.name), and start a new release",
                name_of(object),
                gray.cluster_id
            ))
        })
}

/// An object as shown once deleted: as last read, without its status, with
/// `metadata.deletionTimestamp`.
pub(super) fn deleted(object: &JsonObject, now: DateTime<Utc>) -> JsonObject {
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
pub(super) fn gray_changes(release: &Release, observed: &Observation) -> Vec<PlannedObject> {
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

pub(super) fn template_hash(object: &JsonObject) -> Option<&str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(TEMPLATE_HASH_ANNOTATION)?
        .as_str()
}

/// Whether every gray Deployment is ready, as Kubernetes' rollout status
/// tells it: the controller saw the latest spec, and every desired replica
/// is updated and available, with no old one left.
pub(super) fn gray_ready(release: &Release, observed: &Observation) -> bool {
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

pub(super) fn progress_deadline(release: &Release) -> TimeDelta {
    let secs = release
        .status
        .gray_deployments
        .iter()
        .filter_map(|d| d.get("spec")?.get("progressDeadlineSeconds")?.as_i64())
        .max()
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECS);
    TimeDelta::seconds(secs.max(1))
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
