//! The change log (the `events` table) as watchers read it.
//!
//! Writers commit in parallel, so a revision can become visible while a
//! lower one is still in flight. A revision is its writer's transaction id
//! (plus an offset), and PostgreSQL tells the oldest transaction still in
//! flight: `pg_snapshot_xmin(pg_current_snapshot())`. Every transaction
//! below it has finished, and every transaction still to come will get a
//! higher id; so reading only the events below it never skips one that
//! commits later. The price: a watcher sees a change once every
//! transaction that began before it on the database server has ended
//! (normally milliseconds; a session left idle in a transaction holds
//! watchers back until `idle_in_transaction_session_timeout` ends it).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{Notify, watch};

use super::{db, decode};
use crate::domain::ReleaseRef;
use crate::domain::ports::{
    EVENT_RETENTION, Event, EventType, Given, IDEMPOTENCY_WINDOW_SECS, Snapshot, StoreError,
    Written, check_resume_point,
};

/// How often changes committed by other replicas are looked for.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often the change log is pruned (by time, not by polls: under a
/// steady stream of this process's commits the poll timer never fires).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The highest revision a watcher may read now.
const FRONTIER: &str = "
    SELECT COALESCE(MAX(revision), 0) FROM events
    WHERE revision < pg_snapshot_xmin(pg_current_snapshot())::text::bigint + $1";

const EVENTS_AFTER: &str = "
    SELECT revision, type, body FROM events
    WHERE mesh_id = $1 AND ($2::TEXT IS NULL OR namespace = $2) AND revision > $3
      AND revision < pg_snapshot_xmin(pg_current_snapshot())::text::bigint + $5
    ORDER BY revision LIMIT $4";

/// How far the log was pruned, below which revisions this database never
/// gave, and the revision past every one it has given (the next
/// transaction id's).
const PRUNED_THROUGH: &str = "SELECT pruned_through, revision_floor,
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint FROM change_log";

/// Publishes the frontier (`FRONTIER`) to this process's watchers: at once
/// when this process commits (`commits` is notified), every poll interval
/// for other replicas' commits. Prunes the log now and then.
pub(super) async fn follow(
    pool: Pool,
    revisions: watch::Sender<u64>,
    commits: Arc<Notify>,
    offset: i64,
) {
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = commits.notified() => {}
        }
        let Ok(mut client) = pool.get().await else {
            continue;
        };
        if let Ok(latest) = frontier(&client, offset).await {
            revisions.send_if_modified(|r| {
                let newer = latest > *r;
                *r = (*r).max(latest);
                newer
            });
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            if let Err(e) = prune(&mut client, EVENT_RETENTION).await {
                tracing::warn!(error = %e, "cannot prune the change log");
            }
        }
    }
}

pub(super) async fn frontier(client: &impl GenericClient, offset: i64) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(FRONTIER).await.map_err(db)?;
    Ok(client
        .query_one(&statement, &[&offset])
        .await
        .map_err(db)?
        .get::<_, i64>(0) as u64)
}

/// Forgets all but the newest `keep` events (remembering how far, so that a
/// watcher resuming from before is refused) and expired idempotency keys.
pub(super) async fn prune(
    client: &mut deadpool_postgres::Object,
    keep: u64,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    let cut = tx
        .query_opt(
            "SELECT revision FROM events ORDER BY revision DESC OFFSET $1 LIMIT 1",
            &[&(keep as i64)],
        )
        .await
        .map_err(db)?;
    if let Some(cut) = cut.map(|row| row.get::<_, i64>(0)) {
        tx.execute("DELETE FROM events WHERE revision <= $1", &[&cut])
            .await
            .map_err(db)?;
        tx.execute(
            "UPDATE change_log SET pruned_through = GREATEST(pruned_through, $1)",
            &[&cut],
        )
        .await
        .map_err(db)?;
    }
    tx.execute(
        "DELETE FROM idempotency WHERE created_at < $1",
        &[&(chrono::Utc::now().timestamp() - IDEMPOTENCY_WINDOW_SECS)],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(super) async fn events_after(
    client: &impl GenericClient,
    offset: i64,
    mesh_id: &str,
    namespace: Option<&str>,
    revision: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let rows = log_rows(
        client,
        offset,
        EVENTS_AFTER,
        &[
            &mesh_id,
            &namespace,
            &(revision as i64),
            &(limit as i64),
            &offset,
        ],
        revision,
    )
    .await?;
    rows.iter()
        .map(|row| {
            let kind: &str = row.get(1);
            let revision: i64 = row.get(0);
            Ok(Event {
                revision: revision as u64,
                kind: EventType::parse(kind).ok_or_else(|| {
                    StoreError::Internal(anyhow::anyhow!("unknown event type {kind:?}"))
                })?,
                release: decode(row.get(2), revision)?,
            })
        })
        .collect()
}

/// The events of a mesh after `revision` as `Written`: the database reads
/// the few fields wanted from the stored JSON; no release is decoded here.
const WRITTEN_AFTER: &str = "
    SELECT revision, namespace, doc ->> 'name',
        COALESCE(type <> 'DELETED' AND doc #>> '{status,phase}' = 'Running'
            AND jsonb_typeof(doc -> 'strategy') = 'object', false)
    FROM (SELECT revision, namespace, type, body::jsonb AS doc FROM events
          WHERE mesh_id = $1 AND revision > $2
            AND revision < pg_snapshot_xmin(pg_current_snapshot())::text::bigint + $4
          ORDER BY revision LIMIT $3) AS written
    ORDER BY revision";

pub(super) async fn written_after(
    client: &impl GenericClient,
    offset: i64,
    mesh_id: &str,
    revision: u64,
    limit: usize,
) -> Result<Vec<Written>, StoreError> {
    let rows = log_rows(
        client,
        offset,
        WRITTEN_AFTER,
        &[&mesh_id, &(revision as i64), &(limit as i64), &offset],
        revision,
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| Written {
            revision: row.get::<_, i64>(0) as u64,
            release: ReleaseRef {
                mesh_id: mesh_id.to_owned(),
                namespace: row.get(1),
                name: row.get(2),
            },
            runs_strategy: row.get(3),
        })
        .collect())
}

/// The rows `query` selects from the change log after `revision`, once it
/// is known that the log still reached back to `revision` when they were
/// read (`TooOld` otherwise).
async fn log_rows(
    client: &impl GenericClient,
    offset: i64,
    query: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    revision: u64,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let (events, pruned) = futures_util::future::try_join(
        client.prepare_cached(query),
        client.prepare_cached(PRUNED_THROUGH),
    )
    .await
    .map_err(db)?;
    // The events first, then how far the log was pruned: when that is still
    // below `revision`, nothing after it had been pruned when they were read.
    let (rows, pruned) =
        futures_util::future::try_join(client.query(&events, args), client.query_one(&pruned, &[]))
            .await
            .map_err(db)?;
    let pruned_through = pruned.get::<_, i64>(0) as u64;
    let floor = pruned.get::<_, i64>(1) as u64;
    let next = pruned.get::<_, i64>(2) + offset;
    check_resume_point(
        revision,
        Some(pruned_through + 1),
        Given {
            floor,
            latest: (next.max(1) - 1) as u64,
        },
    )?;
    Ok(rows)
}

pub(super) async fn snapshot(
    client: &mut deadpool_postgres::Object,
    offset: i64,
    mesh_id: &str,
    namespace: Option<&str>,
) -> Result<Snapshot, StoreError> {
    // One snapshot for all three reads.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    let (horizon, releases, reflected) = futures_util::future::try_join3(
        tx.query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint + $1",
            &[&offset],
        ),
        tx.query(
            "SELECT resource_version, body FROM releases
             WHERE mesh_id = $1 AND ($2::TEXT IS NULL OR namespace = $2) ORDER BY seq",
            &[&mesh_id, &namespace],
        ),
        // Committed after the oldest transaction still in flight: in the
        // snapshot already, but a watch from the horizon reads them again.
        tx.query(
            "SELECT revision FROM events
             WHERE mesh_id = $1 AND ($2::TEXT IS NULL OR namespace = $2)
               AND revision >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint + $3",
            &[&mesh_id, &namespace, &offset],
        ),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let horizon: i64 = horizon.get(0);
    Ok(Snapshot {
        releases: releases
            .iter()
            .map(|r| decode(r.get(1), r.get(0)))
            .collect::<Result<_, _>>()?,
        revision: (horizon - 1) as u64,
        reflected: reflected
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect(),
    })
}
