//! With releases Running and nothing changing, the clusters see no write,
//! and `status.traffic` stays where it is: after a SIGKILL and a restart of
//! the service, and after a storm of 503s. The simulated cluster counts
//! annotation changes of a Deployment as a new generation, as the API
//! server does, so a gray Deployment applied again for nothing would show
//! as a write and as a release whose gray version is briefly not ready.

use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::start;
use crate::driver::*;
use crate::helpers::*;

const SERVICES: [&str; 3] = ["reviews", "ratings", "details"];
/// How long nothing may happen.
const QUIET: Duration = Duration::from_secs(3);

fn name_of(service: &str) -> String {
    format!("{service}-quiet")
}

async fn get(base: &str, name: &str) -> Value {
    let response = http_client()
        .get(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases/{name}"
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    json_of(response).await.1
}

async fn until_at(base: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let release = get(base, name).await;
        if check(&release) {
            return release;
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {what}; last seen: {last}");
}

/// Three releases, Running with 40% on their gray versions.
async fn three_at_40(base: &str, clusters: &Clusters) {
    for service in ["ratings", "details"] {
        if clusters
            .a
            .get(simcluster::resources::SERVICES, "default", service)
            .await
            .is_none()
        {
            clusters.a.put_original(service, 2).await;
        }
    }
    let client = http_client();
    for service in SERVICES {
        let response = client
            .post(format!(
                "{base}/v2/meshes/{MESH}/namespaces/default/releases"
            ))
            .header("X-Auth-Token", TOKEN)
            .json(&release_body(&name_of(service), service))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for service in SERVICES {
        until_at(base, &name_of(service), "Running", phase_is("Running")).await;
        let response = client
            .patch(format!(
                "{base}/v2/meshes/{MESH}/namespaces/default/releases/{}",
                name_of(service)
            ))
            .header("X-Auth-Token", TOKEN)
            .json(&json!({"spec": {"trafficPolicy": {"weight": 40}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for service in SERVICES {
        until_at(base, &name_of(service), "traffic 40", traffic_is(40)).await;
    }
}

/// For `QUIET`, reads every release again and again: each keeps 40% on
/// its gray version, Running; answers the cluster writes made meanwhile.
async fn quiet_window(base: &str, writes: impl Fn() -> usize) -> usize {
    let before = writes();
    let started = tokio::time::Instant::now();
    while started.elapsed() < QUIET {
        for service in SERVICES {
            let release = get(base, &name_of(service)).await;
            assert_eq!(
                (
                    release["status"]["phase"].as_str(),
                    &release["status"]["traffic"]
                ),
                (Some("Running"), &json!({"weight": 40})),
                "the traffic of {service} moved in a quiet window: {release}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writes() - before
}

#[tokio::test]
async fn after_a_sigkill_and_a_restart_settled_releases_cost_no_write() {
    let clusters = clusters().await;
    let dir = tempfile::tempdir().unwrap();
    let flag = clusters.flag_for("before");
    let first = start(
        dir.path(),
        &["--clusters", &flag, "--resync-interval-ms", "200"],
    );
    three_at_40(&first.base, &clusters).await;
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let flag = clusters.flag_for("after");
    let second = start(
        dir.path(),
        &["--clusters", &flag, "--resync-interval-ms", "200"],
    );
    // The new process has looked at every release (it listed the
    // Deployments of both clusters to fill its caches), and several
    // resyncs follow.
    for cluster in [&clusters.a, &clusters.b] {
        for attempt in 0.. {
            let listed =
                cluster.sim.requests.by("after").iter().any(|seen| {
                    seen.path.ends_with("/namespaces/default/deployments") && !seen.watch
                });
            if listed {
                break;
            }
            assert!(
                attempt < 300,
                "the restarted service never listed the Deployments"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let written = quiet_window(&second.base, || clusters.writes_by("after")).await;
    assert_eq!(
        clusters.writes_by("after"),
        0,
        "the restarted service wrote to the clusters ({written} in the quiet window) though nothing had changed: {:?}",
        [&clusters.a, &clusters.b]
            .iter()
            .flat_map(|c| c.sim.requests.by("after"))
            .filter(|s| s.method != http::Method::GET)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn after_a_storm_of_503s_settled_releases_cost_no_write() {
    let clusters = clusters().await;
    let app = app_resyncing(&clusters, "", 100).await;
    let base = app.base.clone();
    three_at_40(&base, &clusters).await;
    let writes = || clusters.a.sim.requests.writes() + clusters.b.sim.requests.writes();
    // Settled: nothing more to write before the storm.
    let mut settled = writes();
    for attempt in 0.. {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if writes() == settled {
            break;
        }
        assert!(attempt < 20, "the clusters never stopped being written");
        settled = writes();
    }

    // Every request of both clusters answers 503 until each release says
    // so; then the storm ends.
    clusters.a.faults().fail_next(u32::MAX);
    clusters.b.faults().fail_next(u32::MAX);
    for service in SERVICES {
        until(&app, &name_of(service), "an Unreachable condition", |r| {
            r["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "ClustersReachable" && c["status"] == "False")
            })
        })
        .await;
    }
    clusters.a.faults().fail_next(0);
    clusters.b.faults().fail_next(0);
    for service in SERVICES {
        until(&app, &name_of(service), "reachable again", |r| {
            r["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "ClustersReachable" && c["status"] == "True")
            })
        })
        .await;
    }
    let written = quiet_window(&base, writes).await;
    assert_eq!(
        (writes() - settled, written),
        (0, 0),
        "the clusters were written after the storm though nothing had changed"
    );
}
