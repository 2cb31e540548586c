//! What the cluster driver calls: which releases it can drive, its reads
//! (for no caller), and its status-only write.

use chrono::{DateTime, Utc};

use super::errors::{stale, store_error};
use super::{ReleaseManager, ReleaseRef, later_than};
use crate::domain::error::DomainError;
use crate::domain::mesh::Mesh;
use crate::domain::plan::Placement;
use crate::domain::ports::StoreError;
use crate::domain::progress::ProgressUpdate;
use crate::domain::release::Release;
use crate::domain::status::StatusUpdate;
use crate::domain::strategy::CheckResult;

impl ReleaseManager {
    /// Why a release of `mesh` cannot be driven, if it cannot: the first of
    /// its clusters with no connection.
    pub fn unconnected_cluster(&self, mesh: &Mesh, release: &Release) -> Option<String> {
        let clusters = self.clusters.as_ref()?;
        let placement = Placement::for_release(mesh, release);
        std::iter::once(&release.cluster_id)
            .chain(std::iter::once(&placement.istio_cluster))
            .chain(release.gray_deployments.iter().map(|g| &g.cluster_id))
            .find(|c| !clusters.connected(c))
            .cloned()
    }

    /// Whether any cluster of `mesh` has a connection: the driver has
    /// nothing to carry out for the releases of a mesh that has none (their
    /// creates recorded that they are not connected).
    pub fn drives(&self, mesh: &Mesh) -> bool {
        let Some(clusters) = self.clusters.as_ref() else {
            return true;
        };
        mesh.clusters
            .iter()
            .chain(mesh.istio_config_cluster.as_ref())
            .any(|c| clusters.connected(c))
    }

    /// A release as stored, for the cluster driver (which acts for no caller).
    pub async fn read(&self, target: &ReleaseRef) -> Result<Release, DomainError> {
        self.load(target).await
    }

    /// The cluster driver's write: status only. The spec and generation stay
    /// as they are; the write still takes the next resourceVersion, and loses
    /// (`Aborted`) to any write since `expected`, a client's included.
    pub async fn write_status(
        &self,
        target: &ReleaseRef,
        expected: u64,
        update: StatusUpdate,
    ) -> Result<Release, DomainError> {
        self.write_derived(target, expected, |current, now| {
            update.apply_to(current, now)
        })
        .await
    }

    /// The driver's write of a strategy's decision: its status, the
    /// traffic policy its steps set and a phase move, in one write that
    /// loses (`Aborted`) to any write since `expected`.
    pub async fn write_progress(
        &self,
        target: &ReleaseRef,
        expected: u64,
        update: &ProgressUpdate,
    ) -> Result<Release, DomainError> {
        self.write_derived(target, expected, |current, now| {
            update.apply_to(current, now)
        })
        .await
    }

    /// The cluster driver's status write on the release as its round read
    /// it, without reading it again: the store's own check of `read`'s
    /// resourceVersion makes it lose (`Aborted`) to any write since.
    /// `None`: the update brings nothing new, so nothing is written (and
    /// nothing is checked: the caller goes on only after a write).
    pub async fn write_status_on(
        &self,
        read: &Release,
        update: StatusUpdate,
    ) -> Result<Option<Release>, DomainError> {
        self.write_derived_on(read, |current, now| update.apply_to(current, now))
            .await
    }

    /// A write of what `derive` makes of the release as stored at
    /// `expected` (`None`: nothing new, so no write, no event and no new
    /// round of the driver); loses (`Aborted`) to any write since.
    async fn write_derived(
        &self,
        target: &ReleaseRef,
        expected: u64,
        derive: impl FnOnce(&Release, DateTime<Utc>) -> Result<Option<Release>, String>,
    ) -> Result<Release, DomainError> {
        let current = self.load(target).await?;
        if current.resource_version != expected {
            return Err(stale(&current, expected));
        }
        let written = self.write_derived_on(&current, derive).await?;
        Ok(written.unwrap_or(current))
    }

    /// A write of what `derive` makes of `read`, pinned to its
    /// resourceVersion; `None` when there is nothing new to write.
    async fn write_derived_on(
        &self,
        read: &Release,
        derive: impl FnOnce(&Release, DateTime<Utc>) -> Result<Option<Release>, String>,
    ) -> Result<Option<Release>, DomainError> {
        let now = later_than(read.status.update_time);
        let next = match derive(read, now) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(None),
            Err(refused) => {
                // Refused on what was read: if that is no longer what is
                // stored, the read lost a race, which is what to say.
                let current = self.load(&ReleaseRef::of(read)).await?;
                if current.resource_version != read.resource_version {
                    return Err(stale(&current, read.resource_version));
                }
                return Err(DomainError::FailedPrecondition(refused));
            }
        };
        self.store
            .update(&next, read.resource_version)
            .await
            .map(Some)
            .map_err(|e| match e {
                StoreError::Stale { current: now_at } => DomainError::Aborted(format!(
                    "release {:?} changed: its resourceVersion is now {now_at}",
                    read.name
                )),
                other @ (StoreError::NameTaken
                | StoreError::ServiceBusy { .. }
                | StoreError::NotFound
                | StoreError::IdempotencyMismatch
                | StoreError::TooOld { .. }
                | StoreError::NotGiven { .. }
                | StoreError::Unavailable(_)
                | StoreError::Internal(_)) => store_error(other),
            })
    }

    /// Keeps the results of a round of checks (ListReleaseChecks).
    pub async fn record_checks(
        &self,
        release: &Release,
        results: &[CheckResult],
    ) -> Result<(), DomainError> {
        self.store
            .record_checks(release.uid, results)
            .await
            .map_err(store_error)
    }
}
