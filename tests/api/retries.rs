//! Dry runs and idempotent retries of creates.

use meshrelease::pb::asm::v2 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

async fn create_with_token(
    app: &TestApp,
    body: &serde_json::Value,
    token: &str,
) -> reqwest::Response {
    app.http
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .header("X-Client-Token", token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_client_token_returns_the_original() {
    let app = spawn_app().await;
    let body = release_body("retried", "reviews");
    let (status, first) = json_of(create_with_token(&app, &body, "req-0001").await).await;
    assert_eq!(status, 200);
    let (status, again) = json_of(create_with_token(&app, &body, "req-0001").await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(again, first);
    let (_, list) = app.list(&format!("/v2/meshes/{MESH}/releases")).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing new was stored"
    );

    // The same token with another body is refused, naming the conflict.
    let (status, error) = json_of(
        create_with_token(&app, &release_body("retried-other", "ratings"), "req-0001").await,
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        error["errorMsg"]
            .as_str()
            .unwrap()
            .contains("X-Client-Token"),
        "{error}"
    );

    // Over gRPC, the metadata key is the same.
    let mut request = authed(grpc_request("grpc-retried", "details"));
    request
        .metadata_mut()
        .insert("x-client-token", "req-0002".parse().unwrap());
    let mut client = app.grpc().await;
    let first = client.create_release(request).await.unwrap().into_inner();
    let mut request = authed(grpc_request("grpc-retried", "details"));
    request
        .metadata_mut()
        .insert("x-client-token", "req-0002".parse().unwrap());
    let again = client.create_release(request).await.unwrap().into_inner();
    assert_eq!(again.metadata.unwrap().uid, first.metadata.unwrap().uid);
}

#[tokio::test]
async fn a_client_token_must_be_short_ascii() {
    let app = spawn_app().await;
    let (status, error) = json_of(
        create_with_token(
            &app,
            &release_body("long-token", "reviews"),
            &"x".repeat(65),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["X-Client-Token"]);
}

#[tokio::test]
async fn a_dry_run_checks_everything_and_stores_nothing() {
    let app = spawn_app().await;
    // Watching from before the dry runs: any event they made would show.
    let mut events = app
        .grpc()
        .await
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let url = format!("{}?dryRun=true", app.releases_url(MESH, "default"));
    let post = |body: serde_json::Value| {
        app.http
            .post(url.clone())
            .header("X-Auth-Token", TOKEN)
            .json(&body)
            .send()
    };
    let (status, answer) = json_of(post(release_body("dry-one", "reviews")).await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"]["phase"], "Pending");
    assert_eq!(
        answer["status"]["grayDeployments"][0]["metadata"]["name"],
        "reviews-v1-v2"
    );
    assert!(answer["metadata"].get("resourceVersion").is_none());
    assert_eq!(
        app.get("dry-one").await.status(),
        404,
        "a dry run stored a release"
    );

    // Every check a real call makes, conflicts included.
    let mut invalid = release_body("dry-two", "reviews");
    invalid["spec"]["type"] = json!("linear");
    assert_eq!(post(invalid).await.unwrap().status(), 400);
    app.create(&release_body("real-one", "reviews")).await;
    let (status, _) = json_of(post(release_body("real-one", "ratings")).await.unwrap()).await;
    assert_eq!(status, 409);
    let (status, _) = json_of(post(release_body("dry-three", "reviews")).await.unwrap()).await;
    assert_eq!(status, 409, "the service is held by real-one");

    // No event from a dry run: up to a last real create, the watch saw only
    // real-one's.
    app.create(&release_body("sentinel", "productpage")).await;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("sentinel") {
        let event = tokio::time::timeout(std::time::Duration::from_secs(15), events.message())
            .await
            .expect("an event within 15 s")
            .unwrap()
            .expect("the stream went on");
        seen.push(event.release.unwrap().metadata.unwrap().name);
    }
    assert_eq!(seen, ["real-one", "sentinel"]);

    let mut request = grpc_request("grpc-dry", "details");
    request.dry_run = true;
    app.grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap();
    assert_eq!(app.get("grpc-dry").await.status(), 404);
}

#[tokio::test]
async fn a_dry_run_update_changes_nothing() {
    let app = spawn_app().await;
    let (_, created) = json_of(app.create(&release_body("dry-update", "reviews")).await).await;
    let mut body = release_body("dry-update", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example/reviews:3.0");
    let response = app
        .http
        .put(format!("{}?dryRun=true", app.release_url("dry-update")))
        .header("X-Auth-Token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["status"]["grayDeployments"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/reviews:3.0"
    );
    let (_, read) = json_of(app.get("dry-update").await).await;
    assert_eq!(read, created);

    let err = app
        .grpc()
        .await
        .update_release(authed(pb::UpdateReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "dry-update".into(),
            release: Some(
                serde_json::from_value(json!({"metadata": {"name": "dry-update"}})).unwrap(),
            ),
            dry_run: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn create_as(
    app: &TestApp,
    mesh: &str,
    caller: &str,
    key: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    json_of(
        app.http
            .post(app.releases_url(mesh, "default"))
            .header("X-Auth-Token", caller)
            .header("X-Client-Token", key)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_client_token_is_its_callers_and_replays_the_first_answer_only_within_the_window() {
    // On SQLite, whose file the test ages by hand.
    let app = spawn_sqlite_app().await;
    // Another caller with the same key is not a retry: it is a create of a
    // name that is taken.
    let mut body = release_body("shared-key", "reviews");
    body["spec"]["clusterID"] = json!("cluster-z");
    body["spec"]["grayDeployments"][0]["clusterID"] = json!("cluster-z");
    let (status, first) = create_as(&app, "other-mesh", TOKEN, "key-0001", &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, theirs) = create_as(&app, "other-mesh", OTHER_MESH_TOKEN, "key-0001", &body).await;
    assert_eq!(status, 409, "not the first caller's answer: {theirs}");
    assert!(
        theirs["errorMsg"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{theirs}"
    );

    // A retry after the release was canceled and its record removed gets the
    // first answer, and nothing is created again.
    let body = release_body("replayed", "ratings");
    let (status, made) = create_as(&app, MESH, TOKEN, "key-0002", &body).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(app.delete("replayed", Some("cancel")).await.status(), 200);
    assert_eq!(app.delete("replayed", None).await.status(), 200);
    let (status, again) = create_as(&app, MESH, TOKEN, "key-0002", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, made, "the first answer, as it was");
    assert_eq!(app.get("replayed").await.status(), 404, "not created again");

    // Within the 24-hour window (here 400 s short of it) the key still
    // replays; past it the key is forgotten: the same request is a new
    // create.
    let db =
        rusqlite::Connection::open(app.data_dir.path().join(meshrelease::store::DATABASE_FILE))
            .unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let age = |seconds: i64| {
        db.execute(
            "UPDATE idempotency SET created_at = created_at - ?1 WHERE token = 'key-0002'",
            [seconds],
        )
        .unwrap()
    };
    age(86_000);
    let (status, late) = create_as(&app, MESH, TOKEN, "key-0002", &body).await;
    assert_eq!(status, 200, "{late}");
    assert_eq!(
        late, made,
        "still the first answer, 400 s before the window ends"
    );
    age(401);
    let (status, anew) = create_as(&app, MESH, TOKEN, "key-0002", &body).await;
    assert_eq!(status, 200, "{anew}");
    assert_ne!(
        anew["metadata"]["uid"], made["metadata"]["uid"],
        "a new release"
    );
}
