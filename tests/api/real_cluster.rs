//! The canary scenario against a real cluster, when
//! MESHRELEASE_TEST_KUBECONFIG names one (with Istio's CRDs installed):
//! a fresh namespace with an original Deployment (`pause` pods) and its
//! Service, a release to Running, weight 30 in the VirtualService, take-over,
//! end, then the namespace deleted. Skipped, and saying so, otherwise.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::helpers::*;

async fn until(app: &TestApp, url: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, release) = json_of(
            app.http
                .get(url)
                .header("X-Auth-Token", TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if check(&release) {
            return release;
        }
        last = release;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("never reached {what}; last seen: {last}");
}

#[tokio::test]
async fn a_canary_in_a_real_cluster() {
    let Ok(path) = std::env::var("MESHRELEASE_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: set MESHRELEASE_TEST_KUBECONFIG to a cluster with Istio's CRDs to run the real-cluster test"
        );
        return;
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespace = format!(
        "meshrelease-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let resource = |group: &str, version: &str, kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
    };
    let create = |ar: ApiResource, ns: Option<&str>, object: Value| {
        let client = client.clone();
        let ns = ns.map(str::to_owned);
        async move {
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(client, &ns, &ar),
                None => Api::all_with(client, &ar),
            };
            api.create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap();
        }
    };
    create(
        resource("", "v1", "Namespace"),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
    )
    .await;
    let pod = |version: &str| {
        json!({"metadata": {"labels": {"app": "reviews", "version": version}},
               "spec": {"containers": [{"name": "reviews", "image": "registry.k8s.io/pause:3.9"}]}})
    };
    create(
        resource("apps", "v1", "Deployment"),
        Some(&namespace),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
                        "template": pod("v1")}}),
    )
    .await;
    create(
        resource("", "v1", "Service"),
        Some(&namespace),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
               "spec": {"selector": {"app": "reviews"}, "ports": [{"port": 9080}]}}),
    )
    .await;

    let clusters = format!(
        r#"[{{ id = "cluster-a", kubeconfig = "{path}" }}, {{ id = "cluster-b", kubeconfig = "{path}" }}]"#
    );
    let app = spawn_app_with(move |cli| {
        cli.clusters = Some(clusters);
        cli.resync_interval_ms = Some(500);
    })
    .await;
    let mut body = release_body("real-canary", "reviews");
    body["metadata"]["namespace"] = json!(namespace);
    body["spec"]["grayDeployments"][0]["template"]["spec"]["template"] = pod("v2");
    body["spec"]["grayDeployments"][0]["template"]["spec"]["selector"] =
        json!({"matchLabels": {"app": "reviews", "version": "v2"}});
    body["spec"]["grayDeployments"][0]["template"]["spec"]["replicas"] = json!(1);
    let url = app.releases_url(MESH, &namespace);
    let (status, created) = json_of(
        app.http
            .post(&url)
            .header("X-Auth-Token", TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let release = format!("{url}/real-canary");
    until(&app, &release, "Running", |r| {
        r["status"]["phase"] == "Running"
    })
    .await;
    for weight in [30, 100] {
        app.http
            .patch(&release)
            .header("X-Auth-Token", TOKEN)
            .json(&json!({"spec": {"trafficPolicy": {"weight": weight}}}))
            .send()
            .await
            .unwrap();
        until(&app, &release, "the weight applied", |r| {
            r["status"]["traffic"] == json!({"weight": weight})
        })
        .await;
    }
    app.http
        .delete(format!("{release}?action=end"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    until(&app, &release, "Ended", |r| r["status"]["phase"] == "Ended").await;
    let namespaces: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("", "v1", "Namespace"));
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}
