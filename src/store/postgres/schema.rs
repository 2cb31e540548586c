//! The PostgreSQL schema and its migrations, applied in order by the first
//! replica to start (under an advisory lock, so replicas starting together
//! migrate once).

use deadpool_postgres::Pool;

/// Serializes schema migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x6d65_7368_6d69_6772; // "meshmigr"

const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // Revisions become transaction ids (plus an offset that keeps them above
    // every revision given before), so that writers commit in parallel; the
    // change log remembers how far it has been pruned.
    r#"
    CREATE TABLE change_log (
        only_row        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        revision_offset BIGINT NOT NULL,
        pruned_through  BIGINT NOT NULL
    );
    INSERT INTO change_log (revision_offset, pruned_through)
    SELECT GREATEST(0, GREATEST(
               COALESCE((SELECT MAX(revision) FROM events), 0),
               COALESCE((SELECT MAX(resource_version) FROM releases), 0))
             + 1 - pg_current_xact_id()::text::bigint),
           COALESCE((SELECT MIN(revision) - 1 FROM events), 0);
    ALTER TABLE idempotency ADD COLUMN revision BIGINT;
    CREATE INDEX idempotency_by_age ON idempotency (created_at);
"#,
    // Release bodies (several KB of JSON, written twice per change) are
    // compressed with lz4 rather than pglz, which cost a quarter of the
    // database's time in a profile; servers built without lz4 keep pglz.
    r#"
    DO $$ BEGIN
        ALTER TABLE releases ALTER COLUMN body SET COMPRESSION lz4;
        ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4;
        ALTER TABLE idempotency ALTER COLUMN response SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported THEN
        RAISE NOTICE 'lz4 is not available: release bodies stay compressed with pglz';
    END $$;
"#,
    // A new database starts its revisions at a random point (between 10^11
    // and 10^12 above where they would have been), so that a resourceVersion
    // of another database, or of this one before it was replaced, is seldom
    // one of its own; no revision at or below `revision_floor` was given by
    // it. A database already in use keeps its numbering (floor 0).
    r#"
    ALTER TABLE change_log ADD COLUMN revision_floor BIGINT NOT NULL DEFAULT 0;
    UPDATE change_log
       SET revision_offset = revision_offset + (100000000000 + floor(random() * 900000000000))::bigint
     WHERE NOT EXISTS (SELECT 1 FROM events) AND NOT EXISTS (SELECT 1 FROM releases);
    UPDATE change_log
       SET revision_floor = revision_offset
     WHERE NOT EXISTS (SELECT 1 FROM events) AND NOT EXISTS (SELECT 1 FROM releases);
"#,
    // The results of each round of a strategy's checks, the newest 500 per
    // release (ListReleaseChecks).
    r#"
    CREATE TABLE checks (
        uid   TEXT NOT NULL,
        round BIGINT NOT NULL,
        name  TEXT NOT NULL,
        seq   BIGSERIAL,
        body  TEXT NOT NULL,
        PRIMARY KEY (uid, round, name)
    );
"#,
    // What replicas share about callers: the signed requests carried out
    // (by a hash of their signature or nonce, for the replay window) and
    // each replica's heartbeat (the rate limits are split by their count).
    r#"
    CREATE TABLE signed_requests (
        key        TEXT PRIMARY KEY,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX signed_requests_by_expiry ON signed_requests (expires_at);
    CREATE TABLE replicas (
        id      TEXT PRIMARY KEY,
        seen_at TIMESTAMPTZ NOT NULL
    );
"#,
];

/// What every replica of one database shares, read once at start.
pub(super) struct Shared {
    /// Signs continue tokens.
    pub secret: [u8; 32],
    /// Added to a transaction id to make its revision.
    pub revision_offset: i64,
}

/// Brings the schema up to date and reads what replicas share.
pub(super) async fn migrate(pool: &Pool) -> anyhow::Result<Shared> {
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
    anyhow::ensure!(
        applied as usize <= MIGRATIONS.len(),
        "the database schema is newer ({applied}) than this version of meshrelease knows ({})",
        MIGRATIONS.len()
    );
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(version as i32 + 1)],
        )
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
    // Revisions must stay above every one given. They do while the server's
    // transaction ids grow; restored onto another server (whose ids start
    // lower), they would not: the offset grows to keep them above. Every
    // replica reads it here, at start, as every replica restarts when the
    // database is restored.
    let revision_offset: i64 = tx
        .query_one(
            "UPDATE change_log SET revision_offset = GREATEST(revision_offset,
                 GREATEST(COALESCE((SELECT MAX(revision) FROM events), 0),
                          COALESCE((SELECT MAX(resource_version) FROM releases), 0))
                 + 1 - pg_current_xact_id()::text::bigint)
             RETURNING revision_offset",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    let secret =
        <[u8; 32]>::try_from(stored).map_err(|_| anyhow::anyhow!("a malformed cursor secret"))?;
    Ok(Shared {
        secret,
        revision_offset,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MIGRATIONS;
    use crate::store::suite::{Schema, release};
    use crate::store::{PostgresStore, ReleaseStore};

    /// A database written by the version before revisions were transaction
    /// ids: its releases, revisions and resume points carry on.
    #[tokio::test]
    #[cfg_attr(
        not(pg_tests),
        ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL suite"
    )]
    async fn a_database_of_the_first_schema_is_upgraded_in_place() {
        let Ok(url) = std::env::var("MESHRELEASE_TEST_DATABASE_URL") else {
            return;
        };
        let name = format!("mr_upgrade_{}", uuid::Uuid::new_v4().simple());
        let schema = Schema { url, name };
        let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // As the first version left it: far more revisions than the server
        // has transaction ids (group commits gave many writes one).
        let old = release("from-before", "reviews");
        let body = serde_json::to_string(&crate::domain::Release {
            resource_version: 5_000_000_000,
            ..old.clone()
        })
        .unwrap();
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {0}; SET search_path = {0}; {1}
                 CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);",
                schema.name, MIGRATIONS[0]
            ))
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO releases (mesh_id, namespace, name, uid, service_name, phase, active, resource_version, body)
                 VALUES ('mesh', 'default', 'from-before', $1, 'reviews', 'Pending', TRUE, 5000000000, $2)",
                &[&old.uid.to_string(), &body],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO events (revision, mesh_id, namespace, type, body)
                 VALUES (4999999999, 'mesh', 'default', 'ADDED', $1), (5000000000, 'mesh', 'default', 'MODIFIED', $1)",
                &[&body],
            )
            .await
            .unwrap();

        let store: Arc<dyn ReleaseStore> = Arc::new(
            PostgresStore::connect(&schema.url, Some(&schema.name), 4)
                .await
                .unwrap(),
        );
        let kept = store
            .get("mesh", "default", "from-before")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.resource_version, 5_000_000_000);
        let new = match store
            .create(&release("after-upgrade", "ratings"), None)
            .await
            .unwrap()
        {
            crate::store::Created::New(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(
            new.resource_version > 5_000_000_000,
            "{}",
            new.resource_version
        );
        // A watcher that had seen the first old event resumes: the second
        // old one, then the new one.
        let events = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let events = store
                    .events_after("mesh", None, 4_999_999_999, 10)
                    .await
                    .unwrap();
                if events.len() == 2 {
                    return events;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the new event never became readable");
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [5_000_000_000, new.resource_version]
        );
        // Restored onto a server whose transaction ids are behind the
        // revisions given (simulated: the offset lost): a new start keeps
        // revisions above every one given.
        store.close().await;
        drop(store);
        client
            .batch_execute(&format!(
                "UPDATE {0}.change_log SET revision_offset = 0;
                 UPDATE {0}.releases SET resource_version = 9000000000000 WHERE name = 'after-upgrade'",
                schema.name
            ))
            .await
            .unwrap();
        let store: Arc<dyn ReleaseStore> = Arc::new(
            PostgresStore::connect(&schema.url, Some(&schema.name), 4)
                .await
                .unwrap(),
        );
        let after_restore = match store
            .create(&release("after-restore", "details"), None)
            .await
            .unwrap()
        {
            crate::store::Created::New(r) => r.resource_version,
            other => panic!("{other:?}"),
        };
        assert!(after_restore > 9_000_000_000_000, "{after_restore}");
        // And one that had seen nothing kept is too old.
        assert!(matches!(
            store.events_after("mesh", None, 4_999_999_997, 10).await,
            Err(crate::store::StoreError::TooOld { .. })
        ));
    }
}
