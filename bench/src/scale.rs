//! `--scale N`: the server binary with N releases in SQLite. Reports resident
//! memory, how long a list page takes with N stored against 1,000 stored, and
//! how long a restart takes to become ready.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::Digest as _;
use tokio::process::{Child, Command};

use crate::load::{Sequence, closed_loop};
use crate::targets::{self, Options};
use crate::workload::{MESH, TOKEN, Workload};

const LIST_SAMPLES: usize = 300;
const PAGE: usize = 100;

pub(crate) async fn run(
    releases: u64,
    concurrency: usize,
    binary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let binary = match binary {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .join("meshrelease"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: run `cargo build --release` first, or pass --server-binary",
        binary.display()
    );
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

struct Server {
    child: Child,
    address: std::net::SocketAddr,
}

impl Server {
    /// Starts the binary and returns once `/readyz` answers 200.
    async fn start(binary: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let sha = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
        let child = Command::new(binary)
            .arg("--listen")
            .arg(address.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", "warn"])
            .env(
                "MESHRELEASE_MESHES",
                format!(r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"] }}]"#),
            )
            .env(
                "MESHRELEASE_TOKENS",
                format!(
                    r#"[{{ subject = "bench", sha256 = "{sha}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }}]"#
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{address}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(Self { child, address });
            }
            anyhow::ensure!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Releases stored, by walking the list with the largest page.
    async fn count(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("http://{}/metrics", self.address))
            .await?
            .text()
            .await?;
        // Creates answered OK over gRPC: every one stored a release.
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with(
                    "meshrelease_requests_total{rpc=\"asm.v2.ReleaseService/CreateRelease\"",
                ) && l.contains("code=\"OK\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// (resident, peak resident) in KiB.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await?;
        Ok(())
    }
}
