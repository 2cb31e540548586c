//! The configurations compared, each started by the benchmark itself on
//! 127.0.0.1:0, and a client that sends one request to it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use meshrelease::configuration::{Cli, Settings};
use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use meshrelease::pb::asm::v2::release_service_server::{ReleaseService, ReleaseServiceServer};
use meshrelease::startup::Application;
use meshrelease::store::{Backend, MemoryStore, PostgresStore, SqliteStore};
use sha2::Digest as _;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::workload::{MESH, TOKEN, Workload};

/// Connections to PostgreSQL, the same for the service's pool and the plain
/// INSERT loop (both share the server's `max_connections` of 100).
const PG_CONNECTIONS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Echo,
    GrpcMem,
    RestMem,
    GrpcSqlite,
    GrpcPg,
    /// A plain INSERT of the same JSON per request on the same database: the
    /// baseline grpc-pg is measured against.
    PgInsert,
    /// Transcoded REST with a token, PostgreSQL store.
    RestPg,
    /// The same, each request signed with AK/SK (and so remembered in the
    /// database, as a replay must be refused by every replica).
    SignedRestPg,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Echo => "echo",
            Target::GrpcMem => "grpc-mem",
            Target::RestMem => "rest-mem",
            Target::GrpcSqlite => "grpc-sqlite",
            Target::GrpcPg => "grpc-pg",
            Target::PgInsert => "pg-insert",
            Target::RestPg => "rest-pg",
            Target::SignedRestPg => "rest-pg-signed",
        }
    }
}

/// A started configuration; dropping it stops the server.
pub(crate) struct Running {
    pub(crate) client: Arc<Client>,
    /// meshrelease's own address, for `/metrics`.
    pub(crate) metrics_at: Option<SocketAddr>,
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data: Option<tempfile::TempDir>,
}

pub(crate) enum Client {
    Grpc(Vec<ReleaseServiceClient<Channel>>),
    Rest {
        clients: Vec<reqwest::Client>,
        url: String,
        /// Sign each request instead of sending the token.
        signed: bool,
    },
    Sql {
        pool: deadpool_postgres::Pool,
        table: String,
    },
}

impl Client {
    /// Sends request `seq` of `worker`; an error names what went wrong.
    pub(crate) async fn send(
        &self,
        workload: &Workload,
        worker: usize,
        seq: u64,
    ) -> Result<(), String> {
        match self {
            Client::Grpc(channels) => {
                let mut client = channels[worker % channels.len()].clone();
                let mut request = Request::new(workload.grpc(worker, seq));
                request
                    .metadata_mut()
                    .insert("x-auth-token", TOKEN.parse().expect("ascii"));
                client
                    .create_release(request)
                    .await
                    .map(drop)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
            Client::Rest {
                clients,
                url,
                signed,
            } => {
                let body = workload.json(worker, seq);
                let request = clients[worker % clients.len()]
                    .post(url)
                    .header("content-type", "application/json");
                let request = if *signed {
                    sign(request, url, &body)
                } else {
                    request.header("x-auth-token", TOKEN)
                };
                let response = request.body(body).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                }
            }
            Client::Sql { pool, table } => {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let statement = client
                    .prepare_cached(&format!("INSERT INTO {table} (name, body) VALUES ($1, $2)"))
                    .await
                    .map_err(|e| e.to_string())?;
                let name = format!("{worker}-{seq}");
                client
                    .execute(&statement, &[&name, &workload.json(worker, seq)])
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The access key of the signed target, and its secret.
const ACCESS_KEY: &str = "BENCHAK0000000000000";
const SECRET_KEY: &str = "bench-secret-key-0123456789";

/// `request` to `url` with `body`, signed as the cloud's SDKs sign
/// (`SDK-HMAC-SHA256` over the host, content type and date).
fn sign(request: reqwest::RequestBuilder, url: &str, body: &str) -> reqwest::RequestBuilder {
    use meshrelease::auth::signature;
    let (host, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .expect("a URL with a path");
    let path = format!("/{path}");
    let date = chrono::Utc::now()
        .format(signature::DATE_FORMAT)
        .to_string();
    let headers = [
        ("content-type", "application/json"),
        ("host", host),
        ("x-sdk-date", date.as_str()),
    ];
    let names: Vec<String> = headers.iter().map(|(n, _)| (*n).to_owned()).collect();
    let canonical = signature::canonical_request(
        "POST",
        &path,
        None,
        &names,
        |name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        },
        &hex::encode(sha2::Sha256::digest(body.as_bytes())),
    )
    .expect("a canonical request");
    let signature = signature::sign(
        SECRET_KEY.as_bytes(),
        &signature::string_to_sign(&date, &canonical),
    );
    request.header("x-sdk-date", date).header(
        "authorization",
        format!(
            "{} Access={ACCESS_KEY}, SignedHeaders={}, Signature={}",
            signature::ALGORITHM,
            names.join(";"),
            hex::encode(signature)
        ),
    )
}

/// How a service target is called.
#[derive(Clone, Copy)]
enum Protocol {
    Grpc,
    Rest,
    SignedRest,
}

pub(crate) struct Options {
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) database_url: Option<String>,
}

pub(crate) async fn start(target: Target, options: &Options) -> anyhow::Result<Running> {
    match target {
        Target::Echo => start_echo(options).await,
        Target::GrpcMem => {
            start_service(Arc::new(MemoryStore::new()), None, Protocol::Grpc, options).await
        }
        Target::RestMem => {
            start_service(Arc::new(MemoryStore::new()), None, Protocol::Rest, options).await
        }
        Target::GrpcSqlite => {
            let data = tempfile::tempdir()?;
            let store = Arc::new(SqliteStore::open(data.path())?);
            start_service(store, Some(data), Protocol::Grpc, options).await
        }
        Target::GrpcPg => start_pg(Protocol::Grpc, options).await,
        Target::RestPg => start_pg(Protocol::Rest, options).await,
        Target::SignedRestPg => start_pg(Protocol::SignedRest, options).await,
        Target::PgInsert => {
            let url = database_url(options)?;
            let schema = fresh_schema(url).await?;
            let pool = pool(url, &schema, PG_CONNECTIONS)?;
            pool.get()
                .await?
                .batch_execute(
                    "CREATE TABLE plain_inserts (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL)",
                )
                .await?;
            Ok(Running {
                client: Arc::new(Client::Sql {
                    pool,
                    table: "plain_inserts".into(),
                }),
                metrics_at: None,
                _stop: None,
                _data: None,
            })
        }
    }
}

/// The service on a PostgreSQL store of a fresh schema, called by `protocol`.
async fn start_pg(protocol: Protocol, options: &Options) -> anyhow::Result<Running> {
    let url = database_url(options)?;
    let schema = fresh_schema(url).await?;
    let store = PostgresStore::connect(url, Some(&schema), PG_CONNECTIONS)
        .await
        .context("connecting the PostgreSQL store")?;
    start_service(Arc::new(store), None, protocol, options).await
}

fn database_url(options: &Options) -> anyhow::Result<&str> {
    options
        .database_url
        .as_deref()
        .context("grpc-pg, pg-insert, rest-pg and rest-pg-signed need --database-url")
}

/// A schema of its own for this run, so runs never see each other's rows.
async fn fresh_schema(url: &str) -> anyhow::Result<String> {
    let schema = format!("mr_bench_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;
    Ok(schema)
}

/// Drops the schemas this benchmark made.
pub(crate) async fn drop_schemas(url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'mr_bench_%'",
            &[],
        )
        .await?;
    for row in rows {
        let schema: String = row.get(0);
        // A service still stopping may be reading the schema: the DROP can
        // lose a deadlock to it, and wins on a later try.
        for attempt in 1.. {
            match client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
            {
                Ok(()) => break,
                Err(e)
                    if attempt < 10
                        && e.code()
                            == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn pool(url: &str, schema: &str, size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.options(format!("-c search_path={schema}"));
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(size.max(2))
        .build()?)
}

/// The service's settings: the benchmark's token, and its access key (whose
/// secret is written to a file in `secrets`, as the service requires).
fn settings(secrets: &std::path::Path) -> anyhow::Result<Settings> {
    use std::os::unix::fs::PermissionsExt as _;
    let sha = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
    let secret_file = secrets.join("bench.sk");
    std::fs::write(&secret_file, SECRET_KEY)?;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))?;
    let cli = Cli {
        listen: Some("127.0.0.1:0".into()),
        log_level: Some("error".into()),
        drain_timeout_secs: Some(1),
        meshes: Some(format!(
            r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"] }}]"#
        )),
        tokens: Some(format!(
            r#"[{{ subject = "bench", sha256 = "{sha}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }}]"#
        )),
        credentials: Some(format!(
            r#"[{{ subject = "bench-signed", access_key = "{ACCESS_KEY}", secret_key_file = "{}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }}]"#,
            secret_file.display()
        )),
        // Above the default of 200 streams, so that the benchmark's own
        // concurrency is never what limits it.
        max_concurrent_streams: Some(1024),
        ..Cli::default()
    };
    Ok(Settings::load(&cli)?)
}

async fn start_service(
    store: Arc<dyn Backend>,
    data: Option<tempfile::TempDir>,
    protocol: Protocol,
    options: &Options,
) -> anyhow::Result<Running> {
    // Read at start; the file may go afterwards.
    let secrets = tempfile::tempdir()?;
    let app = Application::build_with_store(settings(secrets.path())?, store).await?;
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = match protocol {
        Protocol::Grpc => grpc_client(address, options).await?,
        Protocol::Rest => rest_client(address, options, false)?,
        Protocol::SignedRest => rest_client(address, options, true)?,
    };
    Ok(Running {
        client: Arc::new(client),
        metrics_at: Some(address),
        _stop: Some(stop),
        _data: data,
    })
}

pub(crate) async fn grpc_client(address: SocketAddr, options: &Options) -> anyhow::Result<Client> {
    let mut channels = Vec::new();
    for _ in 0..options.connections.max(1) {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        channels.push(
            ReleaseServiceClient::new(channel)
                .max_decoding_message_size(16 * 1024 * 1024)
                .max_encoding_message_size(16 * 1024 * 1024),
        );
    }
    Ok(Client::Grpc(channels))
}

/// REST clients speak HTTP/1.1 with keep-alive, as most REST clients do: one
/// connection per request in flight.
pub(crate) fn rest_client(
    address: SocketAddr,
    options: &Options,
    signed: bool,
) -> anyhow::Result<Client> {
    let per_client = options.concurrency.div_ceil(options.connections.max(1));
    let clients = (0..options.connections.max(1))
        .map(|_| {
            reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(per_client)
                .tcp_nodelay(true)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Client::Rest {
        clients,
        url: format!("http://{address}/v2/meshes/{MESH}/namespaces/default/releases"),
        signed,
    })
}

/// The ceiling: tonic decoding the same request and answering it, nothing else.
struct Echo;

#[tonic::async_trait]
impl ReleaseService for Echo {
    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Ok(Response::new(
            request.into_inner().release.unwrap_or_default(),
        ))
    }

    async fn get_release(
        &self,
        _: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn list_releases(
        &self,
        _: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<meshrelease::pb::list::ReleaseList>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn update_release(
        &self,
        _: Request<pb::UpdateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn patch_release(
        &self,
        _: Request<pb::PatchReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn delete_release(
        &self,
        _: Request<pb::DeleteReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    type WatchReleasesStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch_releases(
        &self,
        _: Request<pb::WatchReleasesRequest>,
    ) -> Result<Response<Self::WatchReleasesStream>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn pause_release(
        &self,
        _: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn resume_release(
        &self,
        _: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn promote_release(
        &self,
        _: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn abort_release(
        &self,
        _: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn retry_release(
        &self,
        _: Request<pb::ReleaseActionRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn list_release_checks(
        &self,
        _: Request<pb::ListReleaseChecksRequest>,
    ) -> Result<Response<meshrelease::pb::list::ReleaseCheckList>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

async fn start_echo(options: &Options) -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(1024)
        .tcp_nodelay(true)
        .add_service(ReleaseServiceServer::new(Echo))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(server);
    Ok(Running {
        client: Arc::new(grpc_client(address, options).await?),
        metrics_at: None,
        _stop: Some(stop),
        _data: None,
    })
}
