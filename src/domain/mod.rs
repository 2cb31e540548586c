//! The release domain: what a release is, which releases are valid, who may do
//! what, and the operations themselves. Nothing here knows about tonic, axum,
//! protobuf, SQL or the metrics crate; the protocol edges and the store adapt
//! to these types.
//!
//! Layered, each layer using only those before it (`tests/domain/layers.rs`
//! keeps it so):
//!
//! 1. leaves: `object` (JSON objects), `kinds` (release type, phase),
//!    `conditions`, `names`, `cursor`, `durations`, `change` (what is
//!    asked of a cluster), `istio` (the Istio object types);
//! 2. entities and rules: `mesh`, `authz`, `error`, `traffic`,
//!    `strategy`, `deployment`, `release`, `phase`, `status`, `validation`;
//! 3. the planners: `plan` (the objects in the clusters) and `progress`
//!    (what a strategy does next);
//! 4. the operations: `ports` (what the domain needs from the world) and
//!    `service` (`ReleaseManager`).

pub mod authz;
pub mod change;
pub mod conditions;
pub mod cursor;
pub mod deployment;
pub mod durations;
pub mod error;
pub mod istio;
pub mod kinds;
pub mod mesh;
pub mod names;
pub mod object;
pub mod phase;
pub mod plan;
pub mod ports;
pub mod progress;
pub mod release;
pub mod service;
pub mod status;
pub mod strategy;
pub mod traffic;
pub mod validation;

pub use authz::{Action, Condition, ConditionKey, Effect, Principal, Statement};
pub use error::{DomainError, Violation};
pub use kinds::{Phase, ReleaseType};
pub use mesh::{Mesh, Meshes};
pub use object::JsonObject;
pub use release::{GrayDeployment, Release, ReleaseDraft};
pub use service::{
    CreateRelease, ListReleases, PatchRelease, ReleaseManager, ReleasePage, ReleaseRef,
    UpdateRelease, WatchReleases,
};
pub use status::StatusUpdate;
pub use traffic::TrafficPolicy;
