//! Settings: embedded defaults, then the TOML file (`--config`), then
//! `MESHRELEASE_*` environment variables, then flags. Validated once after
//! loading, with errors that name the key. Split by layer and by subject,
//! as quickwit's configuration is:
//!
//! - this file: the validated [`Settings`], loading, and what a reload may
//!   not change;
//! - `cli.rs`: the flags (and their environment variables);
//! - `file.rs`: every key as the file writes it, with its default;
//! - `meshes.rs`: meshes and clusters;
//! - `access.rs`: tokens, AK/SK credentials, policies, rate limits;
//! - `listener.rs`: TLS and CORS on the listener.
//!
//! Each subsystem owns the type its settings become (`driver::ClusterSettings`,
//! `auth::TokenEntry`, `http::tls::TlsFiles`, `http::cors::CorsOrigins`,
//! `telemetry::LogFormat`); this module only reads into them.

mod access;
mod cli;
mod file;
mod listener;
mod meshes;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use figment::value::magic::RelativePathBuf;

use self::access::{validate_credentials, validate_tokens};
pub use self::cli::Cli;
use self::file::RawSettings;
pub use self::file::{
    ClusterConfig, CredentialConfig, MeshConfig, OneOrMany, RateLimitConfig, StatementConfig,
    TokenConfig,
};
use self::listener::{validate_cors, validate_tls};
use self::meshes::{validate_clusters, validate_meshes};
use crate::auth::TokenEntry;
use crate::auth::credentials::CredentialEntry;
use crate::domain::Mesh;
use crate::driver::ClusterSettings;
use crate::http::cors::CorsOrigins;
use crate::http::tls::TlsFiles;
use crate::secrets::{Password, read_secret_file};
use crate::telemetry::LogFormat;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Memory,
    /// PostgreSQL at `Settings::database`.
    Postgres,
}

impl Settings {
    /// The keys a reload cannot apply (the listener, the store, logging,
    /// limits and timers are set up once), each with its value: a reload
    /// that changes one of them says it needs a restart. Every field of
    /// [`Settings`] is named below, as restart-only or as applied by a
    /// reload: a new setting does not compile until someone decides which.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        let Settings {
            listen,
            // In the store's description.
            data_dir: _,
            store: _,
            database,
            database_pool_size,
            database_password,
            tls,
            log_format,
            log_level,
            audit_log,
            max_body_bytes,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            max_concurrent_streams,
            max_connections,
            listen_backlog,
            drain_timeout,
            shutdown_delay,
            resync_interval,
            cors,
            // A reload applies these.
            meshes: _,
            tokens: _,
            credentials: _,
            clusters: _,
        } = self;
        vec![
            ("listen", listen.to_string()),
            // The certificate files are read again on a reload (other
            // names too); turning TLS on or off is the listener's make-up.
            ("tls_cert_file", tls.is_some().to_string()),
            ("store", self.store_description()),
            ("database", format!("{database:?}")),
            // Compared, never shown: a reload names only the keys.
            (
                "database_password",
                database_password
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default(),
            ),
            ("database_pool_size", database_pool_size.to_string()),
            ("log_format", format!("{log_format:?}")),
            ("log_level", log_level.clone()),
            ("audit_log", format!("{audit_log:?}")),
            ("max_body_bytes", max_body_bytes.to_string()),
            (
                "header_read_timeout_secs",
                format!("{header_read_timeout:?}"),
            ),
            ("body_read_timeout_secs", format!("{body_read_timeout:?}")),
            ("idle_timeout_secs", format!("{idle_timeout:?}")),
            ("max_concurrent_streams", max_concurrent_streams.to_string()),
            ("max_connections", max_connections.to_string()),
            ("listen_backlog", listen_backlog.to_string()),
            ("drain_timeout_secs", format!("{drain_timeout:?}")),
            ("shutdown_delay_secs", format!("{shutdown_delay:?}")),
            ("resync_interval_ms", format!("{resync_interval:?}")),
            ("cors_allowed_origins", format!("{cors:?}")),
        ]
    }

    /// Where releases are kept, for logs: never the database's password.
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

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

impl Settings {
    /// Defaults, then the file named by `cli.config`, then environment and
    /// flags (clap reads each flag's `MESHRELEASE_*` variable; a flag wins).
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawSettings::default()));
        if let Some(path) = &cli.config {
            if !path.is_file() {
                return fail(format!("reading {}: no such file", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let layered: RawSettings = figment
            .merge(Serialized::defaults(cli.overrides()?))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        Self::validate(layered)
    }

    fn validate(l: RawSettings) -> Result<Self, ConfigError> {
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
