//! Structured logs with `tracing`, as text or JSON. Every line of a request
//! carries its span's `request_id`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// Noisy transport crates are quieted unless the filter names them.
const QUIET: &str = "h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=info";

pub fn init(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_new(format!("{QUIET},{level}")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests start many servers in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
