//! The in-memory store: the same contract as the durable stores, kept in a
//! map behind one lock. It is the default of the engine and the store of
//! tests; clones share their contents, so a test can start a second engine
//! on the store of the first, as after a restart.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, InstanceTimer, InstanceWrite, Letter,
    OutboxRow, Pruned, Replayed, Store, StoreError, TimerChange, TimerRow,
};
use crate::clock::BoxFuture;
use crate::message::{Body, MessageId, Timestamp};

/// A store in memory. Cheap to clone; clones share their contents.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    processes: HashMap<String, Table>,
    outbox: BTreeMap<u64, OutboxRow>,
    next_sequence: u64,
    dead_letters: BTreeMap<u64, DeadLetter>,
    next_dead_letter: u64,
}

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

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave a half-applied write:
        // every write checks first and changes after. So a poisoned lock
        // still guards consistent contents.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        let instances: usize = inner.processes.values().map(|t| t.instances.len()).sum();
        f.debug_struct("MemoryStore")
            .field("instances", &instances)
            .field("outbox", &inner.outbox.len())
            .field("dead_letters", &inner.dead_letters.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        let inner = self.lock();
        let table = inner.processes.get(process);
        let records = keys
            .iter()
            .map(|key| {
                let stored = table?.instances.get(key)?;
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
        let mut inner = self.lock();
        let outcomes = batch.instances.into_iter().map(|write| inner.write(write)).collect();
        for letter in batch.dead_letters {
            if let Letter::Timer(timer) = &letter.letter {
                inner.drop_timer(timer);
            }
            inner.next_dead_letter += 1;
            let id = inner.next_dead_letter;
            inner.dead_letters.insert(
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
        let mut inner = self.lock();
        for sequence in sequences {
            inner.outbox.remove(&sequence);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        let rows = self.lock().outbox.values().cloned().collect();
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        let inner = self.lock();
        let mut rows = Vec::new();
        for (process, table) in &inner.processes {
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
        rows.sort_by_key(|row| (row.at, row.id));
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        let letters = self.lock().dead_letters.values().cloned().collect();
        Box::pin(std::future::ready(Ok(letters)))
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        let mut inner = self.lock();
        let mut replayed = Replayed::default();
        for id in ids {
            let Some(letter) = inner.dead_letters.remove(&id) else { continue };
            match letter.letter {
                Letter::Message(message) => {
                    inner.next_sequence += 1;
                    let row = OutboxRow {
                        sequence: inner.next_sequence,
                        process: letter.process.unwrap_or_default(),
                        key: String::new(),
                        message,
                    };
                    inner.outbox.insert(row.sequence, row.clone());
                    replayed.messages.push(row);
                }
                Letter::Timer(mut timer) => {
                    timer.at = now;
                    // A timer of an instance that has completed since has
                    // nothing left to do; replaying it only clears the letter.
                    if inner.put_timer(&timer) {
                        replayed.timers.push(timer);
                    }
                }
            }
        }
        Box::pin(std::future::ready(Ok(replayed)))
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        let mut inner = self.lock();
        let mut pruned = Pruned::default();
        for table in inner.processes.values_mut() {
            let (instances, inbox) = (table.instances.len(), table.inbox.len());
            table.instances.retain(|_, stored| stored.completed_at.is_none_or(|at| at >= before));
            table.inbox.retain(|_, at| *at >= before);
            pruned.tombstones += (instances - table.instances.len()) as u64;
            pruned.inbox += (inbox - table.inbox.len()) as u64;
        }
        Box::pin(std::future::ready(Ok(pruned)))
    }
}

impl Inner {
    /// Applies one instance write, all or nothing: every check comes before
    /// the first change.
    fn write(&mut self, write: InstanceWrite) -> CommitOutcome {
        let table = match self.processes.get_mut(write.process) {
            Some(table) => table,
            None => self.processes.entry(write.process.to_owned()).or_default(),
        };
        let duplicates: Vec<MessageId> =
            write.inbox.iter().copied().filter(|id| table.inbox.contains_key(id)).collect();
        if !duplicates.is_empty() {
            return CommitOutcome::Duplicate(duplicates);
        }
        // One probe of the instance table: it is large, and each probe is
        // likely a cache miss.
        let stored = table.instances.get_mut(&write.key);
        let current = stored.as_ref().map(|s| s.version);
        if current != write.expected_version {
            return CommitOutcome::Conflict;
        }
        for id in &write.inbox {
            table.inbox.insert(*id, write.at);
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
                table.instances.insert(
                    write.key.clone(),
                    Stored {
                        version: write.version,
                        state: write.state,
                        data: write.data,
                        completed_at: write.completed_at,
                        timers,
                    },
                );
            }
        }
        let mut sequences = Vec::with_capacity(write.outbox.len());
        for message in write.outbox {
            self.next_sequence += 1;
            sequences.push(self.next_sequence);
            self.outbox.insert(
                self.next_sequence,
                OutboxRow {
                    sequence: self.next_sequence,
                    process: write.process.to_owned(),
                    key: write.key.to_string(),
                    message,
                },
            );
        }
        CommitOutcome::Committed { outbox: sequences }
    }

    fn drop_timer(&mut self, row: &TimerRow) {
        let stored = self
            .processes
            .get_mut(&row.process)
            .and_then(|table| table.instances.get_mut(row.key.as_str()));
        if let Some(stored) = stored {
            stored.timers.retain(|timer| !(*timer.timer == *row.timer && timer.id == row.id));
        }
    }

    /// Schedules a timer of a running instance; false if there is none.
    fn put_timer(&mut self, row: &TimerRow) -> bool {
        let stored = self
            .processes
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

/// Hashes message ids, which are random or SHA-1 derived already: folding
/// their bytes is enough, and much cheaper than SipHash on the hot path.
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
