//! The driver reads the clusters through watch caches: with releases
//! Running and nothing changing, the clusters see no GET and no LIST (only
//! the open watches), even while the periodic resync runs; a change by
//! another writer reaches the release through the watch, not the resync;
//! the watches of a namespace stop when its last release ends; a burst of
//! releases reaches Running through their own writes and the watches, none
//! of them left for the resync; a client's change costs its release one
//! turn of the driver, not another to look at its own writes; and a 429's
//! `Retry-After` holds the driver's next request to that cluster.

use std::time::Duration;

use serde_json::{Value, json};
use simcluster::resources::VIRTUAL_SERVICES;

use crate::driver::*;
use crate::helpers::*;

/// Reads (GETs and LISTs, not watches) at both clusters, with what they
/// asked for.
fn reads(clusters: &Clusters) -> Vec<String> {
    [&clusters.a, &clusters.b]
        .iter()
        .flat_map(|c| c.sim.requests.all())
        .filter(|seen| seen.method == http::Method::GET && !seen.watch)
        .map(|seen| seen.path)
        .collect()
}

async fn running_at_30(app: &TestApp, name: &str, service: &str) {
    app.create(&release_body(name, service)).await;
    until(app, name, "Running", phase_is("Running")).await;
    set_weight(app, name, 30).await;
    until(app, name, "traffic 30 applied", traffic_is(30)).await;
}

async fn watch_caches(app: &TestApp) -> f64 {
    let text = app.text_of("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix("meshrelease_watch_caches "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no meshrelease_watch_caches in:\n{text}"))
}

#[tokio::test]
async fn releases_running_cost_the_clusters_no_read_while_nothing_changes() {
    let clusters = clusters().await;
    // A resync every 100 ms: thirty of them in the quiet window, each
    // looking at both releases.
    let app = app_resyncing(&clusters, "", 100).await;
    running_at_30(&app, "quiet-reviews", "reviews").await;
    running_at_30(&app, "quiet-ratings", "ratings").await;
    // Settled: the last rounds of the moves above are over.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reads_before = reads(&clusters).len();
    let writes_before = clusters.a.sim.requests.writes() + clusters.b.sim.requests.writes();
    let reconciles_before = reconciles(&app).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles_after = reconciles(&app).await;
    assert!(
        reconciles_after >= reconciles_before + 20.0,
        "the resync did not run in the quiet window ({reconciles_before} then {reconciles_after} rounds): the test would prove nothing"
    );
    let quiet_reads = &reads(&clusters)[reads_before..];
    assert!(
        quiet_reads.is_empty(),
        "{} read(s) in a quiet window, where the watch caches should answer: {quiet_reads:?}",
        quiet_reads.len()
    );
    assert_eq!(
        clusters.a.sim.requests.writes() + clusters.b.sim.requests.writes(),
        writes_before,
        "a write in a quiet window"
    );
    for name in ["quiet-reviews", "quiet-ratings"] {
        let (_, release) = json_of(app.get(name).await).await;
        assert_eq!(release["status"]["phase"], "Running", "{release}");
    }
}

#[tokio::test]
async fn a_burst_of_releases_reaches_running_without_waiting_for_the_resync() {
    let clusters = clusters().await;
    let services: Vec<String> = (0..50).map(|i| format!("burst-{i}")).collect();
    for service in &services {
        clusters.a.put_original(service, 2).await;
    }
    // A resync far beyond the test's patience: a release whose own status
    // write went unnoticed (news from the clusters arriving meanwhile)
    // would wait for it, and `until` gives up long before.
    let app = app_resyncing(&clusters, "", 600_000).await;
    let created = futures_util::future::join_all(services.iter().map(|service| {
        let body = release_body(service, service);
        let app = &app;
        async move { app.create(&body).await }
    }))
    .await;
    for response in created {
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    for service in &services {
        until(&app, service, "Running", phase_is("Running")).await;
    }
}

async fn reconciles(app: &TestApp) -> f64 {
    let text = app.text_of("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(r#"meshrelease_reconciles_total{result="done"} "#))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_change_costs_its_release_one_turn_not_another_to_look_at_its_own_writes() {
    let clusters = clusters().await;
    // No resync in the test's time: every turn has a cause.
    let app = app_resyncing(&clusters, "", 600_000).await;
    app.create(&release_body("one-turn", "reviews")).await;
    until(&app, "one-turn", "Running", phase_is("Running")).await;
    // Settled: the turns of the create are over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reconciles(&app).await;

    set_weight(&app, "one-turn", 30).await;
    until(&app, "one-turn", "traffic 30 applied", traffic_is(30)).await;
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "70/30", |vs| {
        vs.is_some_and(|vs| routes(vs) == split(70, 30))
    })
    .await;
    // Time for a turn that its own status write, or the news of its own
    // write to the VirtualService, would bring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let turns = reconciles(&app).await - before;
    assert_eq!(
        turns, 1.0,
        "one change of the weight took {turns} turns: the turn that wrote it \
         already saw its own writes"
    );
}

#[tokio::test]
async fn another_writers_change_to_the_routing_reaches_the_release_through_the_watch() {
    let clusters = clusters().await;
    // A resync far beyond the test's patience: only the watch can tell.
    let app = app_resyncing(&clusters, "", 600_000).await;
    running_at_30(&app, "watched-routes", "reviews").await;
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "70/30", |vs| {
        vs.is_some_and(|vs| routes(vs) == split(70, 30))
    })
    .await;

    // Someone sends every request back to v1 by hand (kubectl edit).
    let mut vs = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "reviews")
        .await
        .unwrap();
    vs["spec"]["http"] = json!([{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}
    ]}]);
    let api_version = vs["apiVersion"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .put(format!(
            "{}/apis/{api_version}/namespaces/default/virtualservices/reviews",
            clusters.a.url()
        ))
        .header("User-Agent", "kubectl-edit/v1.33")
        .json(&vs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // The release puts its 70/30 back, within the watch's latency.
    until_object(
        &clusters.a,
        VIRTUAL_SERVICES,
        "reviews",
        "70/30 again",
        |vs| vs.is_some_and(|vs| routes(vs) == split(70, 30)),
    )
    .await;
    let (_, release) = json_of(app.get("watched-routes").await).await;
    assert_eq!(release["status"]["traffic"], json!({"weight": 30}));
}

#[tokio::test]
async fn the_watches_of_a_namespace_stop_when_its_last_release_ends() {
    let clusters = clusters().await;
    let app = app_resyncing(&clusters, "", 100).await;
    running_at_30(&app, "short-lived", "reviews").await;
    // Deployments and Services in cluster-a, VirtualServices and
    // DestinationRules there too, Deployments in cluster-b.
    assert_eq!(watch_caches(&app).await, 5.0);
    let open = || clusters.a.sim.watches.count() + clusters.b.sim.watches.count();
    assert_eq!(open(), 5, "one watch per cache at the clusters");

    set_weight(&app, "short-lived", 0).await;
    until(&app, "short-lived", "weight 0 applied", traffic_is(0)).await;
    let (status, body) = json_of(app.delete("short-lived", Some("cancel")).await).await;
    assert_eq!(status, 200, "{body}");
    until(&app, "short-lived", "Canceled", phase_is("Canceled")).await;
    for attempt in 0.. {
        if watch_caches(&app).await == 0.0 {
            break;
        }
        assert!(
            attempt < 100,
            "the watches outlived the namespace's last release"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And no watch is open at the clusters any more: a change there is
    // sent to nobody.
    for _ in 0..100 {
        if open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open(), 0, "watches still open after the last release ended");
}

#[tokio::test]
async fn a_429_holds_the_drivers_next_request_to_that_cluster_for_its_retry_after() {
    let clusters = clusters().await;
    let app = app_resyncing(&clusters, "", 100).await;
    let from = clusters.a.sim.requests.all().len();
    clusters.a.faults().throttle_next(1, 2);
    app.create(&release_body("throttled", "reviews")).await;
    let release: Value = until(&app, "throttled", "Running", phase_is("Running")).await;
    assert_eq!(release["status"]["phase"], "Running");

    let seen = &clusters.a.sim.requests.all()[from..];
    let (first, next) = (&seen[0], &seen[1]);
    let gap = next.at.duration_since(first.at);
    assert!(
        gap >= Duration::from_millis(1900),
        "the request after the 429 ({} {}) came {gap:?} after it, before its Retry-After of 2 s",
        next.method,
        next.path
    );
    let text = app.text_of("/metrics").await;
    assert!(
        text.contains(r#"code="429""#),
        "the 429 is not counted:\n{text}"
    );
    assert!(
        text.contains(r#"meshrelease_cluster_requests_throttled_total{cluster="cluster-a"}"#),
        "the wait is not counted:\n{text}"
    );
}
