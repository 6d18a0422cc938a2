//! The store's connection to its file: opening it while other processes
//! may be creating the same file, creating and migrating the schema, telling
//! apart what SQLite's errors mean for the store, and opening the file again
//! when the connection can no longer write.
//!
//! SQLite opens a file that it cannot open for writing read-only, without
//! an error, and such a connection never writes again, even once the file
//! is writable. So the store holds its connection in a [`Link`] that, after
//! a failure that may have come from the connection itself (read-only, I/O,
//! a file it could not open), opens the file again before the next write,
//! with backoff, and meanwhile answers reads from the connection it has.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{Durability, SqliteOptions};
use crate::store::StoreError;

/// How long [`open`] keeps trying while other connections hold the file
/// busy, for instance while another process creates or migrates it.
pub(super) const OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// How long one statement waits for a lock that another connection holds
/// before SQLite gives up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first and the longest wait before opening the file again, and
/// between tries of a busy open.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// The schema, one step per version; `PRAGMA user_version` says how many
/// steps a file has had. A new version appends a step and never edits one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE instances (
        process TEXT NOT NULL,
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        data TEXT NOT NULL,
        completed_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (process, key)
    ) WITHOUT ROWID;
    CREATE INDEX instances_completed ON instances (completed_at) WHERE completed_at IS NOT NULL;
    CREATE TABLE inbox (
        process TEXT NOT NULL,
        message_id BLOB NOT NULL,
        handled_at INTEGER NOT NULL,
        PRIMARY KEY (process, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_handled ON inbox (handled_at);
    CREATE TABLE outbox (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id BLOB NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        causation BLOB,
        time INTEGER NOT NULL,
        process TEXT NOT NULL,
        key TEXT NOT NULL
    );
    CREATE TABLE timers (
        process TEXT NOT NULL,
        key TEXT NOT NULL,
        timer TEXT NOT NULL,
        at INTEGER NOT NULL,
        id BLOB NOT NULL,
        PRIMARY KEY (process, key, timer)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        message_id BLOB NOT NULL,
        name TEXT NOT NULL,
        body TEXT,
        causation BLOB,
        time INTEGER NOT NULL,
        process TEXT,
        key TEXT,
        reason TEXT NOT NULL,
        dead_at INTEGER NOT NULL
    );",
];

/// What a SQLite error means for the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The store cannot write for now: the file is locked, read-only, full,
    /// failing or out of reach. Nothing is wrong with the data written, and
    /// the same writes may succeed later: an outage, answered with
    /// [`StoreError::Unavailable`]. `reopen` when the connection itself may
    /// be what is stuck, so that a new one is to be opened.
    Outage { reopen: bool },
    /// The data of one statement was refused (a constraint, a value too big
    /// or of the wrong type): the write it belongs to fails, alone.
    Refused,
    /// The file or the library is broken (corrupt, not a database, misused):
    /// no write is to blame, and retrying will not mend it.
    Broken,
}

/// Sorts an error by what it means for the store.
///
/// Read-only (every extended code: a file or directory without write
/// permission, an immutable file, a read-only mount, a WAL that a read-only
/// connection cannot recover), I/O errors, a file that cannot be opened
/// and denied permissions all come from around the file, not from what is
/// written, and are mended by whoever mends the disk; a connection may keep
/// such a failure (SQLite never lifts a read-only open), so a new one is
/// opened. Busy, locked, a full disk, out of memory and a lock protocol
/// race pass by themselves, and the connection stays good.
///
/// `SQLITE_CORRUPT` and `SQLITE_NOTADB` are not outages: the bytes of the
/// file are wrong, not its surroundings, and writing on would build on
/// them; they need an operator, so they are reported as failures. A file
/// whose header is being written by another opener is never seen
/// half-written: SQLite's locks keep readers out until it is complete.
pub(super) fn fault(failure: &rusqlite::Error) -> Fault {
    use rusqlite::Error as E;
    let code = match failure {
        E::SqliteFailure(error, _) => error.code,
        // A value of the item at hand that could not be converted, to or
        // from its column: that item's own fault.
        E::ToSqlConversionFailure(_)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => return Fault::Refused,
        _ => return Fault::Broken,
    };
    match code {
        ErrorCode::ReadOnly
        | ErrorCode::SystemIoFailure
        | ErrorCode::CannotOpen
        | ErrorCode::PermissionDenied => Fault::Outage { reopen: true },
        ErrorCode::DatabaseBusy
        | ErrorCode::DatabaseLocked
        | ErrorCode::DiskFull
        | ErrorCode::OutOfMemory
        | ErrorCode::FileLockingProtocolFailed => Fault::Outage { reopen: false },
        ErrorCode::ConstraintViolation
        | ErrorCode::TooBig
        | ErrorCode::TypeMismatch
        | ErrorCode::ParameterOutOfRange => Fault::Refused,
        _ => Fault::Broken,
    }
}

/// The store's error for a SQLite error: an outage is worth retrying.
pub(super) fn error(failure: rusqlite::Error) -> StoreError {
    match fault(&failure) {
        Fault::Outage { .. } => StoreError::Unavailable(Box::new(failure)),
        Fault::Refused | Fault::Broken => StoreError::Failed(Box::new(failure)),
    }
}

/// The connection of the store's thread, and when to open the file again.
pub(super) struct Link {
    pub(super) connection: Connection,
    path: PathBuf,
    options: SqliteOptions,
    /// Set while the connection cannot write: when to open the file again.
    reopen: Option<Instant>,
    /// Why the connection cannot write, for the writes answered meanwhile.
    cause: String,
    /// The wait before the next reopen after this one; it doubles while
    /// writes keep failing and starts over once one succeeds.
    backoff: Duration,
}

impl Link {
    /// Opens the store's file. A file that opened read-only is still
    /// opened (its reads can be answered), and opened again before a write.
    pub(super) fn open(path: &Path, options: SqliteOptions) -> Result<Link, StoreError> {
        let connection = open(path, &options)?;
        let mut link = Link {
            connection,
            path: path.to_path_buf(),
            options,
            reopen: None,
            cause: String::new(),
            backoff: FIRST_BACKOFF,
        };
        if read_only(&link.connection) {
            link.stuck(READ_ONLY.to_owned(), Instant::now());
        }
        Ok(link)
    }

    /// Before a write: makes sure the connection can write, opening the file
    /// again if it is due. Until then, an error to answer the write with.
    pub(super) fn writable(&mut self) -> Result<(), StoreError> {
        let Some(at) = self.reopen else { return Ok(()) };
        let now = Instant::now();
        if now < at {
            return Err(StoreError::Unavailable(self.cause.clone().into()));
        }
        // One try, not the patient tries of `open`: the reads queued behind
        // this write wait for it, and a later write tries again.
        match connect(&self.path, &self.options, Create::No) {
            Ok(connection) if !read_only(&connection) => {
                tracing::info!(path = %self.path.display(), "the SQLite store can write again");
                self.connection = connection;
                self.reopen = None;
                Ok(())
            }
            Ok(_) => {
                self.stuck(READ_ONLY.to_owned(), now);
                Err(StoreError::Unavailable(self.cause.clone().into()))
            }
            Err(failure) => {
                self.stuck(failure.to_string(), now);
                Err(failure.into_store_error())
            }
        }
    }

    /// After a write group committed: the next outage starts its backoff over.
    pub(super) fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// After a write group failed: a failure that may have come from the
    /// connection has the file opened again before the next write.
    pub(super) fn failed(&mut self, failure: &rusqlite::Error) {
        if fault(failure) == (Fault::Outage { reopen: true }) {
            tracing::warn!(path = %self.path.display(), %failure, "the SQLite store cannot write");
            self.stuck(failure.to_string(), Instant::now());
        }
    }

    fn stuck(&mut self, cause: String, now: Instant) {
        self.reopen = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
        self.cause = cause;
    }
}

const READ_ONLY: &str = "SQLite opened the file read-only: it cannot be written now";

fn read_only(connection: &Connection) -> bool {
    // An error here means SQLite does not know the database: not writable.
    connection.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
}

/// Why opening failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database's schema is at version {found}, newer than this build knows ({known})")]
    NewerSchema { found: i64, known: i64 },
}

impl OpenError {
    fn into_store_error(self) -> StoreError {
        match self {
            OpenError::Sqlite(failure) => error(failure),
            OpenError::NewerSchema { found, known } => StoreError::NewerSchema { found, known },
        }
    }

    fn busy(&self) -> bool {
        matches!(
            self,
            OpenError::Sqlite(failure) if matches!(
                failure.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        )
    }
}

/// Opens the file for [`SqliteStore::open`](super::SqliteStore::open).
/// Processes that start together on a new file race to create it: while
/// another connection holds it busy (creating, migrating or recovering it),
/// opening is tried again with backoff, for [`OPEN_PATIENCE`] at most. The
/// busy timeout does not cover every step: switching a new file to WAL
/// fails with `SQLITE_BUSY` at once, without waiting, while another opener
/// holds it.
pub(super) fn open(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let deadline = Instant::now() + OPEN_PATIENCE;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match connect(path, options, Create::Yes) {
            Err(failure) if failure.busy() && Instant::now() + backoff < deadline => {
                tracing::debug!(path = %path.display(), %failure, "the SQLite file is busy");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(LAST_BACKOFF);
            }
            result => return result.map_err(OpenError::into_store_error),
        }
    }
}

/// Whether opening may create the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    /// When the store is opened.
    Yes,
    /// When it opens its file again: a file that has gone (deleted, moved,
    /// on a disk that is not mounted) is an outage to wait out, not a new
    /// empty store to write on while the instances are elsewhere.
    No,
}

/// Opens the connection and brings its schema up to date.
fn connect(path: &Path, options: &SqliteOptions, create: Create) -> Result<Connection, OpenError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create == Create::Yes {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut connection = Connection::open_with_flags(path, flags)?;
    configure(&connection, options)?;
    migrate(&mut connection)?;
    Ok(connection)
}

fn configure(connection: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    // First of all: every statement after this one waits for a lock that
    // another opener holds instead of failing at once.
    connection.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(%mode, "SQLite refused WAL mode; commits will be slower");
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    // Negative: a size in KiB rather than in pages.
    connection.pragma_update(None, "cache_size", -(i64::from(options.cache_mib) * 1024))?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema up to date. A file from a newer build is refused
/// rather than written with an older idea of it.
///
/// A current file (nearly always) is only read, so that a file that cannot
/// be written opens too. Otherwise the steps run in one exclusive
/// transaction, and the version is read again inside it: another opener
/// may have migrated the file since, and then there is nothing left to do.
fn migrate(connection: &mut Connection) -> Result<(), OpenError> {
    let known = MIGRATIONS.len() as i64;
    if schema_version(connection, known)? == known {
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found = schema_version(&transaction, known)?;
    if found == known {
        return Ok(());
    }
    for step in MIGRATIONS.iter().skip(found.max(0) as usize) {
        transaction.execute_batch(step)?;
    }
    transaction.pragma_update(None, "user_version", known)?;
    transaction.commit()?;
    Ok(())
}

/// The file's `user_version`, refused if newer than `known`.
fn schema_version(connection: &Connection, known: i64) -> Result<i64, OpenError> {
    let found: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > known {
        return Err(OpenError::NewerSchema { found, known });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    /// Every code the store meets, with the extended codes that matter, and
    /// what it means for the store.
    #[test]
    fn errors_are_sorted_by_what_they_mean_for_the_store() {
        let reopen = Fault::Outage { reopen: true };
        let wait = Fault::Outage { reopen: false };
        let cases = [
            (ffi::SQLITE_READONLY, reopen),
            (ffi::SQLITE_READONLY_DBMOVED, reopen),
            (ffi::SQLITE_READONLY_CANTINIT, reopen),
            (ffi::SQLITE_READONLY_DIRECTORY, reopen),
            (ffi::SQLITE_IOERR, reopen),
            (ffi::SQLITE_IOERR_WRITE, reopen),
            (ffi::SQLITE_IOERR_FSYNC, reopen),
            (ffi::SQLITE_CANTOPEN, reopen),
            (ffi::SQLITE_PERM, reopen),
            (ffi::SQLITE_BUSY, wait),
            (ffi::SQLITE_BUSY_SNAPSHOT, wait),
            (ffi::SQLITE_LOCKED, wait),
            (ffi::SQLITE_FULL, wait),
            (ffi::SQLITE_NOMEM, wait),
            (ffi::SQLITE_PROTOCOL, wait),
            (ffi::SQLITE_CONSTRAINT_TRIGGER, Fault::Refused),
            (ffi::SQLITE_TOOBIG, Fault::Refused),
            (ffi::SQLITE_MISMATCH, Fault::Refused),
            (ffi::SQLITE_CORRUPT, Fault::Broken),
            (ffi::SQLITE_NOTADB, Fault::Broken),
            (ffi::SQLITE_MISUSE, Fault::Broken),
            (ffi::SQLITE_ERROR, Fault::Broken),
        ];
        for (code, expected) in cases {
            let failure = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            assert_eq!(fault(&failure), expected, "code {code} ({failure})");
            let unavailable = matches!(error(failure), StoreError::Unavailable(_));
            assert_eq!(unavailable, matches!(expected, Fault::Outage { .. }), "code {code}");
        }
    }
}
