//! The traffic policy, PATCH with field masks, end and cancel as the phase
//! machine allows them, and dry runs that show the plan: over REST and gRPC
//! against the real server. The cluster driver's moves are made through its
//! status-only write (`TestApp::drive`).

use meshrelease::domain::phase::Move;
use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::wkt::FieldMask;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn with_policy(name: &str, service: &str, policy: Value) -> Value {
    let mut body = release_body(name, service);
    body["spec"]["trafficPolicy"] = policy;
    body
}

fn match_policy() -> Value {
    json!({"match": [{
        "headers": [{"name": "x-user", "exact": "alice"}],
        "queryParams": [{"name": "beta", "regex": "^(1|true)$"}],
        "cookie": {"regex": "^(.*?;)?(group=beta)(;.*)?$"},
        "os": ["iOS", "Android"],
        "browsers": ["Chrome"]
    }]})
}

fn grpc_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

async fn running(app: &TestApp, name: &str, service: &str) -> Value {
    let (status, created) = json_of(app.create(&release_body(name, service)).await).await;
    assert_eq!(status, 200, "{created}");
    app.drive_to_running(name).await;
    let (_, read) = json_of(app.get(name).await).await;
    assert_eq!(read["status"]["phase"], "Running");
    read
}

#[tokio::test]
async fn a_release_is_created_with_its_policy_over_both_protocols() {
    let app = spawn_app().await;
    let (status, created) = json_of(
        app.create(&with_policy("with-rules", "reviews", match_policy()))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["spec"]["trafficPolicy"], match_policy());
    assert_eq!(created["metadata"]["generation"], 1);
    // proto3 JSON leaves out a zero, as Kubernetes does observedGeneration.
    assert!(created["status"].get("observedGeneration").is_none());

    // No policy: the original keeps everything (weight 0), and says so.
    let (_, plain) = json_of(app.create(&release_body("no-policy", "ratings")).await).await;
    assert_eq!(plain["spec"]["trafficPolicy"], json!({"weight": 0}));

    let mut request = grpc_request("grpc-weight", "details");
    request
        .release
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .traffic_policy = Some(pb::TrafficPolicy {
        weight: Some(0),
        r#match: vec![],
    });
    let created = app
        .grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap()
        .into_inner();
    let policy = created.spec.unwrap().traffic_policy.unwrap();
    assert_eq!(policy.weight, Some(0));
    assert_eq!(created.metadata.unwrap().generation, 1);
}

#[tokio::test]
async fn every_refused_policy_names_its_field_on_both_protocols() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "spec.trafficPolicy"),
        (
            json!({"weight": 10, "match": [{"os": ["iOS"]}]}),
            "spec.trafficPolicy",
        ),
        (json!({"weight": 101}), "spec.trafficPolicy.weight"),
        (json!({"weight": -1}), "spec.trafficPolicy.weight"),
        (json!({"match": [{}]}), "spec.trafficPolicy.match[0]"),
        (
            json!({"match": [{"headers": [{"name": "X-Upper", "exact": "a"}]}]}),
            "spec.trafficPolicy.match[0].headers[0].name",
        ),
        (
            json!({"match": [{"headers": [{"name": "x-a"}]}]}),
            "spec.trafficPolicy.match[0].headers[0]",
        ),
        (
            json!({"match": [{"headers": [{"name": "x-a", "exact": "1", "regex": "1"}]}]}),
            "spec.trafficPolicy.match[0].headers[0]",
        ),
        (
            json!({"match": [{"queryParams": [{"name": "q", "regex": "(?=x)"}]}]}),
            "spec.trafficPolicy.match[0].queryParams[0].regex",
        ),
        (
            json!({"match": [{"cookie": {"regex": "a".repeat(1025)}}]}),
            "spec.trafficPolicy.match[0].cookie.regex",
        ),
        (
            json!({"match": [{"os": ["BeOS"]}]}),
            "spec.trafficPolicy.match[0].os[0]",
        ),
        (
            json!({"match": [{"browsers": ["Chrome", "Netscape"]}]}),
            "spec.trafficPolicy.match[0].browsers[1]",
        ),
    ];
    for (i, (policy, field)) in cases.iter().enumerate() {
        let name = format!("refused-{i:02}");
        let (status, error) = json_of(
            app.create(&with_policy(&name, "reviews", policy.clone()))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{policy}: {error}");
        assert_eq!(error["errorCode"], "ASM.01010001");
        assert_eq!(detail_fields(&error), vec![field.to_owned()], "{policy}");

        let mut request = grpc_request(&name, "reviews");
        let release: pb::Release =
            serde_json::from_value(with_policy(&name, "reviews", policy.clone())).unwrap();
        request.release = Some(release);
        let status = app
            .grpc()
            .await
            .create_release(authed(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{policy}");
        assert_eq!(grpc_violations(&status), vec![field.to_owned()], "{policy}");
    }

    // Blue-green releases switch: 0 or 100, never a split, never rules.
    for (policy, field) in [
        (json!({"weight": 30}), "spec.trafficPolicy.weight"),
        (match_policy(), "spec.trafficPolicy.match"),
    ] {
        let mut body = with_policy("blue-green", "reviews", policy.clone());
        body["spec"]["type"] = json!("blue-green");
        let (status, error) = json_of(app.create(&body).await).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(detail_fields(&error), vec![field.to_owned()]);
    }
    let mut body = with_policy("blue-green", "reviews", json!({"weight": 100}));
    body["spec"]["type"] = json!("blue-green");
    assert_eq!(app.create(&body).await.status(), 200);
}

#[tokio::test]
async fn patch_sets_a_weight_then_match_rules_while_running() {
    let app = spawn_app().await;
    let before = running(&app, "patch-me", "reviews").await;

    let (status, patched) = json_of(
        app.patch(
            "patch-me",
            &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["trafficPolicy"], json!({"weight": 30}));
    assert_eq!(patched["metadata"]["generation"], 2);
    // Nothing else changed.
    assert_eq!(
        patched["spec"]["grayDeployments"],
        before["spec"]["grayDeployments"]
    );
    assert_eq!(patched["status"]["phase"], "Running");
    let (_, read) = json_of(app.get("patch-me").await).await;
    assert_eq!(read["spec"]["trafficPolicy"], json!({"weight": 30}));

    // Match rules replace the weight, as one member of a oneof replaces another.
    let (status, patched) = json_of(
        app.patch(
            "patch-me",
            &json!({"spec": {"trafficPolicy": match_policy()}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["trafficPolicy"], match_policy());
    assert_eq!(patched["metadata"]["generation"], 3);

    // The same policy again changes nothing, not even the resourceVersion.
    let (_, again) = json_of(
        app.patch(
            "patch-me",
            &json!({"spec": {"trafficPolicy": match_policy()}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        patched["metadata"]["resourceVersion"]
    );

    // Pinned to a stale resourceVersion: refused.
    let (status, error) = json_of(
        app.patch(
            "patch-me",
            &json!({"metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
                    "spec": {"trafficPolicy": {"weight": 10}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{error}");
}

#[tokio::test]
async fn patch_over_grpc_applies_only_what_its_mask_names() {
    let app = spawn_app().await;
    running(&app, "masked", "reviews").await;
    let mut client = app.grpc().await;
    let mut release: pb::Release = serde_json::from_value(with_policy(
        "masked",
        "other-service",
        json!({"weight": 50}),
    ))
    .unwrap();
    release.spec.as_mut().unwrap().gray_deployments[0].cluster_id = "cluster-a".into();
    let patched = client
        .patch_release(authed(pb::PatchReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "masked".into(),
            release: Some(release.clone()),
            update_mask: Some(FieldMask {
                paths: vec!["spec.traffic_policy.weight".into()],
            }),
            dry_run: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let spec = patched.spec.unwrap();
    assert_eq!(spec.traffic_policy.unwrap().weight, Some(50));
    // Named nowhere in the mask: unchanged.
    assert_eq!(spec.service_name, "reviews");
    assert_eq!(spec.gray_deployments[0].cluster_id, "cluster-b");

    for (paths, field) in [
        (vec!["spec.service_name"], "spec.serviceName"),
        (vec!["spec.bogus"], "updateMask"),
        (vec!["status.phase"], "status.phase"),
        (vec!["spec"], "updateMask"),
    ] {
        let status = client
            .patch_release(authed(pb::PatchReleaseRequest {
                mesh_id: MESH.into(),
                namespace: "default".into(),
                name: "masked".into(),
                release: Some(release.clone()),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
                dry_run: false,
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{paths:?}");
        assert_eq!(
            grpc_violations(&status),
            vec![field.to_owned()],
            "{paths:?}"
        );
    }

    // No mask: the fields the message populates, as AIP-134 says.
    let only_policy = pb::Release {
        spec: Some(pb::ReleaseSpec {
            traffic_policy: Some(pb::TrafficPolicy {
                weight: Some(0),
                r#match: vec![],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let patched = client
        .patch_release(authed(pb::PatchReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "masked".into(),
            release: Some(only_policy),
            update_mask: None,
            dry_run: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        patched.spec.unwrap().traffic_policy.unwrap().weight,
        Some(0)
    );
}

#[tokio::test]
async fn patch_refuses_what_it_cannot_change_naming_the_field() {
    let app = spawn_app().await;
    running(&app, "strict", "reviews").await;
    for (body, field) in [
        (
            json!({"spec": {"serviceName": "other"}}),
            "spec.serviceName",
        ),
        (json!({"spec": {"version": "v9"}}), "spec.version"),
        (json!({"status": {"phase": "Ended"}}), "status.phase"),
        (json!({"metadata": {"uid": "x"}}), "metadata.uid"),
        (json!({"metadata": {"name": "other-name"}}), "metadata.name"),
        (json!({}), "updateMask"),
        (
            json!({"spec": {"trafficPolicy": {"weight": 30, "match": [{"os": ["iOS"]}]}}}),
            "spec.trafficPolicy",
        ),
    ] {
        let (status, error) = json_of(app.patch("strict", &body).await).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(
            detail_fields(&error),
            vec![field.to_owned()],
            "{body}: {error}"
        );
    }
    // A mask may also come as a query parameter (proto3 JSON form).
    let (status, patched) = json_of(
        app.http
            .patch(format!(
                "{}?updateMask=spec.trafficPolicy.weight",
                app.release_url("strict")
            ))
            .header("X-Auth-Token", TOKEN)
            .json(&json!({"spec": {"trafficPolicy": {"weight": 40}, "serviceName": "ignored"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["trafficPolicy"], json!({"weight": 40}));
    assert_eq!(patched["spec"]["serviceName"], "reviews");
}

#[tokio::test]
async fn the_policy_changes_only_while_running() {
    let app = spawn_app().await;
    app.create(&release_body("still-pending", "reviews")).await;
    let (status, error) = json_of(
        app.patch(
            "still-pending",
            &json!({"spec": {"trafficPolicy": {"weight": 30}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["errorCode"], "ASM.01010003");
    assert!(
        error["errorMsg"]
            .as_str()
            .unwrap()
            .contains("only while Running"),
        "{error}"
    );
    let status = app
        .grpc()
        .await
        .patch_release(authed(pb::PatchReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "still-pending".into(),
            release: Some(
                serde_json::from_value(json!({"spec": {"trafficPolicy": {"weight": 30}}})).unwrap(),
            ),
            update_mask: None,
            dry_run: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // PUT keeps its meaning: without a policy, the policy stays; templates
    // may change while Pending.
    let mut body = release_body("still-pending", "reviews");
    body["spec"]["grayDeployments"][0]["template"]["spec"]["replicas"] = json!(3);
    let (status, put) = json_of(app.put("still-pending", &body).await).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["spec"]["trafficPolicy"], json!({"weight": 0}));
    assert_eq!(put["metadata"]["generation"], 2);
    // A PUT that changes the policy follows the same rule as PATCH.
    let (status, _) = json_of(
        app.put(
            "still-pending",
            &with_policy("still-pending", "reviews", json!({"weight": 20})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn end_and_cancel_say_what_to_do_first() {
    let app = spawn_app().await;
    running(&app, "split", "reviews").await;
    app.patch("split", &json!({"spec": {"trafficPolicy": {"weight": 30}}}))
        .await;
    let (status, error) = json_of(app.delete("split", Some("end")).await).await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["errorMsg"].as_str().unwrap().contains("weight 100"),
        "{error}"
    );
    let (status, error) = json_of(app.delete("split", Some("cancel")).await).await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["errorMsg"]
            .as_str()
            .unwrap()
            .contains(r#"{"weight": 0}"#),
        "{error}"
    );
    let status = app
        .grpc()
        .await
        .delete_release(authed(pb::DeleteReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "split".into(),
            action: "end".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("weight 100"));

    // Match rules: neither version holds everything.
    app.patch("split", &json!({"spec": {"trafficPolicy": match_policy()}}))
        .await;
    assert_eq!(app.delete("split", Some("end")).await.status(), 409);

    // Pending cannot end.
    app.create(&release_body("fresh", "ratings")).await;
    let (status, error) = json_of(app.delete("fresh", Some("end")).await).await;
    assert_eq!(status, 409, "{error}");

    // With the original holding everything, cancel goes to Canceling (the
    // driver restores the routing, then finishes).
    app.patch("split", &json!({"spec": {"trafficPolicy": {"weight": 0}}}))
        .await;
    let (status, canceling) = json_of(app.delete("split", Some("cancel")).await).await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(canceling["status"]["phase"], "Canceling");
}

#[tokio::test]
async fn retried_cancel_and_end_answer_the_release_and_change_nothing() {
    let app = spawn_app().await;
    running(&app, "retry-end", "reviews").await;
    app.patch(
        "retry-end",
        &json!({"spec": {"trafficPolicy": {"weight": 100}}}),
    )
    .await;
    let (_, first) = json_of(app.delete("retry-end", Some("end")).await).await;
    assert_eq!(first["status"]["phase"], "Ending");
    let (status, second) = json_of(app.delete("retry-end", Some("end")).await).await;
    assert_eq!(status, 200);
    assert_eq!(second, first, "a retried end changes nothing");
    app.drive("retry-end", Move::Finish).await;
    let (_, ended) = json_of(app.get("retry-end").await).await;
    let (status, third) = json_of(app.delete("retry-end", Some("end")).await).await;
    assert_eq!(status, 200);
    assert_eq!(third, ended);
    // Ended is not canceled.
    assert_eq!(app.delete("retry-end", Some("cancel")).await.status(), 409);

    app.create(&release_body("retry-cancel", "ratings")).await;
    let (_, first) = json_of(app.delete("retry-cancel", Some("cancel")).await).await;
    assert_eq!(first["status"]["phase"], "Canceled");
    for _ in 0..2 {
        let (status, again) = json_of(app.delete("retry-cancel", Some("cancel")).await).await;
        assert_eq!(status, 200);
        assert_eq!(again, first);
    }
    let read = app
        .grpc()
        .await
        .delete_release(authed(pb::DeleteReleaseRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "retry-cancel".into(),
            action: "cancel".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.status.unwrap().phase, "Canceled");
    assert_eq!(
        app.get("retry-cancel").await.status(),
        200,
        "nothing removed"
    );
}

#[tokio::test]
async fn delete_without_action_removes_only_a_release_that_is_over() {
    let app = spawn_app().await;
    app.create(&release_body("active", "reviews")).await;
    let (status, error) = json_of(app.delete("active", None).await).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(detail_fields(&error), vec!["action"]);
    assert_eq!(app.get("active").await.status(), 200);

    // Failed is not over: its gray Deployments wait for a cancel.
    running(&app, "failing", "ratings").await;
    app.drive("failing", Move::Fail).await;
    let (status, _) = json_of(app.delete("failing", None).await).await;
    assert_eq!(status, 400);
    let (status, canceling) = json_of(app.delete("failing", Some("cancel")).await).await;
    assert_eq!(
        (status, &canceling["status"]["phase"]),
        (200, &json!("Canceling"))
    );

    app.delete("active", Some("cancel")).await;
    let (status, removed) = json_of(app.delete("active", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(removed["status"]["phase"], "Canceled");
    assert_eq!(app.get("active").await.status(), 404);
}

#[tokio::test]
async fn a_dry_run_answers_the_plan_and_stores_nothing() {
    let app = spawn_app().await;
    let (status, preview) = json_of(
        app.http
            .post(format!("{}?dryRun=true", app.releases_url(MESH, "default")))
            .header("X-Auth-Token", TOKEN)
            .json(&with_policy(
                "dry-run-one",
                "reviews",
                json!({"weight": 10}),
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    let plan = preview["status"]["plan"].as_array().expect("a plan");
    assert_eq!(plan.len(), 1);
    // No cluster is connected here: the answer says the routing was not
    // planned and why, and the gray Deployment was not tried anywhere.
    let message = preview["status"]["planMessage"].as_str().unwrap();
    assert!(
        message.starts_with("routing not planned: cluster cluster-a is not connected"),
        "{message}"
    );
    assert_eq!(plan[0].get("dryRun"), None);
    assert_eq!(plan[0]["clusterID"], "cluster-b");
    assert_eq!(plan[0]["action"], "apply");
    let object = &plan[0]["object"];
    assert_eq!(object["kind"], "Deployment");
    assert_eq!(object["metadata"]["name"], "reviews-v1-v2");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshrelease"
    );
    assert_eq!(
        object["metadata"]["annotations"]["meshrelease.io/release-uid"],
        preview["metadata"]["uid"]
    );
    assert_eq!(
        object["spec"]["template"]["metadata"]["labels"]["version"],
        "v2"
    );
    assert_eq!(
        app.get("dry-run-one").await.status(),
        404,
        "a dry run stores nothing"
    );

    // A stored release never carries a plan.
    let (_, created) = json_of(app.create(&release_body("wet-run", "reviews")).await).await;
    assert!(created["status"].get("plan").is_none(), "{created}");

    // PATCH dry run: the would-be release, the stored one unchanged.
    app.drive_to_running("wet-run").await;
    let (status, would) = json_of(
        app.http
            .patch(format!("{}?dryRun=true", app.release_url("wet-run")))
            .header("X-Auth-Token", TOKEN)
            .json(&json!({"spec": {"trafficPolicy": {"weight": 60}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{would}");
    assert_eq!(would["spec"]["trafficPolicy"], json!({"weight": 60}));
    assert!(would["status"]["plan"].is_array());
    let (_, read) = json_of(app.get("wet-run").await).await;
    assert_eq!(read["spec"]["trafficPolicy"], json!({"weight": 0}));

    // Over gRPC too.
    let mut request = grpc_request("dry-grpc", "details");
    request.dry_run = true;
    let answer = app
        .grpc()
        .await
        .create_release(authed(request))
        .await
        .unwrap()
        .into_inner();
    let status = answer.status.unwrap();
    assert_eq!(status.plan.len(), 1);
    assert_eq!(status.plan[0].action, "apply");
}

#[tokio::test]
async fn status_writes_keep_the_generation_and_lose_to_any_newer_write() {
    use meshrelease::domain::{DomainError, ReleaseRef, StatusUpdate};
    let app = spawn_app().await;
    running(&app, "status-only", "reviews").await;
    let target = ReleaseRef {
        mesh_id: MESH.into(),
        namespace: "default".into(),
        name: "status-only".into(),
    };
    let seen = app.manager.read(&target).await.unwrap();
    // A client changes the spec after the driver read the release...
    app.patch(
        "status-only",
        &json!({"spec": {"trafficPolicy": {"weight": 20}}}),
    )
    .await;
    // ...so the driver's write, based on what it read, loses.
    let lost = app
        .manager
        .write_status(
            &target,
            seen.resource_version,
            StatusUpdate {
                step: Some(Move::Fail),
                ..StatusUpdate::default()
            },
        )
        .await;
    assert!(matches!(lost, Err(DomainError::Aborted(_))), "{lost:?}");

    let current = app.manager.read(&target).await.unwrap();
    let written = app
        .manager
        .write_status(
            &target,
            current.resource_version,
            StatusUpdate {
                observed_generation: Some(current.generation),
                conditions: vec![meshrelease::domain::conditions::ConditionChange::new(
                    meshrelease::domain::conditions::ConditionType::GrayReady,
                    true,
                    meshrelease::domain::conditions::Reason::Ready,
                    "every gray Deployment is ready",
                )],
                ..StatusUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(written.generation, current.generation);
    assert!(written.resource_version > current.resource_version);
    let (_, read) = json_of(app.get("status-only").await).await;
    assert_eq!(read["metadata"]["generation"], 2);
    assert_eq!(read["status"]["observedGeneration"], 2);
    let ready = read["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "GrayReady")
        .expect("the GrayReady condition");
    assert_eq!(ready["status"], "True");
    assert!(ready["lastTransitionTime"].as_str().unwrap().ends_with('Z'));
}
