//! The one writer thread: every write waiting in its queue is applied in a
//! savepoint of one transaction, committed once (one fsync for the group),
//! and only then answered and published to watchers.

use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};

use super::{MAX_GROUP, PRUNE_EVERY, decode, encode, internal};
use crate::domain::Release;
use crate::domain::ports::CHECK_RETENTION;
use crate::domain::strategy::CheckResult;
use crate::metrics::CommitMetrics;
use crate::store::{
    Created, EVENT_RETENTION, EventType, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey, StoreError,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Command {
    Create(Box<Release>, Option<IdempotencyKey>, Reply<Created>),
    Update(Box<Release>, u64, Reply<Release>),
    Remove([String; 3], u64, Reply<Release>),
    RecordChecks(uuid::Uuid, Vec<CheckResult>, Reply<()>),
    CheckWritable(Reply<()>),
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    /// The last revision committed.
    pub(super) revision: u64,
    pub(super) writes: u64,
    pub(super) publish: watch::Sender<u64>,
    pub(super) commits: CommitMetrics,
}

/// A write's answer, sent once its group has committed.
enum Pending {
    Created(Reply<Created>, Result<Created, StoreError>),
    Released(Reply<Release>, Result<Release, StoreError>),
    Unit(Reply<()>),
}

impl Writer {
    pub(super) fn run(mut self, receiver: mpsc::Receiver<Command>) {
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
                    Command::RecordChecks(uid, results, reply) => {
                        match in_savepoint(&mut tx, |c| record_checks(c, &uid, &results)) {
                            Ok(()) => pending.push(Pending::Unit(reply)),
                            Err(e) => drop(reply.send(Err(e))),
                        }
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
    conn.prepare_cached("DELETE FROM events WHERE revision <= ?1")?
        .execute(params![revision.saturating_sub(EVENT_RETENTION) as i64])?;
    conn.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute(params![
            chrono::Utc::now().timestamp() - IDEMPOTENCY_WINDOW_SECS
        ])?;
    Ok(())
}

pub(super) fn check_create(conn: &Connection, release: &Release) -> Result<(), StoreError> {
    let taken: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
        )
        .map_err(internal)?
        .query_row(
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
            .prepare_cached("SELECT name FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND service_name = ?3 AND active = 1")
            .map_err(internal)?
            .query_row(
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
            .prepare_cached("SELECT request_hash, response FROM idempotency WHERE subject = ?1 AND token = ?2 AND created_at >= ?3")
            .map_err(internal)?
            .query_row(
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
    conn.prepare_cached("INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, body, resource_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)").map_err(internal)?.execute(
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
        conn.prepare_cached("INSERT OR REPLACE INTO idempotency (subject, token, request_hash, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)").map_err(internal)?.execute(
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
        .prepare_cached("SELECT resource_version FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3")
        .map_err(internal)?
        .query_row(
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
    conn.prepare_cached(
        "UPDATE releases SET phase = ?4, active = ?5, body = ?6, resource_version = ?7
         WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3",
    )
    .map_err(internal)?
    .execute(params![
        stored.mesh_id,
        stored.namespace,
        stored.name,
        stored.status.phase.as_str(),
        stored.status.phase.is_active(),
        body,
        revision as i64
    ])
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
        .prepare_cached("SELECT resource_version, active, body FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3")
        .map_err(internal)?
        .query_row(
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
    conn.prepare_cached("DELETE FROM releases WHERE mesh_id = ?1 AND namespace = ?2 AND name = ?3")
        .map_err(internal)?
        .execute(params![key[0], key[1], key[2]])
        .map_err(internal)?;
    // Like Kubernetes, the deleted object carries the revision of its deletion.
    let mut removed = decode(&body)?;
    conn.prepare_cached("DELETE FROM checks WHERE uid = ?1")
        .map_err(internal)?
        .execute(params![removed.uid.to_string()])
        .map_err(internal)?;
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
    conn.prepare_cached(
        "INSERT INTO events (revision, mesh_id, namespace, type, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(internal)?
    .execute(params![
        revision as i64,
        release.mesh_id,
        release.namespace,
        kind.as_str(),
        body
    ])
    .map_err(internal)?;
    Ok(())
}

/// Records check results (by round and name, replacing a result recorded
/// before) and keeps the release's newest [`CHECK_RETENTION`].
fn record_checks(
    conn: &Connection,
    uid: &uuid::Uuid,
    results: &[CheckResult],
) -> Result<(), StoreError> {
    let uid = uid.to_string();
    let mut insert = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO checks (uid, round, name, body) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(internal)?;
    for result in results {
        let body = serde_json::to_string(result).map_err(|e| StoreError::Internal(e.into()))?;
        insert
            .execute(params![uid, result.round as i64, result.name, body])
            .map_err(internal)?;
    }
    conn.prepare_cached(
        "DELETE FROM checks WHERE uid = ?1 AND rowid NOT IN
           (SELECT rowid FROM checks WHERE uid = ?1 ORDER BY round DESC, rowid DESC LIMIT ?2)",
    )
    .map_err(internal)?
    .execute(params![uid, CHECK_RETENTION as i64])
    .map_err(internal)?;
    Ok(())
}
