//! mrctl: the command-line client of meshrelease. It speaks gRPC to the
//! service (TLS for `https://` addresses) with the API types of
//! `meshrelease-wire`, and links nothing of the server's store.
//!
//! - `cli`: the commands and flags; `config`: contexts and connection settings;
//! - `api`: the gRPC client; `follow`: a watch that survives restarts;
//! - `manifest`: YAML and JSON documents read into releases;
//! - one file per command family: `apply`, `get` (and `watch`), `describe`,
//!   `traffic` (and `end`, `cancel`, `delete`), `wait`, `promote` (client
//!   steps), `strategy` (pause, resume, promote, abort, retry);
//! - `output`: tables and formats; `errors`: messages and exit codes.

// A command-line tool's output is its standard output.
#![allow(clippy::print_stdout)]

pub mod api;
pub mod apply;
pub mod cli;
pub mod config;
pub mod describe;
pub mod errors;
pub mod follow;
pub mod get;
pub mod manifest;
pub mod output;
pub mod promote;
pub mod strategy;
pub mod traffic;
pub mod wait;

use clap::CommandFactory as _;

use cli::{Cli, Command, ConfigCommand};
use config::{ConfigFile, Connection, TokenFirst};

/// Runs one command.
pub async fn run(cli: Cli, first: TokenFirst) -> anyhow::Result<()> {
    let config_path = config::path(&cli.connection);
    let mut file = ConfigFile::load(config_path.as_deref())?;
    if let Command::Config(command) = cli.command {
        return configure(command, &mut file, config_path.as_deref());
    }
    if let Command::Completion(args) = &cli.command {
        clap_complete::generate(
            args.shell,
            &mut Cli::command(),
            "mrctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let connection = Connection::resolve(&cli.connection, first, &file)?;
    let api = api::Api::new(&connection)?;
    let namespace = connection.namespace.as_str();
    match &cli.command {
        Command::Apply(args) => apply::run(&api, &connection, args).await,
        Command::Get(args) => get::get(&api, connection.mesh()?, namespace, args).await,
        Command::Describe(args) => {
            describe::run(&api, connection.mesh()?, namespace, &args.name).await
        }
        Command::Traffic(args) => traffic::set(&api, connection.mesh()?, namespace, args).await,
        Command::End(args) => {
            traffic::finish(&api, connection.mesh()?, namespace, &args.name, "end").await
        }
        Command::Cancel(args) => {
            traffic::finish(&api, connection.mesh()?, namespace, &args.name, "cancel").await
        }
        Command::Delete(args) => {
            traffic::finish(&api, connection.mesh()?, namespace, &args.name, "").await
        }
        Command::Watch(args) => get::watch(&api, connection.mesh()?, namespace, args).await,
        Command::Wait(args) => {
            wait::run(
                &api,
                connection.mesh()?,
                namespace,
                &args.name,
                &args.condition,
                args.timeout,
            )
            .await
        }
        Command::Promote(args) if args.steps.is_empty() => {
            let action = if args.full {
                "promote --full"
            } else {
                "promote"
            };
            strategy::act(&api, connection.mesh()?, namespace, &args.name, action).await
        }
        Command::Promote(args) => promote::run(&api, connection.mesh()?, namespace, args).await,
        Command::Pause(args) => {
            strategy::act(&api, connection.mesh()?, namespace, &args.name, "pause").await
        }
        Command::Resume(args) => {
            strategy::act(&api, connection.mesh()?, namespace, &args.name, "resume").await
        }
        Command::Abort(args) => {
            strategy::act(&api, connection.mesh()?, namespace, &args.name, "abort").await
        }
        Command::Retry(args) => {
            strategy::act(&api, connection.mesh()?, namespace, &args.name, "retry").await
        }
        Command::Completion(_) | Command::Config(_) => Ok(()),
    }
}

fn configure(
    command: ConfigCommand,
    file: &mut ConfigFile,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let path =
        path.ok_or_else(|| anyhow::anyhow!("no configuration file: set MRCTL_CONFIG or HOME"))?;
    match command {
        ConfigCommand::View => print!("{}", serde_yaml_ng::to_string(&file.redacted())?),
        ConfigCommand::GetContexts => {
            let mut rows = vec![
                ["CURRENT", "NAME", "SERVER", "MESH", "NAMESPACE"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for context in &file.contexts {
                let current = file.current_context.as_deref() == Some(context.name.as_str());
                rows.push(vec![
                    if current { "*".into() } else { String::new() },
                    context.name.clone(),
                    context.server.clone().unwrap_or_default(),
                    context.mesh.clone().unwrap_or_default(),
                    context.namespace.clone().unwrap_or_default(),
                ]);
            }
            print!("{}", output::table(&rows));
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(name) => println!("{name}"),
            None => anyhow::bail!("no current context is set"),
        },
        ConfigCommand::UseContext { name } => {
            if !file.contexts.iter().any(|c| c.name == name) {
                anyhow::bail!("no context named {name:?} in {}", path.display());
            }
            file.current_context = Some(name.clone());
            file.save(path)?;
            println!("Switched to context {name:?}.");
        }
        ConfigCommand::SetContext(args) => {
            let name = args.name.clone();
            let created = !file.contexts.iter().any(|c| c.name == name);
            file.set_context(args);
            file.save(path)?;
            println!(
                "Context {name:?} {}.",
                if created { "created" } else { "modified" }
            );
        }
        ConfigCommand::DeleteContext { name } => {
            let before = file.contexts.len();
            file.contexts.retain(|c| c.name != name);
            if file.contexts.len() == before {
                anyhow::bail!("no context named {name:?} in {}", path.display());
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            file.save(path)?;
            println!("Deleted context {name:?}.");
        }
    }
    Ok(())
}
