//! The in-memory store: the same contract as the durable stores, kept in
//! maps. It is the default of the engine and the store of tests; clones
//! share their contents, so a test can start a second engine on the store
//! of the first, as after a restart.
//!
//! Instances live in shards by the hash of the key, each behind its own
//! lock, and each instance behind a lock of its own, so that workers
//! committing different instances do not wait for each other. The store
//! hands the engine a [`Slot`] for each instance, the instance's own
//! handle: a write that gives it back reaches the instance without hashing
//! its key or probing a table. Each instance keeps its own inbox, the ids of the messages it
//! handled: a message is correlated by its content, so it always reaches the
//! same instance, and that is where a redelivery is met. Kept there, the
//! inbox is read and written with the instance, instead of in one table of
//! every message id that grows with the traffic. The outbox and the dead
//! letters, which need one order, share one more lock. The inboxes of
//! command handlers and subscribers, which have no instance to keep them,
//! are one map by scope behind a lock of their own.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, InstanceTimer, InstanceWrite, Letter,
    OutboxRow, Pruned, Replayed, Slot, Store, StoreError, TimerChange, TimerRow,
};
use crate::clock::BoxFuture;
use crate::message::{Body, Envelope, MessageId, NameMap, Timestamp};

/// The number the next store takes.
static STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many shards instances are spread over.
const SHARDS: usize = 64;

/// A store in memory. Cheap to clone; clones share their contents.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// This store's number, unique in the program: a slot carries it. (An
    /// address could be a dropped store's, whose slots must not match.)
    id: u64,
    /// Hashes keys, which come from messages: seeded, as std's maps are.
    /// One hash per call picks the shard and finds the instance in it.
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    ordered: Mutex<Ordered>,
    handlers: Mutex<Handlers>,
}

/// The inboxes of command handlers and subscribers: scope -> the ids
/// handled there, and when. Keyed by scope first, so that a lookup borrows
/// the scope rather than building a key of it.
#[derive(Default)]
struct Handlers(NameMap<String, HashMap<MessageId, Timestamp, BuildHasherDefault<IdHasher>>>);

/// Process name -> its instances in this shard.
#[derive(Default)]
struct Shard(NameMap<String, HashTable<Arc<Entry>>>);

/// One instance: found by its key in its shard's table, or reached through
/// the [`Slot`] the engine keeps. Its lock is taken after its shard's, when
/// both are. Line-aligned, with what a write reads and changes first.
#[repr(C, align(64))]
struct Entry {
    /// The store it belongs to: a slot of another store is not written
    /// through. Read without a lock, it is what brings the entry's first
    /// line into the cache ahead of a write.
    owner: u64,
    /// The instance's process and key: a slot given with another
    /// instance's write is not written through either.
    key: Arc<str>,
    process: &'static str,
    stored: Mutex<Stored>,
}

#[repr(C)]
struct Stored {
    version: u64,
    /// [`RUNNING`] until the instance completes.
    completed_at: Timestamp,
    inbox: Handled,
    state: Body,
    data: Body,
    timers: Vec<InstanceTimer>,
    /// Pruned: no longer in its shard's table, so a slot finds no instance.
    removed: bool,
}

/// The completion time of an instance that has not completed.
const RUNNING: Timestamp = Timestamp(u64::MAX);

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
                id: STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                ordered: Mutex::default(),
                handlers: Mutex::default(),
            }),
        }
    }

    /// The hash of `key`, and its shard, locked.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.inner.hasher.hash_one(key);
        (hash, lock(&self.inner.shards[shard_of(hash)]))
    }

    /// Tells this store's entries from another's.
    fn id(&self) -> u64 {
        self.inner.id
    }

    /// The entry a write's slot leads to, if it is this store's entry of
    /// the write's instance.
    fn entry<'a>(&self, slot: Option<&'a Slot>, write: &InstanceWrite) -> Option<&'a Entry> {
        slot?.get::<Entry>().filter(|entry| {
            // The key is nearly always the very one the entry holds: `Arc`'s
            // equality compares the pointers first.
            entry.owner == self.id() && entry.key == write.key && entry.process == write.process
        })
    }

    fn ordered(&self) -> MutexGuard<'_, Ordered> {
        lock(&self.inner.ordered)
    }

    /// Brings the instances a batch writes into the processor's cache: each
    /// is likely a miss, and a lock is a barrier the processor cannot look
    /// past. Touched one after the other here, with nothing between them
    /// that must wait for the one before, they are under way at the same
    /// time, where the writes, each under its lock, would wait for one miss
    /// after the other. Writes with a slot reach their instance directly;
    /// the others are probed for one shard at a time, under its lock.
    fn warm(&self, writes: &[InstanceWrite]) -> Vec<u64> {
        let mut hashes = vec![0; writes.len()];
        let mut probe = Vec::new();
        for (index, write) in writes.iter().enumerate() {
            match self.entry(write.slot.as_ref(), write) {
                Some(entry) => entry.touch(),
                None => {
                    hashes[index] = self.inner.hasher.hash_one(&*write.key);
                    probe.push((index, hashes[index]));
                }
            }
        }
        probe.sort_unstable_by_key(|&(_, hash)| shard_of(hash));
        for run in probe.chunk_by(|a, b| shard_of(a.1) == shard_of(b.1)) {
            let shard = lock(&self.inner.shards[shard_of(run[0].1)]);
            for &(index, hash) in run {
                let write = &writes[index];
                if let Some(entry) = shard.find(hash, write.process, &write.key) {
                    entry.touch();
                }
            }
        }
        hashes
    }

    /// Applies one write under its instance's lock, through its slot or by
    /// its key; returns its outcome. It takes what it keeps out of `write`
    /// (a write is large: moving it costs more than the rest) and leaves
    /// what it replaced there, to be dropped with the batch.
    fn write(&self, hash: u64, write: &mut InstanceWrite) -> CommitOutcome {
        let slot = write.slot.take();
        if let Some(entry) = self.entry(slot.as_ref(), write) {
            let stored = lock(&entry.stored);
            if !stored.removed {
                return with_slot(self.apply(stored, write), slot);
            }
        }
        // No slot, or its instance was pruned: as the key finds it.
        let hash = if slot.is_some() { self.inner.hasher.hash_one(&*write.key) } else { hash };
        let mut shard = lock(&self.inner.shards[shard_of(hash)]);
        if let Some(entry) = shard.find(hash, write.process, &write.key) {
            let slot = Slot::new(entry.clone());
            return with_slot(self.apply(lock(&entry.stored), write), Some(slot));
        }
        if write.expected_version.is_some() {
            return CommitOutcome::Conflict;
        }
        if let Some(duplicates) = duplicates(None, write) {
            return CommitOutcome::Duplicate(duplicates);
        }
        let entry = Arc::new(Entry {
            owner: self.id(),
            key: write.key.clone(),
            process: write.process,
            stored: Mutex::new(Stored {
                version: write.version,
                completed_at: RUNNING,
                inbox: Handled::Few(Vec::new()),
                state: write.state.clone(),
                data: write.data.clone(),
                timers: Vec::new(),
                removed: false,
            }),
        });
        let hasher = &self.inner.hasher;
        let table = shard.table(write.process);
        table.insert_unique(hash, entry.clone(), |entry| hasher.hash_one(&*entry.key));
        // Under the shard's lock still: nobody else can see it yet, but its
        // outbox rows must take their numbers before another write's.
        let outcome = self.apply_checked(lock(&entry.stored), write);
        with_slot(outcome, Some(Slot::new(entry)))
    }

    /// Checks and applies a write to its instance, all or nothing: every
    /// check comes before the first change. The outbox rows take their
    /// sequence numbers while the instance is still locked, so that an
    /// instance's rows keep its decision order.
    fn apply(&self, stored: MutexGuard<'_, Stored>, write: &mut InstanceWrite) -> CommitOutcome {
        if write.expected_version != Some(stored.version) {
            return CommitOutcome::Conflict;
        }
        if let Some(duplicates) = duplicates(Some(&stored.inbox), write) {
            return CommitOutcome::Duplicate(duplicates);
        }
        self.apply_checked(stored, write)
    }

    /// Applies a write that passed its checks.
    fn apply_checked(
        &self,
        mut stored: MutexGuard<'_, Stored>,
        write: &mut InstanceWrite,
    ) -> CommitOutcome {
        stored.version = write.version;
        std::mem::swap(&mut stored.state, &mut write.state);
        std::mem::swap(&mut stored.data, &mut write.data);
        stored.completed_at = write.completed_at.unwrap_or(RUNNING);
        for id in &write.inbox {
            stored.inbox.insert(*id, write.at);
        }
        apply_timer_changes(&mut stored.timers, &write.timers);
        if write.completed_at.is_some() {
            stored.timers.clear();
        }
        let outbox = if write.outbox.is_empty() {
            Vec::new()
        } else {
            self.ordered().append(write.process, &write.key, std::mem::take(&mut write.outbox))
        };
        CommitOutcome::Committed { outbox, slot: None }
    }
}

/// A committed outcome, with the slot of its instance.
fn with_slot(mut outcome: CommitOutcome, handle: Option<Slot>) -> CommitOutcome {
    if let CommitOutcome::Committed { slot, .. } = &mut outcome {
        *slot = handle;
    }
    outcome
}

/// The ids of a write's inbox that `inbox`, or the write itself, has
/// already: `None` if there are none.
fn duplicates(inbox: Option<&Handled>, write: &InstanceWrite) -> Option<Vec<MessageId>> {
    let duplicate = |(n, id): &(usize, &MessageId)| {
        inbox.is_some_and(|inbox| inbox.contains(**id)) || write.inbox[..*n].contains(id)
    };
    write
        .inbox
        .iter()
        .enumerate()
        .any(|pair| duplicate(&pair))
        .then(|| write.inbox.iter().enumerate().filter(duplicate).map(|(_, id)| *id).collect())
}

impl Entry {
    /// Reads the entry only to have its first line loaded: without taking
    /// its lock, which would wait for it.
    fn touch(&self) {
        std::hint::black_box(self.owner);
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
                let entry = shard.find(hash, process, key)?;
                let stored = lock(&entry.stored);
                Some(InstanceRecord {
                    version: stored.version,
                    state: stored.state.clone(),
                    data: stored.data.clone(),
                    completed_at: stored.completed_at(),
                    timers: stored.timers.clone(),
                    slot: Some(Slot::new(entry.clone())),
                })
            })
            .collect();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let hashes = self.warm(&batch.instances);
        let outcomes = batch
            .instances
            .iter_mut()
            .zip(hashes)
            .map(|(write, hash)| self.write(hash, write))
            .collect();
        batch.instances.clear();
        for letter in batch.dead_letters.drain(..) {
            if let Letter::Timer(timer) = &letter.letter {
                let (hash, shard) = self.shard(&timer.key);
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
                for entry in table {
                    let stored = lock(&entry.stored);
                    rows.extend(stored.timers.iter().map(|timer| TimerRow {
                        process: process.clone(),
                        key: entry.key.to_string(),
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
                    let (hash, shard) = self.shard(&timer.key);
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
                table.retain(|entry| {
                    let mut stored = lock(&entry.stored);
                    if stored.completed_at().is_some_and(|at| at < before) {
                        pruned.tombstones += 1;
                        pruned.inbox += stored.inbox.len() as u64;
                        stored.removed = true;
                        return false;
                    }
                    pruned.inbox += stored.inbox.prune(before) as u64;
                    true
                });
            }
        }
        pruned.inbox += lock(&self.inner.handlers).prune(before);
        Box::pin(std::future::ready(Ok(pruned)))
    }

    fn handled(&self, scope: &str, id: MessageId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let handlers = lock(&self.inner.handlers);
        let handled = handlers.0.get(scope).is_some_and(|ids| ids.contains_key(&id));
        Box::pin(std::future::ready(Ok(handled)))
    }

    fn mark_handled(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let inserted = lock(&self.inner.handlers).insert(scope, id, at);
        Box::pin(std::future::ready(Ok(inserted)))
    }
}

impl Handlers {
    /// Records `id` in `scope`; false if it was there already.
    fn insert(&mut self, scope: &str, id: MessageId, at: Timestamp) -> bool {
        // The scope's name is copied only the first time it is seen.
        if !self.0.contains_key(scope) {
            self.0.insert(scope.to_owned(), HashMap::default());
        }
        let ids = self.0.get_mut(scope).expect("just inserted");
        match ids.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(at);
                true
            }
        }
    }

    /// Forgets the ids handled before `before`, and scopes left empty;
    /// returns how many ids.
    fn prune(&mut self, before: Timestamp) -> u64 {
        let mut pruned = 0;
        self.0.retain(|_, ids| {
            let len = ids.len();
            ids.retain(|_, at| *at >= before);
            pruned += (len - ids.len()) as u64;
            !ids.is_empty()
        });
        pruned
    }
}

impl Shard {
    fn find(&self, hash: u64, process: &str, key: &str) -> Option<&Arc<Entry>> {
        // Most often the very key the store holds: `Arc`'s equality
        // compares the pointers first.
        self.0.get(process)?.find(hash, |entry| *entry.key == *key)
    }

    /// The instances of `process` in this shard.
    fn table(&mut self, process: &str) -> &mut HashTable<Arc<Entry>> {
        match self.0.get_mut(process) {
            Some(_) => self.0.get_mut(process).expect("just found"),
            None => self.0.entry(process.to_owned()).or_default(),
        }
    }

    fn drop_timer(&self, hash: u64, row: &TimerRow) {
        if let Some(entry) = self.find(hash, &row.process, &row.key) {
            let mut stored = lock(&entry.stored);
            stored.timers.retain(|timer| !(*timer.timer == *row.timer && timer.id == row.id));
        }
    }

    /// Schedules a timer of a running instance; false if there is none.
    fn put_timer(&self, hash: u64, row: &TimerRow) -> bool {
        let Some(entry) = self.find(hash, &row.process, &row.key) else { return false };
        let mut stored = lock(&entry.stored);
        if stored.completed_at().is_some() {
            return false;
        }
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
