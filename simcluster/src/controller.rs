//! The Deployment controller, as far as readiness goes: after the configured
//! delay, a Deployment whose status lags its generation is reported rolled
//! out (observed generation current, every replica updated, ready and
//! available). A Deployment annotated
//! `simcluster.meshrelease.io/never-ready: "true"`, or any while the faults
//! say so, never becomes ready.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Sim;
use crate::resources::DEPLOYMENTS;
use crate::store::Writer;

pub const NEVER_READY_ANNOTATION: &str = "simcluster.meshrelease.io/never-ready";

pub(crate) fn spawn(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let mut events = sim.store.lock().await.subscribe();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if event.resource != DEPLOYMENTS || event.kind == "DELETED" || !behind(&event.object) {
                continue;
            }
            let sim = sim.clone();
            let namespace = event.namespace.clone();
            let name = event.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(sim.faults.ready_delay()).await;
                roll_out(&sim, &namespace, &name).await;
            });
        }
    });
}

fn behind(deployment: &Value) -> bool {
    let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(1);
    let observed = deployment["status"]["observedGeneration"]
        .as_i64()
        .unwrap_or(0);
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    observed < generation
        || deployment["status"]["availableReplicas"]
            .as_i64()
            .unwrap_or(0)
            != replicas
}

async fn roll_out(sim: &Sim, namespace: &str, name: &str) {
    if sim.faults.never_ready() {
        return;
    }
    let mut store = sim.store.lock().await;
    let Some(mut deployment) = store.get(DEPLOYMENTS, namespace, name) else {
        return;
    };
    if deployment["metadata"]["annotations"][NEVER_READY_ANNOTATION] == "true"
        || !behind(&deployment)
    {
        return;
    }
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(1);
    deployment["status"] = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
    });
    crate::store::meta_mut(&mut deployment).remove("resourceVersion");
    let writer = Writer {
        manager: "kube-controller-manager",
        api_version: "apps/v1",
        status: true,
    };
    let _ = store.update(DEPLOYMENTS, namespace, name, deployment, &writer);
}
