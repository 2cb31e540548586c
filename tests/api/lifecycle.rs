//! Get, update and delete (cancel, end, remove), over REST and gRPC.

use meshrelease::pb::asm::v2 as pb;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn new_image(body: &mut Value, image: &str) {
    body["spec"]["grayDeployments"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(image);
}

#[tokio::test]
async fn get_answers_the_create_response_byte_for_byte() {
    let app = spawn_app().await;
    let created = app
        .create(&release_body("get-me", "reviews"))
        .await
        .text()
        .await
        .unwrap();
    let response = app.get("get-me").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), created);

    let via_grpc = app
        .grpc()
        .await
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "get-me".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::to_string(&via_grpc).unwrap(), created);
}

#[tokio::test]
async fn get_of_an_unknown_release_is_404_and_permission_comes_first() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.get("nothing-here").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["errorCode"], "ASM.01010002");
    let err = app
        .grpc()
        .await
        .get_release(authed(pb::GetReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "nothing-here".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A reader of another mesh gets 403 whether or not the release exists.
    let response = app
        .http
        .get(app.release_url("nothing-here"))
        .header("X-Auth-Token", OTHER_READER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn update_replaces_the_templates_and_advances_versions() {
    let app = spawn_app().await;
    let (_, created) = json_of(app.create(&release_body("update-me", "reviews")).await).await;
    let mut body = release_body("update-me", "reviews");
    new_image(&mut body, "registry.example/reviews:2.1");
    let (status, updated) = json_of(app.put("update-me", &body).await).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated["status"]["grayDeployments"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/reviews:2.1"
    );
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert!(updated["status"]["updateTime"].as_str() > created["status"]["updateTime"].as_str());
    assert_eq!(
        updated["status"]["startTime"],
        created["status"]["startTime"]
    );
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    let (_, read) = json_of(app.get("update-me").await).await;
    assert_eq!(read, updated);
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_409_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, created) = json_of(app.create(&release_body("stale-update", "reviews")).await).await;
    let old_version = created["metadata"]["resourceVersion"].clone();
    let mut body = release_body("stale-update", "reviews");
    body["metadata"]["resourceVersion"] = old_version.clone();
    new_image(&mut body, "registry.example/reviews:2.1");
    assert_eq!(
        app.put("stale-update", &body).await.status(),
        200,
        "the current version applies"
    );

    new_image(&mut body, "registry.example/reviews:9.9");
    let (status, error) = json_of(app.put("stale-update", &body).await).await;
    assert_eq!(status, 409);
    assert_eq!(error["errorCode"], "ASM.01010003");
    let (_, read) = json_of(app.get("stale-update").await).await;
    assert_eq!(
        read["status"]["grayDeployments"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/reviews:2.1"
    );

    let mut request = pb::UpdateReleaseRequest {
        mesh_id: MESH.into(),
        namespace: "default".into(),
        name: "stale-update".into(),
        release: Some(serde_json::from_value(body).unwrap()),
        dry_run: false,
    };
    request
        .release
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .resource_version = old_version.as_str().unwrap().into();
    let err = app
        .grpc()
        .await
        .update_release(authed(request))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn identity_and_target_are_immutable() {
    let app = spawn_app().await;
    app.create(&release_body("immutable", "reviews")).await;
    let cases: Vec<(&str, Value)> = vec![
        (
            "spec.serviceName",
            json!({"spec": {"serviceName": "ratings"}}),
        ),
        (
            "spec.clusterID",
            json!({"spec": {"clusterID": "cluster-b"}}),
        ),
        (
            "spec.deploymentName",
            json!({"spec": {"deploymentName": "reviews-v0"}}),
        ),
        ("spec.version", json!({"spec": {"version": "v3"}})),
        ("spec.type", json!({"spec": {"type": "blue-green"}})),
        ("metadata.name", json!({"metadata": {"name": "renamed"}})),
        (
            "metadata.namespace",
            json!({"metadata": {"namespace": "prod"}}),
        ),
    ];
    for (field, change) in cases {
        let mut body = release_body("immutable", "reviews");
        for (section, values) in change.as_object().unwrap() {
            for (key, value) in values.as_object().unwrap() {
                body[section][key] = value.clone();
            }
        }
        // A version change also changes the pod label it requires.
        if field == "spec.version" {
            body["spec"]["grayDeployments"][0]["template"]["spec"]["template"]["metadata"]["labels"]
                ["version"] = json!("v3");
        }
        let (status, error) = json_of(app.put("immutable", &body).await).await;
        assert_eq!(status, 400, "{field}: {error}");
        assert!(
            detail_fields(&error).contains(&field.to_owned()),
            "{field}: {error}"
        );
    }
}

#[tokio::test]
async fn updates_are_validated_as_creates_are() {
    let app = spawn_app().await;
    app.create(&release_body("validated-update", "reviews"))
        .await;
    let mut body = release_body("validated-update", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["spec"]["replicas"] = json!(-1);
    let (status, error) = json_of(app.put("validated-update", &body).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        detail_fields(&error),
        vec!["spec.grayDeployments[0].template.spec.replicas"]
    );
    let (status, _) = json_of(
        app.put("never-created", &release_body("never-created", "x"))
            .await,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cancel_and_end_free_the_service_and_stay_readable() {
    let app = spawn_app().await;
    // A pending release cancels at once: nothing was done in a cluster yet.
    assert_eq!(
        app.create(&release_body("cancel-me", "reviews"))
            .await
            .status(),
        200
    );
    let (status, canceled) = json_of(app.delete("cancel-me", Some("cancel")).await).await;
    assert_eq!(
        (status, &canceled["status"]["phase"]),
        (200, &json!("Canceled"))
    );
    let (status, error) = json_of(
        app.put("cancel-me", &release_body("cancel-me", "reviews"))
            .await,
    )
    .await;
    assert_eq!(
        status, 409,
        "an ended release can no longer be updated: {error}"
    );

    // A running one ends once the gray version holds all traffic; the
    // driver finishes the end.
    assert_eq!(
        app.create(&release_body("end-me", "reviews"))
            .await
            .status(),
        200
    );
    app.drive_to_running("end-me").await;
    let weight = json!({"spec": {"trafficPolicy": {"weight": 100}}});
    assert_eq!(app.patch("end-me", &weight).await.status(), 200);
    let (status, ending) = json_of(app.delete("end-me", Some("end")).await).await;
    assert_eq!(
        (status, &ending["status"]["phase"]),
        (200, &json!("Ending")),
        "{ending}"
    );
    // Still holding the service while it ends.
    assert_eq!(
        app.create(&release_body("too-early", "reviews"))
            .await
            .status(),
        409
    );
    app.drive("end-me", meshrelease::domain::phase::Move::Finish)
        .await;
    let (status, read) = json_of(app.get("end-me").await).await;
    assert_eq!((status, &read["status"]["phase"]), (200, &json!("Ended")));

    // Free: a new release of the same service.
    assert_eq!(
        app.create(&release_body("after-both", "reviews"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn delete_needs_an_action_while_active_and_removes_once_over() {
    let app = spawn_app().await;
    app.create(&release_body("remove-me", "reviews")).await;
    for action in [None, Some("pause")] {
        let (status, error) = json_of(app.delete("remove-me", action).await).await;
        assert_eq!(status, 400, "{action:?}");
        assert_eq!(detail_fields(&error), vec!["action"]);
    }
    assert_eq!(app.delete("remove-me", Some("cancel")).await.status(), 200);
    let (status, removed) = json_of(app.delete("remove-me", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(removed["status"]["phase"], "Canceled");
    assert_eq!(app.get("remove-me").await.status(), 404);
    assert_eq!(app.delete("remove-me", None).await.status(), 404);
}

#[tokio::test]
async fn grpc_delete_cancels_and_removes() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    client
        .create_release(authed(grpc_request("grpc-delete", "reviews")))
        .await
        .unwrap();
    let request = |action: &str| {
        authed(pb::DeleteReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "grpc-delete".into(),
            action: action.into(),
        })
    };
    let err = client.delete_release(request("")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "action"
    );
    let canceled = client
        .delete_release(request("cancel"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceled.status.unwrap().phase, "Canceled");
    client.delete_release(request("")).await.unwrap();
    assert_eq!(
        client.delete_release(request("")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn a_running_release_with_traffic_says_how_to_cancel_it() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(&release_body("holds-traffic", "reviews"))
            .await
            .status(),
        200
    );
    app.drive_to_running("holds-traffic").await;
    let moved = app
        .patch(
            "holds-traffic",
            &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let (status, error) = json_of(app.delete("holds-traffic", Some("cancel")).await).await;
    assert_eq!(status, 409, "{error}");
    let message = error["errorMsg"].as_str().unwrap();
    // The rule, and the command that satisfies it, in the words the README,
    // mrctl and the console use.
    for says in [
        "once the original version holds all traffic",
        "from Deploying or Failed it cancels at once",
        "mrctl traffic NAME --takeover original",
        "All to original",
    ] {
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let back = app
        .patch(
            "holds-traffic",
            &json!({"spec": {"trafficPolicy": {"weight": 0}}}),
        )
        .await;
    assert_eq!(back.status(), 200);
    let (status, canceled) = json_of(app.delete("holds-traffic", Some("cancel")).await).await;
    assert_eq!(status, 200, "{canceled}");
}
