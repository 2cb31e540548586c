//! `meshrelease-simcluster`: a simulated Kubernetes API server on loopback,
//! for trying meshrelease (and kubectl) without a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "meshrelease-simcluster", version, about)]
struct Cli {
    /// Where to listen (loopback only is wise: there is no authentication).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Milliseconds until a Deployment is reported ready.
    #[arg(long, default_value_t = 500)]
    ready_delay_ms: u64,
    /// Write a kubeconfig for this cluster here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context (and cluster) name.
    #[arg(long, default_value = "sim")]
    context: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cluster = simcluster::SimCluster::start(simcluster::Config {
        listen: cli.listen,
        ready_delay: Duration::from_millis(cli.ready_delay_ms),
    })
    .await?;
    if let Some(path) = &cli.kubeconfig {
        std::fs::write(path, cluster.kubeconfig(&cli.context))?;
    }
    tracing::info!(address = %cluster.address(), "simulated cluster listening");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
