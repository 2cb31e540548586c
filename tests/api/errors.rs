//! Each row of the contract's error table, over REST and gRPC.

use std::sync::Arc;

use async_trait::async_trait;
use meshrelease::domain::{Release, ReleaseRef};
use meshrelease::store::{
    Created, Event, IdempotencyKey, ListQuery, Page, ReleaseStore, StoreError,
};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn error_code(status: &tonic::Status) -> String {
    status.get_details_error_info().unwrap().metadata["errorCode"].clone()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("Content-Type", "application/json")
        .body("{\"metadata\": {\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["errorCode"], "ASM.01010001");
    assert_eq!(detail_fields(&body), vec!["body"]);
    assert!(
        body["errorMsg"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_fields_are_400_naming_them() {
    let app = spawn_app().await;
    let mut body = release_body("unknown-field", "reviews");
    body["spec"]["grayDeployments"][0]["weight"] = json!(10);
    body["metadata"]["labels"] = json!({});
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400);
    // The first unknown field found is named, in the client's own terms.
    assert_eq!(detail_fields(&error), vec!["metadata.labels"]);
    assert!(
        error["errorMsg"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{error}"
    );

    let (status, error) = json_of(app.create(&json!({"surprise": 1})).await).await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["surprise"]);
}

#[tokio::test]
async fn wrong_json_types_are_400_naming_the_field() {
    let app = spawn_app().await;
    let mut body = release_body("wrong-type", "reviews");
    body["spec"]["version"] = json!(2);
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["spec.version"]);

    let (status, error) = json_of(app.create(&json!([1, 2])).await).await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["body"]);
}

#[tokio::test]
async fn content_type_must_be_json() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&release_body("content-type", "reviews")).unwrap();
    for (content_type, expected) in [
        (Some("text/plain"), 415),
        (Some("application/x-www-form-urlencoded"), 415),
        (None, 415),
        (Some("application/json; charset=utf-8"), 200),
    ] {
        let mut request = app
            .http
            .post(app.releases_url(MESH, "default"))
            .header("X-Auth-Token", TOKEN)
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let (status, error) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{content_type:?}: {error}");
        if expected == 415 {
            assert_eq!(error["errorCode"], "ASM.01010005");
        }
    }
    let upper = app
        .http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("Content-Type", "Application/JSON;Charset=UTF-8")
        .body(serde_json::to_vec(&release_body("upper-case-ct", "ratings")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 200);
}

#[tokio::test]
async fn unknown_mesh_is_404_and_foreign_cluster_is_400() {
    let app = spawn_app().await;
    let mut body = release_body("no-mesh", "reviews");
    let response = app
        .http
        .post(app.releases_url("no-such-mesh", "default"))
        .header("X-Auth-Token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, error) = json_of(response).await;
    assert_eq!(status, 404);
    assert_eq!(error["errorCode"], "ASM.01010002");

    body["spec"]["clusterID"] = json!("cluster-z"); // a cluster of other-mesh
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["spec.clusterID"]);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let app = spawn_app().await;
    let (status, error) = json_of(
        app.http
            .get(format!("{}/v2/nothing/here", app.base))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error["errorCode"], "ASM.01010002");

    let response = app
        .http
        .patch(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
}

#[tokio::test]
async fn name_taken_is_409_on_both_protocols() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(&release_body("taken-name", "reviews"))
            .await
            .status(),
        200
    );
    let (status, error) = json_of(app.create(&release_body("taken-name", "ratings")).await).await;
    assert_eq!(status, 409);
    assert_eq!(error["errorCode"], "ASM.01010003");
    let err = app
        .grpc()
        .await
        .create_release(authed(grpc_request("taken-name", "details")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(error_code(&err), "ASM.01010003");
}

/// A store that fails every call the way it is told to.
struct BrokenStore {
    unavailable: bool,
}

impl meshrelease::store::Backend for BrokenStore {}

#[async_trait]
impl ReleaseStore for BrokenStore {
    async fn create(&self, _: &Release, _: Option<&IdempotencyKey>) -> Result<Created, StoreError> {
        Err(self.error())
    }
    async fn get(&self, _: &str, _: &str, _: &str) -> Result<Option<Release>, StoreError> {
        Err(self.error())
    }
    async fn check_create(&self, _: &Release) -> Result<(), StoreError> {
        Err(self.error())
    }
    async fn update(&self, _: &Release, _: u64) -> Result<Release, StoreError> {
        Err(self.error())
    }
    async fn remove(&self, _: &str, _: &str, _: &str, _: u64) -> Result<Release, StoreError> {
        Err(self.error())
    }
    async fn list(&self, _: &ListQuery) -> Result<Page, StoreError> {
        Err(self.error())
    }
    async fn active_names(&self, _: &str) -> Result<Vec<ReleaseRef>, StoreError> {
        Err(self.error())
    }
    async fn running_strategies(&self, _: &str) -> Result<Vec<Release>, StoreError> {
        Err(self.error())
    }
    async fn snapshot(
        &self,
        _: &str,
        _: Option<&str>,
    ) -> Result<meshrelease::store::Snapshot, StoreError> {
        Err(self.error())
    }
    async fn events_after(
        &self,
        _: &str,
        _: Option<&str>,
        _: u64,
        _: usize,
    ) -> Result<Vec<Event>, StoreError> {
        Err(self.error())
    }
    fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
    async fn record_checks(
        &self,
        _: uuid::Uuid,
        _: &[meshrelease::domain::strategy::CheckResult],
    ) -> Result<(), StoreError> {
        Err(self.error())
    }
    async fn checks(
        &self,
        _: uuid::Uuid,
    ) -> Result<Vec<meshrelease::domain::strategy::CheckResult>, StoreError> {
        Err(self.error())
    }
    fn cursor_secret(&self) -> [u8; 32] {
        [0; 32]
    }
    async fn check_writable(&self) -> Result<(), StoreError> {
        Err(self.error())
    }
}

impl BrokenStore {
    fn error(&self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable("database at /secret/path is locked".into())
        } else {
            StoreError::Internal(anyhow::anyhow!(
                "SQL: INSERT INTO releases failed at /secret/path"
            ))
        }
    }
}

#[tokio::test]
async fn store_faults_are_500_and_say_nothing_internal() {
    let app = spawn_app_on(Arc::new(BrokenStore { unavailable: false })).await;
    let response = app.create(&release_body("broken-store", "reviews")).await;
    let text = format!(
        "{:?} {}",
        response.headers().clone(),
        response.text().await.unwrap()
    );
    assert!(text.contains("ASM.01040001"), "{text}");
    assert!(!text.contains("secret") && !text.contains("SQL"), "{text}");

    let err = app
        .grpc()
        .await
        .create_release(authed(grpc_request("broken-store", "reviews")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(error_code(&err), "ASM.01040001");
    assert!(!err.message().contains("secret"));
}

#[tokio::test]
async fn an_unavailable_store_is_503_and_not_ready() {
    let app = spawn_app_on(Arc::new(BrokenStore { unavailable: true })).await;
    let (status, error) = json_of(app.create(&release_body("no-store", "reviews")).await).await;
    assert_eq!(status, 503);
    assert_eq!(error["errorCode"], "ASM.01040002");
    assert!(!error.to_string().contains("secret"), "{error}");
    let err = app
        .grpc()
        .await
        .create_release(authed(grpc_request("no-store", "reviews")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(error_code(&err), "ASM.01040002");

    assert_eq!(app.readyz().await, 503);
    let live = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}
