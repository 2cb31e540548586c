//! What a release may touch in the clusters: only what it created (its
//! `meshrelease.io/release-uid`) or what does not exist yet, besides the
//! owners' routing it edits and restores. A gray Deployment left serving
//! by an ended release is never adopted by the next one, whose cancel then
//! deletes nothing of it; a later release's cancel puts back the route and
//! subset an ended release left; routing objects applied just before a
//! release are found on a fresh read, so no second VirtualService is ever
//! made for a host that has one.

use std::time::Duration;

use serde_json::{Value, json};
use simcluster::resources::{DEPLOYMENTS, DESTINATION_RULES, VIRTUAL_SERVICES};

use crate::driver::*;
use crate::helpers::*;

/// The original Deployment `reviews-v1` as a GitOps sync puts it back.
fn original(app: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": format!("{app}-v1"), "namespace": "default"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app, "version": "v1"}},
                                 "spec": {"containers": [{"name": app, "image": format!("{app}:1")}]}}}})
}

/// A release that ran to its end: `reviews-v1-v2` (in cluster-b) now
/// serves all of `reviews`, the original is deleted. Answers its uid.
async fn ended_release(app: &TestApp, clusters: &Clusters, name: &str) -> String {
    let (status, created) = json_of(app.create(&release_body(name, "reviews")).await).await;
    assert_eq!(status, 200, "{created}");
    until(app, name, "Running", phase_is("Running")).await;
    set_weight(app, name, 100).await;
    let (status, body) = json_of(app.delete(name, Some("end")).await).await;
    assert_eq!(status, 200, "{body}");
    until(app, name, "Ended", phase_is("Ended")).await;
    clusters.assert_ended_on_gray().await;
    created["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// The objects an ended release left serving, as the clusters hold them.
async fn serving(clusters: &Clusters) -> [Value; 3] {
    [
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .expect("the gray Deployment serving production"),
        clusters
            .a
            .get(VIRTUAL_SERVICES, "default", "reviews")
            .await
            .expect("the VirtualService"),
        clusters
            .a
            .get(DESTINATION_RULES, "default", "reviews")
            .await
            .expect("the DestinationRule"),
    ]
}

fn condition<'r>(release: &'r Value, kind: &str) -> &'r Value {
    release["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition: {release}"))
}

/// What a second release of the same manifest must leave: the serving
/// objects exactly as they were (not one write), and a release that failed
/// saying whose the gray Deployment is.
async fn assert_untouched(clusters: &Clusters, before: &[Value; 3], first_uid: &str) {
    let after = serving(clusters).await;
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(
            is["metadata"]["resourceVersion"], was["metadata"]["resourceVersion"],
            "{} {} was written: {is}",
            was["kind"], was["metadata"]["name"]
        );
        assert_eq!(is["metadata"]["uid"], was["metadata"]["uid"]);
    }
    assert_eq!(
        after[0]["metadata"]["annotations"]["meshrelease.io/release-uid"], first_uid,
        "still the first release's"
    );
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v2".to_owned(), 100)],
        "production stays on the version the first release ended on"
    );
}

fn assert_refused_as_not_owned(release: &Value, first_uid: &str) {
    assert_eq!(release["status"]["phase"], "Failed", "{release}");
    let failed = condition(release, "Failed");
    assert_eq!(failed["reason"], "NotOwned", "{release}");
    let message = failed["message"].as_str().unwrap();
    for needle in ["reviews-v1-v2", "cluster-b", first_uid] {
        assert!(message.contains(needle), "{needle} not in {message:?}");
    }
}

#[tokio::test]
async fn a_release_never_takes_over_the_gray_deployment_an_ended_release_left_serving() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let first_uid = ended_release(&app, &clusters, "first-release").await;
    let before = serving(&clusters).await;

    // A GitOps sync puts the original back, and the same manifest makes a
    // new release whose gray Deployment has the same name.
    clusters.a.put(DEPLOYMENTS, original("reviews")).await;
    let (status, body) =
        json_of(app.create(&release_body("second-release", "reviews")).await).await;
    assert_eq!(status, 200, "{body}");
    let failed = until(&app, "second-release", "Failed", phase_is("Failed")).await;
    assert_refused_as_not_owned(&failed, &first_uid);
    assert_untouched(&clusters, &before, &first_uid).await;

    // Its cancel deletes nothing that is not its own.
    let (status, body) = json_of(app.delete("second-release", Some("cancel")).await).await;
    assert_eq!(status, 200, "{body}");
    let canceled = until(&app, "second-release", "Canceled", phase_is("Canceled")).await;
    assert_untouched(&clusters, &before, &first_uid).await;
    let gray = condition(&canceled, "GrayReady");
    assert_eq!(gray["status"], "False", "{canceled}");
    assert_eq!(gray["reason"], "NotOwned", "{canceled}");
    assert!(
        canceled["status"]["grayDeployments"][0]["status"].is_null(),
        "another release's replicas are not shown as this one's: {canceled}"
    );
    assert!(
        clusters
            .a
            .get(DEPLOYMENTS, "default", "reviews-v1")
            .await
            .is_some(),
        "the original the sync put back stays"
    );
}

#[tokio::test]
async fn over_grpc_a_release_never_takes_over_the_gray_deployment_an_ended_release_left_serving() {
    use meshrelease::pb::asm::v2 as pb;

    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let first_uid = ended_release(&app, &clusters, "first-release").await;
    let before = serving(&clusters).await;
    clusters.a.put(DEPLOYMENTS, original("reviews")).await;

    let mut client = app.grpc().await;
    client
        .create_release(authed(grpc_request("second-release", "reviews")))
        .await
        .unwrap();
    let failed = until(&app, "second-release", "Failed", phase_is("Failed")).await;
    assert_refused_as_not_owned(&failed, &first_uid);
    let got = client
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "second-release".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let failed = got
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Failed")
        .expect("a Failed condition over gRPC");
    assert_eq!(failed.reason, "NotOwned");
    client
        .delete_release(authed(pb::DeleteReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "second-release".into(),
            action: "cancel".into(),
        }))
        .await
        .unwrap();
    until(&app, "second-release", "Canceled", phase_is("Canceled")).await;
    assert_untouched(&clusters, &before, &first_uid).await;
}

#[tokio::test]
async fn a_later_release_canceled_puts_back_the_route_and_subset_an_ended_release_left() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let first_uid = ended_release(&app, &clusters, "first-release").await;
    let [gray_before, vs_before, dr_before] = serving(&clusters).await;

    // The next release, to v3 from the original a sync put back: it edits
    // the routing the first one left, then is canceled.
    clusters.a.put(DEPLOYMENTS, original("reviews")).await;
    let mut body = release_body("third-release", "reviews");
    body["spec"]["version"] = json!("v3");
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    until(&app, "third-release", "Running", phase_is("Running")).await;
    let dr = clusters
        .a
        .get(DESTINATION_RULES, "default", "reviews")
        .await
        .unwrap();
    let subsets: Vec<&str> = dr["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        subsets.contains(&"v2") && subsets.contains(&"v3"),
        "{subsets:?}"
    );
    let (status, answer) = json_of(app.delete("third-release", Some("cancel")).await).await;
    assert_eq!(status, 200, "{answer}");
    until(&app, "third-release", "Canceled", phase_is("Canceled")).await;

    // The first release's route and subset are back exactly, and its gray
    // Deployment (serving production) was never written.
    let [gray_after, vs_after, dr_after] = serving(&clusters).await;
    for (before, after) in [(&vs_before, &vs_after), (&dr_before, &dr_after)] {
        assert_eq!(after["spec"], before["spec"]);
        assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
        assert_eq!(
            after["metadata"]["annotations"],
            before["metadata"]["annotations"]
        );
    }
    assert_eq!(
        gray_after["metadata"]["resourceVersion"],
        gray_before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        gray_after["metadata"]["annotations"]["meshrelease.io/release-uid"],
        first_uid
    );
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v3")
            .await
            .is_none(),
        "its own gray Deployment is deleted"
    );
}

/// Every VirtualService and DestinationRule in cluster-a that names `host`.
async fn routing_for(clusters: &Clusters, host: &str) -> (Vec<String>, Vec<String>) {
    let store = clusters.a.sim.store.lock().await;
    let names = |resource, field: &str| -> Vec<String> {
        store
            .list(resource, Some("default"))
            .into_iter()
            .filter(|o| {
                let hosts = &o["spec"][field];
                let named = |h: &Value| {
                    h.as_str()
                        .is_some_and(|h| h == host || h.starts_with(&format!("{host}.")))
                };
                match hosts.as_array() {
                    Some(hosts) => hosts.iter().any(named),
                    None => named(hosts),
                }
            })
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    (
        names(VIRTUAL_SERVICES, "hosts"),
        names(DESTINATION_RULES, "host"),
    )
}

#[tokio::test]
async fn routing_objects_applied_just_before_a_release_are_never_doubled_nor_left_behind() {
    let clusters = clusters().await;
    // Releases of other services in the namespace keep its lists of
    // routing objects warm: a decision taken on such a list would not see
    // an object applied a moment before.
    for warm in ["warm0", "warm1"] {
        clusters.a.put_original(warm, 1).await;
    }
    let app = app_resyncing(&clusters, "", 50).await;
    for warm in ["warm0", "warm1"] {
        app.create(&release_body(&format!("{warm}-release"), warm))
            .await;
    }
    let services: Vec<String> = (0..8).map(|i| format!("fresh{i}")).collect();
    for (i, service) in services.iter().enumerate() {
        clusters.a.put_original(service, 1).await;
        // A pipeline applies the routing, then creates the release 0 to
        // 100 ms later; the VirtualService names its host in full.
        clusters
            .a
            .put(
                VIRTUAL_SERVICES,
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                       "metadata": {"name": format!("{service}-routes"), "namespace": "default"},
                       "spec": {"hosts": [format!("{service}.default.svc.cluster.local")],
                                "http": [{"route": [{"destination": {"host": format!("{service}.default.svc.cluster.local")}}]}]}}),
            )
            .await;
        clusters
            .a
            .put(
                DESTINATION_RULES,
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                       "metadata": {"name": format!("{service}-dr"), "namespace": "default"},
                       "spec": {"host": format!("{service}.default.svc.cluster.local")}}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis((i as u64 * 37) % 100)).await;
        let (status, body) = json_of(
            app.create(&release_body(&format!("{service}-release"), service))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for service in &services {
        let name = format!("{service}-release");
        let running = until(&app, &name, "Running or Failed", |r| {
            r["status"]["phase"] == "Running" || r["status"]["phase"] == "Failed"
        })
        .await;
        assert_eq!(running["status"]["phase"], "Running", "{running}");
        assert_eq!(
            routing_for(&clusters, service).await,
            (
                vec![format!("{service}-routes")],
                vec![format!("{service}-dr")]
            ),
            "one VirtualService and one DestinationRule for the host, the owners'"
        );
        let (status, body) = json_of(app.delete(&name, Some("cancel")).await).await;
        assert_eq!(status, 200, "{body}");
    }
    for service in &services {
        until(
            &app,
            &format!("{service}-release"),
            "Canceled",
            phase_is("Canceled"),
        )
        .await;
        assert_eq!(
            routing_for(&clusters, service).await,
            (
                vec![format!("{service}-routes")],
                vec![format!("{service}-dr")]
            ),
            "nothing of the release's left behind"
        );
    }
}

#[tokio::test]
async fn a_routing_object_that_appears_beside_the_releases_own_fails_it_and_its_own_goes() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("raced-routing", "reviews")).await;
    until(&app, "raced-routing", "Running", phase_is("Running")).await;
    assert_eq!(
        routing_for(&clusters, "reviews").await.0,
        vec!["reviews".to_owned()],
        "the release made the host's VirtualService"
    );
    // The owners apply their own after all.
    let applied = clusters
        .a
        .put(
            VIRTUAL_SERVICES,
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                   "metadata": {"name": "reviews-routes", "namespace": "default"},
                   "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}),
        )
        .await;
    let failed = until(&app, "raced-routing", "Failed", phase_is("Failed")).await;
    assert_eq!(condition(&failed, "Failed")["reason"], "AmbiguousRouting");
    let message = condition(&failed, "Failed")["message"].as_str().unwrap();
    assert!(message.contains("reviews-routes"), "{message}");
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "deleted", |vs| {
        vs.is_none()
    })
    .await;
    let (status, body) = json_of(app.delete("raced-routing", Some("cancel")).await).await;
    assert_eq!(status, 200, "{body}");
    until(&app, "raced-routing", "Canceled", phase_is("Canceled")).await;
    assert_eq!(
        routing_for(&clusters, "reviews").await,
        (vec!["reviews-routes".to_owned()], vec![]),
        "only the owners' object is left"
    );
    let owners = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "reviews-routes")
        .await
        .unwrap();
    assert_eq!(
        owners["metadata"]["resourceVersion"], applied["metadata"]["resourceVersion"],
        "the owners' object was never written"
    );
    assert!(
        owners["metadata"]["annotations"]["meshrelease.io/release-uid"].is_null(),
        "never marked as the release's: {owners}"
    );
}
