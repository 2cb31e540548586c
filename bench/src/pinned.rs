//! `--pinned`: open-loop latency with the server and the load generator on
//! different cores. The server binary (in-memory store) runs on CPU 1 under
//! `taskset`; run the benchmark itself under `taskset -c 0` so that the
//! generator's own work is not in the server's figures. For gRPC and REST:
//! the closed-loop peak against that server, then 25%, 50% and 75% of it,
//! each three times, with the generator's own lateness beside each figure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::load::{Measured, Sequence, closed_loop, open_loop};
use crate::server::Server;
use crate::targets::{Client, Options, grpc_client, rest_client};
use crate::workload::Workload;

const SERVER_CPU: usize = 1;
const FRACTIONS: [f64; 3] = [0.25, 0.5, 0.75];
const RUNS: usize = 3;

pub(crate) async fn run(
    seconds: f64,
    concurrency: usize,
    connections: usize,
    binary: Option<PathBuf>,
) -> anyhow::Result<u64> {
    let binary = crate::server::binary(binary)?;
    let data = tempfile::tempdir()?;
    let server = Server::start_on(
        &binary,
        data.path(),
        &[("MESHRELEASE_STORE", "memory".to_owned())],
        Some(SERVER_CPU),
    )
    .await?;
    let options = Options {
        connections,
        concurrency,
        database_url: None,
    };
    let workload = Arc::new(Workload::new()?);
    let sequence = Arc::new(Sequence::new());
    let duration = Duration::from_secs_f64(seconds);
    println!(
        "pinned open loop: server (in-memory store) on CPU {SERVER_CPU}, this generator where it was started (run it under `taskset -c 0`), {RUNS} runs of {seconds} s per load"
    );
    println!(
        "| protocol | load | req/s | p50 ms | p90 ms | p99 ms | generator lateness p99 ms | errors | slowest ms, sent at (CLOCK_MONOTONIC) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut errors = 0;
    for (protocol, client) in [
        ("gRPC", grpc_client(server.address, &options).await?),
        ("REST", rest_client(server.address, &options, false)?),
    ] {
        let client: Arc<Client> = Arc::new(client);
        // Warm, then the peak this server reaches with the generator apart.
        closed_loop(
            client.clone(),
            workload.clone(),
            sequence.clone(),
            concurrency,
            Duration::from_secs(1),
        )
        .await;
        let peak = closed_loop(
            client.clone(),
            workload.clone(),
            sequence.clone(),
            concurrency,
            duration,
        )
        .await;
        errors += peak.errors;
        row(protocol, "closed-loop peak", &peak, None);
        for fraction in FRACTIONS {
            let rate = peak.rate() * fraction;
            for run in 1..=RUNS {
                let m = open_loop(
                    client.clone(),
                    workload.clone(),
                    sequence.clone(),
                    rate,
                    duration,
                )
                .await;
                errors += m.errors;
                let lag = m
                    .dispatch_lag_us
                    .as_ref()
                    .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0);
                row(
                    protocol,
                    &format!("{:.0}% ({rate:.0}/s), run {run}", fraction * 100.0),
                    &m,
                    lag,
                );
            }
        }
    }
    server.stop().await?;
    Ok(errors)
}

fn row(protocol: &str, load: &str, m: &Measured, lag: Option<f64>) {
    println!(
        "| {protocol} | {load} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        m.rate(),
        m.ms(0.5),
        m.ms(0.9),
        m.ms(0.99),
        lag.map_or("".to_owned(), |l| format!("{l:.2}")),
        m.errors,
        m.worst.map_or(String::new(), |(took, sent)| format!(
            "{:.2} at {}",
            took.as_secs_f64() * 1000.0,
            monotonic(sent)
        )),
    );
}

/// When `at` was, on CLOCK_MONOTONIC (what `perf record -k mono` stamps
/// its samples with), as seconds. std's `Instant` is that clock on Linux
/// and shows its reading only through `Debug`.
fn monotonic(at: std::time::Instant) -> String {
    let shown = format!("{at:?}");
    let number = |key: &str| -> Option<u64> {
        let rest = &shown[shown.find(key)? + key.len()..];
        rest.trim_start_matches([':', ' '])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    match (number("tv_sec"), number("tv_nsec")) {
        (Some(sec), Some(nsec)) => format!("{sec}.{nsec:09}"),
        _ => shown,
    }
}
