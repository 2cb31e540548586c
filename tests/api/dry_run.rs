//! A dry run with the release's clusters connected: the gray Deployments,
//! VirtualService and DestinationRule as the first round would write them,
//! planned from what the clusters hold (read, never written) and each write
//! sent as the cluster's own dry run, so that an admission webhook's denial
//! shows before anything changes; over REST and gRPC.

use serde_json::Value;
use simcluster::resources::{DEPLOYMENTS, DESTINATION_RULES, VIRTUAL_SERVICES};

use crate::driver::{Clusters, app_for, clusters};
use crate::helpers::*;

async fn dry_run_create(app: &TestApp, name: &str) -> Value {
    let (status, answer) = json_of(
        app.http
            .post(format!("{}?dryRun=true", app.releases_url(MESH, "default")))
            .header("X-Auth-Token", TOKEN)
            .json(&release_body(name, "reviews"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The kinds and dry-run answers of a plan, in order.
fn planned(answer: &Value) -> Vec<(String, String, String)> {
    answer["status"]["plan"]
        .as_array()
        .expect("a plan")
        .iter()
        .map(|p| {
            (
                p["clusterID"].as_str().unwrap().to_owned(),
                p["object"]["kind"].as_str().unwrap().to_owned(),
                p["dryRun"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Nothing of the release is in either cluster.
async fn nothing_written(clusters: &Clusters) {
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .is_none()
    );
    for kind in [VIRTUAL_SERVICES, DESTINATION_RULES] {
        assert!(
            clusters.a.get(kind, "default", "reviews").await.is_none(),
            "{kind:?}"
        );
    }
    assert_eq!(clusters.a.sim.requests.writes(), 0);
    assert_eq!(clusters.b.sim.requests.writes(), 0);
}

#[tokio::test]
async fn a_dry_run_plans_the_routing_from_the_clusters_and_tries_each_write_there() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let answer = dry_run_create(&app, "reviews-canary").await;
    let plan = planned(&answer);
    let kinds: Vec<&str> = plan.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert!(kinds.contains(&"Deployment"), "{plan:?}");
    assert!(kinds.contains(&"DestinationRule"), "{plan:?}");
    assert!(kinds.contains(&"VirtualService"), "{plan:?}");
    for (cluster, kind, dry_run) in &plan {
        assert_eq!(dry_run, "accepted", "{cluster} {kind}");
    }
    let routes = answer["status"]["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"]["kind"] == "VirtualService")
        .unwrap();
    assert_eq!(routes["clusterID"], "cluster-a");
    let message = answer["status"]["planMessage"].as_str().unwrap();
    assert!(
        message.contains("accepted by its cluster's own dry run")
            && message.contains("nothing was written"),
        "{message}"
    );
    nothing_written(&clusters).await;
    assert!(clusters.a.sim.requests.dry_runs() >= 2 && clusters.b.sim.requests.dry_runs() >= 1);
    assert_eq!(app.get("reviews-canary").await.status(), 404);

    // An admission webhook of cluster-b denies the gray Deployment: the
    // dry run says so, for that object, before anything changes.
    clusters
        .b
        .faults()
        .deny_writes(Some("images must come from registry.internal"));
    let answer = dry_run_create(&app, "reviews-canary").await;
    let denied: Vec<_> = planned(&answer)
        .into_iter()
        .filter(|(_, _, dry_run)| dry_run != "accepted")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    let (cluster, kind, dry_run) = &denied[0];
    assert_eq!(
        (cluster.as_str(), kind.as_str()),
        ("cluster-b", "Deployment")
    );
    assert!(
        dry_run.starts_with("refused: ")
            && dry_run.contains("admission webhook")
            && dry_run.contains("registry.internal"),
        "{dry_run}"
    );
    let message = answer["status"]["planMessage"].as_str().unwrap();
    assert!(message.contains("1 of 3 change(s) refused"), "{message}");
    clusters.b.faults().deny_writes(None);
    nothing_written(&clusters).await;
}

#[tokio::test]
async fn over_grpc_a_dry_run_answers_the_same_plan() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let mut request = grpc_request("reviews-canary", "reviews");
    request.dry_run = true;
    let answer = app
        .grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap()
        .into_inner();
    let status = answer.status.unwrap();
    assert_eq!(status.plan.len(), 3, "{:?}", status.plan);
    assert!(status.plan.iter().all(|p| p.dry_run == "accepted"));
    assert!(status.plan_message.contains("nothing was written"));
    nothing_written(&clusters).await;
}

#[tokio::test]
async fn without_its_clusters_connected_a_dry_run_says_the_routing_was_not_planned() {
    // The service knows cluster-a only: cluster-b, the gray Deployment's,
    // is not connected.
    let clusters = clusters().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("cluster-a.kubeconfig");
    std::fs::write(&kubeconfig, clusters.a.kubeconfig("cluster-a")).unwrap();
    let only_a = format!(
        "[{{ id = \"cluster-a\", kubeconfig = \"{}\" }}]",
        kubeconfig.display()
    );
    let app = spawn_app_with(move |cli| cli.clusters = Some(only_a)).await;
    let answer = dry_run_create(&app, "reviews-canary").await;
    assert_eq!(
        planned(&answer),
        [(
            "cluster-b".to_owned(),
            "Deployment".to_owned(),
            String::new()
        )]
    );
    let message = answer["status"]["planMessage"].as_str().unwrap();
    assert!(
        message.starts_with("routing not planned: cluster cluster-b is not connected"),
        "{message}"
    );
    nothing_written(&clusters).await;
}

#[tokio::test]
async fn a_dry_run_patch_of_a_running_release_previews_the_routing_it_would_write() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    assert_eq!(
        app.create(&release_body("reviews-canary", "reviews"))
            .await
            .status(),
        200
    );
    crate::driver::until(
        &app,
        "reviews-canary",
        "Running",
        crate::driver::phase_is("Running"),
    )
    .await;
    let before = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "reviews")
        .await
        .expect("the release's VirtualService");
    let (status, answer) = json_of(
        app.http
            .patch(format!("{}?dryRun=true", app.release_url("reviews-canary")))
            .header("X-Auth-Token", TOKEN)
            .json(&serde_json::json!({"spec": {"trafficPolicy": {"weight": 30}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let plan = answer["status"]["plan"].as_array().unwrap();
    let routes = plan
        .iter()
        .find(|p| p["object"]["kind"] == "VirtualService")
        .unwrap_or_else(|| panic!("no VirtualService planned: {plan:?}"));
    assert_eq!(routes["dryRun"], "accepted");
    let weights: Vec<i64> = routes["object"]["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["route"].as_array().cloned().unwrap_or_default())
        .map(|d| d["weight"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        weights.contains(&30) && weights.contains(&70),
        "{weights:?}"
    );
    // Nothing changed: the cluster's object and the stored release.
    assert_eq!(
        clusters.a.get(VIRTUAL_SERVICES, "default", "reviews").await,
        Some(before)
    );
    let (_, stored) = json_of(app.get("reviews-canary").await).await;
    assert_eq!(stored["spec"]["trafficPolicy"]["weight"], 0);
}
