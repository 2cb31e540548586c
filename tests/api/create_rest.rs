use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_answers_the_stored_release_in_the_contract_shape() {
    let app = spawn_app().await;
    let response = app.create(&release_body("reviews-canary", "reviews")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();

    assert_eq!(body["kind"], "Release");
    assert_eq!(body["apiVersion"], "asm/v2");
    assert_eq!(body["metadata"]["meshID"], MESH);
    assert_eq!(body["metadata"]["namespace"], "default");
    assert_eq!(body["metadata"]["name"], "reviews-canary");
    let uid = body["metadata"]["uid"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(uid).unwrap().get_version_num(), 4);
    assert_eq!(body["spec"]["clusterID"], "cluster-a");
    assert_eq!(body["spec"]["serviceName"], "reviews");
    assert_eq!(body["spec"]["grayDeployments"][0]["clusterID"], "cluster-b");
    assert_eq!(body["status"]["phase"], "Pending");
    for key in ["startTime", "updateTime"] {
        let t = body["status"][key].as_str().unwrap();
        assert!(t.ends_with('Z'), "{key} = {t}");
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
    assert!(
        body["status"].get("deployment").is_none(),
        "unknown original workload must be omitted"
    );

    let gray = &body["status"]["grayDeployments"][0];
    assert_eq!(gray["metadata"]["name"], "reviews-v1-v2");
    assert_eq!(gray["metadata"]["namespace"], "default");
    assert_eq!(
        gray["spec"]["template"]["metadata"]["labels"],
        json!({"app": "reviews", "version": "v2"})
    );
    assert_eq!(gray["spec"]["replicas"], 2);
}

#[tokio::test]
async fn json_names_on_the_wire_are_the_contracts() {
    let app = spawn_app().await;
    let text = app
        .create(&release_body("names-check", "ratings"))
        .await
        .text()
        .await
        .unwrap();
    for name in [
        "\"meshID\"",
        "\"clusterID\"",
        "\"apiVersion\"",
        "\"serviceName\"",
        "\"deploymentName\"",
        "\"grayDeployments\"",
        "\"startTime\"",
        "\"updateTime\"",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    for wrong in [
        "meshId",
        "clusterId",
        "mesh_id",
        "cluster_id",
        "api_version",
        "service_name",
        "start_time",
    ] {
        assert!(!text.contains(wrong), "{wrong} found in {text}");
    }
}

#[tokio::test]
async fn input_accepts_optional_and_null_fields() {
    let app = spawn_app().await;
    let mut body = release_body("optional-bits", "details");
    body.as_object_mut().unwrap().remove("kind");
    body.as_object_mut().unwrap().remove("apiVersion");
    body["metadata"]["meshID"] = json!(MESH);
    body["metadata"]["uid"] = json!("client-chosen-uid-is-ignored");
    body["status"] = json!({"phase": "Running"});
    body["spec"]["grayDeployments"][0]["template"]["metadata"]["annotations"] = json!({"a": null});
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    assert_ne!(created["metadata"]["uid"], "client-chosen-uid-is-ignored");
    assert_eq!(created["status"]["phase"], "Pending");

    // proto3 JSON: null means "not set" for message fields and scalars.
    let mut body = release_body("null-fields", "productpage");
    body["metadata"]["meshID"] = Value::Null;
    body["kind"] = Value::Null;
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["metadata"]["meshID"], MESH);
}

#[tokio::test]
async fn proto_field_names_are_accepted_on_input() {
    let app = spawn_app().await;
    let mut body = release_body("proto-names", "reviews");
    let spec = body["spec"].as_object_mut().unwrap();
    let service = spec.remove("serviceName").unwrap();
    spec.insert("service_name".into(), service);
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["spec"]["serviceName"], "reviews");
}

#[tokio::test]
async fn the_client_request_id_is_echoed_when_sane() {
    let app = spawn_app().await;
    let sent = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("X-Request-Id", "client-id-123")
        .json(&release_body("request-id", "reviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "client-id-123");

    let insane = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("X-Request-Id", "has spaces and ünïcode")
        .send()
        .await
        .unwrap();
    let id = insane.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    // Errors carry it too.
    let error = app
        .http
        .get(format!("{}/nowhere", app.base))
        .send()
        .await
        .unwrap();
    assert!(error.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn twenty_parallel_creates_of_one_name_give_exactly_one_200() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let http = app.http.clone();
        let url = app.releases_url(MESH, "default");
        tasks.push(tokio::spawn(async move {
            // Different services, so only the name can collide.
            http.post(url)
                .header("X-Auth-Token", TOKEN)
                .json(&release_body("contested", &format!("svc-{i}")))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.len(), 20);
    assert_one_winner(&statuses);
}

#[tokio::test]
async fn a_service_has_one_active_release_at_a_time() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(&release_body("first-canary", "reviews"))
            .await
            .status(),
        200
    );
    let (status, body) = json_of(app.create(&release_body("second-canary", "reviews")).await).await;
    assert_eq!(status, 409);
    assert_eq!(body["errorCode"], "ASM.01010003");
    assert!(
        body["errorMsg"].as_str().unwrap().contains("first-canary"),
        "{body}"
    );
    // Another service is free.
    assert_eq!(
        app.create(&release_body("third-canary", "ratings"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_same_name_in_another_namespace_is_another_release() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(&release_body("same-name", "reviews"))
            .await
            .status(),
        200
    );
    let mut body = release_body("same-name", "reviews");
    body["metadata"]["namespace"] = json!("staging");
    let response = app
        .http
        .post(app.releases_url(MESH, "staging"))
        .header("X-Auth-Token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_restart_keeps_what_was_acknowledged() {
    let app = spawn_app().await;
    let (_, created) = json_of(app.create(&release_body("kept-release", "reviews")).await).await;
    let app = app.restart(|_| {}).await;
    let (status, error) = json_of(app.create(&release_body("kept-release", "ratings")).await).await;
    assert_eq!(status, 409, "the release was lost: {error}");
    let (status, error) = json_of(app.create(&release_body("other-name", "reviews")).await).await;
    assert_eq!(status, 409, "the service is no longer held: {error}");
    assert!(error["errorMsg"].as_str().unwrap().contains("kept-release"));
    assert!(created["metadata"]["uid"].is_string());
}
