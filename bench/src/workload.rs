//! The request every configuration is driven with: a CreateRelease whose gray
//! Deployment template is a realistic 3.4 KB manifest (labels, annotations,
//! resources, env, probes, a sidecar), with a unique name and service per
//! request so that every create succeeds.

use meshrelease::pb::asm::v2 as pb;

const RELEASE_JSON: &str = include_str!("release.json");

pub(crate) const MESH: &str = "bench-mesh";
pub(crate) const TOKEN: &str = "bench-token";

/// Makes unique requests cheaply: the JSON text and the decoded message are
/// made once; each request only changes the names.
#[derive(Clone)]
pub(crate) struct Workload {
    /// Compact JSON with `__NAME__` and `__SERVICE__` placeholders.
    json: String,
    message: pb::Release,
    /// Distinguishes runs that share a database.
    run: String,
}

impl Workload {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(RELEASE_JSON)?;
        let json = serde_json::to_string(&value)?;
        let message: pb::Release = serde_json::from_value(value)?;
        Ok(Self {
            json,
            message,
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        })
    }

    fn names(&self, worker: usize, seq: u64) -> (String, String) {
        (
            format!("rel-{}-{worker}-{seq}", self.run),
            format!("svc-{}-{worker}-{seq}", self.run),
        )
    }

    /// The REST body of request `seq` of `worker`.
    pub(crate) fn json(&self, worker: usize, seq: u64) -> String {
        let (name, service) = self.names(worker, seq);
        self.json
            .replace("__NAME__", &name)
            .replace("__SERVICE__", &service)
    }

    /// The same request as a gRPC message.
    pub(crate) fn grpc(&self, worker: usize, seq: u64) -> pb::CreateReleaseRequest {
        let (name, service) = self.names(worker, seq);
        let mut release = self.message.clone();
        if let Some(metadata) = release.metadata.as_mut() {
            metadata.name = name;
        }
        if let Some(spec) = release.spec.as_mut() {
            spec.deployment_name = format!("{service}-v1");
            spec.service_name = service;
        }
        pb::CreateReleaseRequest {
            dry_run: false,
            mesh_id: MESH.into(),
            namespace: "default".into(),
            release: Some(release),
        }
    }

    /// The size of one request as JSON, for the report.
    pub(crate) fn json_bytes(&self) -> usize {
        self.json(0, 0).len()
    }
}
