//! A client's actions on a release that runs itself (pause, resume,
//! promote, abort, retry), and the rounds of checks it can read back.

use super::errors::store_error;
use super::{ReleaseManager, ReleaseRef, WRITE_ATTEMPTS, later_than};
use crate::domain::authz::{Action, Principal};
use crate::domain::error::DomainError;
use crate::domain::ports::StoreError;
use crate::domain::progress::{self, ProgressUpdate};
use crate::domain::release::Release;
use crate::domain::strategy::CheckResult;

impl ReleaseManager {
    /// Carries out `action` on the release: a repeat changes nothing and
    /// answers the release as it is; what the phase does not allow is
    /// `FailedPrecondition`, saying what to do instead.
    pub async fn act(
        &self,
        principal: &Principal,
        target: ReleaseRef,
        action: progress::Action,
    ) -> Result<Release, DomainError> {
        self.mesh(principal, Action::UpdateRelease, &target.mesh_id)?;
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(&target).await?;
            let now = later_than(current.status.update_time);
            let Some(decision) =
                progress::act(&current, action, now).map_err(DomainError::FailedPrecondition)?
            else {
                return Ok(current);
            };
            let update = ProgressUpdate(decision);
            let Some(next) = update
                .apply_to(&current, now)
                .map_err(DomainError::FailedPrecondition)?
            else {
                return Ok(current);
            };
            match self.store.update(&next, current.resource_version).await {
                Ok(stored) => return Ok(stored),
                // Someone wrote meanwhile (the driver, most often): again,
                // on what is there now.
                Err(StoreError::Stale { .. }) => continue,
                Err(other) => return Err(store_error(other)),
            }
        }
        Err(super::errors::busy(&target))
    }

    /// Every kept result of the release's rounds of checks, oldest first.
    pub async fn checks(
        &self,
        principal: &Principal,
        target: ReleaseRef,
    ) -> Result<Vec<CheckResult>, DomainError> {
        self.mesh(principal, Action::GetRelease, &target.mesh_id)?;
        let release = self.load(&target).await?;
        self.store.checks(release.uid).await.map_err(store_error)
    }
}
