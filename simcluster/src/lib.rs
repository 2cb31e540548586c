//! A simulated Kubernetes API server for the objects meshrelease uses
//! (Deployments, Services, Istio VirtualServices and DestinationRules in
//! `v1` and `v1beta1`), served over real HTTP on loopback so that clients
//! reach it exactly as they reach a real cluster: kube-rs, kubectl, the
//! Python client.
//!
//! It keeps objects as the API server does (resourceVersions, generations,
//! managedFields, watches that resume), runs a Deployment controller that
//! reports Deployments ready after a delay, and injects faults on request
//! (503s, latency, conflicts, a closed port).

pub mod api;
pub mod controller;
pub mod errors;
mod faults;
pub mod resources;
pub mod selector;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};

pub use faults::Faults;
use resources::Resource;
use store::{Store, Writer};

/// What the server shares between requests.
#[derive(Debug, Default)]
pub struct Sim {
    pub store: Mutex<Store>,
    pub faults: Faults,
    pub requests: RequestLog,
    pub watches: OpenWatches,
}

/// The watches open now (a watch that ended, or whose client went away,
/// is not counted).
#[derive(Debug, Default)]
pub struct OpenWatches(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl OpenWatches {
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts one watch until the answer is dropped.
    pub(crate) fn open(&self) -> OpenWatch {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenWatch(self.0.clone())
    }
}

pub(crate) struct OpenWatch(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Every request seen, by method, path and who sent it (the bearer token
/// of its `Authorization` header), for counting writes.
#[derive(Debug, Default)]
pub struct RequestLog(std::sync::Mutex<Vec<Seen>>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    /// The bearer token, if the request carried one.
    pub who: Option<String>,
    /// Sent as a dry run (`dryRun=All` in the query; a delete's body may
    /// say it instead, which this log does not read): checked, nothing stored.
    pub dry_run: bool,
    /// A watch (`watch=true`), not a single read.
    pub watch: bool,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Seen {
    /// A request that may change something (a dry run does not).
    fn is_write(&self) -> bool {
        self.method != http::Method::GET && !self.dry_run
    }
}

impl RequestLog {
    fn record(
        &self,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) {
        let pairs = || query.unwrap_or_default().split('&');
        let dry_run = pairs().any(|pair| pair == "dryRun=All");
        let watch = pairs().any(|pair| pair == "watch=true" || pair == "watch=1");
        let who = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        if let Ok(mut log) = self.0.lock() {
            log.push(Seen {
                method: method.clone(),
                path: path.to_owned(),
                who,
                dry_run,
                watch,
                at: std::time::Instant::now(),
            });
        }
    }

    /// Dry runs (`dryRun=All`) of writes, so far.
    pub fn dry_runs(&self) -> usize {
        self.0
            .lock()
            .map(|log| log.iter().filter(|s| s.dry_run).count())
            .unwrap_or_default()
    }

    /// Requests whose method is not GET (writes; dry runs aside), so far.
    pub fn writes(&self) -> usize {
        self.0
            .lock()
            .map(|log| log.iter().filter(|s| s.is_write()).count())
            .unwrap_or_default()
    }

    /// Writes sent with the bearer token `who`, so far.
    pub fn writes_by(&self, who: &str) -> usize {
        self.0
            .lock()
            .map(|log| {
                log.iter()
                    .filter(|s| s.is_write() && s.who.as_deref() == Some(who))
                    .count()
            })
            .unwrap_or_default()
    }

    /// Every request sent with the bearer token `who`, so far.
    pub fn by(&self, who: &str) -> Vec<Seen> {
        self.0
            .lock()
            .map(|log| {
                log.iter()
                    .filter(|s| s.who.as_deref() == Some(who))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads that are not watches (GETs of one object, LISTs), so far.
    pub fn reads(&self) -> usize {
        self.0
            .lock()
            .map(|log| {
                log.iter()
                    .filter(|s| s.method == http::Method::GET && !s.watch)
                    .count()
            })
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().map(|log| log.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How long the Deployment controller takes to report a Deployment ready.
    pub ready_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_delay: Duration::from_millis(100),
        }
    }
}

/// A running simulated cluster.
pub struct SimCluster {
    pub sim: Arc<Sim>,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl SimCluster {
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let sim = Arc::new(Sim::default());
        sim.faults.set_ready_delay(config.ready_delay);
        controller::spawn(sim.clone());
        let (address, stop, served) = serve(sim.clone(), config.listen).await?;
        Ok(SimCluster {
            sim,
            address,
            stop: Some(stop),
            served: Some(served),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn faults(&self) -> &Faults {
        &self.sim.faults
    }

    /// A kubeconfig whose one context, named `context`, points here.
    pub fn kubeconfig(&self, context: &str) -> String {
        self.kubeconfig_with_token(context, None)
    }

    /// As [`SimCluster::kubeconfig`], with a bearer token for its user (the
    /// simulator accepts any, and logs who sent each request).
    pub fn kubeconfig_with_token(&self, context: &str, token: Option<&str>) -> String {
        let user = match token {
            Some(token) => format!("\n    token: {token}"),
            None => " {}".to_owned(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {url}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n    namespace: default\ncurrent-context: {context}\nusers:\n- name: {context}\n  user:{user}\n",
            url = self.url()
        )
    }

    /// Stores an object as a client would create it (for a test's starting
    /// state), through the same path as a POST.
    pub async fn put(&self, resource: Resource, object: serde_json::Value) -> serde_json::Value {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let version = object["apiVersion"]
            .as_str()
            .and_then(|v| v.rsplit('/').next())
            .unwrap_or(resource.versions[0])
            .to_owned();
        let api_version = resource.api_version(&version);
        let writer = Writer {
            manager: "simcluster-seed",
            api_version: &api_version,
            status: false,
        };
        self.sim
            .store
            .lock()
            .await
            .create(resource, &namespace, object, &writer)
            .unwrap_or_else(|e| panic!("seeding {}: {}", resource.kind, e.message))
    }

    /// The starting point of a release, as tests and walk-throughs set it
    /// up: in `default`, the Deployment `{app}-v1` (pod labels `app` and
    /// `version: v1`, image `{app}:1`) with `replicas`, and the Service
    /// `app` selecting it by `app` alone.
    pub async fn put_original(&self, app: &str, replicas: u32) {
        self.put(
            resources::DEPLOYMENTS,
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": format!("{app}-v1"), "namespace": "default"},
                   "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                            "template": {"metadata": {"labels": {"app": app, "version": "v1"}},
                                         "spec": {"containers": [{"name": app, "image": format!("{app}:1")}]}}}}),
        )
        .await;
        self.put(
            resources::SERVICES,
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": app, "namespace": "default"},
                   "spec": {"selector": {"app": app}, "ports": [{"port": 9080}]}}),
        )
        .await;
    }

    /// An object as stored, if it exists.
    pub async fn get(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        self.sim.store.lock().await.get(resource, namespace, name)
    }

    /// Closes the port and drops every open connection, as a cluster that
    /// went away; [`SimCluster::resume`] opens it again with the same objects.
    pub async fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }

    pub async fn resume(&mut self) -> std::io::Result<()> {
        let (_, stop, served) = serve(self.sim.clone(), self.address).await?;
        self.stop = Some(stop);
        self.served = Some(served);
        Ok(())
    }
}

type Serving = (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>);

async fn serve(sim: Arc<Sim>, listen: SocketAddr) -> std::io::Result<Serving> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback(api::handle).with_state(sim);
    let (stop, mut stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        // Every connection is a task of this set: stopping drops them all,
        // open watches too, and closes the port.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
        connections.abort_all();
    });
    Ok((address, stop, served))
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
