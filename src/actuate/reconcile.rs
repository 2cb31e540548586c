//! The reconcile loop: for every active release whose clusters are
//! connected, observe, plan, carry out the plan in order, and record what
//! happened through the status-only write. It runs when the store changes
//! (the same revisions the watch uses) and on a periodic resync, and it is
//! idempotent: the plan is derived from what the clusters hold, so a restart
//! in any phase carries on where it stopped.
//!
//! Not yet (issue 12): watches on the clusters' objects (a Deployment that
//! becomes ready is seen at the next resync), per-release backoff, and one
//! driver among several replicas.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::phase::Move;
use crate::domain::plan::{self, Context, FAILED, REACHABLE, TRAFFIC_APPLIED};
use crate::domain::ports::{ClusterError, ClusterPort};
use crate::domain::service::{NOT_CONNECTED, not_connected_message};
use crate::domain::{DomainError, Mesh, Phase, Release, ReleaseManager, ReleaseRef, StatusUpdate};

pub struct Driver {
    pub manager: Arc<ReleaseManager>,
    pub clusters: Arc<dyn ClusterPort>,
    /// The periodic resync.
    pub interval: Duration,
    pub shutdown: CancellationToken,
}

impl Driver {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut revisions = self.manager.store().revisions();
        let mut resync = tokio::time::interval(self.interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = revisions.changed() => if changed.is_err() { return },
                _ = resync.tick() => {}
            }
            revisions.borrow_and_update();
            self.reconcile_all().await;
        }
    }

    async fn reconcile_all(&self) {
        let meshes: Vec<Mesh> = self.manager.meshes().iter().cloned().collect();
        for mesh in meshes {
            let releases = match self.manager.store().snapshot(&mesh.id, None).await {
                Ok((releases, _)) => releases,
                Err(e) => {
                    tracing::warn!(mesh = %mesh.id, error = %e, "cannot read the releases to reconcile");
                    continue;
                }
            };
            for release in releases.into_iter().filter(|r| r.status.phase.is_active()) {
                if self.shutdown.is_cancelled() {
                    return;
                }
                self.reconcile(&mesh, release).await;
            }
        }
    }

    async fn reconcile(&self, mesh: &Mesh, release: Release) {
        let context = Context::for_release(mesh, &release);
        let target = ReleaseRef {
            mesh_id: release.mesh_id.clone(),
            namespace: release.namespace.clone(),
            name: release.name.clone(),
        };
        if let Some(missing) = self.manager.unconnected_cluster(mesh, &release) {
            // Recorded and validated only, as the contract says, and saying so
            // (the create wrote the same condition: this writes nothing new).
            let update = StatusUpdate {
                conditions: vec![(
                    REACHABLE.into(),
                    false,
                    NOT_CONNECTED.into(),
                    not_connected_message(&missing),
                )],
                ..StatusUpdate::default()
            };
            self.record(&target, &release, update).await;
            return;
        }
        let observed = self.clusters.observe(&release, &context).await;
        let planned = plan::plan(&release, &observed, &context);
        let mut failure = None;
        for change in &planned.changes {
            if let Err(e) = self.clusters.carry_out(change).await {
                failure = Some(e);
                break;
            }
            let object = change
                .object
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            tracing::info!(
                release = %release.name,
                mesh = %release.mesh_id,
                cluster = %change.cluster_id,
                kind = change.kind.as_str(),
                action = change.change.as_str(),
                object,
                "changed a cluster object"
            );
        }
        let gray_deployments = Some(
            release
                .status
                .gray_deployments
                .iter()
                .zip(observed.gray.iter().chain(std::iter::repeat(&None)))
                .map(|(completed, seen)| {
                    let mut shown = (**completed).clone();
                    if let Some(status) = seen.as_ref().and_then(|s| s.get("status")) {
                        shown.insert("status".into(), status.clone());
                    }
                    Arc::new(shown)
                })
                .collect(),
        );
        let mut update = StatusUpdate {
            conditions: planned.conditions,
            deployment: planned.deployment,
            saved_routing: planned.saved_routing,
            gray_deployments,
            ..StatusUpdate::default()
        };
        match failure {
            None => {
                update.step = planned.step;
                update.traffic = planned.traffic;
                if planned.changes.is_empty() {
                    update.observed_generation = Some(release.generation);
                }
            }
            Some(ClusterError::Refused { cluster, message }) => {
                tracing::warn!(release = %release.name, %cluster, %message, "a cluster refused a change");
                let failing = matches!(
                    release.status.phase,
                    Phase::Pending | Phase::Deploying | Phase::Running
                );
                if failing {
                    update.step = Some(Move::Fail);
                }
                update.conditions.push((
                    FAILED.into(),
                    failing,
                    "ClusterRefused".into(),
                    format!("cluster {cluster} refused a change: {message}"),
                ));
            }
            Some(ClusterError::Unreachable { cluster, message }) => {
                update.conditions.push((
                    REACHABLE.into(),
                    false,
                    "Unreachable".into(),
                    format!("cluster {cluster} did not answer ({message}); retrying"),
                ));
            }
            Some(ClusterError::Conflict { cluster, message }) => {
                update.conditions.push((
                    TRAFFIC_APPLIED.into(),
                    false,
                    "Conflict".into(),
                    format!("another writer changed an object in cluster {cluster} meanwhile ({message}); retrying"),
                ));
            }
        }
        self.record(&target, &release, update).await;
    }

    async fn record(&self, target: &ReleaseRef, release: &Release, update: StatusUpdate) {
        let step = update.step;
        match self
            .manager
            .write_status(target, release.resource_version, update)
            .await
        {
            Ok(written) if written.status.phase != release.status.phase => tracing::info!(
                release = %release.name, mesh = %release.mesh_id,
                from = release.status.phase.as_str(), to = written.status.phase.as_str(),
                "release moved"
            ),
            Ok(_) => {}
            // Someone wrote since we read: the next round sees it.
            Err(DomainError::Aborted(_)) => {}
            Err(e) => {
                tracing::warn!(release = %release.name, ?step, error = %e, "cannot record the release's status")
            }
        }
    }
}
