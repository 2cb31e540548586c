use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::api::errors::ApiError;
use crate::domain::progress;
use crate::domain::release::API_VERSION;
use crate::domain::{
    CreateRelease, ListReleases, PatchRelease, Principal, ReleaseDraft, ReleaseManager, ReleaseRef,
    UpdateRelease, WatchReleases,
};
use crate::pb::asm::v2 as pb;
use crate::pb::asm::v2::release_service_server::ReleaseService;
use crate::pb::list::{ReleaseCheckList, ReleaseList};

/// The metadata key (REST: the header) of a client's request id for retries.
pub const CLIENT_TOKEN: &str = "x-client-token";

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

fn release_ref(mesh_id: String, namespace: String, name: String) -> ReleaseRef {
    ReleaseRef {
        mesh_id,
        namespace,
        name,
    }
}

/// The span of one RPC, inside the request's span (which names the request
/// id): the operation, the mesh and the release, each cut to 128 characters
/// so that no client value reaches a log line unbounded.
fn rpc_span(rpc: &'static str, mesh: &str, namespace: &str, name: &str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc,
        mesh = %bounded(mesh),
        namespace = %bounded(namespace),
        release = %bounded(name),
    )
}

/// A name for a log field, cut to 128 characters.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::names::bounded_to(text, 128)
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let client_token = match request.metadata().get(CLIENT_TOKEN) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        ApiError::invalid_field("X-Client-Token", "must be printable ASCII")
                    })?
                    .to_owned(),
            ),
        };
        let request = request.into_inner();
        let name = request
            .release
            .as_ref()
            .and_then(|r| r.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let span = rpc_span("CreateRelease", &request.mesh_id, &request.namespace, &name);
        let draft = ReleaseDraft::try_from(request.release.unwrap_or_default())?;
        let dry_run = request.dry_run;
        let created = self
            .manager
            .create(
                &principal,
                CreateRelease {
                    mesh_id: request.mesh_id,
                    namespace: request.namespace,
                    draft,
                    dry_run: request.dry_run,
                    client_token,
                },
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, true, dry_run, &principal.subject, &created);
        Ok(Response::new(created?.into()))
    }

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("GetRelease", &r.mesh_id, &r.namespace, &r.name);
        let target = release_ref(r.mesh_id, r.namespace, r.name);
        let got = self
            .manager
            .get(&principal, target)
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, false, false, &principal.subject, &got);
        Ok(Response::new(got?.into()))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<ReleaseList>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("ListReleases", &r.mesh_id, &r.namespace, "");
        let page = self
            .manager
            .list(
                &principal,
                ListReleases {
                    mesh_id: r.mesh_id,
                    namespace: optional(r.namespace),
                    limit: r.limit,
                    continue_token: r.r#continue,
                    service_name: optional(r.service_name),
                    phase: optional(r.phase),
                },
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, false, false, &principal.subject, &page);
        let page = page?;
        Ok(Response::new(ReleaseList {
            kind: "ReleaseList".into(),
            api_version: API_VERSION.into(),
            metadata: Some(pb::ListMeta {
                r#continue: page.continue_token.unwrap_or_default(),
            }),
            items: page.releases.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_release(
        &self,
        request: Request<pb::UpdateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("UpdateRelease", &r.mesh_id, &r.namespace, &r.name);
        let draft = ReleaseDraft::try_from(r.release.unwrap_or_default())?;
        let updated = self
            .manager
            .update(
                &principal,
                UpdateRelease {
                    target: release_ref(r.mesh_id, r.namespace, r.name),
                    draft,
                    dry_run: r.dry_run,
                },
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, true, r.dry_run, &principal.subject, &updated);
        Ok(Response::new(updated?.into()))
    }

    async fn patch_release(
        &self,
        request: Request<pb::PatchReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("PatchRelease", &r.mesh_id, &r.namespace, &r.name);
        let release = r.release.unwrap_or_default();
        let message = super::field_mask::pool()
            .get_message_by_name("asm.v2.Release")
            .ok_or_else(|| Status::internal("internal error"))?;
        // AIP-134: no mask means the fields the message populates.
        let proto_paths = match r.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths,
            _ => match serde_json::to_value(&release) {
                Ok(serde_json::Value::Object(json)) => super::field_mask::derive(&message, &json),
                Ok(_) | Err(_) => Vec::new(),
            },
        };
        let mut violations = Vec::new();
        let mut mask = Vec::new();
        for path in &proto_paths {
            match super::field_mask::to_json_path(&message, path, "updateMask") {
                Ok(p) => mask.push(p),
                Err(v) => violations.push(v),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::invalid(violations).into());
        }
        let draft = ReleaseDraft::try_from(release)?;
        let patched = self
            .manager
            .patch(
                &principal,
                PatchRelease {
                    target: release_ref(r.mesh_id, r.namespace, r.name),
                    draft,
                    mask,
                    dry_run: r.dry_run,
                },
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, true, r.dry_run, &principal.subject, &patched);
        Ok(Response::new(patched?.into()))
    }

    async fn delete_release(
        &self,
        request: Request<pb::DeleteReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("DeleteRelease", &r.mesh_id, &r.namespace, &r.name);
        let target = release_ref(r.mesh_id, r.namespace, r.name);
        let deleted = self
            .manager
            .delete(&principal, target, &r.action)
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, true, false, &principal.subject, &deleted);
        Ok(Response::new(deleted?.into()))
    }

    type WatchReleasesStream = WatchStream;

    async fn watch_releases(
        &self,
        request: Request<pb::WatchReleasesRequest>,
    ) -> Result<Response<Self::WatchReleasesStream>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("WatchReleases", &r.mesh_id, &r.namespace, "");
        let events = self
            .manager
            .watch(
                &principal,
                WatchReleases {
                    mesh_id: r.mesh_id,
                    namespace: optional(r.namespace),
                    resource_version: r.resource_version,
                },
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, false, false, &principal.subject, &events);
        let events = events?;
        let stream = ReceiverStream::new(events).map(|event| {
            event
                .map(|e| pb::WatchEvent {
                    r#type: e.kind.as_str().to_owned(),
                    resource_version: e.revision.to_string(),
                    release: Some(e.release.into()),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pause_release(
        &self,
        request: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.act(request, "PauseRelease", |_| progress::Action::Pause)
            .await
    }

    async fn resume_release(
        &self,
        request: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.act(request, "ResumeRelease", |_| progress::Action::Resume)
            .await
    }

    async fn promote_release(
        &self,
        request: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.act(request, "PromoteRelease", |full| {
            progress::Action::Promote { full }
        })
        .await
    }

    async fn abort_release(
        &self,
        request: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.act(request, "AbortRelease", |_| progress::Action::Abort)
            .await
    }

    async fn retry_release(
        &self,
        request: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.act(request, "RetryRelease", |_| progress::Action::Retry)
            .await
    }

    async fn list_release_checks(
        &self,
        request: Request<pb::ListReleaseChecksRequest>,
    ) -> Result<Response<ReleaseCheckList>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span("ListReleaseChecks", &r.mesh_id, &r.namespace, &r.name);
        let checks = self
            .manager
            .checks(&principal, release_ref(r.mesh_id, r.namespace, r.name))
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, false, false, &principal.subject, &checks);
        Ok(Response::new(ReleaseCheckList {
            kind: "ReleaseCheckList".into(),
            api_version: API_VERSION.into(),
            items: checks?.iter().map(Into::into).collect(),
        }))
    }
}

impl ReleaseApi {
    /// One of the actions on a release that runs itself, audited as a
    /// change.
    async fn act(
        &self,
        request: Request<pb::ReleaseActionRequest>,
        rpc: &'static str,
        action: impl FnOnce(bool) -> progress::Action,
    ) -> Result<Response<pb::Release>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let span = rpc_span(rpc, &r.mesh_id, &r.namespace, &r.name);
        let action = action(r.full);
        if r.full && !matches!(action, progress::Action::Promote { .. }) {
            return Err(ApiError::invalid_field("full", "is for :promote only").into());
        }
        let acted = self
            .manager
            .act(
                &principal,
                release_ref(r.mesh_id, r.namespace, r.name),
                action,
            )
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        super::audit::record(&span, true, false, &principal.subject, &acted);
        Ok(Response::new(acted?.into()))
    }
}
