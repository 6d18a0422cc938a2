//! [`SqliteStore::handle_once`](super::SqliteStore::handle_once) on the
//! store's thread: a handler's own work and the inbox row of the message it
//! handles, committed together in one transaction.
//!
//! That transaction is its own and joins no group: the caller's code runs
//! inside it, and its error or panic must roll back its own work and row,
//! not the writes of other callers. It runs between groups, after the
//! writes queued before it, so that `work` sees them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::connection::{Link, error};
use super::serve::Reply;
use super::write;
use crate::message::{MessageId, Timestamp};
use crate::store::StoreError;

/// A call that runs alone on the store's thread, with the connection; it
/// answers its caller itself, as only it knows the type of the answer.
pub(super) type Job = Box<dyn FnOnce(&mut Link, &AtomicU64) + Send>;

/// The job of one `handle_once` call.
pub(super) fn job<T, W>(
    scope: Box<str>,
    id: MessageId,
    at: Timestamp,
    work: W,
    reply: Reply<Option<T>>,
) -> Job
where
    T: Send + 'static,
    W: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
{
    Box::new(move |link, transactions| {
        let result = handle_once(link, &scope, id, at, work);
        if let Ok(Some(_)) = result {
            transactions.fetch_add(1, Ordering::Relaxed);
        }
        drop(reply.send(result));
    })
}

/// Why the transaction stopped.
enum Stop {
    Sqlite(rusqlite::Error),
    /// `work` panicked, with this message.
    Panicked(String),
}

impl From<rusqlite::Error> for Stop {
    fn from(failure: rusqlite::Error) -> Stop {
        Stop::Sqlite(failure)
    }
}

/// Runs the transaction, and tells the link how it went: an error of SQLite
/// is sorted as the group's are (an outage is worth retrying, and may have
/// the file opened again), a panic is a failure.
fn handle_once<T>(
    link: &mut Link,
    scope: &str,
    id: MessageId,
    at: Timestamp,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    link.writable()?;
    match transact(&mut link.connection, scope, id, at, work) {
        Ok(done) => {
            link.succeeded();
            Ok(done)
        }
        Err(Stop::Sqlite(failure)) => {
            link.failed(&failure);
            Err(error(failure))
        }
        Err(Stop::Panicked(message)) => {
            Err(StoreError::Failed(format!("the handler's work panicked: {message}").into()))
        }
    }
}

/// The inbox row first: if it is there already, nothing more runs. Then
/// `work`, and both commit together; an error or a panic of `work` rolls
/// both back. A rollback that fails is what is reported then: the
/// connection, not `work`, is what needs mending.
fn transact<T>(
    connection: &mut Connection,
    scope: &str,
    id: MessageId,
    at: Timestamp,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, Stop> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !write::mark_handled(&transaction, scope, id, at)? {
        transaction.rollback()?;
        return Ok(None);
    }
    // The transaction is not used after a panic but to roll it back, which
    // is what a broken invariant of `work` calls for.
    match catch_unwind(AssertUnwindSafe(|| work(&transaction))) {
        Ok(Ok(value)) => {
            transaction.commit()?;
            Ok(Some(value))
        }
        Ok(Err(failure)) => {
            transaction.rollback()?;
            Err(Stop::Sqlite(failure))
        }
        Err(payload) => {
            transaction.rollback()?;
            Err(Stop::Panicked(panic_message(payload.as_ref())))
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(message), _) => (*message).to_owned(),
        (_, Some(message)) => message.clone(),
        _ => "a panic without a message".to_owned(),
    }
}
