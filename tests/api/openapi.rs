//! `GET /openapi.json`: the REST surface as the transcoder serves it, made
//! from the proto annotations.

use meshrelease::transcode::routes::RouteTable;
use serde_json::Value;

use crate::helpers::*;

async fn description(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_route_is_described_with_the_contract_names() {
    let app = spawn_app().await;
    let doc = description(&app).await;
    assert_eq!(doc["openapi"], "3.0.3");
    let create = &doc["paths"]["/v2/meshes/{mesh_id}/namespaces/{namespace}/releases"]["post"];
    assert_eq!(create["operationId"], "CreateRelease");
    let params: Vec<(&str, &str)> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        params,
        [
            ("mesh_id", "path"),
            ("namespace", "path"),
            ("dryRun", "query")
        ]
    );
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Release"
    );
    for status in [
        "200", "400", "401", "403", "404", "409", "413", "415", "429", "500", "503",
    ] {
        assert!(create["responses"][status].is_object(), "{status}");
    }
    // PATCH, with its mask as an optional query parameter (REST derives it
    // from the body otherwise).
    let patch =
        &doc["paths"]["/v2/meshes/{mesh_id}/namespaces/{namespace}/releases/{name}"]["patch"];
    assert_eq!(patch["operationId"], "PatchRelease");
    let mask = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "updateMask")
        .expect("updateMask");
    assert_eq!(
        (&mask["in"], &mask["schema"]["type"]),
        (&Value::from("query"), &Value::from("string"))
    );
    let policy = &doc["components"]["schemas"]["TrafficPolicy"]["properties"];
    assert_eq!(policy["weight"]["type"], "integer", "{policy}");
    assert_eq!(
        policy["match"]["items"]["$ref"],
        "#/components/schemas/MatchRule"
    );
    let rule = &doc["components"]["schemas"]["MatchRule"]["properties"];
    for name in ["headers", "queryParams", "cookie", "os", "browsers"] {
        assert!(rule[name].is_object(), "{name} in {rule}");
    }
    let status = &doc["components"]["schemas"]["ReleaseStatus"]["properties"];
    for name in ["conditions", "observedGeneration", "traffic", "plan"] {
        assert!(status[name].is_object(), "{name} in {status}");
    }
    assert!(
        doc["components"]["schemas"]["ReleaseMetadata"]["properties"]["generation"].is_object()
    );
    // JSON names, as clients write them.
    let spec = &doc["components"]["schemas"]["ReleaseSpec"]["properties"];
    for name in [
        "serviceName",
        "clusterID",
        "deploymentName",
        "grayDeployments",
    ] {
        assert!(spec[name].is_object(), "{name} in {spec}");
    }
    assert_eq!(
        doc["components"]["schemas"]["ReleaseStatus"]["properties"]["startTime"]["format"],
        "date-time"
    );
    let list = &doc["paths"]["/v2/meshes/{mesh_id}/releases"]["get"];
    let query: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        query,
        ["namespace", "limit", "continue", "serviceName", "phase"]
    );
}

#[tokio::test]
async fn the_description_matches_the_route_table_exactly() {
    let app = spawn_app().await;
    let doc = description(&app).await;
    let described: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    let table = RouteTable::from_descriptor_set(
        meshrelease::pb::FILE_DESCRIPTOR_SET,
        meshrelease::transcode::release_service_methods(std::sync::Arc::new(
            meshrelease::api::ReleaseApi::new(std::sync::Arc::new(
                meshrelease::domain::ReleaseManager::new(
                    Default::default(),
                    std::sync::Arc::new(meshrelease::store::MemoryStore::new()),
                ),
            )),
        )),
    )
    .unwrap();
    assert_eq!(described, table.routes().len());
    for route in table.routes() {
        let method = route.http_method.as_str().to_ascii_lowercase();
        assert!(
            doc["paths"][route.template.to_string()][&method].is_object(),
            "{route:?}"
        );
    }
}

#[tokio::test]
async fn the_description_needs_a_token() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
