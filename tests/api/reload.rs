//! SIGHUP reloads tokens, access keys, meshes and clusters in the running
//! binary, all or nothing, without dropping a connection or a watch.

use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::binary::start_with_config;
use crate::helpers::*;

const OLD_TOKEN: &str = "token-before-the-reload";
const NEW_TOKEN: &str = "token-after-the-reload";

/// A configuration with one token, the meshes named, and whatever `more`
/// adds at the top level.
pub fn config(token: &str, meshes: &[&str], more: &str) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nlog_format = \"text\"\nlog_level = \"info\"\n{more}\n"
    );
    for mesh in meshes {
        text.push_str(&format!(
            "[[meshes]]\nid = \"{mesh}\"\nclusters = [\"cluster-a\", \"cluster-b\"]\n"
        ));
    }
    text.push_str(&format!(
        "[[tokens]]\nsubject = \"{token}\"\nsha256 = \"{}\"\nallow = [{{ actions = [\"asm:mesh:*\"], meshes = [\"*\"] }}]\n",
        sha(token)
    ));
    text
}

async fn channel(base: &str) -> Channel {
    Channel::from_shared(base.to_owned())
        .unwrap()
        .connect_timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .unwrap()
}

/// The name of the release in the watch's next event.
async fn next_name(events: &mut tonic::Streaming<pb::WatchEvent>) -> String {
    let event = tokio::time::timeout(REQUEST_TIMEOUT, events.next())
        .await
        .expect("no event came")
        .expect("the watch ended")
        .expect("the watch failed");
    event.release.unwrap().metadata.unwrap().name
}

fn create_in(
    mesh: &str,
    name: &str,
    service: &str,
    token: &str,
) -> tonic::Request<pb::CreateReleaseRequest> {
    let mut request = grpc_request(name, service);
    request.mesh_id = mesh.into();
    with_token(request, token)
}

#[tokio::test]
async fn a_reload_swaps_tokens_and_meshes_without_dropping_connections_or_watches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshrelease.toml");
    std::fs::write(&path, config(OLD_TOKEN, &[MESH], "")).unwrap();
    let server = start_with_config(&path);

    // One HTTP/2 connection for everything below, and a watch on it.
    let connection = channel(&server.base).await;
    let mut client = ReleaseServiceClient::new(connection.clone());
    let mut events = client
        .watch_releases(with_token(
            pb::WatchReleasesRequest {
                mesh_id: MESH.into(),
                ..Default::default()
            },
            OLD_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .create_release(create_in(MESH, "before-reload", "reviews", OLD_TOKEN))
        .await
        .unwrap();
    assert_eq!(next_name(&mut events).await, "before-reload");
    // A mesh that is not configured yet.
    let refused = client
        .create_release(create_in("second-mesh", "in-second", "ratings", OLD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // The new file: the old token gone, a new one, another mesh, and a
    // key that only a restart applies.
    std::fs::write(
        &path,
        config(
            NEW_TOKEN,
            &[MESH, "second-mesh"],
            "max_body_bytes = 1000000",
        ),
    )
    .unwrap();
    server.signal("HUP");
    let log = server.wait_for_log("configuration reloaded", 1).await;
    assert!(
        log.contains("take effect at the next restart") && log.contains("max_body_bytes"),
        "the reload must name the key that waits for a restart:\n{log}"
    );

    // On the same connection: the removed token is refused, the new one
    // works, in the mesh that came with it too.
    let refused = client
        .list_releases(with_token(
            pb::ListReleasesRequest {
                mesh_id: MESH.into(),
                ..Default::default()
            },
            OLD_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    client
        .create_release(create_in(MESH, "after-reload", "details", NEW_TOKEN))
        .await
        .unwrap();
    client
        .create_release(create_in("second-mesh", "in-second", "ratings", NEW_TOKEN))
        .await
        .unwrap();
    // The watch opened before the reload is still streaming.
    assert_eq!(next_name(&mut events).await, "after-reload");

    // REST sees the same: the old token is refused, the new one lists.
    let list = format!("{}/v2/meshes/{MESH}/releases", server.base);
    let old = http_client()
        .get(&list)
        .header("X-Auth-Token", OLD_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = http_client()
        .get(&list)
        .header("X-Auth-Token", NEW_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    drop(server);
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_running_configuration_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshrelease.toml");
    std::fs::write(&path, config(OLD_TOKEN, &[MESH], "")).unwrap();
    let server = start_with_config(&path);
    let mut client = ReleaseServiceClient::new(channel(&server.base).await);

    // A new token, but a key that does not exist: nothing of it is taken.
    std::fs::write(&path, config(NEW_TOKEN, &[MESH], "max_body_byte = 10")).unwrap();
    server.signal("HUP");
    let log = server
        .wait_for_log("configuration not reloaded; the running one is kept", 1)
        .await;
    assert!(
        log.contains("max_body_byte"),
        "the error names the key:\n{log}"
    );
    // A cluster whose kubeconfig cannot be read refuses the whole reload
    // too, although the rest of the file is valid.
    std::fs::write(
        &path,
        config(
            NEW_TOKEN,
            &[MESH],
            "[[clusters]]\nid = \"cluster-a\"\nkubeconfig = \"missing-kubeconfig.yaml\"\n",
        ),
    )
    .unwrap();
    server.signal("HUP");
    let log = server
        .wait_for_log("configuration not reloaded; the running one is kept", 2)
        .await;
    assert!(log.contains("missing-kubeconfig.yaml"), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");

    let list = |token: &str| {
        with_token(
            pb::ListReleasesRequest {
                mesh_id: MESH.into(),
                ..Default::default()
            },
            token,
        )
    };
    client.list_releases(list(OLD_TOKEN)).await.unwrap();
    let refused = client.list_releases(list(NEW_TOKEN)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // And the service still stops cleanly.
    server.signal("TERM");
    let log = server.wait_for_log("stopped", 1).await;
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_cluster_connected_by_a_reload_is_driven() {
    let clusters = crate::driver::clusters().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshrelease.toml");
    std::fs::write(&path, config(TOKEN, &[MESH], "")).unwrap();
    let server = start_with_config(&path);
    let url = format!(
        "{}/v2/meshes/{MESH}/namespaces/default/releases",
        server.base
    );
    let created = http_client()
        .post(&url)
        .header("X-Auth-Token", TOKEN)
        .json(&release_body("reviews-canary", "reviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let phase = || async {
        let (_, release) = json_of(
            http_client()
                .get(format!("{url}/reviews-canary"))
                .header("X-Auth-Token", TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        release["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // No cluster is configured: the release is recorded only.
    assert_eq!(phase().await, "Pending");

    let more = format!("clusters = {}", clusters.flag_for("reloaded"));
    std::fs::write(&path, config(TOKEN, &[MESH], &more)).unwrap();
    server.signal("HUP");
    server.wait_for_log("configuration reloaded", 1).await;
    let mut last = String::new();
    for _ in 0..600 {
        last = phase().await;
        if last == "Running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        last, "Running",
        "the newly connected clusters were not driven"
    );
    // The gray Deployment is in cluster-b, made with the reloaded
    // kubeconfig's credentials.
    assert!(
        clusters
            .b
            .get(
                simcluster::resources::DEPLOYMENTS,
                "default",
                "reviews-v1-v2"
            )
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_prometheus_token_file_again() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Arc, Mutex};

    let clusters = crate::driver::clusters().await;
    // A Prometheus that has no data and notes whose token each query bore.
    let bearers: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prometheus = format!("http://{}/", listener.local_addr().unwrap());
    let seen = bearers.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let seen = seen.clone();
        async move {
            if let Some(value) = headers.get("authorization") {
                seen.lock()
                    .unwrap()
                    .push(value.to_str().unwrap_or_default().to_owned());
            }
            axum::Json(serde_json::json!(
                {"status": "success", "data": {"resultType": "vector", "result": []}}
            ))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("prometheus.token");
    let write_token = |token: &str| {
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_token("first-token");
    let path = dir.path().join("meshrelease.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nlog_format = \"text\"\nlog_level = \"info\"\n\
         resync_interval_ms = 100\nclusters = {}\n\
         [[meshes]]\nid = \"{MESH}\"\nclusters = [\"cluster-a\", \"cluster-b\"]\n\
         prometheus_url = \"{prometheus}\"\nprometheus_token_file = \"{}\"\n\
         [[tokens]]\nsubject = \"t\"\nsha256 = \"{}\"\nallow = [{{ actions = [\"asm:mesh:*\"], meshes = [\"*\"] }}]\n",
        clusters.flag_for("prometheus"),
        token_file.display(),
        sha(TOKEN)
    );
    std::fs::write(&path, text).unwrap();
    let server = start_with_config(&path);

    let mut body = release_body("judged", "reviews");
    body["spec"]["strategy"] = serde_json::json!({
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}],
        "analysis": {"interval": "1s",
                     "metrics": [{"name": "rate", "builtin": "requestRate", "min": 0}]}
    });
    let created = http_client()
        .post(format!(
            "{}/v2/meshes/{MESH}/namespaces/default/releases",
            server.base
        ))
        .header("X-Auth-Token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let until_bearer = |token: &'static str| {
        let bearers = bearers.clone();
        async move {
            for _ in 0..1200 {
                if bearers
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|b| b == &format!("Bearer {token}"))
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!(
                "Prometheus never saw {token}: {:?}",
                bearers.lock().unwrap()
            );
        }
    };
    until_bearer("first-token").await;

    write_token("second-token");
    server.signal("HUP");
    server.wait_for_log("configuration reloaded", 1).await;
    until_bearer("second-token").await;
    // From then on, only the new one.
    let seen_at_reload = bearers.lock().unwrap().len();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after: Vec<String> = bearers.lock().unwrap()[seen_at_reload..].to_vec();
    assert!(
        after.iter().all(|b| b == "Bearer second-token"),
        "{after:?}"
    );
}
