//! A PostgreSQL store, for several replicas sharing one database. Every rule is
//! enforced by the database (unique constraints and indexes, compare-and-swap
//! in the statements' `WHERE`), and writers never wait for each other: each
//! write is one statement committed on its own pooled connection, in
//! parallel with the rest (`writes.rs`). Watchers still see every change in
//! revision order without a gap (`change_log.rs`).

mod change_log;
mod checks;
mod leadership;
mod schema;
mod shared_limits;
mod tls;
mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::{Notify, watch};

use leadership::PgLeadership;

use super::{
    Created, Event, IdempotencyKey, ListQuery, Page, ReleaseStore, Snapshot, StoreError, Written,
};
use crate::domain::ports::Leadership;
use crate::domain::strategy::CheckResult;
use crate::domain::{Release, ReleaseRef};
use crate::metrics::CommitMetrics;

pub struct PostgresStore {
    pool: Pool,
    revisions: watch::Sender<u64>,
    /// Wakes the follower after this process commits.
    committed: Arc<Notify>,
    secret: [u8; 32],
    /// Added to a transaction id to make its revision.
    offset: i64,
    follower: tokio::task::JoinHandle<()>,
    commits: CommitMetrics,
    leadership: Arc<PgLeadership>,
    /// Signed requests carried out, and the replicas' heartbeat.
    shared_limits: Arc<shared_limits::SharedLimits>,
}

impl PostgresStore {
    /// Connects to `url` (optionally in `schema`, which must exist), migrates
    /// the schema and starts following the change log.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        Self::connect_with_password(url, None, schema, max_connections).await
    }

    /// As [`PostgresStore::connect`], with a password kept out of the URL.
    pub async fn connect_with_password(
        url: &str,
        password: Option<&str>,
        schema: Option<&str>,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let tls::Connection { config, tls } = connection_config(url, password)?;
        Self::connect_config(config, tls, schema, max_connections).await
    }

    async fn connect_config(
        mut config: tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        schema: Option<&str>,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        config.connect_timeout(Duration::from_secs(5));
        if let Some(schema) = schema {
            anyhow::ensure!(
                schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "schema names are letters, digits and '_'"
            );
            config.options(format!("-c search_path={schema}"));
        }
        let leadership = Arc::new(PgLeadership::new(config.clone(), tls.clone()));
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(2))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(Duration::from_secs(5)),
                create: Some(Duration::from_secs(5)),
                recycle: Some(Duration::from_secs(5)),
            })
            .build()?;
        let shared = schema::migrate(&pool).await?;
        let offset = shared.revision_offset;
        let start = change_log::frontier(&pool.get().await?, offset).await?;
        let revisions = watch::channel(start).0;
        let committed = Arc::new(Notify::new());
        let follower = tokio::spawn(change_log::follow(
            pool.clone(),
            revisions.clone(),
            committed.clone(),
            offset,
        ));
        Ok(Self {
            leadership,
            shared_limits: Arc::new(shared_limits::SharedLimits {
                pool: pool.clone(),
                id: uuid::Uuid::new_v4().to_string(),
            }),
            pool,
            revisions,
            committed,
            secret: shared.secret,
            offset,
            follower,
            commits: CommitMetrics::default(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Forgets all but the newest `keep` events of the change log (the
    /// store does so itself every few seconds, keeping
    /// [`EVENT_RETENTION`](super::EVENT_RETENTION)); a watch resuming from
    /// before them is refused as too old.
    pub async fn prune_change_log(&self, keep: u64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        change_log::prune(&mut client, keep).await
    }

    /// Counts a write's commit and tells this process's watchers.
    fn wrote<T>(&self, started: Instant, result: &Result<T, StoreError>) {
        if result.is_ok() {
            self.commits.observe(started.elapsed(), 1);
            self.committed.notify_one();
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Whether `url` reads as a PostgreSQL connection: its settings, its
/// `sslmode` and the CA file it names (for the configuration's check).
pub fn check_url(url: &str) -> Result<(), String> {
    tls::connection(url).map(drop)
}

/// The connection settings of `url`, to describe it (never its password).
pub fn url_config(url: &str) -> Option<tokio_postgres::Config> {
    tls::connection(url).ok().map(|c| c.config)
}

/// The URL's settings (and the TLS it asks for), with `password` (when
/// given) in place of the URL's.
fn connection_config(url: &str, password: Option<&str>) -> anyhow::Result<tls::Connection> {
    let mut connection = tls::connection(url).map_err(anyhow::Error::msg)?;
    if let Some(password) = password {
        connection.config.password(password);
    }
    Ok(connection)
}

fn db(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.into())
    }
}

/// A release as stored: its body's own resourceVersion is not read (a write
/// learns its revision only as it commits); the row's is.
fn encode(release: &Release) -> Result<String, StoreError> {
    serde_json::to_string(release).map_err(|e| StoreError::Internal(e.into()))
}

fn decode(body: &str, revision: i64) -> Result<Release, StoreError> {
    let mut release: Release = serde_json::from_str(body)
        .map_err(|e| StoreError::Internal(anyhow::Error::new(e).context("a stored release")))?;
    release.resource_version = revision as u64;
    Ok(release)
}

#[async_trait]
impl ReleaseStore for PostgresStore {
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let client = self.client().await?;
        let started = Instant::now();
        let created = writes::create(&client, self.offset, release, idempotency).await;
        if let Ok(Created::New(_)) = &created {
            self.wrote(started, &created);
        }
        created
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT resource_version, body FROM releases
                 WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
            )
            .await
            .map_err(db)?;
        let row = client
            .query_opt(&statement, &[&mesh_id, &namespace, &name])
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get(1), r.get(0))).transpose()
    }

    async fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        let client = self.client().await?;
        writes::check_create(&client, release).await
    }

    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError> {
        let client = self.client().await?;
        let started = Instant::now();
        let updated = writes::update(&client, self.offset, release, expected).await;
        self.wrote(started, &updated);
        updated
    }

    async fn remove(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<Release, StoreError> {
        let client = self.client().await?;
        let started = Instant::now();
        let removed =
            writes::remove(&client, self.offset, [mesh_id, namespace, name], expected).await;
        self.wrote(started, &removed);
        if let Ok(release) = &removed {
            checks::forget(&client, &release.uid).await?;
        }
        removed
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let client = self.client().await?;
        let limit = query.limit as i64 + 1;
        let statement = client
            .prepare_cached(
                "SELECT seq, resource_version, body FROM releases
                 WHERE mesh_id = $1 AND seq > $2
                   AND ($3::TEXT IS NULL OR namespace = $3)
                   AND ($4::TEXT IS NULL OR service_name = $4)
                   AND ($5::TEXT IS NULL OR phase = $5)
                 ORDER BY seq LIMIT $6",
            )
            .await
            .map_err(db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.mesh_id,
                    &query.after.unwrap_or(i64::MIN),
                    &query.namespace,
                    &query.service_name,
                    &query.phase.map(|p| p.as_str()),
                    &limit,
                ],
            )
            .await
            .map_err(db)?;
        Page::from_rows(
            rows.iter().map(|row| {
                Ok((
                    row.get::<_, i64>(0),
                    (row.get::<_, i64>(1), row.get::<_, &str>(2)),
                ))
            }),
            query.limit,
            |(revision, body)| decode(body, revision),
        )
    }

    async fn active_names(&self, mesh_id: &str) -> Result<Vec<ReleaseRef>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT namespace, name FROM releases
                 WHERE mesh_id = $1 AND active ORDER BY seq",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&statement, &[&mesh_id]).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ReleaseRef {
                mesh_id: mesh_id.to_owned(),
                namespace: r.get(0),
                name: r.get(1),
            })
            .collect())
    }

    async fn running_strategies(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError> {
        let client = self.client().await?;
        // Only the bodies that name a strategy are decoded.
        let statement = client
            .prepare_cached(
                "SELECT resource_version, body FROM releases
                 WHERE mesh_id = $1 AND active AND phase = 'Running'
                   AND jsonb_typeof(body::jsonb -> 'strategy') = 'object'
                 ORDER BY seq",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&statement, &[&mesh_id]).await.map_err(db)?;
        rows.iter().map(|r| decode(r.get(1), r.get(0))).collect()
    }

    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        let mut client = self.client().await?;
        change_log::snapshot(&mut client, self.offset, mesh_id, namespace).await
    }

    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        change_log::events_after(&client, self.offset, mesh_id, namespace, revision, limit).await
    }

    async fn written_after(
        &self,
        mesh_id: &str,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Written>, StoreError> {
        let client = self.client().await?;
        change_log::written_after(&client, self.offset, mesh_id, revision, limit).await
    }

    async fn record_checks(
        &self,
        uid: uuid::Uuid,
        results: &[CheckResult],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        checks::record(&mut client, &uid, results).await
    }

    async fn checks(&self, uid: uuid::Uuid) -> Result<Vec<CheckResult>, StoreError> {
        let client = self.client().await?;
        checks::list(&client, &uid).await
    }

    fn revisions(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    fn cursor_secret(&self) -> [u8; 32] {
        self.secret
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.batch_execute("SELECT 1").await.map_err(db)?;
        if client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(db)?
            .get::<_, bool>(0)
        {
            return Err(StoreError::Unavailable(
                "the database is read-only (in recovery)".into(),
            ));
        }
        Ok(())
    }

    async fn close(&self) {
        self.leadership.give_up().await;
        self.follower.abort();
        self.pool.close();
    }

    fn leadership(&self) -> Arc<dyn Leadership> {
        self.leadership.clone()
    }
}

impl crate::store::Backend for PostgresStore {
    fn commit_metrics(&self) -> CommitMetrics {
        self.commits.clone()
    }

    fn signed_writes(&self) -> Arc<dyn crate::auth::replay::SignedWrites> {
        self.shared_limits.clone()
    }

    fn peers(&self) -> Option<Arc<dyn crate::auth::rate_limit::Peers>> {
        Some(self.shared_limits.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_given_apart_replaces_the_urls() {
        let config = super::connection_config(
            "postgres://app:in-url@db.internal:5433/releases",
            Some("apart"),
        )
        .unwrap()
        .config;
        assert_eq!(config.get_password(), Some(&b"apart"[..]));
        assert_eq!(config.get_user(), Some("app"));
        let config = super::connection_config("postgres://app:in-url@db.internal/releases", None)
            .unwrap()
            .config;
        assert_eq!(config.get_password(), Some(&b"in-url"[..]));
    }
}
