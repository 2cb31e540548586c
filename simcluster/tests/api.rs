//! The simulated cluster over real HTTP, as a Kubernetes client sees it.

use std::time::Duration;

use serde_json::{Value, json};
use simcluster::{Config, SimCluster};

async fn cluster() -> SimCluster {
    SimCluster::start(Config {
        ready_delay: Duration::from_millis(50),
        ..Config::default()
    })
    .await
    .unwrap()
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "reviews", "version": "v1"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "reviews"}},
                 "template": {"metadata": {"labels": {"app": "reviews", "version": "v1"}},
                              "spec": {"containers": [{"name": "reviews", "image": "reviews:1"}]}}}
    })
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(cluster: &SimCluster) -> Self {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: cluster.url(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A watch's whole stream, as text (it ends at its `timeoutSeconds`).
    async fn watched(&self, path_and_query: &str) -> String {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .patch(format!("{}{path}", self.base))
                .header("Content-Type", content_type)
                .body(body.to_string()),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}

#[tokio::test]
async fn discovery_lists_the_served_groups_and_resources() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let (status, groups) = c.get("/apis").await;
    assert_eq!(status, 200);
    let istio = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "networking.istio.io")
        .expect("the Istio group");
    let versions: Vec<&str> = istio["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, vec!["v1", "v1beta1"]);
    let (_, apps) = c.get("/apis/apps/v1").await;
    let names: Vec<&str> = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["deployments", "deployments/status"]);
    let (_, core) = c.get("/api/v1").await;
    assert_eq!(core["resources"][0]["name"], "services");
}

#[tokio::test]
async fn create_get_list_replace_patch_delete() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let (status, created) = c.post(DEPLOYMENTS, &deployment("reviews-v1", 2)).await;
    assert_eq!(status, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].is_string());
    let (status, again) = c.post(DEPLOYMENTS, &deployment("reviews-v1", 2)).await;
    assert_eq!(
        (status, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    c.post(DEPLOYMENTS, &{
        let mut d = deployment("other", 1);
        d["metadata"]["labels"] = json!({"app": "ratings"});
        d
    })
    .await;
    let (_, list) = c
        .get(&format!("{DEPLOYMENTS}?labelSelector=app%3Dreviews"))
        .await;
    assert_eq!(list["kind"], "DeploymentList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, all) = c.get("/apis/apps/v1/deployments").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);

    // Replace: with the current resourceVersion, then with a stale one.
    let mut changed = created.clone();
    changed["spec"]["replicas"] = json!(4);
    let (status, replaced) = c.put(&format!("{DEPLOYMENTS}/reviews-v1"), &changed).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_ne!(replaced["metadata"]["resourceVersion"], rv.as_str());
    let (status, stale) = c.put(&format!("{DEPLOYMENTS}/reviews-v1"), &changed).await;
    assert_eq!(status, 409);
    assert_eq!(stale["kind"], "Status");
    assert_eq!(stale["reason"], "Conflict");
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("has been modified")
    );

    let (status, merged) = c
        .patch(
            &format!("{DEPLOYMENTS}/reviews-v1"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"team": "shop"}}}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["metadata"]["labels"]["team"], "shop");
    assert_eq!(merged["metadata"]["labels"]["app"], "reviews");
    let (status, patched) = c
        .patch(
            &format!("{DEPLOYMENTS}/reviews-v1"),
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 1}]),
        )
        .await;
    assert_eq!((status, &patched["spec"]["replicas"]), (200, &json!(1)));
    let (status, _) = c
        .patch(
            &format!("{DEPLOYMENTS}/reviews-v1"),
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        )
        .await;
    assert_eq!(status, 422, "a failed test op changes nothing");

    let (status, _) = c.delete(&format!("{DEPLOYMENTS}/reviews-v1")).await;
    assert_eq!(status, 200);
    let (status, gone) = c.get(&format!("{DEPLOYMENTS}/reviews-v1")).await;
    assert_eq!((status, gone["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(gone["code"], 404);
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_refuses_to_take_others_without_force() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let path = format!("{DEPLOYMENTS}/reviews-v1");
    let apply = |manager: &str, force: bool| {
        format!(
            "{path}?fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        )
    };
    let (status, created) = c
        .patch(
            &apply("meshrelease", false),
            "application/apply-patch+yaml",
            &deployment("reviews-v1", 2),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let managers = &created["metadata"]["managedFields"];
    assert_eq!(managers[0]["manager"], "meshrelease");
    assert_eq!(managers[0]["operation"], "Apply");
    assert!(managers[0]["fieldsV1"]["f:spec"]["f:replicas"].is_object());

    // Another manager changing a field we own: a conflict naming us.
    let mut theirs = deployment("reviews-v1", 5);
    theirs["metadata"]["labels"] = json!({});
    let (status, conflict) = c
        .patch(&apply("hpa", false), "application/apply-patch+yaml", &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"}, "spec": {"replicas": 5}}))
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"meshrelease\""),
        "{conflict}"
    );
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains(".spec.replicas")
    );
    // The same value is no conflict: both own it.
    let (status, _) = c
        .patch(&apply("hpa", false), "application/apply-patch+yaml", &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"}, "spec": {"replicas": 2}}))
        .await;
    assert_eq!(status, 200);
    // Forced: the field moves to the forcing manager.
    let (status, forced) = c
        .patch(&apply("hpa", true), "application/apply-patch+yaml", &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"}, "spec": {"replicas": 7}}))
        .await;
    assert_eq!((status, &forced["spec"]["replicas"]), (200, &json!(7)));
    // Our next apply without force now conflicts on replicas.
    let (status, _) = c
        .patch(
            &apply("meshrelease", false),
            "application/apply-patch+yaml",
            &deployment("reviews-v1", 2),
        )
        .await;
    assert_eq!(status, 409);
    // Applying without the field leaves it to its owner.
    let mut without = deployment("reviews-v1", 0);
    without["spec"].as_object_mut().unwrap().remove("replicas");
    let (status, kept) = c
        .patch(
            &apply("meshrelease", false),
            "application/apply-patch+yaml",
            &without,
        )
        .await;
    assert_eq!((status, &kept["spec"]["replicas"]), (200, &json!(7)));
    // A label we stop applying goes.
    without["metadata"]["labels"] = json!({"app": "reviews"});
    let (_, dropped) = c
        .patch(
            &apply("meshrelease", false),
            "application/apply-patch+yaml",
            &without,
        )
        .await;
    assert!(
        dropped["metadata"]["labels"].get("version").is_none(),
        "{dropped}"
    );
    // Apply needs a field manager.
    let (status, _) = c
        .patch(&path, "application/apply-patch+yaml", &without)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn istio_objects_are_one_object_in_both_versions() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let vs = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    });
    let (status, _) = c
        .post(
            "/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices",
            &vs,
        )
        .await;
    assert_eq!(status, 201);
    let (status, read) = c
        .get("/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews")
        .await;
    assert_eq!(status, 200);
    assert_eq!(read["apiVersion"], "networking.istio.io/v1");
    assert_eq!(read["spec"], vs["spec"]);
}

#[tokio::test]
async fn watches_stream_changes_and_resume_from_a_resource_version() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let (_, first) = c.post(DEPLOYMENTS, &deployment("watched", 0)).await;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = c
        .http
        .get(format!(
            "{}{DEPLOYMENTS}?watch=true&resourceVersion={rv}&timeoutSeconds=5",
            c.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    c.patch(
        &format!("{DEPLOYMENTS}/watched"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    c.delete(&format!("{DEPLOYMENTS}/watched")).await;
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the watch ends at its timeout")
        .unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, vec!["MODIFIED", "DELETED"], "{text}");

    // Without a resourceVersion: the current objects first.
    c.post(DEPLOYMENTS, &deployment("present", 0)).await;
    let text = c
        .watched(&format!("{DEPLOYMENTS}?watch=1&timeoutSeconds=1"))
        .await;
    assert!(
        text.starts_with(r#"{"object":"#) || text.contains(r#""type":"ADDED""#),
        "{text}"
    );
}

/// The types of a watch's events, and the last bookmark's version.
fn events(text: &str) -> (Vec<String>, Option<String>) {
    let mut kinds = Vec::new();
    let mut bookmark = None;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let kind = event["type"].as_str().unwrap().to_owned();
        if kind == "BOOKMARK" {
            bookmark = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
        }
        kinds.push(kind);
    }
    (kinds, bookmark)
}

#[tokio::test]
async fn watches_send_bookmarks_when_asked_filter_by_label_and_expire_old_versions() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    let (_, first) = c.post(DEPLOYMENTS, &deployment("marked", 0)).await;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut other = deployment("other", 0);
    other["metadata"]["labels"] = json!({"app": "other"});
    c.post(DEPLOYMENTS, &other).await;

    // Asked for bookmarks: one before the watch ends at its timeout, at a
    // version the watch can resume from; label selectors leave others out.
    let text = c
        .watched(&format!(
            "{DEPLOYMENTS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=app%3Dreviews&timeoutSeconds=1"
        ))
        .await;
    let (kinds, bookmark) = events(&text);
    assert_eq!(kinds.last().map(String::as_str), Some("BOOKMARK"), "{text}");
    assert!(
        !text.contains(r#""name":"other""#),
        "the label selector let another Deployment through: {text}"
    );
    let bookmark = bookmark.unwrap();
    assert!(
        bookmark.parse::<u64>().unwrap() > rv.parse::<u64>().unwrap(),
        "{text}"
    );
    // Not asked: no bookmark.
    let text = c
        .watched(&format!(
            "{DEPLOYMENTS}?watch=true&resourceVersion={bookmark}&labelSelector=app%3Dreviews&timeoutSeconds=1"
        ))
        .await;
    assert_eq!(events(&text).0, Vec::<String>::new(), "{text}");

    // A version older than the kept history: 410 Expired, in the stream.
    for i in 0..10_050 {
        cluster
            .sim
            .store
            .lock()
            .await
            .create(
                simcluster::resources::SERVICES,
                "default",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")}, "spec": {}}),
                &simcluster::store::Writer { manager: "test", api_version: "v1", status: false },
            )
            .unwrap();
    }
    let text = c
        .watched(&format!(
            "{DEPLOYMENTS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ))
        .await;
    let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410)),
        "{text}"
    );
}

#[tokio::test]
async fn a_throttled_request_gets_429_with_retry_after() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    cluster.faults().throttle_next(1, 3);
    let response = c
        .http
        .get(format!("{}{DEPLOYMENTS}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["reason"].as_str(),
            body["details"]["retryAfterSeconds"].as_i64()
        ),
        (Some("TooManyRequests"), Some(3))
    );
    assert_eq!(c.get(DEPLOYMENTS).await.0, 200);
}

#[tokio::test]
async fn the_deployment_controller_reports_rollouts() {
    let cluster = cluster().await;
    let c = Client::new(&cluster);
    c.post(DEPLOYMENTS, &deployment("rolling", 3)).await;
    let mut ready = Value::Null;
    for _ in 0..200 {
        let (_, d) = c.get(&format!("{DEPLOYMENTS}/rolling")).await;
        if d["status"]["availableReplicas"] == 3 {
            ready = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready["status"]["observedGeneration"], 1, "{ready}");
    assert_eq!(ready["status"]["updatedReplicas"], 3);
    // A status write keeps the spec; a spec write keeps the status.
    let (status, _) = c
        .put(
            &format!("{DEPLOYMENTS}/rolling/status"),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rolling"},
                    "spec": {"replicas": 99}, "status": {"replicas": 1}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, d) = c.get(&format!("{DEPLOYMENTS}/rolling")).await;
    assert_eq!(d["spec"]["replicas"], 3);

    cluster.faults().set_never_ready(true);
    c.post(DEPLOYMENTS, &deployment("stuck", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, d) = c.get(&format!("{DEPLOYMENTS}/stuck")).await;
    assert!(d["status"].is_null(), "{d}");
}

#[tokio::test]
async fn faults_answer_as_a_struggling_server_would() {
    let mut cluster = cluster().await;
    let c = Client::new(&cluster);
    cluster.faults().fail_next(2);
    for _ in 0..2 {
        let (status, body) = c.get(DEPLOYMENTS).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (503, Some("ServiceUnavailable"))
        );
    }
    assert_eq!(c.get(DEPLOYMENTS).await.0, 200);

    let (_, created) = c.post(DEPLOYMENTS, &deployment("contested", 1)).await;
    cluster.faults().conflict_next(1);
    let (status, _) = c.put(&format!("{DEPLOYMENTS}/contested"), &created).await;
    assert_eq!(status, 409);
    assert_eq!(
        c.put(&format!("{DEPLOYMENTS}/contested"), &created).await.0,
        200
    );

    cluster.pause().await;
    assert!(
        c.http
            .get(format!("{}{DEPLOYMENTS}", c.base))
            .send()
            .await
            .is_err(),
        "port closed"
    );
    cluster.resume().await.unwrap();
    let (status, list) = c.get(DEPLOYMENTS).await;
    assert_eq!((status, list["items"].as_array().unwrap().len()), (200, 1));
}

#[tokio::test]
async fn namespaces_are_cluster_scoped_and_take_their_objects_with_them() {
    let cluster = cluster().await;
    let client = Client::new(&cluster);
    let (status, created) = client
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["metadata"].get("namespace").is_none(), "{created}");
    let (status, read) = client.get("/api/v1/namespaces/shop").await;
    assert_eq!((status, &read["metadata"]["name"]), (200, &json!("shop")));
    let (_, list) = client.get("/api/v1/namespaces").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = client.get("/api/v1/namespaces/shop/namespaces").await;
    assert_eq!(status, 400, "a Namespace is not in a namespace");

    let mut inside = deployment("reviews-v1", 1);
    inside["metadata"]["namespace"] = json!("shop");
    let (status, _) = client
        .post("/apis/apps/v1/namespaces/shop/deployments", &inside)
        .await;
    assert_eq!(status, 201);
    let (status, _) = client.delete("/api/v1/namespaces/shop").await;
    assert_eq!(status, 200);
    let (status, _) = client
        .get("/apis/apps/v1/namespaces/shop/deployments/reviews-v1")
        .await;
    assert_eq!(status, 404, "deleted with its namespace");
    let (_, discovery) = client.get("/api/v1").await;
    let namespaces = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap()
        .clone();
    assert_eq!(namespaces["namespaced"], false);
}

#[tokio::test]
async fn a_protobuf_body_is_refused_with_415() {
    let cluster = cluster().await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", cluster.url()))
        .header("Content-Type", "application/vnd.kubernetes.protobuf")
        .body(vec![0x6b, 0x38, 0x73, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}
