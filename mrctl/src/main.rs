//! The `mrctl` binary: parse, run, exit with a code a pipeline can use.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, parser::ValueSource};
use mrctl::cli::Cli;
use mrctl::config::TokenFirst;

/// Usage errors exit 64 (EX_USAGE), so that 2 always means "timed out".
const USAGE: u8 = 64;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) if e.use_stderr() => {
            let typed: Vec<String> = std::env::args().collect();
            let rendered = e.render().to_string();
            eprint!(
                "{}",
                mrctl::cli::usage_without_environment(&rendered, &typed)
            );
            return ExitCode::from(USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    // A token given on the command line beats one from the environment.
    let first = match (
        matches.value_source("token"),
        matches.value_source("token_file"),
    ) {
        (Some(ValueSource::EnvVariable), Some(ValueSource::CommandLine)) => TokenFirst::TokenFile,
        _ => TokenFirst::Token,
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(USAGE);
        }
    };
    match mrctl::run(cli, first).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => mrctl::errors::report(&error),
    }
}
