use meshrelease::pb::asm::v2 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[tokio::test]
async fn grpc_create_answers_the_stored_release() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let response = client
        .create_release(authed(grpc_request("grpc-canary", "reviews")))
        .await
        .unwrap();
    assert!(response.metadata().get("x-request-id").is_some());
    let release = response.into_inner();
    assert_eq!(release.kind, "Release");
    assert_eq!(release.api_version, "asm/v2");
    let metadata = release.metadata.unwrap();
    assert_eq!(metadata.mesh_id, MESH);
    assert!(uuid::Uuid::parse_str(&metadata.uid).is_ok());
    let status = release.status.unwrap();
    assert_eq!(status.phase, "Pending");
    assert!(status.start_time.is_some());
    assert_eq!(status.start_time, status.update_time);
    assert!(status.deployment.is_none());
    assert_eq!(status.gray_deployments.len(), 1);
}

#[tokio::test]
async fn grpc_and_rest_share_one_store_and_one_set_of_rules() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    client
        .create_release(authed(grpc_request("shared-name", "reviews")))
        .await
        .unwrap();
    let (status, body) = json_of(app.create(&release_body("shared-name", "ratings")).await).await;
    assert_eq!(status, 409, "{body}");

    assert_eq!(
        app.create(&release_body("rest-first", "details"))
            .await
            .status(),
        200
    );
    let err = client
        .create_release(authed(grpc_request("grpc-second", "details")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["errorCode"], "ASM.01010003");
    assert!(err.message().contains("rest-first"));
}

#[tokio::test]
async fn grpc_validation_reports_every_violation_as_bad_request() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let mut request = grpc_request("x", "reviews");
    let release = request.release.as_mut().unwrap();
    release.spec.as_mut().unwrap().r#type = "linear".into();
    release.spec.as_mut().unwrap().gray_deployments[0].cluster_id = "cluster-q".into();
    let err = client.create_release(authed(request)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010001"
    );
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "metadata.name",
            "spec.type",
            "spec.grayDeployments[0].clusterID"
        ]
    );
}

#[tokio::test]
async fn grpc_mesh_and_namespace_come_from_the_request() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let mut request = grpc_request("unknown-mesh", "reviews");
    request.mesh_id = "no-such-mesh".into();
    let err = client.create_release(authed(request)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010002"
    );

    let mut request = grpc_request("wrong-namespace", "reviews");
    request.namespace = "prod".into();
    let err = client.create_release(authed(request)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "metadata.namespace"
    );
}

#[tokio::test]
async fn grpc_templates_nested_too_deep_are_refused() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let mut deep = meshrelease::pb::wkt::Struct::default();
    for _ in 0..200 {
        let mut outer = meshrelease::pb::wkt::Struct::default();
        outer.fields_mut().insert(
            "x".into(),
            meshrelease::pb::wkt::Value::from(meshrelease::pb::wkt::value::Kind::StructValue(deep)),
        );
        deep = outer;
    }
    let mut request = grpc_request("deep-template", "reviews");
    request
        .release
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .gray_deployments[0]
        .template = Some(deep);
    let err = client.create_release(authed(request)).await.unwrap_err();
    // Deeper than the protobuf decoder's recursion limit: refused as the
    // client's fault, in the contract's shape.
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["errorCode"],
        "ASM.01010001"
    );
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "message"
    );
    // Still serving.
    client
        .create_release(authed(grpc_request("after-deep", "reviews")))
        .await
        .unwrap();
}

#[tokio::test]
async fn grpc_empty_request_names_what_is_missing() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let err = client
        .create_release(authed(pb::CreateReleaseRequest {
            dry_run: false,
            mesh_id: MESH.into(),
            namespace: "default".into(),
            release: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.get_details_bad_request()
            .unwrap()
            .field_violations
            .len()
            >= 7
    );
}
