//! The conditions a release's status carries, as Kubernetes writes them
//! (`type`, `status`, `reason`, `message`): every type and every reason
//! the service writes is named here, and nowhere else. A leaf.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a condition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Whether every cluster of the release has a connection and answers.
    ClustersReachable,
    /// Whether every gray Deployment is ready (or what became of them).
    GrayReady,
    /// Whether the routing in the cluster holds the traffic policy.
    TrafficApplied,
    /// Why the release failed, once it has.
    Failed,
    /// Whether the latest round of a strategy's checks passed.
    Analysis,
    /// Where a strategy is: stepping, paused, held, completed, rolled back.
    Progressing,
}

impl ConditionType {
    pub const ALL: [ConditionType; 6] = [
        ConditionType::ClustersReachable,
        ConditionType::GrayReady,
        ConditionType::TrafficApplied,
        ConditionType::Failed,
        ConditionType::Analysis,
        ConditionType::Progressing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::ClustersReachable => "ClustersReachable",
            ConditionType::GrayReady => "GrayReady",
            ConditionType::TrafficApplied => "TrafficApplied",
            ConditionType::Failed => "Failed",
            ConditionType::Analysis => "Analysis",
            ConditionType::Progressing => "Progressing",
        }
    }
}

/// Why a condition is as it is, in one CamelCase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // ClustersReachable
    Reachable,
    Unreachable,
    /// A cluster of the release has no connection configured.
    NotConnected,
    // GrayReady
    Ready,
    NotReady,
    ProgressDeadlineExceeded,
    /// Deleted by the release's cancel.
    Deleted,
    // TrafficApplied
    Applied,
    Applying,
    /// Back as its owners left it (a cancel).
    Restored,
    /// The release never changed the routing: nothing to restore.
    Untouched,
    /// Another writer changed an object meanwhile; retrying.
    Conflict,
    // Why a release fails (Failed, and TrafficApplied once it is over)
    /// A gray Deployment (or routing object) that is not this release's.
    NotOwned,
    /// More than one VirtualService or DestinationRule for the host.
    AmbiguousRouting,
    /// The DestinationRule has a subset of the version's name selecting
    /// something else.
    SubsetConflict,
    OriginalNotFound,
    OriginalUnlabeled,
    SameVersion,
    ServiceNotFound,
    ServiceSelectsVersion,
    /// A cluster refused a change for good (403, invalid, a field manager).
    ClusterRefused,
    // Analysis
    /// The latest round of checks passed.
    Passed,
    /// A check failed.
    CheckFailed,
    /// A check had no data (holds).
    NoData,
    /// A check could not be evaluated (holds, counted apart).
    CheckError,
    // Progressing
    Stepping,
    Paused,
    Held,
    Completed,
    RolledBack,
    // Why a strategy rolled back (Failed), or paused
    AnalysisFailed,
    Aborted,
    RollbackWebhook,
    /// Failed no longer: a client's retry.
    Retried,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reachable => "Reachable",
            Reason::Unreachable => "Unreachable",
            Reason::NotConnected => "NotConnected",
            Reason::Ready => "Ready",
            Reason::NotReady => "NotReady",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            Reason::Deleted => "Deleted",
            Reason::Applied => "Applied",
            Reason::Applying => "Applying",
            Reason::Restored => "Restored",
            Reason::Untouched => "Untouched",
            Reason::Conflict => "Conflict",
            Reason::NotOwned => "NotOwned",
            Reason::AmbiguousRouting => "AmbiguousRouting",
            Reason::SubsetConflict => "SubsetConflict",
            Reason::OriginalNotFound => "OriginalNotFound",
            Reason::OriginalUnlabeled => "OriginalUnlabeled",
            Reason::SameVersion => "SameVersion",
            Reason::ServiceNotFound => "ServiceNotFound",
            Reason::ServiceSelectsVersion => "ServiceSelectsVersion",
            Reason::ClusterRefused => "ClusterRefused",
            Reason::Passed => "Passed",
            Reason::CheckFailed => "Failed",
            Reason::NoData => "NoData",
            Reason::CheckError => "Error",
            Reason::Stepping => "Stepping",
            Reason::Paused => "Paused",
            Reason::Held => "Held",
            Reason::Completed => "Completed",
            Reason::RolledBack => "RolledBack",
            Reason::AnalysisFailed => "AnalysisFailed",
            Reason::Aborted => "Aborted",
            Reason::RollbackWebhook => "RollbackWebhook",
            Reason::Retried => "Retried",
        }
    }
}

/// A condition to set: its type, true or false, why, and in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionChange {
    pub kind: ConditionType,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

impl ConditionChange {
    pub fn new(
        kind: ConditionType,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        ConditionChange {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// What a release of a cluster with no connection says (at create, and
/// each round of the driver after).
pub fn not_connected(cluster: &str) -> ConditionChange {
    ConditionChange::new(
        ConditionType::ClustersReachable,
        false,
        Reason::NotConnected,
        format!(
            "cluster {cluster:?} has no connection configured ([[clusters]]); the release is recorded and validated only"
        ),
    )
}

/// A condition as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCondition {
    pub kind: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
}

/// Sets `change` in `conditions`: by type, the transition time moving only
/// when the status does.
pub fn set(conditions: &mut Vec<StatusCondition>, change: &ConditionChange, now: DateTime<Utc>) {
    let kind = change.kind.as_str();
    let status = if change.status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
                status.clone_into(&mut c.status);
            }
            change.reason.as_str().clone_into(&mut c.reason);
            c.message.clone_from(&change.message);
        }
        None => conditions.push(StatusCondition {
            kind: kind.to_owned(),
            status: status.to_owned(),
            reason: change.reason.as_str().to_owned(),
            message: change.message.clone(),
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_condition_moves_its_transition_time_only_when_its_status_changes() {
        let t = |s| Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, s).unwrap();
        let mut conditions = Vec::new();
        let ready =
            |status, reason| ConditionChange::new(ConditionType::GrayReady, status, reason, "m");
        set(&mut conditions, &ready(false, Reason::NotReady), t(0));
        set(&mut conditions, &ready(false, Reason::NotReady), t(1));
        assert_eq!(conditions[0].last_transition_time, t(0));
        set(&mut conditions, &ready(true, Reason::Ready), t(2));
        assert_eq!(
            (conditions[0].status.as_str(), conditions[0].reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(conditions[0].last_transition_time, t(2));
        set(
            &mut conditions,
            &ConditionChange::new(ConditionType::Failed, true, Reason::NotOwned, "x"),
            t(3),
        );
        assert_eq!(conditions.len(), 2);
        let names: Vec<&str> = ConditionType::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "ClustersReachable",
                "GrayReady",
                "TrafficApplied",
                "Failed",
                "Analysis",
                "Progressing"
            ]
        );
    }
}
