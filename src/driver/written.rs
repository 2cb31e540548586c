//! What the store's change log says was written between two revisions:
//! the last write of each release, so that the loops that act on writes
//! (the scheduler, the steps) look at those releases only instead of
//! reading every active release after each write. Names only: the
//! releases are not decoded here (a loop reads the few it acts on).

use std::collections::HashMap;

use crate::domain::ports::Written;
use crate::domain::{ReleaseManager, ReleaseRef};

/// Events read at a time.
const BATCH: usize = 1000;

/// The last write of each release written after revision `from`, up to
/// `to`, in the meshes this replica drives (changes elsewhere need no
/// round: the periodic look at every release covers them); `None` when
/// the change log no longer reaches back that far, or cannot be read (the
/// caller then looks at every release).
pub(super) async fn written_since(
    manager: &ReleaseManager,
    from: u64,
    to: u64,
) -> Option<HashMap<ReleaseRef, Written>> {
    let mut written = HashMap::new();
    if to <= from {
        return Some(written);
    }
    for mesh in manager.meshes().iter().filter(|m| manager.drives(m)) {
        let mut after = from;
        loop {
            let events = manager
                .store()
                .written_after(&mesh.id, after, BATCH)
                .await
                .ok()?;
            let Some(last) = events.last() else { break };
            after = last.revision;
            let done = events.len() < BATCH || after >= to;
            // In revision order: a later event of a release replaces its
            // earlier one.
            written.extend(events.into_iter().map(|e| (e.release.clone(), e)));
            if done {
                break;
            }
        }
    }
    Some(written)
}
