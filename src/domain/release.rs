//! The release resource as the domain sees it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::change::Preview;
use super::conditions::StatusCondition;
use super::kinds::{Phase, ReleaseType};
use super::object::JsonObject;
use super::strategy::{Strategy, StrategyDraft, StrategyStatus};
use super::traffic::{TrafficPolicy, TrafficPolicyDraft};

pub const KIND: &str = "Release";
pub const API_VERSION: &str = "asm/v2";

/// A release as the client sent it: nothing checked yet. Empty strings stand
/// for absent fields, as in proto3.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReleaseDraft {
    pub kind: String,
    pub api_version: String,
    pub mesh_id: String,
    pub name: String,
    pub namespace: String,
    /// On update: the resourceVersion the client last saw, if it sent one.
    pub resource_version: String,
    pub service_name: String,
    pub cluster_id: String,
    pub deployment_name: String,
    pub version: String,
    pub release_type: String,
    pub gray_deployments: Vec<GrayDeploymentDraft>,
    /// `spec.trafficPolicy`, where given.
    pub traffic_policy: Option<TrafficPolicyDraft>,
    /// `spec.strategy`, where given.
    pub strategy: Option<StrategyDraft>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GrayDeploymentDraft {
    pub cluster_id: String,
    pub template: Option<Arc<JsonObject>>,
}

/// Names one release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ReleaseRef {
    pub mesh_id: String,
    pub namespace: String,
    pub name: String,
}

impl ReleaseRef {
    pub fn of(release: &Release) -> Self {
        ReleaseRef {
            mesh_id: release.mesh_id.clone(),
            namespace: release.namespace.clone(),
            name: release.name.clone(),
        }
    }
}

/// A stored release: valid by construction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub mesh_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: Uuid,
    /// The store revision of the last write to this release; 0 until stored.
    #[serde(default)]
    pub resource_version: u64,
    pub service_name: String,
    pub cluster_id: String,
    pub deployment_name: String,
    pub version: String,
    pub release_type: ReleaseType,
    pub gray_deployments: Vec<GrayDeployment>,
    /// Who gets which requests (weight 0 unless set).
    #[serde(default)]
    pub traffic_policy: TrafficPolicy,
    /// The steps the release runs by itself, if any.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Counts changes of the spec: 1 on create.
    #[serde(default = "first_generation")]
    pub generation: u32,
    pub status: ReleaseStatus,
}

fn first_generation() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrayDeployment {
    pub cluster_id: String,
    /// The template as the client sent it (shared: copies of a release
    /// share their templates instead of copying them).
    pub template: Arc<JsonObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    pub phase: Phase,
    pub start_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// The original workload, once the service knows it.
    pub deployment: Option<Arc<JsonObject>>,
    /// Each gray Deployment as this release creates it.
    pub gray_deployments: Vec<Arc<JsonObject>>,
    /// The generation of the spec the clusters reflect.
    #[serde(default)]
    pub observed_generation: u32,
    #[serde(default)]
    pub conditions: Vec<StatusCondition>,
    /// The traffic policy applied in the clusters now, once one is.
    #[serde(default)]
    pub traffic: Option<TrafficPolicy>,
    /// When `traffic` last changed: metric checks never read a window from
    /// before it.
    #[serde(default)]
    pub traffic_time: Option<DateTime<Utc>>,
    /// When the release entered its phase (for the progress deadline).
    #[serde(default)]
    pub phase_time: Option<DateTime<Utc>>,
    /// The routing as its owners left it, saved before the first change so
    /// that a cancel can restore it.
    #[serde(default)]
    pub saved_routing: Option<SavedRouting>,
    /// What the driver last saw of each gray Deployment, in the order of
    /// the spec: kept apart from `gray_deployments`, which is what this
    /// release applies and must never take in what was observed (a
    /// desired object that changes with each observation is written again
    /// and again).
    #[serde(default)]
    pub gray_seen: Vec<SeenDeployment>,
    /// How far `spec.strategy` got, once the release runs one.
    #[serde(default)]
    pub strategy: Option<StrategyStatus>,
    /// On a dry-run answer only: what the next step would change. Never stored.
    #[serde(skip)]
    pub plan: Preview,
}

impl ReleaseStatus {
    /// The status of a release accepted at `now`.
    pub fn pending(now: DateTime<Utc>, gray_deployments: Vec<Arc<JsonObject>>) -> Self {
        ReleaseStatus {
            phase: Phase::Pending,
            start_time: now,
            update_time: now,
            deployment: None,
            gray_deployments,
            observed_generation: 0,
            conditions: Vec::new(),
            traffic: None,
            traffic_time: None,
            phase_time: Some(now),
            saved_routing: None,
            gray_seen: Vec::new(),
            strategy: None,
            plan: Preview::default(),
        }
    }

    /// The gray Deployments as a client sees them: each as this release
    /// applies it, with the `status` its cluster last reported while it
    /// exists, and `metadata.deletionTimestamp` once this release deleted
    /// it.
    pub fn gray_deployments_shown(&self) -> Vec<Arc<JsonObject>> {
        self.gray_deployments
            .iter()
            .enumerate()
            .map(|(i, applied)| match self.gray_seen.get(i) {
                None => applied.clone(),
                Some(seen) => Arc::new(seen.shown(applied)),
            })
            .collect()
    }
}

/// What the driver last saw of a Deployment in its cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenDeployment {
    /// Its `status` as the cluster reported it, while it exists and is
    /// this release's.
    #[serde(default)]
    pub status: Option<Arc<JsonObject>>,
    /// When this release deleted it (or found it gone when it came to).
    #[serde(default)]
    pub deleted: Option<DateTime<Utc>>,
}

impl SeenDeployment {
    /// `applied` with what was seen of it.
    pub fn shown(&self, applied: &JsonObject) -> JsonObject {
        let mut shown = applied.clone();
        shown.remove("status");
        if let Some(status) = &self.status {
            shown.insert(
                "status".into(),
                serde_json::Value::Object((**status).clone()),
            );
        }
        if let Some(deleted) = self.deleted
            && let Some(serde_json::Value::Object(meta)) = shown.get_mut("metadata")
        {
            meta.insert(
                "deletionTimestamp".into(),
                serde_json::Value::from(deleted.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            );
        }
        shown
    }
}

/// The Istio objects for the host as they were before this release changed
/// them: `None` where there was no such object (the release created it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedRouting {
    pub virtual_service: Option<Arc<JsonObject>>,
    pub destination_rule: Option<Arc<JsonObject>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_release_without_a_generation_is_at_its_first() {
        let release = serde_json::json!({
            "mesh_id": "m", "namespace": "ns", "name": "reviews-canary",
            "uid": "01234567-89ab-cdef-0123-456789abcdef",
            "service_name": "reviews", "cluster_id": "c", "deployment_name": "reviews-v1",
            "version": "v2", "release_type": "Canary", "gray_deployments": [],
            "status": {"phase": "Pending", "start_time": "2026-11-29T08:00:00Z",
                       "update_time": "2026-11-29T08:00:00Z", "deployment": null,
                       "gray_deployments": []}
        });
        let release: Release = serde_json::from_value(release).unwrap();
        assert_eq!(release.generation, 1);
        assert_eq!(release.resource_version, 0);
        assert_eq!(release.traffic_policy, TrafficPolicy::default());
    }
}
