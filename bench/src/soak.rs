//! `--soak SECONDS`: a bounded mixed load on the server binary (a fixed
//! number of workers, each creating, reading, listing, updating and deleting
//! its own releases over gRPC and REST, and watchers following every change),
//! reporting errors, resident memory and open descriptors at the start and
//! the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshrelease::pb::asm::v2 as pb;
use tokio_stream::StreamExt as _;
use tonic::Request;

use crate::server::{Server, binary};
use crate::targets::{self, Client, Options};
use crate::workload::{MESH, TOKEN, Workload};

const WORKERS: usize = 8;
const WATCHERS: usize = 4;

#[derive(Default)]
struct Counts {
    cycles: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    events: AtomicU64,
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-auth-token", TOKEN.parse().expect("ascii"));
    request
}

pub(crate) async fn run(seconds: u64, named: Option<PathBuf>) -> anyhow::Result<()> {
    let binary = binary(named)?;
    let data = tempfile::tempdir()?;
    let server = Server::start(&binary, data.path()).await?;
    let options = Options {
        connections: 2,
        concurrency: WORKERS,
        database_url: None,
    };
    let Client::Grpc(channels) = targets::grpc_client(server.address, &options).await? else {
        anyhow::bail!("a gRPC client was expected");
    };
    let workload = Arc::new(Workload::new()?);
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut tasks = Vec::new();
    for w in 0..WATCHERS {
        let client = channels[w % channels.len()].clone();
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let request = authed(pb::WatchReleasesRequest {
                    mesh_id: MESH.into(),
                    namespace: String::new(),
                    resource_version: String::new(),
                });
                let Ok(stream) = client.clone().watch_releases(request).await else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = stream.into_inner();
                // Follow for a while, then reconnect: connections come and go.
                let until = (Instant::now() + Duration::from_secs(30)).min(deadline);
                while let Ok(Some(event)) =
                    tokio::time::timeout_at(until.into(), stream.next()).await
                {
                    match event {
                        Ok(_) => counts.events.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }));
    }
    let http = reqwest::Client::new();
    for worker in 0..WORKERS {
        let client = channels[worker % channels.len()].clone();
        let workload = workload.clone();
        let counts = counts.clone();
        let http = http.clone();
        let list_url = format!(
            "http://{}/v2/meshes/{MESH}/namespaces/default/releases?limit=20",
            server.address
        );
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let ok = cycle(&client, &http, &list_url, &workload, worker, seq, &counts).await;
                if !ok {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                counts.cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // The start is taken after a short warm-up, once every worker is going.
    tokio::time::sleep(Duration::from_secs(seconds.min(10) / 2)).await;
    let (start_rss, _) = server.memory()?;
    let start_fds = server.descriptors()?;
    let mut samples = vec![(0u64, start_rss, start_fds)];
    let begun = Instant::now();
    while Instant::now() + Duration::from_secs(60) < deadline {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (rss, _) = server.memory()?;
        samples.push((begun.elapsed().as_secs(), rss, server.descriptors()?));
    }
    for task in tasks {
        task.await?;
    }
    let (end_rss, peak) = server.memory()?;
    let end_fds = server.descriptors()?;
    samples.push((begun.elapsed().as_secs(), end_rss, end_fds));
    server.stop().await?;

    let errors = counts.errors.load(Ordering::Relaxed);
    println!(
        "soak: {seconds}s, {WORKERS} workers (create, get, list, update, cancel, remove), {WATCHERS} watchers"
    );
    println!(
        "cycles {}, requests {}, watch events {}, errors {errors}",
        counts.cycles.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed),
        counts.events.load(Ordering::Relaxed)
    );
    println!("| seconds | resident MiB | open descriptors |");
    println!("| ---: | ---: | ---: |");
    for (at, rss, fds) in &samples {
        println!("| {at} | {:.1} | {fds} |", *rss as f64 / 1024.0);
    }
    println!("peak resident: {:.1} MiB", peak as f64 / 1024.0);
    anyhow::ensure!(errors == 0, "{errors} errors during the soak");
    Ok(())
}

/// One release's life: create (gRPC), get (gRPC), list (REST), update
/// (gRPC), cancel and remove (gRPC). Answers whether every step succeeded.
async fn cycle(
    client: &meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient<
        tonic::transport::Channel,
    >,
    http: &reqwest::Client,
    list_url: &str,
    workload: &Workload,
    worker: usize,
    seq: u64,
    counts: &Counts,
) -> bool {
    let mut client = client.clone();
    let request = workload.grpc(worker, seq);
    let name = request
        .release
        .as_ref()
        .and_then(|r| r.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let count = || counts.requests.fetch_add(1, Ordering::Relaxed);
    count();
    let Ok(created) = client.create_release(authed(request)).await else {
        return false;
    };
    let key = || (MESH.to_owned(), "default".to_owned(), name.clone());
    count();
    let (mesh_id, namespace, n) = key();
    if client
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id,
            namespace,
            name: n,
        }))
        .await
        .is_err()
    {
        return false;
    }
    count();
    match http
        .get(list_url)
        .header("x-auth-token", TOKEN)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
        }
        _ => return false,
    }
    count();
    let (mesh_id, namespace, n) = key();
    if client
        .update_release(authed(pb::UpdateReleaseRequest {
            mesh_id,
            namespace,
            name: n,
            release: Some(created.into_inner()),
            dry_run: false,
        }))
        .await
        .is_err()
    {
        return false;
    }
    for action in ["cancel", ""] {
        count();
        let (mesh_id, namespace, n) = key();
        if client
            .delete_release(authed(pb::DeleteReleaseRequest {
                mesh_id,
                namespace,
                name: n,
                action: action.into(),
            }))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}
