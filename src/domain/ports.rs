//! The domain's ports: what it needs from the world, as traits it owns.
//! `crate::store` implements [`ReleaseStore`] (SQLite, PostgreSQL, memory).
//! Every backend enforces the same rules itself, race-free: one name per
//! mesh and namespace, one active release per service, compare-and-swap on
//! `resourceVersion`, idempotency keys. Every write gets a revision greater
//! than any revision a watcher has been shown, and leaves an event, so that
//! watchers can follow the changes in revision order, never skipping one,
//! and resume. Revisions increase but need not be consecutive.

use async_trait::async_trait;
use tokio::sync::watch;

use super::change::{ClusterError, PlannedObject};
use super::kinds::Phase;
use super::plan::{Observation, Placement};
use super::release::{Release, ReleaseRef};
use super::strategy::CheckResult;

/// How many events are kept for watchers to resume from.
pub const EVENT_RETENTION: u64 = 100_000;

/// How many check results are kept per release (`ListReleaseChecks`).
pub const CHECK_RETENTION: usize = 500;

/// How long an idempotency key is remembered, in seconds.
pub const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 60 * 60;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a release of that name exists in this mesh and namespace")]
    NameTaken,
    #[error("the service already has an active release: {holder}")]
    ServiceBusy { holder: String },
    #[error("no such release")]
    NotFound,
    #[error("the release has changed: its resourceVersion is now {current}")]
    Stale { current: u64 },
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("resourceVersion {requested} is too old; the oldest kept is {oldest}")]
    TooOld { requested: u64, oldest: u64 },
    /// A resume point this store never gave: beyond its latest revision, or
    /// before its first (a client of another store, or of this one before
    /// its data was replaced).
    #[error(
        "resourceVersion {requested} was never given by this store (its revisions run from {first} to {latest})"
    )]
    NotGiven {
        requested: u64,
        first: u64,
        latest: u64,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// A client's request id for a create, remembered with what it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent it: keys of different callers never meet.
    pub subject: String,
    pub token: String,
    /// A digest of the request, to tell a retry from a different request.
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Stored now, with its resourceVersion.
    New(Release),
    /// A retry of an earlier create: that create's answer, nothing stored.
    Replayed(Release),
}

/// One page of a list, in creation order.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub mesh_id: String,
    pub namespace: Option<String>,
    pub service_name: Option<String>,
    pub phase: Option<Phase>,
    /// Releases created after this position only (from a continue token).
    pub after: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub releases: Vec<Release>,
    /// The position of the last release, when more may follow.
    pub next: Option<i64>,
}

impl Page {
    /// A page from rows in creation order, each its position and what decodes
    /// to a release. Backends fetch `limit + 1` rows: the extra one only says
    /// that more follow, and is not decoded.
    pub fn from_rows<T>(
        rows: impl IntoIterator<Item = Result<(i64, T), StoreError>>,
        limit: usize,
        decode: impl Fn(T) -> Result<Release, StoreError>,
    ) -> Result<Page, StoreError> {
        let mut releases = Vec::with_capacity(limit.min(1024));
        let mut last = None;
        for row in rows {
            let (position, item) = row?;
            if releases.len() == limit {
                return Ok(Page {
                    releases,
                    next: last,
                });
            }
            releases.push(decode(item)?);
            last = Some(position);
        }
        Ok(Page {
            releases,
            next: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [EventType::Added, EventType::Modified, EventType::Deleted]
            .into_iter()
            .find(|e| e.as_str() == text)
    }
}

/// The releases of a mesh as of one moment, and where their changes go on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub releases: Vec<Release>,
    /// Every change up to this revision is reflected in `releases`.
    pub revision: u64,
    /// Changes after `revision` that `releases` reflect already: a store
    /// whose writers commit out of revision order can have some; a watch
    /// that starts at `revision` skips them.
    pub reflected: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventType,
    pub release: Release,
}

/// What an event of the change log says to the loops that only need to
/// know which releases were written: whose it was, read without decoding
/// the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    pub release: ReleaseRef,
    /// Not a removal, and the release as written is `Running` and runs a
    /// strategy (the steps loop reads these).
    pub runs_strategy: bool,
}

impl Written {
    pub fn of(event: &Event) -> Self {
        Written {
            revision: event.revision,
            release: ReleaseRef::of(&event.release),
            runs_strategy: event.kind != EventType::Deleted
                && event.release.status.phase == Phase::Running
                && event.release.strategy.is_some(),
        }
    }
}

/// The revisions a store has given: none at or below `floor` (a new store
/// starts its revisions at a random point, so that a resourceVersion of
/// another store, or of this one before its data was replaced, is seldom
/// one of its own), none above `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Given {
    pub floor: u64,
    pub latest: u64,
}

/// Whether a watch can resume after `requested` when the oldest event kept
/// is `oldest`: every event after `requested` must still be there, and
/// `requested` must be a revision this store gave (0: from its beginning).
pub fn check_resume_point(
    requested: u64,
    oldest: Option<u64>,
    given: Given,
) -> Result<(), StoreError> {
    let from_the_start = requested == 0;
    if !from_the_start && (requested < given.floor || requested > given.latest) {
        return Err(StoreError::NotGiven {
            requested,
            first: given.floor + 1,
            latest: given.latest,
        });
    }
    let requested = requested.max(given.floor);
    match oldest {
        Some(oldest) if requested + 1 < oldest => Err(StoreError::TooOld { requested, oldest }),
        Some(_) | None => Ok(()),
    }
}

/// Where a new store starts its revisions: a random point between 10^11
/// and 10^12, far apart for any two stores (below 2^53, so that
/// JavaScript reads them exactly).
pub fn new_revision_floor() -> u64 {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    100_000_000_000 + random % 900_000_000_000
}

#[async_trait]
pub trait ReleaseStore: Send + Sync + 'static {
    /// Stores a new release, giving it the next resourceVersion. Durable (for a
    /// durable backend) when this returns. With `idempotency`, a retry of the
    /// same request within the window answers the original release.
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// The release of that name, if any.
    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError>;

    /// Whether `create` would refuse `release` (name taken, service busy).
    async fn check_create(&self, release: &Release) -> Result<(), StoreError>;

    /// Replaces a stored release if its resourceVersion is still `expected`;
    /// answers it with its new resourceVersion.
    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError>;

    /// Removes a release that is no longer active, if its resourceVersion is
    /// still `expected`; answers it as it was.
    async fn remove(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<Release, StoreError>;

    /// A page of releases in creation order (keyset, not offset).
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// The names of the active releases of a mesh (those the driver works
    /// on), in creation order: at most one per service, however many have
    /// ended. Names only: the driver reads each release when its turn
    /// comes, and a thousand decoded at once were the largest part of its
    /// heap (BENCHMARKS.md).
    async fn active_names(&self, mesh_id: &str) -> Result<Vec<ReleaseRef>, StoreError>;

    /// The releases of a mesh that are `Running` and run a strategy (whose
    /// steps and checks the driver carries out), in creation order.
    async fn running_strategies(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError>;

    /// The releases of a mesh (or one namespace) and the revision they are at,
    /// read consistently.
    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<Snapshot, StoreError>;

    /// Up to `limit` events of a mesh (or one namespace) after `revision`, in
    /// revision order, only as far as no write still in flight can take a
    /// lower revision than one returned; `TooOld` when events after it are
    /// no longer kept.
    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// What `events_after` returns, told as [`Written`]: a store that keeps
    /// its events encoded answers without decoding each release.
    async fn written_after(
        &self,
        mesh_id: &str,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Written>, StoreError> {
        let events = self.events_after(mesh_id, None, revision, limit).await?;
        Ok(events.iter().map(Written::of).collect())
    }

    /// The latest revision whose event `events_after` returns, raised soon
    /// after every commit (at once for this process's own writes, within a
    /// poll interval for other replicas').
    fn revisions(&self) -> watch::Receiver<u64>;

    /// Records results of a round of checks of the release `uid`, each by
    /// its round and name (a round recorded again replaces its results);
    /// the newest [`CHECK_RETENTION`] results of a release are kept. They go
    /// when the release's record is removed.
    async fn record_checks(
        &self,
        uid: uuid::Uuid,
        results: &[CheckResult],
    ) -> Result<(), StoreError>;

    /// The kept check results of the release `uid`, oldest first (by round,
    /// then as recorded).
    async fn checks(&self, uid: uuid::Uuid) -> Result<Vec<CheckResult>, StoreError>;

    /// A secret kept with the data, for signing continue tokens.
    fn cursor_secret(&self) -> [u8; 32];

    /// Whether the store is open and accepts writes (for `/readyz`).
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Finishes pending writes and releases the store's resources.
    async fn close(&self) {}

    /// Who drives the clusters among the replicas sharing this store. A
    /// store only one process can open has nothing to elect.
    fn leadership(&self) -> std::sync::Arc<dyn Leadership> {
        std::sync::Arc::new(Alone)
    }
}

/// Which replica drives the clusters, among those that share a store: one
/// at a time, so that two never carry out the same release's steps at once.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// Whether this replica drives now: it keeps what it holds while it can
    /// prove it still holds it, or tries to take it. Never waits long.
    async fn hold(&self) -> bool;
}

/// The one process of a store nobody shares: always the driver.
pub struct Alone;

#[async_trait]
impl Leadership for Alone {
    async fn hold(&self) -> bool {
        true
    }
}

/// The clusters, as the driver reaches them: read what the planner needs,
/// carry out one planned change.
#[async_trait]
pub trait ClusterPort: Send + Sync + 'static {
    /// Whether the service has a connection configured for `cluster`.
    fn connected(&self, cluster: &str) -> bool;

    /// Reads the release's original Deployment and Service, the Istio
    /// objects for its service in its namespace of the Istio config
    /// cluster, and its gray
    /// Deployments. Clusters that do not answer are listed in
    /// `Observation::unreachable`. Objects may come from what the port
    /// keeps (watch caches), but an object named is taken as absent only
    /// from a list of the cluster sent after the release was created (and
    /// what changed since), so that one made just before the release is
    /// never missed. With `fresh`, the routing objects are read the same
    /// way (the planner decides on their absence: see
    /// `Plan::rests_on_absence`); without, they may be as the port last
    /// knew them.
    async fn observe(&self, release: &Release, placement: &Placement, fresh: bool) -> Observation;

    /// Carries out one change of a plan.
    async fn carry_out(&self, change: &PlannedObject) -> Result<(), ClusterError>;

    /// Sends one change of a plan as the cluster's own server-side dry run
    /// (`dryRun=All`): checked by the cluster (admission, quota, field
    /// managers) and never stored.
    async fn try_out(&self, change: &PlannedObject) -> Result<(), ClusterError>;

    /// News each time an object the releases read changes in a cluster (a
    /// gray Deployment that becomes ready, a VirtualService its owner
    /// edits), so that the driver acts at once instead of at its next
    /// resync.
    fn changes(&self) -> futures_util::stream::BoxStream<'static, ClusterChange>;

    /// How many news the port has told so far, if it numbers them
    /// ([`ClusterChange::sequence`]): an observation that begins after
    /// this is asked holds every change told up to it, so news numbered
    /// at or below it needs no other round. `None`: it does not number
    /// them, and every news may need a round.
    fn told(&self) -> Option<u64> {
        None
    }

    /// The clusters and namespaces (`(cluster, namespace)`) whose objects
    /// active releases read: whatever the port keeps watching elsewhere it
    /// may stop.
    fn keep_watching(&self, namespaces: &std::collections::HashSet<(String, String)>) {
        let _ = namespaces;
    }
}

/// Something changed in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterChange {
    pub cluster: String,
    /// The namespace of the object that changed; `None` when anything may
    /// have changed (news was lost).
    pub namespace: Option<String>,
    /// What the object concerns: its name, and for a routing object the
    /// services of its hosts.
    pub names: Vec<String>,
    /// The release whose object changed (its uid, from the object's
    /// annotation).
    pub release_uid: Option<String>,
    /// Its place in the order the port told news (from 1; 0 when the port
    /// does not number them): see [`ClusterPort::told`].
    pub sequence: u64,
}

impl ClusterChange {
    /// News that says only that anything in `cluster` may have changed.
    pub fn anything(cluster: &str) -> Self {
        ClusterChange {
            cluster: cluster.to_owned(),
            namespace: None,
            names: Vec::new(),
            release_uid: None,
            sequence: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Given = Given {
        floor: 0,
        latest: u64::MAX,
    };

    #[test]
    fn a_watch_resumes_only_while_every_later_event_is_kept() {
        assert!(
            check_resume_point(5, None, ALL).is_ok(),
            "nothing pruned yet"
        );
        // The events after 5 start at 6: all there.
        assert!(check_resume_point(5, Some(6), ALL).is_ok());
        assert!(check_resume_point(5, Some(3), ALL).is_ok());
        assert!(matches!(
            check_resume_point(5, Some(7), ALL),
            Err(StoreError::TooOld {
                requested: 5,
                oldest: 7
            })
        ));
    }

    #[test]
    fn a_watch_resumes_only_from_a_revision_this_store_gave() {
        let given = Given {
            floor: 1000,
            latest: 1010,
        };
        for ok in [1000, 1005, 1010] {
            assert!(check_resume_point(ok, None, given).is_ok(), "{ok}");
        }
        for never in [1, 999, 1011, 5_000] {
            assert!(
                matches!(
                    check_resume_point(never, None, given),
                    Err(StoreError::NotGiven {
                        first: 1001,
                        latest: 1010,
                        ..
                    })
                ),
                "{never}"
            );
        }
        // 0: from the store's beginning, while it keeps every event.
        assert!(check_resume_point(0, Some(1001), given).is_ok());
        assert!(matches!(
            check_resume_point(0, Some(1003), given),
            Err(StoreError::TooOld {
                requested: 1000,
                oldest: 1003
            })
        ));
    }

    #[test]
    fn new_stores_start_far_apart_and_within_what_javascript_reads_exactly() {
        let floors: Vec<u64> = (0..100).map(|_| new_revision_floor()).collect();
        assert!(
            floors
                .iter()
                .all(|f| (100_000_000_000..1_000_000_000_000).contains(f))
        );
        assert!(floors.iter().all(|f| *f < 1 << 53));
        let distinct: std::collections::BTreeSet<_> = floors.iter().collect();
        assert_eq!(distinct.len(), floors.len());
    }

    #[tokio::test]
    async fn a_store_nobody_shares_always_drives() {
        assert!(Alone.hold().await);
    }
}
