//! Policy conditions on the mesh's enterprise project and tags, and Deny
//! statements that win over any Allow, over REST and gRPC.

use serde_json::Value;

use crate::helpers::*;

const PROJECT_TOKEN: &str = "project-token";
const TAG_TOKEN: &str = "tag-token";
const DENY_PROD_TOKEN: &str = "deny-prod-token";

async fn spawn_conditional_app() -> TestApp {
    spawn_app_with(|cli| {
        cli.meshes = Some(
            r#"[
              { id = "prod-mesh", clusters = ["cluster-a", "cluster-b"], enterprise_project_id = "ep-prod", tags = { env = "prod", team = "payments" } },
              { id = "dev-mesh", clusters = ["cluster-a", "cluster-b"], enterprise_project_id = "ep-dev", tags = { env = "dev" } }
            ]"#
            .into(),
        );
        cli.tokens = Some(format!(
            r#"[
              {{ subject = "project-bot", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"], conditions = {{ StringEquals = {{ "g:EnterpriseProjectId" = "ep-prod" }} }} }}] }},
              {{ subject = "tag-bot", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"], conditions = {{ StringEquals = {{ "g:ResourceTag/team" = ["payments", "core"] }} }} }}] }},
              {{ subject = "careful-bot", sha256 = "{}", allow = [
                  {{ actions = ["asm:mesh:*"], meshes = ["*"] }},
                  {{ effect = "Deny", actions = ["asm:mesh:createRelease"], meshes = ["*"], conditions = {{ StringEquals = {{ "g:ResourceTag/env" = "prod" }} }} }}
              ] }}
            ]"#,
            sha(PROJECT_TOKEN),
            sha(TAG_TOKEN),
            sha(DENY_PROD_TOKEN)
        ));
    })
    .await
}

async fn rest_create(app: &TestApp, mesh: &str, token: &str, name: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.releases_url(mesh, "default"))
        .header("X-Auth-Token", token)
        .json(&release_body(name, name))
        .send()
        .await
        .unwrap();
    json_of(response).await
}

async fn grpc_create(app: &TestApp, mesh: &str, token: &str, name: &str) -> tonic::Code {
    let mut request = grpc_request(name, name);
    request.mesh_id = mesh.into();
    match app
        .grpc()
        .await
        .create_release(with_token(request, token))
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn an_enterprise_project_condition_narrows_over_both_protocols() {
    let app = spawn_conditional_app().await;
    assert_eq!(
        rest_create(&app, "prod-mesh", PROJECT_TOKEN, "rel-p1")
            .await
            .0,
        200
    );
    let (status, body) = rest_create(&app, "dev-mesh", PROJECT_TOKEN, "rel-p2").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errorCode"], "ASM.01000002");
    assert_eq!(
        grpc_create(&app, "prod-mesh", PROJECT_TOKEN, "rel-p3").await,
        tonic::Code::Ok
    );
    assert_eq!(
        grpc_create(&app, "dev-mesh", PROJECT_TOKEN, "rel-p4").await,
        tonic::Code::PermissionDenied
    );
    // An unknown mesh has no project to meet the condition: 403, not 404,
    // so the caller learns nothing of which meshes exist.
    assert_eq!(
        rest_create(&app, "no-mesh", PROJECT_TOKEN, "rel-p5")
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn a_tag_condition_takes_a_list_of_values() {
    let app = spawn_conditional_app().await;
    let created = rest_create(&app, "prod-mesh", TAG_TOKEN, "rel-t1").await;
    assert_eq!(created.0, 200, "{}", created.1);
    // dev-mesh has no `team` tag at all.
    assert_eq!(
        rest_create(&app, "dev-mesh", TAG_TOKEN, "rel-t2").await.0,
        403
    );
    assert_eq!(
        grpc_create(&app, "prod-mesh", TAG_TOKEN, "rel-t3").await,
        tonic::Code::Ok
    );
    assert_eq!(
        grpc_create(&app, "dev-mesh", TAG_TOKEN, "rel-t4").await,
        tonic::Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_conditional_deny_wins_over_an_allow_where_it_matches() {
    let app = spawn_conditional_app().await;
    let (status, body) = rest_create(&app, "prod-mesh", DENY_PROD_TOKEN, "rel-d1").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        grpc_create(&app, "prod-mesh", DENY_PROD_TOKEN, "rel-d2").await,
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        rest_create(&app, "dev-mesh", DENY_PROD_TOKEN, "rel-d3")
            .await
            .0,
        200
    );
    // The Deny names only creates: reading prod-mesh is still allowed.
    let response = app
        .http
        .get(format!(
            "{}/{}",
            app.releases_url("prod-mesh", "default"),
            "rel-d1"
        ))
        .header("X-Auth-Token", DENY_PROD_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
