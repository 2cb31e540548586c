//! Structured logs with `tracing`, as text or JSON (every line of a request
//! carries its span's `request_id`), and the audit trail: records with the
//! target [`AUDIT`], written apart from the logs as JSON lines.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The target of audit records (`tracing::info!(target: AUDIT, ...)`).
pub const AUDIT: &str = "meshrelease::audit";

/// Noisy transport crates are quieted unless the filter names them; audit
/// records go to their own sink, not the log.
const QUIET: &str = "h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=info";

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    /// Appended to, created 0600.
    File(PathBuf),
}

impl AuditSink {
    pub fn parse(text: &str) -> Self {
        match text {
            "off" | "" => AuditSink::Off,
            "stdout" => AuditSink::Stdout,
            path => AuditSink::File(PathBuf::from(path)),
        }
    }
}

/// Sets up logging and the audit trail; a second call (tests start many
/// servers in one process) keeps the first.
pub fn init(format: LogFormat, level: &str, audit: &AuditSink) -> std::io::Result<()> {
    let filter = EnvFilter::try_new(format!("{QUIET},{level},{AUDIT}=off"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log.with_filter(filter).boxed(),
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    // Each record with every span it is in: the request's (id, method, path,
    // peer, subject) and the RPC's (operation, mesh, namespace, release).
    let records = || {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_target(false)
            .with_level(false)
    };
    // Every span (their fields make the record: a filter that left them out
    // would leave the layer blind to them), but only audit events.
    let only_audit =
        || tracing_subscriber::filter::filter_fn(|meta| meta.is_span() || meta.target() == AUDIT);
    let audit = match audit {
        AuditSink::Off => None,
        AuditSink::Stdout => Some(
            records()
                .with_writer(std::io::stdout)
                .with_filter(only_audit())
                .boxed(),
        ),
        AuditSink::File(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            Some(
                records()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(only_audit())
                    .boxed(),
            )
        }
    };
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(audit)
        .try_init();
    Ok(())
}
