//! The clusters through kube-rs: one client per configured cluster, reads of
//! what the planner needs, and each planned change carried out the way it
//! respects other writers: gray Deployments by server-side apply (field
//! manager `meshrelease`, never forced), VirtualServices and
//! DestinationRules by a replace pinned to the resourceVersion read (or a
//! create), deletes, and a merge patch to scale the original to zero.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use async_trait::async_trait;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::domain::JsonObject;
use crate::domain::Release;
use crate::domain::plan::{Change, Context, ObjectKind, Observation, PlannedObject};
use crate::domain::ports::{ClusterError, ClusterPort};

/// The field manager of every server-side apply this service makes.
pub const FIELD_MANAGER: &str = "meshrelease";

/// `[[clusters]]` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub id: String,
    /// Absent: `$KUBECONFIG`, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Absent: the kubeconfig's current context.
    pub context: Option<String>,
}

pub struct KubeClusters {
    clients: HashMap<String, kube::Client>,
}

impl KubeClusters {
    /// A client per cluster. Nothing is sent: a cluster that is down now
    /// does not stop the service from starting. A cluster whose
    /// configuration cannot be read is left out, with an error logged, and
    /// its releases say so in their conditions.
    pub async fn connect(settings: &[ClusterSettings]) -> Self {
        let mut clients = HashMap::new();
        for cluster in settings {
            match client_for(cluster).await {
                Ok(client) => {
                    clients.insert(cluster.id.clone(), client);
                }
                Err(e) => {
                    tracing::error!(cluster = %cluster.id, error = %e, "cannot configure a client for the cluster")
                }
            }
        }
        KubeClusters { clients }
    }

    fn api(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let client = self
            .clients
            .get(cluster)
            .ok_or_else(|| ClusterError::Unreachable {
                cluster: cluster.to_owned(),
                message: "no connection is configured".into(),
            })?;
        Ok(Api::namespaced_with(client.clone(), namespace, resource))
    }

    async fn get(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<JsonObject>, ClusterError> {
        let api = self.api(cluster, resource, namespace)?;
        let object = api.get_opt(name).await.map_err(|e| classify(cluster, e))?;
        Ok(object.and_then(|o| as_json(&o)))
    }

    async fn list(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Vec<JsonObject>, ClusterError> {
        let api = self.api(cluster, resource, namespace)?;
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| classify(cluster, e))?;
        Ok(list.items.iter().filter_map(as_json).collect())
    }
}

async fn client_for(cluster: &ClusterSettings) -> Result<kube::Client, String> {
    let config = match &cluster.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let options = KubeConfigOptions {
                context: cluster.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

fn resource(kind: ObjectKind, context: &Context) -> ApiResource {
    let gvk = match kind {
        ObjectKind::Deployment => GroupVersionKind::gvk("apps", "v1", "Deployment"),
        ObjectKind::VirtualService | ObjectKind::DestinationRule => {
            let version = context
                .istio_api
                .api_version()
                .rsplit('/')
                .next()
                .unwrap_or("v1beta1");
            GroupVersionKind::gvk("networking.istio.io", version, kind.as_str())
        }
    };
    ApiResource::from_gvk(&gvk)
}

fn service_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Service"))
}

fn as_json(object: &DynamicObject) -> Option<JsonObject> {
    match serde_json::to_value(object).ok()? {
        Value::Object(map) => Some(map),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            None
        }
    }
}

/// A kube-rs error in the driver's terms.
fn classify(cluster: &str, error: kube::Error) -> ClusterError {
    let cluster = cluster.to_owned();
    let kube::Error::Api(status) = &error else {
        return ClusterError::Unreachable {
            cluster,
            message: error.to_string(),
        };
    };
    let message = format!("{} ({})", status.message, status.code);
    match status.code {
        409 if status.message.contains("Apply failed") => {
            ClusterError::Refused { cluster, message }
        }
        409 => ClusterError::Conflict { cluster, message },
        429 | 500..=599 => ClusterError::Unreachable { cluster, message },
        _ => ClusterError::Refused { cluster, message },
    }
}

/// The value, or the cluster noted as not answering.
fn noted<T>(unreachable: &mut BTreeSet<String>, result: Result<T, ClusterError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(
            ClusterError::Unreachable { cluster, .. }
            | ClusterError::Conflict { cluster, .. }
            | ClusterError::Refused { cluster, .. },
        ) => {
            unreachable.insert(cluster);
            None
        }
    }
}

fn name_of(object: &JsonObject) -> String {
    object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn namespace_of(object: &JsonObject) -> String {
    object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

#[async_trait]
impl ClusterPort for KubeClusters {
    fn connected(&self, cluster: &str) -> bool {
        self.clients.contains_key(cluster)
    }

    async fn observe(&self, release: &Release, context: &Context) -> Observation {
        let ns = &release.namespace;
        let mut unreachable = BTreeSet::new();
        let deployments = resource(ObjectKind::Deployment, context);
        let original = noted(
            &mut unreachable,
            self.get(
                &release.cluster_id,
                &deployments,
                ns,
                &release.deployment_name,
            )
            .await,
        )
        .flatten();
        let service = noted(
            &mut unreachable,
            self.get(
                &release.cluster_id,
                &service_resource(),
                ns,
                &release.service_name,
            )
            .await,
        )
        .flatten();
        let virtual_services = noted(
            &mut unreachable,
            self.list(
                &context.istio_cluster,
                &resource(ObjectKind::VirtualService, context),
                ns,
            )
            .await,
        )
        .unwrap_or_default();
        let destination_rules = noted(
            &mut unreachable,
            self.list(
                &context.istio_cluster,
                &resource(ObjectKind::DestinationRule, context),
                ns,
            )
            .await,
        )
        .unwrap_or_default();
        let mut gray = Vec::new();
        for (completed, target) in release
            .status
            .gray_deployments
            .iter()
            .zip(&release.gray_deployments)
        {
            let name = name_of(completed);
            gray.push(
                noted(
                    &mut unreachable,
                    self.get(&target.cluster_id, &deployments, ns, &name).await,
                )
                .flatten(),
            );
        }
        Observation {
            unreachable: unreachable.into_iter().collect(),
            original,
            service,
            virtual_services,
            destination_rules,
            gray,
            now: chrono::Utc::now(),
        }
    }

    async fn carry_out(&self, change: &PlannedObject) -> Result<(), ClusterError> {
        let cluster = &change.cluster_id;
        let context = Context {
            istio_cluster: cluster.clone(),
            istio_api: if change.object.get("apiVersion").and_then(Value::as_str)
                == Some("networking.istio.io/v1")
            {
                crate::domain::istio::IstioApi::V1
            } else {
                crate::domain::istio::IstioApi::V1beta1
            },
            original_on_end: crate::domain::plan::OriginalOnEnd::Delete,
        };
        let api = self.api(
            cluster,
            &resource(change.kind, &context),
            &namespace_of(&change.object),
        )?;
        let name = name_of(&change.object);
        let object = Value::Object(change.object.clone());
        let outcome = match (change.change, change.kind) {
            (Change::Apply, ObjectKind::Deployment) => api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&object),
                )
                .await
                .map(drop),
            (Change::Apply, ObjectKind::VirtualService | ObjectKind::DestinationRule) => {
                let dynamic: DynamicObject =
                    serde_json::from_value(object).map_err(|e| ClusterError::Refused {
                        cluster: cluster.clone(),
                        message: format!("the planned object is not a Kubernetes object: {e}"),
                    })?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                if dynamic.metadata.resource_version.is_some() {
                    api.replace(&name, &params, &dynamic).await.map(drop)
                } else {
                    api.create(&params, &dynamic).await.map(drop)
                }
            }
            (Change::Delete, _) => match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(e),
            },
            (Change::ScaleToZero, _) => api
                .patch(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({"spec": {"replicas": 0}})),
                )
                .await
                .map(drop),
        };
        outcome.map_err(|e| classify(cluster, e))
    }
}
