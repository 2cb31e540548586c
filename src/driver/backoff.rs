//! How long a release waits after a round, from how the round ended: the
//! driver's `error_policy`, as controller-rs calls it. Pure: time is an
//! argument, so that the rule is tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

use super::round::RoundResult;
use crate::domain::change::ClusterError;

/// The first wait after a failed round; it doubles with each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one release.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The wait after a lost race: short, since the next try reads afresh.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(50);

/// A release waiting after a failed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Failed rounds in a row.
    pub failures: u32,
    /// Conflicts in a row (any other outcome resets it).
    pub conflicts: u32,
    pub until: Instant,
    /// The spec generation that failed: a new one is tried at once.
    pub generation: u32,
    /// The cluster that did not answer: news from it ends the wait.
    pub unreachable: Option<String>,
}

impl Backoff {
    /// The wait after a round that ended with `result`, for the release at
    /// `generation`, given the wait before it (`None`: no wait). A round
    /// that was done, found a cluster unconnected (only a restart helps),
    /// or was refused for good (the release failed, saying why) waits for
    /// nothing.
    pub fn after(
        previous: Option<&Backoff>,
        result: &RoundResult,
        generation: u32,
        now: Instant,
    ) -> Option<Backoff> {
        let error = match result {
            RoundResult::Done
            | RoundResult::NotConnected
            | RoundResult::Failed(ClusterError::Refused { .. }) => return None,
            RoundResult::Failed(error) => error,
        };
        let failures = previous.map_or(0, |b| b.failures) + 1;
        let (conflicts, wait, unreachable) = match error {
            ClusterError::Conflict { .. } => (
                previous.map_or(0, |b| b.conflicts) + 1,
                CONFLICT_RETRY,
                None,
            ),
            ClusterError::Unreachable { cluster, .. } => {
                (0, wait_after(failures), Some(cluster.clone()))
            }
            ClusterError::Refused { .. } => return None,
        };
        Some(Backoff {
            failures,
            conflicts,
            until: now + wait,
            generation,
            unreachable,
        })
    }

    /// Whether the release still waits at `now`, at `generation` (a change
    /// of its spec is tried at once).
    pub fn holds(&self, generation: u32, now: Instant) -> bool {
        self.until > now && self.generation == generation
    }
}

/// The wait after `failures` failed rounds in a row: 200 ms, doubling, at
/// most [`MAX_BACKOFF`].
pub(super) fn wait_after(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> RoundResult {
        RoundResult::Failed(ClusterError::Unreachable {
            cluster: "cluster-b".into(),
            message: "connection refused".into(),
        })
    }

    fn conflict() -> RoundResult {
        RoundResult::Failed(ClusterError::Conflict {
            cluster: "cluster-a".into(),
            message: "the object has been modified".into(),
        })
    }

    #[test]
    fn the_wait_doubles_up_to_its_cap() {
        assert_eq!(wait_after(1), Duration::from_millis(200));
        assert_eq!(wait_after(2), Duration::from_millis(400));
        assert_eq!(wait_after(5), Duration::from_millis(3200));
        assert_eq!(wait_after(9), MAX_BACKOFF);
        assert_eq!(wait_after(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_unreachable_cluster_doubles_the_wait_and_is_remembered() {
        let now = Instant::now();
        let first = Backoff::after(None, &unreachable(), 3, now).unwrap();
        assert_eq!(first.until, now + FIRST_BACKOFF);
        assert_eq!(first.unreachable.as_deref(), Some("cluster-b"));
        assert_eq!((first.failures, first.conflicts), (1, 0));
        let second = Backoff::after(Some(&first), &unreachable(), 3, now).unwrap();
        assert_eq!(second.until, now + 2 * FIRST_BACKOFF);
        assert!(second.holds(3, now));
        assert!(!second.holds(4, now), "a new generation is tried at once");
        assert!(
            !second.holds(3, second.until),
            "over once its time has come"
        );
    }

    #[test]
    fn conflicts_retry_soon_and_count_in_a_row_until_another_outcome() {
        let now = Instant::now();
        let one = Backoff::after(None, &conflict(), 1, now).unwrap();
        let two = Backoff::after(Some(&one), &conflict(), 1, now).unwrap();
        assert_eq!(two.until, now + CONFLICT_RETRY);
        assert_eq!(two.conflicts, 2);
        let then = Backoff::after(Some(&two), &unreachable(), 1, now).unwrap();
        assert_eq!(
            then.conflicts, 0,
            "an outcome other than a conflict resets them"
        );
    }

    #[test]
    fn done_refused_and_unconnected_rounds_wait_for_nothing() {
        let now = Instant::now();
        let waiting = Backoff::after(None, &unreachable(), 1, now);
        for result in [
            RoundResult::Done,
            RoundResult::NotConnected,
            RoundResult::Failed(ClusterError::Refused {
                cluster: "cluster-a".into(),
                message: "forbidden".into(),
            }),
        ] {
            assert_eq!(Backoff::after(waiting.as_ref(), &result, 1, now), None);
        }
    }
}
