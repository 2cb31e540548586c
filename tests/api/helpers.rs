use std::net::SocketAddr;
use std::sync::Arc;

use meshrelease::configuration::{Cli, Settings};
use meshrelease::domain::phase::Move;
use meshrelease::domain::{ReleaseManager, ReleaseRef, StatusUpdate};
use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use meshrelease::startup::Application;
use meshrelease::store::{Backend, MemoryStore, PostgresStore, SqliteStore};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const TOKEN: &str = "test-token";
/// May create only in `other-mesh`.
pub const OTHER_MESH_TOKEN: &str = "other-mesh-token";
/// Allowed everything, but denied creating in `demo-mesh`.
pub const DENIED_TOKEN: &str = "denied-token";
/// May only get and list, in `other-mesh`.
pub const OTHER_READER_TOKEN: &str = "other-reader-token";
pub const MESH: &str = "demo-mesh";

/// How long any one test request may take before the test fails instead of
/// hanging (a watch read by a test ends well within it).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The HTTP client every test uses: a request that hangs fails the test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// The hex SHA-256 of a token, as the configuration stores it.
pub fn sha(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

pub fn test_cli(data_dir: &std::path::Path) -> Cli {
    Cli {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.to_path_buf()),
        log_level: Some("warn".into()),
        drain_timeout_secs: Some(5),
        meshes: Some(format!(
            r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"] }}, {{ id = "other-mesh", clusters = ["cluster-z"] }}]"#
        )),
        tokens: Some(format!(
            r#"[
              {{ subject = "tester", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }},
              {{ subject = "other", sha256 = "{}", allow = [{{ actions = ["asm:mesh:createRelease"], meshes = ["other-mesh"] }}] }},
              {{ subject = "denied", sha256 = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}, {{ effect = "Deny", actions = ["asm:mesh:createRelease"], meshes = ["{MESH}"] }}] }},
              {{ subject = "other-reader", sha256 = "{}", allow = [{{ actions = ["asm:mesh:getRelease", "asm:mesh:listReleases"], meshes = ["other-mesh"] }}] }}
            ]"#,
            sha(TOKEN),
            sha(OTHER_MESH_TOKEN),
            sha(DENIED_TOKEN),
            sha(OTHER_READER_TOKEN)
        )),
        ..Cli::default()
    }
}

pub struct TestApp {
    /// The domain, as the cluster driver reaches it (tests stand in for the
    /// driver through its status-only write).
    pub manager: Arc<ReleaseManager>,
    pub address: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: Arc<TempDir>,
    /// What a restart reopens.
    pub store: TestStore,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// The store the API tests run on, chosen by `MESHRELEASE_TEST_STORE`:
/// `sqlite` (the default), `memory`, or `postgres` (a fresh schema of
/// `MESHRELEASE_TEST_DATABASE_URL` per test). `.ci/run` runs the suite on
/// each. A restart reopens the same data.
#[derive(Clone)]
pub enum TestStore {
    /// The file in the app's data directory.
    Sqlite,
    /// Kept in the test process, so a restarted service finds it again.
    Memory(Arc<MemoryStore>),
    Postgres {
        url: String,
        /// Dropped with the last app (and restart) that uses it.
        _schema: Arc<SchemaGuard>,
    },
}

impl TestStore {
    async fn chosen() -> Self {
        match std::env::var("MESHRELEASE_TEST_STORE").as_deref() {
            Err(_) | Ok("" | "sqlite") => Self::Sqlite,
            Ok("memory") => Self::Memory(Arc::new(MemoryStore::new())),
            Ok("postgres") => {
                let (url, schema) = fresh_schema()
                    .await
                    .expect("MESHRELEASE_TEST_STORE=postgres needs MESHRELEASE_TEST_DATABASE_URL");
                Self::Postgres {
                    url,
                    _schema: Arc::new(schema),
                }
            }
            Ok(other) => panic!("MESHRELEASE_TEST_STORE={other:?}: sqlite, memory or postgres"),
        }
    }

    /// Whether it is PostgreSQL, whose revisions other sessions of the
    /// database advance too.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    async fn open(&self, settings: &Settings) -> Arc<dyn Backend> {
        match self {
            Self::Sqlite => Arc::new(SqliteStore::open(&settings.data_dir).unwrap()),
            Self::Memory(store) => store.clone(),
            Self::Postgres { url, .. } => {
                Arc::new(PostgresStore::connect(url, None, 4).await.unwrap())
            }
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server whose settings `adjust` may change, on the store
/// `MESHRELEASE_TEST_STORE` names.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Cli)) -> TestApp {
    let store = TestStore::chosen().await;
    spawn_app_in(Arc::new(tempfile::tempdir().unwrap()), store, adjust).await
}

/// Starts a server on SQLite whatever the suite runs on (for a test that
/// reads or changes the database file itself).
pub async fn spawn_sqlite_app() -> TestApp {
    spawn_app_in(
        Arc::new(tempfile::tempdir().unwrap()),
        TestStore::Sqlite,
        |_| {},
    )
    .await
}

/// Starts a server on an existing data directory and store (to restart one).
pub async fn spawn_app_in(
    data_dir: Arc<TempDir>,
    store: TestStore,
    adjust: impl FnOnce(&mut Cli),
) -> TestApp {
    let mut cli = test_cli(data_dir.path());
    adjust(&mut cli);
    let settings = Settings::load(&cli).unwrap();
    let opened = store.open(&settings).await;
    start(settings, opened, data_dir, store).await
}

/// Starts a server on a store of the test's making.
pub async fn spawn_app_on(store: Arc<dyn Backend>) -> TestApp {
    spawn_app_on_with(store, |_| {}).await
}

/// As [`spawn_app_on`], with settings `adjust` may change.
pub async fn spawn_app_on_with(store: Arc<dyn Backend>, adjust: impl FnOnce(&mut Cli)) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cli = test_cli(data_dir.path());
    adjust(&mut cli);
    let settings = Settings::load(&cli).unwrap();
    start(settings, store, data_dir, TestStore::Sqlite).await
}

async fn start(
    settings: Settings,
    store: Arc<dyn Backend>,
    data_dir: Arc<TempDir>,
    kept: TestStore,
) -> TestApp {
    meshrelease::telemetry::init(
        settings.log_format,
        &settings.log_level,
        &meshrelease::telemetry::AuditSink::Off,
    )
    .unwrap();
    let app = Application::build_with_store(settings, store)
        .await
        .unwrap();
    let address = app.local_addr();
    let manager = app.manager();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        manager,
        address,
        base: format!("http://{address}"),
        http: http_client(),
        data_dir,
        store: kept,
        stop: Some(stop),
        done: Some(done),
    }
}

impl TestApp {
    pub fn releases_url(&self, mesh: &str, namespace: &str) -> String {
        format!(
            "{}/v2/meshes/{mesh}/namespaces/{namespace}/releases",
            self.base
        )
    }

    /// POSTs `body` to the create route of demo-mesh/default with the test token.
    pub async fn create(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.releases_url(MESH, "default"))
            .header("X-Auth-Token", TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a release body to the create route of another namespace of demo-mesh.
    pub async fn create_in(&self, namespace: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.releases_url(MESH, namespace))
            .header("X-Auth-Token", TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends raw HTTP/1.1 request bytes and returns the first bytes answered.
    pub async fn raw_http(&self, head: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The HTTP status of `GET /readyz`.
    pub async fn readyz(&self) -> u16 {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn release_url(&self, name: &str) -> String {
        format!("{}/{name}", self.releases_url(MESH, "default"))
    }

    pub async fn get(&self, name: &str) -> reqwest::Response {
        self.http
            .get(self.release_url(name))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, name: &str, body: &Value) -> reqwest::Response {
        self.http
            .put(self.release_url(name))
            .header("X-Auth-Token", TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, name: &str, action: Option<&str>) -> reqwest::Response {
        let url = match action {
            Some(action) => format!("{}?action={action}", self.release_url(name)),
            None => self.release_url(name),
        };
        self.http
            .delete(url)
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// GETs a list URL (relative to the server) with the test token.
    pub async fn list(&self, path_and_query: &str) -> (u16, Value) {
        json_of(
            self.http
                .get(format!("{}{path_and_query}", self.base))
                .header("X-Auth-Token", TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn grpc(&self) -> ReleaseServiceClient<Channel> {
        ReleaseServiceClient::new(self.channel().await)
    }

    /// A gRPC channel whose calls fail rather than hang: connecting and
    /// each call's answer (for a stream, its first headers) are bounded.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.base.clone())
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .unwrap()
    }

    /// Records a phase move of release `name` in demo-mesh/default as the
    /// cluster driver would, through the status-only write.
    pub async fn drive(&self, name: &str, step: Move) -> meshrelease::domain::Release {
        let target = ReleaseRef {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: name.into(),
        };
        let current = self.manager.read(&target).await.unwrap();
        self.manager
            .write_status(
                &target,
                current.resource_version,
                StatusUpdate {
                    step: Some(step),
                    observed_generation: Some(current.generation),
                    ..StatusUpdate::default()
                },
            )
            .await
            .unwrap()
    }

    /// Takes release `name` from Pending to Running as the driver would.
    pub async fn drive_to_running(&self, name: &str) {
        self.drive(name, Move::StartDeploying).await;
        self.drive(name, Move::GrayReady).await;
    }

    /// PATCHes release `name` in demo-mesh/default with `body`.
    pub async fn patch(&self, name: &str, body: &Value) -> reqwest::Response {
        self.http
            .patch(self.release_url(name))
            .header("X-Auth-Token", TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The body of `GET {base}{path}`, sent without a token.
    pub async fn text_of(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops gracefully, as on SIGTERM.
    /// Stops the service (as on SIGTERM) and starts another on the same
    /// data, with settings `adjust` may change.
    pub async fn restart(self, adjust: impl FnOnce(&mut Cli)) -> TestApp {
        let (data_dir, store) = (self.data_dir.clone(), self.store.clone());
        self.stop().await;
        spawn_app_in(data_dir, store, adjust).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

/// A request with the test token in its metadata.
pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(message, TOKEN)
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-auth-token", token.parse().unwrap());
    request
}

pub fn deployment_template(app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"labels": {"app": app}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": app, "image": format!("registry.example/{app}:2.0")}]}
            }
        }
    })
}

/// A valid release body for demo-mesh/default.
pub fn release_body(name: &str, service: &str) -> Value {
    json!({
        "kind": "Release",
        "apiVersion": "asm/v2",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "serviceName": service,
            "clusterID": "cluster-a",
            "deploymentName": format!("{service}-v1"),
            "version": "v2",
            "type": "canary",
            "grayDeployments": [{"clusterID": "cluster-b", "template": deployment_template(service)}]
        }
    })
}

/// The same release as a gRPC request.
pub fn grpc_request(name: &str, service: &str) -> pb::CreateReleaseRequest {
    let release: pb::Release = serde_json::from_value(release_body(name, service)).unwrap();
    pb::CreateReleaseRequest {
        dry_run: false,
        mesh_id: MESH.into(),
        namespace: "default".into(),
        release: Some(release),
    }
}

/// The `details[].field` of an error body.
pub fn detail_fields(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|v| v["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap();
    (status, body)
}

/// Racing requests for one name: exactly one won, every other got 409.
pub fn assert_one_winner(statuses: &[u16]) {
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        statuses.len() - 1,
        "{statuses:?}"
    );
}

/// A schema of its own in the test database, dropped when this guard goes,
/// also when the test panics (it derefs to the schema's name).
pub struct SchemaGuard(String);

impl std::ops::Deref for SchemaGuard {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_schema(&name));
            Some(())
        })
        .join();
    }
}

/// A schema of its own in the test database, and a URL whose connections
/// use it; `None` (and a line saying so) without MESHRELEASE_TEST_DATABASE_URL.
pub async fn fresh_schema() -> Option<(String, SchemaGuard)> {
    let Ok(url) = std::env::var("MESHRELEASE_TEST_DATABASE_URL") else {
        eprintln!("skipped: set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests");
        return None;
    };
    let schema = format!("mr_replicas_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    Some((
        // Named after the schema, so that dropping it can first end the
        // connections of a service still running on it.
        format!("{url}{separator}options=-c%20search_path%3D{schema}&application_name={schema}"),
        SchemaGuard(schema),
    ))
}

/// Drops `schema` if it is still there, ending first the connections of
/// any service still using it (one left running by a failed test would hold
/// its locks, and the DROP would wait for ever).
pub async fn drop_schema(schema: &str) {
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&schema],
        )
        .await
        .unwrap();
    // A service still stopping may be reading the schema: DROP can lose a
    // deadlock to it, and wins on a later try.
    for attempt in 1.. {
        match client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
        {
            Ok(()) => return,
            Err(e)
                if attempt < 10
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("dropping schema {schema}: {e}"),
        }
    }
}
