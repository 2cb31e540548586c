//! The watch: the current releases (or every change after a resume
//! point), then every change in commit order, each watcher reading the
//! change log on its own with a bounded queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::errors::store_error;
use super::{ReleaseManager, WatchReleases};
use crate::domain::authz::{Action, Principal};
use crate::domain::error::DomainError;
use crate::domain::ports::{Event, EventType};

/// Events a watcher may have queued before its stream waits for it.
const WATCH_BUFFER: usize = 64;
/// Events read from the store at a time for one watcher.
const WATCH_BATCH: usize = 256;

impl ReleaseManager {
    /// The current releases (as ADDED events), then every change, in commit
    /// order; or, with a resourceVersion, every change after it. The stream
    /// ends when the receiver is dropped or the service shuts down.
    pub async fn watch(
        &self,
        principal: &Principal,
        request: WatchReleases,
    ) -> Result<mpsc::Receiver<Result<Event, DomainError>>, DomainError> {
        self.mesh(principal, Action::ListReleases, &request.mesh_id)?;
        let resume = match request.resource_version.as_str() {
            "" => None,
            text => Some(text.parse::<u64>().map_err(|_| {
                DomainError::invalid_field(
                    "resourceVersion",
                    "is not a resourceVersion of this service",
                )
            })?),
        };
        let namespace = request.namespace.filter(|ns| !ns.is_empty());
        let store = self.store.clone();
        let mut revisions = store.revisions();
        let shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let mut initial: Vec<Event> = Vec::new();
        let mut reflected = HashSet::new();
        let mut last = match resume {
            Some(revision) => {
                // Refuse a point too old now, rather than in the stream.
                store
                    .events_after(&request.mesh_id, namespace.as_deref(), revision, 1)
                    .await
                    .map_err(store_error)?;
                revision
            }
            None => {
                let snapshot = store
                    .snapshot(&request.mesh_id, namespace.as_deref())
                    .await
                    .map_err(store_error)?;
                reflected = snapshot.reflected.into_iter().collect();
                initial = snapshot
                    .releases
                    .into_iter()
                    .map(|release| Event {
                        revision: release.resource_version,
                        kind: EventType::Added,
                        release,
                    })
                    .collect();
                snapshot.revision
            }
        };
        let mesh_id = request.mesh_id;
        let watching = WatcherCount::enter(&self.watchers);
        tokio::spawn(async move {
            let _watching = watching;
            // The current releases first, then the changes after them, from
            // this one task so that nothing can overtake them.
            for event in initial {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                revisions.borrow_and_update();
                let events = match store
                    .events_after(&mesh_id, namespace.as_deref(), last, WATCH_BATCH)
                    .await
                {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = sender.send(Err(store_error(e))).await;
                        return;
                    }
                };
                if events.is_empty() {
                    tokio::select! {
                        changed = revisions.changed() => if changed.is_err() { return },
                        () = shutdown.cancelled() => {
                            // Not a normal end: the client reconnects (to
                            // another replica) and resumes.
                            let _ = sender.send(Err(DomainError::ShuttingDown)).await;
                            return;
                        }
                        () = sender.closed() => return,
                    }
                    continue;
                }
                for event in events {
                    last = event.revision;
                    // Already in the snapshot the watch started from.
                    if reflected.remove(&event.revision) {
                        continue;
                    }
                    // Waits for a slow watcher: only its own stream slows.
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }
}

/// One open watch stream, counted while it lives.
struct WatcherCount(Arc<AtomicUsize>);

impl WatcherCount {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
