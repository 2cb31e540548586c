//! A PostgreSQL store, for several replicas sharing one database. Every rule is
//! enforced by the database: unique constraints for names and active
//! services, and writes serialized by a transaction-scoped advisory lock so
//! that revisions are committed in the order they are numbered (a watcher
//! reading the events table then never skips a revision that commits late).
//! Each replica commits the writes waiting in its queue together (group
//! commit: one transaction, a savepoint per write, one fsync), so the lock is
//! taken once per group rather than once per write.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::postgres_leadership::PgLeadership;
use super::{
    Created, EVENT_RETENTION, Event, EventType, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey, ListQuery,
    Page, ReleaseStore, StoreError,
};
use crate::domain::Release;
use crate::domain::ports::Leadership;
use crate::metrics::CommitMetrics;

/// Serializes writers (any constant shared by every replica).
const WRITE_LOCK: i64 = 0x6d65_7368_7265_6c65; // "meshrele"
/// Serializes schema migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x6d65_7368_6d69_6772; // "meshmigr"
/// How often changes committed by other replicas are looked for.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE releases (
        seq              BIGSERIAL PRIMARY KEY,
        mesh_id          TEXT NOT NULL,
        namespace        TEXT NOT NULL,
        name             TEXT NOT NULL,
        uid              TEXT NOT NULL UNIQUE,
        service_name     TEXT NOT NULL,
        phase            TEXT NOT NULL,
        active           BOOLEAN NOT NULL,
        resource_version BIGINT NOT NULL,
        body             TEXT NOT NULL,
        CONSTRAINT releases_name_unique UNIQUE (mesh_id, namespace, name)
    );
    CREATE UNIQUE INDEX releases_one_active_per_service
        ON releases (mesh_id, namespace, service_name) WHERE active;
    CREATE INDEX releases_by_mesh ON releases (mesh_id, seq);
    CREATE INDEX releases_by_namespace ON releases (mesh_id, namespace, seq);
    CREATE TABLE events (
        revision  BIGINT PRIMARY KEY,
        mesh_id   TEXT NOT NULL,
        namespace TEXT NOT NULL,
        type      TEXT NOT NULL,
        body      TEXT NOT NULL
    );
    CREATE INDEX events_by_mesh ON events (mesh_id, revision);
    CREATE TABLE idempotency (
        subject      TEXT NOT NULL,
        token        TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        response     TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        PRIMARY KEY (subject, token)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
"#];

pub struct PostgresStore {
    pool: Pool,
    revisions: watch::Sender<u64>,
    secret: [u8; 32],
    poller: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    writes: tokio::sync::mpsc::UnboundedSender<Job>,
    commits: CommitMetrics,
    leadership: Arc<PgLeadership>,
}

impl PostgresStore {
    /// Connects to `url` (optionally in `schema`, which must exist), migrates
    /// the schema and starts following other replicas' commits.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
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
        let leadership = Arc::new(PgLeadership::new(config.clone()));
        let manager = Manager::from_config(
            config,
            NoTls,
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
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await?;
        let applied: i64 = tx
            .query_one("SELECT COUNT(*) FROM schema_version", &[])
            .await?
            .get(0);
        for sql in MIGRATIONS.iter().skip(applied as usize) {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_version (version) VALUES (1)", &[])
                .await?;
        }
        let fresh: [u8; 32] = {
            let mut s = [0u8; 32];
            s[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            s[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            s
        };
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('cursor_secret', $1) ON CONFLICT (key) DO NOTHING",
            &[&fresh.as_slice()],
        )
        .await?;
        let stored: Vec<u8> = tx
            .query_one("SELECT value FROM meta WHERE key = 'cursor_secret'", &[])
            .await?
            .get(0);
        let revision: i64 = tx
            .query_one("SELECT COALESCE(MAX(revision), 0) FROM events", &[])
            .await?
            .get(0);
        tx.commit().await?;
        drop(client);
        let secret = <[u8; 32]>::try_from(stored)
            .map_err(|_| anyhow::anyhow!("a malformed cursor secret"))?;
        let revisions = watch::channel(revision as u64).0;
        let poller = tokio::spawn(follow_commits(pool.clone(), revisions.clone()));
        let commits = CommitMetrics::default();
        let (writes, jobs) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(write_groups(
            pool.clone(),
            jobs,
            revisions.clone(),
            commits.clone(),
        ));
        Ok(Self {
            leadership,
            pool,
            revisions,
            secret,
            poller,
            writer,
            writes,
            commits,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs one write in the next group commit: the writer task takes every
    /// write waiting, applies each in a savepoint of one transaction holding
    /// the write lock, commits once, and only then answers each caller and
    /// publishes the new revision.
    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(
                &'t Transaction<'t>,
                u64,
            )
                -> futures_util::future::BoxFuture<'t, Result<(T, bool), StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |tx, revision| {
            Box::pin(async move {
                match write(tx, revision).await {
                    Ok((value, wrote)) => {
                        let finish: Finish = Box::new(move |committed| {
                            let _ = reply.send(committed.map(|()| value));
                        });
                        (wrote, finish)
                    }
                    Err(e) => {
                        let finish: Finish = Box::new(move |_| {
                            let _ = reply.send(Err(e));
                        });
                        (false, finish)
                    }
                }
            })
        });
        self.writes
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }
}

/// Delivers a write's answer once its group's commit is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One write, run in the group's transaction with its revision; answers
/// whether it took the revision, and how to deliver its answer.
type Job = Box<
    dyn for<'t> FnOnce(
            &'t Transaction<'t>,
            u64,
        ) -> futures_util::future::BoxFuture<'t, (bool, Finish)>
        + Send,
>;

/// The most writes committed together.
const MAX_GROUP: usize = 256;

/// Takes every write waiting, commits them together, answers them.
async fn write_groups(
    pool: Pool,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    revisions: watch::Sender<u64>,
    commits: CommitMetrics,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let writes = group.len();
        let mut finishers: Vec<Finish> = Vec::with_capacity(writes);
        let outcome = commit_group(&pool, group, &mut finishers).await;
        match outcome {
            Ok(last) => {
                commits.observe(started.elapsed(), writes);
                revisions.send_if_modified(|r| {
                    let newer = last > *r;
                    *r = (*r).max(last);
                    newer
                });
                for finish in finishers {
                    finish(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a PostgreSQL group commit failed");
                for finish in finishers {
                    finish(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

/// Runs `group` in one transaction under the write lock; answers the last
/// revision taken. The finisher of every job that ran is pushed, whatever
/// happens next, so that its caller gets an answer.
async fn commit_group(
    pool: &Pool,
    group: Vec<Job>,
    finishers: &mut Vec<Finish>,
) -> Result<u64, StoreError> {
    let mut group = group.into_iter();
    let result = async {
        let mut client = pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await
            .map_err(db)?;
        let last: i64 = tx
            .query_one("SELECT COALESCE(MAX(revision), 0) FROM events", &[])
            .await
            .map_err(db)?
            .get(0);
        let first = last as u64 + 1;
        let mut next = first;
        // A savepoint per write, so that a write that fails leaves the others;
        // releasing one and opening the next share a round trip.
        tx.batch_execute("SAVEPOINT write").await.map_err(db)?;
        let mut jobs = group.by_ref().peekable();
        while let Some(job) = jobs.next() {
            let (wrote, finish) = job(&tx, next).await;
            finishers.push(finish);
            let more = jobs.peek().is_some();
            let sql = match (wrote, more) {
                (true, true) => "RELEASE SAVEPOINT write; SAVEPOINT write",
                (true, false) => "RELEASE SAVEPOINT write",
                (false, true) => {
                    "ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write; SAVEPOINT write"
                }
                (false, false) => "ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write",
            };
            if wrote {
                next += 1;
            }
            tx.batch_execute(sql).await.map_err(db)?;
        }
        if next / 1024 != first / 1024 {
            tx.execute(
                "DELETE FROM events WHERE revision <= $1",
                &[&(next.saturating_sub(EVENT_RETENTION) as i64)],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "DELETE FROM idempotency WHERE created_at < $1",
                &[&(chrono::Utc::now().timestamp() - IDEMPOTENCY_WINDOW_SECS)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(next - 1)
    }
    .await;
    // Jobs not run (the transaction failed first) are dropped here with their
    // reply channels, so their callers are answered Unavailable too.
    drop(group);
    result
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.poller.abort();
        self.writer.abort();
    }
}

/// Publishes revisions committed by other replicas.
async fn follow_commits(pool: Pool, revisions: watch::Sender<u64>) {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let Ok(client) = pool.get().await else {
            continue;
        };
        if let Ok(row) = client
            .query_one("SELECT COALESCE(MAX(revision), 0) FROM events", &[])
            .await
        {
            let latest = row.get::<_, i64>(0) as u64;
            revisions.send_if_modified(|r| {
                let newer = latest > *r;
                *r = (*r).max(latest);
                newer
            });
        }
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.into())
    }
}

fn encode(release: &Release) -> Result<String, StoreError> {
    serde_json::to_string(release).map_err(|e| StoreError::Internal(e.into()))
}

fn decode(body: &str) -> Result<Release, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Internal(anyhow::Error::new(e).context("a stored release")))
}

/// A statement prepared once per connection (each `execute` of a text query
/// would otherwise cost a round trip to prepare it).
async fn statement(
    client: &impl GenericClient,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(db)
}

async fn check_create(client: &impl GenericClient, release: &Release) -> Result<(), StoreError> {
    let taken = client
        .query_opt(
            &statement(
                client,
                "SELECT 1 FROM releases WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
            )
            .await?,
            &[&release.mesh_id, &release.namespace, &release.name],
        )
        .await
        .map_err(db)?;
    if taken.is_some() {
        return Err(StoreError::NameTaken);
    }
    if release.status.phase.is_active() {
        let holder = client
            .query_opt(
                &statement(
                    client,
                    "SELECT name FROM releases WHERE mesh_id = $1 AND namespace = $2 AND service_name = $3 AND active",
                )
                .await?,
                &[&release.mesh_id, &release.namespace, &release.service_name],
            )
            .await
            .map_err(db)?;
        if let Some(row) = holder {
            return Err(StoreError::ServiceBusy { holder: row.get(0) });
        }
    }
    Ok(())
}

async fn record(
    tx: &Transaction<'_>,
    revision: u64,
    kind: EventType,
    release: &Release,
    body: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &statement(
            tx,
            "INSERT INTO events (revision, mesh_id, namespace, type, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?,
        &[
            &(revision as i64),
            &release.mesh_id,
            &release.namespace,
            &kind.as_str(),
            &body,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl ReleaseStore for PostgresStore {
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let release = release.clone();
        let key = idempotency.cloned();
        self.write(move |tx, revision| {
            Box::pin(async move {
                let now = chrono::Utc::now().timestamp();
                if let Some(key) = &key {
                    let earlier = tx
                        .query_opt(
                            "SELECT request_hash, response FROM idempotency
                             WHERE subject = $1 AND token = $2 AND created_at >= $3",
                            &[&key.subject, &key.token, &(now - IDEMPOTENCY_WINDOW_SECS)],
                        )
                        .await
                        .map_err(db)?;
                    if let Some(row) = earlier {
                        let hash: String = row.get(0);
                        return if hash == key.request_hash {
                            Ok((Created::Replayed(decode(row.get(1))?), false))
                        } else {
                            Err(StoreError::IdempotencyMismatch)
                        };
                    }
                }
                check_create(tx, &release).await?;
                let mut stored = release.clone();
                stored.resource_version = revision;
                let body = encode(&stored)?;
                let uid = stored.uid.to_string();
                // Sent together: tokio-postgres pipelines queries issued at once
                // on one connection, so both rows cost one round trip.
                let insert = async {
                    tx.execute(
                    &statement(
                        tx,
                        "INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, resource_version, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .await?,
                    &[
                        &stored.mesh_id,
                        &stored.namespace,
                        &stored.name,
                        &uid,
                        &stored.service_name,
                        &stored.status.phase.as_str(),
                        &stored.status.phase.is_active(),
                        &(revision as i64),
                        &body,
                    ],
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::NameTaken,
                    _ => db(e),
                })?;
                    Ok::<(), StoreError>(())
                };
                futures_util::future::try_join(
                    insert,
                    record(tx, revision, EventType::Added, &stored, &body),
                )
                .await?;
                if let Some(key) = &key {
                    tx.execute(
                        "INSERT INTO idempotency (subject, token, request_hash, response, created_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (subject, token) DO UPDATE
                         SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response, created_at = EXCLUDED.created_at",
                        &[&key.subject, &key.token, &key.request_hash, &body, &now],
                    )
                    .await
                    .map_err(db)?;
                }
                Ok((Created::New(stored), true))
            })
        })
        .await
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM releases WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
                &[&mesh_id, &namespace, &name],
            )
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        let client = self.client().await?;
        check_create(&client, release).await
    }

    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError> {
        let release = release.clone();
        self.write(move |tx, revision| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT resource_version FROM releases WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
                        &[&release.mesh_id, &release.namespace, &release.name],
                    )
                    .await
                    .map_err(db)?
                    .ok_or(StoreError::NotFound)?;
                let current = row.get::<_, i64>(0) as u64;
                if current != expected {
                    return Err(StoreError::Stale { current });
                }
                let mut stored = release.clone();
                stored.resource_version = revision;
                let body = encode(&stored)?;
                tx.execute(
                    "UPDATE releases SET phase = $4, active = $5, resource_version = $6, body = $7
                     WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
                    &[
                        &stored.mesh_id,
                        &stored.namespace,
                        &stored.name,
                        &stored.status.phase.as_str(),
                        &stored.status.phase.is_active(),
                        &(revision as i64),
                        &body,
                    ],
                )
                .await
                .map_err(db)?;
                record(tx, revision, EventType::Modified, &stored, &body).await?;
                Ok((stored, true))
            })
        })
        .await
    }

    async fn remove(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<Release, StoreError> {
        let key = [mesh_id.to_owned(), namespace.to_owned(), name.to_owned()];
        self.write(move |tx, revision| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT resource_version, active, body FROM releases
                         WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
                        &[&key[0], &key[1], &key[2]],
                    )
                    .await
                    .map_err(db)?
                    .ok_or(StoreError::NotFound)?;
                let current = row.get::<_, i64>(0) as u64;
                if current != expected || row.get::<_, bool>(1) {
                    return Err(StoreError::Stale { current });
                }
                tx.execute(
                    "DELETE FROM releases WHERE mesh_id = $1 AND namespace = $2 AND name = $3",
                    &[&key[0], &key[1], &key[2]],
                )
                .await
                .map_err(db)?;
                let mut removed = decode(row.get(2))?;
                removed.resource_version = revision;
                record(
                    tx,
                    revision,
                    EventType::Deleted,
                    &removed,
                    &encode(&removed)?,
                )
                .await?;
                Ok((removed, true))
            })
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let client = self.client().await?;
        let limit = query.limit as i64 + 1;
        let rows = client
            .query(
                "SELECT seq, body FROM releases
                 WHERE mesh_id = $1 AND seq > $2
                   AND ($3::TEXT IS NULL OR namespace = $3)
                   AND ($4::TEXT IS NULL OR service_name = $4)
                   AND ($5::TEXT IS NULL OR phase = $5)
                 ORDER BY seq LIMIT $6",
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
            rows.iter()
                .map(|row| Ok((row.get::<_, i64>(0), row.get::<_, &str>(1)))),
            query.limit,
            decode,
        )
    }

    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Release>, u64), StoreError> {
        let mut client = self.client().await?;
        // One snapshot: the releases and the revision agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let revision: i64 = tx
            .query_one("SELECT COALESCE(MAX(revision), 0) FROM events", &[])
            .await
            .map_err(db)?
            .get(0);
        let rows = tx
            .query(
                "SELECT body FROM releases WHERE mesh_id = $1 AND ($2::TEXT IS NULL OR namespace = $2) ORDER BY seq",
                &[&mesh_id, &namespace],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let releases = rows
            .iter()
            .map(|r| decode(r.get(0)))
            .collect::<Result<_, _>>()?;
        Ok((releases, revision as u64))
    }

    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let oldest: Option<i64> = client
            .query_one("SELECT MIN(revision) FROM events", &[])
            .await
            .map_err(db)?
            .get(0);
        super::check_resume_point(revision, oldest.map(|o| o as u64))?;
        let rows = client
            .query(
                "SELECT revision, type, body FROM events
                 WHERE mesh_id = $1 AND ($2::TEXT IS NULL OR namespace = $2) AND revision > $3
                 ORDER BY revision LIMIT $4",
                &[&mesh_id, &namespace, &(revision as i64), &(limit as i64)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let kind: &str = row.get(1);
                Ok(Event {
                    revision: row.get::<_, i64>(0) as u64,
                    kind: EventType::parse(kind).ok_or_else(|| {
                        StoreError::Internal(anyhow::anyhow!("unknown event type {kind:?}"))
                    })?,
                    release: decode(row.get(2))?,
                })
            })
            .collect()
    }

    fn revisions(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    fn cursor_secret(&self) -> [u8; 32] {
        self.secret
    }

    fn commit_metrics(&self) -> CommitMetrics {
        self.commits.clone()
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
        self.poller.abort();
        self.pool.close();
    }

    fn leadership(&self) -> Arc<dyn Leadership> {
        self.leadership.clone()
    }
}
