//! The workers of one process: each owns a shard of its instances (by the
//! hash of the key), so one instance is never handled twice at once, and
//! keeps them in a cache in front of the store.
//!
//! A worker takes every message waiting in its queue (up to the batch
//! size), groups them by instance, decides each in arrival order, and
//! commits all the instances in one store batch. Each instance commits all
//! or nothing: if its version moved (another node) or one of its messages
//! was handled before (a redelivery), nothing of it is applied and its
//! messages are decided again on what the store holds. Only after the commit
//! are messages acknowledged, outbox rows handed to the relay and timers
//! indexed. `decide` is pure, so deciding again gives the same decisions.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use hashbrown::HashTable;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn};

use super::Shared;
use super::handlers::panic_message;
use super::health::Access;
use super::relay::Pending;
use crate::bus::Ack;
use crate::message::{Body, Envelope, MessageId, MessageKind, Timestamp};
use crate::process::{Context, Outcome, Outgoing, Process, TimerOp};
use crate::store::{
    Batch, CommitOutcome, Inbox, InstanceRecord, InstanceWrite, Letter, NewDeadLetter, Slot,
    StoreError, TimerChange, TimerRow,
};

/// A process with its type erased, as the engine holds it.
pub(super) trait Runner: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The wire names of the events it takes.
    fn inputs(&self) -> Vec<&'static str>;
    fn as_any(&self) -> &dyn Any;
    /// Decodes and correlates a delivered event and queues it on the worker
    /// of its instance; one that cannot be decoded goes to the dead letters.
    fn route(&self, shared: &Arc<Shared>, envelope: Envelope, ack: Ack);
    /// Queues an event published inside this program, taken typed, with no
    /// body: false, and nothing queued, if the process cannot take it so.
    fn take(
        &self,
        shared: &Arc<Shared>,
        event: &dyn Any,
        name: &'static str,
        id: MessageId,
        time: Timestamp,
    ) -> bool;
    /// Queues a due timer on the worker of its instance.
    fn fire(&self, shared: &Arc<Shared>, timer: TimerRow);
}

type Spawn = Box<dyn FnOnce(Weak<Shared>, watch::Receiver<bool>) + Send>;

/// How the builder starts a process it only knows by type.
pub(super) struct Starter {
    pub(super) type_id: TypeId,
    pub(super) name: &'static str,
    pub(super) start: fn(usize, usize) -> (Arc<dyn Runner>, Spawn),
}

impl Starter {
    pub(super) fn of<P: Process>() -> Starter {
        Starter { type_id: TypeId::of::<P>(), name: P::NAME, start: start::<P> }
    }
}

/// Creates the runner of `P` and a function that spawns its workers.
fn start<P: Process>(index: usize, shards: usize) -> (Arc<dyn Runner>, Spawn) {
    let mut senders = Vec::with_capacity(shards);
    let mut receivers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (sender, receiver) = mpsc::unbounded_channel();
        senders.push(sender);
        receivers.push(receiver);
    }
    let runner = ProcessRunner::<P> {
        index,
        senders,
        timer_scope: format!("{}#timers", P::NAME),
        hasher: RandomState::new(),
    };
    let spawn: Spawn = Box::new(move |shared, ready| {
        for jobs in receivers {
            tokio::spawn(work::<P>(shared.clone(), index, shards, jobs, ready.clone()));
        }
    });
    (Arc::new(runner), spawn)
}

pub(super) struct ProcessRunner<P: Process> {
    index: usize,
    senders: Vec<mpsc::UnboundedSender<Queued<P>>>,
    /// The scope timer ids are derived in, apart from output ids.
    timer_scope: String,
    /// Hashes each message's instance key once, when it is routed; the
    /// shard, the batch's groups and the worker's cache all use that hash.
    /// Seeded per engine, as std's maps are, because keys come from messages.
    hasher: RandomState,
}

/// A job on its way to the worker of its instance.
struct Queued<P: Process> {
    key: P::Key,
    hash: u64,
    job: Job<P>,
}

enum Job<P: Process> {
    Input {
        input: P::Input,
        /// What the worker reads of its message.
        id: MessageId,
        time: Timestamp,
        name: &'static str,
        /// The message as delivered, with its ack; `None` when the event was
        /// taken typed ([`Route::take`](crate::process::Route)), with nothing
        /// to settle: then the message is made again from the input if it
        /// must go to the dead letters. Boxed: an envelope and an ack are
        /// large, and a job is moved through a channel and into the batch.
        delivery: Option<Box<Delivery>>,
    },
    Timer {
        timer: P::Timer,
        row: TimerRow,
    },
}

/// A message delivered by a bus, as a job keeps it.
struct Delivery {
    /// The message itself, for the dead letters.
    envelope: Envelope,
    /// `None` when settling it would tell only this engine (a message it
    /// published itself, or one nobody waits for): this engine records what
    /// it cannot handle itself.
    ack: Option<Ack>,
}

/// An instance as a worker keeps it.
struct Cached<P: Process> {
    id: P::Key,
    hash: u64,
    /// The key as JSON, as the store knows it.
    key: Arc<str>,
    instance: Instance<P>,
    /// The store's handle to the instance, given back with its next write.
    slot: Option<Slot>,
    /// Written since the cache last made room: kept the next time it does.
    used: bool,
}

/// What deciding changes of an instance: a group's decisions work on a copy
/// of it, which replaces the cached one in place once committed.
struct Instance<P: Process> {
    version: u64,
    state: P::State,
    /// Shared with the store's copy: a decision that leaves the data alone
    /// copies nothing, and one that changes it allocates it once.
    data: Arc<P::Data>,
    completed: bool,
    timers: Vec<PendingTimer<P>>,
}

/// The lists a worker needs for each batch, kept so as not to allocate them again.
struct Scratch<P: Process> {
    groups: Vec<Group>,
    again: Vec<Group>,
    by_key: HashTable<usize>,
    plans: Vec<Plan<P>>,
    /// The store takes the writes out and leaves the lists' room: a full
    /// batch's writes fill a list too large for the allocator to keep, which
    /// it would otherwise hand back to the system after every batch.
    batch: Batch,
    /// The first jobs of the groups whose commit applied.
    done: Vec<usize>,
}

/// The instances a worker keeps, found by the hash their messages carry.
struct Cache<P: Process>(HashTable<Cached<P>>);

struct PendingTimer<P: Process> {
    timer: P::Timer,
    json: Arc<str>,
    at: Timestamp,
    id: MessageId,
}

/// The jobs of a batch, where they were received: a job is large (its
/// envelope, its ack), so groups chain them by position instead of moving them.
struct Jobs<P: Process> {
    queued: Vec<Queued<P>>,
    links: Vec<Link>,
}

#[derive(Clone, Copy)]
struct Link {
    /// The next job of the same instance, or [`END`].
    next: usize,
    /// Acknowledged (handled or dead-lettered): skipped from then on.
    settled: bool,
}

const END: usize = usize::MAX;

/// The messages of one batch for one instance.
struct Group {
    hash: u64,
    /// The position of its first job, which holds its key, and of its last.
    first: usize,
    last: usize,
    /// The key as JSON, once known.
    json: Option<Arc<str>>,
    /// Whether the store was asked for the instance in this round.
    loaded: bool,
    /// Message ids the store says were handled already.
    duplicates: Vec<MessageId>,
    /// Writes the store refused for a reason of their own.
    failures: u32,
    /// Writes in a row that met another version than they were decided on.
    conflicts: u32,
    /// Set when the messages cannot be handled: they go to the dead letters.
    doomed: Option<String>,
}

/// What deciding a group's messages came to.
struct Plan<P: Process> {
    /// Whether the plan put a write in the batch: writes are in the batch
    /// in the order of their plans, and the outcomes in that of the writes.
    writes: bool,
    next: Option<Instance<P>>,
    /// The key as JSON, kept only where applying the plan needs it: for
    /// timers, for the relay, or to cache an instance that was not.
    key: Option<Arc<str>>,
    outbox: Vec<Envelope>,
    timers: Vec<TimerChange>,
    /// Messages that went to the dead letters, by position in the batch.
    dead: Vec<(usize, NewDeadLetter)>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    handled: u64,
    ignored: u64,
    ignored_at_start: u64,
    after_completion: u64,
    duplicates: u64,
    timers_fired: u64,
}

impl<P: Process> Runner for ProcessRunner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn inputs(&self) -> Vec<&'static str> {
        P::routes().iter().map(|r| r.event).collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn route(&self, shared: &Arc<Shared>, envelope: Envelope, ack: Ack) {
        let Some(route) = P::routes().iter().find(|r| r.event == envelope.name) else {
            let reason = format!("process `{}` does not take `{}`", P::NAME, envelope.name);
            shared.dead_letter(Letter::Message(envelope), Some(P::NAME), reason, Some(ack));
            return;
        };
        match (route.decode)(&envelope) {
            Ok((key, input)) => {
                let (id, time, name) = (envelope.id, envelope.time, route.event);
                let delivery =
                    Some(Box::new(Delivery { envelope, ack: ack.unless_only(shared.number) }));
                self.enqueue(shared, key, Job::Input { input, id, time, name, delivery });
            }
            Err(error) => {
                let reason =
                    format!("process `{}` could not decode `{}`: {error}", P::NAME, envelope.name);
                shared.dead_letter(Letter::Message(envelope), Some(P::NAME), reason, Some(ack));
            }
        }
    }

    fn take(
        &self,
        shared: &Arc<Shared>,
        event: &dyn Any,
        name: &'static str,
        id: MessageId,
        time: Timestamp,
    ) -> bool {
        let route = P::routes().iter().find(|route| route.event == name);
        let Some((key, input)) = route.and_then(|route| (route.take)(event)) else {
            return false;
        };
        let job = Job::Input { input, id, time, name, delivery: None };
        self.enqueue(shared, key, job);
        true
    }

    fn fire(&self, shared: &Arc<Shared>, row: TimerRow) {
        let key = serde_json::from_str::<P::Key>(&row.key);
        let timer = serde_json::from_str::<P::Timer>(&row.timer);
        match (key, timer) {
            (Ok(key), Ok(timer)) => self.enqueue(shared, key, Job::Timer { timer, row }),
            (Err(error), _) | (_, Err(error)) => {
                let reason = format!("the stored timer cannot be read: {error}");
                shared.dead_letter(Letter::Timer(row), Some(P::NAME), reason, None);
            }
        }
    }
}

impl<P: Process> ProcessRunner<P> {
    fn enqueue(&self, shared: &Shared, key: P::Key, job: Job<P>) {
        let hash = self.hasher.hash_one(&key);
        // The high bits pick the shard: the tables index by the low ones.
        let shard = ((hash >> 32) % self.senders.len() as u64) as usize;
        shared.start(1);
        if self.senders[shard].send(Queued { key, hash, job }).is_err() {
            // The workers stop only with the engine: the job's ack is dropped
            // with it, which asks for a redelivery.
            shared.finish(1);
        }
    }
}

/// One worker: takes what is queued, handles it as one batch, repeats.
async fn work<P: Process>(
    weak: Weak<Shared>,
    index: usize,
    shards: usize,
    mut receiver: mpsc::UnboundedReceiver<Queued<P>>,
    mut ready: watch::Receiver<bool>,
) {
    if ready.wait_for(|ready| *ready).await.is_err() {
        return;
    }
    let mut cache = Cache::<P>(HashTable::new());
    let mut states = States::default();
    // Kept from batch to batch, so that a busy worker allocates no lists:
    // a full batch's lists are large, and allocating and freeing them each
    // time has the allocator give memory back to the system and fault it in
    // again.
    let mut jobs = Jobs { queued: Vec::new(), links: Vec::new() };
    let mut scratch = Scratch {
        groups: Vec::new(),
        again: Vec::new(),
        by_key: HashTable::new(),
        plans: Vec::new(),
        batch: Batch::default(),
        done: Vec::new(),
    };
    let Some((max_batch, capacity)) = weak.upgrade().map(|shared| {
        (shared.config.max_batch, shared.config.cache_capacity.div_ceil(shards.max(1)))
    }) else {
        return;
    };
    // What this worker last added to the engine's count of cached instances.
    let mut reported = 0;
    loop {
        // Waits for one job, then takes every one queued, up to the batch size.
        if receiver.recv_many(&mut jobs.queued, max_batch).await == 0 {
            return;
        }
        let Some(shared) = weak.upgrade() else { return };
        let count = jobs.queued.len();
        let Some(runner) = shared.processes[index].as_any().downcast_ref::<ProcessRunner<P>>()
        else {
            return;
        };
        handle_batch(&shared, runner, &mut cache, &mut states, &mut jobs, &mut scratch).await;
        cache.trim(capacity);
        let held = cache.0.len() as u64;
        if held != reported {
            // Added before the old level is taken away: never below zero.
            shared.counters.cached.fetch_add(held, Ordering::Relaxed);
            shared.counters.cached.fetch_sub(reported, Ordering::Relaxed);
            reported = held;
        }
        // Every ack is settled by now, unless the batch was given up; then
        // dropping them asks for the messages again.
        jobs.queued.clear();
        shared.finish(count);
    }
}

/// Decides and commits a batch, deciding again the instances whose commit
/// did not apply, until every message is settled.
///
/// A commit the store fails as a whole is an outage, whatever the error:
/// no message of the batch is at fault, so the batch is decided and tried
/// again, with backoff, for as long as the outage lasts, and nothing goes
/// to the dead letters for it. Only a write the store refuses for a reason
/// of its own ([`CommitOutcome::Failed`]) is, after the retry policy's
/// attempts. A conflict is decided again on the stored instance, for as
/// long as it takes.
async fn handle_batch<P: Process>(
    shared: &Shared,
    runner: &ProcessRunner<P>,
    cache: &mut Cache<P>,
    states: &mut States<P>,
    jobs: &mut Jobs<P>,
    scratch: &mut Scratch<P>,
) {
    let mut groups = std::mem::take(&mut scratch.groups);
    let mut again = std::mem::take(&mut scratch.again);
    let mut plans = std::mem::take(&mut scratch.plans);
    group(jobs, &mut groups, &mut scratch.by_key);
    // Failed commits in a row: the backoff of the outage.
    let mut outage = 0;
    while !groups.is_empty() {
        load(shared, cache, jobs, &mut groups).await;
        // One reading of the clock for the round: the time inbox rows,
        // completions and dead letters are stamped with.
        let now = shared.clock.now();
        decide(now, runner, states, cache, jobs, &groups, &mut plans, &mut scratch.batch);
        let outcomes = match commit(shared, &mut scratch.batch).await {
            Ok(outcomes) => outcomes,
            Err(StoreError::Closed) => {
                // The store is gone for good: the acks, dropped with the
                // jobs, ask for the messages again; timers stay stored.
                warn!("the store has shut down; leaving the batch to be delivered again");
                break;
            }
            Err(error) => {
                outage += 1;
                shared.store_failed(Access::Write, "commit a batch", &error);
                debug!(%error, failures = outage, "the store failed the batch; trying it again");
                tokio::time::sleep(shared.config.retry.backoff(outage)).await;
                continue;
            }
        };
        outage = 0;
        shared.store_answered(Access::Write);
        let round = Round { groups: &mut groups, plans: &mut plans, again: &mut again };
        let conflicts = settle(shared, runner, cache, jobs, round, outcomes, &mut scratch.done);
        std::mem::swap(&mut groups, &mut again);
        if conflicts > CONFLICTS_BEFORE_BACKOFF {
            // Another engine keeps writing this instance first: let it
            // finish before deciding again.
            let wait = shared.config.retry.backoff(conflicts - CONFLICTS_BEFORE_BACKOFF);
            tokio::time::sleep(wait).await;
        }
    }
    groups.clear();
    again.clear();
    (scratch.groups, scratch.again, scratch.plans) = (groups, again, plans);
}

/// Conflicts in a row an instance is decided again at once after; past
/// them, its worker waits before deciding again.
const CONFLICTS_BEFORE_BACKOFF: u32 = 2;

/// Plans every group of the round on what the cache holds, filling the
/// store batch with their writes and dead letters.
#[allow(clippy::too_many_arguments)]
fn decide<P: Process>(
    now: Timestamp,
    runner: &ProcessRunner<P>,
    states: &mut States<P>,
    cache: &mut Cache<P>,
    jobs: &Jobs<P>,
    groups: &[Group],
    plans: &mut Vec<Plan<P>>,
    batch: &mut Batch,
) {
    plans.clear();
    batch.instances.clear();
    batch.dead_letters.clear();
    // Writes are large and most groups write: growing the list one
    // doubling at a time would copy them over and over.
    batch.instances.reserve(groups.len());
    for group in groups {
        let cached = cache.get_mut(group.hash, jobs.key(group));
        let plan = plan(now, runner, states, cached, group, jobs, &mut batch.instances);
        batch.dead_letters.extend(plan.dead.iter().map(|(_, letter)| letter.clone()));
        plans.push(plan);
    }
}

/// Commits the round's batch, if it holds anything, and counts its dead
/// letters once they are stored.
async fn commit(shared: &Shared, batch: &mut Batch) -> Result<Vec<CommitOutcome>, StoreError> {
    if batch.instances.is_empty() && batch.dead_letters.is_empty() {
        return Ok(Vec::new());
    }
    let dead_letters = batch.dead_letters.len() as u64;
    let committed = (
        batch.instances.len(),
        batch.instances.iter().map(|w| w.outbox.len()).sum::<usize>(),
        batch.instances.iter().map(|w| w.timers.len()).sum::<usize>(),
    );
    let outcomes = shared.store.commit(batch).await?;
    shared.counters.dead_lettered.fetch_add(dead_letters, Ordering::Relaxed);
    if committed.0 > 0 {
        // Under its own target, so that a program can show the outbox at
        // work without the rest of the engine's debugging.
        info!(
            target: "switchyard::outbox",
            "commit: {} instance(s), their inbox rows, {} outbox row(s), {} timer change(s), in one transaction",
            committed.0, committed.1, committed.2
        );
    }
    Ok(outcomes)
}

/// The lists of one round: its groups and their plans, drained as they
/// settle, and the groups to decide again.
struct Round<'a, P: Process> {
    groups: &'a mut Vec<Group>,
    plans: &'a mut Vec<Plan<P>>,
    again: &'a mut Vec<Group>,
}

/// After a commit: applies what was committed, settles its messages and
/// those that went to the dead letters, and puts the groups whose write
/// did not apply in `again`. Returns the most conflicts in a row of a
/// group that goes again.
fn settle<P: Process>(
    shared: &Shared,
    runner: &ProcessRunner<P>,
    cache: &mut Cache<P>,
    jobs: &mut Jobs<P>,
    round: Round<'_, P>,
    outcomes: Vec<CommitOutcome>,
    done: &mut Vec<usize>,
) -> u32 {
    // Added to the engine's counters once per round: the two workers
    // adding to them for every message would pass their cache line back and
    // forth.
    let mut totals = Counts::default();
    let mut conflicts = 0;
    let mut outcomes = outcomes.into_iter();
    done.clear();
    for (mut group, plan) in round.groups.drain(..).zip(round.plans.drain(..)) {
        let outcome = if plan.writes { outcomes.next() } else { None };
        // Dead letters were committed with the batch, whatever became of
        // the instance: those messages are settled.
        for (index, letter) in &plan.dead {
            jobs.settle(*index, Some(&letter.reason));
        }
        let (sequences, slot) = match outcome {
            None => (Vec::new(), None),
            Some(CommitOutcome::Committed { outbox, slot }) => (outbox, slot),
            Some(CommitOutcome::Duplicate(ids)) => {
                group.duplicates.extend(ids);
                group.loaded = false;
                round.again.push(group);
                continue;
            }
            Some(CommitOutcome::Conflict) => {
                cache.remove(group.hash, jobs.key(&group));
                group.loaded = false;
                group.conflicts += 1;
                conflicts = conflicts.max(group.conflicts);
                shared.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                debug!(
                    conflicts = group.conflicts,
                    "{}: the instance's version moved; deciding again",
                    P::NAME
                );
                round.again.push(group);
                continue;
            }
            Some(CommitOutcome::Failed(reason)) => {
                group.failures += 1;
                shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                if group.failures >= shared.config.retry.attempts {
                    group.doomed = Some(format!("its commit kept failing: {reason}"));
                }
                round.again.push(group);
                continue;
            }
        };
        totals.merge(&plan.counts);
        apply(
            shared,
            runner,
            cache,
            plan,
            Committed { sequences, slot },
            group.hash,
            jobs.key(&group),
        );
        done.push(group.first);
    }
    // The counters first, then the acks: whoever waits on an ack sees
    // the counters that include its message.
    totals.add_to(shared);
    for &first in done.iter() {
        jobs.settle_group(first);
    }
    conflicts
}

/// Groups a batch by instance, chaining each one's jobs in arrival order.
fn group<P: Process>(jobs: &mut Jobs<P>, groups: &mut Vec<Group>, by_key: &mut HashTable<usize>) {
    let count = jobs.queued.len();
    jobs.links.clear();
    jobs.links.resize(count, Link { next: END, settled: false });
    // Sized for the batch up front: there is at most one group per message.
    groups.clear();
    groups.reserve(count);
    by_key.clear();
    // Empty, so growing it moves no entry and never asks for a hash.
    by_key.reserve(count, |_| 0);
    for (index, queued) in jobs.queued.iter().enumerate() {
        let same = |&group: &usize| jobs.queued[groups[group].first].key == queued.key;
        match by_key.find(queued.hash, same) {
            Some(&group) => {
                jobs.links[groups[group].last].next = index;
                groups[group].last = index;
            }
            None => {
                by_key.insert_unique(queued.hash, groups.len(), |&group| groups[group].hash);
                groups.push(Group {
                    hash: queued.hash,
                    first: index,
                    last: index,
                    json: None,
                    loaded: false,
                    duplicates: Vec::new(),
                    failures: 0,
                    conflicts: 0,
                    doomed: None,
                });
            }
        }
    }
}

impl<P: Process> Jobs<P> {
    fn key(&self, group: &Group) -> &P::Key {
        &self.queued[group.first].key
    }

    /// The jobs of `group` not settled yet, in arrival order, with their
    /// positions in the batch.
    fn of<'a>(&'a self, group: &Group) -> impl Iterator<Item = (usize, &'a Job<P>)> + 'a {
        let mut at = group.first;
        std::iter::from_fn(move || {
            while at != END {
                let here = at;
                at = self.links[here].next;
                if !self.links[here].settled {
                    return Some((here, &self.queued[here].job));
                }
            }
            None
        })
    }

    /// Acknowledges every job of the group that starts at `first`.
    fn settle_group(&mut self, first: usize) {
        let mut at = first;
        while at != END {
            let next = self.links[at].next;
            self.settle(at, None);
            at = next;
        }
    }

    /// Acknowledges the job at `index`, once, leaving it in place: as
    /// handled, or as dead-lettered for `dead`.
    fn settle(&mut self, index: usize, dead: Option<&str>) {
        if std::mem::replace(&mut self.links[index].settled, true) {
            return;
        }
        if let Job::Input { delivery: Some(delivery), .. } = &mut self.queued[index].job
            && let Some(ack) = delivery.ack.take()
        {
            match dead {
                Some(reason) => ack.dead_lettered(reason),
                None => ack.done(),
            }
        }
    }
}

/// Brings the instances of the groups that are not cached in from the store.
async fn load<P: Process>(
    shared: &Shared,
    cache: &mut Cache<P>,
    // `&mut`, though only read, so that the future stays `Send`: a job is
    // not `Sync`.
    jobs: &mut Jobs<P>,
    groups: &mut [Group],
) {
    let mut missing = Vec::new();
    for (index, group) in groups.iter_mut().enumerate() {
        let key = jobs.key(group);
        if group.doomed.is_some() || group.loaded {
            continue;
        }
        if let Some(cached) = cache.get(group.hash, key) {
            // Deciding reads the instance's key and data, each in a line of
            // its own: asked for here, one instance after the other, they
            // arrive together instead of one per decision.
            std::hint::black_box((
                Arc::strong_count(&cached.key),
                Arc::strong_count(&cached.instance.data),
            ));
            continue;
        }
        let json = match &group.json {
            Some(json) => json.clone(),
            None => match serde_json::to_string(key) {
                Ok(json) => Arc::<str>::from(json),
                Err(error) => {
                    group.doomed = Some(format!("its key cannot be written as JSON: {error}"));
                    continue;
                }
            },
        };
        group.json = Some(json.clone());
        missing.push((index, json));
    }
    if missing.is_empty() {
        return;
    }
    let keys: Vec<Arc<str>> = missing.iter().map(|(_, json)| json.clone()).collect();
    let records = shared
        .persist("load instances", Access::Read, || shared.store.load(P::NAME, keys.clone()))
        .await;
    for ((index, json), record) in missing.into_iter().zip(records) {
        let group = &mut groups[index];
        group.loaded = true;
        let Some(record) = record else { continue };
        match cached::<P>(jobs.key(group).clone(), group.hash, json, record) {
            Ok(instance) => cache.insert(instance),
            Err(reason) => {
                group.doomed = Some(format!("the stored instance cannot be read: {reason}"));
            }
        }
    }
}

fn cached<P: Process>(
    id: P::Key,
    hash: u64,
    key: Arc<str>,
    record: InstanceRecord,
) -> Result<Cached<P>, String> {
    let state: P::State = record.state.decode().map_err(|e| e.to_string())?;
    let data: Arc<P::Data> = record.data.decode_shared().map_err(|e| e.to_string())?;
    let mut timers = Vec::with_capacity(record.timers.len());
    for pending in record.timers {
        let timer: P::Timer = serde_json::from_str(&pending.timer).map_err(|e| e.to_string())?;
        timers.push(PendingTimer { timer, json: pending.timer, at: pending.at, id: pending.id });
    }
    Ok(Cached {
        id,
        hash,
        key,
        used: true,
        slot: record.slot,
        instance: Instance {
            version: record.version,
            state,
            data,
            completed: record.completed_at.is_some(),
            timers,
        },
    })
}

/// Decides the messages of one group, in order, on a copy of the instance.
/// A write takes the cached instance's slot with it (moved, not shared: a
/// slot's reference count is a line of its own); the commit gives it back.
fn plan<P: Process>(
    now: Timestamp,
    runner: &ProcessRunner<P>,
    states: &mut States<P>,
    cached_mut: Option<&mut Cached<P>>,
    group: &Group,
    jobs: &Jobs<P>,
    writes: &mut Vec<InstanceWrite>,
) -> Plan<P> {
    let key = jobs.key(group);
    let cached = cached_mut.as_deref();
    let mut plan = Plan {
        writes: false,
        next: None,
        key: None,
        outbox: Vec::new(),
        timers: Vec::new(),
        dead: Vec::new(),
        counts: Counts::default(),
    };
    if let Some(reason) = &group.doomed {
        for (index, job) in jobs.of(group) {
            plan.dead.push((index, dead_letter::<P>(job, reason.clone(), now)));
        }
        return plan;
    }
    let key_json = match (cached, &group.json) {
        (Some(cached), _) => cached.key.clone(),
        (None, Some(json)) => json.clone(),
        (None, None) => Arc::from(serde_json::to_string(key).unwrap_or_default()),
    };
    let mut current: Option<Instance<P>> = cached.map(|cached| cached.instance.copy());
    let mut inbox = Inbox::new();
    let mut completed_at = None;
    for (index, job) in jobs.of(group) {
        let (input, id, time, name) = match job {
            &Job::Input { ref input, id, time, name, .. } => {
                if group.duplicates.contains(&id) || inbox.contains(&id) {
                    debug!(id = %id, "{}[{:?}] {name} handled before: dropped", P::NAME, key);
                    plan.counts.duplicates += 1;
                    continue;
                }
                if let Some(instance) = current.as_ref().filter(|i| i.completed) {
                    info!(
                        state = ?instance.state,
                        "{}[{:?}] {} arrived after completion: recorded, not restarted",
                        P::NAME, key, name
                    );
                    plan.counts.after_completion += 1;
                    continue;
                }
                (Cow::Borrowed(input), id, time, Cow::Borrowed(name))
            }
            Job::Timer { timer, row, .. } => {
                let pending = current
                    .as_ref()
                    .filter(|i| !i.completed)
                    .is_some_and(|i| i.timers.iter().any(|t| t.id == row.id));
                if !pending || group.duplicates.contains(&row.id) {
                    // Moved, cancelled or handled since it was due: the timer
                    // that replaced it fires on its own.
                    debug!(timer = %row.timer, "{}[{:?}] a stale timer firing: dropped", P::NAME, key);
                    continue;
                }
                let Some(instance) = current.as_mut() else { continue };
                instance.timers.retain(|t| t.id != row.id);
                plan.timers
                    .push(TimerChange::Fired { timer: row.timer.as_str().into(), id: row.id });
                inbox.push(row.id);
                plan.counts.timers_fired += 1;
                let name = format!("timer {}", row.timer.trim_matches('"'));
                (Cow::Owned(P::timer_input(*timer)), row.id, row.at, Cow::Owned(name))
            }
        };
        let state = current.as_ref().map_or(P::INITIAL, |i| i.state);
        let span = info_span!("message", process = P::NAME, key = ?key, state = ?state, id = %id, input = %name);
        let _entered = span.enter();
        let default;
        let data = match &current {
            Some(instance) => &*instance.data,
            None => {
                default = P::Data::default();
                &default
            }
        };
        let ctx = Context { key, now: time, message_id: id };
        let decided =
            std::panic::catch_unwind(AssertUnwindSafe(|| P::decide(state, data, &input, &ctx)));
        let decision = match decided {
            Ok(decision) => decision,
            Err(panic) => {
                let reason = format!("`decide` panicked: {}", panic_message(&*panic));
                warn!(%reason, "{}[{:?}] {name}: dead-lettered", P::NAME, key);
                plan.dead.push((index, dead_letter::<P>(job, reason, now)));
                if matches!(job, Job::Timer { .. }) {
                    // The firing is recorded as a dead letter; the timer row
                    // goes with it, not with this write.
                    plan.timers.pop();
                    inbox.pop();
                    plan.counts.timers_fired -= 1;
                }
                continue;
            }
        };
        if decision.outcome == Outcome::Ignored {
            if current.is_none() {
                debug!(
                    "{}[{:?}] {name} ignored by the initial state: no instance created",
                    P::NAME,
                    key
                );
                plan.counts.ignored_at_start += 1;
            } else {
                debug!("{}[{:?}] {name} ignored in {state:?}", P::NAME, key);
                plan.counts.ignored += 1;
                // Recorded as any input the instance took: redelivered
                // after the instance has moved on to a state that handles
                // it, it is a duplicate, not a new input.
                if !matches!(job, Job::Timer { .. }) {
                    inbox.push(id);
                }
            }
            continue;
        }
        // Timer ids and JSON first: a timer that cannot be written must
        // leave the instance as it was.
        let mut timer_changes = Vec::with_capacity(decision.timers.len());
        let mut timer_error = None;
        for (n, op) in decision.timers.iter().enumerate() {
            let (timer, at) = match op {
                TimerOp::Schedule { timer, at } => (timer, Some(*at)),
                TimerOp::Cancel { timer } => (timer, None),
            };
            match serde_json::to_string(timer) {
                Ok(json) => timer_changes.push((*timer, Arc::<str>::from(json), at, n)),
                Err(error) => timer_error = Some(error),
            }
        }
        if let Some(error) = timer_error {
            let reason = format!("a timer cannot be written as JSON: {error}");
            plan.dead.push((index, dead_letter::<P>(job, reason, now)));
            continue;
        }
        let instance = current.get_or_insert_with(|| Instance {
            version: 0,
            state: P::INITIAL,
            data: Arc::new(P::Data::default()),
            completed: false,
            timers: Vec::new(),
        });
        let sends: Vec<&'static str> = decision.outputs.iter().map(Outgoing::name).collect();
        for (n, output) in decision.outputs.into_iter().enumerate() {
            plan.outbox.push(Envelope {
                id: id.derive_in(P::NAME, u32::try_from(n).unwrap_or(u32::MAX)),
                name: Cow::Borrowed(output.name()),
                kind: output.kind(),
                causation: Some(id),
                time,
                body: output.into_body(),
            });
        }
        for (timer, json, at, n) in timer_changes {
            match at {
                Some(at) => {
                    let timer_id =
                        id.derive_in(&runner.timer_scope, u32::try_from(n).unwrap_or(u32::MAX));
                    instance.timers.retain(|t| t.timer != timer);
                    instance.timers.push(PendingTimer {
                        timer,
                        json: json.clone(),
                        at,
                        id: timer_id,
                    });
                    plan.timers.push(TimerChange::Schedule { timer: json, at, id: timer_id });
                }
                None => {
                    instance.timers.retain(|t| t.timer != timer);
                    plan.timers.push(TimerChange::Cancel { timer: json });
                }
            }
        }
        let next = decision.state;
        instance.state = next;
        if let Some(data) = decision.data {
            instance.data = Arc::new(data);
        }
        if !matches!(job, Job::Timer { .. }) {
            inbox.push(id);
        }
        plan.counts.handled += 1;
        info!(
            from = ?state, to = ?next, sends = ?sends,
            "{}[{:?}] {name}: {state:?} -> {next:?}, sends {sends:?}", P::NAME, key
        );
        if P::is_final(next) {
            instance.completed = true;
            for pending in instance.timers.drain(..) {
                plan.timers.push(TimerChange::Cancel { timer: pending.json });
            }
            completed_at = Some(now);
            info!(state = ?next, "{}[{:?}] completed in {next:?}", P::NAME, key);
        }
    }
    if inbox.is_empty() {
        return plan;
    }
    let Some(mut instance) = current else { return plan };
    let expected_version = cached.map(|c| c.instance.version);
    instance.version = expected_version.unwrap_or(0) + 1;
    plan.writes = true;
    if cached.is_none() || !plan.timers.is_empty() || !plan.outbox.is_empty() {
        plan.key = Some(key_json.clone());
    }
    writes.push(InstanceWrite {
        process: P::NAME,
        key: key_json,
        expected_version,
        version: instance.version,
        state: states.body(instance.state),
        data: Body::Value(instance.data.clone()),
        completed_at,
        inbox,
        at: now,
        outbox: plan.outbox.clone(),
        timers: plan.timers.clone(),
        slot: cached_mut.and_then(|cached| cached.slot.take()),
    });
    plan.next = Some(instance);
    plan
}

/// What the store gave back for a write it applied.
struct Committed {
    /// The outbox rows' sequence numbers, in order.
    sequences: Vec<u64>,
    slot: Option<Slot>,
}

/// After a commit: the cache, the relay and the timer index. The counters
/// and the acks follow for the whole round.
fn apply<P: Process>(
    shared: &Shared,
    runner: &ProcessRunner<P>,
    cache: &mut Cache<P>,
    plan: Plan<P>,
    Committed { sequences, slot }: Committed,
    hash: u64,
    key: &P::Key,
) {
    // A completed instance is a tombstone: the store keeps it, and the cache
    // lets it go, so that the cache holds running instances only instead of
    // every instance the engine has seen. A late message loads it again.
    let Some(next) = plan.next else {
        cache.remove_if(hash, key, |cached| cached.instance.completed);
        return;
    };
    // The plan keeps the key whenever it has timers or outbox rows.
    if let Some(json) = &plan.key {
        shared.apply_timers(runner.index, json, &plan.timers);
        if !plan.outbox.is_empty() {
            let instance = (Cow::Borrowed(P::NAME), json.clone());
            shared.relay(
                sequences
                    .into_iter()
                    .zip(plan.outbox)
                    .map(|(sequence, message)| Pending {
                        sequence,
                        message,
                        instance: Some(instance.clone()),
                    })
                    .collect(),
            );
        }
    }
    if next.completed {
        cache.remove(hash, key);
        return;
    }
    match (cache.get_mut(hash, key), plan.key) {
        (Some(cached), _) => {
            cached.instance = next;
            cached.slot = slot;
            cached.used = true;
        }
        (None, Some(json)) => {
            let id = key.clone();
            cache.insert(Cached { id, hash, key: json, instance: next, slot, used: true });
        }
        // Not cached, and committed on what was: the next message loads it.
        (None, None) => {}
    }
}

fn dead_letter<P: Process>(job: &Job<P>, reason: String, now: Timestamp) -> NewDeadLetter {
    let letter = match job {
        Job::Input { delivery: Some(delivery), .. } => Letter::Message(delivery.envelope.clone()),
        Job::Input { input, id, time, name, delivery: None, .. } => {
            // Taken typed: the message is made again from the input.
            let (name, body) = P::input_message(input).unwrap_or_else(|| {
                // A process whose `take` takes what its `input_message`
                // cannot give back: the id, name and time are kept.
                (name, Body::Json(Arc::from(&b"null"[..])))
            });
            Letter::Message(Envelope {
                id: *id,
                name: Cow::Borrowed(name),
                kind: MessageKind::Event,
                body,
                causation: None,
                time: *time,
            })
        }
        Job::Timer { row, .. } => Letter::Timer(row.clone()),
    };
    NewDeadLetter { letter, process: Some(P::NAME.to_owned()), reason, at: now }
}

/// The body of each state a worker has written, shared by every write of
/// that state: states are few, and writing one needs no allocation then.
struct States<P: Process>(Vec<(P::State, Body)>);

impl<P: Process> Default for States<P> {
    fn default() -> Self {
        States(Vec::new())
    }
}

impl<P: Process> States<P> {
    fn body(&mut self, state: P::State) -> Body {
        if let Some((_, body)) = self.0.iter().find(|(known, _)| *known == state) {
            return body.clone();
        }
        let body = Body::value(state);
        self.0.push((state, body.clone()));
        body
    }
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.handled += other.handled;
        self.ignored += other.ignored;
        self.ignored_at_start += other.ignored_at_start;
        self.after_completion += other.after_completion;
        self.duplicates += other.duplicates;
        self.timers_fired += other.timers_fired;
    }

    fn add_to(&self, shared: &Shared) {
        let c = &shared.counters;
        for (counter, value) in [
            (&c.handled, self.handled),
            (&c.ignored, self.ignored),
            (&c.ignored_at_start, self.ignored_at_start),
            (&c.after_completion, self.after_completion),
            (&c.duplicates, self.duplicates),
            (&c.timers_fired, self.timers_fired),
        ] {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }
}

impl<P: Process> Cache<P> {
    fn get(&self, hash: u64, key: &P::Key) -> Option<&Cached<P>> {
        self.0.find(hash, |cached| cached.id == *key)
    }

    fn get_mut(&mut self, hash: u64, key: &P::Key) -> Option<&mut Cached<P>> {
        self.0.find_mut(hash, |cached| cached.id == *key)
    }

    /// Puts an instance in, in place of the one with its key.
    fn insert(&mut self, instance: Cached<P>) {
        let same = |cached: &Cached<P>| cached.id == instance.id;
        match self.0.entry(instance.hash, same, |cached| cached.hash) {
            hashbrown::hash_table::Entry::Occupied(slot) => *slot.into_mut() = instance,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(instance);
            }
        }
    }

    /// Keeps at most `capacity` instances. Past it, lets go of those not
    /// written since the last time it made room (a second chance, as in the
    /// CLOCK algorithm), down to seven eighths of `capacity`: so a pass over
    /// the whole cache is made at most once every `capacity / 8` new
    /// instances. If every one was written since, the first ones found go.
    fn trim(&mut self, capacity: usize) {
        if self.0.len() <= capacity {
            return;
        }
        let mut excess = self.0.len() - (capacity - capacity / 8);
        self.0.retain(|cached| {
            if excess == 0 || std::mem::take(&mut cached.used) {
                return true;
            }
            excess -= 1;
            false
        });
        if excess > 0 {
            self.0.retain(|_| {
                if excess == 0 {
                    return true;
                }
                excess -= 1;
                false
            });
        }
    }

    fn remove(&mut self, hash: u64, key: &P::Key) {
        self.remove_if(hash, key, |_| true);
    }

    fn remove_if(&mut self, hash: u64, key: &P::Key, also: impl Fn(&Cached<P>) -> bool) {
        if let Ok(entry) = self.0.find_entry(hash, |cached| cached.id == *key && also(cached)) {
            entry.remove();
        }
    }
}

impl<P: Process> Instance<P> {
    fn copy(&self) -> Instance<P> {
        Instance {
            version: self.version,
            state: self.state,
            data: self.data.clone(),
            completed: self.completed,
            timers: self
                .timers
                .iter()
                .map(|t| PendingTimer { timer: t.timer, json: t.json.clone(), at: t.at, id: t.id })
                .collect(),
        }
    }
}
