//! The results of each round of a strategy's checks, the newest
//! [`CHECK_RETENTION`] per release.

use deadpool_postgres::GenericClient;

use super::db;
use crate::domain::ports::CHECK_RETENTION;
use crate::domain::strategy::CheckResult;
use crate::store::StoreError;

const RECORD: &str = "INSERT INTO checks (uid, round, name, body) VALUES ($1, $2, $3, $4)
     ON CONFLICT (uid, round, name) DO UPDATE SET body = excluded.body";
const KEEP_NEWEST: &str = "DELETE FROM checks WHERE uid = $1 AND seq NOT IN
     (SELECT seq FROM checks WHERE uid = $1 ORDER BY round DESC, seq DESC LIMIT $2)";
const LIST: &str = "SELECT body FROM checks WHERE uid = $1 ORDER BY round, seq";
const FORGET: &str = "DELETE FROM checks WHERE uid = $1";

pub(super) async fn record(
    client: &mut deadpool_postgres::Object,
    uid: &uuid::Uuid,
    results: &[CheckResult],
) -> Result<(), StoreError> {
    let uid = uid.to_string();
    let tx = client.transaction().await.map_err(db)?;
    let record = tx.prepare_cached(RECORD).await.map_err(db)?;
    for result in results {
        let body = serde_json::to_string(result).map_err(|e| StoreError::Internal(e.into()))?;
        tx.execute(
            &record,
            &[&uid, &(result.round as i64), &result.name, &body],
        )
        .await
        .map_err(db)?;
    }
    let keep = tx.prepare_cached(KEEP_NEWEST).await.map_err(db)?;
    tx.execute(&keep, &[&uid, &(CHECK_RETENTION as i64)])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(super) async fn list(
    client: &impl GenericClient,
    uid: &uuid::Uuid,
) -> Result<Vec<CheckResult>, StoreError> {
    let statement = client.prepare_cached(LIST).await.map_err(db)?;
    let rows = client
        .query(&statement, &[&uid.to_string()])
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| serde_json::from_str(row.get(0)).map_err(|e| StoreError::Internal(e.into())))
        .collect()
}

/// A removed release's results go with it.
pub(super) async fn forget(
    client: &impl GenericClient,
    uid: &uuid::Uuid,
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(FORGET).await.map_err(db)?;
    client
        .execute(&statement, &[&uid.to_string()])
        .await
        .map_err(db)?;
    Ok(())
}
