//! The SQLite schema and its migrations, and what the database keeps
//! about itself: the secret that signs continue tokens and where its
//! revisions start.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // The results of each round of a strategy's checks, the newest 500 per
    // release (ListReleaseChecks).
    r#"
    CREATE TABLE checks (
        uid   TEXT NOT NULL,
        round INTEGER NOT NULL,
        name  TEXT NOT NULL,
        body  TEXT NOT NULL,
        PRIMARY KEY (uid, round, name)
    );
    "#,
];

/// The database holds the secret that signs continue tokens: it is created
/// readable by its owner only (SQLite gives its `-wal` and `-shm` files the
/// same mode), and one found readable by others is narrowed, saying so.
pub(super) fn owner_only(path: &Path) -> anyhow::Result<()> {
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

pub(super) fn open_connection(path: &Path, flags: OpenFlags) -> anyhow::Result<Connection> {
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

pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
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
pub(super) fn revision_floor(conn: &Connection) -> anyhow::Result<u64> {
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
    let floor = if used {
        0
    } else {
        crate::store::new_revision_floor()
    };
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('revision_floor', ?1)",
        params![floor.to_be_bytes().to_vec()],
    )?;
    Ok(floor)
}

/// The continue-token secret, made on first open and kept in the database so
/// that tokens survive restarts and work on every replica of one database.
pub(super) fn cursor_secret(conn: &Connection) -> anyhow::Result<[u8; 32]> {
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
