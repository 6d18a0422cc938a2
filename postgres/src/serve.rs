//! The writer task: it owns the store's writing connection and applies the
//! writes queued meanwhile, from every caller, in one transaction (group
//! commit), so that one round trip to the disk of the server pays for all
//! of them.
//!
//! A group is all or nothing, with two exceptions that keep one caller's
//! bad data from failing the others: an instance write whose data the
//! database refuses fails alone (`CommitOutcome::Failed`), and a call whose
//! other data it refuses fails alone; the group is then applied again
//! without them. A deadlock or a serialization failure with another node
//! has the group applied again at once, a few times. Anything else that
//! stops the transaction (an outage above all) answers every call of the
//! group with the same error, and nothing of the group is applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_runtime::store::{Batch, CommitOutcome, Pruned, Replayed};
use switchyard_runtime::{MessageId, StoreError, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::Claim;
use crate::connection::{Conn, Fault, Line, describe, error, fault};
use crate::write::{self, Failure, Item, Refusals};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// How often a group that met a deadlock or a serialization failure is
/// applied again before its calls are answered as unavailable.
const CONTENTION_RETRIES: u32 = 3;

/// A write queued to the writer task.
pub(crate) enum Call {
    /// Answered with the batch, so that the caller frees what its own
    /// task allocated, and keeps its lists for the next batch.
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

/// How much one transaction takes up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    pub(crate) calls: usize,
    pub(crate) rows: usize,
}

/// What the writer task works with.
pub(crate) struct Writer {
    pub(crate) line: Line,
    pub(crate) claim: Arc<Claim>,
    pub(crate) group: Group,
    pub(crate) transactions: Arc<AtomicU64>,
}

/// What a call of a group wrote, for its reply once the group committed.
enum Written {
    Commit(Vec<CommitOutcome>),
    MarkSent,
    Replay(Replayed),
    Prune(Pruned),
    /// Whether the inbox row was new.
    MarkHandled(bool),
    /// Left out: the database refused its data ([`Refusals`] says why).
    Refused,
}

/// The writer task: takes up every call queued, up to a group's size, and
/// writes them in one transaction. It ends once every handle of the store
/// is dropped.
pub(crate) async fn serve(writer: Writer, mut calls: mpsc::UnboundedReceiver<Call>) {
    while let Some(first) = calls.recv().await {
        let mut group = vec![first];
        let mut rows = group[0].rows();
        while group.len() < writer.group.calls && rows < writer.group.rows {
            let Ok(call) = calls.try_recv() else { break };
            rows += call.rows();
            group.push(call);
        }
        write_calls(&writer, group).await;
    }
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
/// whose data was refused is left out, and the group applied again without
/// it; each time one more item is left out, so this ends.
async fn write_calls(writer: &Writer, calls: Vec<Call>) {
    let conn = match writer.line.conn().await {
        Ok(conn) => conn,
        Err(unavailable) => return fail(calls, &unavailable),
    };
    let mut refusals = Refusals::default();
    let mut contention = 0;
    loop {
        let (item, failure) = match write_group(&conn, &writer.claim, &calls, &refusals).await {
            Ok(written) => {
                writer.transactions.fetch_add(1, Ordering::Relaxed);
                return answer(calls, written, &refusals);
            }
            Err(Failure { item, error }) => (item, error),
        };
        // A transaction that failed is aborted; the connection is good
        // again once it is rolled back. If it is lost, the next group
        // finds it closed and connects again.
        drop(conn.client.batch_execute("ROLLBACK").await);
        match fault(&failure) {
            Fault::Refused if item != Item::Group && refusals.reason(item).is_none() => {
                tracing::warn!(?item, %failure, "PostgreSQL refused a write; the others go on");
                refusals.add(item, describe(&failure));
            }
            Fault::Contention if contention < CONTENTION_RETRIES => {
                tracing::debug!(%failure, "a group met another node's writes; applying it again");
                contention += 1;
            }
            _ => return fail(calls, &error(failure)),
        }
    }
}

/// Applies every call of a group, but those left out, in one transaction.
async fn write_group(
    conn: &Conn,
    claim: &Claim,
    calls: &[Call],
    refusals: &Refusals,
) -> Result<Vec<Written>, Failure> {
    conn.client.batch_execute("BEGIN").await.map_err(Failure::at(Item::Group))?;
    let mut written = Vec::with_capacity(calls.len());
    for (index, call) in calls.iter().enumerate() {
        written.push(match refusals.reason(Item::Call(index)) {
            Some(_) => Written::Refused,
            None => apply(conn, claim, index, call, refusals).await?,
        });
    }
    conn.client.batch_execute("COMMIT").await.map_err(Failure::at(Item::Group))?;
    Ok(written)
}

async fn apply(
    conn: &Conn,
    claim: &Claim,
    index: usize,
    call: &Call,
    refusals: &Refusals,
) -> Result<Written, Failure> {
    let whole = || Failure::at(Item::Call(index));
    Ok(match call {
        Call::Commit { batch, .. } => {
            Written::Commit(write::commit(conn, claim, index, batch, refusals).await?)
        }
        Call::MarkSent { sequences, .. } => {
            write::mark_sent(conn, sequences).await.map_err(whole())?;
            Written::MarkSent
        }
        Call::Replay { ids, now, .. } => {
            Written::Replay(write::replay(conn, claim, ids, *now).await.map_err(whole())?)
        }
        Call::Prune { before, .. } => {
            Written::Prune(write::prune(conn, *before).await.map_err(whole())?)
        }
        Call::MarkHandled { scope, id, at, .. } => {
            Written::MarkHandled(write::mark_handled(conn, scope, *id, *at).await.map_err(whole())?)
        }
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
        StoreError::Unavailable(cause) => StoreError::Unavailable(describe(&**cause).into()),
        StoreError::Failed(cause) => StoreError::Failed(describe(&**cause).into()),
        StoreError::NewerSchema { found, known } => {
            StoreError::NewerSchema { found: *found, known: *known }
        }
        StoreError::Closed => StoreError::Closed,
    }
}
