//! The store's thread: it owns the connection, answers reads as they come
//! and applies the writes queued meanwhile, from every caller, in one
//! transaction (group commit).
//!
//! A group is all or nothing, with two exceptions that keep one caller's
//! bad data from failing the others: an instance write whose data SQLite
//! refuses fails alone (`CommitOutcome::Failed`), and a call whose other
//! data it refuses fails alone; the group is then applied again without
//! them. Anything else that stops the transaction (an outage above all)
//! answers every call of the group with the same error, and nothing of the
//! group is applied.
//!
//! A call that runs a handler's own work ([`Job`]) joins no group: the
//! group taken up before it is written first, then the job runs alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::connection::{Fault, Link, error, fault};
use super::once::Job;
use super::read::{dead_letters, handled, load, pending_outbox, pending_timers};
use super::write::{self, Failure, Item, Refusals, StateJson};
use crate::message::{MessageId, Timestamp};
use crate::store::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, OutboxRow, Pruned, Replayed, StoreError,
    TimerRow,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A call queued to the store's thread.
pub(super) enum Request {
    Load {
        process: &'static str,
        keys: Vec<Arc<str>>,
        reply: Reply<Vec<Option<InstanceRecord>>>,
    },
    PendingOutbox {
        reply: Reply<Vec<OutboxRow>>,
    },
    PendingTimers {
        reply: Reply<Vec<TimerRow>>,
    },
    DeadLetters {
        reply: Reply<Vec<DeadLetter>>,
    },
    Handled {
        scope: Box<str>,
        id: MessageId,
        reply: Reply<bool>,
    },
    /// Answered with the batch, so that the caller frees what its own
    /// thread allocated rather than the store's thread.
    Commit {
        batch: Batch,
        reply: Reply<(Vec<CommitOutcome>, Batch)>,
    },
    MarkSent {
        sequences: Vec<u64>,
        reply: Reply<()>,
    },
    Replay {
        ids: Vec<u64>,
        now: Timestamp,
        reply: Reply<Replayed>,
    },
    Prune {
        before: Timestamp,
        reply: Reply<Pruned>,
    },
    MarkHandled {
        scope: Box<str>,
        id: MessageId,
        at: Timestamp,
        reply: Reply<bool>,
    },
    /// Runs alone, in a transaction of its own.
    Alone(Job),
}

/// How much one transaction takes up.
#[derive(Clone, Copy)]
pub(super) struct Group {
    pub(super) calls: usize,
    pub(super) rows: usize,
}

/// A write call of a group, kept with its reply until the group is done.
enum Call {
    /// Answered with the batch, so that the caller frees what its own
    /// thread allocated rather than the store's thread.
    Commit {
        batch: Batch,
        reply: Reply<(Vec<CommitOutcome>, Batch)>,
    },
    MarkSent {
        sequences: Vec<u64>,
        reply: Reply<()>,
    },
    Replay {
        ids: Vec<u64>,
        now: Timestamp,
        reply: Reply<Replayed>,
    },
    Prune {
        before: Timestamp,
        reply: Reply<Pruned>,
    },
    MarkHandled {
        scope: Box<str>,
        id: MessageId,
        at: Timestamp,
        reply: Reply<bool>,
    },
}

/// What a call of a group wrote, for its reply once the group committed.
enum Written {
    Commit(Vec<CommitOutcome>),
    MarkSent,
    Replay(Replayed),
    Prune(Pruned),
    /// Whether the inbox row was new.
    MarkHandled(bool),
    /// Left out: SQLite refused its data ([`Refusals`] says why).
    Refused,
}

/// The store's thread: answers reads, groups writes.
pub(super) fn serve(
    mut link: Link,
    requests: mpsc::Receiver<Request>,
    group: Group,
    transactions: &AtomicU64,
) {
    let mut states = StateJson::default();
    while let Ok(first) = requests.recv() {
        let mut calls = Vec::new();
        let mut rows = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            match read_or_queue(&link.connection, request) {
                Queued::Answered => {}
                Queued::Call(call) => {
                    rows += call.rows();
                    calls.push(call);
                }
                Queued::Alone(job) => {
                    // The writes taken up before it go first: `work` sees them.
                    write_calls(&mut link, std::mem::take(&mut calls), &mut states, transactions);
                    rows = 0;
                    job(&mut link, transactions);
                }
            }
            let room = calls.len() < group.calls && rows < group.rows;
            next = if room { requests.try_recv().ok() } else { None };
        }
        write_calls(&mut link, calls, &mut states, transactions);
    }
}

/// What became of a request taken up.
enum Queued {
    /// A read, answered at once.
    Answered,
    /// A write, to join the group.
    Call(Call),
    /// To run alone, once the group taken up before it is written.
    Alone(Job),
}

/// Answers a read at once, from the connection there is: one that cannot
/// write can still read. A write is given back, to join the group.
fn read_or_queue(connection: &Connection, request: Request) -> Queued {
    let call = match request {
        Request::Load { process, keys, reply } => {
            return answered(reply, load(connection, process, &keys));
        }
        Request::PendingOutbox { reply } => return answered(reply, pending_outbox(connection)),
        Request::PendingTimers { reply } => return answered(reply, pending_timers(connection)),
        Request::DeadLetters { reply } => return answered(reply, dead_letters(connection)),
        Request::Handled { scope, id, reply } => {
            return answered(reply, handled(connection, &scope, id));
        }
        Request::Commit { batch, reply } => Call::Commit { batch, reply },
        Request::MarkSent { sequences, reply } => Call::MarkSent { sequences, reply },
        Request::Replay { ids, now, reply } => Call::Replay { ids, now, reply },
        Request::Prune { before, reply } => Call::Prune { before, reply },
        Request::MarkHandled { scope, id, at, reply } => Call::MarkHandled { scope, id, at, reply },
        Request::Alone(job) => return Queued::Alone(job),
    };
    Queued::Call(call)
}

fn answered<T>(reply: Reply<T>, read: rusqlite::Result<T>) -> Queued {
    drop(reply.send(read.map_err(error)));
    Queued::Answered
}

impl Call {
    /// The rows it writes, as far as they are known before writing.
    fn rows(&self) -> usize {
        match self {
            Call::Commit { batch, .. } => batch.instances.len() + batch.dead_letters.len(),
            Call::MarkSent { sequences, .. } => sequences.len(),
            Call::MarkHandled { .. } => 1,
            Call::Replay { .. } | Call::Prune { .. } => 0,
        }
    }
}

/// Applies a group's calls in one transaction and answers them. An item
/// whose data SQLite refused is left out, and the group applied again
/// without it; each time one more item is left out, so this ends.
fn write_calls(
    link: &mut Link,
    calls: Vec<Call>,
    states: &mut StateJson,
    transactions: &AtomicU64,
) {
    if calls.is_empty() {
        return;
    }
    if let Err(unavailable) = link.writable() {
        return fail(calls, &unavailable);
    }
    let mut refusals = Refusals::default();
    loop {
        match write_group(&mut link.connection, &calls, &refusals, states) {
            Ok(written) => {
                transactions.fetch_add(1, Ordering::Relaxed);
                link.succeeded();
                return answer(calls, written, &refusals);
            }
            Err(Failure { item, error })
                if item != Item::Group
                    && fault(&error) == Fault::Refused
                    && refusals.reason(item).is_none() =>
            {
                tracing::warn!(?item, %error, "SQLite refused a write; the others go on without it");
                refusals.add(item, error.to_string());
            }
            Err(Failure { error: failure, .. }) => {
                link.failed(&failure);
                return fail(calls, &error(failure));
            }
        }
    }
}

/// Applies every call of a group, but those left out, in one transaction.
fn write_group(
    connection: &mut Connection,
    calls: &[Call],
    refusals: &Refusals,
    states: &mut StateJson,
) -> Result<Vec<Written>, Failure> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Failure::at(Item::Group))?;
    let mut written = Vec::with_capacity(calls.len());
    for (index, call) in calls.iter().enumerate() {
        written.push(match refusals.reason(Item::Call(index)) {
            Some(_) => Written::Refused,
            None => apply(&transaction, index, call, refusals, states)?,
        });
    }
    transaction.commit().map_err(Failure::at(Item::Group))?;
    Ok(written)
}

fn apply(
    transaction: &rusqlite::Transaction<'_>,
    index: usize,
    call: &Call,
    refusals: &Refusals,
    states: &mut StateJson,
) -> Result<Written, Failure> {
    let whole = || Failure::at(Item::Call(index));
    Ok(match call {
        Call::Commit { batch, .. } => {
            Written::Commit(write::commit(transaction, index, batch, refusals, states)?)
        }
        Call::MarkSent { sequences, .. } => {
            write::mark_sent(transaction, sequences).map_err(whole())?;
            Written::MarkSent
        }
        Call::Replay { ids, now, .. } => {
            Written::Replay(write::replay(transaction, ids, *now).map_err(whole())?)
        }
        Call::Prune { before, .. } => {
            Written::Prune(write::prune(transaction, *before).map_err(whole())?)
        }
        Call::MarkHandled { scope, id, at, .. } => Written::MarkHandled(
            write::mark_handled(transaction, scope, *id, *at).map_err(whole())?,
        ),
    })
}

/// Answers the calls of a group once its transaction has committed.
fn answer(calls: Vec<Call>, written: Vec<Written>, refusals: &Refusals) {
    for (index, (call, written)) in calls.into_iter().zip(written).enumerate() {
        if let Written::Refused = written {
            let reason = refusals.reason(Item::Call(index)).unwrap_or_default().to_owned();
            call.fail(StoreError::Failed(reason.into()));
            continue;
        }
        match (call, written) {
            (Call::Commit { batch, reply }, Written::Commit(outcomes)) => {
                drop(reply.send(Ok((outcomes, batch))))
            }
            (Call::MarkSent { reply, .. }, Written::MarkSent) => drop(reply.send(Ok(()))),
            (Call::Replay { reply, .. }, Written::Replay(replayed)) => {
                drop(reply.send(Ok(replayed)))
            }
            (Call::Prune { reply, .. }, Written::Prune(pruned)) => drop(reply.send(Ok(pruned))),
            (Call::MarkHandled { reply, .. }, Written::MarkHandled(inserted)) => {
                drop(reply.send(Ok(inserted)))
            }
            // Each call's result is made from that call; a mismatch leaves
            // the caller with `Closed` rather than a wrong answer.
            _ => {}
        }
    }
}

/// Answers every call of a group with the error that stopped it: nothing
/// of the group was applied.
fn fail(calls: Vec<Call>, failure: &StoreError) {
    for call in calls {
        call.fail(copy(failure));
    }
}

impl Call {
    fn fail(self, failure: StoreError) {
        match self {
            Call::Commit { reply, .. } => drop(reply.send(Err(failure))),
            Call::MarkSent { reply, .. } => drop(reply.send(Err(failure))),
            Call::Replay { reply, .. } => drop(reply.send(Err(failure))),
            Call::Prune { reply, .. } => drop(reply.send(Err(failure))),
            Call::MarkHandled { reply, .. } => drop(reply.send(Err(failure))),
        }
    }
}

/// The same error again, for another call: its cause as text.
fn copy(failure: &StoreError) -> StoreError {
    match failure {
        StoreError::Unavailable(cause) => StoreError::Unavailable(cause.to_string().into()),
        StoreError::Failed(cause) => StoreError::Failed(cause.to_string().into()),
        StoreError::NewerSchema { found, known } => {
            StoreError::NewerSchema { found: *found, known: *known }
        }
        StoreError::Closed => StoreError::Closed,
    }
}
