//! `[[meshes]]` and `[[clusters]]`: the meshes this service runs releases
//! for, and how to reach each Kubernetes cluster.

use std::collections::BTreeSet;

use figment::value::magic::RelativePathBuf;

use super::{ClusterConfig, ConfigError, MeshConfig, fail};
use crate::domain::Mesh;
use crate::domain::istio::IstioApi;
use crate::domain::mesh::{BearerToken, DEFAULT_ENTERPRISE_PROJECT, OriginalOnEnd};
use crate::driver::ClusterSettings;
use crate::secrets::read_secret_file;

pub(super) fn validate_meshes(meshes: Vec<MeshConfig>) -> Result<Vec<Mesh>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, mesh) in meshes.into_iter().enumerate() {
        if mesh.id.is_empty()
            || mesh.id.contains(['/', '?', '#', '%'])
            || mesh.id.chars().any(char::is_whitespace)
        {
            return fail(format!(
                "meshes[{i}].id: {:?} must be non-empty, without '/', '?', '#', '%' or spaces",
                mesh.id
            ));
        }
        if !seen.insert(mesh.id.clone()) {
            return fail(format!("meshes[{i}].id: {:?} is declared twice", mesh.id));
        }
        if mesh.clusters.is_empty() {
            return fail(format!(
                "meshes[{i}].clusters: mesh {:?} needs at least one cluster",
                mesh.id
            ));
        }
        let mut clusters = BTreeSet::new();
        for (j, cluster) in mesh.clusters.iter().enumerate() {
            if cluster.is_empty() || !clusters.insert(cluster) {
                return fail(format!(
                    "meshes[{i}].clusters[{j}]: {cluster:?} is empty or declared twice"
                ));
            }
        }
        let enterprise_project_id = mesh
            .enterprise_project_id
            .unwrap_or_else(|| DEFAULT_ENTERPRISE_PROJECT.to_owned());
        if enterprise_project_id.is_empty() {
            return fail(format!(
                "meshes[{i}].enterprise_project_id: must not be empty (leave it out for the default project \"0\")"
            ));
        }
        if let Some(key) = mesh.tags.keys().find(|k| k.is_empty()) {
            return fail(format!("meshes[{i}].tags: a tag key is empty ({key:?})"));
        }
        if let Some(cluster) = &mesh.istio_config_cluster
            && !mesh.clusters.contains(cluster)
        {
            return fail(format!(
                "meshes[{i}].istio_config_cluster: {cluster:?} is not one of the mesh's clusters"
            ));
        }
        let istio_api = match mesh.istio_api_version.as_deref() {
            None => IstioApi::default(),
            Some(text) => match IstioApi::parse(text) {
                Some(api) => api,
                None => {
                    return fail(format!(
                        "meshes[{i}].istio_api_version: must be \"v1beta1\" or \"v1\", got {text:?}"
                    ));
                }
            },
        };
        let original_on_end = match mesh.original_on_end.as_deref() {
            None | Some("delete") => OriginalOnEnd::Delete,
            Some("scale-to-zero") => OriginalOnEnd::ScaleToZero,
            Some(other) => {
                return fail(format!(
                    "meshes[{i}].original_on_end: must be \"delete\" or \"scale-to-zero\", got {other:?}"
                ));
            }
        };
        let prometheus_url = match mesh.prometheus_url {
            None => None,
            Some(url) => Some(
                http_url(&url)
                    .map_err(|why| ConfigError(format!("meshes[{i}].prometheus_url: {why}")))?,
            ),
        };
        let prometheus_token = match &mesh.prometheus_token_file {
            None => None,
            Some(file) => {
                if prometheus_url.is_none() {
                    return fail(format!(
                        "meshes[{i}].prometheus_token_file: is for prometheus_url, which is not set"
                    ));
                }
                let text = read_secret_file(&file.relative())
                    .map_err(|e| ConfigError(format!("meshes[{i}].prometheus_token_file: {e}")))?;
                let token = text.trim();
                if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
                    return fail(format!(
                        "meshes[{i}].prometheus_token_file: must hold one token (no spaces or control characters), on one line"
                    ));
                }
                Some(BearerToken::new(token))
            }
        };
        let mut webhook_url_prefixes = Vec::new();
        for (j, prefix) in mesh.webhook_url_prefixes.into_iter().enumerate() {
            let prefix = http_url(&prefix).map_err(|why| {
                ConfigError(format!("meshes[{i}].webhook_url_prefixes[{j}]: {why}"))
            })?;
            if !prefix.ends_with('/') {
                return fail(format!(
                    "meshes[{i}].webhook_url_prefixes[{j}]: {prefix:?} must end with '/', so that it names a host (and path) exactly, not every host that starts the same"
                ));
            }
            webhook_url_prefixes.push(prefix);
        }
        out.push(Mesh {
            id: mesh.id,
            clusters: mesh.clusters,
            enterprise_project_id,
            tags: mesh.tags,
            istio_config_cluster: mesh.istio_config_cluster,
            istio_api,
            original_on_end,
            prometheus_url,
            prometheus_token,
            webhook_url_prefixes,
        });
    }
    Ok(out)
}

pub(super) fn validate_clusters(
    clusters: Vec<ClusterConfig>,
) -> Result<Vec<ClusterSettings>, ConfigError> {
    let mut out: Vec<ClusterSettings> = Vec::new();
    for (i, c) in clusters.into_iter().enumerate() {
        if c.id.is_empty() {
            return fail(format!("clusters[{i}].id: must not be empty"));
        }
        if out.iter().any(|o| o.id == c.id) {
            return fail(format!("clusters[{i}].id: {:?} is declared twice", c.id));
        }
        let kubeconfig = c.kubeconfig.as_ref().map(RelativePathBuf::relative);
        if let Some(path) = &kubeconfig
            && !path.is_file()
        {
            return fail(format!(
                "clusters[{i}].kubeconfig: {} is not a readable file",
                path.display()
            ));
        }
        let qps = c.qps.unwrap_or(crate::driver::DEFAULT_QPS);
        if !(qps.is_finite() && qps > 0.0) {
            return fail(format!(
                "clusters[{i}].qps: must be a number of requests a second above 0, not {qps}"
            ));
        }
        let burst = c.burst.unwrap_or(crate::driver::DEFAULT_BURST);
        if burst == 0 {
            return fail(format!("clusters[{i}].burst: must be at least 1"));
        }
        out.push(ClusterSettings {
            id: c.id,
            kubeconfig,
            context: c.context,
            limit: crate::driver::Limit { qps, burst },
        });
    }
    Ok(out)
}

/// An http(s) URL with a host, as written.
fn http_url(text: &str) -> Result<String, String> {
    let uri = text
        .parse::<http::Uri>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.host().is_empty());
    if !ok {
        return Err(format!("{text:?} is not an http or https URL"));
    }
    Ok(text.to_owned())
}
