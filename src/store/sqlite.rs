//! The embedded, durable store: one SQLite database in the data directory, in
//! WAL mode with `synchronous = FULL`, so a commit is on disk before it returns.
//!
//! All writes go through one writer thread. It takes every write waiting in
//! its queue, applies each in a savepoint of one transaction, commits once
//! (one fsync for the whole group), and only then answers each caller.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{ReleaseStore, StoreError};
use crate::domain::Release;

pub const DATABASE_FILE: &str = "meshrelease.db";

/// The most writes committed together.
const MAX_GROUP: usize = 256;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

enum Command {
    Insert(Box<Release>, oneshot::Sender<Result<(), StoreError>>),
    CheckWritable(oneshot::Sender<Result<(), StoreError>>),
}

pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(DATABASE_FILE);
        let mut writer = open_connection(&path, OpenFlags::default())?;
        migrate(&mut writer)?;
        let reader = open_connection(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, receiver))
            .context("starting the SQLite writer thread")?;
        Ok(Self {
            writer: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
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
}

fn open_connection(path: &PathBuf, flags: OpenFlags) -> anyhow::Result<Connection> {
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

fn write_loop(mut conn: Connection, receiver: mpsc::Receiver<Command>) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

fn commit_group(conn: &mut Connection, group: Vec<Command>) {
    let mut outcomes: Vec<(Reply, Result<(), StoreError>)> = Vec::with_capacity(group.len());
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for command in group {
            match command {
                Command::Insert(release, reply) => {
                    let outcome = insert_in_savepoint(&mut tx, &release);
                    outcomes.push((reply, outcome));
                }
                Command::CheckWritable(reply) => outcomes.push((reply, Ok(()))),
            }
        }
        tx.commit()
    })();
    match committed {
        Ok(()) => {
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed");
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::Unavailable(
                    "the store could not commit".into(),
                )));
            }
        }
    }
}

fn insert_in_savepoint(
    tx: &mut rusqlite::Transaction<'_>,
    release: &Release,
) -> Result<(), StoreError> {
    let sp = tx.savepoint().map_err(internal)?;
    // On error the savepoint is dropped, which rolls back this insert alone.
    insert(&sp, release)?;
    sp.commit().map_err(internal)
}

fn insert(conn: &Connection, release: &Release) -> Result<(), StoreError> {
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
    let active = release.status.phase.is_active();
    if active {
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
    let body = serde_json::to_string(release).map_err(|e| StoreError::Internal(e.into()))?;
    conn.execute(
        "INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            release.mesh_id,
            release.namespace,
            release.name,
            release.uid.to_string(),
            release.service_name,
            release.status.phase.as_str(),
            active,
            body
        ],
    )
    .map_err(internal)?;
    Ok(())
}

fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.into())
}

#[async_trait]
impl ReleaseStore for SqliteStore {
    async fn insert(&self, release: &Release) -> Result<(), StoreError> {
        let release = Box::new(release.clone());
        self.send(|reply| Command::Insert(release, reply)).await
    }

    async fn get(
        &self,
        mesh_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Release>, StoreError> {
        let reader = self.reader.clone();
        let key = (mesh_id.to_owned(), namespace.to_owned(), name.to_owned());
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
                    params![key.0, key.1, key.2],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal)?;
            body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError::Internal(e.into())))
                .transpose()
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
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
