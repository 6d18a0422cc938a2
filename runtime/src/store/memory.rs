//! The in-memory store: the same contract as the durable stores, kept in
//! maps. It is the default of the engine and the store of tests; clones
//! share their contents, so a test can start a second engine on the store
//! of the first, as after a restart.
//!
//! Instances live in shards by the hash of the key, each behind its own
//! lock, so that workers committing different instances do not wait for each
//! other. Each instance keeps its own inbox, the ids of the messages it
//! handled: a message is correlated by its content, so it always reaches the
//! same instance, and that is where a redelivery is met. Kept there, the
//! inbox is read and written with the instance, instead of in one table of
//! every message id that grows with the traffic. The outbox and the dead
//! letters, which need one order, share one more lock.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, InstanceTimer, InstanceWrite, Letter,
    OutboxRow, Pruned, Replayed, Store, StoreError, TimerChange, TimerRow,
};
use crate::clock::BoxFuture;
use crate::message::{Body, Envelope, MessageId, NameMap, Timestamp};

/// How many shards instances are spread over.
const SHARDS: usize = 64;

/// A store in memory. Cheap to clone; clones share their contents.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Hashes keys, which come from messages: seeded, as std's maps are.
    /// One hash per call picks the shard and finds the instance in it.
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    ordered: Mutex<Ordered>,
}

/// Process name -> its instances in this shard.
#[derive(Default)]
struct Shard(NameMap<String, HashTable<Stored>>);

/// Aligned to the processor's cache lines, and small enough to fill two of
/// them exactly: a write misses two lines of it, where unaligned it would
/// straddle three or four. So it keeps no hash (growing the table hashes
/// the keys again), and no `Option` around its completion time.
#[repr(align(64))]
struct Stored {
    key: Arc<str>,
    version: u64,
    state: Body,
    data: Body,
    /// [`RUNNING`] until the instance completes.
    completed_at: Timestamp,
    timers: Vec<InstanceTimer>,
    inbox: Handled,
}

/// The completion time of an instance that has not completed.
const RUNNING: Timestamp = Timestamp(u64::MAX);

const _: () = assert!(std::mem::size_of::<Stored>() == 128);

impl Stored {
    fn completed_at(&self) -> Option<Timestamp> {
        (self.completed_at != RUNNING).then_some(self.completed_at)
    }
}

/// The inbox of one instance: the ids of the messages it handled, and when.
/// Most instances handle a few messages in their life, which a list holds
/// best; one that handles many moves them to a map.
enum Handled {
    Few(Vec<(MessageId, Timestamp)>),
    /// Boxed: rare, and large enough to make every instance larger.
    #[expect(clippy::box_collection, reason = "a map inline would make every instance larger")]
    Many(Box<HashMap<MessageId, Timestamp, BuildHasherDefault<IdHasher>>>),
}

/// The most ids an instance's inbox keeps in a list.
const FEW: usize = 16;

/// What needs one order across all instances.
#[derive(Default)]
struct Ordered {
    outbox: BTreeMap<u64, OutboxRow>,
    next_sequence: u64,
    dead_letters: BTreeMap<u64, DeadLetter>,
    next_dead_letter: u64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                ordered: Mutex::default(),
            }),
        }
    }

    /// The hash of `key`, and its shard, locked.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.inner.hasher.hash_one(key);
        (hash, lock(&self.inner.shards[shard_of(hash)]))
    }

    fn ordered(&self) -> MutexGuard<'_, Ordered> {
        lock(&self.inner.ordered)
    }

    /// Brings the instances a batch writes into the processor's cache, one
    /// shard at a time. A lock is a barrier the processor cannot look past:
    /// taken once per shard here, the probes of its instances are under way
    /// at the same time, where the writes, each under its own lock, would
    /// wait for one miss after the other.
    fn warm(&self, writes: &[InstanceWrite], hashes: &[u64]) {
        let mut order: Vec<(usize, u64)> = hashes.iter().copied().enumerate().collect();
        order.sort_unstable_by_key(|&(_, hash)| shard_of(hash));
        for run in order.chunk_by(|a, b| shard_of(a.1) == shard_of(b.1)) {
            let shard = lock(&self.inner.shards[shard_of(run[0].1)]);
            shard.warm(run.iter().map(|&(index, hash)| (hash, &writes[index])));
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// The shard of a key's hash: its high bits, as the tables inside index by
/// the low ones.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// Locks a part of the store. A panic while a lock was held cannot leave a
/// half-applied write: every write checks first and changes after. So a
/// poisoned lock still guards consistent contents.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instances: usize = self
            .inner
            .shards
            .iter()
            .map(|shard| lock(shard).0.values().map(HashTable::len).sum::<usize>())
            .sum();
        let ordered = self.ordered();
        f.debug_struct("MemoryStore")
            .field("instances", &instances)
            .field("outbox", &ordered.outbox.len())
            .field("dead_letters", &ordered.dead_letters.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        let records = keys
            .iter()
            .map(|key| {
                let (hash, shard) = self.shard(key);
                let stored = shard.0.get(process)?.find(hash, |s| *s.key == **key)?;
                Some(InstanceRecord {
                    version: stored.version,
                    state: stored.state.clone(),
                    data: stored.data.clone(),
                    completed_at: stored.completed_at(),
                    timers: stored.timers.clone(),
                })
            })
            .collect();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let hashes: Vec<u64> =
            batch.instances.iter().map(|write| self.inner.hasher.hash_one(&*write.key)).collect();
        self.warm(&batch.instances, &hashes);
        let mut outcomes = Vec::with_capacity(batch.instances.len());
        for (write, hash) in batch.instances.drain(..).zip(hashes) {
            let mut shard = lock(&self.inner.shards[shard_of(hash)]);
            let (outcome, outbox) = shard.write(&self.inner.hasher, hash, write);
            // The outbox rows take their sequence numbers while the shard is
            // still locked, so that an instance's rows keep its decision order.
            let outcome = match (outcome, outbox) {
                (CommitOutcome::Committed { .. }, Some((process, key, messages))) => {
                    let sequences = self.ordered().append(process, &key, messages);
                    CommitOutcome::Committed { outbox: sequences }
                }
                (outcome, _) => outcome,
            };
            drop(shard);
            outcomes.push(outcome);
        }
        for letter in batch.dead_letters.drain(..) {
            if let Letter::Timer(timer) = &letter.letter {
                let (hash, mut shard) = self.shard(&timer.key);
                shard.drop_timer(hash, timer);
            }
            let mut ordered = self.ordered();
            ordered.next_dead_letter += 1;
            let id = ordered.next_dead_letter;
            ordered.dead_letters.insert(
                id,
                DeadLetter {
                    id,
                    letter: letter.letter,
                    process: letter.process,
                    reason: letter.reason,
                    at: letter.at,
                },
            );
        }
        Box::pin(std::future::ready(Ok(outcomes)))
    }

    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut ordered = self.ordered();
        for sequence in sequences {
            ordered.outbox.remove(&sequence);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        let rows = self.ordered().outbox.values().cloned().collect();
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        let mut rows = Vec::new();
        for shard in &self.inner.shards {
            for (process, table) in &lock(shard).0 {
                for stored in table {
                    rows.extend(stored.timers.iter().map(|timer| TimerRow {
                        process: process.clone(),
                        key: stored.key.to_string(),
                        timer: timer.timer.to_string(),
                        at: timer.at,
                        id: timer.id,
                    }));
                }
            }
        }
        rows.sort_by_key(|row| (row.at, row.id));
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        let letters = self.ordered().dead_letters.values().cloned().collect();
        Box::pin(std::future::ready(Ok(letters)))
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        let mut replayed = Replayed::default();
        for id in ids {
            let Some(letter) = self.ordered().dead_letters.remove(&id) else { continue };
            match letter.letter {
                Letter::Message(message) => {
                    let mut ordered = self.ordered();
                    ordered.next_sequence += 1;
                    let row = OutboxRow {
                        sequence: ordered.next_sequence,
                        process: letter.process.unwrap_or_default(),
                        key: String::new(),
                        message,
                    };
                    ordered.outbox.insert(row.sequence, row.clone());
                    replayed.messages.push(row);
                }
                Letter::Timer(mut timer) => {
                    timer.at = now;
                    // A timer of an instance that has completed since has
                    // nothing left to do; replaying it only clears the letter.
                    let (hash, mut shard) = self.shard(&timer.key);
                    if shard.put_timer(hash, &timer) {
                        replayed.timers.push(timer);
                    }
                }
            }
        }
        Box::pin(std::future::ready(Ok(replayed)))
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        let mut pruned = Pruned::default();
        for shard in &self.inner.shards {
            for table in lock(shard).0.values_mut() {
                table.retain(|stored| {
                    if stored.completed_at().is_some_and(|at| at < before) {
                        pruned.tombstones += 1;
                        pruned.inbox += stored.inbox.len() as u64;
                        return false;
                    }
                    pruned.inbox += stored.inbox.prune(before) as u64;
                    true
                });
            }
        }
        Box::pin(std::future::ready(Ok(pruned)))
    }
}

/// The outbox rows of a committed write, still to be numbered.
type Outbox = Option<(&'static str, Arc<str>, Vec<Envelope>)>;

impl Shard {
    /// Applies one instance write, all or nothing: every check comes before
    /// the first change. Returns its outbox rows for numbering.
    fn write(
        &mut self,
        hasher: &RandomState,
        hash: u64,
        write: InstanceWrite,
    ) -> (CommitOutcome, Outbox) {
        let table = match self.0.get_mut(write.process) {
            Some(table) => table,
            None => self.0.entry(write.process.to_owned()).or_default(),
        };
        // One probe of the instance table: it is large, and each probe is
        // likely a cache miss.
        let stored = table.find_mut(hash, |s| s.key == write.key);
        let current = stored.as_ref().map(|s| s.version);
        if current != write.expected_version {
            return (CommitOutcome::Conflict, None);
        }
        let duplicates: Vec<MessageId> = write
            .inbox
            .iter()
            .enumerate()
            .filter(|(n, id)| {
                stored.as_ref().is_some_and(|s| s.inbox.contains(**id))
                    || write.inbox[..*n].contains(id)
            })
            .map(|(_, id)| *id)
            .collect();
        if !duplicates.is_empty() {
            return (CommitOutcome::Duplicate(duplicates), None);
        }
        let completed = write.completed_at.is_some();
        let stored = match stored {
            Some(stored) => {
                stored.version = write.version;
                stored.state = write.state;
                stored.data = write.data;
                stored.completed_at = write.completed_at.unwrap_or(RUNNING);
                stored
            }
            None => table
                .insert_unique(
                    hash,
                    Stored {
                        key: write.key.clone(),
                        version: write.version,
                        state: write.state,
                        data: write.data,
                        completed_at: write.completed_at.unwrap_or(RUNNING),
                        timers: Vec::new(),
                        inbox: Handled::Few(Vec::new()),
                    },
                    |s| hasher.hash_one(&*s.key),
                )
                .into_mut(),
        };
        for id in &write.inbox {
            stored.inbox.insert(*id, write.at);
        }
        apply_timer_changes(&mut stored.timers, &write.timers);
        if completed {
            stored.timers.clear();
        }
        let outbox = (!write.outbox.is_empty()).then_some((write.process, write.key, write.outbox));
        (CommitOutcome::Committed { outbox: Vec::new() }, outbox)
    }

    /// Brings the instances about to be written into the cache, with the
    /// inbox each one is checked against. Each probe is likely a cache miss;
    /// made one after the other, with nothing between them that must wait
    /// for the one before, they are under way at the same time, where the
    /// writes, one at a time, would wait for each in turn.
    fn warm<'a>(&self, writes: impl Iterator<Item = (u64, &'a InstanceWrite)>) {
        for (hash, write) in writes {
            let found = self.0.get(write.process).and_then(|table| {
                // Most often the very key the store holds: `Arc`'s equality
                // compares the pointers first.
                table.find(hash, |s| s.key == write.key)
            });
            if let Some(stored) = found {
                // An instance is two lines: one field on each.
                touch(Some(&(stored.version, stored.completed_at, stored.timers.len())));
                touch(Some(&(
                    matches!(stored.state, Body::Json(_)),
                    matches!(stored.data, Body::Json(_)),
                )));
                touch(stored.key.as_bytes().first());
                if let Handled::Few(ids) = &stored.inbox {
                    touch(ids.first());
                }
            }
        }
    }

    fn find(&mut self, hash: u64, process: &str, key: &str) -> Option<&mut Stored> {
        self.0.get_mut(process)?.find_mut(hash, |stored| *stored.key == *key)
    }

    fn drop_timer(&mut self, hash: u64, row: &TimerRow) {
        let stored = self.find(hash, &row.process, &row.key);
        if let Some(stored) = stored {
            stored.timers.retain(|timer| !(*timer.timer == *row.timer && timer.id == row.id));
        }
    }

    /// Schedules a timer of a running instance; false if there is none.
    fn put_timer(&mut self, hash: u64, row: &TimerRow) -> bool {
        let stored = self.find(hash, &row.process, &row.key);
        let Some(stored) = stored.filter(|stored| stored.completed_at().is_none()) else {
            return false;
        };
        apply_timer_changes(
            &mut stored.timers,
            &[TimerChange::Schedule { timer: row.timer.as_str().into(), at: row.at, id: row.id }],
        );
        true
    }
}

impl Ordered {
    fn append(&mut self, process: &str, key: &str, messages: Vec<Envelope>) -> Vec<u64> {
        let mut sequences = Vec::with_capacity(messages.len());
        for message in messages {
            self.next_sequence += 1;
            sequences.push(self.next_sequence);
            let row = OutboxRow {
                sequence: self.next_sequence,
                process: process.to_owned(),
                key: key.to_owned(),
                message,
            };
            self.outbox.insert(self.next_sequence, row);
        }
        sequences
    }
}

impl Handled {
    fn contains(&self, id: MessageId) -> bool {
        match self {
            Handled::Few(ids) => ids.iter().any(|(known, _)| *known == id),
            Handled::Many(ids) => ids.contains_key(&id),
        }
    }

    fn insert(&mut self, id: MessageId, at: Timestamp) {
        match self {
            Handled::Few(ids) if ids.len() < FEW => ids.push((id, at)),
            Handled::Few(ids) => {
                let mut many: HashMap<_, _, _> = ids.drain(..).collect();
                many.insert(id, at);
                *self = Handled::Many(Box::new(many));
            }
            Handled::Many(ids) => {
                ids.insert(id, at);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Handled::Few(ids) => ids.len(),
            Handled::Many(ids) => ids.len(),
        }
    }

    /// Forgets the ids handled before `before`; returns how many.
    fn prune(&mut self, before: Timestamp) -> usize {
        let len = self.len();
        match self {
            Handled::Few(ids) => ids.retain(|(_, at)| *at >= before),
            Handled::Many(ids) => ids.retain(|_, at| *at >= before),
        }
        len - self.len()
    }
}

/// Reads a value only to have its line loaded: a load the processor need
/// not wait for before going on to the next instance's.
fn touch<T: Copy>(value: Option<&T>) {
    std::hint::black_box(value.copied());
}

/// Hashes message ids, which are random or SHA-1 derived already: folding
/// their bytes is enough, and much cheaper than SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Applies timer changes in order to the pending timers of one instance.
pub(crate) fn apply_timer_changes(timers: &mut Vec<InstanceTimer>, changes: &[TimerChange]) {
    for change in changes {
        match change {
            TimerChange::Schedule { timer, at, id } => {
                match timers.iter_mut().find(|pending| pending.timer == *timer) {
                    Some(pending) => {
                        pending.at = *at;
                        pending.id = *id;
                    }
                    None => timers.push(InstanceTimer { timer: timer.clone(), at: *at, id: *id }),
                }
            }
            TimerChange::Cancel { timer } => timers.retain(|pending| pending.timer != *timer),
            TimerChange::Fired { timer, id } => {
                timers.retain(|pending| !(pending.timer == *timer && pending.id == *id))
            }
        }
    }
}
