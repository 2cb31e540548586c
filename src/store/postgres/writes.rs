//! Writes: each one statement (a create with an idempotency key, one short
//! pipelined transaction), committed in parallel with every other writer's.
//!
//! No lock serializes writers. A write's revision is its transaction id
//! (plus the database's offset), and its event is written by the same
//! statement, so revisions are unique and increase in the order
//! transactions begin; `change_log.rs` keeps watchers from reading past a
//! transaction still in flight. The rules are the database's: unique
//! constraints for names, a partial unique index for the one active release
//! of a service, compare-and-swap in the `WHERE` of updates and deletes.

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::{db, decode, encode};
use crate::domain::Release;
use crate::domain::ports::{Created, IDEMPOTENCY_WINDOW_SECS, IdempotencyKey, StoreError};

const CREATE: &str = "
    WITH stored AS (
        INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, resource_version, body)
        VALUES ($1, $2, $3, $4, $5, $6, $7, pg_current_xact_id()::text::bigint + $8, $9)
        RETURNING resource_version)
    INSERT INTO events (revision, mesh_id, namespace, type, body)
    SELECT resource_version, $1, $2, 'ADDED', $9 FROM stored
    RETURNING revision";

/// `CREATE` that also remembers the idempotency key; a key already
/// remembered (and not expired, see `FORGET_EXPIRED_KEY`) breaks the
/// primary key and so refuses the whole statement.
const CREATE_REMEMBERING: &str = "
    WITH stored AS (
        INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, resource_version, body)
        VALUES ($1, $2, $3, $4, $5, $6, $7, pg_current_xact_id()::text::bigint + $8, $9)
        RETURNING resource_version),
    remembered AS (
        INSERT INTO idempotency (subject, token, request_hash, response, created_at, revision)
        SELECT $10, $11, $12, $9, $13, resource_version FROM stored)
    INSERT INTO events (revision, mesh_id, namespace, type, body)
    SELECT resource_version, $1, $2, 'ADDED', $9 FROM stored
    RETURNING revision";

const FORGET_EXPIRED_KEY: &str =
    "DELETE FROM idempotency WHERE subject = $1 AND token = $2 AND created_at < $3";

const REMEMBERED: &str = "
    SELECT request_hash, response, revision FROM idempotency
    WHERE subject = $1 AND token = $2 AND created_at >= $3";

const UPDATE: &str = "
    WITH changed AS (
        UPDATE releases
        SET phase = $4, active = $5, resource_version = pg_current_xact_id()::text::bigint + $6, body = $7
        WHERE mesh_id = $1 AND namespace = $2 AND name = $3 AND resource_version = $8
        RETURNING resource_version)
    INSERT INTO events (revision, mesh_id, namespace, type, body)
    SELECT resource_version, $1, $2, 'MODIFIED', $7 FROM changed
    RETURNING revision";

const REMOVE: &str = "
    WITH gone AS (
        DELETE FROM releases
        WHERE mesh_id = $1 AND namespace = $2 AND name = $3 AND resource_version = $4 AND NOT active
        RETURNING body)
    INSERT INTO events (revision, mesh_id, namespace, type, body)
    SELECT pg_current_xact_id()::text::bigint + $5, $1, $2, 'DELETED', body FROM gone
    RETURNING revision, body";

const CURRENT: &str = "
    SELECT resource_version, active FROM releases
    WHERE mesh_id = $1 AND namespace = $2 AND name = $3";

const ACTIVE_HOLDER: &str = "
    SELECT name FROM releases
    WHERE mesh_id = $1 AND namespace = $2 AND service_name = $3 AND active";

const NAME_TAKEN: &str =
    "SELECT 1 FROM releases WHERE mesh_id = $1 AND namespace = $2 AND name = $3";

/// How often a create is tried again when what refused it was gone by the
/// time its reason was looked up (a key that expired, a holder that ended).
const CREATE_TRIES: usize = 3;

pub(super) async fn create(
    client: &impl GenericClient,
    offset: i64,
    release: &Release,
    key: Option<&IdempotencyKey>,
) -> Result<Created, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let refused = match key {
            None => insert(client, offset, release).await,
            Some(key) => insert_remembering(client, offset, release, key).await,
        };
        let refusal = match refused {
            Ok(revision) => {
                let mut stored = release.clone();
                stored.resource_version = revision;
                return Ok(Created::New(stored));
            }
            Err(e) => e,
        };
        // Why it was refused: a remembered key first (a retry of a create
        // that stored the same name), then the rules.
        if let Some(key) = key
            && let Some(earlier) = remembered(client, key).await?
        {
            return earlier;
        }
        match refusal {
            Refusal::Unique(Constraint::Name) => return Err(StoreError::NameTaken),
            Refusal::Unique(Constraint::ActiveService) => {
                if let Some(holder) = active_holder(client, release).await? {
                    return Err(StoreError::ServiceBusy { holder });
                }
            }
            Refusal::Unique(Constraint::Key) => {}
            Refusal::Other(e) => return Err(e),
        }
        if tries == CREATE_TRIES {
            return Err(StoreError::Unavailable(
                "the create was refused for a reason that kept changing; try again".into(),
            ));
        }
    }
}

/// A create without a key: one statement, its own transaction.
async fn insert(
    client: &impl GenericClient,
    offset: i64,
    release: &Release,
) -> Result<u64, Refusal> {
    let body = encode(release)?;
    let statement = client.prepare_cached(CREATE).await.map_err(db)?;
    let row = client
        .query_one(
            &statement,
            &[
                &release.mesh_id,
                &release.namespace,
                &release.name,
                &release.uid.to_string(),
                &release.service_name,
                &release.status.phase.as_str(),
                &release.status.phase.is_active(),
                &offset,
                &body,
            ],
        )
        .await
        .map_err(refusal)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// A create with a key: an expired key forgotten and the create stored, in
/// one transaction sent in one round trip.
async fn insert_remembering(
    client: &impl GenericClient,
    offset: i64,
    release: &Release,
    key: &IdempotencyKey,
) -> Result<u64, Refusal> {
    let body = encode(release)?;
    let now = chrono::Utc::now().timestamp();
    let (forget, create) = futures_util::future::try_join(
        client.prepare_cached(FORGET_EXPIRED_KEY),
        client.prepare_cached(CREATE_REMEMBERING),
    )
    .await
    .map_err(db)?;
    let window_start = now - IDEMPOTENCY_WINDOW_SECS;
    let uid = release.uid.to_string();
    let phase = release.status.phase.as_str();
    let active = release.status.phase.is_active();
    // Every statement is sent before any answer is awaited; a statement that
    // fails makes the rest fail too, and the COMMIT then rolls back.
    let forget_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&key.subject, &key.token, &window_start];
    let create_params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
        &release.mesh_id,
        &release.namespace,
        &release.name,
        &uid,
        &release.service_name,
        &phase,
        &active,
        &offset,
        &body,
        &key.subject,
        &key.token,
        &key.request_hash,
        &now,
    ];
    let (begun, forgotten, stored, committed) = futures_util::join!(
        client.batch_execute("BEGIN"),
        client.execute(&forget, &forget_params),
        client.query_one(&create, &create_params),
        client.batch_execute("COMMIT"),
    );
    begun.map_err(db)?;
    forgotten.map_err(refusal)?;
    let row = stored.map_err(refusal)?;
    committed.map_err(db)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The answer a remembered key gives, if it is remembered.
async fn remembered(
    client: &impl GenericClient,
    key: &IdempotencyKey,
) -> Result<Option<Result<Created, StoreError>>, StoreError> {
    let window_start = chrono::Utc::now().timestamp() - IDEMPOTENCY_WINDOW_SECS;
    let statement = client.prepare_cached(REMEMBERED).await.map_err(db)?;
    let Some(row) = client
        .query_opt(&statement, &[&key.subject, &key.token, &window_start])
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    if row.get::<_, &str>(0) != key.request_hash {
        return Ok(Some(Err(StoreError::IdempotencyMismatch)));
    }
    let body: &str = row.get(1);
    // Keys remembered before revisions were kept beside them carry theirs
    // in the body.
    let release = match row.get::<_, Option<i64>>(2) {
        Some(revision) => decode(body, revision)?,
        None => serde_json::from_str(body).map_err(|e| StoreError::Internal(e.into()))?,
    };
    Ok(Some(Ok(Created::Replayed(release))))
}

async fn active_holder(
    client: &impl GenericClient,
    release: &Release,
) -> Result<Option<String>, StoreError> {
    let statement = client.prepare_cached(ACTIVE_HOLDER).await.map_err(db)?;
    Ok(client
        .query_opt(
            &statement,
            &[&release.mesh_id, &release.namespace, &release.service_name],
        )
        .await
        .map_err(db)?
        .map(|row| row.get(0)))
}

/// Whether `create` would refuse `release` now.
pub(super) async fn check_create(
    client: &impl GenericClient,
    release: &Release,
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(NAME_TAKEN).await.map_err(db)?;
    let taken = client
        .query_opt(
            &statement,
            &[&release.mesh_id, &release.namespace, &release.name],
        )
        .await
        .map_err(db)?;
    if taken.is_some() {
        return Err(StoreError::NameTaken);
    }
    if release.status.phase.is_active()
        && let Some(holder) = active_holder(client, release).await?
    {
        return Err(StoreError::ServiceBusy { holder });
    }
    Ok(())
}

pub(super) async fn update(
    client: &impl GenericClient,
    offset: i64,
    release: &Release,
    expected: u64,
) -> Result<Release, StoreError> {
    let body = encode(release)?;
    let statement = client.prepare_cached(UPDATE).await.map_err(db)?;
    let changed = client
        .query_opt(
            &statement,
            &[
                &release.mesh_id,
                &release.namespace,
                &release.name,
                &release.status.phase.as_str(),
                &release.status.phase.is_active(),
                &offset,
                &body,
                &(expected as i64),
            ],
        )
        .await;
    match changed {
        Ok(Some(row)) => {
            let mut stored = release.clone();
            stored.resource_version = row.get::<_, i64>(0) as u64;
            Ok(stored)
        }
        Ok(None) => Err(why_not_changed(client, release).await?),
        Err(e) => match refusal(e) {
            Refusal::Unique(Constraint::ActiveService) => Err(StoreError::ServiceBusy {
                holder: active_holder(client, release)
                    .await?
                    .unwrap_or_else(|| "another release".into()),
            }),
            Refusal::Unique(_) => Err(StoreError::Internal(anyhow::anyhow!(
                "an update broke a unique constraint"
            ))),
            Refusal::Other(e) => Err(e),
        },
    }
}

pub(super) async fn remove(
    client: &impl GenericClient,
    offset: i64,
    key: [&str; 3],
    expected: u64,
) -> Result<Release, StoreError> {
    let statement = client.prepare_cached(REMOVE).await.map_err(db)?;
    let gone = client
        .query_opt(
            &statement,
            &[&key[0], &key[1], &key[2], &(expected as i64), &offset],
        )
        .await
        .map_err(db)?;
    match gone {
        Some(row) => decode(row.get(1), row.get(0)),
        None => {
            let statement = client.prepare_cached(CURRENT).await.map_err(db)?;
            let row = client
                .query_opt(&statement, &[&key[0], &key[1], &key[2]])
                .await
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            // Still active, or changed since.
            Err(StoreError::Stale {
                current: row.get::<_, i64>(0) as u64,
            })
        }
    }
}

/// Why a compare-and-swap changed nothing: gone, or changed since.
async fn why_not_changed(
    client: &impl GenericClient,
    release: &Release,
) -> Result<StoreError, StoreError> {
    let statement = client.prepare_cached(CURRENT).await.map_err(db)?;
    Ok(
        match client
            .query_opt(
                &statement,
                &[&release.mesh_id, &release.namespace, &release.name],
            )
            .await
            .map_err(db)?
        {
            Some(row) => StoreError::Stale {
                current: row.get::<_, i64>(0) as u64,
            },
            None => StoreError::NotFound,
        },
    )
}

/// The unique constraints a write can break.
enum Constraint {
    Name,
    ActiveService,
    Key,
}

/// Why a write was refused: a rule, or anything else.
enum Refusal {
    Unique(Constraint),
    Other(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Other(e)
    }
}

fn refusal(e: tokio_postgres::Error) -> Refusal {
    let constraint = e
        .as_db_error()
        .filter(|d| *d.code() == SqlState::UNIQUE_VIOLATION)
        .and_then(|d| d.constraint())
        .and_then(|name| match name {
            "releases_name_unique" => Some(Constraint::Name),
            "releases_one_active_per_service" => Some(Constraint::ActiveService),
            "idempotency_pkey" => Some(Constraint::Key),
            _ => None,
        });
    match constraint {
        Some(c) => Refusal::Unique(c),
        None => Refusal::Other(db(e)),
    }
}
