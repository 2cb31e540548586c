//! The clusters through kube-rs: one client per configured cluster, reads of
//! what the planner needs, and each planned change carried out the way it
//! respects other writers: gray Deployments by server-side apply (field
//! manager `meshrelease`, never forced), VirtualServices and
//! DestinationRules by a replace pinned to the resourceVersion read (or a
//! create), deletes, and a merge patch to scale the original to zero. Reads
//! come from watch caches (`caches.rs`) of the namespaces with active
//! releases, which also tell the driver what changed; a read the planner
//! rests an absence on goes to the cluster. Every request is counted by
//! cluster, verb and code.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::caches::{CacheKey, Caches, as_json, spec_routes_for};
use super::throttle::{Limit, Throttle};

use crate::domain::change::{Change, ClusterError, ObjectKind, PlannedObject};
use crate::domain::istio::IstioApi;
use crate::domain::object::{JsonObject, metadata_str, name_of};
use crate::domain::plan::{Observation, Placement};
use crate::domain::ports::{ClusterChange, ClusterPort};
use crate::domain::release::Release;
use crate::metrics::DriverMetrics;

/// The field manager of every server-side apply this service makes.
pub const FIELD_MANAGER: &str = "meshrelease";

/// `[[clusters]]` of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub id: String,
    /// Absent: `$KUBECONFIG`, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Absent: the kubeconfig's current context.
    pub context: Option<String>,
    /// The client-side rate limit of every request to the cluster.
    pub limit: Limit,
}

pub struct KubeClusters {
    /// Replaced whole by a configuration reload, which also stops the
    /// caches (they start again on the new clients when next read).
    clients: tokio::sync::watch::Sender<Arc<Clients>>,
    metrics: DriverMetrics,
    lists: Lists,
    caches: Caches,
}

type Clients = HashMap<String, Connection>;

/// One cluster: its client, and the rate limit its requests share.
#[derive(Clone)]
struct Connection {
    client: kube::Client,
    throttle: Arc<Throttle>,
}

impl Connection {
    fn new(client: kube::Client, limit: Limit) -> Self {
        Connection {
            client,
            throttle: Arc::new(Throttle::new(limit)),
        }
    }
}

/// Clients made for a reload, every one of them, not yet in use.
pub struct PreparedClients(Clients);

/// How long a read waits for a new cache's first list before reading the
/// cluster itself.
const FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a namespace's list of VirtualServices or DestinationRules is
/// reused when it is read from the cluster (no cache is current). A round over many releases observes each of them, and each
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
type Listed = Option<(std::time::Instant, Arc<Vec<DynamicObject>>)>;

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
                    clients.insert(cluster.id.clone(), Connection::new(client, cluster.limit));
                }
                Err(e) => {
                    tracing::error!(cluster = %cluster.id, error = %e, "cannot configure a client for the cluster")
                }
            }
        }
        KubeClusters::over(clients, metrics)
    }

    /// Over clients made elsewhere (the unit tests' mock services), each
    /// with the default rate limit.
    pub fn with_clients(clients: HashMap<String, kube::Client>, metrics: DriverMetrics) -> Self {
        let clients = clients
            .into_iter()
            .map(|(id, client)| (id, Connection::new(client, Limit::default())))
            .collect();
        KubeClusters::over(clients, metrics)
    }

    fn over(clients: Clients, metrics: DriverMetrics) -> Self {
        KubeClusters {
            clients: tokio::sync::watch::Sender::new(Arc::new(clients)),
            caches: Caches::new(metrics.clone()),
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
            clients.insert(cluster.id.clone(), Connection::new(client, cluster.limit));
        }
        Ok(PreparedClients(clients))
    }

    /// Takes the clients of a reloaded configuration: requests from now on
    /// use them, the caches start again on them, and no list is reused.
    pub fn replace(&self, clients: PreparedClients) {
        self.clients.send_replace(Arc::new(clients.0));
        self.lists.clear();
        self.caches.clear();
    }

    /// The result, counted by cluster, verb and the code the cluster
    /// answered; a 429's wait holds the cluster's next requests.
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
        if let Err(kube::Error::Api(status)) = &result
            && let Some(wait) = Throttle::asked_by(status)
            && let Ok(connection) = self.connection(cluster)
        {
            connection.throttle.retry_after(wait);
        }
        self.metrics.cluster_request(cluster, verb, code);
        result
    }

    fn connection(&self, cluster: &str) -> Result<Connection, ClusterError> {
        self.clients
            .borrow()
            .get(cluster)
            .cloned()
            .ok_or_else(|| ClusterError::Unreachable {
                cluster: cluster.to_owned(),
                message: "no connection is configured".into(),
            })
    }

    /// The cluster's API for a kind in a namespace, once the cluster's
    /// rate limit lets one more request through.
    async fn api(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let connection = self.connection(cluster)?;
        if connection.throttle.take().await {
            self.metrics
                .throttled
                .get_or_create(&crate::metrics::ClusterLabels {
                    cluster: cluster.to_owned(),
                })
                .inc();
        }
        Ok(Api::namespaced_with(connection.client, namespace, resource))
    }

    /// The watch cache of a kind in a namespace, started if there is none;
    /// `None` while it is not current (the caller reads the cluster).
    async fn cache(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
    ) -> Option<Arc<super::caches::Cache>> {
        let connection = self.connection(cluster).ok()?;
        self.caches
            .cache(
                &cache_key(cluster, resource, namespace),
                (&connection.client, &connection.throttle),
                resource,
                FIRST_LIST_WAIT,
            )
            .await
    }

    /// One object by its name: from its cache, or (no cache current) from
    /// the cluster. That it is absent is taken from a cache only once the
    /// cache holds a list sent after `listed_after` (the release's
    /// creation: an original Deployment made a moment before it is never
    /// missed), sending that list if none was; with no cache current the
    /// cluster is asked.
    async fn read(
        &self,
        cluster: &str,
        resource: &ApiResource,
        (namespace, name): (&str, &str),
        listed_after: DateTime<Utc>,
    ) -> Result<Option<JsonObject>, ClusterError> {
        if let Some(cache) = self.cache(cluster, resource, namespace).await {
            if let Some(object) = cache.get(name) {
                return Ok(Some(object));
            }
            self.list_into(cluster, resource, namespace, (&cache, listed_after))
                .await?;
            return Ok(cache.get(name));
        }
        self.get(cluster, resource, namespace, name).await
    }

    /// A namespace's routing objects of a kind for `service`: from its
    /// cache, or (no cache current) from the cluster. With `listed_after`,
    /// as a list sent after that moment holds them (and what changed
    /// since): an object made before it is never missed.
    async fn read_routing(
        &self,
        cluster: &str,
        resource: &ApiResource,
        (namespace, service): (&str, &str),
        listed_after: Option<DateTime<Utc>>,
    ) -> Result<Arc<Vec<JsonObject>>, ClusterError> {
        if let Some(cache) = self.cache(cluster, resource, namespace).await {
            if let Some(after) = listed_after {
                self.list_into(cluster, resource, namespace, (&cache, after))
                    .await?;
            }
            return Ok(Arc::new(cache.for_service(service, namespace)));
        }
        // Only the objects for the host are made JSON objects: a namespace
        // may hold thousands.
        let all = self
            .list(cluster, resource, namespace, listed_after.is_some())
            .await?;
        Ok(Arc::new(
            all.iter()
                .filter(|o| spec_routes_for(o.data.get("spec"), service, namespace))
                .filter_map(as_json)
                .collect(),
        ))
    }

    /// Makes `cache` hold what a list sent after `after` holds: one list,
    /// shared by the readers waiting for it, unless one was sent since.
    async fn list_into(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
        (cache, after): (&super::caches::Cache, DateTime<Utc>),
    ) -> Result<(), ClusterError> {
        let _listing = cache.listing.lock().await;
        if cache.listed_since(after) {
            return Ok(());
        }
        let api = self.api(cluster, resource, namespace).await?;
        let sent_at = Utc::now();
        let list = list_as_json(api).await;
        let list = self
            .counted(cluster, "list", 200, list)
            .map_err(|e| classify(cluster, e))?;
        let version = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        self.caches.merge(
            &cache_key(cluster, resource, namespace),
            cache,
            list.items,
            version,
            sent_at,
        );
        Ok(())
    }

    async fn get(
        &self,
        cluster: &str,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<JsonObject>, ClusterError> {
        let api = self.api(cluster, resource, namespace).await?;
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
    ) -> Result<Arc<Vec<DynamicObject>>, ClusterError> {
        let slot = self.lists.slot((
            cluster.to_owned(),
            resource.api_version.clone(),
            resource.plural.clone(),
            namespace.to_owned(),
        ));
        // A fresh read takes a list sent after it asked: rounds that ask at
        // once share one list, and each sees what was there when it asked.
        let asked = std::time::Instant::now();
        let mut listed = slot.lock().await;
        if let Some((at, items)) = listed.as_ref()
            && (if fresh {
                *at >= asked
            } else {
                at.elapsed() < LIST_REUSE
            })
        {
            return Ok(items.clone());
        }
        let api = self.api(cluster, resource, namespace).await?;
        let read_at = std::time::Instant::now();
        let list = api.list(&ListParams::default()).await;
        let list = self
            .counted(cluster, "list", 200, list)
            .map_err(|e| classify(cluster, e))?;
        let items = Arc::new(list.items);
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

/// A list as the caches keep its objects: each item read straight into
/// JSON. Through `Api::list` each would be read into a `DynamicObject`
/// and written back out as JSON, at some thousand objects a list.
#[derive(serde::Deserialize)]
struct JsonList {
    #[serde(default)]
    metadata: ListVersion,
    #[serde(default)]
    items: Vec<JsonObject>,
}

#[derive(Default, serde::Deserialize)]
struct ListVersion {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// The request `Api::list` sends, answered as a [`JsonList`].
async fn list_as_json(api: Api<DynamicObject>) -> Result<JsonList, kube::Error> {
    let mut request = kube::core::Request::new(api.resource_url())
        .list(&ListParams::default())
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("list");
    api.into_client().request::<JsonList>(request).await
}

fn cache_key(cluster: &str, resource: &ApiResource, namespace: &str) -> CacheKey {
    (
        cluster.to_owned(),
        resource.api_version.clone(),
        resource.plural.clone(),
        namespace.to_owned(),
    )
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
        // What the release was created after is never missed.
        let created = release.status.start_time;
        let mut unreachable = BTreeSet::new();
        let deployments = resource(ObjectKind::Deployment, placement.istio_api);
        let original = noted(
            &mut unreachable,
            self.read(
                &release.cluster_id,
                &deployments,
                (ns, &release.deployment_name),
                created,
            )
            .await,
        )
        .flatten();
        let service = noted(
            &mut unreachable,
            self.read(
                &release.cluster_id,
                &service_resource(),
                (ns, &release.service_name),
                created,
            )
            .await,
        )
        .flatten();
        let virtual_services = noted(
            &mut unreachable,
            self.read_routing(
                &placement.istio_cluster,
                &resource(ObjectKind::VirtualService, placement.istio_api),
                (ns, &release.service_name),
                fresh.then_some(created),
            )
            .await,
        )
        .unwrap_or_default();
        let destination_rules = noted(
            &mut unreachable,
            self.read_routing(
                &placement.istio_cluster,
                &resource(ObjectKind::DestinationRule, placement.istio_api),
                (ns, &release.service_name),
                fresh.then_some(created),
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
                    self.read(&target.cluster_id, &deployments, (ns, &name), created)
                        .await,
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
        tokio_stream::wrappers::BroadcastStream::new(self.caches.news())
            .map(|news| {
                // Missed news: anything may have changed.
                news.unwrap_or_else(|_| ClusterChange::anything(""))
            })
            .boxed()
    }

    fn keep_watching(&self, namespaces: &std::collections::HashSet<(String, String)>) {
        self.caches.retain(namespaces);
    }

    fn told(&self) -> Option<u64> {
        Some(self.caches.told())
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
        let api = self
            .api(cluster, &resource(change.kind, istio_api), &namespace)
            .await?;
        if change.kind != ObjectKind::Deployment && !dry_run {
            // Whatever the outcome, the next observation reads afresh.
            self.lists.forget(cluster, &namespace);
        }
        let name = name_of(&change.object).to_owned();
        let object = Value::Object(change.object.clone());
        let kept = |o: DynamicObject| Some(o);
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
                .map(kept),
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
                        api.replace(&name, &params, &dynamic).await.map(kept),
                    )
                } else {
                    ("create", 201, api.create(&params, &dynamic).await.map(kept))
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
                (
                    "delete",
                    200,
                    api.delete(&name, &params).await.map(|_| None),
                )
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
                .map(kept),
            ),
        };
        let outcome = match self.counted(cluster, verb, ok, outcome) {
            Ok(answer) => answer,
            // Gone already: what a delete wants.
            Err(kube::Error::Api(status)) if verb == "delete" && status.code == 404 => None,
            Err(e) => return Err(classify(cluster, e)),
        };
        // The next read sees the write at once, not when its watch event
        // arrives; and the release that wrote it looks again.
        if !dry_run {
            let key = cache_key(cluster, &resource(change.kind, istio_api), &namespace);
            if let Some(cache) = self.caches.current(&key) {
                match outcome.as_ref().and_then(as_json) {
                    Some(answer) => self.caches.written(&key, &cache, Some(answer), &name),
                    None if verb == "delete" => self.caches.written(&key, &cache, None, &name),
                    None => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "kube_http_tests.rs"]
mod tests;
