//! `--reconcile N`: the cluster driver at scale. N canary releases across 4
//! simulated clusters (in this process, Deployments ready at once), driven
//! by the server binary on SQLite. Reports the time from create to
//! `Running`, the most requests any cluster saw in one second meanwhile
//! (its rate limit at work), the requests the driver sends the clusters in
//! a steady state (and what one resync costs), the restart to every release
//! reconciled and what it asked, and resident memory per active release.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use meshrelease::pb::asm::v2 as pb;
use simcluster::{Config, SimCluster};

use crate::server::Server;
use crate::workload::{MESH, TOKEN};

const CLUSTERS: usize = 4;
const RESYNC_MS: u64 = 5_000;
/// Creates in flight while filling.
const IN_FLIGHT: usize = 32;

fn cluster_id(i: usize) -> String {
    format!("cluster-{i}")
}

fn release_body(i: usize) -> serde_json::Value {
    let app = format!("app-{i}");
    let cluster = cluster_id(i % CLUSTERS);
    serde_json::json!({
        "kind": "Release",
        "apiVersion": "asm/v2",
        "metadata": {"name": format!("release-{i}"), "namespace": "default"},
        "spec": {
            "serviceName": app,
            "clusterID": cluster,
            "deploymentName": format!("{app}-v1"),
            "version": "v2",
            "type": "canary",
            "grayDeployments": [{"clusterID": cluster, "template": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": app}},
                    "template": {
                        "metadata": {"labels": {"app": app}},
                        "spec": {"containers": [{"name": app, "image": format!("{app}:2")}]}
                    }
                }
            }}]
        }
    })
}

/// Requests the clusters have seen, in all.
fn requests(clusters: &[SimCluster]) -> usize {
    clusters.iter().map(|c| c.sim.requests.all().len()).sum()
}

/// Requests seen since `from` (per cluster, an index into its log), by
/// method and kind of object.
fn requests_by_kind(clusters: &[SimCluster], from: &[usize]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for (cluster, start) in clusters.iter().zip(from) {
        for seen in cluster.sim.requests.all().into_iter().skip(*start) {
            let kind = seen
                .path
                .split('/')
                .rev()
                .find(|part| {
                    matches!(
                        *part,
                        "deployments" | "services" | "virtualservices" | "destinationrules"
                    )
                })
                .unwrap_or("other");
            let watch = if seen.watch { " (watch)" } else { "" };
            if seen.method != "GET" && std::env::var_os("BENCH_SHOW_WRITES").is_some() {
                eprintln!("steady-state write: {} {}", seen.method, seen.path);
            }
            *kinds
                .entry(format!("{} {kind}{watch}", seen.method))
                .or_default() += 1;
        }
    }
    kinds
}

/// The most requests (watches aside) one cluster saw within one second,
/// of those after `from`.
fn peak_per_second(clusters: &[SimCluster], from: &[usize]) -> usize {
    let mut peak = 0;
    for (cluster, start) in clusters.iter().zip(from) {
        let times: Vec<Instant> = cluster
            .sim
            .requests
            .all()
            .into_iter()
            .skip(*start)
            .filter(|seen| !seen.watch)
            .map(|seen| seen.at)
            .collect();
        let mut first = 0;
        for (last, at) in times.iter().enumerate() {
            while at.duration_since(times[first]) >= Duration::from_secs(1) {
                first += 1;
            }
            peak = peak.max(last + 1 - first);
        }
    }
    peak
}

fn log_lengths(clusters: &[SimCluster]) -> Vec<usize> {
    clusters
        .iter()
        .map(|c| c.sim.requests.all().len())
        .collect()
}

/// When each release was first seen `Running` by a watch.
type Running = Arc<Mutex<HashMap<String, Instant>>>;

async fn watch_running(server: &Server, running: Running) -> anyhow::Result<()> {
    let mut client = pb::release_service_client::ReleaseServiceClient::connect(format!(
        "http://{}",
        server.address
    ))
    .await?;
    let mut request = tonic::Request::new(pb::WatchReleasesRequest {
        mesh_id: MESH.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-auth-token", TOKEN.parse()?);
    let mut events = client.watch_releases(request).await?.into_inner();
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let Some(release) = event.release else {
                continue;
            };
            let phase = release.status.map(|s| s.phase).unwrap_or_default();
            if phase == "Running" {
                let name = release.metadata.map(|m| m.name).unwrap_or_default();
                running
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

pub(crate) async fn run(
    releases: usize,
    steady_secs: u64,
    qps: Option<u32>,
    binary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let binary = crate::server::binary(binary)?;
    let data = tempfile::tempdir()?;
    let mut clusters = Vec::new();
    let mut flag = String::from("[");
    for i in 0..CLUSTERS {
        let cluster = SimCluster::start(Config {
            ready_delay: Duration::ZERO,
            ..Config::default()
        })
        .await?;
        let path = data.path().join(format!("{}.kubeconfig", cluster_id(i)));
        std::fs::write(&path, cluster.kubeconfig(&cluster_id(i)))?;
        let limit = qps.map_or(String::new(), |qps| format!(", qps = {qps}, burst = {qps}"));
        flag.push_str(&format!(
            r#"{{ id = "{}", kubeconfig = "{}"{limit} }},"#,
            cluster_id(i),
            path.display()
        ));
        clusters.push(cluster);
    }
    flag.push(']');
    for i in 0..releases {
        clusters[i % CLUSTERS]
            .put_original(&format!("app-{i}"), 1)
            .await;
    }
    let ids: Vec<String> = (0..CLUSTERS)
        .map(|i| format!("\"{}\"", cluster_id(i)))
        .collect();
    let env = [
        (
            "MESHRELEASE_MESHES",
            format!(r#"[{{ id = "{MESH}", clusters = [{}] }}]"#, ids.join(", ")),
        ),
        ("MESHRELEASE_CLUSTERS", flag),
        ("MESHRELEASE_RESYNC_INTERVAL_MS", RESYNC_MS.to_string()),
    ];
    let server = Server::start_with(&binary, data.path(), &env).await?;
    let (idle_rss, _) = server.memory()?;
    let running: Running = Arc::default();
    watch_running(&server, running.clone()).await?;

    let filling_from = log_lengths(&clusters);
    let cpu_before = server.cpu()?;
    // Every create, IN_FLIGHT at a time; each one's time is when it was sent.
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v2/meshes/{MESH}/namespaces/default/releases",
        server.address
    );
    let started = Instant::now();
    let sent: Vec<(String, Instant)> = futures_util::stream::iter(0..releases)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let at = Instant::now();
                let response = http
                    .post(&url)
                    .header("X-Auth-Token", TOKEN)
                    .json(&release_body(i))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "create {i}: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
                Ok((format!("release-{i}"), at))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<anyhow::Result<_>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let created_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while running.lock().unwrap().len() < releases {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {releases} releases reached Running in 300 s",
            running.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_running = started.elapsed();
    let burst_cpu = server.cpu()? - cpu_before;
    // Turns of the work queue the burst took, by how each ended.
    let mut turns = BTreeMap::new();
    for result in [
        "done",
        "not_connected",
        "unreachable",
        "conflict",
        "refused",
    ] {
        let count = server
            .metric(
                "meshrelease_reconciles_total",
                &format!("result=\"{result}\""),
            )
            .await?;
        if count > 0.0 {
            turns.insert(result, count);
        }
    }
    let mut to_running: Vec<Duration> = {
        let running = running.lock().unwrap();
        sent.iter()
            .map(|(name, at)| running[name].saturating_duration_since(*at))
            .collect()
    };
    to_running.sort_unstable();
    if std::env::var_os("BENCH_SERVER_LOG").is_some() {
        // The slowest releases, to look up in the server's log.
        let running = running.lock().unwrap();
        let mut slowest: Vec<(Duration, &str, Duration)> = sent
            .iter()
            .map(|(name, at)| {
                let took = running[name].saturating_duration_since(*at);
                (took, name.as_str(), at.duration_since(started))
            })
            .collect();
        slowest.sort_unstable_by(|a, b| b.cmp(a));
        for (took, name, at) in slowest.iter().take(10) {
            eprintln!(
                "slow: {name} sent at {:.0} ms, Running {:.0} ms later",
                at.as_secs_f64() * 1000.0,
                took.as_secs_f64() * 1000.0
            );
        }
    }
    let peak = peak_per_second(&clusters, &filling_from);
    let filling_kinds = requests_by_kind(&clusters, &filling_from);
    let (busy_rss, _) = server.memory()?;

    // The steady state: nothing changes; only the resync and the watches.
    tokio::time::sleep(Duration::from_millis(RESYNC_MS)).await;
    let from = log_lengths(&clusters);
    let steady_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(steady_secs)).await;
    let steady = steady_started.elapsed();
    let steady_kinds = requests_by_kind(&clusters, &from);
    let steady_requests: usize = steady_kinds.values().sum();
    let per_release_minute =
        steady_requests as f64 / releases as f64 / (steady.as_secs_f64() / 60.0);
    let resyncs = steady.as_secs_f64() * 1000.0 / RESYNC_MS as f64;
    // What the burst left held, once quiet: the figure for 1,000 releases
    // that are simply active.
    let (steady_rss, _) = server.memory()?;

    // A restart: every active release looked at once more.
    server.stop().await?;
    let before = requests(&clusters);
    let restart_from = log_lengths(&clusters);
    let restarted = Instant::now();
    let server = Server::start_with(&binary, data.path(), &env).await?;
    let ready = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while server
        .metric("meshrelease_reconciles_total", "result=\"done\"")
        .await?
        < releases as f64
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restarted service did not reconcile every release in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconciled = restarted.elapsed();
    let restart_requests = requests(&clusters) - before;
    let restart_kinds = requests_by_kind(&clusters, &restart_from);
    let (restart_rss, _) = server.memory()?;
    server.stop().await?;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reconcile: {releases} canary releases across {CLUSTERS} simulated clusters (Deployments ready at once), server binary on SQLite, resync every {RESYNC_MS} ms, cluster rate limit {}",
        qps.map_or("the default".to_owned(), |q| format!("qps = burst = {q}"))
    );
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!(
        "| creates sent ({IN_FLIGHT} in flight) | {releases} in {:.0} ms |",
        ms(created_in)
    );
    println!(
        "| create to Running, p50 / p90 / p99 / max | {:.0} / {:.0} / {:.0} / {:.0} ms |",
        ms(percentile(&to_running, 0.5)),
        ms(percentile(&to_running, 0.9)),
        ms(percentile(&to_running, 0.99)),
        ms(percentile(&to_running, 1.0))
    );
    println!(
        "| first create to all Running | {:.0} ms |",
        ms(all_running)
    );
    println!(
        "| server CPU time, meanwhile (user and system) | {:.0} ms ({:.2} ms per release) |",
        ms(burst_cpu),
        ms(burst_cpu) / releases as f64
    );
    let all_turns: f64 = turns.values().sum();
    println!(
        "| turns of the work queue meanwhile | {all_turns:.0} ({:.2} per release) |",
        all_turns / releases as f64
    );
    for (result, count) in &turns {
        println!("| &nbsp; ended {result} | {count:.0} |");
    }
    println!("| most requests to one cluster in one second, meanwhile | {peak} |");
    println!(
        "| cluster requests from the first create to all Running | {} |",
        filling_kinds.values().sum::<usize>()
    );
    for (kind, count) in &filling_kinds {
        println!("| &nbsp; {kind} | {count} |");
    }
    println!(
        "| cluster requests in the steady state ({:.0} s) | {steady_requests}: {per_release_minute:.2} per release per minute, {:.0} per resync |",
        steady.as_secs_f64(),
        steady_requests as f64 / resyncs.max(1.0)
    );
    for (kind, count) in &steady_kinds {
        println!("| &nbsp; {kind} | {count} |");
    }
    println!(
        "| restart: ready / every release reconciled | {:.0} ms / {:.0} ms |",
        ms(ready),
        ms(reconciled)
    );
    println!(
        "| cluster requests to reconcile after the restart | {restart_requests} ({:.1} per release) |",
        restart_requests as f64 / releases as f64
    );
    for (kind, count) in &restart_kinds {
        println!("| &nbsp; {kind} | {count} |");
    }
    let kib_per = |rss: u64| (rss.saturating_sub(idle_rss)) as f64 / releases as f64;
    println!(
        "| resident memory: idle / just after the burst / after the quiet window / after a restart | {:.1} / {:.1} / {:.1} / {:.1} MiB |",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        steady_rss as f64 / 1024.0,
        restart_rss as f64 / 1024.0,
    );
    println!(
        "| resident memory per active release, above idle: just after the burst / quiet / after a restart | {:.1} / {:.1} / {:.1} KiB |",
        kib_per(busy_rss),
        kib_per(steady_rss),
        kib_per(restart_rss)
    );
    Ok(())
}
