//! The in-memory store: the same contract as the durable stores, kept in
//! maps. It is the default of the engine and the store of tests; clones
//! share their contents, so a test can start a second engine on the store
//! of the first, as after a restart.
//!
//! Instances and their inbox rows live in shards by the hash of the key, each
//! behind its own lock, so that workers committing different instances do not
//! wait for each other. The inbox of an instance's messages is kept in the
//! instance's shard: a message is correlated by its content, so it always
//! reaches the same instance, and that is where a redelivery is met. The
//! outbox and the dead letters, which need one order, share one more lock.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

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
    shards: Vec<Mutex<Shard>>,
    ordered: Mutex<Ordered>,
}

/// Process name -> its instances and inbox rows in this shard.
#[derive(Default)]
struct Shard(NameMap<String, Table>);

#[derive(Default)]
struct Table {
    instances: HashMap<Arc<str>, Stored>,
    /// Handled message ids and when they were handled.
    inbox: HashMap<MessageId, Timestamp, BuildHasherDefault<IdHasher>>,
}

struct Stored {
    version: u64,
    state: Body,
    data: Body,
    completed_at: Option<Timestamp>,
    timers: Vec<InstanceTimer>,
}

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
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                ordered: Mutex::default(),
            }),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // The shard only spreads instances over locks: a cheap hash does,
        // and the maps inside keep their own, hardened one.
        let mut hasher = IdHasher::default();
        hasher.write(key.as_bytes());
        lock(&self.inner.shards[(hasher.finish() >> 32) as usize % SHARDS])
    }

    fn ordered(&self) -> MutexGuard<'_, Ordered> {
        lock(&self.inner.ordered)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
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
            .map(|shard| lock(shard).0.values().map(|t| t.instances.len()).sum::<usize>())
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
                let shard = self.shard(key);
                let stored = shard.0.get(process)?.instances.get(key)?;
                Some(InstanceRecord {
                    version: stored.version,
                    state: stored.state.clone(),
                    data: stored.data.clone(),
                    completed_at: stored.completed_at,
                    timers: stored.timers.clone(),
                })
            })
            .collect();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<Vec<CommitOutcome>, StoreError>> {
        let mut outcomes = Vec::with_capacity(batch.instances.len());
        for write in batch.instances {
            let mut shard = self.shard(&write.key);
            let (outcome, outbox) = shard.write(write);
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
        for letter in batch.dead_letters {
            if let Letter::Timer(timer) = &letter.letter {
                self.shard(&timer.key).drop_timer(timer);
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
                for (key, stored) in &table.instances {
                    rows.extend(stored.timers.iter().map(|timer| TimerRow {
                        process: process.clone(),
                        key: key.to_string(),
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
                    if self.shard(&timer.key).put_timer(&timer) {
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
                let (instances, inbox) = (table.instances.len(), table.inbox.len());
                table
                    .instances
                    .retain(|_, stored| stored.completed_at.is_none_or(|at| at >= before));
                table.inbox.retain(|_, at| *at >= before);
                pruned.tombstones += (instances - table.instances.len()) as u64;
                pruned.inbox += (inbox - table.inbox.len()) as u64;
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
    fn write(&mut self, write: InstanceWrite) -> (CommitOutcome, Outbox) {
        let table = match self.0.get_mut(write.process) {
            Some(table) => table,
            None => self.0.entry(write.process.to_owned()).or_default(),
        };
        // One probe of the instance table: it is large, and each probe is
        // likely a cache miss.
        let stored = table.instances.get_mut(&write.key);
        let current = stored.as_ref().map(|s| s.version);
        if current != write.expected_version {
            return (CommitOutcome::Conflict, None);
        }
        // One probe per inbox row too: insert, and take the new rows back
        // out if one was there already.
        let mut duplicates = Vec::new();
        for id in &write.inbox {
            match table.inbox.entry(*id) {
                Entry::Occupied(_) => duplicates.push(*id),
                Entry::Vacant(row) => {
                    row.insert(write.at);
                }
            }
        }
        if !duplicates.is_empty() {
            for id in write.inbox.iter().filter(|id| !duplicates.contains(id)) {
                table.inbox.remove(id);
            }
            return (CommitOutcome::Duplicate(duplicates), None);
        }
        match stored {
            Some(stored) => {
                apply_timer_changes(&mut stored.timers, &write.timers);
                if write.completed_at.is_some() {
                    stored.timers.clear();
                }
                stored.version = write.version;
                stored.state = write.state;
                stored.data = write.data;
                stored.completed_at = write.completed_at;
            }
            None => {
                let mut timers = Vec::new();
                apply_timer_changes(&mut timers, &write.timers);
                if write.completed_at.is_some() {
                    timers.clear();
                }
                let stored = Stored {
                    version: write.version,
                    state: write.state,
                    data: write.data,
                    completed_at: write.completed_at,
                    timers,
                };
                table.instances.insert(write.key.clone(), stored);
            }
        }
        let outbox = (!write.outbox.is_empty()).then_some((write.process, write.key, write.outbox));
        (CommitOutcome::Committed { outbox: Vec::new() }, outbox)
    }

    fn drop_timer(&mut self, row: &TimerRow) {
        let stored = self
            .0
            .get_mut(&row.process)
            .and_then(|table| table.instances.get_mut(row.key.as_str()));
        if let Some(stored) = stored {
            stored.timers.retain(|timer| !(*timer.timer == *row.timer && timer.id == row.id));
        }
    }

    /// Schedules a timer of a running instance; false if there is none.
    fn put_timer(&mut self, row: &TimerRow) -> bool {
        let stored = self
            .0
            .get_mut(&row.process)
            .and_then(|table| table.instances.get_mut(row.key.as_str()));
        let Some(stored) = stored.filter(|stored| stored.completed_at.is_none()) else {
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

/// Hashes message ids, which are random or SHA-1 derived already: folding
/// their bytes is enough, and much cheaper than SipHash on the hot path.
/// Also picks the shard of a key.
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
