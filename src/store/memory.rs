//! An in-memory store, for tests and benchmarks: the same rules, no durability.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ReleaseStore, StoreError};
use crate::domain::Release;

type Key = (String, String, String);

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    releases: HashMap<Key, Release>,
    /// (mesh, namespace, service) -> name of the active release holding it.
    active: HashMap<Key, String>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-changed:
        // every change below is made after all checks passed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ReleaseStore for MemoryStore {
    async fn insert(&self, release: &Release) -> Result<(), StoreError> {
        let mut state = self.lock();
        let key = (
            release.mesh_id.clone(),
            release.namespace.clone(),
            release.name.clone(),
        );
        if state.releases.contains_key(&key) {
            return Err(StoreError::NameTaken);
        }
        let service = (
            release.mesh_id.clone(),
            release.namespace.clone(),
            release.service_name.clone(),
        );
        if release.status.phase.is_active() {
            if let Some(holder) = state.active.get(&service) {
                return Err(StoreError::ServiceBusy {
                    holder: holder.clone(),
                });
            }
            state.active.insert(service, release.name.clone());
        }
        state.releases.insert(key, release.clone());
        Ok(())
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        let key = (mesh_id.to_owned(), namespace.to_owned(), name.to_owned());
        Ok(self.lock().releases.get(&key).cloned())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
