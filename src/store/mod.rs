//! Where releases are kept: the backends of the domain's
//! [`ReleaseStore`](crate::domain::ports::ReleaseStore) port, each with its
//! own SQL, all held to one behaviour suite (`suite.rs`).

mod memory;
mod postgres;
mod sqlite;
#[cfg(test)]
mod suite;

pub use memory::MemoryStore;
pub use postgres::{
    PostgresStore, check_url as postgres_connection_check, url_config as postgres_config,
};
pub use sqlite::{DATABASE_FILE, SqliteStore};

use std::sync::Arc;

use crate::auth::rate_limit::Peers;
use crate::auth::replay::{InProcess, SignedWrites};
use crate::domain::ports::ReleaseStore as Port;
use crate::metrics::CommitMetrics;

/// A backend as the service runs it: the domain's store port, and what it
/// reports of its commits for `/metrics` (the domain's port knows nothing
/// of metrics).
pub trait Backend: Port {
    /// Commit latency and writes per commit.
    fn commit_metrics(&self) -> CommitMetrics {
        CommitMetrics::default()
    }

    /// Where the signed requests already carried out are remembered: this
    /// process's memory unless replicas share the store.
    fn signed_writes(&self) -> Arc<dyn SignedWrites> {
        Arc::new(InProcess::default())
    }

    /// The replicas sharing this store, when it can be shared.
    fn peers(&self) -> Option<Arc<dyn Peers>> {
        None
    }
}

pub use crate::domain::ports::{
    Created, EVENT_RETENTION, Event, EventType, Given, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey,
    ListQuery, Page, ReleaseStore, Snapshot, StoreError, Written, check_resume_point,
    new_revision_floor,
};
