//! Meshes and their clusters, as configured.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::istio::IstioApi;

/// What happens to the original Deployment when a release ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OriginalOnEnd {
    /// As the cloud service does.
    #[default]
    Delete,
    ScaleToZero,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mesh {
    pub id: String,
    pub clusters: Vec<String>,
    /// The enterprise project the mesh belongs to (`"0"`, the default
    /// project, unless configured), for `g:EnterpriseProjectId` conditions.
    pub enterprise_project_id: String,
    /// Resource tags, for `g:ResourceTag/<key>` conditions.
    pub tags: BTreeMap<String, String>,
    /// Where VirtualServices and DestinationRules live; by default the
    /// release's own `spec.clusterID`.
    pub istio_config_cluster: Option<String>,
    /// The Istio networking API version to write.
    pub istio_api: IstioApi,
    /// What an end does to the original Deployment.
    pub original_on_end: OriginalOnEnd,
    /// The mesh's Prometheus, for metric checks.
    pub prometheus_url: Option<String>,
    /// The bearer token its queries carry, if it needs one.
    pub prometheus_token: Option<BearerToken>,
    /// The addresses webhooks may call (each an http(s) URL ending in
    /// `/`); none: no webhooks.
    pub webhook_url_prefixes: Vec<String>,
}

/// A bearer token read from a secret file: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The token, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(REDACTED)")
    }
}

/// The enterprise project of a mesh that names none, as in the cloud.
pub const DEFAULT_ENTERPRISE_PROJECT: &str = "0";

impl Mesh {
    pub fn has_cluster(&self, cluster_id: &str) -> bool {
        self.clusters.iter().any(|c| c == cluster_id)
    }
}

/// The meshes this service runs releases for.
#[derive(Debug, Clone, Default)]
pub struct Meshes {
    by_id: BTreeMap<String, Arc<Mesh>>,
}

impl Meshes {
    pub fn new(meshes: impl IntoIterator<Item = Mesh>) -> Self {
        Self {
            by_id: meshes
                .into_iter()
                .map(|m| (m.id.clone(), Arc::new(m)))
                .collect(),
        }
    }

    /// The mesh, for a caller that keeps it past a configuration reload.
    pub fn shared(&self, id: &str) -> Option<Arc<Mesh>> {
        self.by_id.get(id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mesh> {
        self.by_id.values().map(|m| &**m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meshes_are_found_by_id_and_listed_in_id_order() {
        let mesh = |id: &str| Mesh {
            id: id.into(),
            clusters: vec![format!("{id}-cluster")],
            ..Mesh::default()
        };
        let meshes = Meshes::new([mesh("m2"), mesh("m1")]);
        let ids: Vec<&str> = meshes.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        let found = meshes.shared("m2").expect("m2");
        assert!(found.has_cluster("m2-cluster"));
        assert!(!found.has_cluster("m1-cluster"));
        assert!(meshes.shared("m3").is_none());
    }
}
