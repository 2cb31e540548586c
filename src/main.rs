use std::process::ExitCode;

use clap::Parser;
use meshrelease::configuration::{Cli, Settings};
use meshrelease::startup::Application;
use meshrelease::{reload, shutdown, telemetry};

/// jemalloc, not the system's malloc: in a burst of 1,000 releases the
/// server takes less CPU and memory per release, and the API's latency
/// stays as it was (BENCHMARKS.md, "An allocator for the server"). It
/// returns freed pages at once (`.cargo/config.toml`). Only this binary,
/// what operators run, uses it; the library's tests keep the system's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("meshrelease: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        report_valid(&cli, &settings);
        return ExitCode::SUCCESS;
    }
    if let Err(e) = telemetry::init(
        settings.log_format,
        &settings.log_level,
        &settings.audit_log,
    ) {
        eprintln!("meshrelease: audit_log: {e}");
        return ExitCode::from(2);
    }
    if settings.tokens.is_empty() {
        tracing::warn!("no tokens are configured: every release operation will answer 401");
    }
    let store = settings.store_description();
    let config = cli
        .config
        .as_ref()
        .map_or("(none: flags, environment and defaults)".to_owned(), |p| {
            p.display().to_string()
        });
    let mut application = match Application::build(settings).await {
        Ok(application) => application,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // Every signal handler is in place before the line that says the
    // service listens (tests, and orchestrators, may signal right after it).
    let stop = shutdown::signal_received();
    if let Some(reloader) = application.take_reloader() {
        tokio::spawn(reload::on_hangup(
            cli,
            reloader,
            application.shutdown_token(),
        ));
    }
    tracing::info!(
        version = meshrelease::VERSION,
        address = %application.local_addr(),
        scheme = %application.scheme(),
        store = %store,
        config = %config,
        "listening"
    );
    application.run_until_stopped(stop).await;
    ExitCode::SUCCESS
}

/// `--check-config`'s answer, on stdout (logging is not set up).
#[allow(clippy::print_stdout)]
fn report_valid(cli: &Cli, settings: &Settings) {
    println!(
        "meshrelease: the configuration{} is valid: listen {} ({}), store {}, {} meshes, {} tokens, {} access keys, {} clusters",
        cli.config
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default(),
        settings.listen,
        match &settings.tls {
            None => "plaintext",
            Some(files) if files.client_ca.is_some() => "TLS, client certificates required",
            Some(_) => "TLS",
        },
        settings.store_description(),
        settings.meshes.len(),
        settings.tokens.len(),
        settings.credentials.len(),
        settings.clusters.len(),
    );
}
