//! `--scale N`: the server binary with N releases in SQLite. Reports resident
//! memory, how long a list page takes with N stored against 1,000 stored, and
//! how long a restart takes to become ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{Sequence, closed_loop};
use crate::server::Server;
use crate::targets::{self, Options};
use crate::workload::{MESH, TOKEN, Workload};

const LIST_SAMPLES: usize = 300;
const PAGE: usize = 100;

pub(crate) async fn run(
    releases: u64,
    concurrency: usize,
    binary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let binary = crate::server::binary(binary)?;
    let data = tempfile::tempdir()?;
    let workload = Arc::new(Workload::new()?);
    let sequence = Arc::new(Sequence::new());

    let server = Server::start(&binary, data.path()).await?;
    fill(&server, &workload, &sequence, 1_000, concurrency).await?;
    let small = list_latency(&server).await?;
    fill(&server, &workload, &sequence, releases, concurrency).await?;
    let large = list_latency(&server).await?;
    let (rss, peak) = server.memory()?;
    server.stop().await?;

    let restarted = Instant::now();
    let server = Server::start(&binary, data.path()).await?;
    let ready = restarted.elapsed();
    let after_restart = list_latency(&server).await?;
    let (rss_after_restart, _) = server.memory()?;
    server.stop().await?;

    println!("scale: {releases} releases in SQLite, list pages of {PAGE}, {LIST_SAMPLES} samples");
    println!("| figure | value | goal |");
    println!("| --- | ---: | --- |");
    println!("| list page p50 with 1,000 stored | {:.3} ms | |", small.0);
    println!(
        "| list page p50 with {releases} stored | {:.3} ms | |",
        large.0
    );
    let ratio = large.0 / small.0.max(f64::EPSILON);
    println!("| ratio | {ratio:.2} | <= 1.5 {} |", verdict(ratio <= 1.5));
    println!(
        "| list page p99 with 1,000 / {releases} stored | {:.3} / {:.3} ms | |",
        small.1, large.1
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "| resident memory after filling and listing | {:.1} MiB (peak {:.1}) | <= 128 MiB {} |",
        mib(rss),
        mib(peak),
        verdict(mib(peak) <= 128.0)
    );
    println!(
        "| restart to ready (/readyz 200) | {:.0} ms | <= 200 ms {} |",
        ready.as_secs_f64() * 1000.0,
        verdict(ready <= Duration::from_millis(200))
    );
    println!(
        "| after restart: list page p50, resident memory | {:.3} ms, {:.1} MiB | |",
        after_restart.0,
        mib(rss_after_restart)
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Creates releases through gRPC until `total` are stored.
async fn fill(
    server: &Server,
    workload: &Arc<Workload>,
    sequence: &Arc<Sequence>,
    total: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let options = Options {
        connections: 4,
        concurrency,
        database_url: None,
    };
    let client = Arc::new(targets::grpc_client(server.address, &options).await?);
    // Closed-loop bursts until the count is reached.
    loop {
        let stored = server.count().await?;
        if stored >= total {
            return Ok(());
        }
        let burst = ((total - stored) as f64 / 5_000.0).clamp(0.05, 2.0);
        let measured = closed_loop(
            client.clone(),
            workload.clone(),
            sequence.clone(),
            concurrency.min((total - stored) as usize).max(1),
            Duration::from_secs_f64(burst),
        )
        .await;
        anyhow::ensure!(
            measured.errors == 0,
            "filling failed: {:?}",
            measured.first_error
        );
    }
}

/// Median and p99 (ms) of a list page: the first page, and pages further on
/// by continue token.
async fn list_latency(server: &Server) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::new();
    let base = format!(
        "http://{}/v2/meshes/{MESH}/namespaces/default/releases?limit={PAGE}",
        server.address
    );
    let mut samples = Vec::with_capacity(LIST_SAMPLES);
    let mut next: Option<String> = None;
    for _ in 0..LIST_SAMPLES {
        let url = match &next {
            Some(token) => format!("{base}&continue={token}"),
            None => base.clone(),
        };
        let started = Instant::now();
        let response = http.get(&url).header("x-auth-token", TOKEN).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "list: {}",
            response.status()
        );
        let page: serde_json::Value = response.json().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        next = page["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}
