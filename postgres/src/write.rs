//! The writes the writer task applies inside a group's transaction:
//! instance writes (each all or nothing), dead letters, outbox rows marked
//! sent, replays, pruning, and the inbox rows of command handlers.
//!
//! An instance write checks first (the inbox, then the version), and a
//! failed check undoes the little it wrote before the transaction goes on:
//! no savepoint is needed for a `Conflict` or a `Duplicate`. A statement
//! that PostgreSQL refuses aborts the whole transaction; the error says
//! where it came up ([`Failure`]), so that the writer can leave out the one
//! write or call whose own data was refused and apply the group again
//! without it ([`Refusals`]).
//!
//! The outbox rows and timers a write adds are claimed by the writing
//! store, with a lease: its node sends them, and no other node takes them
//! while the lease lasts.

use std::borrow::Cow;

use switchyard_runtime::store::{
    Batch, CommitOutcome, Inbox, InstanceWrite, Letter, NewDeadLetter, OutboxRow, Pruned, Replayed,
    TimerChange,
};
use switchyard_runtime::{Body, MessageId, Timestamp};

use crate::Claim;
use crate::connection::Conn;
use crate::read::{dead_letter, millis};

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

/// Where in a group an error came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// The `write`-th instance write of the `call`-th call: if its data was
    /// refused, it fails alone.
    Write { call: usize, write: usize },
    /// A call as a whole (its dead letters, the rows it marks sent, a
    /// replay, a pruning): if its data was refused, the call fails.
    Call(usize),
    /// Beginning or committing the transaction: no item is to blame.
    Group,
}

/// An error that stopped a group's transaction, and where it came up.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) item: Item,
    pub(crate) error: tokio_postgres::Error,
}

impl Failure {
    pub(crate) fn at(item: Item) -> impl FnOnce(tokio_postgres::Error) -> Failure {
        move |error| Failure { item, error }
    }
}

/// The items left out of a group because their data was refused, each with
/// the reason. Nearly always empty.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Vec<(Item, String)>);

impl Refusals {
    pub(crate) fn reason(&self, item: Item) -> Option<&str> {
        self.0.iter().find(|(refused, _)| *refused == item).map(|(_, reason)| reason.as_str())
    }

    pub(crate) fn add(&mut self, item: Item, reason: String) {
        self.0.push((item, reason));
    }
}

/// Applies the `call`-th call of a group, a batch: its instance writes, each
/// on its own, then its dead letters. A write refused before is left out
/// with its reason.
pub(crate) async fn commit(
    conn: &Conn,
    claim: &Claim,
    call: usize,
    batch: &Batch,
    refusals: &Refusals,
) -> std::result::Result<Vec<CommitOutcome>, Failure> {
    let mut outcomes = Vec::with_capacity(batch.instances.len());
    for (index, write) in batch.instances.iter().enumerate() {
        let item = Item::Write { call, write: index };
        outcomes.push(match refusals.reason(item) {
            Some(reason) => CommitOutcome::Failed(reason.to_owned()),
            None => write_instance(conn, claim, write).await.map_err(Failure::at(item))?,
        });
    }
    for letter in &batch.dead_letters {
        insert_dead_letter(conn, letter).await.map_err(Failure::at(Item::Call(call)))?;
    }
    Ok(outcomes)
}

/// The text and bytes of an instance write, made before anything is written
/// so that a value that cannot be written changes nothing.
struct Encoded<'a> {
    state: Cow<'a, str>,
    data: Cow<'a, str>,
    bodies: Vec<Cow<'a, [u8]>>,
}

/// The caller writes every body as JSON before queueing its batch, so that
/// the writer task only runs SQL; what is still typed is written here.
fn encode(write: &InstanceWrite) -> std::result::Result<Encoded<'_>, String> {
    let failed = |what: &str, e: String| format!("the {what} cannot be written as JSON: {e}");
    let state = text(&write.state).map_err(|e| failed("state", e))?;
    let data = text(&write.data).map_err(|e| failed("data", e))?;
    let mut bodies = Vec::with_capacity(write.outbox.len());
    for message in &write.outbox {
        bodies.push(match &message.body {
            Body::Json(bytes) => Cow::Borrowed(&bytes[..]),
            Body::Value(value) => Cow::Owned(
                value
                    .to_json()
                    .map_err(|e| failed(&format!("body of `{}`", message.name), e.to_string()))?,
            ),
        });
    }
    Ok(Encoded { state, data, bodies })
}

/// A state or data as the JSON text its column holds.
fn text(body: &Body) -> std::result::Result<Cow<'_, str>, String> {
    match body {
        Body::Json(bytes) => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| "its bytes are not UTF-8".to_owned()),
        Body::Value(value) => {
            let json = value.to_json().map_err(|e| e.to_string())?;
            String::from_utf8(json)
                .map(Cow::Owned)
                .map_err(|_| "its bytes are not UTF-8".to_owned())
        }
    }
}

/// Applies one instance write, all or nothing: the inbox, the version, then
/// the timers and the outbox. A failed check undoes what came before it.
async fn write_instance(
    conn: &Conn,
    claim: &Claim,
    write: &InstanceWrite,
) -> Result<CommitOutcome> {
    let encoded = match encode(write) {
        Ok(encoded) => encoded,
        Err(reason) => return Ok(CommitOutcome::Failed(reason)),
    };
    let inserted = match record_inbox(conn, write).await? {
        Ok(inserted) => inserted,
        Err(duplicates) => return Ok(CommitOutcome::Duplicate(duplicates)),
    };
    if !write_state(conn, write, &encoded).await? {
        undo_inbox(conn, write.process, &inserted).await?;
        return Ok(CommitOutcome::Conflict);
    }
    change_timers(conn, claim, write).await?;
    let outbox = insert_outbox(conn, claim, write, &encoded.bodies).await?;
    Ok(CommitOutcome::Committed { outbox, slot: None })
}

/// Records the write's message ids in the inbox. A message handled before
/// makes the whole write a duplicate: the ids are then those already there,
/// and the rows this write added are taken out again. A row another node
/// is inserting meanwhile is waited for, then counts as there.
async fn record_inbox(
    conn: &Conn,
    write: &InstanceWrite,
) -> Result<std::result::Result<Inbox, Vec<MessageId>>> {
    let mut inserted = Inbox::new();
    let mut duplicates = Vec::new();
    for id in &write.inbox {
        let added = conn
            .execute(
                "INSERT INTO inbox (process, message_id, handled_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&write.process, &id.as_uuid(), &millis(write.at)],
            )
            .await?;
        if added == 1 {
            inserted.push(*id);
        } else {
            duplicates.push(*id);
        }
    }
    if duplicates.is_empty() {
        return Ok(Ok(inserted));
    }
    undo_inbox(conn, write.process, &inserted).await?;
    Ok(Err(duplicates))
}

async fn undo_inbox(conn: &Conn, process: &str, inserted: &[MessageId]) -> Result<()> {
    if inserted.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = inserted.iter().map(|id| id.as_uuid()).collect();
    conn.execute(
        "DELETE FROM inbox WHERE process = $1 AND message_id = ANY($2)",
        &[&process, &ids],
    )
    .await?;
    Ok(())
}

/// Creates the instance or moves it on from the version the decisions saw;
/// `false` when it was not at that version (or, to create, already there).
/// Under another node's write of the same instance in progress, the row is
/// waited for and checked again once that write has committed: the loser
/// of the two sees the new version, a conflict.
async fn write_state(conn: &Conn, write: &InstanceWrite, encoded: &Encoded<'_>) -> Result<bool> {
    let (process, key): (&str, &str) = (write.process, &write.key);
    let completed = write.completed_at.map(millis);
    let version = write.version as i64;
    let at = millis(write.at);
    let changed = match write.expected_version {
        None => {
            conn.execute(
                "INSERT INTO instances
                 (process, key, version, state, data, completed_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[&process, &key, &version, &encoded.state, &encoded.data, &completed, &at],
            )
            .await?
        }
        Some(expected) => {
            conn.execute(
                "UPDATE instances SET version = $3, state = $4, data = $5, completed_at = $6,
                 updated_at = $7 WHERE process = $1 AND key = $2 AND version = $8",
                &[
                    &process,
                    &key,
                    &version,
                    &encoded.state,
                    &encoded.data,
                    &completed,
                    &at,
                    &(expected as i64),
                ],
            )
            .await?
        }
    };
    Ok(changed == 1)
}

/// The write's timer changes, in order; a completed instance loses them all.
async fn change_timers(conn: &Conn, claim: &Claim, write: &InstanceWrite) -> Result<()> {
    let (process, key): (&str, &str) = (write.process, &write.key);
    for change in &write.timers {
        match change {
            TimerChange::Schedule { timer, at, id } => {
                schedule_timer(conn, claim, process, key, timer, *at, *id).await?;
            }
            TimerChange::Cancel { timer } => {
                conn.execute(
                    "DELETE FROM timers WHERE process = $1 AND key = $2 AND timer = $3",
                    &[&process, &key, &&**timer],
                )
                .await?;
            }
            TimerChange::Fired { timer, id } => {
                drop_timer(conn, process, key, timer, *id).await?;
            }
        }
    }
    if write.completed_at.is_some() {
        conn.execute("DELETE FROM timers WHERE process = $1 AND key = $2", &[&process, &key])
            .await?;
    }
    Ok(())
}

const INSERT_OUTBOX: &str = "INSERT INTO outbox
    (message_id, name, kind, body, causation, time, process, key, owner, claim, lease_until)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        clock_timestamp() + $11::float8 * interval '1 ms')
    RETURNING sequence";

/// The write's decided messages, in order: their sequence numbers.
async fn insert_outbox(
    conn: &Conn,
    claim: &Claim,
    write: &InstanceWrite,
    bodies: &[Cow<'_, [u8]>],
) -> Result<Vec<u64>> {
    let mut sequences = Vec::with_capacity(write.outbox.len());
    let (process, key): (&str, &str) = (write.process, &write.key);
    for (message, body) in write.outbox.iter().zip(bodies) {
        let row = conn
            .query_opt(
                INSERT_OUTBOX,
                &[
                    &message.id.as_uuid(),
                    &&*message.name,
                    &message.kind.as_str(),
                    &&**body,
                    &message.causation.map(MessageId::as_uuid),
                    &millis(message.time),
                    &process,
                    &key,
                    &claim.node.as_str(),
                    &claim.token,
                    &claim.lease_ms(),
                ],
            )
            .await?;
        sequences.extend(row.map(|row| row.get::<_, i64>(0) as u64));
    }
    Ok(sequences)
}

/// Sets a timer, claimed by this store; one that is pending moves, and
/// changes hands if another node held it.
async fn schedule_timer(
    conn: &Conn,
    claim: &Claim,
    process: &str,
    key: &str,
    timer: &str,
    at: Timestamp,
    id: MessageId,
) -> Result<()> {
    conn.execute(
        "INSERT INTO timers (process, key, timer, at, id, owner, claim, lease_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp() + $8::float8 * interval '1 ms')
         ON CONFLICT (process, key, timer) DO UPDATE SET at = excluded.at, id = excluded.id,
            owner = excluded.owner, claim = excluded.claim, lease_until = excluded.lease_until",
        &[
            &process,
            &key,
            &timer,
            &millis(at),
            &id.as_uuid(),
            &claim.node.as_str(),
            &claim.token,
            &claim.lease_ms(),
        ],
    )
    .await?;
    Ok(())
}

async fn drop_timer(
    conn: &Conn,
    process: &str,
    key: &str,
    timer: &str,
    id: MessageId,
) -> Result<()> {
    conn.execute(
        "DELETE FROM timers WHERE process = $1 AND key = $2 AND timer = $3 AND id = $4",
        &[&process, &key, &timer, &id.as_uuid()],
    )
    .await?;
    Ok(())
}

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters
    (kind, message_id, name, body, causation, time, process, key, reason, dead_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

async fn insert_dead_letter(conn: &Conn, letter: &NewDeadLetter) -> Result<()> {
    let (reason, at) = (&letter.reason, millis(letter.at));
    match &letter.letter {
        Letter::Message(message) => {
            // The body's bytes as they are, valid UTF-8 or not: a replay
            // sends them again. A typed body that cannot be written as JSON
            // is kept as its debug text: the letter is still recorded, with
            // what can be shown of it.
            let body: Cow<'_, [u8]> = match message.body.to_json() {
                Ok(json) => Cow::Owned(json.to_vec()),
                Err(_) => Cow::Owned(format!("{:?}", message.body).into_bytes()),
            };
            conn.execute(
                INSERT_DEAD_LETTER,
                &[
                    &message.kind.as_str(),
                    &message.id.as_uuid(),
                    &&*message.name,
                    &&*body,
                    &message.causation.map(MessageId::as_uuid),
                    &millis(message.time),
                    &letter.process,
                    &Option::<&str>::None,
                    reason,
                    &at,
                ],
            )
            .await?;
        }
        Letter::Timer(timer) => {
            drop_timer(conn, &timer.process, &timer.key, &timer.timer, timer.id).await?;
            conn.execute(
                INSERT_DEAD_LETTER,
                &[
                    &"timer",
                    &timer.id.as_uuid(),
                    &timer.timer,
                    &Option::<&[u8]>::None,
                    &Option::<uuid::Uuid>::None,
                    &millis(timer.at),
                    &timer.process,
                    &timer.key,
                    reason,
                    &at,
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// Deletes outbox rows the bus has acknowledged, whichever node holds them.
pub(crate) async fn mark_sent(conn: &Conn, sequences: &[u64]) -> Result<()> {
    let sequences: Vec<i64> = sequences.iter().map(|&sequence| sequence as i64).collect();
    conn.execute("DELETE FROM outbox WHERE sequence = ANY($1)", &[&sequences]).await?;
    Ok(())
}

/// Takes dead letters out and queues them again, claimed by this store:
/// messages into the outbox, timers of running instances due at `now`.
pub(crate) async fn replay(
    conn: &Conn,
    claim: &Claim,
    ids: &[u64],
    now: Timestamp,
) -> Result<Replayed> {
    let mut replayed = Replayed::default();
    for &id in ids {
        let row = conn
            .query_opt(
                "DELETE FROM dead_letters WHERE id = $1
                 RETURNING id, kind, message_id, name, body, causation, time, process, key,
                    reason, dead_at",
                &[&(id as i64)],
            )
            .await?;
        let Some(row) = row else { continue };
        let letter = dead_letter(&row)?;
        match letter.letter {
            Letter::Message(message) => {
                let process = letter.process.unwrap_or_default();
                let body = message.body.to_json().unwrap_or_else(|_| b"null"[..].into());
                let row = conn
                    .query_opt(
                        INSERT_OUTBOX,
                        &[
                            &message.id.as_uuid(),
                            &&*message.name,
                            &message.kind.as_str(),
                            &&*body,
                            &message.causation.map(MessageId::as_uuid),
                            &millis(message.time),
                            &process,
                            &"",
                            &claim.node.as_str(),
                            &claim.token,
                            &claim.lease_ms(),
                        ],
                    )
                    .await?;
                let sequence = row.map_or(0, |row| row.get::<_, i64>(0) as u64);
                replayed.messages.push(OutboxRow {
                    sequence,
                    process,
                    key: String::new(),
                    message,
                });
            }
            Letter::Timer(mut timer) => {
                // Only a running instance gets its timer back; a completed
                // one has nothing left to do with it.
                let running = conn
                    .query_opt(
                        "SELECT 1 FROM instances
                         WHERE process = $1 AND key = $2 AND completed_at IS NULL",
                        &[&timer.process, &timer.key],
                    )
                    .await?;
                if running.is_some() {
                    timer.at = now;
                    let (process, key) = (&timer.process, &timer.key);
                    schedule_timer(conn, claim, process, key, &timer.timer, now, timer.id).await?;
                    replayed.timers.push(timer);
                }
            }
        }
    }
    Ok(replayed)
}

/// Records message `id` as handled in `scope`, the inbox of a command
/// handler: a row of the processes' inbox table, whose `process` is the
/// scope (a scope is never a process's name). False if it was there.
pub(crate) async fn mark_handled(
    conn: &Conn,
    scope: &str,
    id: MessageId,
    at: Timestamp,
) -> Result<bool> {
    let inserted = conn
        .execute(
            "INSERT INTO inbox (process, message_id, handled_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&scope, &id.as_uuid(), &millis(at)],
        )
        .await?;
    Ok(inserted == 1)
}

pub(crate) async fn prune(conn: &Conn, before: Timestamp) -> Result<Pruned> {
    let before = millis(before);
    let tombstones = conn
        .execute(
            "DELETE FROM instances WHERE completed_at IS NOT NULL AND completed_at < $1",
            &[&before],
        )
        .await?;
    let inbox = conn.execute("DELETE FROM inbox WHERE handled_at < $1", &[&before]).await?;
    Ok(Pruned { tombstones, inbox })
}
