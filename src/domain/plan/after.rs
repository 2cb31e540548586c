//! What a round makes of a release's status: from the plan, what the
//! clusters answered while it was carried out, and what was observed, the
//! status update to record. Pure, so that the failure paths (a refusal, an
//! unreachable cluster, a storm of conflicts) are tested as the happy path
//! is, without a server.

use std::sync::Arc;

use super::{Observation, Plan, gray_seen};
use crate::domain::change::ClusterError;
use crate::domain::conditions::{ConditionChange, ConditionType, Reason};
use crate::domain::phase::Move;
use crate::domain::release::Release;
use crate::domain::status::StatusUpdate;

/// Write conflicts in a row after which a release fails: someone keeps
/// writing the same objects, and fighting them silently is worse than
/// stopping.
pub const CONFLICTS_TO_REFUSAL: u32 = 8;

/// The status to record after carrying out `plan` (stopped at `failure`,
/// if a change failed), and how the round ended in the driver's terms:
/// `None` when done, or the error its backoff answers (a cluster that did
/// not answer a read counts as unreachable). `conflicts` is the release's
/// conflicts in a row before this round.
pub fn after(
    release: &Release,
    plan: Plan,
    observed: &Observation,
    failure: Option<ClusterError>,
    conflicts: u32,
) -> (StatusUpdate, Option<ClusterError>) {
    let failure = failure.map(|error| match error {
        ClusterError::Conflict { cluster, message } if conflicts + 1 >= CONFLICTS_TO_REFUSAL => {
            ClusterError::Refused {
                cluster,
                message: format!(
                    "a write conflict did not clear after {CONFLICTS_TO_REFUSAL} tries: {message}"
                ),
            }
        }
        other @ (ClusterError::Conflict { .. }
        | ClusterError::Unreachable { .. }
        | ClusterError::Refused { .. }) => other,
    });
    let mut update = StatusUpdate {
        conditions: plan.conditions,
        saved_routing: plan.saved_routing,
        ..StatusUpdate::default()
    };
    match &failure {
        None => {
            // What the plan said the objects would be once carried out.
            update.step = plan.step;
            update.traffic = plan.traffic;
            update.deployment = plan.deployment;
            update.gray_seen = plan.gray_seen;
            if plan.changes.is_empty() {
                update.observed_generation = Some(release.generation);
            }
        }
        Some(error) => {
            // Not carried out: the objects as they were read.
            update.deployment = observed.original.clone().map(Arc::new);
            update.gray_seen = Some(gray_seen(release, observed));
            update.conditions.push(match error {
                ClusterError::Refused { cluster, message } => {
                    let failing = release.status.phase.goes_forward();
                    if failing {
                        update.step = Some(Move::Fail);
                    }
                    ConditionChange::new(
                        ConditionType::Failed,
                        failing,
                        Reason::ClusterRefused,
                        format!("cluster {cluster} refused a change: {message}"),
                    )
                }
                ClusterError::Unreachable { cluster, message } => ConditionChange::new(
                    ConditionType::ClustersReachable,
                    false,
                    Reason::Unreachable,
                    format!("cluster {cluster} did not answer ({message}); retrying"),
                ),
                ClusterError::Conflict { cluster, message } => ConditionChange::new(
                    ConditionType::TrafficApplied,
                    false,
                    Reason::Conflict,
                    format!(
                        "another writer changed an object in cluster {cluster} meanwhile ({message}); retrying"
                    ),
                ),
            });
        }
    }
    let ended = failure.or_else(|| {
        // The plan waited for a cluster that did not answer a read.
        observed
            .unreachable
            .first()
            .map(|cluster| ClusterError::Unreachable {
                cluster: cluster.clone(),
                message: "a read got no answer".into(),
            })
    });
    (update, ended)
}
