//! The store's schema and its migrations.
//!
//! The tables live in a schema of their own (a PostgreSQL namespace, by
//! default `switchyard`), whose `schema_version` table says how many steps
//! of [`MIGRATIONS`] it has had. Several nodes may start at once on a new
//! database: each migrates in one transaction that first takes an advisory
//! lock on the schema's name and reads the version again under it, so one
//! node creates the tables and the others, once it has committed, find
//! nothing left to do.
//!
//! Times of the engine (`at`, `time`, `handled_at`, ...) are its
//! milliseconds since the epoch, as `bigint`; leases are the database's own
//! `timestamptz`, so that the nodes' clocks never have to agree. Bodies of
//! messages are `bytea`, the exact bytes they came with: a malformed message
//! from outside is replayed as it came. States and data are JSON `text`.

use switchyard_runtime::StoreError;
use tokio_postgres::error::SqlState;

use crate::connection::{Conn, error};

/// The schema, one step per version. A new version appends a step and
/// never edits one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE instances (
        process text NOT NULL,
        key text NOT NULL,
        version bigint NOT NULL,
        state text NOT NULL,
        data text NOT NULL,
        completed_at bigint,
        updated_at bigint NOT NULL,
        PRIMARY KEY (process, key)
    );
    CREATE INDEX instances_completed ON instances (completed_at) WHERE completed_at IS NOT NULL;
    CREATE TABLE inbox (
        process text NOT NULL,
        message_id uuid NOT NULL,
        handled_at bigint NOT NULL,
        PRIMARY KEY (process, message_id)
    );
    CREATE INDEX inbox_handled ON inbox (handled_at);
    CREATE TABLE outbox (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id uuid NOT NULL,
        name text NOT NULL,
        kind text NOT NULL,
        body bytea NOT NULL,
        causation uuid,
        time bigint NOT NULL,
        process text NOT NULL,
        key text NOT NULL,
        owner text NOT NULL,
        claim uuid NOT NULL,
        lease_until timestamptz NOT NULL
    );
    CREATE INDEX outbox_owner ON outbox (owner);
    CREATE INDEX outbox_lease ON outbox (lease_until);
    CREATE TABLE timers (
        process text NOT NULL,
        key text NOT NULL,
        timer text NOT NULL,
        at bigint NOT NULL,
        id uuid NOT NULL,
        owner text NOT NULL,
        claim uuid NOT NULL,
        lease_until timestamptz NOT NULL,
        PRIMARY KEY (process, key, timer)
    );
    CREATE INDEX timers_owner ON timers (owner);
    CREATE INDEX timers_lease ON timers (lease_until);
    CREATE TABLE dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        message_id uuid NOT NULL,
        name text NOT NULL,
        body bytea,
        causation uuid,
        time bigint NOT NULL,
        process text,
        key text,
        reason text NOT NULL,
        dead_at bigint NOT NULL
    );",
];

/// The version this build writes.
pub(crate) fn known() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date, or, when `create` is false, only checks
/// that it is there and current enough. A schema from a newer build is
/// refused rather than written with an older idea of it.
///
/// A current schema (nearly always) is only read. Otherwise the steps run
/// in one transaction, under an advisory lock taken on the schema's name,
/// and the version is read again inside it: another node may have migrated
/// the schema meanwhile, and then there is nothing left to do.
pub(crate) async fn migrate(
    conn: &Conn,
    schema: &str,
    name: &str,
    create: bool,
) -> Result<(), StoreError> {
    let found = version(conn).await?;
    if found == known() {
        return Ok(());
    }
    if !create && found == 0 {
        return Err(StoreError::Failed(format!("there is no Switchyard schema `{name}`").into()));
    }
    conn.client.batch_execute("BEGIN").await.map_err(error)?;
    let migrated = steps(conn, schema, name).await;
    let end = if migrated.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.client.batch_execute(end).await.map_err(error);
    migrated.and(ended)
}

/// The steps a schema lacks, inside the migration's transaction.
async fn steps(conn: &Conn, schema: &str, name: &str) -> Result<(), StoreError> {
    let lock = format!("switchyard schema {name}");
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock])
        .await
        .map_err(error)?;
    let create = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (version bigint NOT NULL)"
    );
    conn.client.batch_execute(&create).await.map_err(error)?;
    let found = version(conn).await?;
    for step in MIGRATIONS.iter().skip(found.max(0) as usize) {
        conn.client.batch_execute(step).await.map_err(error)?;
    }
    conn.client.batch_execute("DELETE FROM schema_version").await.map_err(error)?;
    conn.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&known()])
        .await
        .map_err(error)?;
    Ok(())
}

/// The schema's version: 0 when it, or its version table, is not there.
async fn version(conn: &Conn) -> Result<i64, StoreError> {
    let found = match conn.client.query_opt("SELECT version FROM schema_version", &[]).await {
        Ok(row) => row.map_or(0, |row| row.get::<_, i64>(0)),
        Err(failure)
            if failure.code() == Some(&SqlState::UNDEFINED_TABLE)
                || failure.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            0
        }
        Err(failure) => return Err(error(failure)),
    };
    if found > known() {
        return Err(StoreError::NewerSchema { found, known: known() });
    }
    Ok(found)
}
