//! The clusters through kube-rs: one client per configured cluster, reads of
//! what the planner needs, and each planned change carried out the way it
//! respects other writers: gray Deployments by server-side apply (field
//! manager `meshrelease`, never forced), VirtualServices and
//! DestinationRules by a replace pinned to the resourceVersion read (or a
//! create), deletes, and a merge patch to scale the original to zero. Every
//! request is counted by cluster, verb and code; a watch per cluster on the
//! Deployments this service manages tells the driver when one changes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

use crate::domain::change::{Change, ClusterError, ObjectKind, PlannedObject};
use crate::domain::istio::IstioApi;
use crate::domain::object::{JsonObject, metadata_str, name_of};
use crate::domain::plan::{
    MANAGED_BY, MANAGED_BY_LABEL, Observation, Placement, RELEASE_UID_ANNOTATION,
};
use crate::domain::ports::{ClusterChange, ClusterPort};
use crate::domain::release::Release;
use crate::metrics::DriverMetrics;

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
    /// Replaced whole by a configuration reload, which also restarts the
    /// watches ([`ClusterPort::changes`] follows the channel).
    clients: tokio::sync::watch::Sender<Arc<Clients>>,
    metrics: DriverMetrics,
    lists: Lists,
}

type Clients = HashMap<String, kube::Client>;

/// Clients made for a reload, every one of them, not yet in use.
pub struct PreparedClients(Clients);

/// How long a namespace's list of VirtualServices or DestinationRules is
/// reused. A round over many releases observes each of them, and each
/// observation needs the whole namespace's lists (the owners' objects can
/// have any name): read once per round instead of once per release, a
/// resync of N releases costs N times less of the cluster's work than a
/// list each. The driver's own write to a namespace's objects forgets the
/// namespace's lists at once; others' writes are seen within this time
/// (and a write planned from an older list is refused by its pinned
/// resourceVersion, and retried on a fresh read).
const LIST_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// (cluster, API version, plural, namespace)
type ListKey = (String, String, String, String);

/// A list read recently, and when.
type Listed = Option<(std::time::Instant, Arc<Vec<JsonObject>>)>;

/// The lists kept for reuse; one lock per list, so that releases observed
/// at once wait for one read of it instead of each sending their own.
#[derive(Default)]
struct Lists(std::sync::Mutex<HashMap<ListKey, Arc<tokio::sync::Mutex<Listed>>>>);

impl Lists {
    fn slot(&self, key: ListKey) -> Arc<tokio::sync::Mutex<Listed>> {
        let mut lists = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lists.entry(key).or_default().clone()
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the lists of a cluster's namespace (after a write there).
    fn forget(&self, cluster: &str, namespace: &str) {
        let mut lists = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lists.retain(|(c, _, _, ns), _| !(c == cluster && ns == namespace));
    }
}

impl KubeClusters {
    /// A client per cluster. Nothing is sent: a cluster that is down now
    /// does not stop the service from starting. A cluster whose
    /// configuration cannot be read is left out, with an error logged, and
    /// its releases say so in their conditions.
    pub async fn connect(settings: &[ClusterSettings], metrics: DriverMetrics) -> Self {
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
        KubeClusters::with_clients(clients, metrics)
    }

    /// Over clients made elsewhere (the unit tests' mock services).
    pub fn with_clients(clients: Clients, metrics: DriverMetrics) -> Self {
        KubeClusters {
            clients: tokio::sync::watch::Sender::new(Arc::new(clients)),
            metrics,
            lists: Lists::default(),
        }
    }

    /// The clients a reloaded configuration names, every one of them, or
    /// the first cluster whose configuration cannot be read (a reload is
    /// all or nothing: see [`KubeClusters::replace`]).
    pub async fn prepare(settings: &[ClusterSettings]) -> Result<PreparedClients, String> {
        let mut clients = HashMap::new();
        for cluster in settings {
            let client = client_for(cluster)
                .await
                .map_err(|e| format!("clusters: {}: {e}", cluster.id))?;
            clients.insert(cluster.id.clone(), client);
        }
        Ok(PreparedClients(clients))
    }

    /// Takes the clients of a reloaded configuration: requests from now on
    /// use them, the watches restart on them, and no list is reused.
    pub fn replace(&self, clients: PreparedClients) {
        self.clients.send_replace(Arc::new(clients.0));
        self.lists.clear();
    }

    /// The result, counted by cluster, verb and the code the cluster answered.
    fn counted<T>(
        &self,
        cluster: &str,
        verb: &'static str,
        ok: u16,
        result: Result<T, kube::Error>,
    ) -> Result<T, kube::Error> {
        let code = match &result {
            Ok(_) => Some(ok),
            Err(kube::Error::Api(status)) => Some(status.code),
            Err(_) => None,
        };
        self.metrics.cluster_request(cluster, verb, code);
        result
    }

    fn api(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let client = self.clients.borrow().get(cluster).cloned().ok_or_else(|| {
            ClusterError::Unreachable {
                cluster: cluster.to_owned(),
                message: "no connection is configured".into(),
            }
        })?;
        Ok(Api::namespaced_with(client, namespace, resource))
    }

    async fn get(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<JsonObject>, ClusterError> {
        let api = self.api(cluster, resource, namespace)?;
        let object = api.get_opt(name).await;
        let code = if matches!(object, Ok(None)) { 404 } else { 200 };
        let object = self
            .counted(cluster, "get", code, object)
            .map_err(|e| classify(cluster, e))?;
        Ok(object.and_then(|o| as_json(&o)))
    }

    /// The objects of a namespace, as read within [`LIST_REUSE`] (or, when
    /// `fresh`, read now).
    async fn list(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
        fresh: bool,
    ) -> Result<Arc<Vec<JsonObject>>, ClusterError> {
        let api = self.api(cluster, resource, namespace)?;
        let slot = self.lists.slot((
            cluster.to_owned(),
            resource.api_version.clone(),
            resource.plural.clone(),
            namespace.to_owned(),
        ));
        let mut listed = slot.lock().await;
        if let Some((at, items)) = listed.as_ref()
            && !fresh
            && at.elapsed() < LIST_REUSE
        {
            return Ok(items.clone());
        }
        let read_at = std::time::Instant::now();
        let list = api.list(&ListParams::default()).await;
        let list = self
            .counted(cluster, "list", 200, list)
            .map_err(|e| classify(cluster, e))?;
        let items = Arc::new(list.items.iter().filter_map(as_json).collect::<Vec<_>>());
        *listed = Some((read_at, items.clone()));
        Ok(items)
    }
}

async fn client_for(cluster: &ClusterSettings) -> Result<kube::Client, String> {
    let mut config = match &cluster.kubeconfig {
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
    // kube-rs retries 429, 503 and 504 itself, up to 15 times with a
    // doubling wait: minutes in which one request holds its release's
    // round (and a slot of the rounds run at once) and the release says
    // nothing. The driver's own backoff, per release and shown in its
    // ClustersReachable condition, does that job instead.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

fn resource(kind: ObjectKind, istio_api: IstioApi) -> ApiResource {
    let gvk = match kind {
        ObjectKind::Deployment => GroupVersionKind::gvk("apps", "v1", "Deployment"),
        ObjectKind::VirtualService | ObjectKind::DestinationRule => {
            let version = istio_api
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

fn namespace_of(object: &JsonObject) -> String {
    metadata_str(object, "namespace")
        .unwrap_or("default")
        .to_owned()
}

#[async_trait]
impl ClusterPort for KubeClusters {
    fn connected(&self, cluster: &str) -> bool {
        self.clients.borrow().contains_key(cluster)
    }

    async fn observe(&self, release: &Release, placement: &Placement, fresh: bool) -> Observation {
        let ns = &release.namespace;
        let mut unreachable = BTreeSet::new();
        let deployments = resource(ObjectKind::Deployment, placement.istio_api);
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
                &placement.istio_cluster,
                &resource(ObjectKind::VirtualService, placement.istio_api),
                ns,
                fresh,
            )
            .await,
        )
        .unwrap_or_default();
        let destination_rules = noted(
            &mut unreachable,
            self.list(
                &placement.istio_cluster,
                &resource(ObjectKind::DestinationRule, placement.istio_api),
                ns,
                fresh,
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
            let name = name_of(completed).to_owned();
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
        self.send(change, false).await
    }

    async fn try_out(&self, change: &PlannedObject) -> Result<(), ClusterError> {
        self.send(change, true).await
    }

    fn changes(&self) -> BoxStream<'static, ClusterChange> {
        // The watches of the clients configured now, replaced by new ones
        // each time a reload replaces the clients.
        let metrics = self.metrics.clone();
        let watches = tokio_stream::wrappers::WatchStream::new(self.clients.subscribe())
            .map(move |clients| watch_managed(&clients, &metrics));
        super::switch::switch_latest(watches)
    }
}

impl KubeClusters {
    /// Sends one change, or (`dry_run`) the cluster's own dry run of it
    /// (`dryRun=All`: checked, never stored).
    async fn send(&self, change: &PlannedObject, dry_run: bool) -> Result<(), ClusterError> {
        let cluster = &change.cluster_id;
        // The object says which version of Istio's API wrote it.
        let istio_api = if change.object.get("apiVersion").and_then(Value::as_str)
            == Some(IstioApi::V1.api_version())
        {
            IstioApi::V1
        } else {
            IstioApi::V1beta1
        };
        let namespace = namespace_of(&change.object);
        let api = self.api(cluster, &resource(change.kind, istio_api), &namespace)?;
        if change.kind != ObjectKind::Deployment && !dry_run {
            // Whatever the outcome, the next observation reads afresh.
            self.lists.forget(cluster, &namespace);
        }
        let name = name_of(&change.object).to_owned();
        let object = Value::Object(change.object.clone());
        let (verb, ok, outcome) = match (change.change, change.kind) {
            (Change::Apply, ObjectKind::Deployment) => (
                "apply",
                200,
                api.patch(
                    &name,
                    &PatchParams {
                        dry_run,
                        ..PatchParams::apply(FIELD_MANAGER)
                    },
                    &Patch::Apply(&object),
                )
                .await
                .map(drop),
            ),
            (Change::Apply, ObjectKind::VirtualService | ObjectKind::DestinationRule) => {
                let dynamic: DynamicObject =
                    serde_json::from_value(object).map_err(|e| ClusterError::Refused {
                        cluster: cluster.clone(),
                        message: format!("the planned object is not a Kubernetes object: {e}"),
                    })?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    dry_run,
                };
                if dynamic.metadata.resource_version.is_some() {
                    (
                        "replace",
                        200,
                        api.replace(&name, &params, &dynamic).await.map(drop),
                    )
                } else {
                    ("create", 201, api.create(&params, &dynamic).await.map(drop))
                }
            }
            (Change::Delete, _) => {
                // Only the object the planner saw: a newer one of the same
                // name (another uid) is refused by the cluster, not deleted.
                let uid = change
                    .object
                    .get("metadata")
                    .and_then(|m| m.get("uid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let params = DeleteParams {
                    preconditions: uid.map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    dry_run,
                    ..DeleteParams::default()
                };
                ("delete", 200, api.delete(&name, &params).await.map(drop))
            }
            (Change::ScaleToZero, _) => (
                "patch",
                200,
                api.patch(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        dry_run,
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({"spec": {"replicas": 0}})),
                )
                .await
                .map(drop),
            ),
        };
        match self.counted(cluster, verb, ok, outcome) {
            Ok(()) => Ok(()),
            // Gone already: what a delete wants.
            Err(kube::Error::Api(status)) if verb == "delete" && status.code == 404 => Ok(()),
            Err(e) => Err(classify(cluster, e)),
        }
    }
}

/// One stream of changes to the Deployments this service manages, over
/// every cluster in `clients`.
fn watch_managed(clients: &Clients, metrics: &DriverMetrics) -> BoxStream<'static, ClusterChange> {
    {
        if clients.is_empty() {
            return futures_util::stream::pending().boxed();
        }
        let deployments = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let watches = clients.iter().map(|(id, client)| {
            let api = Api::<DynamicObject>::all_with(client.clone(), &deployments);
            let config = watcher::Config::default().labels(&selector);
            let id = id.clone();
            let metrics = metrics.clone();
            // The watcher lists, then watches from there, and lists again
            // when the watch cannot resume; errors back off and retry.
            watcher(api, config)
                .default_backoff()
                .filter_map(move |event| {
                    let change = |release_uid| ClusterChange {
                        cluster: id.clone(),
                        release_uid,
                    };
                    let found = match event {
                        Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                            let uid = object
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(RELEASE_UID_ANNOTATION))
                                .cloned();
                            // Ours by its label, but with no release named:
                            // look at everything.
                            Some(change(uid))
                        }
                        // A fresh list: anything may have changed meanwhile.
                        Ok(watcher::Event::InitDone) => Some(change(None)),
                        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                        Err(e) => {
                            let code = match &e {
                                watcher::Error::InitialListFailed(error)
                                | watcher::Error::WatchStartFailed(error)
                                | watcher::Error::WatchFailed(error) => {
                                    if let kube::Error::Api(status) = error {
                                        Some(status.code)
                                    } else {
                                        None
                                    }
                                }
                                watcher::Error::WatchError(status) => Some(status.code),
                                watcher::Error::NoResourceVersion => None,
                            };
                            metrics.cluster_request(&id, "watch", code);
                            tracing::debug!(cluster = %id, error = %e, "watching the managed Deployments; retrying");
                            None
                        }
                    };
                    std::future::ready(found)
                })
                .boxed()
        });
        futures_util::stream::select_all(watches).boxed()
    }
}

#[cfg(test)]
#[path = "kube_http_tests.rs"]
mod tests;
