//! One round of one release: observe its clusters, plan, carry out the
//! plan in order, and record what `plan::after` makes of it, as
//! controller-rs's `reconcile` does for one object. Every decision is the
//! domain's (the planner's, and `after`'s); this file only reads, writes
//! and logs.
//!
//! A round that wrote its release's status (it changed a cluster, moved
//! the phase, or recorded a condition) is followed at once by the next,
//! on the release as just written, up to `ROUNDS_IN_A_TURN`: a new
//! release saves its routing, then applies its gray Deployments, in one
//! turn of the work queue instead of two. Each round still ends in its
//! own status write, so the routing is saved before the first change, as
//! the planner orders.
//!
//! A turn whose last round settled (planned nothing, and had nothing new
//! to write) says what it saw: the release's store revision, the
//! clusters' news up to a number. Its own writes, and the news of its own
//! cluster writes, then do not make the work queue give it another turn
//! only to find the same.

use serde_json::Value;

use super::Driver;
use super::queue::Seen;
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
    /// row so far. With how the turn ended, what it saw if it settled.
    pub(super) async fn round(
        &self,
        mesh: &Mesh,
        mut release: Release,
        mut conflicts: u32,
    ) -> (RoundResult, Option<Seen>) {
        for _ in 1..ROUNDS_IN_A_TURN {
            match self.one_round(mesh, release, conflicts).await {
                Ended {
                    result: RoundResult::Done,
                    next: Some(next),
                    ..
                } if next.status.phase.is_active() => {
                    release = next;
                    // A round that is done ends a run of conflicts.
                    conflicts = 0;
                }
                Ended { result, seen, .. } => return (result, seen),
            }
        }
        let last = self.one_round(mesh, release, conflicts).await;
        (last.result, last.seen)
    }

    /// One round of `release`.
    async fn one_round(&self, mesh: &Mesh, release: Release, conflicts: u32) -> Ended {
        if let Some(missing) = self.manager.unconnected_cluster(mesh, &release) {
            // Recorded and validated only, as the contract says, and saying so
            // (the create wrote the same condition: this writes nothing new).
            let update = StatusUpdate {
                conditions: vec![conditions::not_connected(&missing)],
                ..StatusUpdate::default()
            };
            self.record(&release, update).await;
            return Ended {
                result: RoundResult::NotConnected,
                next: None,
                seen: None,
            };
        }
        let placement = Placement::for_release(mesh, &release);
        // Asked before the observation: the news it holds.
        let mut told = self.clusters.told();
        let mut observed = self.clusters.observe(&release, &placement, false).await;
        let mut planned = plan::plan(&release, &observed, &placement);
        if planned.rests_on_absence() {
            // What to save, or whether a routing object must be created,
            // is decided on a fresh read: never on a list kept from
            // earlier, which may not hold an object made just before.
            told = self.clusters.told();
            observed = self.clusters.observe(&release, &placement, true).await;
            planned = plan::plan(&release, &observed, &placement);
        }
        let failure = self.carry_out(&release, &planned.changes).await;
        let moved = !planned.changes.is_empty() || planned.step.is_some();
        let (update, ended) = plan::after(&release, planned, &observed, failure, conflicts);
        if let Some(ClusterError::Refused { cluster, message }) = &ended {
            tracing::warn!(release = %release.name, %cluster, %message, "a cluster refused a change");
        }
        let recorded = self.record(&release, update).await;
        if let Some(error) = ended {
            return Ended {
                result: RoundResult::Failed(error),
                next: None,
                seen: None,
            };
        }
        match recorded {
            // Settled only when it planned nothing and had nothing new to
            // write: the plan on what it saw is the plan it made.
            Recorded::Nothing => Ended {
                result: RoundResult::Done,
                next: None,
                seen: (!moved).then_some(Seen {
                    revision: release.resource_version,
                    told,
                }),
            },
            // A status the planner has not planned on yet (a phase, a
            // condition): the next round looks at once, in this turn.
            Recorded::Written(written) => Ended {
                result: RoundResult::Done,
                next: Some(*written),
                seen: None,
            },
            Recorded::Failed => Ended {
                result: RoundResult::Done,
                next: None,
                seen: None,
            },
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
    /// second read), and says what came of it. A write that lost to
    /// another (a client's) is left to the next round, which sees it.
    async fn record(&self, release: &Release, update: StatusUpdate) -> Recorded {
        let step = update.step;
        match self.manager.write_status_on(release, update).await {
            Ok(None) => Recorded::Nothing,
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
                Recorded::Written(Box::new(written))
            }
            // Someone wrote since we read: the next round sees it.
            Err(DomainError::Aborted(_)) => Recorded::Failed,
            // Removed since we read (it had ended): nothing left to record.
            Err(DomainError::NotFound(_)) => {
                tracing::debug!(release = %release.name, "the release went away during its round");
                Recorded::Failed
            }
            Err(e) => {
                tracing::warn!(release = %release.name, ?step, error = %e, "cannot record the release's status");
                Recorded::Failed
            }
        }
    }
}

/// How one round ended.
struct Ended {
    result: RoundResult,
    /// The release as the round wrote it, if it wrote: the next round's.
    next: Option<Release>,
    /// What the round saw, if it settled: it planned no change and no
    /// step, and had nothing new to write.
    seen: Option<Seen>,
}

/// What came of a round's status write.
enum Recorded {
    /// Nothing new: nothing written.
    Nothing,
    /// Boxed: a release is large, and the other outcomes carry nothing.
    Written(Box<Release>),
    /// Refused or failed: the store holds something else.
    Failed,
}
