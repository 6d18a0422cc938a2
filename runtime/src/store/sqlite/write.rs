//! The writes the store's thread applies inside a group's transaction:
//! instance writes (each all or nothing), dead letters, replays, pruning,
//! and the inbox rows of command handlers.
//!
//! An instance write checks first (the inbox, then the version), and a
//! failed check undoes the little it wrote before the transaction goes on.
//! An error of SQLite itself stops the whole transaction; it says where it
//! came up ([`Failure`]), so that the store's thread can leave out the one
//! write or call whose own data SQLite refused and apply the group again
//! without it ([`Refusals`]).

use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, ToSql, Transaction, params};

use super::read::{DEAD_LETTER_COLUMNS, Id, blob, read_dead_letter, time};
use crate::message::{Body, MessageId, Timestamp};
use crate::store::{
    Batch, CommitOutcome, Inbox, InstanceWrite, Letter, NewDeadLetter, OutboxRow, Pruned, Replayed,
    TimerChange,
};

/// Where in a group an error came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Item {
    /// The `write`-th instance write of the `call`-th call: if SQLite
    /// refused its data, it fails alone.
    Write { call: usize, write: usize },
    /// A call as a whole (its dead letters, the rows it marks sent, a
    /// replay, a pruning): if SQLite refused its data, the call fails.
    Call(usize),
    /// Beginning or committing the transaction: no item is to blame.
    Group,
}

/// An error that stopped a group's transaction, and where it came up.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) item: Item,
    pub(super) error: rusqlite::Error,
}

impl Failure {
    pub(super) fn at(item: Item) -> impl FnOnce(rusqlite::Error) -> Failure {
        move |error| Failure { item, error }
    }
}

/// The items left out of a group because SQLite refused their data, each
/// with the reason. Nearly always empty.
#[derive(Debug, Default)]
pub(super) struct Refusals(Vec<(Item, String)>);

impl Refusals {
    pub(super) fn reason(&self, item: Item) -> Option<&str> {
        self.0.iter().find(|(refused, _)| *refused == item).map(|(_, reason)| reason.as_str())
    }

    pub(super) fn add(&mut self, item: Item, reason: String) {
        self.0.push((item, reason));
    }
}

/// Applies the `call`-th call of a group, a batch: its instance writes, each
/// on its own, then its dead letters. A write refused before is left out
/// with its reason.
pub(super) fn commit(
    transaction: &Transaction<'_>,
    call: usize,
    batch: &Batch,
    refusals: &Refusals,
    states: &mut StateJson,
) -> Result<Vec<CommitOutcome>, Failure> {
    let mut outcomes = Vec::with_capacity(batch.instances.len());
    if !batch.instances.is_empty() {
        let mut statements =
            Statements::prepare(transaction).map_err(Failure::at(Item::Call(call)))?;
        for (index, write) in batch.instances.iter().enumerate() {
            let item = Item::Write { call, write: index };
            let outcome = match refusals.reason(item) {
                Some(reason) => CommitOutcome::Failed(reason.to_owned()),
                None => write_instance(transaction, &mut statements, states, write)
                    .map_err(Failure::at(item))?,
            };
            outcomes.push(outcome);
        }
    }
    for letter in &batch.dead_letters {
        insert_dead_letter(transaction, letter).map_err(Failure::at(Item::Call(call)))?;
    }
    Ok(outcomes)
}

/// The statements every instance write runs, prepared once per batch.
struct Statements<'t> {
    inbox: rusqlite::CachedStatement<'t>,
    create: rusqlite::CachedStatement<'t>,
    update: rusqlite::CachedStatement<'t>,
}

impl<'t> Statements<'t> {
    fn prepare(transaction: &'t Transaction<'_>) -> rusqlite::Result<Statements<'t>> {
        Ok(Statements {
            inbox: transaction.prepare_cached(
                "INSERT OR IGNORE INTO inbox (process, message_id, handled_at) VALUES (?1, ?2, ?3)",
            )?,
            create: transaction.prepare_cached(
                "INSERT OR IGNORE INTO instances
                 (process, key, version, state, data, completed_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?,
            update: transaction.prepare_cached(
                "UPDATE instances SET version = ?3, state = ?4, data = ?5, completed_at = ?6,
                 updated_at = ?7 WHERE process = ?1 AND key = ?2 AND version = ?8",
            )?,
        })
    }
}

/// The JSON of the state bodies written lately, by identity: workers share
/// one body per state, and there are few states, so most writes find theirs
/// here instead of writing it again. Each entry holds its body, so that the
/// address it is found by cannot be reused by another value.
#[derive(Default)]
pub(super) struct StateJson(Vec<(Value, Arc<[u8]>)>);

/// A typed value as bodies hold it.
type Value = Arc<dyn crate::message::Payload>;

impl StateJson {
    fn get(&mut self, body: &Body) -> Result<Json<'static>, serde_json::Error> {
        let value = match body {
            Body::Value(value) => value,
            Body::Json(bytes) => return Ok(Json::Shared(bytes.clone())),
        };
        if let Some((_, json)) = self.0.iter().find(|(known, _)| Arc::ptr_eq(known, value)) {
            return Ok(Json::Shared(json.clone()));
        }
        let json: Arc<[u8]> = value.to_json()?.into();
        if self.0.len() >= 64 {
            self.0.clear();
        }
        self.0.push((value.clone(), json.clone()));
        Ok(Json::Shared(json))
    }
}

/// The bytes of a body, written as they are: as text when they are UTF-8
/// (JSON always is), as a blob otherwise. A message that came from outside
/// may hold any bytes, malformed ones above all, and those go to the dead
/// letters: a replay must send them as they came, so nothing of them may be
/// replaced. SQLite keeps a blob in a column declared `TEXT` as a blob,
/// and reading takes either (see [`super::read::json_body`]).
enum Json<'a> {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
    /// The bytes of a JSON body, read in place: no reference count to touch
    /// on memory another thread wrote.
    Borrowed(&'a [u8]),
}

impl std::ops::Deref for Json<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Json::Shared(bytes) => bytes,
            Json::Owned(bytes) => bytes,
            Json::Borrowed(bytes) => bytes,
        }
    }
}

impl ToSql for Json<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let bytes: &[u8] = self;
        Ok(ToSqlOutput::Borrowed(match std::str::from_utf8(bytes) {
            Ok(_) => ValueRef::Text(bytes),
            Err(_) => ValueRef::Blob(bytes),
        }))
    }
}

fn json(body: &Body) -> Result<Json<'_>, serde_json::Error> {
    match body {
        Body::Value(value) => value.to_json().map(Json::Owned),
        Body::Json(bytes) => Ok(Json::Borrowed(bytes)),
    }
}

/// The JSON of an instance write, made before anything is written so that a
/// value that cannot be written changes nothing.
struct Encoded<'a> {
    state: Json<'static>,
    data: Json<'a>,
    bodies: Vec<Json<'a>>,
}

fn encode<'a>(write: &'a InstanceWrite, states: &mut StateJson) -> Result<Encoded<'a>, String> {
    let failed =
        |what: &str, e: serde_json::Error| format!("the {what} cannot be written as JSON: {e}");
    let state = states.get(&write.state).map_err(|e| failed("state", e))?;
    let data = json(&write.data).map_err(|e| failed("data", e))?;
    let mut bodies = Vec::with_capacity(write.outbox.len());
    for message in &write.outbox {
        bodies.push(
            json(&message.body).map_err(|e| failed(&format!("body of `{}`", message.name), e))?,
        );
    }
    Ok(Encoded { state, data, bodies })
}

/// Applies one instance write, all or nothing: the inbox, the version, then
/// the timers and the outbox. A failed check undoes what came before it.
fn write_instance(
    transaction: &Transaction<'_>,
    statements: &mut Statements<'_>,
    states: &mut StateJson,
    write: &InstanceWrite,
) -> rusqlite::Result<CommitOutcome> {
    let encoded = match encode(write, states) {
        Ok(encoded) => encoded,
        Err(reason) => return Ok(CommitOutcome::Failed(reason)),
    };
    let inserted = match record_inbox(transaction, statements, write)? {
        Ok(inserted) => inserted,
        Err(duplicates) => return Ok(CommitOutcome::Duplicate(duplicates)),
    };
    if !write_state(statements, write, &encoded)? {
        undo_inbox(transaction, write.process, &inserted)?;
        return Ok(CommitOutcome::Conflict);
    }
    change_timers(transaction, write)?;
    let outbox = insert_outbox(transaction, write, &encoded.bodies)?;
    Ok(CommitOutcome::Committed { outbox, slot: None })
}

/// Records the write's message ids in the inbox. A message handled before
/// makes the whole write a duplicate: the ids are then those already there,
/// and the rows this write added are taken out again.
fn record_inbox(
    transaction: &Transaction<'_>,
    statements: &mut Statements<'_>,
    write: &InstanceWrite,
) -> rusqlite::Result<Result<Inbox, Vec<MessageId>>> {
    let mut inserted = Inbox::new();
    let mut duplicates = Vec::new();
    for id in &write.inbox {
        if statements.inbox.execute(params![write.process, blob(*id), time(write.at)])? == 1 {
            inserted.push(*id);
        } else {
            duplicates.push(*id);
        }
    }
    if duplicates.is_empty() {
        return Ok(Ok(inserted));
    }
    undo_inbox(transaction, write.process, &inserted)?;
    Ok(Err(duplicates))
}

fn undo_inbox(
    transaction: &Transaction<'_>,
    process: &str,
    inserted: &[MessageId],
) -> rusqlite::Result<()> {
    let mut delete =
        transaction.prepare_cached("DELETE FROM inbox WHERE process = ?1 AND message_id = ?2")?;
    for id in inserted {
        delete.execute(params![process, blob(*id)])?;
    }
    Ok(())
}

/// Creates the instance or moves it on from the version the decisions saw;
/// `false` when it was not at that version (or, to create, already there).
fn write_state(
    statements: &mut Statements<'_>,
    write: &InstanceWrite,
    encoded: &Encoded<'_>,
) -> rusqlite::Result<bool> {
    let (process, key): (&str, &str) = (write.process, &write.key);
    let completed = write.completed_at.map(time);
    let changed = match write.expected_version {
        None => statements.create.execute(params![
            process,
            key,
            write.version as i64,
            encoded.state,
            encoded.data,
            completed,
            time(write.at)
        ])?,
        Some(expected) => statements.update.execute(params![
            process,
            key,
            write.version as i64,
            encoded.state,
            encoded.data,
            completed,
            time(write.at),
            expected as i64
        ])?,
    };
    Ok(changed == 1)
}

/// The write's timer changes, in order; a completed instance loses them all.
fn change_timers(transaction: &Transaction<'_>, write: &InstanceWrite) -> rusqlite::Result<()> {
    let (process, key): (&str, &str) = (write.process, &write.key);
    for change in &write.timers {
        match change {
            TimerChange::Schedule { timer, at, id } => {
                schedule_timer(transaction, process, key, timer, *at, *id)?;
            }
            TimerChange::Cancel { timer } => {
                transaction
                    .prepare_cached(
                        "DELETE FROM timers WHERE process = ?1 AND key = ?2 AND timer = ?3",
                    )?
                    .execute(params![process, key, &**timer])?;
            }
            TimerChange::Fired { timer, id } => {
                drop_timer(transaction, process, key, timer, *id)?;
            }
        }
    }
    if write.completed_at.is_some() {
        transaction
            .prepare_cached("DELETE FROM timers WHERE process = ?1 AND key = ?2")?
            .execute(params![process, key])?;
    }
    Ok(())
}

/// The write's decided messages, in order: their sequence numbers.
fn insert_outbox(
    transaction: &Transaction<'_>,
    write: &InstanceWrite,
    bodies: &[Json<'_>],
) -> rusqlite::Result<Vec<u64>> {
    if write.outbox.is_empty() {
        return Ok(Vec::new());
    }
    let mut sequences = Vec::with_capacity(write.outbox.len());
    let mut insert = transaction.prepare_cached(
        "INSERT INTO outbox (message_id, name, kind, body, causation, time, process, key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (message, body) in write.outbox.iter().zip(bodies) {
        insert.execute(params![
            blob(message.id),
            &*message.name,
            message.kind.as_str(),
            body,
            message.causation.map(blob),
            time(message.time),
            write.process,
            &*write.key
        ])?;
        sequences.push(transaction.last_insert_rowid() as u64);
    }
    Ok(sequences)
}

fn schedule_timer(
    transaction: &Transaction<'_>,
    process: &str,
    key: &str,
    timer: &str,
    at: Timestamp,
    id: MessageId,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO timers (process, key, timer, at, id) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (process, key, timer) DO UPDATE SET at = excluded.at, id = excluded.id",
        )?
        .execute(params![process, key, timer, time(at), blob(id)])?;
    Ok(())
}

fn drop_timer(
    transaction: &Transaction<'_>,
    process: &str,
    key: &str,
    timer: &str,
    id: MessageId,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "DELETE FROM timers WHERE process = ?1 AND key = ?2 AND timer = ?3 AND id = ?4",
        )?
        .execute(params![process, key, timer, blob(id)])?;
    Ok(())
}

fn insert_dead_letter(
    transaction: &Transaction<'_>,
    letter: &NewDeadLetter,
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO dead_letters
         (kind, message_id, name, body, causation, time, process, key, reason, dead_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    match &letter.letter {
        Letter::Message(message) => {
            // The body's bytes as they are, valid UTF-8 or not: a replay
            // sends them again. A typed body that cannot be written as JSON
            // is kept as its debug text: the letter is still recorded, with
            // what can be shown of it.
            let body = match message.body.to_json() {
                Ok(json) => Json::Shared(json),
                Err(_) => Json::Owned(format!("{:?}", message.body).into_bytes()),
            };
            insert.execute(params![
                message.kind.as_str(),
                blob(message.id),
                &*message.name,
                body,
                message.causation.map(blob),
                time(message.time),
                letter.process,
                Option::<&str>::None,
                letter.reason,
                time(letter.at)
            ])?;
        }
        Letter::Timer(timer) => {
            drop_timer(transaction, &timer.process, &timer.key, &timer.timer, timer.id)?;
            insert.execute(params![
                "timer",
                blob(timer.id),
                timer.timer,
                Option::<&str>::None,
                Option::<Id>::None,
                time(timer.at),
                timer.process,
                timer.key,
                letter.reason,
                time(letter.at)
            ])?;
        }
    }
    Ok(())
}

/// Deletes outbox rows the bus has acknowledged.
pub(super) fn mark_sent(transaction: &Transaction<'_>, sequences: &[u64]) -> rusqlite::Result<()> {
    let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE sequence = ?1")?;
    for &sequence in sequences {
        delete.execute([sequence as i64])?;
    }
    Ok(())
}

pub(super) fn replay(
    transaction: &Transaction<'_>,
    ids: &[u64],
    now: Timestamp,
) -> rusqlite::Result<Replayed> {
    let mut replayed = Replayed::default();
    for &id in ids {
        let letter = transaction
            .prepare_cached(&format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"
            ))?
            .query_row([id as i64], read_dead_letter)
            .optional()?;
        let Some(letter) = letter else { continue };
        transaction
            .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
            .execute([id as i64])?;
        match letter.letter {
            Letter::Message(message) => {
                let process = letter.process.unwrap_or_default();
                let body = message
                    .body
                    .to_json()
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                transaction
                    .prepare_cached(
                        "INSERT INTO outbox (message_id, name, kind, body, causation, time, process, key)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '')",
                    )?
                    .execute(params![
                        blob(message.id),
                        &*message.name,
                        message.kind.as_str(),
                        Json::Shared(body),
                        message.causation.map(blob),
                        time(message.time),
                        &process
                    ])?;
                replayed.messages.push(OutboxRow {
                    sequence: transaction.last_insert_rowid() as u64,
                    process,
                    key: String::new(),
                    message,
                });
            }
            Letter::Timer(mut timer) => {
                // Only a running instance gets its timer back; a completed
                // one has nothing left to do with it.
                let running: Option<i64> = transaction
                    .prepare_cached(
                        "SELECT 1 FROM instances
                         WHERE process = ?1 AND key = ?2 AND completed_at IS NULL",
                    )?
                    .query_row(params![timer.process, timer.key], |row| row.get(0))
                    .optional()?;
                if running.is_some() {
                    timer.at = now;
                    schedule_timer(
                        transaction,
                        &timer.process,
                        &timer.key,
                        &timer.timer,
                        timer.at,
                        timer.id,
                    )?;
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
pub(super) fn mark_handled(
    transaction: &Transaction<'_>,
    scope: &str,
    id: MessageId,
    at: Timestamp,
) -> rusqlite::Result<bool> {
    let inserted = transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO inbox (process, message_id, handled_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![scope, blob(id), time(at)])?;
    Ok(inserted == 1)
}

pub(super) fn prune(transaction: &Transaction<'_>, before: Timestamp) -> rusqlite::Result<Pruned> {
    let tombstones = transaction
        .prepare_cached(
            "DELETE FROM instances WHERE completed_at IS NOT NULL AND completed_at < ?1",
        )?
        .execute([time(before)])?;
    let inbox = transaction
        .prepare_cached("DELETE FROM inbox WHERE handled_at < ?1")?
        .execute([time(before)])?;
    Ok(Pruned { tombstones: tombstones as u64, inbox: inbox as u64 })
}
