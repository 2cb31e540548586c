//! ListReleases: the list shape, keyset pages, continue tokens, filters.

use std::collections::HashSet;

use meshrelease::pb::asm::v2 as pb;
use serde_json::json;

use crate::helpers::*;

fn names(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn create_many(app: &TestApp, prefix: &str, count: usize) -> Vec<String> {
    let mut created = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i:03}");
        assert_eq!(
            app.create(&release_body(&name, &format!("{prefix}-svc-{i}")))
                .await
                .status(),
            200
        );
        created.push(name);
    }
    created
}

#[tokio::test]
async fn an_empty_list_has_the_contract_shape() {
    let app = spawn_app().await;
    let (status, list) = app.list(&format!("/v2/meshes/{MESH}/releases")).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"kind": "ReleaseList", "apiVersion": "asm/v2", "metadata": {}, "items": []})
    );
}

/// Walks every page with `limit` while other creates go on, and checks that
/// every release that existed before the walk is seen exactly once.
async fn walk_while_creating(
    app: &TestApp,
    limit: Option<usize>,
    existing: &[String],
    prefix: &str,
) {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut round = 0;
    loop {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(token) = &token {
            query.push(format!("continue={token}"));
        }
        let (status, page) = app
            .list(&format!(
                "/v2/meshes/{MESH}/namespaces/default/releases?{}",
                query.join("&")
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(names(&page));
        // Creates keep arriving between the first pages.
        if round < 5 {
            let name = format!("{prefix}-during-{round}");
            assert_eq!(app.create(&release_body(&name, &name)).await.status(), 200);
        }
        round += 1;
        assert!(round < 1000, "the walk does not end");
        match page["metadata"]["continue"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a release was repeated: {seen:?}");
    for name in existing {
        assert!(unique.contains(name), "{name} was skipped");
    }
}

#[tokio::test]
async fn pages_of_1_3_and_default_walk_everything_once_while_creates_go_on() {
    let app = spawn_app().await;
    let existing = create_many(&app, "walk", 7).await;
    walk_while_creating(&app, Some(1), &existing, "one").await;
    walk_while_creating(&app, Some(3), &existing, "three").await;
    walk_while_creating(&app, None, &existing, "default").await;
}

#[tokio::test]
async fn limits_are_defaulted_capped_and_checked() {
    let app = spawn_app().await;
    create_many(&app, "limit", 3).await;
    let (status, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=5000"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(names(&page).len(), 3);
    assert!(
        page["metadata"].get("continue").is_none(),
        "the last page has no continue"
    );
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=2"))
        .await;
    assert_eq!(names(&page).len(), 2);
    assert!(page["metadata"]["continue"].is_string());
    for bad in ["-1", "ten", "1.5"] {
        let (status, error) = app
            .list(&format!("/v2/meshes/{MESH}/releases?limit={bad}"))
            .await;
        assert_eq!(status, 400, "limit={bad}");
        assert_eq!(detail_fields(&error), vec!["limit"], "limit={bad}");
    }
}

#[tokio::test]
async fn the_default_page_is_100_and_no_page_is_over_1000() {
    let app = spawn_app().await;
    // 1,001 releases, created by 16 clients at once (group commit helps).
    let mut clients = Vec::new();
    for client in 0..16 {
        let http = app.http.clone();
        let url = app.releases_url(MESH, "default");
        clients.push(tokio::spawn(async move {
            for i in (client..1001).step_by(16) {
                let name = format!("many-{i:04}");
                let status = http
                    .post(&url)
                    .header("X-Auth-Token", TOKEN)
                    .json(&release_body(&name, &format!("svc-{i}")))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200, "{name}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    for (query, expected) in [
        ("", 100),
        ("?limit=0", 100),
        ("?limit=1000", 1000),
        ("?limit=5000", 1000),
    ] {
        let (status, page) = app
            .list(&format!("/v2/meshes/{MESH}/releases{query}"))
            .await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(names(&page).len(), expected, "{query}");
        assert!(
            page["metadata"]["continue"].is_string(),
            "{query}: more follow"
        );
    }
}

#[tokio::test]
async fn tampered_and_foreign_continue_tokens_are_400() {
    let app = spawn_app().await;
    create_many(&app, "token", 3).await;
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=1"))
        .await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();

    let mut tampered = token.clone().into_bytes();
    tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, error) = app
        .list(&format!(
            "/v2/meshes/{MESH}/releases?limit=1&continue={tampered}"
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["continue"]);

    // A token of the mesh-wide list is not a token of one namespace's list.
    let (status, error) = app
        .list(&format!(
            "/v2/meshes/{MESH}/namespaces/default/releases?limit=1&continue={token}"
        ))
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, _) = app
        .list(&format!(
            "/v2/meshes/{MESH}/releases?limit=1&continue={token}"
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn filters_by_service_and_phase() {
    let app = spawn_app().await;
    create_many(&app, "filter", 4).await;
    app.delete("filter-002", Some("cancel")).await;
    let (_, page) = app
        .list(&format!(
            "/v2/meshes/{MESH}/releases?serviceName=filter-svc-1"
        ))
        .await;
    assert_eq!(names(&page), vec!["filter-001"]);
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?phase=Canceled"))
        .await;
    assert_eq!(names(&page), vec!["filter-002"]);
    let (_, page) = app
        .list(&format!("/v2/meshes/{MESH}/releases?phase=Pending"))
        .await;
    assert_eq!(names(&page).len(), 3);
    let (status, error) = app
        .list(&format!("/v2/meshes/{MESH}/releases?phase=Sleeping"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&error), vec!["phase"]);
}

#[tokio::test]
async fn namespace_and_mesh_lists_differ() {
    let app = spawn_app().await;
    app.create(&release_body("in-default", "reviews")).await;
    let mut body = release_body("in-staging", "reviews");
    body["metadata"]["namespace"] = json!("staging");
    app.create_in("staging", &body).await;
    let (_, all) = app.list(&format!("/v2/meshes/{MESH}/releases")).await;
    assert_eq!(names(&all), vec!["in-default", "in-staging"]);
    let (_, staging) = app
        .list(&format!("/v2/meshes/{MESH}/namespaces/staging/releases"))
        .await;
    assert_eq!(names(&staging), vec!["in-staging"]);
    let (status, _) = app.list("/v2/meshes/no-such-mesh/releases").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn grpc_lists_page_by_page() {
    let app = spawn_app().await;
    let existing = create_many(&app, "grpc-list", 5).await;
    let mut client = app.grpc().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_releases(authed(pb::ListReleasesRequest {
                mesh_id: MESH.into(),
                limit: 2,
                r#continue: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.kind, "ReleaseList");
        seen.extend(page.items.into_iter().map(|r| r.metadata.unwrap().name));
        token = page.metadata.unwrap_or_default().r#continue;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, existing);
}

#[tokio::test]
async fn a_continue_token_and_a_client_token_outlive_a_restart() {
    let app = spawn_app().await;
    for (name, service) in [("one-rel", "svc-1"), ("two-rel", "svc-2")] {
        assert_eq!(app.create(&release_body(name, service)).await.status(), 200);
    }
    let keyed = |app: &TestApp| {
        app.http
            .post(app.releases_url(MESH, "default"))
            .header("X-Auth-Token", TOKEN)
            .header("X-Client-Token", "key-across-restarts")
            .json(&release_body("keyed-rel", "svc-3"))
            .send()
    };
    let (status, made) = json_of(keyed(&app).await.unwrap()).await;
    assert_eq!(status, 200, "{made}");
    let (_, first) = app
        .list(&format!("/v2/meshes/{MESH}/releases?limit=1"))
        .await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();

    let app = app.restart(|_| {}).await;
    let (status, second) = app
        .list(&format!(
            "/v2/meshes/{MESH}/releases?limit=1&continue={token}"
        ))
        .await;
    assert_eq!(status, 200, "the token outlives the restart: {second}");
    assert_ne!(
        second["items"][0]["metadata"]["name"],
        first["items"][0]["metadata"]["name"]
    );
    let (status, again) = json_of(keyed(&app).await.unwrap()).await;
    assert_eq!(status, 200, "the retry returns the original: {again}");
    assert_eq!(again["metadata"]["uid"], made["metadata"]["uid"]);
}
