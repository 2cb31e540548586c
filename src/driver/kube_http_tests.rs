//! The exact HTTP each planned change sends (method, path, query with the
//! field manager, content type, body), pinned against a mock service in
//! place of a cluster, and how the cluster's answers are read.

use std::collections::HashMap;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::metrics::DriverMetrics;

struct Sent {
    method: http::Method,
    path_and_query: String,
    content_type: Option<String>,
    body: Value,
}

/// Carries out `change` against a mock cluster that answers `status` with
/// `answer`, and returns what was sent and the result.
async fn send(
    change: PlannedObject,
    status: u16,
    answer: Value,
) -> (Sent, Result<(), ClusterError>, String) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics = DriverMetrics::default();
    let clusters = KubeClusters::with_clients(
        HashMap::from([("cluster-a".to_owned(), client)]),
        metrics.clone(),
    );
    let cluster = tokio::spawn(async move {
        let (request, reply) = handle.next_request().await.expect("one request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.expect("a body").to_bytes();
        reply.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        Sent {
            method: parts.method,
            path_and_query: parts.uri.path_and_query().unwrap().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
        }
    });
    let result = clusters.carry_out(&change).await;
    let sent = cluster.await.unwrap();
    let mut exposition = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("cluster_requests", "", metrics.cluster_requests.clone());
    prometheus_client::encoding::text::encode(&mut exposition, &registry).unwrap();
    (sent, result, exposition)
}

fn object(value: Value) -> JsonObject {
    let Value::Object(map) = value else {
        panic!("not an object: {value}");
    };
    map
}

fn gray_deployment() -> PlannedObject {
    PlannedObject {
        cluster_id: "cluster-a".into(),
        kind: ObjectKind::Deployment,
        change: Change::Apply,
        object: object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reviews-v2", "namespace": "shop"},
            "spec": {"replicas": 1}
        })),
    }
}

fn virtual_service(resource_version: Option<&str>) -> PlannedObject {
    let mut metadata = json!({"name": "reviews", "namespace": "shop"});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    PlannedObject {
        cluster_id: "cluster-a".into(),
        kind: ObjectKind::VirtualService,
        change: Change::Apply,
        object: object(json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": metadata,
            "spec": {"hosts": ["reviews"]}
        })),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

#[tokio::test]
async fn a_gray_deployment_is_server_side_applied_as_meshrelease_never_forced() {
    let change = gray_deployment();
    let (sent, result, counted) =
        send(change.clone(), 200, Value::Object(change.object.clone())).await;
    result.unwrap();
    assert_eq!(sent.method, http::Method::PATCH);
    assert_eq!(
        sent.path_and_query,
        "/apis/apps/v1/namespaces/shop/deployments/reviews-v2?&fieldManager=meshrelease"
    );
    assert!(!sent.path_and_query.contains("force"));
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(sent.body, Value::Object(change.object));
    assert!(
        counted
            .contains(r#"cluster_requests_total{cluster="cluster-a",verb="apply",code="200"} 1"#),
        "{counted}"
    );
}

#[tokio::test]
async fn an_istio_object_read_with_a_version_is_replaced_pinned_to_it() {
    let change = virtual_service(Some("41"));
    let (sent, result, _) = send(change.clone(), 200, Value::Object(change.object.clone())).await;
    result.unwrap();
    assert_eq!(sent.method, http::Method::PUT);
    assert_eq!(
        sent.path_and_query,
        "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices/reviews?&fieldManager=meshrelease"
    );
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    assert_eq!(sent.body["metadata"]["resourceVersion"], "41");
}

#[tokio::test]
async fn an_istio_object_that_did_not_exist_is_created() {
    let change = virtual_service(None);
    let (sent, result, counted) =
        send(change.clone(), 201, Value::Object(change.object.clone())).await;
    result.unwrap();
    assert_eq!(sent.method, http::Method::POST);
    assert_eq!(
        sent.path_and_query,
        "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices?&fieldManager=meshrelease"
    );
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    assert!(
        counted.contains(r#"verb="create",code="201"} 1"#),
        "{counted}"
    );
}

#[tokio::test]
async fn istio_v1_objects_go_to_the_v1_api() {
    let mut change = virtual_service(Some("7"));
    change
        .object
        .insert("apiVersion".into(), json!("networking.istio.io/v1"));
    let (sent, result, _) = send(change.clone(), 200, Value::Object(change.object.clone())).await;
    result.unwrap();
    assert!(
        sent.path_and_query
            .starts_with("/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews?"),
        "{}",
        sent.path_and_query
    );
}

#[tokio::test]
async fn a_delete_is_a_delete_and_gone_already_is_fine() {
    let mut change = gray_deployment();
    change.change = Change::Delete;
    let (sent, result, counted) = send(change, 404, status(404, "NotFound", "not found")).await;
    result.unwrap();
    assert_eq!(sent.method, http::Method::DELETE);
    assert!(
        sent.path_and_query
            .starts_with("/apis/apps/v1/namespaces/shop/deployments/reviews-v2"),
        "{}",
        sent.path_and_query
    );
    assert!(
        counted.contains(r#"verb="delete",code="404"} 1"#),
        "{counted}"
    );
}

#[tokio::test]
async fn a_delete_of_an_object_seen_carries_its_uid_as_a_precondition() {
    let mut change = gray_deployment();
    change.change = Change::Delete;
    change.object = object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "reviews-v2", "namespace": "shop", "uid": "8d1e5c9a-0000-4000-8000-000000000001"}}));
    let (sent, result, _) = send(
        change,
        409,
        status(
            409,
            "Conflict",
            "Precondition failed: UID in precondition: 8d1e5c9a-0000-4000-8000-000000000001, UID in object meta: another",
        ),
    )
    .await;
    assert_eq!(sent.method, http::Method::DELETE);
    assert_eq!(
        sent.body["preconditions"],
        json!({"uid": "8d1e5c9a-0000-4000-8000-000000000001"}),
        "{}",
        sent.body
    );
    // A newer object of the same name: not deleted, and read afresh.
    assert!(
        matches!(result, Err(ClusterError::Conflict { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn scale_to_zero_is_a_merge_patch_of_replicas_alone() {
    let mut change = gray_deployment();
    change.change = Change::ScaleToZero;
    change.object.remove("spec");
    let (sent, result, _) = send(
        change,
        200,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v2"}}),
    )
    .await;
    result.unwrap();
    assert_eq!(sent.method, http::Method::PATCH);
    assert_eq!(
        sent.path_and_query,
        "/apis/apps/v1/namespaces/shop/deployments/reviews-v2?&fieldManager=meshrelease"
    );
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(sent.body, json!({"spec": {"replicas": 0}}));
}

#[tokio::test]
async fn the_clusters_answers_are_read_in_the_drivers_terms() {
    let (_, lost_race, _) = send(
        virtual_service(Some("41")),
        409,
        status(409, "Conflict", "the object has been modified"),
    )
    .await;
    assert!(
        matches!(lost_race, Err(ClusterError::Conflict { .. })),
        "{lost_race:?}"
    );

    let (_, owned, _) = send(
        gray_deployment(),
        409,
        status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas",
        ),
    )
    .await;
    let Err(ClusterError::Refused { message, .. }) = owned else {
        panic!("{owned:?}");
    };
    assert!(message.contains(".spec.replicas"), "{message}");

    let (_, forbidden, _) = send(
        gray_deployment(),
        403,
        status(403, "Forbidden", "deployments is forbidden"),
    )
    .await;
    assert!(
        matches!(forbidden, Err(ClusterError::Refused { .. })),
        "{forbidden:?}"
    );

    let (_, busy, _) = send(
        gray_deployment(),
        503,
        status(503, "ServiceUnavailable", "try later"),
    )
    .await;
    assert!(
        matches!(busy, Err(ClusterError::Unreachable { .. })),
        "{busy:?}"
    );
}
