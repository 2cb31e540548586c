//! The store's refusals, and the manager's own, in the client's terms.

use super::ReleaseRef;
use crate::domain::error::DomainError;
use crate::domain::ports::StoreError;
use crate::domain::release::Release;

/// A store refusal of `release` in the client's terms.
pub(super) fn conflict(error: StoreError, release: &Release) -> DomainError {
    match error {
        StoreError::NameTaken => DomainError::AlreadyExists(format!(
            "release {:?} already exists in mesh {:?}, namespace {:?}",
            release.name, release.mesh_id, release.namespace
        )),
        StoreError::ServiceBusy { holder } => DomainError::AlreadyExists(format!(
            "service {:?} in namespace {:?} already has an active release: {holder:?}",
            release.service_name, release.namespace
        )),
        other @ (StoreError::NotFound
        | StoreError::Stale { .. }
        | StoreError::IdempotencyMismatch
        | StoreError::TooOld { .. }
        | StoreError::NotGiven { .. }
        | StoreError::Unavailable(_)
        | StoreError::Internal(_)) => store_error(other),
    }
}

pub(super) fn stale(current: &Release, pinned: u64) -> DomainError {
    DomainError::Aborted(format!(
        "release {:?} has changed: metadata.resourceVersion {pinned} is stale, the current one is {}",
        current.name, current.resource_version
    ))
}

pub(super) fn over(current: &Release) -> DomainError {
    DomainError::FailedPrecondition(format!(
        "release {:?} is {} and can no longer be updated",
        current.name,
        current.status.phase.as_str()
    ))
}

pub(super) fn busy(target: &ReleaseRef) -> DomainError {
    DomainError::Aborted(format!(
        "release {:?} is changing too often to apply this; retry",
        target.name
    ))
}

pub(super) fn store_error(error: StoreError) -> DomainError {
    match error {
        StoreError::NotFound => DomainError::NotFound("release not found".into()),
        StoreError::NameTaken => DomainError::AlreadyExists("a release of that name exists".into()),
        StoreError::ServiceBusy { holder } => DomainError::AlreadyExists(format!(
            "the service already has an active release: {holder:?}"
        )),
        StoreError::Stale { current } => DomainError::Aborted(format!(
            "the release has changed: its resourceVersion is now {current}"
        )),
        StoreError::IdempotencyMismatch => {
            DomainError::AlreadyExists("the client token was used for a different request".into())
        }
        StoreError::TooOld { requested, oldest } => DomainError::Gone(format!(
            "resourceVersion {requested} is too old to resume from (the oldest kept is {oldest}); watch again without one"
        )),
        StoreError::NotGiven { requested, .. } => DomainError::Gone(format!(
            "resourceVersion {requested} is not one this service gave: its data may have been replaced since (a new data directory or database); watch again without one"
        )),
        StoreError::Unavailable(reason) => DomainError::Unavailable(reason),
        StoreError::Internal(cause) => DomainError::Internal(cause),
    }
}
