//! meshrelease-bench: starts each configuration itself, drives it with unique,
//! realistic CreateRelease requests, and prints throughput, latency
//! percentiles and the ratios BENCHMARKS.md tracks, all from one run so that
//! the machine's drift cancels (rounds alternate A/B/A/B).

#![allow(clippy::print_stdout)]

mod load;
mod pinned;
mod reconcile;
mod scale;
mod server;
mod soak;
mod targets;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use load::{Measured, Sequence, closed_loop, open_loop};
use targets::{Options, Running, Target};
use workload::Workload;

#[derive(Debug, Parser)]
#[command(
    name = "meshrelease-bench",
    about = "Same-run throughput and latency ratios for meshrelease"
)]
struct Args {
    /// Seconds per target per round.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Rounds; each runs every target once, in alternating order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Client connections per target (gRPC: HTTP/2 connections the requests
    /// share; REST: HTTP/1.1 client pools).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds of unmeasured warm-up per target before the first round.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// PostgreSQL URL for grpc-pg and pg-insert (each run in a fresh schema,
    /// dropped afterwards); without it those two are skipped.
    #[arg(long, env = "MESHRELEASE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Only these targets (comma-separated names), for profiling one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the open-loop runs at half the peak rate.
    #[arg(long)]
    no_open_loop: bool,
    /// Instead of the throughput comparison, store this many releases in
    /// SQLite through the server binary and report memory, list latency and
    /// start-up time (needs `cargo build --release` first).
    #[arg(long)]
    scale: Option<u64>,
    /// Instead of the throughput comparison, run a mixed load on the server
    /// binary for this many seconds and report errors, memory and descriptors.
    #[arg(long)]
    soak: Option<u64>,
    /// Instead of the throughput comparison, drive this many canary releases
    /// across 4 simulated clusters through the server binary and report the
    /// time to Running, the steady state's cluster requests, a restart and
    /// memory per release.
    #[arg(long)]
    reconcile: Option<usize>,
    /// Instead of the throughput comparison, open-loop latency at 25%, 50%
    /// and 75% of the closed-loop peak of the server binary pinned to CPU 1
    /// (run this under `taskset -c 0`), `--duration-secs` per run.
    #[arg(long)]
    pinned: bool,
    /// Seconds of steady state `--reconcile` counts cluster requests over.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// `--reconcile`: each simulated cluster's `qps` and `burst` (client-side
    /// rate limit); by default the service's own defaults.
    #[arg(long)]
    cluster_qps: Option<u32>,
    /// The server binary for `--scale` and `--soak`; by default the `meshrelease` next to
    /// this benchmark's own executable.
    #[arg(long)]
    server_binary: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(seconds) = args.soak {
        return soak::run(seconds, args.server_binary).await;
    }
    if args.pinned {
        let errors = pinned::run(
            args.duration_secs,
            args.concurrency,
            args.connections,
            args.server_binary,
        )
        .await?;
        anyhow::ensure!(errors == 0, "{errors} requests failed");
        return Ok(());
    }
    if let Some(releases) = args.reconcile {
        return reconcile::run(
            releases,
            args.steady_secs,
            args.cluster_qps,
            args.server_binary,
        )
        .await;
    }
    if let Some(releases) = args.scale {
        return scale::run(releases, args.concurrency, args.server_binary).await;
    }
    let errors = throughput(&args).await?;
    if errors > 0 {
        anyhow::bail!("{errors} requests failed");
    }
    Ok(())
}

/// Runs the comparison; answers how many requests failed.
async fn throughput(args: &Args) -> anyhow::Result<u64> {
    let workload = Arc::new(Workload::new()?);
    let sequence = Arc::new(Sequence::new());
    let options = Options {
        connections: args.connections,
        concurrency: args.concurrency,
        database_url: args.database_url.clone(),
    };
    let mut order = vec![
        Target::Echo,
        Target::GrpcMem,
        Target::RestMem,
        Target::GrpcSqlite,
    ];
    if options.database_url.is_some() {
        order.extend([
            Target::GrpcPg,
            Target::PgInsert,
            Target::RestPg,
            Target::SignedRestPg,
        ]);
    }
    if !args.only.is_empty() {
        order.retain(|t| args.only.iter().any(|name| name == t.name()));
    }
    println!(
        "meshrelease-bench: {} targets, {} rounds of {}s each, concurrency {}, {} connections, request {} bytes of JSON",
        order.len(),
        args.rounds,
        args.duration_secs,
        args.concurrency,
        args.connections,
        workload.json_bytes()
    );

    let mut running: BTreeMap<&str, (Target, Arc<Running>)> = BTreeMap::new();
    for target in &order {
        let started = targets::start(*target, &options)
            .await
            .with_context(|| format!("starting {}", target.name()))?;
        running.insert(target.name(), (*target, Arc::new(started)));
    }
    let run = |target: Target, seconds: f64| {
        let running = running[target.name()].1.clone();
        let workload = workload.clone();
        let sequence = sequence.clone();
        let concurrency = args.concurrency;
        async move {
            let client = Arc::new(ClientRef(running));
            closed_loop(
                client.client(),
                workload,
                sequence,
                concurrency,
                Duration::from_secs_f64(seconds),
            )
            .await
        }
    };

    if args.warmup_secs > 0.0 {
        for target in &order {
            run(*target, args.warmup_secs).await;
        }
    }
    let mut results: BTreeMap<&str, Measured> = BTreeMap::new();
    for round in 0..args.rounds {
        let mut this_round = order.clone();
        if round % 2 == 1 {
            this_round.reverse();
        }
        for target in this_round {
            let measured = run(target, args.duration_secs).await;
            results
                .entry(target.name())
                .or_insert_with(Measured::new)
                .add(measured);
        }
    }

    println!();
    println!("closed loop, concurrency {}:", args.concurrency);
    println!(
        "| {:<12} | {:>10} | {:>8} | {:>8} | {:>8} | {:>6} |",
        "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut errors = 0;
    for target in &order {
        let m = &results[target.name()];
        errors += m.errors;
        println!(
            "| {:<12} | {:>10.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} |",
            target.name(),
            m.rate(),
            m.ms(0.5),
            m.ms(0.9),
            m.ms(0.99),
            m.errors
        );
        if let Some(e) = &m.first_error {
            println!("  first error of {}: {e}", target.name());
        }
    }

    let mut per_commit = BTreeMap::new();
    for target in [Target::GrpcSqlite, Target::GrpcPg] {
        if let Some(address) = running.get(target.name()).and_then(|(_, r)| r.metrics_at)
            && let Ok(mean) = creates_per_commit(address).await
        {
            per_commit.insert(target.name(), mean);
        }
    }

    println!();
    println!("ratios (same run):");
    let rate = |t: Target| results.get(t.name()).map(Measured::rate);
    ratio(
        "grpc-mem / echo",
        rate(Target::GrpcMem),
        rate(Target::Echo),
        0.6,
    );
    ratio(
        "rest-mem / grpc-mem",
        rate(Target::RestMem),
        rate(Target::GrpcMem),
        0.85,
    );
    ratio(
        "grpc-sqlite / grpc-mem",
        rate(Target::GrpcSqlite),
        rate(Target::GrpcMem),
        0.7,
    );
    if let Some(mean) = per_commit.get(Target::GrpcSqlite.name()) {
        println!("  grpc-sqlite creates per commit (mean): {mean:.1}");
    }
    if options.database_url.is_some() {
        ratio(
            "grpc-pg / pg-insert",
            rate(Target::GrpcPg),
            rate(Target::PgInsert),
            0.6,
        );
        if let Some(mean) = per_commit.get(Target::GrpcPg.name()) {
            println!("  grpc-pg creates per commit (mean): {mean:.1}");
        }
        // What remembering each signed write (one INSERT shared by the
        // replicas) costs a create.
        ratio(
            "rest-pg-signed / rest-pg",
            rate(Target::SignedRestPg),
            rate(Target::RestPg),
            0.8,
        );
    }

    if !args.no_open_loop {
        println!();
        println!("open loop at half the closed-loop rate (goal: p99 <= 2 ms):");
        println!(
            "| {:<12} | {:>10} | {:>8} | {:>8} | {:>8} | {:>14} | {:>6} |",
            "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "dispatch lag p99", "errors"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for target in [Target::GrpcMem, Target::RestMem] {
            if !order.contains(&target) {
                continue;
            }
            let half = results[target.name()].rate() / 2.0;
            let client = ClientRef(running[target.name()].1.clone()).client();
            let m = open_loop(
                client,
                workload.clone(),
                sequence.clone(),
                half,
                Duration::from_secs_f64(args.duration_secs),
            )
            .await;
            errors += m.errors;
            let lag = m
                .dispatch_lag_us
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
            println!(
                "| {:<12} | {:>10.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>13.2}ms | {:>6} | {}",
                target.name(),
                m.rate(),
                m.ms(0.5),
                m.ms(0.9),
                m.ms(0.99),
                lag,
                m.errors,
                if m.ms(0.99) <= 2.0 { "met" } else { "MISSED" }
            );
        }
    }

    drop(running);
    if let Some(url) = &options.database_url {
        targets::drop_schemas(url).await?;
    }
    Ok(errors)
}

/// Shares one started target between runs.
struct ClientRef(Arc<Running>);

impl ClientRef {
    fn client(&self) -> Arc<targets::Client> {
        self.0.client.clone()
    }
}

fn ratio(name: &str, a: Option<f64>, b: Option<f64>, goal: f64) {
    let (Some(a), Some(b)) = (a, b) else {
        return;
    };
    let value = a / b.max(f64::EPSILON);
    println!(
        "  {name:<24} {value:>6.2}   goal >= {goal:.2}  {}",
        if value >= goal { "met" } else { "MISSED" }
    );
}

/// The mean writes per SQLite commit, from the server's own `/metrics`.
async fn creates_per_commit(address: std::net::SocketAddr) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await?
        .text()
        .await?;
    let metric = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let sum = metric("meshrelease_store_commit_writes_sum").context("no commit sum")?;
    let count = metric("meshrelease_store_commit_writes_count").context("no commit count")?;
    Ok(sum / count.max(1.0))
}
