//! The store's connections to the database: opening one into the store's
//! schema, telling apart what PostgreSQL's errors mean for the store, and
//! connecting again, with backoff, once a connection is lost.
//!
//! The store holds two [`Line`]s, one for its writer task and one for the
//! reads and claims of its callers. A line keeps its connection until the
//! connection closes (the server shut down, restarted, or dropped it), then
//! connects again at the next call; while the database cannot be reached,
//! calls are answered [`StoreError::Unavailable`] at once, and a new try is
//! made only after a backoff that doubles up to [`LAST_BACKOFF`]. So the
//! engine, which retries an unavailable store for as long as it takes,
//! recovers with no restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_runtime::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

/// The first and the longest wait before connecting again.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LAST_BACKOFF: Duration = Duration::from_secs(2);

/// How long connecting may take before it counts as a failure: a server
/// that does not answer is an outage like one that refuses.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a PostgreSQL error means for the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The database cannot be used for now: the connection is lost, the
    /// server is shutting down, starting, out of resources, or in recovery.
    /// The same calls may succeed later: [`StoreError::Unavailable`].
    Outage,
    /// Two transactions got in each other's way (a deadlock, a
    /// serialization failure): nothing is wrong with either, and trying the
    /// same transaction again at once nearly always succeeds. Answered as
    /// [`StoreError::Unavailable`] if it keeps happening.
    Contention,
    /// The data of one statement was refused (a value out of range, a
    /// constraint, a string the database cannot hold): the write it belongs
    /// to fails, alone.
    Refused,
    /// Something an operator must mend: the schema is gone or wrong, the
    /// credentials are refused, the data is corrupt. Retrying will not help.
    Broken,
}

/// Sorts an error of the client by what it means for the store: an error
/// the server sent is sorted by its SQLSTATE ([`fault_of`]); one without
/// (the connection closed or failed, the server did not answer in time) is
/// an outage; anything else the client could not do is broken.
pub(crate) fn fault(failure: &tokio_postgres::Error) -> Fault {
    if let Some(code) = failure.code() {
        return fault_of(code);
    }
    if failure.is_closed() || lost(failure) {
        return Fault::Outage;
    }
    Fault::Broken
}

/// Whether a client error without a SQLSTATE comes from the network: an I/O
/// error anywhere in its causes, or a server that did not answer in time.
fn lost(failure: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(failure);
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return true;
        }
        cause = error.source();
    }
    // The client's own timeout has no cause to look at, only its words.
    failure.to_string().starts_with("timeout")
}

/// Sorts a SQLSTATE. Connection exceptions (class 08), the server shutting
/// down or not yet accepting connections (57P01-57P03), a cancelled
/// statement (57014: a timeout, or an operator), insufficient resources
/// (class 53: disk full, out of memory, too many connections), a lock not
/// available now (55P03), a read-only transaction (25006: a standby, during
/// a failover) and system errors (class 58: I/O) come from around the data,
/// and pass: outages. Serialization failures and deadlocks (40001, 40P01)
/// are contention between nodes. Data exceptions (class 22), integrity
/// violations (class 23) and limits exceeded (class 54) are the fault of
/// what one statement wrote. The rest, an undefined table or a syntax
/// error (class 42: the schema was changed under the store), refused
/// credentials (28), a database that does not exist (3D000), internal
/// errors and corruption (XX), needs an operator.
pub(crate) fn fault_of(code: &SqlState) -> Fault {
    let code = code.code();
    let class = &code[..2.min(code.len())];
    match (class, code) {
        (_, "40001" | "40P01") => Fault::Contention,
        ("08" | "53" | "58", _) => Fault::Outage,
        (_, "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "25006") => Fault::Outage,
        ("22" | "23" | "54", _) => Fault::Refused,
        _ => Fault::Broken,
    }
}

/// The store's error for a client error: an outage, and contention, are
/// worth retrying.
pub(crate) fn error(failure: tokio_postgres::Error) -> StoreError {
    match fault(&failure) {
        Fault::Outage | Fault::Contention => StoreError::Unavailable(Box::new(failure)),
        Fault::Refused | Fault::Broken => StoreError::Failed(Box::new(failure)),
    }
}

/// Where and how the store connects: the database, and the schema every
/// connection works in.
#[derive(Debug)]
pub(crate) struct Target {
    config: tokio_postgres::Config,
    /// The schema's name, quoted as an identifier.
    schema: String,
}

impl Target {
    pub(crate) fn new(mut config: tokio_postgres::Config, schema: &str, name: &str) -> Target {
        // Shown in `pg_stat_activity`, so that an operator sees which node
        // holds which connection.
        config.application_name(name);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Target { config, schema: quoted(schema) }
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// Opens a connection whose unqualified names are the store's schema:
    /// every statement of the store names its tables so.
    pub(crate) async fn connect(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(failure) = connection.await {
                tracing::warn!(%failure, "a connection of the PostgreSQL store ended");
            }
        });
        client.batch_execute(&format!("SET search_path TO {}", self.schema)).await?;
        Ok(Conn { client, statements: Mutex::new(HashMap::new()) })
    }
}

/// An identifier quoted for SQL: any name is taken as it is written.
pub(crate) fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// One connection, with the statements prepared on it so far: the store
/// runs few statements, many times each.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    async fn prepare(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cached(sql) {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.lock().unwrap_or_else(|p| p.into_inner()).insert(sql, statement.clone());
        Ok(statement)
    }

    fn cached(&self, sql: &'static str) -> Option<Statement> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner()).get(sql).cloned()
    }

    pub(crate) async fn query(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(crate) async fn execute(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.execute(&statement, params).await
    }
}

/// A connection kept open, and opened again once it has closed.
pub(crate) struct Line {
    target: Arc<Target>,
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so that the callers who find the connection
    /// closed at once make one try between them, not one each.
    backoff: tokio::sync::Mutex<Backoff>,
}

/// When to try connecting again, and why the last try failed.
struct Backoff {
    retry_at: Option<Instant>,
    wait: Duration,
    cause: String,
}

impl Line {
    pub(crate) fn new(target: Arc<Target>) -> Line {
        let backoff = Backoff { retry_at: None, wait: FIRST_BACKOFF, cause: String::new() };
        Line { target, current: Mutex::new(None), backoff: tokio::sync::Mutex::new(backoff) }
    }

    /// The open connection, or a new one. While the backoff after a failed
    /// try lasts, the answer is [`StoreError::Unavailable`], at once.
    pub(crate) async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        if let Some(conn) = self.open() {
            return Ok(conn);
        }
        let mut backoff = self.backoff.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(conn) = self.open() {
            return Ok(conn);
        }
        let now = Instant::now();
        if backoff.retry_at.is_some_and(|at| now < at) {
            return Err(StoreError::Unavailable(backoff.cause.clone().into()));
        }
        match self.target.connect().await {
            Ok(conn) => {
                if backoff.retry_at.take().is_some() {
                    tracing::info!("the PostgreSQL store is connected again");
                }
                backoff.wait = FIRST_BACKOFF;
                let conn = Arc::new(conn);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                Ok(conn)
            }
            Err(failure) => {
                tracing::warn!(%failure, "the PostgreSQL store cannot connect");
                backoff.retry_at = Some(now + backoff.wait);
                backoff.wait = (backoff.wait * 2).min(LAST_BACKOFF);
                backoff.cause = describe(&failure);
                Err(error(failure))
            }
        }
    }

    /// The connection, if it is still open.
    fn open(&self) -> Option<Arc<Conn>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|conn| !conn.client.is_closed()).cloned()
    }
}

/// An error in words, with its causes: the client's own words ("db error",
/// "error connecting to server") say little without them.
pub(crate) fn describe(failure: &dyn std::error::Error) -> String {
    let mut text = failure.to_string();
    let mut cause = failure.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class of SQLSTATE the store meets, with the codes that matter
    /// on their own, and what each means for the store.
    #[test]
    fn sqlstates_are_sorted_by_what_they_mean_for_the_store() {
        let cases = [
            (SqlState::CONNECTION_EXCEPTION, Fault::Outage),
            (SqlState::CONNECTION_FAILURE, Fault::Outage),
            (SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, Fault::Outage),
            (SqlState::ADMIN_SHUTDOWN, Fault::Outage),
            (SqlState::CRASH_SHUTDOWN, Fault::Outage),
            (SqlState::CANNOT_CONNECT_NOW, Fault::Outage),
            (SqlState::QUERY_CANCELED, Fault::Outage),
            (SqlState::INSUFFICIENT_RESOURCES, Fault::Outage),
            (SqlState::DISK_FULL, Fault::Outage),
            (SqlState::OUT_OF_MEMORY, Fault::Outage),
            (SqlState::TOO_MANY_CONNECTIONS, Fault::Outage),
            (SqlState::LOCK_NOT_AVAILABLE, Fault::Outage),
            (SqlState::READ_ONLY_SQL_TRANSACTION, Fault::Outage),
            (SqlState::IO_ERROR, Fault::Outage),
            (SqlState::T_R_SERIALIZATION_FAILURE, Fault::Contention),
            (SqlState::T_R_DEADLOCK_DETECTED, Fault::Contention),
            (SqlState::NUMERIC_VALUE_OUT_OF_RANGE, Fault::Refused),
            (SqlState::CHARACTER_NOT_IN_REPERTOIRE, Fault::Refused),
            (SqlState::UNIQUE_VIOLATION, Fault::Refused),
            (SqlState::NOT_NULL_VIOLATION, Fault::Refused),
            (SqlState::PROGRAM_LIMIT_EXCEEDED, Fault::Refused),
            (SqlState::UNDEFINED_TABLE, Fault::Broken),
            (SqlState::SYNTAX_ERROR, Fault::Broken),
            (SqlState::INVALID_PASSWORD, Fault::Broken),
            (SqlState::INVALID_CATALOG_NAME, Fault::Broken),
            (SqlState::INTERNAL_ERROR, Fault::Broken),
            (SqlState::DATA_CORRUPTED, Fault::Broken),
            (SqlState::ACTIVE_SQL_TRANSACTION, Fault::Broken),
        ];
        for (code, expected) in cases {
            assert_eq!(fault_of(&code), expected, "SQLSTATE {}", code.code());
        }
    }

    #[test]
    fn identifiers_are_quoted_whatever_they_hold() {
        assert_eq!(quoted("switchyard"), "\"switchyard\"");
        assert_eq!(quoted("a\"b; DROP"), "\"a\"\"b; DROP\"");
    }
}
