//! The embedded, durable store: one SQLite database in the data directory, in
//! WAL mode with `synchronous = FULL`, so a commit is on disk before it returns.
//!
//! All writes go through one writer thread. It takes every write waiting in
//! its queue, applies each in a savepoint of one transaction, commits once
//! (one fsync for the whole group), and only then answers each caller and
//! publishes the new revision to watchers. Reads use their own connections
//! and threads (`readers.rs`) and see the last commit (WAL readers never
//! block the writer).
//!
//! - this file: the store, its reads, and opening it;
//! - `schema.rs`: the migrations and what the database keeps of itself;
//! - `writer.rs`: the writer thread and each write;
//! - `readers.rs`: the reader threads.

mod readers;
mod schema;
mod writer;

use std::path::Path;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use self::readers::{READERS, Readers};
use self::schema::{cursor_secret, migrate, open_connection, owner_only, revision_floor};
use self::writer::{Command, Reply, Writer, check_create};
use super::{
    Created, Event, EventType, IdempotencyKey, ListQuery, Page, ReleaseStore, Snapshot, StoreError,
    Written,
};
use crate::domain::strategy::CheckResult;
use crate::domain::{Release, ReleaseRef};
use crate::metrics::CommitMetrics;

pub const DATABASE_FILE: &str = "meshrelease.db";

/// The most writes committed together.
pub(super) const MAX_GROUP: usize = 256;

/// Old events and idempotency keys are pruned once per this many writes.
pub(super) const PRUNE_EVERY: u64 = 1024;

pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Readers,
    revisions: watch::Receiver<u64>,
    /// No revision at or below it was given (see `revision_floor`).
    floor: u64,
    secret: [u8; 32],
    commits: CommitMetrics,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(DATABASE_FILE);
        owner_only(&path)?;
        let mut conn = open_connection(&path, OpenFlags::default())?;
        migrate(&mut conn)?;
        let secret = cursor_secret(&conn)?;
        let floor = revision_floor(&conn)?;
        let revision: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(revision) FROM events), 0),
                        COALESCE((SELECT MAX(resource_version) FROM releases), 0), ?1)",
            params![floor as i64],
            |r| r.get(0),
        )?;
        let readers = Readers::open(&path, READERS)?;
        let (publish, revisions) = watch::channel(revision as u64);
        let (sender, receiver) = mpsc::channel();
        let commits = CommitMetrics::default();
        let writer = Writer {
            conn,
            revision: revision as u64,
            writes: 0,
            publish,
            commits: commits.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .context("starting the SQLite writer thread")?;
        Ok(Self {
            writer: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            readers,
            revisions,
            floor,
            secret,
            commits,
        })
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let sender = writer
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            sender
                .send(make(reply))
                .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Runs `read` on a read connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.read(read).await
    }
}

pub(super) fn encode(release: &Release) -> Result<String, StoreError> {
    serde_json::to_string(release).map_err(|e| StoreError::Internal(e.into()))
}

pub(super) fn decode(body: &str) -> Result<Release, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Internal(anyhow::Error::new(e).context("a stored release")))
}

pub(super) fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.into())
}

#[async_trait]
impl ReleaseStore for SqliteStore {
    async fn create(
        &self,
        release: &Release,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let release = Box::new(release.clone());
        let key = idempotency.cloned();
        self.send(|reply| Command::Create(release, key, reply))
            .await
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        let key = [mesh_id.to_owned(), namespace.to_owned(), name.to_owned()];
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached(
                    "SELECT body FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
                )
                .map_err(internal)?
                .query_row(params![key[0], key[1], key[2]], |r| r.get(0))
                .optional()
                .map_err(internal)?;
            body.as_deref().map(decode).transpose()
        })
        .await
    }

    async fn check_create(&self, release: &Release) -> Result<(), StoreError> {
        let release = release.clone();
        self.read(move |conn| check_create(conn, &release)).await
    }

    async fn update(&self, release: &Release, expected: u64) -> Result<Release, StoreError> {
        let release = Box::new(release.clone());
        self.send(|reply| Command::Update(release, expected, reply))
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
        self.send(|reply| Command::Remove(key, expected, reply))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let query = query.clone();
        self.read(move |conn| {
            let mut sql =
                String::from("SELECT seq, body FROM releases WHERE mesh_id = ?1 AND seq > ?2");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(query.mesh_id.clone()),
                Box::new(query.after.unwrap_or(i64::MIN)),
            ];
            if let Some(ns) = &query.namespace {
                args.push(Box::new(ns.clone()));
                sql.push_str(&format!(" AND namespace = ?{}", args.len()));
            }
            if let Some(service) = &query.service_name {
                args.push(Box::new(service.clone()));
                sql.push_str(&format!(" AND service_name = ?{}", args.len()));
            }
            if let Some(phase) = query.phase {
                args.push(Box::new(phase.as_str()));
                sql.push_str(&format!(" AND phase = ?{}", args.len()));
            }
            args.push(Box::new(query.limit as i64 + 1));
            sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", args.len()));
            let mut statement = conn.prepare_cached(&sql).map_err(internal)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(internal)?;
            Page::from_rows(
                rows.map(|row| row.map_err(internal)),
                query.limit,
                |body: String| decode(&body),
            )
        })
        .await
    }

    async fn active_names(&self, mesh_id: &str) -> Result<Vec<ReleaseRef>, StoreError> {
        let mesh_id = mesh_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT namespace, name FROM releases WHERE mesh_id = ?1 AND active = 1 ORDER BY seq",
                )
                .map_err(internal)?;
            let names = statement
                .query_map(params![mesh_id], |r| {
                    Ok(ReleaseRef {
                        mesh_id: mesh_id.clone(),
                        namespace: r.get(0)?,
                        name: r.get(1)?,
                    })
                })
                .map_err(internal)?;
            names.map(|n| n.map_err(internal)).collect()
        })
        .await
    }

    async fn running_strategies(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError> {
        let mesh_id = mesh_id.to_owned();
        self.read(move |conn| {
            // Only the bodies that name a strategy are decoded.
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM releases
                     WHERE mesh_id = ?1 AND active = 1 AND phase = 'Running'
                       AND json_extract(body, '$.strategy') IS NOT NULL
                     ORDER BY seq",
                )
                .map_err(internal)?;
            let bodies = statement
                .query_map(params![mesh_id], |r| r.get::<_, String>(0))
                .map_err(internal)?;
            let mut releases = Vec::new();
            for body in bodies {
                releases.push(decode(&body.map_err(internal)?)?);
            }
            Ok(releases)
        })
        .await
    }

    async fn snapshot(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        let mesh_id = mesh_id.to_owned();
        let namespace = namespace.map(str::to_owned);
        self.read(move |conn| {
            // One read transaction: the releases and the revision agree.
            let tx = conn.transaction().map_err(internal)?;
            let revision: i64 = tx
                .query_row("SELECT COALESCE(MAX(revision), 0) FROM events", [], |r| r.get(0))
                .map_err(internal)?;
            let mut statement = tx
                .prepare_cached(
                    "SELECT body FROM releases WHERE mesh_id = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY seq",
                )
                .map_err(internal)?;
            let bodies = statement
                .query_map(params![mesh_id, namespace], |r| r.get::<_, String>(0))
                .map_err(internal)?;
            let mut releases = Vec::new();
            for body in bodies {
                releases.push(decode(&body.map_err(internal)?)?);
            }
            drop(statement);
            tx.commit().map_err(internal)?;
            Ok(Snapshot {
                releases,
                revision: revision as u64,
                reflected: Vec::new(),
            })
        })
        .await
    }

    async fn events_after(
        &self,
        mesh_id: &str,
        namespace: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mesh_id = mesh_id.to_owned();
        let namespace = namespace.map(str::to_owned);
        let floor = self.floor;
        self.read(move |conn| {
            let tx = conn.transaction().map_err(internal)?;
            resumes_at(&tx, revision, floor)?;
            let mut statement = tx
                .prepare_cached(
                    "SELECT revision, type, body FROM events
                     WHERE mesh_id = ?1 AND (?2 IS NULL OR namespace = ?2) AND revision > ?3
                     ORDER BY revision LIMIT ?4",
                )
                .map_err(internal)?;
            let rows = statement
                .query_map(
                    params![mesh_id, namespace, revision as i64, limit as i64],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .map_err(internal)?;
            let mut events = Vec::new();
            for row in rows {
                let (revision, kind, body) = row.map_err(internal)?;
                let kind = EventType::parse(&kind).ok_or_else(|| {
                    StoreError::Internal(anyhow::anyhow!("unknown event type {kind:?}"))
                })?;
                events.push(Event {
                    revision: revision as u64,
                    kind,
                    release: decode(&body)?,
                });
            }
            Ok(events)
        })
        .await
    }

    async fn written_after(
        &self,
        mesh_id: &str,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<Written>, StoreError> {
        let mesh_id = mesh_id.to_owned();
        let floor = self.floor;
        self.read(move |conn| {
            let tx = conn.transaction().map_err(internal)?;
            resumes_at(&tx, revision, floor)?;
            // The few fields wanted, read by SQLite from the stored JSON:
            // no release is decoded.
            let mut statement = tx
                .prepare_cached(
                    "SELECT revision, namespace, json_extract(body, '$.name'),
                        COALESCE(type != 'DELETED'
                            AND json_extract(body, '$.status.phase') = 'Running'
                            AND json_extract(body, '$.strategy') IS NOT NULL, 0)
                     FROM events WHERE mesh_id = ?1 AND revision > ?2
                     ORDER BY revision LIMIT ?3",
                )
                .map_err(internal)?;
            let rows = statement
                .query_map(params![mesh_id, revision as i64, limit as i64], |r| {
                    Ok(Written {
                        revision: r.get::<_, i64>(0)? as u64,
                        release: ReleaseRef {
                            mesh_id: mesh_id.clone(),
                            namespace: r.get(1)?,
                            name: r.get(2)?,
                        },
                        runs_strategy: r.get(3)?,
                    })
                })
                .map_err(internal)?;
            rows.map(|row| row.map_err(internal)).collect()
        })
        .await
    }

    async fn record_checks(
        &self,
        uid: uuid::Uuid,
        results: &[CheckResult],
    ) -> Result<(), StoreError> {
        let results = results.to_vec();
        self.send(|reply| Command::RecordChecks(uid, results, reply))
            .await
    }

    async fn checks(&self, uid: uuid::Uuid) -> Result<Vec<CheckResult>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached("SELECT body FROM checks WHERE uid = ?1 ORDER BY round, rowid")
                .map_err(internal)?;
            let rows = statement
                .query_map(params![uid.to_string()], |r| r.get::<_, String>(0))
                .map_err(internal)?;
            rows.map(|row| {
                let body = row.map_err(internal)?;
                serde_json::from_str(&body).map_err(|e| StoreError::Internal(e.into()))
            })
            .collect()
        })
        .await
    }

    fn revisions(&self) -> watch::Receiver<u64> {
        self.revisions.clone()
    }

    fn cursor_secret(&self) -> [u8; 32] {
        self.secret
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.send(Command::CheckWritable).await
    }

    async fn close(&self) {
        let sender = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(sender);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.readers.close().await;
    }
}

impl crate::store::Backend for SqliteStore {
    fn commit_metrics(&self) -> CommitMetrics {
        self.commits.clone()
    }
}

/// The oldest revision the change log holds, and the latest revision given.
/// Each bound is its own subquery, so that each is one step down the
/// `events` primary key: with `MIN` and `MAX` in one aggregate, SQLite
/// scanned every event kept (up to `EVENT_RETENTION`) on each read of the
/// log. Every write records its event at its own revision and pruning
/// keeps the newest, so the newest event is the latest write; the
/// releases are consulted only while no event is kept (a database from
/// before the change log).
pub(super) const CHANGE_LOG_BOUNDS: &str = "SELECT (SELECT MIN(revision) FROM events),
    COALESCE((SELECT MAX(revision) FROM events),
             (SELECT MAX(resource_version) FROM releases), 0)";

/// Refuses a resume point the change log no longer reaches back to, or one
/// this store never gave (`events_after`, `written_after`).
fn resumes_at(tx: &rusqlite::Transaction<'_>, revision: u64, floor: u64) -> Result<(), StoreError> {
    let (oldest, latest): (Option<i64>, i64) = tx
        .prepare_cached(CHANGE_LOG_BOUNDS)
        .map_err(internal)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(internal)?;
    super::check_resume_point(
        revision,
        oldest.map(|o| o as u64),
        super::Given {
            floor,
            latest: (latest as u64).max(floor),
        },
    )
}
