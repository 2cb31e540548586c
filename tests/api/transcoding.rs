//! The REST surface is derived from the proto: every `google.api.http` rule
//! in the descriptor set answers at its path, and nothing else does.

use meshrelease::pb::google::api::{HttpRule, http_rule::Pattern};
use prost_reflect::DescriptorPool;

use crate::helpers::*;

/// Every (method, path template, rpc) the descriptor declares, read here
/// independently of the server's own route table.
fn declared_routes() -> Vec<(http::Method, String, String)> {
    let pool = DescriptorPool::decode(meshrelease::pb::FILE_DESCRIPTOR_SET).unwrap();
    let http = pool.get_extension_by_name("google.api.http").unwrap();
    let mut routes = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let rule: HttpRule = options
                .get_extension(&http)
                .as_message()
                .unwrap()
                .transcode_to()
                .unwrap();
            for binding in std::iter::once(rule.clone()).chain(rule.additional_bindings) {
                let (verb, path) = match binding.pattern.unwrap() {
                    Pattern::Get(p) => (http::Method::GET, p),
                    Pattern::Post(p) => (http::Method::POST, p),
                    Pattern::Put(p) => (http::Method::PUT, p),
                    Pattern::Delete(p) => (http::Method::DELETE, p),
                    Pattern::Patch(p) => (http::Method::PATCH, p),
                    Pattern::Custom(c) => {
                        (http::Method::from_bytes(c.kind.as_bytes()).unwrap(), c.path)
                    }
                };
                routes.push((verb, path, method.full_name().to_owned()));
            }
        }
    }
    routes
}

/// A concrete path for a template: each `{variable}` filled with a sample.
fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let variable = &rest[start + 1..end];
        out.push_str(match variable {
            "mesh_id" => MESH,
            "namespace" => "default",
            _ => "sample-name",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_declared_route_answers_and_the_server_table_matches() {
    let declared = declared_routes();
    assert!(
        declared.iter().any(|(m, p, _)| m == http::Method::POST
            && p == "/v2/meshes/{mesh_id}/namespaces/{namespace}/releases"),
        "{declared:?}"
    );

    // The server's table is the descriptor's, route for route.
    let table = meshrelease::transcode::RouteTable::from_descriptor_set(
        meshrelease::pb::FILE_DESCRIPTOR_SET,
        meshrelease::transcode::release_service_methods(std::sync::Arc::new(dummy_api())),
    )
    .unwrap();
    let served: Vec<(http::Method, String, String)> = table
        .routes()
        .iter()
        .map(|r| (r.http_method.clone(), r.template.to_string(), r.rpc.clone()))
        .collect();
    assert_eq!(served, declared);

    let app = spawn_app().await;
    for (method, template, rpc) in &declared {
        let response = app
            .http
            .request(method.clone(), format!("{}{}", app.base, fill(template)))
            .header("X-Auth-Token", TOKEN)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if response.headers()["content-type"] == "application/x-ndjson" {
            // A stream: it answered, and will go on until the server stops.
            assert_eq!(status, 200, "{method} {template} ({rpc})");
            continue;
        }
        let body: serde_json::Value = response.json().await.unwrap();
        // The request reached the service: the answer is the operation's
        // own (a page, a missing release, a missing field), not the router's.
        assert!(
            status != 405 && status != 415,
            "{method} {template} ({rpc}): {status} {body}"
        );
        let message = body["errorMsg"].as_str().unwrap_or_default();
        assert!(
            !message.starts_with("no operation"),
            "{method} {template} ({rpc}): {body}"
        );
    }
}

fn dummy_api() -> meshrelease::api::ReleaseApi {
    use meshrelease::domain::{Meshes, ReleaseManager};
    let store = std::sync::Arc::new(meshrelease::store::MemoryStore::new());
    meshrelease::api::ReleaseApi::new(std::sync::Arc::new(ReleaseManager::new(
        Meshes::default(),
        store,
    )))
}

#[tokio::test]
async fn path_variables_fill_the_request_and_are_percent_decoded() {
    let app = spawn_app().await;
    // `%2D` is '-': the decoded namespace must equal the body's.
    let response = app
        .http
        .post(format!(
            "{}/v2/meshes/demo%2Dmesh/namespaces/default/releases",
            app.base
        ))
        .header("X-Auth-Token", TOKEN)
        .json(&release_body("decoded-path", "reviews"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["meshID"], MESH);
}

#[tokio::test]
async fn unknown_query_parameters_are_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}?bogus=1", app.releases_url(MESH, "default")))
        .header("X-Auth-Token", TOKEN)
        .json(&release_body("query-param", "reviews"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(detail_fields(&body), vec!["bogus"]);
}
