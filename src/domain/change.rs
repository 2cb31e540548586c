//! What the planner asks of a cluster, one object at a time, and how a
//! cluster can refuse. A leaf of the domain (besides JSON objects): the
//! stored release (a dry run's plan), the planner, the port to the
//! clusters and the driver all speak it.

use super::object::JsonObject;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum ObjectKind {
    Deployment,
    VirtualService,
    DestinationRule,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Deployment => "Deployment",
            ObjectKind::VirtualService => "VirtualService",
            ObjectKind::DestinationRule => "DestinationRule",
        }
    }
}

/// What to do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Create it or change it to this (gray Deployments by server-side
    /// apply; Istio objects by a replace pinned to the resourceVersion read,
    /// or a create when the object has none).
    Apply,
    /// Delete it (only the object seen: its uid, when given, is the
    /// delete's precondition).
    Delete,
    /// Set its replicas to 0 (the original on end, when so configured).
    ScaleToZero,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Apply => "apply",
            Change::Delete => "delete",
            Change::ScaleToZero => "scale",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedObject {
    pub cluster_id: String,
    pub kind: ObjectKind,
    pub change: Change,
    /// The whole object for an apply; its apiVersion, kind and metadata
    /// (name, namespace, and the uid seen) for a delete or scale.
    pub object: JsonObject,
}

/// On a dry-run answer: what the next round would change, and how far that
/// could be checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preview {
    pub changes: Vec<PreviewedChange>,
    /// How the plan was made, or why the routing could not be planned.
    pub message: String,
}

/// A change of a preview, and what the cluster's own dry run said of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewedChange {
    pub change: PlannedObject,
    /// `None`: not asked; `Some(Err)`: refused, and why.
    pub dry_run: Option<Result<(), String>>,
}

/// Why a cluster request failed, in the driver's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The cluster did not answer (or answered 5xx): wait and retry.
    #[error("cluster {cluster} is unreachable: {message}")]
    Unreachable { cluster: String, message: String },
    /// A write lost a race (409 on a pinned replace): read again and retry.
    #[error("cluster {cluster}: {message}")]
    Conflict { cluster: String, message: String },
    /// The cluster refused for good (403, a field another manager owns, an
    /// invalid object): the release fails with the cluster's words.
    #[error("cluster {cluster} refused: {message}")]
    Refused { cluster: String, message: String },
}
