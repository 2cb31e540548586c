//! Several replicas on one PostgreSQL database (run when
//! MESHRELEASE_TEST_DATABASE_URL is set; said to be skipped otherwise).

use std::time::Duration;

use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use tokio_stream::StreamExt as _;

use crate::binary::{Server, start};
use crate::helpers::*;

async fn post(base: &str, name: &str, service: &str) -> u16 {
    http_client()
        .post(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases"
        ))
        .header("X-Auth-Token", TOKEN)
        .json(&release_body(name, service))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn stop(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn two_replicas_share_one_database() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both start at once: migrations must not collide.
    let (a, b) = (
        start(dir_a.path(), &["--database", &url]),
        start(dir_b.path(), &["--database", &url]),
    );

    // A watcher on B sees what is written through A.
    let channel = tonic::transport::Channel::from_shared(b.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut events = ReleaseServiceClient::new(channel)
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(post(&a.base, "made-on-a", "reviews").await, 200);
    let read = http_client()
        .get(format!(
            "{}/v2/meshes/{MESH}/namespaces/default/releases/made-on-a",
            b.base
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "a create through A is read through B");

    let event = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.r#type, "ADDED");
    assert_eq!(event.release.unwrap().metadata.unwrap().name, "made-on-a");

    // 20 racing creates of one name over both replicas: exactly one 200.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        tasks.push(tokio::spawn(async move {
            post(&base, "raced-name", &format!("svc-{i}")).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.len(), 20);
    assert_one_winner(&statuses);

    stop(a);
    stop(b);
    drop_schema(&schema).await;
}

/// A loopback TCP proxy to PostgreSQL that the test can cut and restore,
/// to take the database away from the service without touching the server.
pub(crate) struct Proxy {
    port: u16,
    upstream: String,
    running: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    )>,
}

impl Proxy {
    /// A proxy to the test database, and a URL of that database through it.
    pub(crate) async fn to_test_database() -> (Self, String) {
        let base_url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").unwrap();
        let config: tokio_postgres::Config = base_url.parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let proxy = Proxy::new(format!("{host}:{port}")).await;
        let url = format!(
            "postgres://{}@127.0.0.1:{}/{}",
            config.get_user().unwrap_or("postgres"),
            proxy.port,
            config.get_dbname().unwrap_or("test")
        );
        (proxy, url)
    }

    async fn new(upstream: String) -> Self {
        let mut proxy = Proxy {
            port: 0,
            upstream,
            running: None,
        };
        proxy.start().await;
        proxy
    }

    pub(crate) async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let (cut, cut_watch) = tokio::sync::watch::channel(false);
        let upstream = self.upstream.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let mut cut_watch = cut_watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_watch.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        self.running = Some((task, cut));
    }

    /// Closes the listener and every proxied connection.
    pub(crate) fn cut(&mut self) {
        if let Some((task, cut)) = self.running.take() {
            task.abort();
            cut.send_replace(true);
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn losing_the_database_is_503_and_the_service_recovers_by_itself() {
    let Some((_, schema)) = fresh_schema().await else {
        return;
    };
    let (mut proxy, url) = Proxy::to_test_database().await;
    let store = meshrelease::store::PostgresStore::connect(&url, Some(&schema), 4)
        .await
        .unwrap();
    let app = spawn_app_on(std::sync::Arc::new(store)).await;
    assert_eq!(
        app.create(&release_body("before-outage", "reviews"))
            .await
            .status(),
        200
    );

    proxy.cut();
    let (status, error) =
        json_of(app.create(&release_body("during-outage", "ratings")).await).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["errorCode"], "ASM.01040002");
    assert_eq!(app.readyz().await, 503);
    let err = app
        .grpc()
        .await
        .create_release(authed(grpc_request("during-outage", "ratings")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    proxy.start().await;
    // No restart: the pool reconnects on its own (bounded wait, not a timing check).
    let mut recovered = false;
    for _ in 0..100 {
        if app
            .create(&release_body("after-outage", "ratings"))
            .await
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the service did not recover when the database came back"
    );
    assert_eq!(app.readyz().await, 200);
    proxy.cut();
    drop_schema(&schema).await;
}

/// A page of the mesh's releases through `base`, after `token` when given.
async fn page(base: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut url = format!("{base}/v2/meshes/{MESH}/releases?limit=1");
    if let Some(token) = token {
        url.push_str(&format!("&continue={token}"));
    }
    json_of(
        http_client()
            .get(url)
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A create carrying an idempotency key (`X-Client-Token`).
async fn post_once(base: &str, name: &str, key: &str) -> (u16, serde_json::Value) {
    json_of(
        http_client()
            .post(format!(
                "{base}/v2/meshes/{MESH}/namespaces/default/releases"
            ))
            .header("X-Auth-Token", TOKEN)
            .header("X-Client-Token", key)
            .json(&release_body(name, "reviews"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn a_continue_token_and_a_client_token_from_one_replica_work_on_the_other() {
    let Some((url, schema)) = fresh_schema().await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path(), &["--database", &url]);
    let b = start(dir_b.path(), &["--database", &url]);
    for (name, service) in [("one-rel", "svc-1"), ("two-rel", "svc-2")] {
        assert_eq!(post(&a.base, name, service).await, 200);
    }
    let (_, first) = page(&a.base, None).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    let (status, second) = page(&b.base, Some(&token)).await;
    assert_eq!(status, 200, "a token from A is good on B: {second}");
    assert_ne!(
        second["items"][0]["metadata"]["name"], first["items"][0]["metadata"]["name"],
        "the next page, not the first again"
    );

    let (status, made) = post_once(&a.base, "keyed-rel", "key-across-replicas").await;
    assert_eq!(status, 200, "{made}");
    let (status, again) = post_once(&b.base, "keyed-rel", "key-across-replicas").await;
    assert_eq!(
        status, 200,
        "a retry through B returns the original: {again}"
    );
    assert_eq!(again["metadata"]["uid"], made["metadata"]["uid"]);
    stop(a);
    stop(b);
    drop_schema(&schema).await;
}
