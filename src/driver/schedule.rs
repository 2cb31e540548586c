//! Which releases a round looks at, and when: the releases written since
//! the last round (the store's change log, the same the watch reads), the
//! releases whose objects changed in a cluster (the clusters' watch caches
//! name the object: its release-uid annotation, its name, the services of
//! its hosts), those whose wait after a failure is over; the periodic
//! resync, and lost news, look at every one. Hand-rolled rather than
//! kube-runtime's `Controller`: releases live in the store, not in a
//! cluster. After each round the clusters learn which namespaces active
//! releases still read, so that they stop watching the others.

use std::collections::{HashMap, HashSet};

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;

use super::Driver;
use super::backoff::Backoff;
use crate::domain::object::name_of;
use crate::domain::plan::Placement;
use crate::domain::ports::ClusterChange;
use crate::domain::{Mesh, Release, ReleaseRef};

/// Events read at a time when finding what changed since the last round.
const CHANGES_BATCH: usize = 1000;
/// Releases reconciled at once: their cluster requests overlap, so a round
/// of many releases is not a queue of one request after another. Most
/// rounds read only the watch caches; those that must list a namespace's
/// routing objects afresh share one list when they ask at once, and their
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
    Named(HashSet<ReleaseRef>),
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
    /// cluster's news concerns.
    reads: HashMap<ReleaseRef, Reads>,
    /// The namespaces the clusters were last told to keep watching.
    watching: HashSet<(String, String)>,
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

impl Driver {
    pub(super) async fn run(self) {
        let mut revisions = self.manager.store().revisions();
        let mut changes = self.clusters.changes();
        let mut resync = tokio::time::interval(self.interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut book = Book::default();
        // The store revision this replica has reconciled up to; `None`: a
        // full round is due (at start, and after another replica drove).
        let mut seen: Option<u64> = None;
        loop {
            let wake = book.backoff.values().map(|b| b.until).min();
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
                    Selection::WrittenSince
                }
                Some(change) = changes.next() => {
                    // One round for a burst of news.
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
            let now_at = *revisions.borrow_and_update();
            if !self.leadership.hold().await {
                // Another replica drives; waits here are its business.
                book.backoff.clear();
                seen = None;
                continue;
            }
            if let Selection::WrittenSince = selection {
                selection = match seen {
                    Some(from) => match self.written_since(from, now_at).await {
                        Some(names) => Selection::Named(names),
                        None => Selection::ConnectedMeshes,
                    },
                    None => Selection::ConnectedMeshes,
                };
            }
            if seen.is_none() {
                selection = Selection::AllMeshes;
            }
            seen = Some(now_at);
            self.rounds(&mut book, &selection).await;
        }
    }

    /// The releases written after revision `from`, up to `to`; `None` when
    /// the change log no longer reaches back that far (a full round then).
    async fn written_since(&self, from: u64, to: u64) -> Option<HashSet<ReleaseRef>> {
        let mut names = HashSet::new();
        if to <= from {
            return Some(names);
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
                names.extend(events.iter().map(|e| ReleaseRef::of(&e.release)));
                if done {
                    break;
                }
            }
        }
        Some(names)
    }

    /// The active releases a round looks at: every one (and when a
    /// cluster's news names a release this replica has not seen), or only
    /// those its cause names, each read by its name. Answers them, and the
    /// names looked up when not all (`None`).
    async fn select<'m>(
        &self,
        meshes: &'m [Mesh],
        selection: &Selection,
        book: &Book,
    ) -> (Vec<(&'m Mesh, Release)>, Option<HashSet<ReleaseRef>>) {
        let names: Option<HashSet<ReleaseRef>> = match selection {
            Selection::AllMeshes | Selection::ConnectedMeshes | Selection::WrittenSince => None,
            Selection::Named(names) => Some(names.clone()),
            Selection::WaitedEnough => Some(book.backoff.keys().cloned().collect()),
            Selection::Touched(news) => Some(
                book.reads
                    .iter()
                    .filter(|(_, reads)| news.iter().any(|n| reads.concerned(n)))
                    .map(|(name, _)| name.clone())
                    .collect(),
            ),
        };
        let store = self.manager.store();
        let mut found = Vec::new();
        match &names {
            None => {
                let all = matches!(selection, Selection::AllMeshes);
                for mesh in meshes.iter().filter(|m| all || self.manager.drives(m)) {
                    match store.active(&mesh.id).await {
                        Ok(releases) => found.extend(releases.into_iter().map(|r| (mesh, r))),
                        Err(e) => {
                            tracing::warn!(mesh = %mesh.id, error = %e, "cannot read the releases to reconcile")
                        }
                    }
                }
            }
            Some(names) => {
                for name in names {
                    let Some(mesh) = meshes.iter().find(|m| m.id == name.mesh_id) else {
                        continue;
                    };
                    match store.get(&name.mesh_id, &name.namespace, &name.name).await {
                        Ok(Some(release)) if release.status.phase.is_active() => {
                            found.push((mesh, release));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(mesh = %name.mesh_id, release = %name.name, error = %e, "cannot read a release to reconcile")
                        }
                    }
                }
            }
        }
        (found, names)
    }

    /// A round of every release `selection` names that is not waiting,
    /// several at once, and what each one's end means for its wait.
    async fn rounds(&self, book: &mut Book, selection: &Selection) {
        let meshes: Vec<Mesh> = self.manager.meshes().iter().cloned().collect();
        let (found, looked_up) = self.select(&meshes, selection, book).await;
        let active: HashSet<ReleaseRef> = found.iter().map(|(_, r)| ReleaseRef::of(r)).collect();
        // Waits of releases that ended or went away are forgotten, and so is
        // what they read.
        match &looked_up {
            None => {
                book.backoff.retain(|name, _| active.contains(name));
                book.reads.clear();
            }
            Some(names) => {
                book.backoff
                    .retain(|name, _| !names.contains(name) || active.contains(name));
                book.reads
                    .retain(|name, _| !names.contains(name) || active.contains(name));
            }
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (mesh, release) in found {
            let name = ReleaseRef::of(&release);
            book.reads.insert(name.clone(), Reads::of(mesh, &release));
            let waiting = book
                .backoff
                .get(&name)
                .is_some_and(|b| b.holds(release.generation, now));
            if !waiting {
                let conflicts = book.backoff.get(&name).map_or(0, |b| b.conflicts);
                due.push((mesh.clone(), release, conflicts));
            }
        }
        self.metrics
            .queue_depth
            .set(i64::try_from(due.len()).unwrap_or(i64::MAX));
        // Several releases at once (each at most once per round; no two
        // active releases share an object, one being per service).
        let rounds = due
            .into_iter()
            .map(|(mesh, release, conflicts)| async move {
                if self.shutdown.is_cancelled() {
                    return None;
                }
                let name = ReleaseRef::of(&release);
                let generation = release.generation;
                let result = self.round(&mesh, release, conflicts).await;
                Some((name, generation, result))
            });
        let mut rounds = futures_util::stream::iter(rounds).buffer_unordered(CONCURRENT_ROUNDS);
        while let Some(finished) = rounds.next().await {
            let Some((name, generation, result)) = finished else {
                continue;
            };
            self.metrics.queue_depth.dec();
            self.metrics.reconciled(result.label());
            let previous = book.backoff.remove(&name);
            if let Some(wait) =
                Backoff::after(previous.as_ref(), &result, generation, Instant::now())
            {
                book.backoff.insert(name, wait);
            }
        }
        // The clusters may stop watching where no active release reads.
        let watching: HashSet<(String, String)> = book
            .reads
            .values()
            .flat_map(|r| r.clusters.iter().map(|c| (c.clone(), r.namespace.clone())))
            .collect();
        if watching != book.watching {
            self.clusters.keep_watching(&watching);
            book.watching = watching;
        }
    }
}
