//! What replicas on one database share about their callers: the signed
//! requests already carried out (a replay to any replica is refused) and a
//! heartbeat that tells each replica how many there are (each grants its
//! part of every rate limit). One statement per signed write, one per
//! replica per second; no statement per request otherwise.

use async_trait::async_trait;
use deadpool_postgres::Pool;

use crate::auth::rate_limit::Peers;
use crate::auth::replay::{REPLAY_WINDOW, SignedWrites};

/// A replica whose heartbeat is older than this is not counted.
const ALIVE_SECS: u64 = 3;
/// Rows of replicas gone this long are deleted.
const FORGET_SECS: u64 = 60;

pub(super) struct SharedLimits {
    pub(super) pool: Pool,
    /// This replica's row in `replicas`.
    pub(super) id: String,
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, String> {
    pool.get().await.map_err(|e| e.to_string())
}

#[async_trait]
impl SignedWrites for SharedLimits {
    async fn claim(&self, key: &str) -> Result<bool, String> {
        // The key is inlined (one round trip for the whole transaction):
        // only the hex of a hash is ever one.
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a malformed replay key".into());
        }
        // Taken unless a row of the window holds it; an expired row is
        // taken over in the same statement. Committed without waiting for
        // the disk: the write this claim guards commits after it and waits,
        // and the log is flushed in order, so a write that survives a crash
        // keeps its claim; a claim lost with a write that never happened
        // loses nothing.
        let transaction = format!(
            "BEGIN; SET LOCAL synchronous_commit = off;
             INSERT INTO signed_requests (key, expires_at)
             VALUES ('{key}', now() + interval '{} seconds')
             ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
             WHERE signed_requests.expires_at < now();
             COMMIT",
            REPLAY_WINDOW.as_secs()
        );
        let answers = client(&self.pool)
            .await?
            .simple_query(&transaction)
            .await
            .map_err(|e| e.to_string())?;
        let taken = answers
            .iter()
            .filter_map(|answer| {
                if let tokio_postgres::SimpleQueryMessage::CommandComplete(rows) = answer {
                    Some(*rows)
                } else {
                    None
                }
            })
            .nth(2)
            .ok_or("no answer to the claim's INSERT")?;
        Ok(taken == 1)
    }

    async fn release(&self, key: &str) {
        let released = match client(&self.pool).await {
            Ok(client) => client
                .execute("DELETE FROM signed_requests WHERE key = $1", &[&key])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(error) = released {
            // The client signs again; nothing else is lost.
            tracing::warn!(%error, "could not give back a refused signed request's claim");
        }
    }
}

#[async_trait]
impl Peers for SharedLimits {
    async fn beat(&self) -> Result<u32, String> {
        let client = client(&self.pool).await?;
        let statement = format!(
            "WITH beat AS (
                 INSERT INTO replicas (id, seen_at) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()),
             gone AS (
                 DELETE FROM replicas WHERE seen_at < now() - interval '{FORGET_SECS} seconds'),
             expired AS (
                 DELETE FROM signed_requests
                  WHERE key IN (SELECT key FROM signed_requests
                                 WHERE expires_at < now() LIMIT 1000))
             SELECT count(*) FROM replicas
              WHERE id <> $1 AND seen_at > now() - interval '{ALIVE_SECS} seconds'"
        );
        let others: i64 = client
            .query_one(&statement, &[&self.id])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        Ok(u32::try_from(others).unwrap_or(u32::MAX - 1) + 1)
    }

    async fn leave(&self) {
        if let Ok(client) = client(&self.pool).await {
            let _ = client
                .execute("DELETE FROM replicas WHERE id = $1", &[&self.id])
                .await;
        }
    }
}
