use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::domain::{ApiError, CreateRelease, Principal, ReleaseDraft, ReleaseManager};
use crate::pb::asm::v2 as pb;
use crate::pb::asm::v2::release_service_server::ReleaseService;

/// `asm.v2.ReleaseService` over the domain's [`ReleaseManager`].
#[derive(Clone)]
pub struct ReleaseApi {
    manager: Arc<ReleaseManager>,
}

impl ReleaseApi {
    pub fn new(manager: Arc<ReleaseManager>) -> Self {
        Self { manager }
    }
}

/// The caller, as the authentication layer put it on the request.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("authentication required".into()).into())
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let draft = ReleaseDraft::try_from(request.release.unwrap_or_default())?;
        let created = self
            .manager
            .create(
                &principal,
                CreateRelease {
                    mesh_id: request.mesh_id,
                    namespace: request.namespace,
                    draft,
                },
            )
            .await?;
        Ok(Response::new(created.into()))
    }
}
