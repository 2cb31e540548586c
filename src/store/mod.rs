//! Where releases are kept. Every backend enforces the same rules itself,
//! race-free: one name per mesh and namespace, one active release per service.

mod memory;
mod sqlite;
#[cfg(test)]
mod suite;

use async_trait::async_trait;

pub use memory::MemoryStore;
pub use sqlite::{DATABASE_FILE, SqliteStore};

use crate::domain::Release;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a release of that name exists in this mesh and namespace")]
    NameTaken,
    #[error("the service already has an active release: {holder}")]
    ServiceBusy { holder: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[async_trait]
pub trait ReleaseStore: Send + Sync + 'static {
    /// Stores a new release. Returns once it is durable (for a durable backend).
    async fn insert(&self, release: &Release) -> Result<(), StoreError>;

    /// The release of that name, if any.
    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError>;

    /// Whether the store is open and accepts writes (for `/readyz`).
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Finishes pending writes and releases the store's resources.
    async fn close(&self) {}
}
