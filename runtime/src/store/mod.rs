//! The [`Store`]: where the engine keeps instances, the inbox of handled
//! message ids, the outbox of decided messages, timers and dead letters.
//!
//! The engine writes through [`Store::commit`] only: one [`Batch`] holds the
//! writes of many instances, and each [`InstanceWrite`] is applied all or
//! nothing, guarded by the instance's version and by the inbox. Stores see
//! keys, states and timers as JSON text that generated code defines, and
//! bodies as [`Body`] values that they may keep typed (in memory) or write as
//! JSON (on disk). Every store passes the suite in [`crate::conformance`].
//!
//! Command handlers and subscribers have inboxes of their own, apart from
//! the instances: [`Store::handled`] and [`Store::mark_handled`], by scope
//! and message id, so that an idempotent handler skips a redelivery.

mod memory;
mod sqlite;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryStore;
/// The SQLite binding of [`SqliteStore::handle_once`]'s transaction: a
/// handler that writes through it uses this very version.
pub use rusqlite;
pub use sqlite::{Durability, SqliteOptions, SqliteStore};

use crate::clock::BoxFuture;
use crate::message::{Body, Envelope, MessageId, Timestamp};

/// Persistence for the engine. Implementations are cheap to share: the
/// engine holds one behind an `Arc` and calls it from many tasks at once.
///
/// A store for several engine nodes (PostgreSQL) implements the same calls:
/// the version check in [`Store::commit`] is what keeps two nodes from
/// changing one instance at once, and [`Store::pending_outbox`] and
/// [`Store::pending_timers`] are where it would claim rows (`SKIP LOCKED`).
pub trait Store: Send + Sync + 'static {
    /// The instances of `process` with these keys (JSON), in the same order;
    /// `None` for an instance that was never created or has been pruned.
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>>;

    /// Applies a batch: each instance write all or nothing, in the order
    /// given, and the dead letters. Returns one outcome per instance write.
    /// An `Err` means that nothing of the batch was applied.
    ///
    /// The store takes the writes and the dead letters out of `batch`, which
    /// is left empty whatever the result, with its lists' room kept: a
    /// caller that commits batch after batch fills the same lists again
    /// instead of allocating new ones.
    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>>;

    /// Removes outbox rows once the bus has acknowledged them.
    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every outbox row not yet sent, in commit order.
    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>>;

    /// Every pending timer.
    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>>;

    /// The dead letters, oldest first.
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>>;

    /// Takes dead letters out of the table and queues them again: messages
    /// as outbox rows (the relay sends them), timers as timers due at `now`.
    /// Ids that are not dead letters are skipped.
    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>>;

    /// Deletes tombstones of instances completed before `before`, and inbox
    /// rows older than `before`: those of processes and those of
    /// [`Store::mark_handled`].
    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>>;

    /// Whether message `id` was handled in `scope`: the inbox of a command
    /// handler or subscriber (scope `"handler:<wire name>"`), apart from the
    /// inboxes of processes.
    ///
    /// A scope is never a process's name: a store may keep these rows in
    /// one table with the inboxes of processes, keyed by name, and the
    /// `handler:` prefix keeps the two apart (a process's name is an
    /// identifier). The future owns what it needs of `scope`.
    fn handled(&self, scope: &str, id: MessageId) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Records message `id` as handled in `scope` at `at`. `Ok(false)`, and
    /// nothing changed, if it was already. Rows are pruned by `prune` with the
    /// inbox rows of processes, by age. Once it returns `Ok`, the row is as
    /// durable as a commit.
    fn mark_handled(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// How long the outbox rows and timers this node holds stay its own
    /// without [`Store::renew_leases`]: a store shared by several engine
    /// nodes hands a node's rows to another once they run out, so that
    /// none is stranded when a node dies. `None`, the default, for a store
    /// of one node, which has no leases: the engine then neither renews
    /// nor claims.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Extends the leases of the rows this node holds. The engine calls it
    /// every third of [`Store::lease`]. A store without leases has nothing
    /// to extend.
    fn renew_leases(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Takes over, for this node, the outbox rows and timers whose leases
    /// ran out (their node died, or stopped renewing), each for exactly
    /// one caller of any node: the engine hands them to its relay and its
    /// timers. A store without leases has none to hand over.
    fn claim_expired(&self) -> BoxFuture<'_, Result<Claimed, StoreError>> {
        Box::pin(async { Ok(Claimed::default()) })
    }
}

/// What [`Store::claim_expired`] took over.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    /// Outbox rows, in commit order.
    pub outbox: Vec<OutboxRow>,
    /// Timers, soonest first.
    pub timers: Vec<TimerRow>,
}

/// An instance as stored.
#[derive(Clone, Debug)]
pub struct InstanceRecord {
    pub version: u64,
    /// The state, as JSON (typed in memory).
    pub state: Body,
    pub data: Body,
    /// When the instance reached a final state: it is a tombstone.
    pub completed_at: Option<Timestamp>,
    /// Its pending timers.
    pub timers: Vec<InstanceTimer>,
    /// The store's handle to the instance, if it gives one: see [`Slot`].
    pub slot: Option<Slot>,
}

/// A store's own handle to an instance it holds, opaque to the engine.
///
/// A store may hand one out with an instance, when it is loaded
/// ([`InstanceRecord::slot`]) or created ([`CommitOutcome::Committed`]);
/// the engine keeps it with the instance and gives it back with the
/// instance's next write ([`InstanceWrite::slot`]). A store in memory uses
/// it to reach the instance without looking its key up. A slot is only a
/// shortcut: a store checks and applies a write that gives one exactly as
/// the same write without it, and a slot whose instance has since been
/// pruned finds no instance. A store on disk gives none.
#[derive(Clone)]
pub struct Slot(Arc<dyn Any + Send + Sync>);

impl Slot {
    pub fn new<T: Any + Send + Sync>(handle: Arc<T>) -> Slot {
        Slot(handle)
    }

    /// The handle, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// Slots are equal when they are the same handle.
impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Slot {}

/// A pending timer of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceTimer {
    /// The timer, as JSON.
    pub timer: Arc<str>,
    pub at: Timestamp,
    /// The id its firing is handled under.
    pub id: MessageId,
}

/// The writes of one batch.
#[derive(Debug, Default)]
pub struct Batch {
    pub instances: Vec<InstanceWrite>,
    pub dead_letters: Vec<NewDeadLetter>,
}

/// Everything that handling some messages changed in one instance.
#[derive(Debug)]
pub struct InstanceWrite {
    pub process: &'static str,
    /// The correlation key, as JSON.
    pub key: Arc<str>,
    /// The version the decisions were made on; `None` creates the instance.
    /// A stored version that differs makes the outcome a [`CommitOutcome::Conflict`].
    pub expected_version: Option<u64>,
    pub version: u64,
    pub state: Body,
    pub data: Body,
    /// Set when the instance reached a final state: it becomes a tombstone
    /// and its timers are dropped.
    pub completed_at: Option<Timestamp>,
    /// The ids of the messages handled. One that is already in the inbox
    /// makes the outcome a [`CommitOutcome::Duplicate`]. A store may keep
    /// the inbox per process or per instance: a message is correlated by its
    /// content, so a redelivery always reaches the instance that handled it.
    pub inbox: Inbox,
    /// When the messages were handled: the inbox rows' time, for pruning.
    pub at: Timestamp,
    /// The decided messages, in decision order.
    pub outbox: Vec<Envelope>,
    /// Timer changes, in decision order.
    pub timers: Vec<TimerChange>,
    /// The store's handle to the instance, as it gave it with the instance:
    /// see [`Slot`].
    pub slot: Option<Slot>,
}

/// The ids of the messages one instance write handled: nearly always one,
/// so kept inline. `Vec`s and slices convert with `.into()`.
pub type Inbox = smallvec::SmallVec<[MessageId; 1]>;

/// A change to one pending timer of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerChange {
    /// Sets `timer` to fire at `at` under `id`; a pending one moves.
    Schedule {
        timer: Arc<str>,
        at: Timestamp,
        id: MessageId,
    },
    Cancel {
        timer: Arc<str>,
    },
    /// The firing `id` of `timer` was handled: drops it unless it has moved since.
    Fired {
        timer: Arc<str>,
        id: MessageId,
    },
}

/// How one instance write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied; the outbox rows got these sequence numbers, in order. The
    /// store's handle to the instance, if it gives one, for its next write.
    Committed { outbox: Vec<u64>, slot: Option<Slot> },
    /// The stored version was not the expected one: nothing was applied.
    Conflict,
    /// These message ids were already handled: nothing was applied.
    Duplicate(Vec<MessageId>),
    /// This write could not be applied, for a reason that retrying will not
    /// change; nothing of it was applied.
    Failed(String),
}

/// A decided message waiting to be sent.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub sequence: u64,
    pub process: String,
    pub key: String,
    pub message: Envelope,
}

/// A pending timer, as recovered after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerRow {
    pub process: String,
    pub key: String,
    pub timer: String,
    pub at: Timestamp,
    pub id: MessageId,
}

/// What could not be handled.
#[derive(Clone, Debug)]
pub enum Letter {
    Message(Envelope),
    /// A timer whose firing could not be handled; replaying schedules it again.
    Timer(TimerRow),
}

/// A message or timer that could not be handled, and why. Nothing is
/// dropped silently.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its number in the dead-letter table, for [`Store::replay`].
    pub id: u64,
    pub letter: Letter,
    /// The process that could not handle it, when one was involved.
    pub process: Option<String>,
    pub reason: String,
    pub at: Timestamp,
}

/// A dead letter to record.
#[derive(Clone, Debug)]
pub struct NewDeadLetter {
    pub letter: Letter,
    pub process: Option<String>,
    pub reason: String,
    pub at: Timestamp,
}

/// What [`Store::replay`] queued again.
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    pub messages: Vec<OutboxRow>,
    pub timers: Vec<TimerRow>,
}

/// What [`Store::prune`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub tombstones: u64,
    pub inbox: u64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: the database is busy, locked or out of space for now.
    #[error("the store is unavailable for now: {0}")]
    Unavailable(#[source] BoxError),
    #[error("the store failed: {0}")]
    Failed(#[source] BoxError),
    #[error("the database's schema is at version {found}, newer than this build knows ({known})")]
    NewerSchema { found: i64, known: i64 },
    #[error("the store has shut down")]
    Closed,
}

/// The cause of a store error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl DeadLetter {
    /// The message's or timer's name, for listings.
    pub fn name(&self) -> &str {
        match &self.letter {
            Letter::Message(envelope) => &envelope.name,
            Letter::Timer(timer) => &timer.timer,
        }
    }

    /// The id the message or timer firing carried.
    pub fn message_id(&self) -> MessageId {
        match &self.letter {
            Letter::Message(envelope) => envelope.id,
            Letter::Timer(timer) => timer.id,
        }
    }
}

impl fmt::Display for Letter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Letter::Message(envelope) => {
                write!(f, "{} `{}` {}", envelope.kind.as_str(), envelope.name, envelope.id)
            }
            Letter::Timer(timer) => {
                write!(f, "timer {} of `{}` {} {}", timer.timer, timer.process, timer.key, timer.id)
            }
        }
    }
}
