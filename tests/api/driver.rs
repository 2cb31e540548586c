//! The cluster driver against two simulated clusters over real HTTP, through
//! kube-rs, exactly as it would reach real ones: a canary from create to
//! Running, weight 30, a header rule, take-over and end; a cancel that puts
//! the owners' routing back byte for byte; a gray version never ready; a
//! cluster that goes away and comes back; another field manager owning our
//! fields; a watch-driven wake-up; lost races and a conflict storm; and the
//! same over gRPC.

use std::time::Duration;

use serde_json::{Value, json};
use simcluster::resources::{DEPLOYMENTS, DESTINATION_RULES, VIRTUAL_SERVICES};
use simcluster::{Config, SimCluster};

use crate::helpers::*;

pub struct Clusters {
    pub a: SimCluster,
    pub b: SimCluster,
    dir: tempfile::TempDir,
    flag: String,
}

impl Clusters {
    /// `--clusters` for a service whose kubeconfigs carry the bearer token
    /// `who` (the simulator logs who sent each request).
    pub fn flag_for(&self, who: &str) -> String {
        let mut flag = String::from("[");
        for (id, cluster) in [("cluster-a", &self.a), ("cluster-b", &self.b)] {
            let path = self.dir.path().join(format!("{id}-{who}.kubeconfig"));
            std::fs::write(&path, cluster.kubeconfig_with_token(id, Some(who))).unwrap();
            flag.push_str(&format!(
                "{{ id = \"{id}\", kubeconfig = \"{}\" }},",
                path.display()
            ));
        }
        flag.push(']');
        flag
    }

    /// The routes of the `reviews` VirtualService in cluster-a, as
    /// (subset, weight).
    pub async fn reviews_routes(&self) -> Vec<(String, i64)> {
        let vs = self
            .a
            .get(VIRTUAL_SERVICES, "default", "reviews")
            .await
            .expect("the reviews VirtualService");
        routes(&vs)
    }

    /// What an end leaves: the original Deployment deleted, all of the
    /// `reviews` traffic on the gray version.
    pub async fn assert_ended_on_gray(&self) {
        assert!(
            self.a
                .get(DEPLOYMENTS, "default", "reviews-v1")
                .await
                .is_none(),
            "the original is deleted"
        );
        assert_eq!(self.reviews_routes().await, vec![("v2".to_owned(), 100)]);
    }

    /// Writes sent with the bearer token `who`, at both clusters.
    pub fn writes_by(&self, who: &str) -> usize {
        self.a.sim.requests.writes_by(who) + self.b.sim.requests.writes_by(who)
    }

    /// Requests for the objects of a namespace (reads and writes: what
    /// driving a release takes) sent with the bearer token `who`, at both
    /// clusters. The watch of the managed Deployments (cluster-wide, kept by
    /// every replica) is not among them.
    pub fn driving_requests_by(&self, who: &str) -> usize {
        [&self.a, &self.b]
            .iter()
            .flat_map(|c| c.sim.requests.by(who))
            .filter(|seen| seen.path.contains("/namespaces/"))
            .count()
    }
}

/// cluster-a holds the original Deployment and the Service (and the Istio
/// objects), cluster-b the gray Deployment.
pub async fn clusters() -> Clusters {
    let config = Config {
        ready_delay: Duration::from_millis(50),
        ..Config::default()
    };
    let a = SimCluster::start(config.clone()).await.unwrap();
    let b = SimCluster::start(config).await.unwrap();
    for service in ["reviews", "ratings"] {
        a.put_original(service, 2).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut flag = String::from("[");
    for (id, cluster) in [("cluster-a", &a), ("cluster-b", &b)] {
        let path = dir.path().join(format!("{id}.kubeconfig"));
        std::fs::write(&path, cluster.kubeconfig(id)).unwrap();
        flag.push_str(&format!(
            "{{ id = \"{id}\", kubeconfig = \"{}\" }},",
            path.display()
        ));
    }
    flag.push(']');
    Clusters { a, b, dir, flag }
}

pub async fn app_for(clusters: &Clusters) -> TestApp {
    app_with(clusters, "").await
}

/// With more keys for demo-mesh (`original_on_end = "scale-to-zero"`, say).
pub async fn app_with(clusters: &Clusters, mesh_keys: &str) -> TestApp {
    app_resyncing(clusters, mesh_keys, 100).await
}

pub async fn app_resyncing(clusters: &Clusters, mesh_keys: &str, resync_ms: u64) -> TestApp {
    let flag = clusters.flag.clone();
    let meshes =
        format!(r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"]{mesh_keys} }}]"#);
    spawn_app_with(move |cli| {
        cli.clusters = Some(flag);
        cli.resync_interval_ms = Some(resync_ms);
        cli.meshes = Some(meshes);
    })
    .await
}

/// Stops the service (as on SIGTERM) and starts another on its data.
pub async fn restart(app: TestApp, clusters: &Clusters) -> TestApp {
    let flag = clusters.flag.clone();
    app.restart(move |cli| {
        cli.clusters = Some(flag);
        cli.resync_interval_ms = Some(100);
    })
    .await
}

/// Waits (bounded) until `check` holds for the release as read over REST.
pub async fn until(app: &TestApp, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, release) = json_of(app.get(name).await).await;
        if check(&release) {
            return release;
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {what}; last seen: {last}");
}

pub async fn until_object(
    cluster: &SimCluster,
    kind: simcluster::resources::Resource,
    name: &str,
    what: &str,
    check: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    for _ in 0..300 {
        let object = cluster.get(kind, "default", name).await;
        if check(object.as_ref()) {
            return object;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} {name} never reached {what}: {:?}",
        kind.kind,
        cluster.get(kind, "default", name).await
    );
}

pub fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["status"]["phase"] == phase
}

/// Asks for `weight` over REST (PATCH) and waits until the clusters hold it.
pub async fn set_weight(app: &TestApp, name: &str, weight: i64) {
    let (status, body) = json_of(
        app.patch(
            name,
            &json!({"spec": {"trafficPolicy": {"weight": weight}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until(
        app,
        name,
        &format!("weight {weight} applied"),
        traffic_is(weight),
    )
    .await;
}

/// The release's applied traffic is this weight.
pub fn traffic_is(weight: i64) -> impl Fn(&Value) -> bool {
    move |r| r["status"]["traffic"] == json!({ "weight": weight })
}

/// The message of the release's `Failed` condition.
pub fn failed_message(release: &Value) -> String {
    release["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no Failed condition: {release}"))
        .to_owned()
}

pub fn split(v1: i64, v2: i64) -> Vec<(String, i64)> {
    vec![("v1".to_owned(), v1), ("v2".to_owned(), v2)]
}

pub fn routes(vs: &Value) -> Vec<(String, i64)> {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"]["subset"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["weight"].as_i64().unwrap_or(100),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_canary_runs_moves_traffic_and_ends() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let (status, created) = json_of(app.create(&release_body("drive-me", "reviews")).await).await;
    assert_eq!(status, 200, "{created}");
    let running = until(&app, "drive-me", "Running", phase_is("Running")).await;
    assert_eq!(running["status"]["traffic"], json!({"weight": 0}));
    assert_eq!(running["status"]["observedGeneration"], 1);
    let gray = clusters
        .b
        .get(DEPLOYMENTS, "default", "reviews-v1-v2")
        .await
        .expect("the gray Deployment");
    assert_eq!(
        gray["metadata"]["managedFields"][0]["manager"],
        "meshrelease"
    );
    assert_eq!(
        gray["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshrelease"
    );
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v1".to_owned(), 100)]
    );
    let dr = clusters
        .a
        .get(DESTINATION_RULES, "default", "reviews")
        .await
        .expect("a DestinationRule");
    assert_eq!(dr["spec"]["subsets"].as_array().unwrap().len(), 2);

    // Weight 30: the VirtualService splits 70/30.
    app.patch(
        "drive-me",
        &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
    )
    .await;
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "70/30", |vs| {
        vs.is_some_and(|vs| routes(vs) == split(70, 30))
    })
    .await;
    until(&app, "drive-me", "traffic 30 applied", traffic_is(30)).await;

    // A header rule: a gray route in front, the rest to v1.
    app.patch(
        "drive-me",
        &json!({"spec": {"trafficPolicy": {"match": [{"headers": [{"name": "x-user", "exact": "alice"}]}]}}}),
    )
    .await;
    let vs = until_object(
        &clusters.a,
        VIRTUAL_SERVICES,
        "reviews",
        "a header route",
        |vs| vs.is_some_and(|vs| vs["spec"]["http"].as_array().is_some_and(|h| h.len() == 2)),
    )
    .await
    .unwrap();
    assert_eq!(
        vs["spec"]["http"][0]["match"][0]["headers"]["x-user"]["exact"],
        "alice"
    );
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["subset"],
        "v2"
    );

    // Take over, then end: the original goes.
    set_weight(&app, "drive-me", 100).await;
    let (status, ending) = json_of(app.delete("drive-me", Some("end")).await).await;
    assert_eq!(status, 200, "{ending}");
    until(&app, "drive-me", "Ended", phase_is("Ended")).await;
    clusters.assert_ended_on_gray().await;
}

#[tokio::test]
async fn a_gray_deployment_becoming_ready_moves_the_release_at_once() {
    let clusters = clusters().await;
    // A resync far beyond the test's patience: only the watch on the
    // cluster's Deployments can tell the driver the gray one is ready.
    let app = app_resyncing(&clusters, "", 600_000).await;
    app.create(&release_body("watched", "reviews")).await;
    until(&app, "watched", "Running", phase_is("Running")).await;

    let text = app.text_of("/metrics").await;
    for series in [
        r#"meshrelease_reconciles_total{result="done"}"#,
        r#"meshrelease_cluster_requests_total{cluster="cluster-b",verb="apply",code="200"}"#,
        r#"meshrelease_cluster_requests_total{cluster="cluster-a",verb="list",code="200"}"#,
        "meshrelease_release_time_to_running_seconds_count 1",
        "meshrelease_reconcile_queue_depth ",
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
}

/// Requests (any method) at both clusters whose path names `needle`.
fn requests_naming(clusters: &Clusters, needle: &str) -> usize {
    [&clusters.a, &clusters.b]
        .iter()
        .flat_map(|c| c.sim.requests.all())
        .filter(|seen| seen.path.contains(needle))
        .count()
}

#[tokio::test]
async fn a_settled_release_costs_no_cluster_requests_while_another_moves() {
    let clusters = clusters().await;
    // No resync within the test: only what each change concerns is looked at.
    let app = app_resyncing(&clusters, "", 600_000).await;
    app.create(&release_body("settled", "reviews")).await;
    until(&app, "settled", "Running", phase_is("Running")).await;
    // Settled: no more requests for its objects.
    let mut before = requests_naming(&clusters, "reviews");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = requests_naming(&clusters, "reviews");
        if now == before {
            break;
        }
        before = now;
    }

    app.create(&release_body("moving", "ratings")).await;
    until(&app, "moving", "Running", phase_is("Running")).await;
    set_weight(&app, "moving", 30).await;
    assert!(requests_naming(&clusters, "ratings") > 0);
    assert_eq!(
        requests_naming(&clusters, "reviews"),
        before,
        "the settled release's objects were read or written while another release moved"
    );
}

/// GETs of a namespace's VirtualServices (lists, not one by name).
fn virtual_service_lists(clusters: &Clusters) -> usize {
    [&clusters.a, &clusters.b]
        .iter()
        .flat_map(|c| c.sim.requests.all())
        .filter(|seen| seen.method == "GET" && seen.path.ends_with("/virtualservices"))
        .count()
}

#[tokio::test]
async fn resyncs_of_many_releases_share_one_list_of_the_routing_objects() {
    let clusters = clusters().await;
    let services: Vec<String> = (0..8).map(|i| format!("svc{i}")).collect();
    for service in &services {
        clusters.a.put_original(service, 1).await;
    }
    // A resync every 100 ms: each looks at every release.
    let app = app_resyncing(&clusters, "", 100).await;
    for service in &services {
        let (status, body) = json_of(app.create(&release_body(service, service)).await).await;
        assert_eq!(status, 200, "{body}");
    }
    for service in &services {
        until(&app, service, "Running", phase_is("Running")).await;
    }
    let before = virtual_service_lists(&clusters);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lists = virtual_service_lists(&clusters) - before;
    // Some 15 rounds of 8 observations each; a list per observation would
    // be over a hundred. Reused for a second, it is read once or twice.
    assert!(
        lists <= 3,
        "{lists} lists of VirtualServices in 1.5 s of resyncs over 8 releases"
    );
}

#[tokio::test]
async fn a_lost_race_is_retried_on_a_fresh_read() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("raced", "reviews")).await;
    until(&app, "raced", "Running", phase_is("Running")).await;
    clusters.a.faults().conflict_next(3);
    set_weight(&app, "raced", 30).await;
    assert_eq!(clusters.reviews_routes().await, split(70, 30));
}

#[tokio::test]
async fn a_conflict_that_never_clears_fails_the_release_in_the_clusters_words() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("stormed", "reviews")).await;
    until(&app, "stormed", "Running", phase_is("Running")).await;
    clusters.a.faults().conflict_next(u32::MAX);
    app.patch(
        "stormed",
        &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
    )
    .await;
    let failed = until(&app, "stormed", "Failed", phase_is("Failed")).await;
    let message = failed_message(&failed);
    assert!(message.contains("did not clear after 8 tries"), "{message}");
    assert!(message.contains("cluster-a"), "{message}");
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v1".to_owned(), 100)],
        "nothing overwritten"
    );
}

#[tokio::test]
async fn an_end_can_scale_the_original_to_zero_instead() {
    let clusters = clusters().await;
    let app = app_with(
        &clusters,
        r#", original_on_end = "scale-to-zero", istio_api_version = "v1""#,
    )
    .await;
    app.create(&release_body("scale-me", "reviews")).await;
    until(&app, "scale-me", "Running", phase_is("Running")).await;
    let vs = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "reviews")
        .await
        .unwrap();
    assert_eq!(
        vs["metadata"]["managedFields"][0]["apiVersion"], "networking.istio.io/v1",
        "written in v1"
    );
    set_weight(&app, "scale-me", 100).await;
    app.delete("scale-me", Some("end")).await;
    until(&app, "scale-me", "Ended", phase_is("Ended")).await;
    let original = clusters
        .a
        .get(DEPLOYMENTS, "default", "reviews-v1")
        .await
        .expect("kept");
    assert_eq!(original["spec"]["replicas"], 0);
}

#[tokio::test]
async fn a_restarted_service_carries_on_where_it_stopped() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("restarted", "reviews")).await;
    // Stopped as soon as the release moves: the cluster work of the next
    // phase is left to the next process.
    until(&app, "restarted", "Deploying or later", |r| {
        r["status"]["phase"] != "Pending"
    })
    .await;
    let app = restart(app, &clusters).await;
    until(&app, "restarted", "Running", phase_is("Running")).await;
    set_weight(&app, "restarted", 100).await;
    app.delete("restarted", Some("end")).await;
    let app = restart(app, &clusters).await;
    until(&app, "restarted", "Ended", phase_is("Ended")).await;
    assert!(
        clusters
            .a
            .get(DEPLOYMENTS, "default", "reviews-v1")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_cancel_restores_the_owners_routing_byte_for_byte() {
    let clusters = clusters().await;
    let owners_vs = clusters
        .a
        .put(
            VIRTUAL_SERVICES,
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                   "metadata": {"name": "ratings-routes", "namespace": "default", "labels": {"team": "shop"}},
                   "spec": {"hosts": ["ratings"], "http": [
                       {"name": "legacy", "match": [{"uri": {"prefix": "/legacy"}}], "route": [{"destination": {"host": "details"}}]},
                       {"name": "default", "timeout": "3s", "route": [{"destination": {"host": "ratings"}}]}]}}),
        )
        .await;
    let owners_dr = clusters
        .a
        .put(
            DESTINATION_RULES,
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                   "metadata": {"name": "ratings", "namespace": "default"},
                   "spec": {"host": "ratings", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}),
        )
        .await;
    let app = app_for(&clusters).await;
    app.create(&release_body("cancel-me", "ratings")).await;
    until(&app, "cancel-me", "Running", phase_is("Running")).await;
    set_weight(&app, "cancel-me", 40).await;
    let during = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "ratings-routes")
        .await
        .unwrap();
    assert_eq!(
        during["spec"]["http"][0], owners_vs["spec"]["http"][0],
        "the route to another host is untouched"
    );
    set_weight(&app, "cancel-me", 0).await;
    let (status, _) = json_of(app.delete("cancel-me", Some("cancel")).await).await;
    assert_eq!(status, 200);
    until(&app, "cancel-me", "Canceled", phase_is("Canceled")).await;
    let vs = clusters
        .a
        .get(VIRTUAL_SERVICES, "default", "ratings-routes")
        .await
        .unwrap();
    let dr = clusters
        .a
        .get(DESTINATION_RULES, "default", "ratings")
        .await
        .unwrap();
    for (restored, owners) in [(&vs, &owners_vs), (&dr, &owners_dr)] {
        assert_eq!(restored["spec"], owners["spec"]);
        assert_eq!(restored["metadata"]["labels"], owners["metadata"]["labels"]);
        assert_eq!(
            restored["metadata"]["annotations"],
            owners["metadata"]["annotations"]
        );
    }
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "ratings-v1-v2")
            .await
            .is_none(),
        "the gray Deployment is gone"
    );
    assert!(
        clusters
            .a
            .get(DEPLOYMENTS, "default", "ratings-v1")
            .await
            .is_some(),
        "the original stays"
    );
}

#[tokio::test]
async fn a_gray_version_never_ready_fails_with_traffic_on_the_original() {
    let clusters = clusters().await;
    clusters.b.faults().set_never_ready(true);
    let app = app_for(&clusters).await;
    let mut body = release_body("never-ready", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["spec"]["progressDeadlineSeconds"] = json!(1);
    body["spec"]["trafficPolicy"] = json!({"weight": 50});
    app.create(&body).await;
    let failed = until(&app, "never-ready", "Failed", phase_is("Failed")).await;
    let conditions = failed["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "GrayReady" && c["reason"] == "ProgressDeadlineExceeded"),
        "{failed}"
    );
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v1".to_owned(), 100)],
        "no weight to a version that is not ready"
    );
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .is_some(),
        "kept for inspection"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_makes_the_release_wait_then_complete() {
    let mut clusters = clusters().await;
    clusters.b.pause().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("waiting", "reviews")).await;
    let waiting = until(&app, "waiting", "an Unreachable condition", |r| {
        r["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "ClustersReachable" && c["status"] == "False")
        })
    })
    .await;
    assert_eq!(waiting["status"]["phase"], "Pending");
    clusters.b.resume().await.unwrap();
    until(&app, "waiting", "Running", phase_is("Running")).await;

    // Mid-release: the cluster with the routing goes away while a traffic
    // change is asked for; the change waits for it, then lands.
    clusters.a.pause().await;
    app.patch(
        "waiting",
        &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
    )
    .await;
    until(&app, "waiting", "cluster-a reported unreachable", |r| {
        r["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "ClustersReachable"
                    && c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("cluster-a"))
            })
        })
    })
    .await;
    clusters.a.resume().await.unwrap();
    until(&app, "waiting", "traffic 30 applied", traffic_is(30)).await;
    assert_eq!(clusters.reviews_routes().await, split(70, 30));
}

#[tokio::test]
async fn another_field_manager_owning_our_fields_fails_the_release_clearly() {
    let clusters = clusters().await;
    // Someone else already applies a Deployment of the gray name, with a
    // different image.
    let http = http_client();
    let response = http
        .patch(format!("{}/apis/apps/v1/namespaces/default/deployments/reviews-v1-v2?fieldManager=someone-else", clusters.b.url()))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1-v2"},
                     "spec": {"replicas": 7}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let app = app_for(&clusters).await;
    app.create(&release_body("contested", "reviews")).await;
    let failed = until(&app, "contested", "Failed", phase_is("Failed")).await;
    let message = failed_message(&failed);
    assert!(message.contains("someone-else"), "{message}");
    let gray = clusters
        .b
        .get(DEPLOYMENTS, "default", "reviews-v1-v2")
        .await
        .unwrap();
    assert_eq!(gray["spec"]["replicas"], 7, "nothing overwritten");
}

#[tokio::test]
async fn a_mesh_cluster_without_a_connection_is_recorded_only_and_says_so() {
    let app = spawn_app().await;
    app.create(&release_body("unconnected", "reviews")).await;
    let release = until(&app, "unconnected", "a NotConnected condition", |r| {
        r["status"]["conditions"][0]["reason"] == "NotConnected"
    })
    .await;
    assert_eq!(release["status"]["phase"], "Pending");
}

/// Over gRPC, as internal services drive it: a watch sees the release reach
/// Running, PatchRelease moves traffic, DeleteRelease cancels.
#[tokio::test]
async fn over_grpc_a_watched_canary_runs_moves_traffic_and_cancels() {
    use meshrelease::pb::asm::v2 as pb;
    use meshrelease::pb::wkt::FieldMask;
    use tokio_stream::StreamExt as _;

    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let mut client = app.grpc().await;
    let mut events = client
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            resource_version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    client
        .create_release(authed(grpc_request("grpc-driven", "reviews")))
        .await
        .unwrap();
    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("Running") {
        let event = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("a Running release within 15 s")
            .expect("the stream ended")
            .unwrap();
        let phase = event.release.unwrap().status.unwrap().phase;
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
    }
    assert_eq!(phases, ["Pending", "Deploying", "Running"]);

    let weight = |weight: i32| {
        authed(pb::PatchReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "grpc-driven".into(),
            release: Some(pb::Release {
                spec: Some(pb::ReleaseSpec {
                    traffic_policy: Some(pb::TrafficPolicy {
                        weight: Some(weight),
                        r#match: vec![],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["spec.traffic_policy.weight".into()],
            }),
            dry_run: false,
        })
    };
    let patched = client.patch_release(weight(30)).await.unwrap().into_inner();
    assert_eq!(
        patched.spec.unwrap().traffic_policy.unwrap().weight,
        Some(30)
    );
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "70/30", |vs| {
        vs.is_some_and(|vs| routes(vs) == split(70, 30))
    })
    .await;

    // A cancel needs all traffic back on the original first.
    client.patch_release(weight(0)).await.unwrap();
    until(&app, "grpc-driven", "weight 0 applied", traffic_is(0)).await;
    client
        .delete_release(authed(pb::DeleteReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "grpc-driven".into(),
            action: "cancel".into(),
        }))
        .await
        .unwrap();
    until(&app, "grpc-driven", "Canceled", phase_is("Canceled")).await;
    // There was no VirtualService before the release made one: it goes.
    until_object(&clusters.a, VIRTUAL_SERVICES, "reviews", "gone", |vs| {
        vs.is_none()
    })
    .await;
    assert!(
        clusters
            .b
            .get(DEPLOYMENTS, "default", "reviews-v1-v2")
            .await
            .is_none(),
        "the gray Deployment is gone"
    );
}
