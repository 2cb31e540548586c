//! The reconcile loop: for every active release whose clusters are
//! connected, observe, plan, carry out the plan in order, and record what
//! happened through the status-only write. A round looks at what its cause
//! concerns: the releases written since the last round (the store's change
//! log, the same the watch reads), the release whose Deployment changed in a
//! cluster (a watch per cluster, by the object's release-uid annotation),
//! those whose wait after a failure is over; the periodic resync, and a
//! watch that had to list afresh, look at every one. It is idempotent: the
//! plan is derived from what the clusters hold, so a restart in any phase
//! carries on where it stopped.
//!
//! A release whose round failed (a cluster that did not answer, a write that
//! lost a race) waits before its next try: after a cluster that did not
//! answer, twice as long each time up to [`MAX_BACKOFF`] (news from that
//! cluster, or a change of the release's spec, ends the wait); after a lost
//! race, [`CONFLICT_RETRY`], reading afresh. A conflict that is still there after
//! [`MAX_CONFLICTS`] tries in a row fails the release, with the cluster's
//! words: someone keeps writing the same objects, and fighting them
//! silently is worse than stopping.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::phase::Move;
use crate::domain::plan::{self, Context, FAILED, REACHABLE, TRAFFIC_APPLIED};
use crate::domain::ports::{ClusterError, ClusterPort, Leadership};
use crate::domain::service::{NOT_CONNECTED, not_connected_message};
use crate::domain::{DomainError, Mesh, Phase, Release, ReleaseManager, ReleaseRef, StatusUpdate};
use crate::metrics::DriverMetrics;

/// The first wait after a failed round; it doubles with each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one release.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Conflicts in a row after which a release fails.
pub const MAX_CONFLICTS: u32 = 8;
/// The wait after a lost race: short, since the next try reads afresh.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// Releases reconciled at once: their cluster requests overlap, so a round
/// of many releases is not a queue of one request after another.
pub const CONCURRENT_ROUNDS: usize = 16;

pub struct Driver {
    pub manager: Arc<ReleaseManager>,
    pub clusters: Arc<dyn ClusterPort>,
    /// Whether this replica is the one that drives (with PostgreSQL and
    /// several replicas, one holds it at a time).
    pub leadership: Arc<dyn Leadership>,
    /// The periodic resync.
    pub interval: Duration,
    pub shutdown: CancellationToken,
    pub metrics: DriverMetrics,
}

/// Events read at a time when finding what changed since the last round.
const CHANGES_BATCH: usize = 1000;

/// Which active releases a round looks at.
enum Selection {
    /// Every one, in every mesh: the first round (at start, or on taking
    /// over the drive), so that each release says whether its clusters are
    /// connected.
    Everything,
    /// Every one in the meshes with a connected cluster: the periodic
    /// resync, after a cluster's watch listed afresh, when the change log
    /// cannot say what changed. (The others' releases only wait for a
    /// connection, which takes a restart: the first round covers them.)
    All,
    /// Those written since the last round (resolved into `Keys`).
    ChangedSince,
    Keys(HashSet<Key>),
    /// Those whose objects changed in a cluster, by release uid.
    Uids(HashSet<String>),
    /// Those whose wait after a failure is over.
    WaitedEnough,
}

/// A release waiting after a failed round.
#[derive(Debug, Clone)]
struct Backoff {
    failures: u32,
    /// Conflicts in a row (any other outcome resets it).
    conflicts: u32,
    until: Instant,
    /// The spec generation that failed: a new one is tried at once.
    generation: u32,
    /// The cluster that did not answer: news from it ends the wait.
    unreachable: Option<String>,
}

type Key = (String, String, String);

fn key_of(release: &Release) -> Key {
    (
        release.mesh_id.clone(),
        release.namespace.clone(),
        release.name.clone(),
    )
}

/// How one release's round ended.
enum Outcome {
    Done,
    NotConnected,
    Failed(ClusterError),
}

impl Driver {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut revisions = self.manager.store().revisions();
        let mut changes = self.clusters.changes();
        let mut resync = tokio::time::interval(self.interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff: HashMap<Key, Backoff> = HashMap::new();
        // The uids of the active releases seen, to find the release a
        // cluster's news names.
        let mut uids: HashMap<String, Key> = HashMap::new();
        // The store revision this replica has reconciled up to; `None`: a
        // full round is due (at start, and after another replica drove).
        let mut seen: Option<u64> = None;
        loop {
            let wake = backoff.values().map(|b| b.until).min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut selection = tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = revisions.changed() => {
                    if changed.is_err() { return }
                    Selection::ChangedSince
                }
                Some(change) = changes.next() => {
                    // One round for a burst of news.
                    let mut news = vec![change];
                    while let Some(Some(more)) = changes.next().now_or_never() {
                        news.push(more);
                    }
                    for wait in backoff.values_mut() {
                        if wait.unreachable.as_ref().is_some_and(|c| news.iter().any(|n| &n.cluster == c)) {
                            wait.until = Instant::now();
                        }
                    }
                    let uids: Option<HashSet<String>> =
                        news.into_iter().map(|n| n.release_uid).collect();
                    match uids {
                        Some(uids) => Selection::Uids(uids),
                        None => Selection::All,
                    }
                }
                () = sleep => Selection::WaitedEnough,
                _ = resync.tick() => Selection::All,
            };
            let now_at = *revisions.borrow_and_update();
            if !self.leadership.hold().await {
                // Another replica drives; waits here are its business.
                backoff.clear();
                seen = None;
                continue;
            }
            if let Selection::ChangedSince = selection {
                selection = match seen {
                    Some(from) => match self.changed_since(from, now_at).await {
                        Some(keys) => Selection::Keys(keys),
                        None => Selection::All,
                    },
                    None => Selection::All,
                };
            }
            if seen.is_none() {
                selection = Selection::Everything;
            }
            seen = Some(now_at);
            self.reconcile_all(&mut backoff, &mut uids, &selection)
                .await;
        }
    }

    /// The releases written after revision `from`, up to `to`; `None` when
    /// the change log no longer reaches back that far (a full round then).
    async fn changed_since(&self, from: u64, to: u64) -> Option<HashSet<Key>> {
        let mut keys = HashSet::new();
        if to <= from {
            return Some(keys);
        }
        // Changes in meshes without a connected cluster need no round (the
        // periodic resync still looks at them).
        for mesh in self
            .manager
            .meshes()
            .iter()
            .filter(|m| self.manager.drives(m))
        {
            let mut after = from;
            loop {
                let events = self
                    .manager
                    .store()
                    .events_after(&mesh.id, None, after, CHANGES_BATCH)
                    .await
                    .ok()?;
                let Some(last) = events.last() else { break };
                after = last.revision;
                let done = events.len() < CHANGES_BATCH || after >= to;
                keys.extend(events.iter().map(|e| key_of(&e.release)));
                if done {
                    break;
                }
            }
        }
        Some(keys)
    }

    /// The active releases a round looks at: every one (`All`, and when a
    /// cluster's news names a release this replica has not seen), or only
    /// those its cause names, each read by its key. Answers them, and the
    /// keys looked up when not all (`None`).
    async fn select<'m>(
        &self,
        meshes: &'m [Mesh],
        selection: &Selection,
        backoff: &HashMap<Key, Backoff>,
        uids: &HashMap<String, Key>,
    ) -> (Vec<(&'m Mesh, Release)>, Option<HashSet<Key>>) {
        let keys: Option<HashSet<Key>> = match selection {
            Selection::Everything | Selection::All | Selection::ChangedSince => None,
            Selection::Keys(keys) => Some(keys.clone()),
            Selection::WaitedEnough => Some(backoff.keys().cloned().collect()),
            Selection::Uids(wanted) => wanted.iter().map(|uid| uids.get(uid).cloned()).collect(),
        };
        let store = self.manager.store();
        let mut found = Vec::new();
        match &keys {
            None => {
                let everything = matches!(selection, Selection::Everything);
                for mesh in meshes
                    .iter()
                    .filter(|m| everything || self.manager.drives(m))
                {
                    match store.active(&mesh.id).await {
                        Ok(releases) => found.extend(releases.into_iter().map(|r| (mesh, r))),
                        Err(e) => {
                            tracing::warn!(mesh = %mesh.id, error = %e, "cannot read the releases to reconcile")
                        }
                    }
                }
            }
            Some(keys) => {
                for (mesh_id, namespace, name) in keys {
                    let Some(mesh) = meshes.iter().find(|m| &m.id == mesh_id) else {
                        continue;
                    };
                    match store.get(mesh_id, namespace, name).await {
                        Ok(Some(release)) if release.status.phase.is_active() => {
                            found.push((mesh, release));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(mesh = %mesh_id, release = %name, error = %e, "cannot read a release to reconcile")
                        }
                    }
                }
            }
        }
        (found, keys)
    }

    async fn reconcile_all(
        &self,
        backoff: &mut HashMap<Key, Backoff>,
        uids: &mut HashMap<String, Key>,
        selection: &Selection,
    ) {
        let meshes: Vec<Mesh> = self.manager.meshes().iter().cloned().collect();
        let (found, looked_up) = self.select(&meshes, selection, backoff, uids).await;
        let active: HashSet<Key> = found.iter().map(|(_, r)| key_of(r)).collect();
        // Waits of releases that ended or went away are forgotten, and so are
        // their uids.
        match &looked_up {
            None => {
                backoff.retain(|key, _| active.contains(key));
                uids.clear();
            }
            Some(keys) => {
                backoff.retain(|key, _| !keys.contains(key) || active.contains(key));
                uids.retain(|_, key| !keys.contains(key) || active.contains(key));
            }
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (mesh, release) in found {
            let key = key_of(&release);
            uids.insert(release.uid.to_string(), key.clone());
            let waiting = backoff
                .get(&key)
                .is_some_and(|b| b.until > now && b.generation == release.generation);
            if !waiting {
                due.push((mesh, release));
            }
        }
        self.metrics
            .queue_depth
            .set(i64::try_from(due.len()).unwrap_or(i64::MAX));
        // Several releases at once (each at most once per round; no two
        // active releases share an object, one being per service).
        let due: Vec<_> = due
            .into_iter()
            .map(|(mesh, release)| {
                let conflicts = backoff.get(&key_of(&release)).map_or(0, |b| b.conflicts);
                (mesh.clone(), release, conflicts)
            })
            .collect();
        let rounds = due.into_iter().map(|(mesh, release, conflicts)| {
            let key = key_of(&release);
            async move {
                if self.shutdown.is_cancelled() {
                    return None;
                }
                let generation = release.generation;
                let outcome = self.reconcile(&mesh, release, conflicts).await;
                Some((key, conflicts, generation, outcome))
            }
        });
        let mut rounds = futures_util::stream::iter(rounds).buffer_unordered(CONCURRENT_ROUNDS);
        while let Some(finished) = rounds.next().await {
            let Some((key, conflicts, generation, outcome)) = finished else {
                continue;
            };
            self.metrics.queue_depth.dec();
            let result = match &outcome {
                Outcome::Done => "done",
                Outcome::NotConnected => "not_connected",
                Outcome::Failed(ClusterError::Unreachable { .. }) => "unreachable",
                Outcome::Failed(ClusterError::Conflict { .. }) => "conflict",
                Outcome::Failed(ClusterError::Refused { .. }) => "refused",
            };
            self.metrics.reconciled(result);
            match outcome {
                Outcome::Done
                | Outcome::NotConnected
                | Outcome::Failed(ClusterError::Refused { .. }) => {
                    backoff.remove(&key);
                }
                Outcome::Failed(error) => {
                    let previous = backoff.remove(&key);
                    let failures = previous.as_ref().map_or(0, |b| b.failures) + 1;
                    let (conflicts, wait) = match error {
                        ClusterError::Conflict { .. } => (conflicts + 1, CONFLICT_RETRY),
                        ClusterError::Unreachable { .. } | ClusterError::Refused { .. } => {
                            (0, backoff_after(failures))
                        }
                    };
                    let unreachable = match error {
                        ClusterError::Unreachable { cluster, .. } => Some(cluster),
                        ClusterError::Conflict { .. } | ClusterError::Refused { .. } => None,
                    };
                    backoff.insert(
                        key,
                        Backoff {
                            failures,
                            conflicts,
                            until: Instant::now() + wait,
                            generation,
                            unreachable,
                        },
                    );
                }
            }
        }
    }

    /// One round of one release; `conflicts`: its conflicts in a row so far.
    async fn reconcile(&self, mesh: &Mesh, release: Release, conflicts: u32) -> Outcome {
        let context = Context::for_release(mesh, &release);
        let target = ReleaseRef {
            mesh_id: release.mesh_id.clone(),
            namespace: release.namespace.clone(),
            name: release.name.clone(),
        };
        if let Some(missing) = self.manager.unconnected_cluster(mesh, &release) {
            // Recorded and validated only, as the contract says, and saying so
            // (the create wrote the same condition: this writes nothing new).
            let update = StatusUpdate {
                conditions: vec![(
                    REACHABLE.into(),
                    false,
                    NOT_CONNECTED.into(),
                    not_connected_message(&missing),
                )],
                ..StatusUpdate::default()
            };
            self.record(&target, &release, update).await;
            return Outcome::NotConnected;
        }
        let mut observed = self.clusters.observe(&release, &context, false).await;
        let mut planned = plan::plan(&release, &observed, &context);
        if planned.rests_on_absence() {
            // What to save, or whether a routing object must be created,
            // is decided on a fresh read: never on a list kept from
            // earlier, which may not hold an object made just before.
            observed = self.clusters.observe(&release, &context, true).await;
            planned = plan::plan(&release, &observed, &context);
        }
        let mut failure = None;
        for change in &planned.changes {
            if let Err(e) = self.clusters.carry_out(change).await {
                failure = Some(match e {
                    ClusterError::Conflict { cluster, message }
                        if conflicts + 1 >= MAX_CONFLICTS =>
                    {
                        ClusterError::Refused {
                            cluster,
                            message: format!(
                                "a write conflict did not clear after {MAX_CONFLICTS} tries: {message}"
                            ),
                        }
                    }
                    other @ (ClusterError::Conflict { .. }
                    | ClusterError::Unreachable { .. }
                    | ClusterError::Refused { .. }) => other,
                });
                break;
            }
            let object = change
                .object
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            tracing::info!(
                release = %release.name,
                mesh = %release.mesh_id,
                cluster = %change.cluster_id,
                kind = change.kind.as_str(),
                action = change.change.as_str(),
                object,
                "changed a cluster object"
            );
            // And the audit trail's record of the same change.
            tracing::info!(
                target: crate::telemetry::AUDIT,
                subject = "meshrelease-driver",
                mesh = %release.mesh_id,
                namespace = %release.namespace,
                release = %release.name,
                cluster = %change.cluster_id,
                kind = change.kind.as_str(),
                action = change.change.as_str(),
                object,
                outcome = "OK",
                "changed a cluster object"
            );
        }
        let mut update = StatusUpdate {
            conditions: planned.conditions,
            saved_routing: planned.saved_routing,
            ..StatusUpdate::default()
        };
        match failure.clone() {
            None => {
                // What the plan said the objects would be once carried out.
                update.step = planned.step;
                update.traffic = planned.traffic;
                update.deployment = planned.deployment;
                update.gray_seen = planned.gray_seen;
                if planned.changes.is_empty() {
                    update.observed_generation = Some(release.generation);
                }
            }
            Some(ClusterError::Refused { cluster, message }) => {
                tracing::warn!(release = %release.name, %cluster, %message, "a cluster refused a change");
                let failing = matches!(
                    release.status.phase,
                    Phase::Pending | Phase::Deploying | Phase::Running
                );
                if failing {
                    update.step = Some(Move::Fail);
                }
                update.conditions.push((
                    FAILED.into(),
                    failing,
                    "ClusterRefused".into(),
                    format!("cluster {cluster} refused a change: {message}"),
                ));
            }
            Some(ClusterError::Unreachable { cluster, message }) => {
                update.conditions.push((
                    REACHABLE.into(),
                    false,
                    "Unreachable".into(),
                    format!("cluster {cluster} did not answer ({message}); retrying"),
                ));
            }
            Some(ClusterError::Conflict { cluster, message }) => {
                update.conditions.push((
                    TRAFFIC_APPLIED.into(),
                    false,
                    "Conflict".into(),
                    format!("another writer changed an object in cluster {cluster} meanwhile ({message}); retrying"),
                ));
            }
        }
        if failure.is_some() {
            // Not carried out: the objects as they were read.
            update.deployment = observed.original.clone().map(Arc::new);
            update.gray_seen = Some(plan::gray_seen(&release, &observed));
        }
        self.record(&target, &release, update).await;
        match (failure, observed.unreachable.first()) {
            (Some(e), _) => Outcome::Failed(e),
            // The plan waited for a cluster that did not answer a read.
            (None, Some(cluster)) => Outcome::Failed(ClusterError::Unreachable {
                cluster: cluster.clone(),
                message: "a read got no answer".into(),
            }),
            (None, None) => Outcome::Done,
        }
    }

    async fn record(&self, target: &ReleaseRef, release: &Release, update: StatusUpdate) {
        let step = update.step;
        match self
            .manager
            .write_status(target, release.resource_version, update)
            .await
        {
            Ok(written) if written.status.phase != release.status.phase => {
                tracing::info!(
                    release = %release.name, mesh = %release.mesh_id,
                    from = release.status.phase.as_str(), to = written.status.phase.as_str(),
                    "release moved"
                );
                if written.status.phase == Phase::Running {
                    let took = chrono::Utc::now() - release.status.start_time;
                    self.metrics
                        .time_to_running
                        .observe(took.to_std().unwrap_or_default().as_secs_f64());
                }
            }
            Ok(_) => {}
            // Someone wrote since we read: the next round sees it.
            Err(DomainError::Aborted(_)) => {}
            // Removed since we read (it had ended): nothing left to record.
            Err(DomainError::NotFound(_)) => {
                tracing::debug!(release = %release.name, "the release went away during its round");
            }
            Err(e) => {
                tracing::warn!(release = %release.name, ?step, error = %e, "cannot record the release's status")
            }
        }
    }
}

/// The wait after `failures` failed rounds in a row: 200 ms, doubling, at
/// most [`MAX_BACKOFF`].
fn backoff_after(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_its_cap() {
        assert_eq!(backoff_after(1), Duration::from_millis(200));
        assert_eq!(backoff_after(2), Duration::from_millis(400));
        assert_eq!(backoff_after(5), Duration::from_millis(3200));
        assert_eq!(backoff_after(9), MAX_BACKOFF);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }
}
