//! An in-memory store, for tests and benchmarks: the same rules, no durability.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    Created, EVENT_RETENTION, Event, EventType, Given, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey,
    ListQuery, Page, ReleaseStore, Snapshot, StoreError,
};
use crate::domain::ports::CHECK_RETENTION;
use crate::domain::strategy::{CheckResult, merge_checks};
use crate::domain::{Phase, Release, ReleaseRef};
use crate::metrics::CommitMetrics;

type Key = (String, String, String);

pub struct MemoryStore {
    state: Mutex<State>,
    /// No revision at or below it was given: each store starts at its own
    /// random point (see `new_revision_floor`).
    floor: u64,
    event_retention: u64,
    revisions: watch::Sender<u64>,
    secret: [u8; 32],
    commits: CommitMetrics,
}

#[derive(Default)]
struct State {
    revision: u64,
    next_position: i64,
    // Ordered maps and boxed events, not hash tables and inline values:
    // a hash table (or a deque of whole releases) doubles by copying every
    // entry on one write's path, which stalled that write for 30 ms and
    // more at tens of thousands of releases (seen in a perf trace of the
    // pinned benchmark: a rehash, a memmove and the new table's page
    // faults). A B-tree grows a node at a time.
    /// name -> (creation position, release)
    releases: BTreeMap<Key, (i64, Release)>,
    /// creation position -> name, for listing in creation order
    order: BTreeMap<i64, Key>,
    /// (mesh, namespace, service) -> name of the active release holding it
    active: BTreeMap<Key, String>,
    events: VecDeque<Box<Event>>,
    /// (subject, token) -> (request hash, answer, unix seconds)
    idempotency: BTreeMap<(String, String), (String, Release, i64)>,
    /// Release uid -> its kept check results.
    checks: BTreeMap<uuid::Uuid, Vec<CheckResult>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let floor = super::new_revision_floor();
        Self {
            state: Mutex::new(State {
                revision: floor,
                ..State::default()
            }),
            floor,
            event_retention: EVENT_RETENTION,
            revisions: watch::channel(floor).0,
            secret,
            commits: CommitMetrics::default(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that keeps only the last `events` events, so that tests can
    /// reach a watch resume point that is too old.
    pub fn with_event_retention(events: u64) -> Self {
        Self {
            event_retention: events.max(1),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change below is made after all its checks passed, so a panic
        // cannot leave the state half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, revision: u64) {
        // Nothing to flush: a write is committed once it is in the map.
        self.commits.observe(std::time::Duration::ZERO, 1);
        self.revisions.send_replace(revision);
    }
}

fn key(mesh: &str, namespace: &str, name: &str) -> Key {
    (mesh.to_owned(), namespace.to_owned(), name.to_owned())
}

fn service_key(release: &Release) -> Key {
    key(&release.mesh_id, &release.namespace, &release.service_name)
}

impl State {
    fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        if self
            .releases
            .contains_key(&key(&release.mesh_id, &release.namespace, &release.name))
        {
            return Err(StoreError::NameTaken);
        }
        if release.status.phase.is_active()
            && let Some(holder) = self.active.get(&service_key(release))
        {
            return Err(StoreError::ServiceBusy {
                holder: holder.clone(),
            });
        }
        Ok(())
    }

    fn record(&mut self, kind: EventType, release: &Release, retention: u64) {
        self.events.push_back(Box::new(Event {
            revision: self.revision,
            kind,
            release: release.clone(),
        }));
        while self.events.len() as u64 > retention {
            self.events.pop_front();
        }
    }
}

impl MemoryStore {
    /// The active releases of a mesh, in creation order.
    fn active(&self, mesh_id: &str) -> Vec<Release> {
        let state = self.lock();
        let mut active: Vec<&(i64, Release)> = state
            .active
            .iter()
            .filter(|((mesh, ..), _)| mesh == mesh_id)
            .filter_map(|((mesh, namespace, _), name)| {
                state.releases.get(&key(mesh, namespace, name))
            })
            .collect();
        active.sort_unstable_by_key(|(position, _)| *position);
        active.into_iter().map(|(_, r)| r.clone()).collect()
    }
}

#[async_trait]
impl ReleaseStore for MemoryStore {
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let now = chrono::Utc::now().timestamp();
        let mut state = self.lock();
        if let Some(k) = idempotency
            && let Some((hash, answer, at)) =
                state.idempotency.get(&(k.subject.clone(), k.token.clone()))
            && now - at < IDEMPOTENCY_WINDOW_SECS
        {
            return if *hash == k.request_hash {
                Ok(Created::Replayed(answer.clone()))
            } else {
                Err(StoreError::IdempotencyMismatch)
            };
        }
        state.check_create(release)?;
        state.revision += 1;
        state.next_position += 1;
        let mut stored = release.clone();
        stored.resource_version = state.revision;
        let name = key(&stored.mesh_id, &stored.namespace, &stored.name);
        if stored.status.phase.is_active() {
            state
                .active
                .insert(service_key(&stored), stored.name.clone());
        }
        let position = state.next_position;
        state.order.insert(position, name.clone());
        state.releases.insert(name, (position, stored.clone()));
        state.record(EventType::Added, &stored, self.event_retention);
        if let Some(k) = idempotency {
            state.idempotency.insert(
                (k.subject.clone(), k.token.clone()),
                (k.request_hash.clone(), stored.clone(), now),
            );
        }
        let revision = state.revision;
        drop(state);
        self.publish(revision);
        Ok(Created::New(stored))
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        Ok(self
            .lock()
            .releases
            .get(&key(mesh_id, namespace, name))
            .map(|(_, r)| r.clone()))
    }

    async fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        self.lock().check_create(release)
    }

    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError> {
        let mut state = self.lock();
        let name = key(&release.mesh_id, &release.namespace, &release.name);
        let current = state
            .releases
            .get(&name)
            .ok_or(StoreError::NotFound)?
            .1
            .resource_version;
        if current != expected {
            return Err(StoreError::Stale { current });
        }
        state.revision += 1;
        let mut stored = release.clone();
        stored.resource_version = state.revision;
        let service = service_key(&stored);
        if stored.status.phase.is_active() {
            state.active.insert(service, stored.name.clone());
        } else if state.active.get(&service) == Some(&stored.name) {
            state.active.remove(&service);
        }
        if let Some(entry) = state.releases.get_mut(&name) {
            entry.1 = stored.clone();
        }
        state.record(EventType::Modified, &stored, self.event_retention);
        let revision = state.revision;
        drop(state);
        self.publish(revision);
        Ok(stored)
    }

    async fn remove(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<Release, StoreError> {
        let mut state = self.lock();
        let name = key(mesh_id, namespace, name);
        let (position, current) = state
            .releases
            .get(&name)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if current.resource_version != expected || current.status.phase.is_active() {
            return Err(StoreError::Stale {
                current: current.resource_version,
            });
        }
        state.releases.remove(&name);
        state.order.remove(&position);
        state.checks.remove(&current.uid);
        state.revision += 1;
        // Like Kubernetes, the deleted object carries the revision of its deletion.
        let mut current = current;
        current.resource_version = state.revision;
        state.record(EventType::Deleted, &current, self.event_retention);
        let revision = state.revision;
        drop(state);
        self.publish(revision);
        Ok(current)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let state = self.lock();
        let start = query.after.map_or(i64::MIN, |a| a.saturating_add(1));
        let rows = state
            .order
            .range(start..)
            .filter_map(|(position, name)| Some((*position, &state.releases.get(name)?.1)))
            .filter(|(_, release)| {
                release.mesh_id == query.mesh_id
                    && query
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == release.namespace)
                    && query
                        .service_name
                        .as_ref()
                        .is_none_or(|s| *s == release.service_name)
                    && query.phase.is_none_or(|p| p == release.status.phase)
            })
            .map(Ok);
        Page::from_rows(rows, query.limit, |release: &Release| Ok(release.clone()))
    }

    async fn active_names(&self, mesh_id: &str) -> Result<Vec<ReleaseRef>, StoreError> {
        Ok(self.active(mesh_id).iter().map(ReleaseRef::of).collect())
    }

    async fn running_strategies(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError> {
        let mut running = self.active(mesh_id);
        running.retain(|r| r.strategy.is_some() && r.status.phase == Phase::Running);
        Ok(running)
    }

    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        let state = self.lock();
        let releases = state
            .order
            .values()
            .filter_map(|name| state.releases.get(name))
            .map(|(_, r)| r)
            .filter(|r| r.mesh_id == mesh_id && namespace.is_none_or(|ns| ns == r.namespace))
            .cloned()
            .collect();
        Ok(Snapshot {
            releases,
            revision: state.revision,
            reflected: Vec::new(),
        })
    }

    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let state = self.lock();
        super::check_resume_point(
            revision,
            state.events.front().map(|e| e.revision),
            Given {
                floor: self.floor,
                latest: state.revision,
            },
        )?;
        // In revision order: start after `revision` without walking the
        // events before it.
        let start = state.events.partition_point(|e| e.revision <= revision);
        Ok(state
            .events
            .range(start..)
            .filter(|e| {
                e.release.mesh_id == mesh_id && namespace.is_none_or(|ns| ns == e.release.namespace)
            })
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn record_checks(
        &self,
        uid: uuid::Uuid,
        results: &[CheckResult],
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let kept = state.checks.entry(uid).or_default();
        merge_checks(kept, results, CHECK_RETENTION);
        Ok(())
    }

    async fn checks(&self, uid: uuid::Uuid) -> Result<Vec<CheckResult>, StoreError> {
        Ok(self.lock().checks.get(&uid).cloned().unwrap_or_default())
    }

    fn revisions(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    fn cursor_secret(&self) -> [u8; 32] {
        self.secret
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl super::Backend for MemoryStore {
    fn commit_metrics(&self) -> CommitMetrics {
        self.commits.clone()
    }
}
