//! A mesh, callers, drafts and a manager over the in-memory store.

use std::sync::Arc;

use meshrelease::domain::JsonObject;
use meshrelease::domain::StatusUpdate;
use meshrelease::domain::authz::{Action, Effect, Principal, Statement};
use meshrelease::domain::error::DomainError;
use meshrelease::domain::mesh::{Mesh, Meshes};
use meshrelease::domain::phase::Move;
use meshrelease::domain::release::{GrayDeploymentDraft, ReleaseDraft};
use meshrelease::domain::service::{CreateRelease, PatchRelease, ReleaseManager, ReleaseRef};
use meshrelease::domain::traffic::TrafficPolicyDraft;
use meshrelease::domain::{Release, ReleaseType};
use meshrelease::store::MemoryStore;
use serde_json::{Value, json};

pub const MESH: &str = "mesh-1";
pub const NS: &str = "shop";

pub fn mesh() -> Mesh {
    Mesh {
        id: MESH.into(),
        clusters: vec!["cluster-a".into(), "cluster-b".into()],
        enterprise_project_id: "0".into(),
        ..Mesh::default()
    }
}

pub fn manager() -> ReleaseManager {
    ReleaseManager::new(Meshes::new([mesh()]), Arc::new(MemoryStore::new()))
}

/// A caller allowed everything.
pub fn admin() -> Principal {
    allowed("admin", None)
}

/// A caller allowed `actions` (every action with `None`) on every mesh.
pub fn allowed(subject: &str, actions: Option<Vec<Action>>) -> Principal {
    Principal {
        subject: subject.into(),
        statements: vec![Statement {
            effect: Effect::Allow,
            actions,
            meshes: None,
            conditions: vec![],
        }],
    }
}

pub fn template(image: &str) -> Arc<JsonObject> {
    let Value::Object(map) = json!({
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "reviews"}},
            "template": {
                "metadata": {"labels": {"app": "reviews"}},
                "spec": {"containers": [{"name": "reviews", "image": image}]}
            }
        }
    }) else {
        unreachable!("an object literal")
    };
    Arc::new(map)
}

/// A valid canary release `name` of Service `service`.
pub fn draft(name: &str, service: &str) -> ReleaseDraft {
    ReleaseDraft {
        name: name.into(),
        namespace: NS.into(),
        service_name: service.into(),
        cluster_id: "cluster-a".into(),
        deployment_name: format!("{service}-v1"),
        version: "v2".into(),
        release_type: ReleaseType::Canary.as_str().into(),
        gray_deployments: vec![GrayDeploymentDraft {
            cluster_id: "cluster-b".into(),
            template: Some(template("registry.example/reviews:2.0")),
        }],
        traffic_policy: Some(TrafficPolicyDraft {
            weight: Some(0),
            match_rules: vec![],
        }),
        ..ReleaseDraft::default()
    }
}

pub fn create_request(draft: ReleaseDraft) -> CreateRelease {
    CreateRelease {
        mesh_id: MESH.into(),
        namespace: NS.into(),
        draft,
        dry_run: false,
        client_token: None,
    }
}

pub async fn create(manager: &ReleaseManager, name: &str, service: &str) -> Release {
    manager
        .create(&admin(), create_request(draft(name, service)))
        .await
        .expect("created")
}

pub fn target(name: &str) -> ReleaseRef {
    ReleaseRef {
        mesh_id: MESH.into(),
        namespace: NS.into(),
        name: name.into(),
    }
}

/// The fields an `InvalidArgument` names, in order; panics on another error.
pub fn fields<T: std::fmt::Debug>(result: Result<T, DomainError>) -> Vec<String> {
    match result {
        Err(DomainError::InvalidArgument { violations, .. }) => {
            violations.into_iter().map(|v| v.field).collect()
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Moves the release as the cluster driver would, one status write each.
pub async fn drive(manager: &ReleaseManager, name: &str, steps: &[Move]) -> Release {
    let mut release = manager.read(&target(name)).await.unwrap();
    for step in steps {
        release = manager
            .write_status(
                &target(name),
                release.resource_version,
                StatusUpdate {
                    step: Some(*step),
                    ..StatusUpdate::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{step:?}: {e}"));
    }
    release
}

pub fn weight_patch(name: &str, weight: i32) -> PatchRelease {
    let draft = ReleaseDraft {
        traffic_policy: Some(TrafficPolicyDraft {
            weight: Some(weight),
            match_rules: vec![],
        }),
        ..Default::default()
    };
    PatchRelease {
        target: target(name),
        draft,
        mask: vec!["spec.trafficPolicy.weight".into()],
        dry_run: false,
    }
}

/// A release created and driven to Running (weight 0).
pub async fn running(manager: &ReleaseManager, name: &str, service: &str) -> Release {
    create(manager, name, service).await;
    drive(manager, name, &[Move::StartDeploying, Move::GrayReady]).await
}
