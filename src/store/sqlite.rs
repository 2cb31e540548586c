//! The embedded, durable store: one SQLite database in the data directory, in
//! WAL mode with `synchronous = FULL`, so a commit is on disk before it returns.
//!
//! All writes go through one writer thread. It takes every write waiting in
//! its queue, applies each in a savepoint of one transaction, commits once
//! (one fsync for the whole group), and only then answers each caller and
//! publishes the new revision to watchers. Reads use their own connection and
//! see the last commit (WAL readers never block the writer).

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};

use super::{
    Created, EVENT_RETENTION, Event, EventType, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey, ListQuery,
    Page, ReleaseStore, Snapshot, StoreError,
};
use crate::domain::Release;
use crate::metrics::CommitMetrics;

pub const DATABASE_FILE: &str = "meshrelease.db";

/// The most writes committed together.
const MAX_GROUP: usize = 256;

/// Old events and idempotency keys are pruned once per this many writes.
const PRUNE_EVERY: u64 = 1024;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE releases (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        mesh_id      TEXT NOT NULL,
        namespace    TEXT NOT NULL,
        name         TEXT NOT NULL,
        uid          TEXT NOT NULL UNIQUE,
        service_name TEXT NOT NULL,
        phase        TEXT NOT NULL,
        active       INTEGER NOT NULL CHECK (active IN (0, 1)),
        body         TEXT NOT NULL,
        UNIQUE (mesh_id, namespace, name)
    );
    CREATE UNIQUE INDEX releases_one_active_per_service
        ON releases (mesh_id, namespace, service_name) WHERE active = 1;
    "#,
    r#"
    ALTER TABLE releases ADD COLUMN resource_version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX releases_by_mesh ON releases (mesh_id, seq);
    CREATE INDEX releases_by_namespace ON releases (mesh_id, namespace, seq);
    CREATE TABLE events (
        revision  INTEGER PRIMARY KEY,
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
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (subject, token)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    "#,
];

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Create(Box<Release>, Option<IdempotencyKey>, Reply<Created>),
    Update(Box<Release>, u64, Reply<Release>),
    Remove([String; 3], u64, Reply<Release>),
    CheckWritable(Reply<()>),
}

pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
    revisions: watch::Receiver<u64>,
    /// No revision at or below it was given (see `revision_floor`).
    floor: u64,
    secret: [u8; 32],
    commits: CommitMetrics,
}

/// The database holds the secret that signs continue tokens: it is created
/// readable by its owner only (SQLite gives its `-wal` and `-shm` files the
/// same mode), and one found readable by others is narrowed, saying so.
fn owner_only(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("creating {}", path.display())));
        }
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the database was readable by others; narrowing it to its owner (0600)"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("narrowing the permissions of {}", path.display()))?;
    }
    Ok(())
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
        let reader = open_connection(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
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
            reader: Arc::new(Mutex::new(reader)),
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

    /// Runs `read` on the read connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            read(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
    }
}

fn open_connection(path: &Path, flags: OpenFlags) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening the database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "the database refused WAL mode ({mode})"
        );
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).context("negative schema version")?;
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the database has schema version {applied}, newer than this binary knows ({})",
        MIGRATIONS.len()
    );
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .with_context(|| format!("applying schema migration {}", version + 1))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

/// Where this database's revisions start: a random point for a new one
/// (`new_revision_floor`), kept in the database; 0 for one made before
/// there was a floor, whose revisions go on from where they are.
fn revision_floor(conn: &Connection) -> anyhow::Result<u64> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'revision_floor'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(floor) = stored.and_then(|s| <[u8; 8]>::try_from(s).ok()) {
        return Ok(u64::from_be_bytes(floor));
    }
    let used: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM releases)",
        [],
        |r| r.get(0),
    )?;
    let floor = if used { 0 } else { super::new_revision_floor() };
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('revision_floor', ?1)",
        params![floor.to_be_bytes().to_vec()],
    )?;
    Ok(floor)
}

/// The continue-token secret, made on first open and kept in the database so
/// that tokens survive restarts and work on every replica of one database.
fn cursor_secret(conn: &Connection) -> anyhow::Result<[u8; 32]> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'cursor_secret'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(secret) = stored.and_then(|s| <[u8; 32]>::try_from(s).ok()) {
        return Ok(secret);
    }
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor_secret', ?1)",
        params![secret.to_vec()],
    )?;
    Ok(secret)
}

struct Writer {
    conn: Connection,
    /// The last revision committed.
    revision: u64,
    writes: u64,
    publish: watch::Sender<u64>,
    commits: CommitMetrics,
}

/// A write's answer, sent once its group has committed.
enum Pending {
    Created(Reply<Created>, Result<Created, StoreError>),
    Released(Reply<Release>, Result<Release, StoreError>),
    Unit(Reply<()>),
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let started = std::time::Instant::now();
        let mut pending = Vec::with_capacity(group.len());
        let mut revision = self.revision;
        let writes = group.len() as u64;
        let prune = self.writes / PRUNE_EVERY != (self.writes + writes) / PRUNE_EVERY;
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for command in group {
                match command {
                    Command::Create(release, key, reply) => {
                        let outcome = in_savepoint(&mut tx, |c| {
                            create(c, &release, key.as_ref(), revision + 1)
                        });
                        if matches!(outcome, Ok(Created::New(_))) {
                            revision += 1;
                        }
                        pending.push(Pending::Created(reply, outcome));
                    }
                    Command::Update(release, expected, reply) => {
                        let outcome =
                            in_savepoint(&mut tx, |c| update(c, &release, expected, revision + 1));
                        if outcome.is_ok() {
                            revision += 1;
                        }
                        pending.push(Pending::Released(reply, outcome));
                    }
                    Command::Remove(key, expected, reply) => {
                        let outcome =
                            in_savepoint(&mut tx, |c| remove(c, &key, expected, revision + 1));
                        if outcome.is_ok() {
                            revision += 1;
                        }
                        pending.push(Pending::Released(reply, outcome));
                    }
                    Command::CheckWritable(reply) => pending.push(Pending::Unit(reply)),
                }
            }
            if prune {
                prune_history(&tx, revision)?;
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                self.commits.observe(started.elapsed(), writes as usize);
                self.revision = revision;
                self.writes += writes;
                self.publish.send_replace(revision);
                for p in pending {
                    match p {
                        Pending::Created(reply, outcome) => drop(reply.send(outcome)),
                        Pending::Released(reply, outcome) => drop(reply.send(outcome)),
                        Pending::Unit(reply) => drop(reply.send(Ok(()))),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let failed = || StoreError::Unavailable("the store could not commit".into());
                for p in pending {
                    match p {
                        Pending::Created(reply, _) => drop(reply.send(Err(failed()))),
                        Pending::Released(reply, _) => drop(reply.send(Err(failed()))),
                        Pending::Unit(reply) => drop(reply.send(Err(failed()))),
                    }
                }
            }
        }
    }
}

/// Runs one write in a savepoint: on error only that write is rolled back.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint().map_err(internal)?;
    // Dropping the savepoint on error rolls it back.
    let value = write(&sp)?;
    sp.commit().map_err(internal)?;
    Ok(value)
}

fn prune_history(conn: &Connection, revision: u64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM events WHERE revision <= ?1",
        params![revision.saturating_sub(EVENT_RETENTION) as i64],
    )?;
    conn.execute(
        "DELETE FROM idempotency WHERE created_at < ?1",
        params![chrono::Utc::now().timestamp() - IDEMPOTENCY_WINDOW_SECS],
    )?;
    Ok(())
}

fn check_create(conn: &Connection, release: &Release) -> Result<(), StoreError> {
    let taken: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
            params![release.mesh_id, release.namespace, release.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal)?;
    if taken.is_some() {
        return Err(StoreError::NameTaken);
    }
    if release.status.phase.is_active() {
        let holder: Option<String> = conn
            .query_row(
                "SELECT name FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND service_name = ?3 AND active = 1",
                params![release.mesh_id, release.namespace, release.service_name],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal)?;
        if let Some(holder) = holder {
            return Err(StoreError::ServiceBusy { holder });
        }
    }
    Ok(())
}

fn create(
    conn: &Connection,
    release: &Release,
    key: Option<&IdempotencyKey>,
    revision: u64,
) -> Result<Created, StoreError> {
    let now = chrono::Utc::now().timestamp();
    if let Some(key) = key {
        let earlier: Option<(String, String)> = conn
            .query_row(
                "SELECT request_hash, response FROM idempotency WHERE subject = ?1 AND token = ?2 AND created_at >= ?3",
                params![key.subject, key.token, now - IDEMPOTENCY_WINDOW_SECS],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        if let Some((hash, response)) = earlier {
            return if hash == key.request_hash {
                Ok(Created::Replayed(decode(&response)?))
            } else {
                Err(StoreError::IdempotencyMismatch)
            };
        }
    }
    check_create(conn, release)?;
    let mut stored = release.clone();
    stored.resource_version = revision;
    let body = encode(&stored)?;
    conn.execute(
        "INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, body, resource_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            stored.mesh_id,
            stored.namespace,
            stored.name,
            stored.uid.to_string(),
            stored.service_name,
            stored.status.phase.as_str(),
            stored.status.phase.is_active(),
            body,
            revision as i64
        ],
    )
    .map_err(internal)?;
    record(conn, revision, EventType::Added, &stored, &body)?;
    if let Some(key) = key {
        conn.execute(
            "INSERT OR REPLACE INTO idempotency (subject, token, request_hash, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.subject, key.token, key.request_hash, body, now],
        )
        .map_err(internal)?;
    }
    Ok(Created::New(stored))
}

fn update(
    conn: &Connection,
    release: &Release,
    expected: u64,
    revision: u64,
) -> Result<Release, StoreError> {
    let current: Option<i64> = conn
        .query_row(
            "SELECT resource_version FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
            params![release.mesh_id, release.namespace, release.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal)?;
    let current = current.ok_or(StoreError::NotFound)? as u64;
    if current != expected {
        return Err(StoreError::Stale { current });
    }
    let mut stored = release.clone();
    stored.resource_version = revision;
    let body = encode(&stored)?;
    conn.execute(
        "UPDATE releases SET phase = ?4, active = ?5, body = ?6, resource_version = ?7
         WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
        params![
            stored.mesh_id,
            stored.namespace,
            stored.name,
            stored.status.phase.as_str(),
            stored.status.phase.is_active(),
            body,
            revision as i64
        ],
    )
    .map_err(internal)?;
    record(conn, revision, EventType::Modified, &stored, &body)?;
    Ok(stored)
}

fn remove(
    conn: &Connection,
    key: &[String; 3],
    expected: u64,
    revision: u64,
) -> Result<Release, StoreError> {
    let row: Option<(i64, bool, String)> = conn
        .query_row(
            "SELECT resource_version, active, body FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
            params![key[0], key[1], key[2]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(internal)?;
    let (current, active, body) = row.ok_or(StoreError::NotFound)?;
    if current as u64 != expected || active {
        return Err(StoreError::Stale {
            current: current as u64,
        });
    }
    conn.execute(
        "DELETE FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
        params![key[0], key[1], key[2]],
    )
    .map_err(internal)?;
    // Like Kubernetes, the deleted object carries the revision of its deletion.
    let mut removed = decode(&body)?;
    removed.resource_version = revision;
    record(
        conn,
        revision,
        EventType::Deleted,
        &removed,
        &encode(&removed)?,
    )?;
    Ok(removed)
}

fn record(
    conn: &Connection,
    revision: u64,
    kind: EventType,
    release: &Release,
    body: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (revision, mesh_id, namespace, type, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            revision as i64,
            release.mesh_id,
            release.namespace,
            kind.as_str(),
            body
        ],
    )
    .map_err(internal)?;
    Ok(())
}

fn encode(release: &Release) -> Result<String, StoreError> {
    serde_json::to_string(release).map_err(|e| StoreError::Internal(e.into()))
}

fn decode(body: &str) -> Result<Release, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Internal(anyhow::Error::new(e).context("a stored release")))
}

fn internal(e: rusqlite::Error) -> StoreError {
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
                .query_row(
                    "SELECT body FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
                    params![key[0], key[1], key[2]],
                    |r| r.get(0),
                )
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

    async fn active(&self, mesh_id: &str) -> Result<Vec<Release>, StoreError> {
        let mesh_id = mesh_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM releases WHERE mesh_id = ?1 AND active = 1 ORDER BY seq",
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
            let (oldest, latest): (Option<i64>, i64) = tx
                .query_row(
                    "SELECT MIN(revision), MAX(COALESCE(MAX(revision), 0),
                        COALESCE((SELECT MAX(resource_version) FROM releases), 0)) FROM events",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(internal)?;
            super::check_resume_point(
                revision,
                oldest.map(|o| o as u64),
                super::Given {
                    floor,
                    latest: (latest as u64).max(floor),
                },
            )?;
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
    }
}

impl super::Backend for SqliteStore {
    fn commit_metrics(&self) -> CommitMetrics {
        self.commits.clone()
    }
}
