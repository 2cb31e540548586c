//! Which releases a round looks at, and when: the releases written since
//! the last round (the store's change log, the same the watch reads), the
//! releases whose objects changed in a cluster (the clusters' watch caches
//! name the object: its release-uid annotation, its name, the services of
//! its hosts), those whose wait after a failure is over; the periodic
//! resync, and lost news, look at every one. Hand-rolled rather than
//! kube-runtime's `Controller`: releases live in the store, not in a
//! cluster. The releases selected go into a work queue (`queue.rs`), each
//! with its cause (a write's revision, a news' number), and
//! up to `CONCURRENT_ROUNDS` rounds run at once, one starting as another
//! ends, while the next causes are selected. After each selection the
//! clusters learn which namespaces active releases still read, so that
//! they stop watching the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Driver;
use super::backoff::Backoff;
use super::queue::{Cause, Queue, Seen};
use super::round::RoundResult;
use super::written::written_since;
use crate::domain::object::name_of;
use crate::domain::plan::Placement;
use crate::domain::ports::ClusterChange;
use crate::domain::{Mesh, Release, ReleaseRef};

/// Rounds under way at once: their cluster requests overlap, so many
/// releases are not a queue of one request after another. Most rounds
/// read only the watch caches; those that need a namespace's routing as
/// listed after their release was created share one list, and their
/// status writes share one commit: 64 at once took a burst of 1,000
/// creates to Running in about half the time 16 did (BENCHMARKS.md). The
/// clusters' rate limits, not this, bound what the API servers see.
pub const CONCURRENT_ROUNDS: usize = 64;

/// Which active releases a round looks at.
enum Selection {
    /// Every one, in every mesh: the first round (at start, or on taking
    /// over the drive), so that each release says whether its clusters are
    /// connected.
    AllMeshes,
    /// Every one in the meshes with a connected cluster: the periodic
    /// resync, after a cluster's watch listed afresh, when the change log
    /// cannot say what changed. (The others' releases only wait for a
    /// connection, which takes a restart: the first round covers them.)
    ConnectedMeshes,
    /// Those written since the last round (found in the change log).
    WrittenSince,
    /// Those written, with the revision of each one's last write.
    Named(HashMap<ReleaseRef, u64>),
    /// Those whose objects changed in a cluster.
    Touched(Vec<ClusterChange>),
    /// Those whose wait after a failure is over.
    WaitedEnough,
}

/// What the scheduler keeps between rounds.
#[derive(Default)]
struct Book {
    /// Releases waiting after a failed round.
    backoff: HashMap<ReleaseRef, Backoff>,
    /// What the active releases seen read, to find the releases a
    /// cluster's news concerns. A turn puts its release's here as it
    /// begins, before it observes: news of a change its observation may
    /// have missed finds it.
    reads: Arc<Mutex<HashMap<ReleaseRef, Reads>>>,
    /// The namespaces the clusters were last told to keep watching.
    watching: HashSet<(String, String)>,
}

impl Book {
    fn reads(&self) -> std::sync::MutexGuard<'_, HashMap<ReleaseRef, Reads>> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one active release reads in the clusters.
struct Reads {
    uid: String,
    namespace: String,
    clusters: Vec<String>,
    /// Its Deployments, Service and the host of its routes.
    names: Vec<String>,
}

impl Reads {
    fn of(mesh: &Mesh, release: &Release) -> Self {
        let placement = Placement::for_release(mesh, release);
        let mut clusters = vec![release.cluster_id.clone(), placement.istio_cluster];
        clusters.extend(
            release
                .gray_deployments
                .iter()
                .map(|g| g.cluster_id.clone()),
        );
        clusters.sort_unstable();
        clusters.dedup();
        let mut names = vec![
            release.deployment_name.clone(),
            release.service_name.clone(),
        ];
        names.extend(
            release
                .status
                .gray_deployments
                .iter()
                .map(|g| name_of(g).to_owned()),
        );
        Reads {
            uid: release.uid.to_string(),
            namespace: release.namespace.clone(),
            clusters,
            names,
        }
    }

    fn concerned(&self, change: &ClusterChange) -> bool {
        if change.release_uid.as_deref() == Some(self.uid.as_str()) {
            return true;
        }
        change.namespace.as_deref() == Some(self.namespace.as_str())
            && self.clusters.contains(&change.cluster)
            && change.names.iter().any(|n| self.names.contains(n))
    }
}

/// What came of a release taken from the queue.
enum Ran {
    /// It ended, or went away: nothing more to do for it.
    Gone,
    /// Still waiting after a failed round of the same spec: no round.
    Waiting,
    /// A round, how it ended, and what it saw if it settled.
    Round {
        generation: u32,
        result: RoundResult,
        seen: Option<Seen>,
    },
    /// The store could not be read: the next selection tries again.
    Unread,
}

impl Driver {
    pub(super) async fn run(self) {
        // Rounds are tasks of their own, so that they go on while the next
        // causes are selected.
        let this = Arc::new(self);
        let mut revisions = this.manager.store().revisions();
        let mut changes = this.clusters.changes();
        let mut resync = tokio::time::interval(this.interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut book = Book::default();
        let mut queue: Queue<ReleaseRef> = Queue::default();
        let mut running = JoinSet::new();
        let mut names: HashMap<tokio::task::Id, ReleaseRef> = HashMap::new();
        // The store revision this replica has reconciled up to; `None`: a
        // full round is due (at start, and after another replica drove).
        let mut seen: Option<u64> = None;
        loop {
            // Rounds start as others end, up to the limit.
            while running.len() < CONCURRENT_ROUNDS {
                let Some(name) = queue.start() else {
                    break;
                };
                let wait = book.backoff.get(&name).cloned();
                let driver = this.clone();
                let target = name.clone();
                let reads = book.reads.clone();
                let task = running.spawn(async move { driver.due(&target, wait, &reads).await });
                names.insert(task.id(), name);
            }
            this.metrics
                .queue_depth
                .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
            if queue.len() == 0 {
                // Every active release known was read: what they read is
                // whole.
                this.watch_what_is_read(&mut book);
            }
            let wake = book.backoff.values().map(|b| b.until).min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut selection = tokio::select! {
                () = this.shutdown.cancelled() => {
                    // The rounds under way end; no other starts.
                    while running.join_next().await.is_some() {}
                    return;
                }
                Some(ended) = running.join_next_with_id() => {
                    let (id, ran) = match ended {
                        Ok((id, ran)) => (id, ran),
                        Err(e) => {
                            tracing::error!(error = %e, "a round did not end");
                            (e.id(), Ran::Unread)
                        }
                    };
                    if let Some(name) = names.remove(&id) {
                        this.finished(&mut book, &mut queue, name, ran);
                    }
                    continue;
                }
                changed = revisions.changed() => {
                    if changed.is_err() { return }
                    Selection::WrittenSince
                }
                Some(change) = changes.next() => {
                    // One selection for a burst of news.
                    let mut news = vec![change];
                    while let Some(Some(more)) = changes.next().now_or_never() {
                        news.push(more);
                    }
                    for wait in book.backoff.values_mut() {
                        if wait.unreachable.as_ref().is_some_and(|c| news.iter().any(|n| &n.cluster == c)) {
                            wait.until = Instant::now();
                        }
                    }
                    if news.iter().any(|n| n.namespace.is_none()) {
                        Selection::ConnectedMeshes
                    } else {
                        Selection::Touched(news)
                    }
                }
                () = sleep => Selection::WaitedEnough,
                _ = resync.tick() => Selection::ConnectedMeshes,
            };
            if !this.leadership.hold().await {
                // Another replica drives; waits here are its business.
                book.backoff.clear();
                queue.clear();
                seen = None;
                continue;
            }
            // Only a selection that covers the writes up to a revision
            // moves `seen` there: news from a cluster does not, or a write
            // made meanwhile would be taken as looked at.
            let covers_writes = seen.is_none()
                || matches!(
                    selection,
                    Selection::WrittenSince | Selection::ConnectedMeshes
                );
            if covers_writes {
                let now_at = *revisions.borrow_and_update();
                if let Selection::WrittenSince = selection {
                    selection = match seen {
                        Some(from) => match written_since(&this.manager, from, now_at).await {
                            Some(written) => Selection::Named(
                                written
                                    .into_iter()
                                    .map(|(name, w)| (name, w.revision))
                                    .collect(),
                            ),
                            None => Selection::ConnectedMeshes,
                        },
                        None => Selection::ConnectedMeshes,
                    };
                }
                if seen.is_none() {
                    selection = Selection::AllMeshes;
                }
                seen = Some(now_at);
            }
            this.enqueue(&mut book, &mut queue, &selection).await;
        }
    }

    /// A release taken from the queue, read as it is now: its round,
    /// unless it ended or still waits after a failure of the same spec.
    /// What it reads goes into `reads` first.
    async fn due(
        &self,
        name: &ReleaseRef,
        wait: Option<Backoff>,
        reads: &Mutex<HashMap<ReleaseRef, Reads>>,
    ) -> Ran {
        let Some(mesh) = self
            .manager
            .meshes()
            .iter()
            .find(|m| m.id == name.mesh_id)
            .cloned()
        else {
            return Ran::Gone;
        };
        let release = match self
            .manager
            .store()
            .get(&name.mesh_id, &name.namespace, &name.name)
            .await
        {
            Ok(Some(release)) if release.status.phase.is_active() => release,
            Ok(_) => return Ran::Gone,
            Err(e) => {
                tracing::warn!(mesh = %name.mesh_id, release = %name.name, error = %e, "cannot read a release to reconcile");
                return Ran::Unread;
            }
        };
        reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), Reads::of(&mesh, &release));
        if wait
            .as_ref()
            .is_some_and(|b| b.holds(release.generation, Instant::now()))
        {
            return Ran::Waiting;
        }
        let generation = release.generation;
        let conflicts = wait.map_or(0, |b| b.conflicts);
        let (result, seen) = self.round(&mesh, release, conflicts).await;
        Ran::Round {
            generation,
            result,
            seen,
        }
    }

    /// What the end of `name`'s turn means for its wait and for what the
    /// clusters watch, and whether it runs again at once (it was selected
    /// while it ran).
    fn finished(&self, book: &mut Book, queue: &mut Queue<ReleaseRef>, name: ReleaseRef, ran: Ran) {
        let mut seen = None;
        match ran {
            Ran::Gone => {
                book.backoff.remove(&name);
                book.reads().remove(&name);
            }
            Ran::Waiting => {}
            Ran::Round {
                generation,
                result,
                seen: settled,
            } => {
                seen = settled;
                self.metrics.reconciled(result.label());
                let previous = book.backoff.remove(&name);
                if let Some(wait) =
                    Backoff::after(previous.as_ref(), &result, generation, Instant::now())
                {
                    book.backoff.insert(name.clone(), wait);
                }
            }
            Ran::Unread => {}
        }
        queue.finish(&name, seen);
    }

    /// Tells the clusters which namespaces active releases read, when it
    /// changed, so that they stop watching the others.
    fn watch_what_is_read(&self, book: &mut Book) {
        let watching: HashSet<(String, String)> = book
            .reads()
            .values()
            .flat_map(|r| r.clusters.iter().map(|c| (c.clone(), r.namespace.clone())))
            .collect();
        if watching != book.watching {
            self.clusters.keep_watching(&watching);
            book.watching = watching;
        }
    }

    /// Queues the active releases `selection` names: every one, read in
    /// bulk (and the waits and reads of those no longer active are
    /// forgotten), or those its cause names (each is read when its turn
    /// comes).
    async fn enqueue(&self, book: &mut Book, queue: &mut Queue<ReleaseRef>, selection: &Selection) {
        let names: HashMap<ReleaseRef, Cause> = match selection {
            Selection::AllMeshes | Selection::ConnectedMeshes | Selection::WrittenSince => {
                let all = matches!(selection, Selection::AllMeshes);
                let meshes: Vec<Mesh> = self.manager.meshes().iter().cloned().collect();
                let mut active = HashSet::new();
                for mesh in meshes.iter().filter(|m| all || self.manager.drives(m)) {
                    match self.manager.store().active_names(&mesh.id).await {
                        Ok(names) => active.extend(names),
                        Err(e) => {
                            tracing::warn!(mesh = %mesh.id, error = %e, "cannot read the releases to reconcile");
                            return;
                        }
                    }
                }
                book.backoff.retain(|name, _| active.contains(name));
                book.reads().retain(|name, _| active.contains(name));
                queue.forget_seen_except(|name| active.contains(name));
                active
                    .into_iter()
                    .map(|name| (name, Cause::Other))
                    .collect()
            }
            Selection::Named(names) => names
                .iter()
                .map(|(name, revision)| (name.clone(), Cause::Written(*revision)))
                .collect(),
            Selection::WaitedEnough => {
                let now = Instant::now();
                book.backoff
                    .iter()
                    .filter(|(_, wait)| wait.until <= now)
                    .map(|(name, _)| (name.clone(), Cause::Other))
                    .collect()
            }
            // Each release with the number of the newest news about it.
            Selection::Touched(news) => book
                .reads()
                .iter()
                .filter_map(|(name, reads)| {
                    let newest = news
                        .iter()
                        .filter(|n| reads.concerned(n))
                        .map(|n| n.sequence)
                        .max()?;
                    Some((name.clone(), Cause::News(newest)))
                })
                .collect(),
        };
        // A write or news for a release already looked at is a change to
        // it, before first looks, resyncs and waits that are over.
        let reads = book.reads();
        for (name, cause) in names {
            let changed =
                matches!(cause, Cause::Written(_) | Cause::News(_)) && reads.contains_key(&name);
            queue.add(name, cause, changed);
        }
    }
}
