//! One round of one release: observe its clusters, plan, carry out the
//! plan in order, and record what `plan::after` makes of it, as
//! controller-rs's `reconcile` does for one object. Every decision is the
//! domain's (the planner's, and `after`'s); this file only reads, writes
//! and logs.
//!
//! A round that moved its release on (changed a cluster, or moved its
//! phase) is followed at once by the next, on the release as just
//! written, up to `ROUNDS_IN_A_TURN`: a new release saves its routing,
//! then applies its gray Deployments, in one turn of the work queue
//! instead of two. Each round still ends in its own status write, so the
//! routing is saved before the first change, as the planner orders.

use serde_json::Value;

use super::Driver;
use crate::domain::change::{ClusterError, PlannedObject};
use crate::domain::conditions;
use crate::domain::plan::{self, Placement};
use crate::domain::{DomainError, Mesh, Phase, Release, StatusUpdate};

/// How one release's round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundResult {
    Done,
    /// A cluster of the release has no connection: it waits for a restart.
    NotConnected,
    Failed(ClusterError),
}

/// Rounds one release may run in one turn while each moves it on; a
/// bound, so that a plan that never settles cannot hold a turn forever.
const ROUNDS_IN_A_TURN: usize = 4;

impl RoundResult {
    /// For `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            RoundResult::Done => "done",
            RoundResult::NotConnected => "not_connected",
            RoundResult::Failed(ClusterError::Unreachable { .. }) => "unreachable",
            RoundResult::Failed(ClusterError::Conflict { .. }) => "conflict",
            RoundResult::Failed(ClusterError::Refused { .. }) => "refused",
        }
    }
}

impl Driver {
    /// The rounds of `release` in one turn: one, and the next at once
    /// while each moves the release on; `conflicts`: its conflicts in a
    /// row so far.
    pub(super) async fn round(
        &self,
        mesh: &Mesh,
        mut release: Release,
        mut conflicts: u32,
    ) -> RoundResult {
        for _ in 1..ROUNDS_IN_A_TURN {
            match self.one_round(mesh, release, conflicts).await {
                (RoundResult::Done, Some(next)) if next.status.phase.is_active() => {
                    release = next;
                    // A round that is done ends a run of conflicts.
                    conflicts = 0;
                }
                (result, _) => return result,
            }
        }
        self.one_round(mesh, release, conflicts).await.0
    }

    /// One round of `release`, and the release as it wrote it if the
    /// round moved it on (changed a cluster, or moved its phase).
    async fn one_round(
        &self,
        mesh: &Mesh,
        release: Release,
        conflicts: u32,
    ) -> (RoundResult, Option<Release>) {
        if let Some(missing) = self.manager.unconnected_cluster(mesh, &release) {
            // Recorded and validated only, as the contract says, and saying so
            // (the create wrote the same condition: this writes nothing new).
            let update = StatusUpdate {
                conditions: vec![conditions::not_connected(&missing)],
                ..StatusUpdate::default()
            };
            self.record(&release, update).await;
            return (RoundResult::NotConnected, None);
        }
        let placement = Placement::for_release(mesh, &release);
        let mut observed = self.clusters.observe(&release, &placement, false).await;
        let mut planned = plan::plan(&release, &observed, &placement);
        if planned.rests_on_absence() {
            // What to save, or whether a routing object must be created,
            // is decided on a fresh read: never on a list kept from
            // earlier, which may not hold an object made just before.
            observed = self.clusters.observe(&release, &placement, true).await;
            planned = plan::plan(&release, &observed, &placement);
        }
        let failure = self.carry_out(&release, &planned.changes).await;
        let moved = !planned.changes.is_empty() || planned.step.is_some();
        let (update, ended) = plan::after(&release, planned, &observed, failure, conflicts);
        if let Some(ClusterError::Refused { cluster, message }) = &ended {
            tracing::warn!(release = %release.name, %cluster, %message, "a cluster refused a change");
        }
        let written = self.record(&release, update).await;
        match ended {
            None => (RoundResult::Done, written.filter(|_| moved)),
            Some(error) => (RoundResult::Failed(error), None),
        }
    }

    /// Carries out `changes` in order, each logged and in the audit trail;
    /// the first failure stops them.
    async fn carry_out(
        &self,
        release: &Release,
        changes: &[PlannedObject],
    ) -> Option<ClusterError> {
        for change in changes {
            if let Err(error) = self.clusters.carry_out(change).await {
                return Some(error);
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
            // And the audit trail's record of the same change.
            tracing::info!(
                target: crate::telemetry::AUDIT,
                subject = "meshrelease-driver",
                mesh = %release.mesh_id,
                namespace = %release.namespace,
                release = %release.name,
                cluster = %change.cluster_id,
                kind = change.kind.as_str(),
                action = change.change.as_str(),
                object,
                outcome = "OK",
                "changed a cluster object"
            );
        }
        None
    }

    /// Writes the round's status on the release as the round read it (no
    /// second read), and returns the release as written: `None` when
    /// nothing was new or the write failed. A write that lost to another
    /// (a client's) is left to the next round, which sees it.
    async fn record(&self, release: &Release, update: StatusUpdate) -> Option<Release> {
        let step = update.step;
        match self.manager.write_status_on(release, update).await {
            // Nothing new: nothing written.
            Ok(None) => None,
            Ok(Some(written)) => {
                if written.status.phase != release.status.phase {
                    tracing::info!(
                        release = %release.name, mesh = %release.mesh_id,
                        from = release.status.phase.as_str(), to = written.status.phase.as_str(),
                        "release moved"
                    );
                    if written.status.phase == Phase::Running {
                        let took = chrono::Utc::now() - release.status.start_time;
                        self.metrics
                            .time_to_running
                            .observe(took.to_std().unwrap_or_default().as_secs_f64());
                    }
                }
                Some(written)
            }
            // Someone wrote since we read: the next round sees it.
            Err(DomainError::Aborted(_)) => None,
            // Removed since we read (it had ended): nothing left to record.
            Err(DomainError::NotFound(_)) => {
                tracing::debug!(release = %release.name, "the release went away during its round");
                None
            }
            Err(e) => {
                tracing::warn!(release = %release.name, ?step, error = %e, "cannot record the release's status");
                None
            }
        }
    }
}
