//! The command line: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mrctl",
    version,
    about = "Drive meshrelease canary and blue-green releases from a terminal or a pipeline",
    after_help = "Exit codes: 0 done (or the awaited state reached), 1 failed (a refused request, \
                  a failed release, a state that can no longer be reached), 2 timed out, \
                  64 usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the service is and who is asking. Each setting comes from its flag,
/// then its environment variable, then the current context of the
/// configuration file.
#[derive(Debug, Args)]
pub struct ConnectionFlags {
    /// The service's gRPC address: http://HOST:PORT (plaintext h2c) or https://HOST:PORT (TLS)
    #[arg(long, global = true, env = "MESHRELEASE_SERVER")]
    pub server: Option<String>,
    /// The API token (prefer MESHRELEASE_TOKEN or --token-file: a flag shows in `ps`)
    #[arg(long, global = true, env = "MESHRELEASE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token
    #[arg(long, global = true, env = "MESHRELEASE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The mesh the releases belong to
    #[arg(long, global = true, env = "MESHRELEASE_MESH")]
    pub mesh: Option<String>,
    /// The Kubernetes namespace (default: the context's, then "default")
    #[arg(short = 'n', long, global = true, env = "MESHRELEASE_NAMESPACE")]
    pub namespace: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https:// only; default: the system's roots)
    #[arg(long, global = true, env = "MESHRELEASE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The context of the configuration file to use instead of its current one
    #[arg(long, global = true, env = "MRCTL_CONTEXT")]
    pub context: Option<String>,
    /// The configuration file (default: $XDG_CONFIG_HOME/mrctl/config.yaml, then ~/.config/mrctl/config.yaml)
    #[arg(long, global = true, env = "MRCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long one request may take, as 30s, 2m or 1m30s
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update releases from YAML or JSON manifests (several documents per file)
    Apply(ApplyArgs),
    /// List releases, or show one, as a table or as json, yaml or names
    Get(GetArgs),
    /// Show a release in detail: phase history, conditions, traffic, replicas, objects
    Describe(DescribeArgs),
    /// Change how requests are split between the original and the gray version
    Traffic(TrafficArgs),
    /// End a release: the gray version takes over (its traffic must be at 100%)
    End(NameArg),
    /// Cancel a release: the original version keeps all traffic, the gray Deployments go.
    /// From Running, only once the original holds all traffic (`mrctl traffic NAME --takeover
    /// original`); from Pending, Deploying or Failed, at once
    Cancel(NameArg),
    /// Remove the record of a release that is over (ended, canceled)
    Delete(NameArg),
    /// Follow releases as they change (a live table on a terminal, a line per change otherwise)
    Watch(WatchArgs),
    /// Wait until a release reaches a phase or condition (exit 0), fails (1) or the time is up (2)
    Wait(WaitArgs),
    /// A release with spec.strategy: pass its current pause, analysis step or hold now (--full: to
    /// weight 100 and the end at once). With --steps: move traffic step by step from here instead
    Promote(PromoteArgs),
    /// A release with spec.strategy: hold at the current step (its checks go on)
    Pause(NameArg),
    /// A release with spec.strategy: end a pause (yours, a pause step's, or onFailure's)
    Resume(NameArg),
    /// A release with spec.strategy: roll back now (all traffic to the original, phase Failed)
    Abort(NameArg),
    /// A release its strategy rolled back: run it again from the first step
    Retry(NameArg),
    /// Print a shell completion script
    Completion(CompletionArgs),
    /// Show or change the configuration file's contexts
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A manifest file, or - for standard input (repeatable)
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Check everything and print what would be stored and the Kubernetes objects it plans; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: how to print the would-be releases
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: DocFormat,
}

/// The one kind of resource there is, under the names kubectl users type.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    #[value(alias = "release", alias = "rel")]
    Releases,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub kind: Kind,
    /// One release; all of them when omitted
    pub name: Option<String>,
    /// In every namespace of the mesh
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// Only releases in this phase
    #[arg(long)]
    pub phase: Option<String>,
    /// Only releases of this Service
    #[arg(long)]
    pub service: Option<String>,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Wide,
    Json,
    Yaml,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub kind: Kind,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The release
    pub name: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).multiple(true)
    .args(["weight", "header", "header_regex", "cookie_regex", "takeover"])))]
pub struct TrafficArgs {
    /// The release
    pub name: String,
    /// Percent of requests to the gray version, 0 to 100
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=100),
          conflicts_with_all = ["header", "header_regex", "cookie_regex", "takeover"])]
    pub weight: Option<i32>,
    /// Requests whose header NAME equals VALUE go to the gray version (repeatable; all must match)
    #[arg(long, value_name = "NAME=VALUE", conflicts_with = "takeover")]
    pub header: Vec<String>,
    /// Requests whose header NAME matches REGEX (RE2, the whole value) go to the gray version
    #[arg(long, value_name = "NAME=REGEX", conflicts_with = "takeover")]
    pub header_regex: Vec<String>,
    /// Requests whose Cookie header matches REGEX go to the gray version
    #[arg(long, value_name = "REGEX", conflicts_with = "takeover")]
    pub cookie_regex: Option<String>,
    /// All traffic to one version: gray (weight 100) or original (weight 0)
    #[arg(long, value_enum)]
    pub takeover: Option<Takeover>,
    /// Check and print the release as it would be; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Takeover {
    Gray,
    Original,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this release
    pub name: Option<String>,
    /// In every namespace of the mesh
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// json or yaml: one event per change, as the API sends it
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The release
    pub name: String,
    /// phase=PHASE (Running, Ended, ...), condition=TYPE (GrayReady, TrafficApplied, ...), or delete
    #[arg(long = "for", value_name = "CONDITION", value_parser = parse_target)]
    pub condition: crate::wait::Target,
    /// Give up after this long (exit 2), as 90s, 5m or 1h
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The release
    pub name: String,
    /// Gray weights to move through from here, in order, as 10,25,50,100 (for a release without a
    /// strategy; without --steps, promote asks the service to pass the strategy's current step)
    #[arg(long, value_delimiter = ',',
          value_parser = clap::value_parser!(i32).range(0..=100))]
    pub steps: Vec<i32>,
    /// With a strategy: skip every remaining step and check, to weight 100 and the strategy's end
    #[arg(long, conflicts_with_all = ["steps", "interval", "cancel_on_failure", "end"])]
    pub full: bool,
    /// How long to hold each step (but the last) once it is applied, watching for failure
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// How long the release may take to be Running, and each step to be applied
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Cancel the release when it fails or a step cannot be applied
    #[arg(long)]
    pub cancel_on_failure: bool,
    /// End the release after the last step (which must then be 100)
    #[arg(long)]
    pub end: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration file (tokens redacted)
    View,
    /// List the contexts
    GetContexts,
    /// Print the current context's name
    CurrentContext,
    /// Make NAME the current context
    UseContext { name: String },
    /// Create or change a context (only the settings given change)
    SetContext(SetContextArgs),
    /// Remove a context
    DeleteContext { name: String },
}

#[derive(Debug, Args)]
pub struct SetContextArgs {
    pub name: String,
    #[arg(long = "set-server", value_name = "URL")]
    pub server: Option<String>,
    #[arg(long = "set-mesh", value_name = "MESH")]
    pub mesh: Option<String>,
    #[arg(long = "set-namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long = "set-token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[arg(long = "set-ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// A duration as kubectl writes one (Go's form): `90s`, `5m`, `1h30m`,
/// `500ms`, or a bare number of seconds.
/// `--for`, read as the command line is (a bad one is a usage error).
fn parse_target(text: &str) -> Result<crate::wait::Target, String> {
    crate::wait::Target::parse(text).map_err(|e| e.to_string())
}

/// The connection flags the environment can give (`MESHRELEASE_SERVER`, ...).
const FROM_ENVIRONMENT: &[&str] = &[
    "--server",
    "--token",
    "--token-file",
    "--mesh",
    "--namespace",
    "--ca-file",
    "--context",
    "--config",
];

/// A usage error as clap renders it, without the connection flags that came
/// from the environment in its `Usage:` line (clap lists them as if typed,
/// which reads as "these are required").
pub fn usage_without_environment(rendered: &str, typed: &[String]) -> String {
    rendered
        .lines()
        .map(|line| {
            if !line.starts_with("Usage: ") {
                return line.to_owned();
            }
            let mut line = line.to_owned();
            for flag in FROM_ENVIRONMENT {
                let was_typed = typed
                    .iter()
                    .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")));
                if was_typed {
                    continue;
                }
                let value = flag
                    .trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase();
                line = line.replace(&format!(" {flag} <{value}>"), "");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if rendered.ends_with('\n') { "\n" } else { "" }
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let bad = || format!("{text:?} is not a duration such as 90s, 5m or 1h30m");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += std::time::Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_kubectl_writes_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "m", "5x", "5 m", "-1s", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn the_usage_line_leaves_out_what_the_environment_gave() {
        let rendered = "error: the following required arguments were not provided:\n  <NAME>\n\nUsage: mrctl delete --server <SERVER> --token <TOKEN> --mesh <MESH> <NAME>\n\nFor more information, try '--help'.\n";
        let typed: Vec<String> = ["mrctl", "delete", "--mesh=m"].map(str::to_owned).to_vec();
        let shown = usage_without_environment(rendered, &typed);
        assert!(
            shown.contains("Usage: mrctl delete --mesh <MESH> <NAME>\n"),
            "{shown}"
        );
        assert!(shown.starts_with("error: the following required"));
        assert!(shown.ends_with("try '--help'.\n"), "{shown}");
    }
}
