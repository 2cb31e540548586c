use std::process::ExitCode;

use clap::Parser;
use meshrelease::configuration::{Cli, Settings};
use meshrelease::startup::Application;
use meshrelease::{shutdown, telemetry};

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
    telemetry::init(settings.log_format, &settings.log_level);
    if settings.tokens.is_empty() {
        tracing::warn!("no tokens are configured: every release operation will answer 401");
    }
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %application.local_addr(), "listening");
    application
        .run_until_stopped(shutdown::signal_received())
        .await;
    ExitCode::SUCCESS
}
