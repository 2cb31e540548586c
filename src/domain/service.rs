//! The release operations, shared by gRPC and REST: authorization, mesh
//! lookup, validation, naming, and the store's conflict rules.

use std::sync::Arc;

use chrono::{DurationRound, TimeDelta, Utc};
use uuid::Uuid;

use super::authz::{Action, Principal};
use super::error::ApiError;
use super::mesh::Meshes;
use super::release::{Phase, Release, ReleaseDraft, ReleaseStatus};
use super::validation;
use crate::store::{ReleaseStore, StoreError};

/// CreateRelease as the domain receives it from either protocol.
#[derive(Debug, Clone)]
pub struct CreateRelease {
    pub mesh_id: String,
    pub namespace: String,
    pub draft: ReleaseDraft,
}

pub struct ReleaseManager {
    meshes: Meshes,
    store: Arc<dyn ReleaseStore>,
}

impl ReleaseManager {
    pub fn new(meshes: Meshes, store: Arc<dyn ReleaseStore>) -> Self {
        Self { meshes, store }
    }

    pub fn store(&self) -> &Arc<dyn ReleaseStore> {
        &self.store
    }

    /// Validates and stores a new release; it is durable when this returns Ok.
    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateRelease,
    ) -> Result<Release, ApiError> {
        authorize(principal, Action::CreateRelease, &request.mesh_id)?;
        let mesh = self
            .meshes
            .get(&request.mesh_id)
            .ok_or_else(|| ApiError::NotFound(format!("mesh {:?} not found", request.mesh_id)))?;
        let valid = validation::validate(&request.draft, mesh, &request.namespace)
            .map_err(ApiError::invalid)?;

        // Milliseconds: the JSON form then has a fixed, short fraction.
        let now = Utc::now()
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap_or_else(|_| Utc::now());
        let release = Release {
            mesh_id: request.mesh_id,
            namespace: request.namespace,
            name: valid.name,
            uid: Uuid::new_v4(),
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
        };
        match self.store.insert(&release).await {
            Ok(()) => Ok(release),
            Err(StoreError::NameTaken) => Err(ApiError::AlreadyExists(format!(
                "release {:?} already exists in mesh {:?}, namespace {:?}",
                release.name, release.mesh_id, release.namespace
            ))),
            Err(StoreError::ServiceBusy { holder }) => Err(ApiError::AlreadyExists(format!(
                "service {:?} in namespace {:?} already has an active release: {holder:?}",
                release.service_name, release.namespace
            ))),
            Err(StoreError::Unavailable(reason)) => Err(ApiError::Unavailable(reason)),
            Err(StoreError::Internal(cause)) => Err(ApiError::Internal(cause)),
        }
    }
}

fn authorize(principal: &Principal, action: Action, mesh_id: &str) -> Result<(), ApiError> {
    if principal.allows(action, mesh_id) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            subject: principal.subject.clone(),
            action,
            mesh_id: mesh_id.to_owned(),
        })
    }
}
