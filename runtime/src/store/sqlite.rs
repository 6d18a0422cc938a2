//! The SQLite store, the embedded default: one file in WAL mode, durable by
//! default (`synchronous=FULL`), with a schema that it creates and migrates
//! itself.
//!
//! One thread owns the connection. Calls are queued to it; each time it
//! wakes it answers the reads first, then applies every queued write (the
//! commits of many workers, outbox rows marked sent, dead letters) in one
//! transaction, so one sync of the file pays for all of them: group commit.
//! Each instance write inside the transaction is all or nothing: its checks
//! (inbox, version) come first, and a failed check undoes what the write had
//! done before the transaction goes on with the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, Transaction, params};
use tokio::sync::oneshot;

use super::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, InstanceTimer, InstanceWrite, Letter,
    NewDeadLetter, OutboxRow, Pruned, Replayed, Store, StoreError, TimerChange, TimerRow,
};
use crate::clock::BoxFuture;
use crate::message::{Body, Envelope, MessageId, MessageKind, Timestamp};

/// How hard a commit holds on to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit that returned survives a power cut.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, but
    /// the last commits may be lost in a power cut. Faster.
    Normal,
}

/// How to open a SQLite store.
#[derive(Clone, Copy, Debug)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// The most calls one wake of the store's thread takes up, and so the
    /// most commits that share one transaction.
    pub max_group: usize,
    /// Once a transaction holds this many rows to write (instance writes,
    /// dead letters, outbox rows marked sent), the store's thread commits it
    /// rather than taking up more calls. Under light load, many small
    /// commits still share one transaction; a worker busy enough to fill one
    /// alone gets its own, and the next worker's batch, which came in
    /// meanwhile, goes into the next one instead of waiting for this one's
    /// sync: the store's thread then always has work while the workers
    /// decide.
    pub group_rows: usize,
    /// How much of the file SQLite keeps in memory, in MiB (SQLite's own
    /// default is 2). The inbox grows with every message, and the ids of
    /// decided messages (derived, so random) land all over its index: a
    /// small cache reads those pages back from the file again and again.
    pub cache_mib: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            max_group: 256,
            group_rows: 256,
            cache_mib: 64,
        }
    }
}

/// A store in one SQLite file. Cheap to clone; the file is closed when the
/// last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    requests: mpsc::Sender<Request>,
    path: Arc<PathBuf>,
    transactions: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// The schema, one step per version; `PRAGMA user_version` says how many
/// steps a file has had. A new version appends a step and never edits one.
const MIGRATIONS: &[&str] = &[
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

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, durable.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = connect(&path, &options)?;
        let (requests, receiver) = mpsc::channel();
        let group = Group { calls: options.max_group.max(1), rows: options.group_rows.max(1) };
        let transactions = Arc::new(AtomicU64::new(0));
        let counted = transactions.clone();
        std::thread::Builder::new()
            .name("switchyard-sqlite".to_owned())
            .spawn(move || serve(connection, receiver, group, &counted))
            .map_err(|e| StoreError::Failed(e.into()))?;
        Ok(SqliteStore { requests, path: Arc::new(path), transactions })
    }

    /// How many write transactions the store has committed: with the number
    /// of messages handled, it tells how well commits are grouped.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn call<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(request(reply));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }
}

/// Opens the connection and brings its schema up to date.
fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path).map_err(error)?;
    configure(&connection, options).map_err(error)?;
    migrate(&mut connection)?;
    Ok(connection)
}

fn configure(connection: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
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

/// Brings the schema up to date, one step per transaction. A file from a
/// newer build is refused rather than written with an older idea of it.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let found: i64 =
        connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(error)?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let mut apply = || -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            transaction.execute_batch(step)?;
            transaction.pragma_update(None, "user_version", index as i64 + 1)?;
            transaction.commit()
        };
        apply().map_err(error)?;
    }
    Ok(())
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
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
}

/// A write, taken apart from its reply so that the reply outlives a failed
/// transaction and can say why it failed.
enum Write {
    Commit(Batch),
    MarkSent(Vec<u64>),
    Replay(Vec<u64>, Timestamp),
    Prune(Timestamp),
}

enum Written {
    Commit(Vec<CommitOutcome>, Batch),
    MarkSent,
    Replay(Replayed),
    Prune(Pruned),
}

enum WriteReply {
    Commit(Reply<(Vec<CommitOutcome>, Batch)>),
    MarkSent(Reply<()>),
    Replay(Reply<Replayed>),
    Prune(Reply<Pruned>),
}

/// How much one transaction takes up.
#[derive(Clone, Copy)]
struct Group {
    calls: usize,
    rows: usize,
}

/// The store's thread: answers reads, groups writes.
fn serve(
    mut connection: Connection,
    requests: mpsc::Receiver<Request>,
    group: Group,
    transactions: &AtomicU64,
) {
    let mut states = StateJson::default();
    while let Ok(first) = requests.recv() {
        let mut writes = Vec::new();
        let mut replies = Vec::new();
        let mut rows = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::Load { process, keys, reply } => {
                    let _ = reply.send(load(&connection, process, &keys).map_err(error));
                }
                Request::PendingOutbox { reply } => {
                    let _ = reply.send(pending_outbox(&connection).map_err(error));
                }
                Request::PendingTimers { reply } => {
                    let _ = reply.send(pending_timers(&connection).map_err(error));
                }
                Request::DeadLetters { reply } => {
                    let _ = reply.send(dead_letters(&connection).map_err(error));
                }
                Request::Commit { batch, reply } => {
                    rows += batch.instances.len() + batch.dead_letters.len();
                    writes.push(Write::Commit(batch));
                    replies.push(WriteReply::Commit(reply));
                }
                Request::MarkSent { sequences, reply } => {
                    rows += sequences.len();
                    writes.push(Write::MarkSent(sequences));
                    replies.push(WriteReply::MarkSent(reply));
                }
                Request::Replay { ids, now, reply } => {
                    writes.push(Write::Replay(ids, now));
                    replies.push(WriteReply::Replay(reply));
                }
                Request::Prune { before, reply } => {
                    writes.push(Write::Prune(before));
                    replies.push(WriteReply::Prune(reply));
                }
            }
            let room = writes.len() < group.calls && rows < group.rows;
            next = if room { requests.try_recv().ok() } else { None };
        }
        if !writes.is_empty() {
            let result = write_group(&mut connection, writes, &mut states);
            if result.is_ok() {
                transactions.fetch_add(1, Ordering::Relaxed);
            }
            answer(replies, result);
        }
    }
}

/// Applies every queued write in one transaction.
fn write_group(
    connection: &mut Connection,
    writes: Vec<Write>,
    states: &mut StateJson,
) -> rusqlite::Result<Vec<Written>> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut written = Vec::with_capacity(writes.len());
    for write in writes {
        written.push(match write {
            Write::Commit(batch) => {
                let outcomes = commit(&transaction, &batch, states)?;
                Written::Commit(outcomes, batch)
            }
            Write::MarkSent(sequences) => {
                let mut delete =
                    transaction.prepare_cached("DELETE FROM outbox WHERE sequence = ?1")?;
                for sequence in sequences {
                    delete.execute([sequence as i64])?;
                }
                Written::MarkSent
            }
            Write::Replay(ids, now) => Written::Replay(replay(&transaction, &ids, now)?),
            Write::Prune(before) => Written::Prune(prune(&transaction, before)?),
        });
    }
    transaction.commit()?;
    Ok(written)
}

/// Answers the writes of a group once its transaction has committed, or
/// every one of them with the error that rolled it back.
fn answer(replies: Vec<WriteReply>, result: rusqlite::Result<Vec<Written>>) {
    match result {
        Ok(written) => {
            for (reply, written) in replies.into_iter().zip(written) {
                match (reply, written) {
                    (WriteReply::Commit(reply), Written::Commit(outcomes, batch)) => {
                        drop(reply.send(Ok((outcomes, batch))))
                    }
                    (WriteReply::MarkSent(reply), Written::MarkSent) => drop(reply.send(Ok(()))),
                    (WriteReply::Replay(reply), Written::Replay(replayed)) => {
                        drop(reply.send(Ok(replayed)))
                    }
                    (WriteReply::Prune(reply), Written::Prune(pruned)) => {
                        drop(reply.send(Ok(pruned)))
                    }
                    // Replies and results are built in the same order from
                    // the same requests; a mismatch leaves the caller with
                    // `Closed` rather than a wrong answer.
                    _ => {}
                }
            }
        }
        Err(failure) => {
            let message = failure.to_string();
            let transient = is_transient(&failure);
            let make = || {
                let cause: super::BoxError = message.clone().into();
                if transient { StoreError::Unavailable(cause) } else { StoreError::Failed(cause) }
            };
            for reply in replies {
                match reply {
                    WriteReply::Commit(reply) => drop(reply.send(Err(make()))),
                    WriteReply::MarkSent(reply) => drop(reply.send(Err(make()))),
                    WriteReply::Replay(reply) => drop(reply.send(Err(make()))),
                    WriteReply::Prune(reply) => drop(reply.send(Err(make()))),
                }
            }
        }
    }
}

fn commit(
    transaction: &Transaction<'_>,
    batch: &Batch,
    states: &mut StateJson,
) -> rusqlite::Result<Vec<CommitOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.instances.len());
    if !batch.instances.is_empty() {
        let mut statements = Statements::prepare(transaction)?;
        for write in &batch.instances {
            outcomes.push(write_instance(transaction, &mut statements, states, write)?);
        }
    }
    for letter in &batch.dead_letters {
        insert_dead_letter(transaction, letter)?;
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
struct StateJson(Vec<(Value, Arc<[u8]>)>);

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

/// JSON bytes, written as text.
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
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self)))
    }
}

/// Writes a typed body as JSON in place. One that cannot be written stays
/// typed: the store's thread meets the same error and fails its write.
fn to_json(body: &mut Body) {
    if let Body::Value(value) = body
        && let Ok(json) = value.to_json()
    {
        *body = Body::Json(json.into());
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
    let process = write.process;
    let key: &str = &write.key;

    // The inbox first: a message handled before makes the whole write a duplicate.
    let mut inserted = crate::store::Inbox::new();
    let mut duplicates = Vec::new();
    for id in &write.inbox {
        if statements.inbox.execute(params![process, blob(*id), time(write.at)])? == 1 {
            inserted.push(*id);
        } else {
            duplicates.push(*id);
        }
    }
    let undo_inbox = |inserted: &[MessageId]| -> rusqlite::Result<()> {
        let mut delete = transaction
            .prepare_cached("DELETE FROM inbox WHERE process = ?1 AND message_id = ?2")?;
        for id in inserted {
            delete.execute(params![process, blob(*id)])?;
        }
        Ok(())
    };
    if !duplicates.is_empty() {
        undo_inbox(&inserted)?;
        return Ok(CommitOutcome::Duplicate(duplicates));
    }

    // Then the version: the instance must be as the decisions saw it.
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
    if changed != 1 {
        undo_inbox(&inserted)?;
        return Ok(CommitOutcome::Conflict);
    }

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
    if write.outbox.is_empty() {
        return Ok(CommitOutcome::Committed { outbox: Vec::new(), slot: None });
    }

    let mut sequences = Vec::with_capacity(write.outbox.len());
    let mut insert = transaction.prepare_cached(
        "INSERT INTO outbox (message_id, name, kind, body, causation, time, process, key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (message, body) in write.outbox.iter().zip(&encoded.bodies) {
        insert.execute(params![
            blob(message.id),
            &*message.name,
            message.kind.as_str(),
            body,
            message.causation.map(blob),
            time(message.time),
            process,
            key
        ])?;
        sequences.push(transaction.last_insert_rowid() as u64);
    }
    Ok(CommitOutcome::Committed { outbox: sequences, slot: None })
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
            // A body that cannot be written as JSON is kept as its debug text:
            // the letter is still recorded, with what can be shown of it.
            let body = match message.body.to_json() {
                Ok(json) => String::from_utf8_lossy(&json).into_owned(),
                Err(_) => format!("{:?}", message.body),
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

fn replay(
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

fn prune(transaction: &Transaction<'_>, before: Timestamp) -> rusqlite::Result<Pruned> {
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

fn load(
    connection: &Connection,
    process: &'static str,
    keys: &[Arc<str>],
) -> rusqlite::Result<Vec<Option<InstanceRecord>>> {
    let mut instance = connection.prepare_cached(
        "SELECT version, state, data, completed_at FROM instances WHERE process = ?1 AND key = ?2",
    )?;
    let mut timers = connection
        .prepare_cached("SELECT timer, at, id FROM timers WHERE process = ?1 AND key = ?2")?;
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        let found = instance
            .query_row(params![process, &**key], |row| {
                Ok(InstanceRecord {
                    version: row.get::<_, i64>(0)? as u64,
                    state: json_body(row, 1)?,
                    data: json_body(row, 2)?,
                    completed_at: row.get::<_, Option<i64>>(3)?.map(|at| Timestamp(at as u64)),
                    timers: Vec::new(),
                    slot: None,
                })
            })
            .optional()?;
        let Some(mut record) = found else {
            records.push(None);
            continue;
        };
        let rows = timers.query_map(params![process, &**key], |row| {
            Ok(InstanceTimer {
                timer: row.get::<_, String>(0)?.into(),
                at: Timestamp(row.get::<_, i64>(1)? as u64),
                id: read_id(row, 2)?,
            })
        })?;
        for timer in rows {
            record.timers.push(timer?);
        }
        records.push(Some(record));
    }
    Ok(records)
}

fn pending_outbox(connection: &Connection) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut select = connection.prepare_cached(
        "SELECT sequence, message_id, name, kind, body, causation, time, process, key
         FROM outbox ORDER BY sequence",
    )?;
    let rows = select.query_map([], |row| {
        Ok(OutboxRow {
            sequence: row.get::<_, i64>(0)? as u64,
            message: Envelope {
                id: read_id(row, 1)?,
                name: row.get::<_, String>(2)?.into(),
                kind: read_kind(row, 3)?,
                body: json_body(row, 4)?,
                causation: read_optional_id(row, 5)?,
                time: Timestamp(row.get::<_, i64>(6)? as u64),
            },
            process: row.get(7)?,
            key: row.get(8)?,
        })
    })?;
    rows.collect()
}

fn pending_timers(connection: &Connection) -> rusqlite::Result<Vec<TimerRow>> {
    let mut select = connection
        .prepare_cached("SELECT process, key, timer, at, id FROM timers ORDER BY at, id")?;
    let rows = select.query_map([], |row| {
        Ok(TimerRow {
            process: row.get(0)?,
            key: row.get(1)?,
            timer: row.get(2)?,
            at: Timestamp(row.get::<_, i64>(3)? as u64),
            id: read_id(row, 4)?,
        })
    })?;
    rows.collect()
}

const DEAD_LETTER_COLUMNS: &str =
    "id, kind, message_id, name, body, causation, time, process, key, reason, dead_at";

fn dead_letters(connection: &Connection) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut select = connection
        .prepare_cached(&format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id"))?;
    let rows = select.query_map([], read_dead_letter)?;
    rows.collect()
}

fn read_dead_letter(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let kind: String = row.get(1)?;
    let process: Option<String> = row.get(7)?;
    let time = Timestamp(row.get::<_, i64>(6)? as u64);
    let letter = if kind == "timer" {
        Letter::Timer(TimerRow {
            process: process.clone().unwrap_or_default(),
            key: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
            timer: row.get(3)?,
            at: time,
            id: read_id(row, 2)?,
        })
    } else {
        Letter::Message(Envelope {
            id: read_id(row, 2)?,
            name: row.get::<_, String>(3)?.into(),
            kind: read_kind(row, 1)?,
            body: json_body(row, 4)?,
            causation: read_optional_id(row, 5)?,
            time,
        })
    };
    Ok(DeadLetter {
        id: row.get::<_, i64>(0)? as u64,
        letter,
        process,
        reason: row.get(9)?,
        at: Timestamp(row.get::<_, i64>(10)? as u64),
    })
}

/// A message id as a 16-byte blob.
struct Id([u8; 16]);

fn blob(id: MessageId) -> Id {
    Id(id.as_uuid().into_bytes())
}

impl ToSql for Id {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

fn time(at: Timestamp) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

fn read_id(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<MessageId> {
    let bytes: Vec<u8> = row.get(index)?;
    uuid::Uuid::from_slice(&bytes).map(MessageId::from_uuid).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn read_optional_id(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<MessageId>> {
    match row.get_ref(index)? {
        ValueRef::Null => Ok(None),
        _ => read_id(row, index).map(Some),
    }
}

fn read_kind(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<MessageKind> {
    let text: String = row.get(index)?;
    MessageKind::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("`{text}` is not a kind of message").into(),
        )
    })
}

fn json_body(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Body> {
    match row.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Body::Json(Arc::from(bytes))),
        ValueRef::Null => Ok(Body::Json(Arc::from(&b"null"[..]))),
        _ => Err(rusqlite::Error::InvalidColumnType(
            index,
            "body".to_owned(),
            rusqlite::types::Type::Integer,
        )),
    }
}

fn is_transient(failure: &rusqlite::Error) -> bool {
    matches!(
        failure.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
        )
    )
}

fn error(failure: rusqlite::Error) -> StoreError {
    if is_transient(&failure) {
        StoreError::Unavailable(Box::new(failure))
    } else {
        StoreError::Failed(Box::new(failure))
    }
}

impl Store for SqliteStore {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        self.call(|reply| Request::Load { process, keys, reply })
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let mut taken = std::mem::take(batch);
        // The store's one thread is what limits how fast it writes: bodies
        // are written as JSON here, on the caller's thread, so that it only
        // runs SQL. States stay typed: there are few, and the store's thread
        // keeps each one's JSON.
        for write in &mut taken.instances {
            to_json(&mut write.data);
            for message in &mut write.outbox {
                to_json(&mut message.body);
            }
        }
        let written = self.call(|reply| Request::Commit { batch: taken, reply });
        Box::pin(async move {
            let (outcomes, mut written) = written.await?;
            // Freed here, on the caller's thread, and the lists kept for
            // the caller's next batch.
            written.instances.clear();
            written.dead_letters.clear();
            *batch = written;
            Ok(outcomes)
        })
    }

    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.call(|reply| Request::MarkSent { sequences, reply })
    }

    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        self.call(|reply| Request::PendingOutbox { reply })
    }

    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        self.call(|reply| Request::PendingTimers { reply })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.call(|reply| Request::DeadLetters { reply })
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        self.call(|reply| Request::Replay { ids, now, reply })
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.call(|reply| Request::Prune { before, reply })
    }
}
