//! A finished release's status says what the clusters hold: after a cancel
//! the gray Deployments are shown deleted (never "2/2 ready") and the
//! routing restored; after an end the original is shown deleted, or scaled
//! to zero; every condition is final and true, checked against the
//! simulated clusters.

use serde_json::{Value, json};
use simcluster::resources::DEPLOYMENTS;

use crate::driver::*;
use crate::helpers::*;

fn condition<'r>(release: &'r Value, kind: &str) -> &'r Value {
    release["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition: {release}"))
}

fn assert_condition(release: &Value, kind: &str, status: &str, reason: &str) {
    let c = condition(release, kind);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some(status), Some(reason)),
        "{kind}: {release}"
    );
}

#[tokio::test]
async fn a_canceled_release_shows_its_gray_deployments_deleted_and_its_routing_restored() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("canceled-status", "reviews"))
        .await;
    let running = until(&app, "canceled-status", "Running", phase_is("Running")).await;
    assert_eq!(
        running["status"]["grayDeployments"][0]["status"]["readyReplicas"], 2,
        "{running}"
    );
    // Traffic moved, then asked back, and the cancel sent at once: the
    // routing is still being changed when the cancel lands.
    set_weight(&app, "canceled-status", 30).await;
    app.patch(
        "canceled-status",
        &json!({"spec": {"trafficPolicy": {"weight": 0}}}),
    )
    .await;
    let (status, body) = json_of(app.delete("canceled-status", Some("cancel")).await).await;
    assert_eq!(status, 200, "{body}");
    let canceled = until(&app, "canceled-status", "Canceled", phase_is("Canceled")).await;

    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .is_none(),
        "the gray Deployment is gone from its cluster"
    );
    let gray = &canceled["status"]["grayDeployments"][0];
    assert!(
        gray["status"].is_null(),
        "no replicas of a deleted Deployment: {gray}"
    );
    assert!(
        gray["metadata"]["deletionTimestamp"].is_string(),
        "shown deleted: {gray}"
    );
    assert_condition(&canceled, "GrayReady", "False", "Deleted");
    assert_condition(&canceled, "TrafficApplied", "True", "Restored");
    assert_condition(&canceled, "ClustersReachable", "True", "Reachable");
    assert_eq!(canceled["status"]["traffic"], json!({"weight": 0}));
    assert!(
        clusters
            .a
            .get(DEPLOYMENTS, "default", "reviews-v1")
            .await
            .is_some_and(|o| o["spec"]["replicas"] == 2),
        "the original stays as it was"
    );
}

#[tokio::test]
async fn an_ended_release_shows_the_original_deleted_and_the_gray_version_serving() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("ended-status", "reviews")).await;
    until(&app, "ended-status", "Running", phase_is("Running")).await;
    set_weight(&app, "ended-status", 100).await;
    app.delete("ended-status", Some("end")).await;
    let ended = until(&app, "ended-status", "Ended", phase_is("Ended")).await;

    assert!(
        clusters
            .a
            .get(DEPLOYMENTS, "default", "reviews-v1")
            .await
            .is_none(),
        "the cluster no longer has the original"
    );
    let original = &ended["status"]["deployment"];
    assert!(
        original["metadata"]["deletionTimestamp"].is_string(),
        "shown deleted: {original}"
    );
    assert!(original["status"].is_null(), "no replicas: {original}");
    let applied = condition(&ended, "TrafficApplied");
    assert_eq!(applied["status"], "True", "{ended}");
    assert!(
        applied["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"reviews-v1\" is deleted")),
        "{ended}"
    );
    // The gray version serves, and is shown as the cluster has it.
    assert_condition(&ended, "GrayReady", "True", "Ready");
    let gray = &ended["status"]["grayDeployments"][0];
    assert_eq!(gray["status"]["readyReplicas"], 2, "{gray}");
    assert!(gray["metadata"]["deletionTimestamp"].is_null(), "{gray}");
    assert_eq!(ended["status"]["traffic"], json!({"weight": 100}));
}

#[tokio::test]
async fn an_ended_release_that_scales_the_original_to_zero_shows_it_so() {
    let clusters = clusters().await;
    let app = app_with(&clusters, r#", original_on_end = "scale-to-zero""#).await;
    app.create(&release_body("scaled-status", "reviews")).await;
    until(&app, "scaled-status", "Running", phase_is("Running")).await;
    set_weight(&app, "scaled-status", 100).await;
    app.delete("scaled-status", Some("end")).await;
    let ended = until(&app, "scaled-status", "Ended", phase_is("Ended")).await;
    let kept = clusters
        .a
        .get(DEPLOYMENTS, "default", "reviews-v1")
        .await
        .expect("kept");
    assert_eq!(kept["spec"]["replicas"], 0);
    let original = &ended["status"]["deployment"];
    assert_eq!(original["spec"]["replicas"], 0, "{original}");
    assert!(original["metadata"]["deletionTimestamp"].is_null());
    assert!(
        condition(&ended, "TrafficApplied")["message"]
            .as_str()
            .is_some_and(|m| m.contains("scaled to 0")),
        "{ended}"
    );
}
