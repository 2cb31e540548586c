//! Putting the service together: the store, the domain, gRPC (with
//! reflection, health and gRPC-Web) and transcoded REST on one listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::api::ReleaseApi;
use crate::api::errors::WireError;
use crate::auth::TokenRegistry;
use crate::auth::credentials::CredentialRegistry;
use crate::auth::rate_limit::{Peers, Replicas};
use crate::configuration::{Settings, StoreKind};
use crate::domain::{Meshes, ReleaseManager};
use crate::http::authenticate::{Authenticator, Registries, authenticate, grpc_error};
use crate::http::body_deadline::body_deadline;
use crate::http::grpc_errors::normalize_grpc_errors;
use crate::http::health::{Readiness, healthz, readyz};
use crate::http::is_grpc;
use crate::http::observe::{MetricsEndpoint, Observer, metrics_endpoint, observe};
use crate::http::request_id::request_id;
use crate::http::server::{ConnectionLimits, bind, serve};
use crate::metrics::Metrics;
use crate::pb::asm::v2::release_service_server::ReleaseServiceServer;
use crate::reload::Reloader;
use crate::store::{Backend, MemoryStore, PostgresStore, ReleaseStore, SqliteStore};
use crate::transcode::{RouteTable, Transcoder, release_service_methods, transcode};

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    store: Arc<dyn ReleaseStore>,
    manager: Arc<ReleaseManager>,
    health: tonic_health::server::HealthReporter,
    /// The one shutdown signal: readiness, health, watch streams, the
    /// cluster driver and the accept loop all follow it.
    shutdown: CancellationToken,
    /// Fired by the stop signal, `shutdown_delay` before `shutdown`:
    /// readiness and gRPC health turn not serving while requests are still
    /// served, so that load balancers stop sending first.
    stopping: CancellationToken,
    shutdown_delay: std::time::Duration,
    driver: crate::driver::Driver,
    /// The steps of releases that run themselves.
    steps: crate::driver::Steps,
    reloader: Option<Reloader>,
    /// TLS on the listener, when configured.
    tls: Option<Arc<crate::http::tls::Tls>>,
    /// The replicas that share the store, and where their count is kept
    /// (the rate limits are split by it).
    peers: Option<(Arc<dyn Peers>, Arc<Replicas>)>,
}

impl Application {
    /// Opens the store and binds the listener (so port 0 works in tests);
    /// serving starts with [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store: Arc<dyn Backend> = match settings.store {
            StoreKind::Sqlite => Arc::new(SqliteStore::open(&settings.data_dir)?),
            StoreKind::Memory => Arc::new(MemoryStore::new()),
            StoreKind::Postgres => Arc::new(
                PostgresStore::connect_with_password(
                    settings.database.as_deref().unwrap_or_default(),
                    settings.database_password.as_ref().map(|p| p.0.as_str()),
                    None,
                    settings.database_pool_size,
                )
                .await
                .context("connecting to PostgreSQL (`database`)")?,
            ),
        };
        Self::build_with_store(settings, store).await
    }

    /// As [`Application::build`], on a store the caller made (tests and
    /// benchmarks bring their own).
    pub async fn build_with_store(
        settings: Settings,
        backend: Arc<dyn Backend>,
    ) -> anyhow::Result<Self> {
        let commit_metrics = backend.commit_metrics();
        let signed_writes = backend.signed_writes();
        let peers = backend.peers();
        let store: Arc<dyn ReleaseStore> = backend;
        let shutdown = CancellationToken::new();
        let stopping = CancellationToken::new();
        let driver_metrics = crate::metrics::DriverMetrics::default();
        let kube_clusters = Arc::new(
            crate::driver::KubeClusters::connect(&settings.clusters, driver_metrics.clone()).await,
        );
        let clusters: Arc<dyn crate::domain::ports::ClusterPort> = kube_clusters.clone();
        let manager = Arc::new(
            ReleaseManager::new(Meshes::new(settings.meshes.clone()), store.clone())
                .with_shutdown(shutdown.clone())
                .with_clusters(clusters.clone()),
        );
        let api = Arc::new(ReleaseApi::new(manager.clone()));
        let driver = crate::driver::Driver {
            manager: manager.clone(),
            clusters,
            leadership: store.leadership(),
            interval: settings.resync_interval,
            shutdown: shutdown.clone(),
            metrics: driver_metrics.clone(),
        };
        let steps = crate::driver::Steps {
            manager: manager.clone(),
            leadership: store.leadership(),
            shutdown: shutdown.clone(),
            metrics: driver_metrics.clone(),
            tick: settings
                .resync_interval
                .min(std::time::Duration::from_secs(1)),
            webhooks: crate::driver::Webhooks::new(driver_metrics.clone()),
            prometheus: crate::driver::Prometheus::new(driver_metrics.clone()),
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ReleaseServiceServer<ReleaseApi>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let grpc = tonic::service::Routes::new(
            ReleaseServiceServer::from_arc(api.clone())
                .max_decoding_message_size(settings.max_body_bytes)
                .max_encoding_message_size(settings.max_body_bytes.saturating_mul(2)),
        )
        .add_service(health_service)
        .add_service(
            reflection()
                .build_v1()
                .context("building gRPC reflection v1")?,
        )
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building gRPC reflection v1alpha")?,
        )
        .into_axum_router()
        .fallback(|request: Request| async move {
            grpc_error(
                &request,
                WireError::from_status(&tonic::Status::unimplemented(format!(
                    "no method {}",
                    request.uri().path()
                ))),
            )
        })
        .layer(middleware::from_fn(normalize_grpc_errors))
        // gRPC-Web on the gRPC services alone: it refuses plain HTTP/1.1.
        .layer(tonic_web::GrpcWebLayer::new());

        let metrics = Arc::new(Metrics::new(
            grpc_method_names(&[
                crate::pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ])?,
            commit_metrics,
            &driver_metrics,
        ));
        let table = RouteTable::from_descriptor_set(
            crate::pb::FILE_DESCRIPTOR_SET,
            release_service_methods(api),
        )
        .context("building the REST route table from the proto annotations")?;
        let table = Arc::new(table);
        // Made once: the description cannot change while the server runs.
        let openapi = axum::body::Bytes::from(
            serde_json::to_vec(&crate::transcode::openapi::describe(&table))
                .context("writing the OpenAPI description")?,
        );
        let rest = Router::new()
            .merge(crate::console::routes())
            .route("/healthz", get(healthz))
            .route(
                "/openapi.json",
                get(move || {
                    let openapi = openapi.clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], openapi) }
                }),
            )
            .route(
                "/metrics",
                get(metrics_endpoint).with_state(MetricsEndpoint {
                    metrics: metrics.clone(),
                    manager: manager.clone(),
                }),
            )
            .route(
                "/readyz",
                get(readyz).with_state(Readiness {
                    store: store.clone(),
                    shutdown: shutdown.clone(),
                    stopping: stopping.clone(),
                }),
            )
            .fallback(transcode)
            .with_state(Transcoder {
                table: table.clone(),
                max_body_bytes: settings.max_body_bytes,
            });

        let authenticator = Arc::new(Authenticator::new(
            Registries {
                tokens: TokenRegistry::new(settings.tokens.clone()),
                credentials: CredentialRegistry::new(settings.credentials.clone()),
            },
            settings.max_body_bytes,
            signed_writes,
        ));
        let peers = peers.map(|p| (p, authenticator.replicas.clone()));
        let reloader = Reloader {
            authenticator: authenticator.clone(),
            manager: manager.clone(),
            clusters: kube_clusters,
            restart_only: std::sync::Mutex::new(settings.restart_only()),
            tls: None,
        };

        // The protocol is chosen per request by content type, as the contract says.
        let app = Router::new()
            .fallback(move |request: Request| {
                let service = if is_grpc(request.headers()) {
                    grpc.clone()
                } else {
                    rest.clone()
                };
                async move { service.oneshot(request).await.into_response() }
            })
            .layer(middleware::from_fn_with_state(
                authenticator.clone(),
                authenticate,
            ))
            .layer(middleware::from_fn_with_state(
                settings.body_read_timeout,
                body_deadline,
            ))
            .layer(middleware::from_fn_with_state(
                Observer {
                    metrics,
                    routes: table,
                },
                observe,
            ))
            .layer(middleware::from_fn(request_id));
        // Outermost, so that a preflight (which carries no token) is
        // answered before authentication.
        let app = match crate::http::cors::layer(&settings.cors) {
            Some(cors) => app.layer(cors),
            None => app,
        };

        let tls = match &settings.tls {
            Some(files) => Some(Arc::new(
                crate::http::tls::Tls::load(files).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        let listener = bind(settings.listen, settings.listen_backlog)
            .with_context(|| format!("binding {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            app,
            limits: ConnectionLimits {
                header_read_timeout: settings.header_read_timeout,
                max_concurrent_streams: settings.max_concurrent_streams,
                max_local_error_reset_streams: 256,
                max_pending_accept_reset_streams: 64,
                max_header_bytes: 64 * 1024,
                max_connections: settings.max_connections,
                drain_timeout: settings.drain_timeout,
                idle_timeout: settings.idle_timeout,
            },
            store,
            manager,
            health,
            shutdown,
            stopping,
            shutdown_delay: settings.shutdown_delay,
            driver,
            steps,
            reloader: Some(Reloader {
                tls: tls.clone(),
                ..reloader
            }),
            tls,
            peers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https` when the listener speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The service's shutdown signal: cancelling it stops the service as a
    /// SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What a configuration reload replaces (taken once: the SIGHUP task
    /// owns it).
    pub fn take_reloader(&mut self) -> Option<Reloader> {
        self.reloader.take()
    }

    /// The release operations, as the cluster driver reaches them.
    pub fn manager(&self) -> Arc<ReleaseManager> {
        self.manager.clone()
    }

    /// Serves until `shutdown` resolves, drains requests in flight, then
    /// closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Application {
            listener,
            app,
            limits,
            store,
            health,
            shutdown: token,
            stopping,
            shutdown_delay,
            driver,
            steps,
            tls,
            peers,
            ..
        } = self;
        let driving = driver.spawn();
        let counting = peers.map(|(peers, replicas)| {
            tokio::spawn(crate::auth::rate_limit::count_replicas(
                peers,
                replicas,
                token.clone(),
            ))
        });
        let stepping = steps.spawn();
        let (fired, not_ready) = (token.clone(), stopping.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = fired.cancelled() => {}
                () = not_ready.cancelled() => {}
            }
            health
                .set_not_serving::<ReleaseServiceServer<ReleaseApi>>()
                .await;
        });
        let trigger = token.clone();
        let stop = async move {
            tokio::select! {
                () = shutdown => {
                    stopping.cancel();
                    if !shutdown_delay.is_zero() {
                        tracing::info!(
                            seconds = shutdown_delay.as_secs(),
                            "not ready; serving on until the shutdown delay ends, then draining"
                        );
                        tokio::select! {
                            () = tokio::time::sleep(shutdown_delay) => {}
                            () = trigger.cancelled() => {}
                        }
                    }
                    trigger.cancel();
                }
                () = trigger.cancelled() => {}
            }
        };
        serve(listener, app, limits, tls, stop).await;
        token.cancel();
        let _ = driving.await;
        let _ = stepping.await;
        if let Some(counting) = counting {
            let _ = counting.await;
        }
        store.close().await;
        tracing::info!("stopped");
    }
}

/// `package.Service/Method` of every method in `descriptor_sets`, plus gRPC
/// reflection's: the gRPC calls `/metrics` names.
fn grpc_method_names(descriptor_sets: &[&[u8]]) -> anyhow::Result<Vec<String>> {
    let mut names = vec![
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(),
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".to_owned(),
    ];
    for set in descriptor_sets {
        let pool = prost_reflect::DescriptorPool::decode(*set)
            .context("reading a descriptor set for the metrics labels")?;
        for service in pool.services() {
            for method in service.methods() {
                names.push(format!("{}/{}", service.full_name(), method.name()));
            }
        }
    }
    Ok(names)
}
