//! Every key of the configuration as the file writes it, with its default:
//! the shape of the file, and of each layer figment merges (defaults, the
//! file, then environment and flags through [`Cli`](super::Cli)).

use std::collections::BTreeMap;

use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES};

/// Every key of the configuration with its default: the shape of the file,
/// and of each layer figment merges (defaults, the file, then environment and
/// flags through [`Cli`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) listen: String,
    /// Relative paths written in the file are the file's directory's.
    pub(super) data_dir: RelativePathBuf,
    pub(super) store: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) database: Option<String>,
    pub(super) database_pool_size: usize,
    pub(super) database_password_file: Option<RelativePathBuf>,
    pub(super) tls_cert_file: Option<RelativePathBuf>,
    pub(super) tls_key_file: Option<RelativePathBuf>,
    pub(super) tls_client_ca_file: Option<RelativePathBuf>,
    pub(super) log_format: String,
    pub(super) log_level: String,
    pub(super) audit_log: String,
    pub(super) max_body_bytes: usize,
    pub(super) header_read_timeout_secs: u64,
    pub(super) body_read_timeout_secs: u64,
    pub(super) idle_timeout_secs: u64,
    pub(super) max_concurrent_streams: u32,
    pub(super) max_connections: usize,
    pub(super) listen_backlog: u32,
    pub(super) drain_timeout_secs: u64,
    pub(super) shutdown_delay_secs: u64,
    pub(super) meshes: Vec<MeshConfig>,
    pub(super) tokens: Vec<TokenConfig>,
    pub(super) credentials: Vec<CredentialConfig>,
    pub(super) clusters: Vec<ClusterConfig>,
    pub(super) resync_interval_ms: u64,
    pub(super) cors_allowed_origins: Vec<String>,
}

/// `[[clusters]]`: how to reach one Kubernetes cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub id: String,
    #[serde(default)]
    pub kubeconfig: Option<RelativePathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    /// Requests a second to the cluster (client-side; default 50).
    #[serde(default)]
    pub qps: Option<f64>,
    /// Requests at once above `qps` after a quiet time (default 100).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            listen: DEFAULT_LISTEN.to_owned(),
            data_dir: RelativePathBuf::from("./data"),
            store: "sqlite".to_owned(),
            database: None,
            database_pool_size: 16,
            database_password_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            log_format: "text".to_owned(),
            log_level: "info".to_owned(),
            audit_log: "stdout".to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_concurrent_streams: 200,
            max_connections: 4096,
            listen_backlog: default_listen_backlog(),
            drain_timeout_secs: 30,
            shutdown_delay_secs: 0,
            meshes: Vec::new(),
            tokens: Vec::new(),
            credentials: Vec::new(),
            clusters: Vec::new(),
            resync_interval_ms: 5000,
            cors_allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    pub id: String,
    pub clusters: Vec<String>,
    #[serde(default)]
    pub enterprise_project_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The cluster holding VirtualServices and DestinationRules (the Istio
    /// primary); by default each release's `spec.clusterID`.
    #[serde(default)]
    pub istio_config_cluster: Option<String>,
    /// `"v1beta1"` (the default, served by every Istio since 1.5) or `"v1"`.
    #[serde(default)]
    pub istio_api_version: Option<String>,
    /// `"delete"` (the default, as the cloud service does) or
    /// `"scale-to-zero"`: what an end does to the original Deployment.
    #[serde(default)]
    pub original_on_end: Option<String>,
    /// The mesh's Prometheus (`http://prometheus.istio-system:9090`), for
    /// metric checks.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// A file holding the bearer token for `prometheus_url` (mode 0600;
    /// read again on SIGHUP).
    #[serde(default)]
    pub prometheus_token_file: Option<RelativePathBuf>,
    /// The addresses a strategy's webhooks may call, each ending in `/`;
    /// none: no webhooks.
    #[serde(default)]
    pub webhook_url_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub subject: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub allow: Vec<StatementConfig>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// `rate_limit = { requests_per_second = 50, burst = 100 }`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: f64,
    /// Requests allowed at once above the rate; by default one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub subject: String,
    pub access_key: String,
    pub secret_key_file: Option<RelativePathBuf>,
    pub secret_key_env: Option<String>,
    pub allow: Vec<StatementConfig>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementConfig {
    #[serde(default)]
    pub effect: Option<String>,
    pub actions: Vec<String>,
    pub meshes: Vec<String>,
    /// `{ StringEquals = { "g:EnterpriseProjectId" = ["ep"], "g:ResourceTag/env" = "prod" } }`
    #[serde(default)]
    pub conditions: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

/// A condition's value: one string ("equals") or a list ("in a list").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The system's largest listen queue (`net.core.somaxconn`, which caps any
/// larger value), and at least 4096: a burst of new connections waits in
/// the queue instead of having its SYNs dropped (a client then waits 1 s,
/// then 3 s, to retry).
fn default_listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .max(4096)
}
