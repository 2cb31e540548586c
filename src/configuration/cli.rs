//! The command line: each flag has a `MESHRELEASE_*` environment variable,
//! and each but `--config` is a key of the same name (with `_`) in the
//! file; set, it is the last layer figment merges.

use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::{ConfigError, fail};

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

impl Cli {
    /// The keys set by flags or their environment variables, as a figment
    /// layer: the inline TOML arrays (`--meshes` and the like) parsed.
    pub(super) fn overrides(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
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
