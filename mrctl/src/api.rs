//! The service, as the commands use it: a gRPC client that sends the token
//! with every request and bounds every unary call by the request timeout.

use std::time::Duration;

use anyhow::Context as _;
use meshrelease_wire::asm::v2 as pb;
use meshrelease_wire::asm::v2::release_service_client::ReleaseServiceClient;
use meshrelease_wire::wkt::FieldMask;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::config::Connection;

/// The most releases one list page asks for (the service's cap).
const PAGE: i64 = 1000;

pub struct Api {
    client: ReleaseServiceClient<Channel>,
    token: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    pub server: String,
}

impl Api {
    /// A client for `connection.server`; connects on the first request.
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let server = connection.server.clone();
        let mut endpoint = Endpoint::from_shared(server.clone())
            .with_context(|| {
                format!("{server:?} is not a server address such as http://127.0.0.1:8080")
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        match endpoint.uri().scheme_str() {
            Some("https") => {
                let mut tls = ClientTlsConfig::new();
                tls = match &connection.ca_file {
                    Some(path) => tls.ca_certificate(Certificate::from_pem(
                        std::fs::read(path)
                            .with_context(|| format!("reading the CA file {}", path.display()))?,
                    )),
                    None => tls.with_native_roots(),
                };
                endpoint = endpoint
                    .tls_config(tls)
                    .context("setting up TLS for the server")?;
            }
            Some("http") => {}
            _ => anyhow::bail!(
                "{server:?}: the server address must start with http:// (plaintext) or https:// (TLS)"
            ),
        }
        let token = match &connection.token {
            None => None,
            Some(token) => {
                let mut value = MetadataValue::try_from(token.expose()).map_err(|_| {
                    anyhow::anyhow!("the token holds characters a header cannot carry")
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self {
            client: ReleaseServiceClient::new(endpoint.connect_lazy()),
            token,
            timeout: connection.request_timeout,
            server,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.timeout);
        request
    }

    fn stream_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("x-auth-token", token.clone());
        }
        request
    }

    pub async fn get(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
    ) -> Result<pb::Release, Status> {
        let request = self.request(pb::GetReleaseRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        Ok(self.client.clone().get_release(request).await?.into_inner())
    }

    /// A release, or `None` when there is no such release.
    pub async fn find(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<pb::Release>, Status> {
        match self.get(mesh, namespace, name).await {
            Ok(release) => Ok(Some(release)),
            Err(status) if status.code() == Code::NotFound && !mesh_unknown(&status) => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Every release that matches, following the pages to the end.
    pub async fn list(
        &self,
        mut query: pb::ListReleasesRequest,
    ) -> Result<Vec<pb::Release>, Status> {
        let mut items = Vec::new();
        query.limit = PAGE;
        loop {
            let page = self
                .client
                .clone()
                .list_releases(self.request(query.clone()))
                .await?
                .into_inner();
            items.extend(page.items);
            match page
                .metadata
                .map(|m| m.r#continue)
                .filter(|c| !c.is_empty())
            {
                Some(next) => query.r#continue = next,
                None => return Ok(items),
            }
        }
    }

    pub async fn create(&self, request: pb::CreateReleaseRequest) -> Result<pb::Release, Status> {
        Ok(self
            .client
            .clone()
            .create_release(self.request(request))
            .await?
            .into_inner())
    }

    pub async fn update(&self, request: pb::UpdateReleaseRequest) -> Result<pb::Release, Status> {
        Ok(self
            .client
            .clone()
            .update_release(self.request(request))
            .await?
            .into_inner())
    }

    /// Replaces the traffic policy of a release.
    pub async fn set_traffic(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
        policy: pb::TrafficPolicy,
        dry_run: bool,
    ) -> Result<pb::Release, Status> {
        let request = pb::PatchReleaseRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            release: Some(pb::Release {
                spec: Some(pb::ReleaseSpec {
                    traffic_policy: Some(policy),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["spec.traffic_policy".to_owned()],
            }),
            dry_run,
        };
        Ok(self
            .client
            .clone()
            .patch_release(self.request(request))
            .await?
            .into_inner())
    }

    /// Cancels or ends a release (`action`), or removes the record of one
    /// that is over (`action` empty).
    pub async fn delete(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
        action: &str,
    ) -> Result<pb::Release, Status> {
        let request = self.request(pb::DeleteReleaseRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            action: action.to_owned(),
        });
        Ok(self
            .client
            .clone()
            .delete_release(request)
            .await?
            .into_inner())
    }

    /// One of the actions on a release that runs itself: `pause`,
    /// `resume`, `promote` (`full`: to the end at once), `abort`, `retry`.
    pub async fn act(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
        action: &str,
        full: bool,
    ) -> Result<pb::Release, Status> {
        let request = self.request(pb::ReleaseActionRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            full,
        });
        let mut client = self.client.clone();
        let answer = match action {
            "pause" => client.pause_release(request).await?,
            "resume" => client.resume_release(request).await?,
            "promote" => client.promote_release(request).await?,
            "abort" => client.abort_release(request).await?,
            "retry" => client.retry_release(request).await?,
            other => return Err(Status::invalid_argument(format!("no action {other:?}"))),
        };
        Ok(answer.into_inner())
    }

    /// The kept results of a release's rounds of checks, oldest first.
    pub async fn checks(
        &self,
        mesh: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<pb::CheckResult>, Status> {
        let request = self.request(pb::ListReleaseChecksRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        Ok(self
            .client
            .clone()
            .list_release_checks(request)
            .await?
            .into_inner()
            .items)
    }

    /// The releases of a mesh (or of one namespace) as they change: first
    /// the current ones (ADDED), then every change, or every change after
    /// `resource_version`.
    pub async fn watch(
        &self,
        mesh: &str,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<Streaming<pb::WatchEvent>, Status> {
        let request = self.stream_request(pb::WatchReleasesRequest {
            mesh_id: mesh.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            resource_version: resource_version.to_owned(),
        });
        Ok(self
            .client
            .clone()
            .watch_releases(request)
            .await?
            .into_inner())
    }
}

/// A 404 about the mesh rather than the release.
fn mesh_unknown(status: &Status) -> bool {
    status.message().starts_with("mesh ")
}
