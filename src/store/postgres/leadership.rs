//! One driver among replicas on PostgreSQL: a session-level advisory lock,
//! held on a connection of its own for as long as the replica drives.
//!
//! PostgreSQL frees the lock when that session ends, so a replica that dies
//! gives it up as soon as the server notices: at once when the process is
//! killed (its kernel closes the socket), within about 11 s when
//! its host or network goes (TCP keepalives on both ends). The others try
//! to take it at each round of their drivers, so one of them drives within
//! a resync interval after that.
//!
//! The holder proves it still holds the lock before each round (a query on
//! its session, bounded by [`CHECK_TIMEOUT`]) and stops driving when it
//! cannot. A holder cut off from the database can still be in the middle of
//! a round when another takes over; every write of both is fenced by
//! optimistic concurrency (the release's resourceVersion in the store, the
//! object's resourceVersion in the cluster), so the slower one loses its
//! write and the next round reads again.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::domain::ports::Leadership;

/// The first key of the lock ("mr"); the second is the schema's hash, so
/// that services on different schemas of one database do not share it.
const DRIVER_LOCK_CLASS: i32 = 0x6d72;

/// How long proving the lock (or connecting to take it) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP keepalives on the lock's session, both ends: the server ends the
/// session of a replica whose host went away after idle + interval × count
/// seconds (11).
const KEEPALIVE_IDLE_SECS: u64 = 5;
const KEEPALIVE_INTERVAL_SECS: u64 = 2;
const KEEPALIVE_COUNT: u32 = 3;

pub(super) struct PgLeadership {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    session: Mutex<Option<Session>>,
}

struct Session {
    client: tokio_postgres::Client,
    holds: bool,
}

impl PgLeadership {
    pub(super) fn new(
        mut config: tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
    ) -> Self {
        config
            .connect_timeout(CHECK_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(KEEPALIVE_IDLE_SECS))
            .keepalives_interval(Duration::from_secs(KEEPALIVE_INTERVAL_SECS))
            .keepalives_retries(KEEPALIVE_COUNT)
            .application_name("meshrelease-driver");
        PgLeadership {
            config,
            tls,
            session: Mutex::new(None),
        }
    }

    /// Ends the session, so that another replica takes over at once (on a
    /// clean stop).
    pub(super) async fn give_up(&self) {
        if self.session.lock().await.take().is_some_and(|s| s.holds) {
            tracing::info!("gave up driving the clusters");
        }
    }

    async fn connect(&self) -> Option<Session> {
        let (client, connection) = match tokio::time::timeout(
            CHECK_TIMEOUT,
            self.config.connect(self.tls.clone()),
        )
        .await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot connect to take the driver lock");
                return None;
            }
            Err(_) => return None,
        };
        // Ends when the client is dropped (or the server goes).
        tokio::spawn(connection);
        // The server's side of the keepalives: a dead replica's session, and
        // its lock, end within seconds. Not fatal where refused.
        let _ = client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = {KEEPALIVE_IDLE_SECS}; \
                 SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_SECS}; \
                 SET tcp_keepalives_count = {KEEPALIVE_COUNT}"
            ))
            .await;
        Some(Session {
            client,
            holds: false,
        })
    }
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn hold(&self) -> bool {
        let mut session = self.session.lock().await;
        if let Some(current) = session.as_ref() {
            let alive = !current.client.is_closed()
                && tokio::time::timeout(CHECK_TIMEOUT, current.client.simple_query("SELECT 1"))
                    .await
                    .is_ok_and(|answer| answer.is_ok());
            if !alive {
                if current.holds {
                    tracing::warn!(
                        "lost the session that holds the driver lock: this replica stops driving"
                    );
                }
                *session = None;
            }
        }
        if session.is_none() {
            *session = self.connect().await;
        }
        let Some(current) = session.as_mut() else {
            return false;
        };
        if !current.holds {
            let taken = tokio::time::timeout(
                CHECK_TIMEOUT,
                current.client.query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                    &[&DRIVER_LOCK_CLASS],
                ),
            )
            .await;
            match taken {
                Ok(Ok(row)) => {
                    // NULL when the schema is gone (current_schema() is NULL).
                    current.holds = matches!(row.try_get::<_, Option<bool>>(0), Ok(Some(true)));
                    if current.holds {
                        tracing::info!("this replica now drives the clusters");
                    }
                }
                Ok(Err(_)) | Err(_) => *session = None,
            }
        }
        session.as_ref().is_some_and(|s| s.holds)
    }
}
