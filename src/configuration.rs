//! Settings: embedded defaults, then the TOML file (`--config`), then
//! `MESHRELEASE_*` environment variables, then flags. Validated once after
//! loading, with errors that name the key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

use crate::actuate::ClusterSettings;
use crate::auth::TokenEntry;
use crate::auth::credentials::CredentialEntry;
use crate::auth::rate_limit::RateLimit;
use crate::domain::istio::IstioApi;
use crate::domain::mesh::DEFAULT_ENTERPRISE_PROJECT;
use crate::domain::plan::OriginalOnEnd;
use crate::domain::{Action, Condition, ConditionKey, Effect, Mesh, Principal, Statement};

/// Command-line flags; each has a `MESHRELEASE_*` environment variable, and
/// each but `--config` a key of the same name (with `_`) in the file.
#[derive(Debug, Default, Parser, Serialize)]
#[command(
    name = "meshrelease",
    version = crate::VERSION,
    about = "Grayscale releases for service-mesh workloads, over gRPC and REST"
)]
pub struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "MESHRELEASE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration (file, environment and flags together), say
    /// what it resolves to, and exit: 0 when valid, 2 when not.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,
    /// Address to listen on for gRPC, gRPC-Web and REST.
    #[arg(long, env = "MESHRELEASE_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the SQLite database.
    #[arg(long, env = "MESHRELEASE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite` (durable, the default) or `memory` (for tests and benchmarks).
    #[arg(long, env = "MESHRELEASE_STORE")]
    pub store: Option<String>,
    /// A PostgreSQL URL (`postgres://user@host/db`): replicas share this
    /// database instead of each keeping SQLite. Overrides `store`.
    #[arg(long, env = "MESHRELEASE_DATABASE")]
    pub database: Option<String>,
    /// Connections to PostgreSQL held at most.
    #[arg(long, env = "MESHRELEASE_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// A file holding the PostgreSQL password (mode 0600), so that it need
    /// not be in the URL. `MESHRELEASE_DATABASE_PASSWORD` may hold it instead.
    #[arg(long, env = "MESHRELEASE_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// The listener's certificate chain (PEM): with `tls_key_file`, the one
    /// listener serves gRPC, gRPC-Web and REST over TLS only.
    #[arg(long, env = "MESHRELEASE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM, mode 0600).
    #[arg(long, env = "MESHRELEASE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM): clients must present a certificate they issued
    /// (mutual TLS).
    #[arg(long, env = "MESHRELEASE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, env = "MESHRELEASE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// A tracing filter, such as `info` or `meshrelease=debug,info`.
    #[arg(long, env = "MESHRELEASE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Where audit records go, as JSON lines: `stdout`, `off`, or a file
    /// (appended to, created 0600).
    #[arg(long, env = "MESHRELEASE_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// The largest request body (REST) or message (gRPC), in bytes.
    #[arg(long, env = "MESHRELEASE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds an HTTP/1 client may take to send its request headers.
    #[arg(long, env = "MESHRELEASE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent before it is closed.
    #[arg(long, env = "MESHRELEASE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a client has to send a whole request body.
    #[arg(long, env = "MESHRELEASE_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// HTTP/2 streams open at once per connection.
    #[arg(long, env = "MESHRELEASE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Connections open at once.
    #[arg(long, env = "MESHRELEASE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// New connections the kernel queues before they are accepted (default:
    /// the system's maximum, net.core.somaxconn, and at least 4096).
    #[arg(long, env = "MESHRELEASE_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Seconds a shutdown waits for requests in flight.
    #[arg(long, env = "MESHRELEASE_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Seconds between a stop signal and the drain, during which `/readyz`
    /// answers 503 and requests are still served (for load balancers).
    #[arg(long, env = "MESHRELEASE_SHUTDOWN_DELAY_SECS")]
    pub shutdown_delay_secs: Option<u64>,
    /// The meshes, as a TOML array of tables (replaces the file's).
    #[arg(long, env = "MESHRELEASE_MESHES")]
    pub meshes: Option<String>,
    /// The tokens, as a TOML array of tables (replaces the file's).
    #[arg(long, env = "MESHRELEASE_TOKENS")]
    pub tokens: Option<String>,
    /// The AK/SK credentials, as a TOML array of tables (replaces the file's).
    #[arg(long, env = "MESHRELEASE_CREDENTIALS")]
    pub credentials: Option<String>,
    /// The clusters to connect, as a TOML array of tables (replaces the file's).
    #[arg(long, env = "MESHRELEASE_CLUSTERS")]
    pub clusters: Option<String>,
    /// Milliseconds between two resyncs of every active release.
    #[arg(long, env = "MESHRELEASE_RESYNC_INTERVAL_MS")]
    pub resync_interval_ms: Option<u64>,
    /// Browser origins allowed to call the service (CORS), comma-separated:
    /// `https://console.example.com`, or `*` for any. None: CORS is off.
    #[arg(long, env = "MESHRELEASE_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Option<Vec<String>>,
}

/// Every key of the configuration with its default: the shape of the file,
/// and of each layer figment merges (defaults, the file, then environment and
/// flags through [`Cli`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layered {
    listen: String,
    /// Relative paths written in the file are the file's directory's.
    data_dir: RelativePathBuf,
    store: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    database_pool_size: usize,
    database_password_file: Option<RelativePathBuf>,
    tls_cert_file: Option<RelativePathBuf>,
    tls_key_file: Option<RelativePathBuf>,
    tls_client_ca_file: Option<RelativePathBuf>,
    log_format: String,
    log_level: String,
    audit_log: String,
    max_body_bytes: usize,
    header_read_timeout_secs: u64,
    body_read_timeout_secs: u64,
    idle_timeout_secs: u64,
    max_concurrent_streams: u32,
    max_connections: usize,
    listen_backlog: u32,
    drain_timeout_secs: u64,
    shutdown_delay_secs: u64,
    meshes: Vec<MeshConfig>,
    tokens: Vec<TokenConfig>,
    credentials: Vec<CredentialConfig>,
    clusters: Vec<ClusterConfig>,
    resync_interval_ms: u64,
    cors_allowed_origins: Vec<String>,
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
}

impl Default for Layered {
    fn default() -> Self {
        Layered {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Where releases are kept, for logs: never the database's password.
    /// The keys a reload cannot apply (the listener, the store, logging,
    /// limits and timers are set up once), each with its value: a reload
    /// that changes one of them says it needs a restart.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        vec![
            ("listen", self.listen.to_string()),
            // The certificate files are read again on a reload (other
            // names too); turning TLS on or off is the listener's make-up.
            ("tls_cert_file", self.tls.is_some().to_string()),
            ("store", self.store_description()),
            ("database", format!("{:?}", self.database)),
            // Compared, never shown: a reload names only the keys.
            (
                "database_password",
                self.database_password
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default(),
            ),
            ("database_pool_size", self.database_pool_size.to_string()),
            ("log_format", format!("{:?}", self.log_format)),
            ("log_level", self.log_level.clone()),
            ("audit_log", format!("{:?}", self.audit_log)),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            (
                "header_read_timeout_secs",
                format!("{:?}", self.header_read_timeout),
            ),
            (
                "body_read_timeout_secs",
                format!("{:?}", self.body_read_timeout),
            ),
            ("idle_timeout_secs", format!("{:?}", self.idle_timeout)),
            (
                "max_concurrent_streams",
                self.max_concurrent_streams.to_string(),
            ),
            ("max_connections", self.max_connections.to_string()),
            ("listen_backlog", self.listen_backlog.to_string()),
            ("drain_timeout_secs", format!("{:?}", self.drain_timeout)),
            ("shutdown_delay_secs", format!("{:?}", self.shutdown_delay)),
            ("resync_interval_ms", format!("{:?}", self.resync_interval)),
            ("cors_allowed_origins", format!("{:?}", self.cors)),
        ]
    }

    pub fn store_description(&self) -> String {
        match self.store {
            StoreKind::Sqlite => format!("sqlite in {}", self.data_dir.display()),
            StoreKind::Memory => "memory (nothing kept across restarts)".into(),
            StoreKind::Postgres => {
                let config = self
                    .database
                    .as_deref()
                    .and_then(crate::store::postgres_config);
                let Some(config) = config else {
                    return "postgres".into();
                };
                let host = match config.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                    Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                    None => "localhost".into(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                format!(
                    "postgres at {host}:{port}/{}",
                    config.get_dbname().unwrap_or("")
                )
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Memory,
    /// PostgreSQL at `Settings::database`.
    Postgres,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub database: Option<String>,
    pub database_pool_size: usize,
    /// The PostgreSQL password, from `database_password_file` or
    /// `MESHRELEASE_DATABASE_PASSWORD`, when not in the URL.
    pub database_password: Option<Password>,
    /// TLS on the listener; `None`: plaintext (h2c and HTTP/1.1).
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub audit_log: crate::telemetry::AuditSink,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_connections: usize,
    pub listen_backlog: u32,
    pub drain_timeout: Duration,
    /// Not ready but still serving, between the stop signal and the drain.
    pub shutdown_delay: Duration,
    pub meshes: Vec<Mesh>,
    pub tokens: Vec<TokenEntry>,
    pub credentials: Vec<CredentialEntry>,
    pub clusters: Vec<ClusterSettings>,
    pub resync_interval: Duration,
    /// Which browser origins may call the service.
    pub cors: CorsOrigins,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

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
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

impl Settings {
    /// Defaults, then the file named by `cli.config`, then environment and
    /// flags (clap reads each flag's `MESHRELEASE_*` variable; a flag wins).
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Layered::default()));
        if let Some(path) = &cli.config {
            if !path.is_file() {
                return fail(format!("reading {}: no such file", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let layered: Layered = figment
            .merge(Serialized::defaults(cli.overrides()?))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        Self::validate(layered)
    }

    fn validate(l: Layered) -> Result<Self, ConfigError> {
        let Ok(listen) = l.listen.parse::<SocketAddr>() else {
            return fail(format!(
                "listen: {:?} is not an address such as 127.0.0.1:8080",
                l.listen
            ));
        };
        let database = l.database.filter(|d| !d.is_empty());
        let store = match l.store.as_str() {
            _ if database.is_some() => StoreKind::Postgres,
            "sqlite" => StoreKind::Sqlite,
            "memory" => StoreKind::Memory,
            "postgres" => {
                return fail("store: \"postgres\" needs `database`, a postgres:// URL");
            }
            other => {
                return fail(format!(
                    "store: must be \"sqlite\" or \"memory\" (or set `database` for PostgreSQL), got {other:?}"
                ));
            }
        };
        if let Some(url) = &database
            && let Err(e) = crate::store::postgres_connection_check(url)
        {
            return fail(format!("database: {e}"));
        }
        if l.database_pool_size < 2 {
            return fail("database_pool_size: must be at least 2");
        }
        let log_format = match l.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return fail(format!(
                    "log_format: must be \"text\" or \"json\", got {other:?}"
                ));
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&l.log_level) {
            return fail(format!("log_level: {e}"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&l.max_body_bytes) {
            return fail("max_body_bytes: must be between 1024 and 67108864");
        }
        for (key, value, least) in [
            ("body_read_timeout_secs", l.body_read_timeout_secs, 1),
            ("idle_timeout_secs", l.idle_timeout_secs, 2),
            ("header_read_timeout_secs", l.header_read_timeout_secs, 1),
            (
                "max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
                1,
            ),
            ("max_connections", l.max_connections as u64, 1),
            ("listen_backlog", u64::from(l.listen_backlog), 1),
            ("resync_interval_ms", l.resync_interval_ms, 10),
        ] {
            if value < least {
                return fail(format!("{key}: must be at least {least}"));
            }
        }
        Ok(Settings {
            listen,
            data_dir: l.data_dir.relative(),
            store,
            database,
            database_pool_size: l.database_pool_size,
            database_password: database_password(l.database_password_file.as_ref())?,
            tls: validate_tls(l.tls_cert_file, l.tls_key_file, l.tls_client_ca_file)?,
            log_format,
            log_level: l.log_level,
            audit_log: crate::telemetry::AuditSink::parse(&l.audit_log),
            max_body_bytes: l.max_body_bytes,
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(l.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            max_concurrent_streams: l.max_concurrent_streams,
            max_connections: l.max_connections,
            listen_backlog: l.listen_backlog,
            drain_timeout: Duration::from_secs(l.drain_timeout_secs),
            shutdown_delay: Duration::from_secs(l.shutdown_delay_secs),
            meshes: validate_meshes(l.meshes)?,
            tokens: validate_tokens(l.tokens)?,
            credentials: validate_credentials(l.credentials)?,
            clusters: validate_clusters(l.clusters)?,
            resync_interval: Duration::from_millis(l.resync_interval_ms),
            cors: validate_cors(l.cors_allowed_origins)?,
        })
    }
}

impl Cli {
    /// The keys set by flags or their environment variables, as a figment
    /// layer: the inline TOML arrays (`--meshes` and the like) parsed.
    fn overrides(&self) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
        let mut layer = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) | Err(_) => return fail("flags: cannot be read"),
        };
        layer.retain(|key, value| !value.is_null() && key != "config");
        for (key, text) in [
            ("meshes", &self.meshes),
            ("tokens", &self.tokens),
            ("credentials", &self.credentials),
            ("clusters", &self.clusters),
        ] {
            if let Some(text) = text {
                let array: Vec<toml::Value> = inline_array(key, text)?;
                let json =
                    serde_json::to_value(array).map_err(|e| ConfigError(format!("{key}: {e}")))?;
                layer.insert(key.to_owned(), json);
            }
        }
        Ok(layer)
    }
}

fn inline_array<T: serde::de::DeserializeOwned>(
    key: &str,
    text: &str,
) -> Result<Vec<T>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper<T> {
        value: Vec<T>,
    }
    toml::from_str::<Wrapper<T>>(&format!("value = {text}"))
        .map(|w| w.value)
        .map_err(|e| ConfigError(format!("{key} (from the environment or a flag): {e}")))
}

fn validate_meshes(meshes: Vec<MeshConfig>) -> Result<Vec<Mesh>, ConfigError> {
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
        out.push(Mesh {
            id: mesh.id,
            clusters: mesh.clusters,
            enterprise_project_id,
            tags: mesh.tags,
            istio_config_cluster: mesh.istio_config_cluster,
            istio_api,
            original_on_end,
        });
    }
    Ok(out)
}

/// `cors_allowed_origins`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: browsers on other origins are refused by the browser.
    Off,
    /// `*`: any origin (never with credentials).
    Any,
    /// These origins, each `scheme://host[:port]`, exactly.
    List(Vec<String>),
}

fn validate_cors(origins: Vec<String>) -> Result<CorsOrigins, ConfigError> {
    if origins.is_empty() {
        return Ok(CorsOrigins::Off);
    }
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return fail("cors_allowed_origins: \"*\" allows every origin; list it alone");
        }
        return Ok(CorsOrigins::Any);
    }
    for (i, origin) in origins.iter().enumerate() {
        let uri = origin.parse::<http::Uri>().ok();
        let well_formed = uri.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.host().is_empty())
                && uri.path_and_query().is_none_or(|pq| pq.as_str() == "/")
                && !origin.ends_with('/')
        });
        if !well_formed || http::HeaderValue::from_str(origin).is_err() {
            return fail(format!(
                "cors_allowed_origins[{i}]: {origin:?} is not an origin: write scheme://host[:port], as browsers send it (no path, no trailing slash), or \"*\""
            ));
        }
    }
    Ok(CorsOrigins::List(origins))
}

fn validate_clusters(clusters: Vec<ClusterConfig>) -> Result<Vec<ClusterSettings>, ConfigError> {
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
        out.push(ClusterSettings {
            id: c.id,
            kubeconfig,
            context: c.context,
        });
    }
    Ok(out)
}

fn validate_statements(
    key: &str,
    statements: Vec<StatementConfig>,
) -> Result<Vec<Statement>, ConfigError> {
    statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let effect = match s.effect.as_deref() {
                None | Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                Some(other) => {
                    return fail(format!(
                        "{key}[{i}].effect: must be \"Allow\" or \"Deny\", got {other:?}"
                    ));
                }
            };
            if s.actions.is_empty() {
                return fail(format!("{key}[{i}].actions: must name at least one action"));
            }
            let actions = if s.actions.iter().any(|a| a == Action::WILDCARD) {
                None
            } else {
                let mut parsed = Vec::new();
                for (j, a) in s.actions.iter().enumerate() {
                    match Action::parse(a) {
                        Some(action) => parsed.push(action),
                        None => {
                            let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                            return fail(format!(
                                "{key}[{i}].actions[{j}]: unknown action {a:?}; known: {}, {}",
                                Action::WILDCARD,
                                known.join(", ")
                            ));
                        }
                    }
                }
                Some(parsed)
            };
            if s.meshes.is_empty() {
                return fail(format!(
                    "{key}[{i}].meshes: must name at least one mesh, or \"*\""
                ));
            }
            let meshes = if s.meshes.iter().any(|m| m == "*") {
                None
            } else {
                Some(s.meshes)
            };
            let mut conditions = Vec::new();
            for (operator, keys) in s.conditions {
                if operator != "StringEquals" {
                    return fail(format!(
                        "{key}[{i}].conditions.{operator}: unknown operator; known: StringEquals"
                    ));
                }
                for (name, values) in keys {
                    let Some(condition_key) = ConditionKey::parse(&name) else {
                        return fail(format!(
                            "{key}[{i}].conditions.StringEquals.{name:?}: unknown key; known: \"g:EnterpriseProjectId\", \"g:ResourceTag/<key>\""
                        ));
                    };
                    let values = match values {
                        OneOrMany::One(v) => vec![v],
                        OneOrMany::Many(vs) => vs,
                    };
                    if values.is_empty() {
                        return fail(format!(
                            "{key}[{i}].conditions.StringEquals.{name:?}: needs at least one value"
                        ));
                    }
                    conditions.push(Condition {
                        key: condition_key,
                        values,
                    });
                }
            }
            Ok(Statement {
                effect,
                actions,
                meshes,
                conditions,
            })
        })
        .collect()
}

fn validate_tokens(tokens: Vec<TokenConfig>) -> Result<Vec<TokenEntry>, ConfigError> {
    let mut out: Vec<TokenEntry> = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        if token.subject.is_empty() {
            return fail(format!("tokens[{i}].subject: must not be empty"));
        }
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&token.sha256, &mut sha256).is_err() {
            return fail(format!(
                "tokens[{i}].sha256: must be 64 hex digits (the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`)"
            ));
        }
        if out.iter().any(|t| t.sha256 == sha256) {
            return fail(format!(
                "tokens[{i}].sha256: the same token is declared twice"
            ));
        }
        let statements = validate_statements(&format!("tokens[{i}].allow"), token.allow)?;
        let rate_limit = validate_rate_limit(&format!("tokens[{i}]"), token.rate_limit)?;
        out.push(TokenEntry {
            rate_limit,
            sha256,
            principal: Principal {
                subject: token.subject,
                statements,
            },
        });
    }
    Ok(out)
}

/// Each access key with its secret key, read from the file or environment
/// variable the configuration names (never from the configuration itself).
fn validate_credentials(
    credentials: Vec<CredentialConfig>,
) -> Result<Vec<CredentialEntry>, ConfigError> {
    let mut out: Vec<CredentialEntry> = Vec::new();
    for (i, c) in credentials.into_iter().enumerate() {
        if c.subject.is_empty() {
            return fail(format!("credentials[{i}].subject: must not be empty"));
        }
        if c.access_key.is_empty() || !c.access_key.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return fail(format!(
                "credentials[{i}].access_key: must be letters and digits, as the cloud's AKs are"
            ));
        }
        if out.iter().any(|e| e.access_key == c.access_key) {
            return fail(format!(
                "credentials[{i}].access_key: {:?} is declared twice",
                c.access_key
            ));
        }
        let secret = match (&c.secret_key_file, &c.secret_key_env) {
            (Some(path), None) => read_secret_file(&path.relative())
                .map_err(|e| ConfigError(format!("credentials[{i}].secret_key_file: {e}")))?,
            (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                ConfigError(format!(
                    "credentials[{i}].secret_key_env: the environment variable {variable:?} is not set (or not UTF-8)"
                ))
            })?,
            _ => {
                return fail(format!(
                    "credentials[{i}]: give exactly one of secret_key_file and secret_key_env (never the key itself)"
                ));
            }
        };
        let secret = secret.trim();
        if secret.len() < 16 {
            return fail(format!(
                "credentials[{i}]: the secret key is shorter than 16 characters"
            ));
        }
        let statements = validate_statements(&format!("credentials[{i}].allow"), c.allow)?;
        let rate_limit = validate_rate_limit(&format!("credentials[{i}]"), c.rate_limit)?;
        out.push(CredentialEntry {
            rate_limit,
            access_key: c.access_key,
            secret_key: secret.as_bytes().to_vec(),
            principal: Principal {
                subject: c.subject,
                statements,
            },
        });
    }
    Ok(out)
}

fn validate_rate_limit(
    key: &str,
    config: Option<RateLimitConfig>,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(config) = config else {
        return Ok(None);
    };
    if !(config.requests_per_second.is_finite() && config.requests_per_second > 0.0) {
        return fail(format!(
            "{key}.rate_limit.requests_per_second: must be a number above 0"
        ));
    }
    let burst = config
        .burst
        .unwrap_or_else(|| config.requests_per_second.ceil().min(f64::from(u32::MAX)) as u32);
    if burst == 0 {
        return fail(format!("{key}.rate_limit.burst: must be at least 1"));
    }
    Ok(Some(RateLimit {
        requests_per_second: config.requests_per_second,
        burst,
    }))
}

/// A secret key file; refused when others may read it (as ssh refuses keys).
/// The listener's certificate files, as configured (read at start and on
/// each reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are required, issued by these CAs.
    pub client_ca: Option<PathBuf>,
}

/// `tls_cert_file`, `tls_key_file` and `tls_client_ca_file`: the first two
/// together, the third only with them; and the files must make a server
/// configuration now (so that `--check-config` and a reload catch a bad one).
fn validate_tls(
    cert: Option<RelativePathBuf>,
    key: Option<RelativePathBuf>,
    client_ca: Option<RelativePathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let files = match (cert, key) {
        (None, None) => {
            if client_ca.is_some() {
                return fail("tls_client_ca_file: needs tls_cert_file and tls_key_file");
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.relative(),
            key: key.relative(),
            client_ca: client_ca.map(|c| c.relative()),
        },
        (Some(_), None) => return fail("tls_key_file: is required with tls_cert_file"),
        (None, Some(_)) => return fail("tls_cert_file: is required with tls_key_file"),
    };
    crate::http::tls::server_config(&files).map_err(ConfigError)?;
    Ok(Some(files))
}

/// A password, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(REDACTED)")
    }
}

/// The database password from its file (private, one line) or, without
/// one, from `MESHRELEASE_DATABASE_PASSWORD`.
fn database_password(file: Option<&RelativePathBuf>) -> Result<Option<Password>, ConfigError> {
    if let Some(file) = file {
        let text = read_secret_file(&file.relative())
            .map_err(|e| ConfigError(format!("database_password_file: {e}")))?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return fail("database_password_file: the file is empty");
        }
        return Ok(Some(Password(password.to_owned())));
    }
    Ok(std::env::var("MESHRELEASE_DATABASE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Password))
}

pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} may be read by other users (mode {:o}); `chmod 600` it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, cli: Cli) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let secret = dir.path().join("sdk-client.sk");
        std::fs::write(&secret, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc\n").unwrap();
        set_private(&secret);
        let toml = toml.replace("secrets/sdk-client.sk", secret.to_str().unwrap());
        std::fs::write(&path, toml).unwrap();
        Settings::load(&Cli {
            config: Some(path),
            ..cli
        })
    }

    const GOOD: &str = r#"
        listen = "127.0.0.1:9000"
        data_dir = "./d"
        [[meshes]]
        id = "demo-mesh"
        clusters = ["cluster-a", "cluster-b"]
        [[tokens]]
        subject = "bot"
        sha256 = "6a3ef6f1c5e5a6a8f2c1e1c4f3c3e0c2a1b4d7e8f9a0b1c2d3e4f5a6b7c8d9e0"
        allow = [{ actions = ["asm:mesh:*"], meshes = ["*"] }]
        [[credentials]]
        subject = "sdk-client"
        access_key = "QTWAOYTTINDUT2QVKYUC"
        secret_key_file = "secrets/sdk-client.sk"
        allow = [{ actions = ["asm:mesh:*"], meshes = ["*"] }]
    "#;

    fn set_private(path: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn secret_keys_are_read_from_the_named_file_and_must_be_private() {
        let s = load(GOOD, Cli::default()).unwrap();
        assert_eq!(
            s.credentials[0].secret_key,
            b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
        );
        // The key never shows in debug output.
        assert!(!format!("{:?}", s.credentials).contains("MFyf"));

        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open.sk");
        std::fs::write(&open, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(
            &GOOD.replace(
                "secret_key_file = \"secrets/sdk-client.sk\"",
                &format!("secret_key_file = {:?}", open.to_str().unwrap()),
            ),
            Cli::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("credentials[0].secret_key_file") && err.contains("chmod 600"),
            "{err}"
        );

        let err = load(
            &GOOD.replace(
                "secret_key_file = \"secrets/sdk-client.sk\"",
                "secret_key_env = \"MESHRELEASE_TEST_UNSET_VARIABLE\"",
            ),
            Cli::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("credentials[0].secret_key_env"), "{err}");
    }

    #[test]
    fn relative_paths_in_the_file_are_the_files_directorys_and_in_flags_the_working_directorys() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(conf.join("secrets")).unwrap();
        let secret = conf.join("secrets/sdk-client.sk");
        std::fs::write(&secret, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc\n").unwrap();
        set_private(&secret);
        std::fs::write(conf.join("a.kubeconfig"), "apiVersion: v1\n").unwrap();
        let file = conf.join("meshrelease.toml");
        std::fs::write(
            &file,
            GOOD.replace("data_dir = \"./d\"", "data_dir = \"state\"")
                + "[[clusters]]\nid = \"cluster-a\"\nkubeconfig = \"a.kubeconfig\"\n",
        )
        .unwrap();
        // Run from elsewhere: the file's relative paths still name its files.
        let s = Settings::load(&Cli {
            config: Some(file.clone()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(s.data_dir, conf.join("state"));
        assert_eq!(s.clusters[0].kubeconfig, Some(conf.join("a.kubeconfig")));
        assert_eq!(
            s.credentials[0].secret_key,
            b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
        );
        // A flag's (or the environment's) path is the working directory's.
        let s = Settings::load(&Cli {
            config: Some(file),
            data_dir: Some(PathBuf::from("elsewhere")),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("elsewhere"));
        // And with no file, the default is the working directory's ./data.
        assert_eq!(
            Settings::load(&Cli::default()).unwrap().data_dir,
            PathBuf::from("./data")
        );
    }

    #[test]
    fn the_database_password_comes_from_a_private_file_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.password");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        set_private(&file);
        let cli = |path: &Path| Cli {
            database: Some("postgres://app@127.0.0.1:5432/releases".into()),
            database_password_file: Some(path.to_owned()),
            ..Cli::default()
        };
        let s = Settings::load(&cli(&file)).unwrap();
        assert_eq!(s.database_password, Some(Password("s3cret-pw".into())));
        assert!(!format!("{s:?}").contains("s3cret"), "the password shows");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Settings::load(&cli(&file)).unwrap_err().to_string();
        assert!(
            err.contains("database_password_file") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn conditions_and_mesh_attributes_are_read_and_checked() {
        let toml = r#"
            [[meshes]]
            id = "m"
            clusters = ["c"]
            enterprise_project_id = "ep-1"
            tags = { env = "prod" }
            [[tokens]]
            subject = "bot"
            sha256 = "6a3ef6f1c5e5a6a8f2c1e1c4f3c3e0c2a1b4d7e8f9a0b1c2d3e4f5a6b7c8d9e0"
            allow = [{ actions = ["asm:mesh:*"], meshes = ["*"], conditions = { StringEquals = { "g:EnterpriseProjectId" = ["ep-1", "ep-2"], "g:ResourceTag/env" = "prod" } } }]
        "#;
        let s = load(toml, Cli::default()).unwrap();
        assert_eq!(s.meshes[0].enterprise_project_id, "ep-1");
        assert_eq!(s.meshes[0].tags["env"], "prod");
        assert_eq!(s.tokens[0].principal.statements[0].conditions.len(), 2);
        let err = |toml: String| load(&toml, Cli::default()).unwrap_err().to_string();
        assert!(
            err(toml.replace("StringEquals", "StringLike"))
                .contains("tokens[0].allow[0].conditions.StringLike")
        );
        assert!(err(toml.replace("g:ResourceTag/env", "g:Tag/env")).contains("unknown key"));
        // Without a project, a mesh is in the default project "0".
        let s = load(
            &toml.replace("enterprise_project_id = \"ep-1\"", ""),
            Cli::default(),
        )
        .unwrap();
        assert_eq!(s.meshes[0].enterprise_project_id, "0");
    }

    #[test]
    fn the_contract_shape_is_accepted() {
        let s = load(GOOD, Cli::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.meshes[0].clusters.len(), 2);
        assert_eq!(s.tokens[0].principal.statements[0].actions, None);
        assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn flags_win_over_the_file() {
        let s = load(
            GOOD,
            Cli {
                listen: Some("127.0.0.1:0".into()),
                meshes: Some(r#"[{ id = "m2", clusters = ["c"] }]"#.into()),
                ..Cli::default()
            },
        )
        .unwrap();
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.meshes[0].id, "m2");
    }

    #[test]
    fn mesh_cluster_settings_are_read_and_checked() {
        let mesh =
            |extra: &str| format!("[[meshes]]\nid = \"m\"\nclusters = [\"a\", \"b\"]\n{extra}");
        let s = load(
            &mesh("istio_config_cluster = \"b\"\nistio_api_version = \"v1\"\noriginal_on_end = \"scale-to-zero\""),
            Cli::default(),
        )
        .unwrap();
        assert_eq!(s.meshes[0].istio_config_cluster.as_deref(), Some("b"));
        assert_eq!(s.meshes[0].istio_api, IstioApi::V1);
        assert_eq!(s.meshes[0].original_on_end, OriginalOnEnd::ScaleToZero);
        let s = load(&mesh(""), Cli::default()).unwrap();
        assert_eq!(s.meshes[0].istio_api, IstioApi::V1beta1);
        assert_eq!(s.meshes[0].original_on_end, OriginalOnEnd::Delete);
        let err = |extra: &str| load(&mesh(extra), Cli::default()).unwrap_err().to_string();
        assert!(err("istio_config_cluster = \"z\"").contains("meshes[0].istio_config_cluster"));
        assert!(err("istio_api_version = \"v1alpha3\"").contains("meshes[0].istio_api_version"));
        assert!(err("original_on_end = \"keep\"").contains("meshes[0].original_on_end"));
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_file() {
        let err = load("max_connections = \"many\"", Cli::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_connections") && err.contains("c.toml"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |toml: &str| load(toml, Cli::default()).unwrap_err().to_string();
        assert!(err("listen = \"nowhere\"").contains("listen:"));
        assert!(err("bogus = 1").contains("bogus"));
        assert!(err(&GOOD.replace("6a3e", "zz3e")).contains("tokens[0].sha256"));
        assert!(
            err(&GOOD.replace(
                "asm:mesh:*\"], meshes = [\"*\"] }]\n        [[cred",
                "asm:mesh:nope\"], meshes = [\"*\"] }]\n        [[cred"
            ))
            .contains("tokens[0].allow[0].actions[0]")
        );
        assert!(err("[[meshes]]\nid = \"m\"\nclusters = []").contains("meshes[0].clusters"));
        assert!(err("log_format = \"xml\"").contains("log_format"));
    }

    #[test]
    fn cors_is_off_unless_origins_are_named_and_each_must_be_an_origin() {
        let cors = |toml: &str, cli: Cli| load(toml, cli).map(|s| s.cors);
        assert_eq!(cors("", Cli::default()).unwrap(), CorsOrigins::Off);
        assert_eq!(
            cors(
                "cors_allowed_origins = [\"https://console.example.com\", \"http://127.0.0.1:3000\"]",
                Cli::default()
            )
            .unwrap(),
            CorsOrigins::List(vec![
                "https://console.example.com".into(),
                "http://127.0.0.1:3000".into()
            ])
        );
        assert_eq!(
            cors("cors_allowed_origins = [\"*\"]", Cli::default()).unwrap(),
            CorsOrigins::Any
        );
        // Flags (comma-separated) replace the file's list.
        let flags = Cli {
            cors_allowed_origins: Some(vec!["https://a.example".into()]),
            ..Cli::default()
        };
        assert_eq!(
            cors("cors_allowed_origins = [\"*\"]", flags).unwrap(),
            CorsOrigins::List(vec!["https://a.example".into()])
        );
        for (bad, key) in [
            ("[\"*\", \"https://a.example\"]", "cors_allowed_origins:"),
            ("[\"https://a.example/\"]", "cors_allowed_origins[0]"),
            (
                "[\"https://a.example\", \"https://b.example/app\"]",
                "cors_allowed_origins[1]",
            ),
            ("[\"ftp://a.example\"]", "cors_allowed_origins[0]"),
            ("[\"a.example\"]", "cors_allowed_origins[0]"),
        ] {
            let err = cors(&format!("cors_allowed_origins = {bad}"), Cli::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }
}
