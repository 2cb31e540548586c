//! The release domain: what a release is, which releases are valid, who may do
//! what, and the operations themselves. Nothing here knows about tonic, axum,
//! protobuf or SQL; the protocol edges and the store adapt to these types.

pub mod authz;
pub mod cursor;
pub mod deployment;
pub mod error;
pub mod istio;
pub mod mesh;
pub mod names;
pub mod phase;
pub mod plan;
pub mod ports;
pub mod release;
pub mod service;
pub mod traffic;
pub mod validation;

pub use authz::{Action, Condition, ConditionKey, Effect, Principal, Statement};
pub use error::{DomainError, Violation};
pub use mesh::{Mesh, Meshes};
pub use release::{GrayDeployment, JsonObject, Phase, Release, ReleaseDraft, ReleaseType};
pub use service::{
    CreateRelease, ListReleases, PatchRelease, ReleaseManager, ReleasePage, ReleaseRef,
    StatusUpdate, UpdateRelease, WatchReleases,
};
pub use traffic::TrafficPolicy;
