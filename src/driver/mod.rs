//! The driver: it makes releases happen in the clusters. The kube-rs
//! implementation of the domain's
//! [`ClusterPort`](crate::domain::ports::ClusterPort) (`kube.rs`), and the
//! loop that observes, plans, carries out and records:
//!
//! - `schedule.rs`: which releases a round looks at, and when;
//! - `queue.rs`: the releases due, each once, as rounds start and end;
//! - `written.rs`: which releases the store's change log says were
//!   written, for the loops that act on writes;
//! - `round.rs`: one round of one release (controller-rs's `reconcile`);
//! - `backoff.rs`: how long a release waits after a round (its
//!   `error_policy`), a pure rule;
//! - `caches.rs`: the watch caches the rounds read, with `held.rs` for
//!   how each keeps its objects;
//! - `steps.rs`: the steps and checks of releases that run themselves
//!   (`domain::progress` decides), with `webhooks.rs` calling their
//!   webhooks and `prometheus.rs` asking the meshes' Prometheus.
//!
//! Every decision about a release is the domain's (`domain::plan`, and
//! `plan::after` for what a round's outcome means); this module reads,
//! writes and schedules.

mod backoff;
mod caches;
mod held;
pub mod kube;
mod prometheus;
mod queue;
mod round;
mod schedule;
mod steps;
mod throttle;
mod webhooks;
mod written;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::backoff::{Backoff, CONFLICT_RETRY, FIRST_BACKOFF, MAX_BACKOFF};
pub use self::kube::{ClusterSettings, KubeClusters};
pub use self::prometheus::{Prometheus, QUERY_TIMEOUT};
pub use self::round::RoundResult;
pub use self::schedule::CONCURRENT_ROUNDS;
pub use self::steps::Steps;
pub use self::throttle::{DEFAULT_BURST, DEFAULT_QPS, Limit};
pub use self::webhooks::Webhooks;
use crate::domain::ReleaseManager;
use crate::domain::ports::{ClusterPort, Leadership};
use crate::metrics::DriverMetrics;

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

impl Driver {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }
}
