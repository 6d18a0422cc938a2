//! The engine: routes each message by type and correlation key to the
//! worker of its instance, decides, commits, and acknowledges.
//!
//! ```text
//! bus -> receive: decode, correlate -> worker for hash(process, key)
//!   -> load (worker cache, then store) -> decide -> commit: state + version,
//!      inbox, outbox, timers, in one store batch -> ack
//! relay: committed outbox rows -> bus -> mark sent once every receiver settled
//! timers: due rows -> the same worker path
//! ```
//!
//! The engine is a cloneable handle over `Arc<Shared>`. Its tasks (workers,
//! relay, timers) hold only a `Weak` reference and stop when the last handle
//! is dropped. Nothing here holds a std lock across an `.await`.

mod handlers;
mod health;
mod leases;
mod relay;
mod timers;
mod worker;

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{info, warn};

pub use handlers::{CommandContext, HandlerError, HandlerOptions};

use crate::bus::{
    Ack, Bus, BusError, InProcessBus, Receiver, Settle, SettleSink, Settled, Subscription,
};
use crate::clock::{BoxFuture, Clock, SystemClock};
use crate::message::{Body, Command, Envelope, Event, MessageId, MessageKind, NameMap, Timestamp};
use crate::process::Process;
use crate::retry::RetryPolicy;
use crate::store::{
    Batch, DeadLetter, Letter, MemoryStore, NewDeadLetter, Pruned, Store, StoreError, TimerChange,
    TimerRow,
};
use handlers::Handler;
use health::{Access, Health};
use relay::Pending;
use timers::TimerIndex;
use worker::Runner;

/// Runs processes and delivers their messages. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// Collects the store, bus, clock, processes and handlers, then starts the engine.
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    bus: Option<Arc<dyn Bus>>,
    clock: Option<Arc<dyn Clock>>,
    processes: Vec<worker::Starter>,
    handlers: Vec<Arc<Handler>>,
    workers: Option<usize>,
    config: Config,
}

/// Where an instance of a process stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceStatus<P: Process> {
    Running {
        state: P::State,
        data: P::Data,
    },
    /// Reached a final state; later messages for its key are recorded and change nothing.
    Completed {
        state: P::State,
    },
}

/// Counters of what the engine did, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs a handler ran for.
    pub handled: u64,
    /// Inputs the instance's state ignores.
    pub ignored: u64,
    /// Inputs the initial state ignores: no instance was created.
    pub ignored_at_start: u64,
    /// Inputs for instances that had already completed.
    pub after_completion: u64,
    /// Inputs that had been handled already (a redelivery): dropped by the inbox.
    pub duplicates: u64,
    /// Timers that fired and were handled.
    pub timers_fired: u64,
    /// Commands delivered to a handler that succeeded.
    pub commands_delivered: u64,
    /// Attempts made again after a failure: store errors, bus errors, failing handlers.
    pub retried: u64,
    /// Messages and timers moved to the dead letters.
    pub dead_lettered: u64,
    /// Instance writes that met a version other than the one they were
    /// decided on (another engine wrote the instance first): each was
    /// decided again on the stored instance, never dead-lettered.
    pub conflicts: u64,
    /// Events handed to this engine that none of its processes and
    /// subscribers takes: each went to the dead letters with that reason.
    pub unrouted: u64,
    /// Handler attempts that ran past their timeout: each counts as a
    /// failure of the handler, retried and then dead-lettered.
    pub timeouts: u64,
    /// Store outages since the engine started: times the store began
    /// failing, counted once each however long it lasted.
    pub outages: u64,
    /// Not a count but a level: when the store began failing, while it
    /// fails. The engine then takes no new work and tries what it holds
    /// again until the store answers.
    pub store_down_since: Option<Timestamp>,
    /// Not a count but a level: the running instances the workers keep in
    /// memory now, at most [`EngineBuilder::cache_capacity`] per process.
    pub cached: u64,
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("process `{0}` is not run by this engine")]
    UnknownProcess(&'static str),
    #[error("the key cannot be written as JSON: {0}")]
    Key(#[source] serde_json::Error),
    #[error("the stored instance of `{process}` cannot be read: {reason}")]
    Unreadable { process: &'static str, reason: String },
    #[error("message {id} was rejected: {reason}")]
    Rejected { id: MessageId, reason: String },
    #[error("message {id} was not acknowledged by every receiver")]
    Unacknowledged { id: MessageId },
    /// A receiver could not handle the message and recorded it in its dead
    /// letters: it is not lost, and can be replayed from there.
    #[error("message {id} went to the dead letters: {reason}")]
    DeadLettered { id: MessageId, reason: String },
}

#[derive(Clone, Copy, Debug)]
struct Config {
    max_batch: usize,
    /// The most running instances each process keeps in memory.
    cache_capacity: usize,
    retry: RetryPolicy,
    retention: Option<Duration>,
    /// How long a handler's attempt may run, unless its options say otherwise.
    handler_timeout: Duration,
}

pub(crate) struct Shared {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    config: Config,
    processes: Vec<Arc<dyn Runner>>,
    by_type: HashMap<TypeId, usize>,
    /// Event wire name -> the processes that take it.
    by_event: NameMap<&'static str, Vec<usize>>,
    /// Event wire name -> the functions subscribed to it.
    subscribers: NameMap<&'static str, Vec<Arc<Handler>>>,
    commands: NameMap<&'static str, Arc<Handler>>,
    /// Work started and not finished: queued messages, outbox rows not yet
    /// marked sent, running handlers. Zero means idle.
    in_flight: AtomicUsize,
    idle: Notify,
    counters: Counters,
    /// Whether the store answers; while it does not, the engine holds new work.
    health: Health,
    relay: mpsc::UnboundedSender<Vec<Pending>>,
    timers: Mutex<TimerIndex>,
    timers_changed: Arc<Notify>,
    /// Set once the outbox and timers of the store have been recovered.
    ready: watch::Sender<bool>,
    /// This engine's number in [`ENGINES`].
    number: u64,
    /// Whether the bus is the in-process bus the engine made for itself
    /// (none was given): then the engine is its only receiver, it has no
    /// observers, and nobody else holds it.
    own_bus: bool,
    /// Never sent on; dropped with the engine, which tells the tasks that
    /// wait on time to stop.
    #[allow(dead_code)]
    stop: watch::Sender<()>,
}

#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    ignored: AtomicU64,
    ignored_at_start: AtomicU64,
    after_completion: AtomicU64,
    duplicates: AtomicU64,
    timers_fired: AtomicU64,
    commands_delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    conflicts: AtomicU64,
    unrouted: AtomicU64,
    timeouts: AtomicU64,
    /// A level, not a count: what the workers' caches hold.
    cached: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("processes", &self.processes.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("processes", &self.processes.iter().map(|p| p.name).collect::<Vec<_>>())
            .field("handlers", &self.handlers.iter().map(|h| h.name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            store: None,
            bus: None,
            clock: None,
            processes: Vec::new(),
            handlers: Vec::new(),
            workers: None,
            config: Config {
                max_batch: 512,
                cache_capacity: 1_000_000,
                retry: RetryPolicy::default(),
                retention: Some(Duration::from_secs(7 * 24 * 60 * 60)),
                handler_timeout: Duration::from_secs(30),
            },
        }
    }

    /// Publishes an event from outside any process, stamped with the
    /// engine's clock. If a receiver refuses it, it goes to the dead letters.
    pub fn publish<E: Event>(&self, event: E) -> MessageId {
        if let Some(id) = self.shared.publish_typed(&event, E::NAME) {
            return id;
        }
        let envelope = self.shared.envelope(E::NAME, MessageKind::Event, Body::value(event));
        let id = envelope.id;
        self.shared.publish_detached(envelope);
        id
    }

    /// Sends a command from outside any process to its handler.
    pub fn send<C: Command>(&self, command: C) -> MessageId {
        let envelope = self.shared.envelope(C::NAME, MessageKind::Command, Body::value(command));
        let id = envelope.id;
        self.shared.publish_detached(envelope);
        id
    }

    /// Publishes an envelope through the bus and resolves once every
    /// receiver has settled it: `Ok` when all of them handled it durably,
    /// [`Error::DeadLettered`] when one could not and recorded it in its
    /// dead letters, [`Error::Unacknowledged`] when one gave it back (its
    /// store is out, for one: submit it again later).
    /// The message is handed to the bus when this is called, not when the
    /// future is first polled, so calls keep their order.
    pub fn submit(&self, envelope: Envelope) -> impl Future<Output = Result<(), Error>> + Send {
        let id = envelope.id;
        let (sender, answer) = oneshot::channel();
        let sender = Arc::new(Mutex::new(Some(sender)));
        let on_failure = sender.clone();
        let settle = Settle::new(move |settled| {
            if let Some(sender) = lock(&sender).take() {
                let _ = sender.send(Ok(settled));
            }
        });
        if self.shared.own_bus {
            // Nobody else is on the bus: the engine takes the message as
            // delivered, and an event none of its processes takes is a
            // dead letter instead of a fact the bus hands to nobody.
            self.shared.receive(envelope, Ack::new(id, settle));
        } else {
            self.shared.hand_off(envelope, settle, move |error| {
                if let Some(sender) = lock(&on_failure).take() {
                    let _ = sender.send(Err(error));
                }
            });
        }
        async move {
            let settled = answer.await.map_err(|_| BusError::Closed)??;
            if let Some(rejection) = settled.rejected.into_iter().next() {
                return Err(Error::Rejected { id, reason: rejection.reason });
            }
            if !settled.unacknowledged.is_empty() {
                return Err(Error::Unacknowledged { id });
            }
            if let Some(letter) = settled.dead_lettered.into_iter().next() {
                return Err(Error::DeadLettered { id, reason: letter.reason });
            }
            Ok(())
        }
    }

    /// Hands an envelope to this engine's processes and handlers directly,
    /// as if a bus had delivered it, without waiting for the outcome.
    pub fn deliver(&self, envelope: Envelope) {
        let ack = Ack::detached(envelope.id);
        self.shared.receive(envelope, ack);
    }

    /// Waits until every message published so far, everything decided in
    /// answer to it, and every timer due by the engine's clock, has been
    /// handled and its outbox sent. While the store fails, that includes
    /// waiting for it to answer.
    pub async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            self.shared.fire_due();
            // While the store fails, due timers wait in the index, counted
            // nowhere: the engine is not idle until it answers.
            let held = self.shared.health.is_down();
            if self.shared.in_flight.load(Ordering::Acquire) == 0 && !held {
                return;
            }
            notified.await;
        }
    }

    /// The status of the instance of `P` with key `key`, as stored.
    pub async fn instance<P: Process>(
        &self,
        key: &P::Key,
    ) -> Result<Option<InstanceStatus<P>>, Error> {
        let Some(record) = self.record::<P>(key).await? else { return Ok(None) };
        let unreadable = |reason: String| Error::Unreadable { process: P::NAME, reason };
        let state: P::State = record.state.decode().map_err(|e| unreadable(e.to_string()))?;
        if record.completed_at.is_some() {
            return Ok(Some(InstanceStatus::Completed { state }));
        }
        let data: P::Data = record.data.decode().map_err(|e| unreadable(e.to_string()))?;
        Ok(Some(InstanceStatus::Running { state, data }))
    }

    /// The pending timers of the instance of `P` with key `key`, soonest first.
    pub async fn timers<P: Process>(
        &self,
        key: &P::Key,
    ) -> Result<Vec<(P::Timer, Timestamp)>, Error> {
        let Some(record) = self.record::<P>(key).await? else { return Ok(Vec::new()) };
        let mut timers = Vec::with_capacity(record.timers.len());
        for pending in record.timers {
            let timer = serde_json::from_str(&pending.timer)
                .map_err(|e| Error::Unreadable { process: P::NAME, reason: e.to_string() })?;
            timers.push((timer, pending.at));
        }
        timers.sort_by_key(|(_, at)| *at);
        Ok(timers)
    }

    async fn record<P: Process>(
        &self,
        key: &P::Key,
    ) -> Result<Option<crate::store::InstanceRecord>, Error> {
        if !self.shared.by_type.contains_key(&TypeId::of::<P>()) {
            return Err(Error::UnknownProcess(P::NAME));
        }
        let key: Arc<str> = serde_json::to_string(key).map_err(Error::Key)?.into();
        let mut records = self.shared.store.load(P::NAME, vec![key]).await?;
        Ok(records.pop().flatten())
    }

    /// The dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, Error> {
        Ok(self.shared.store.dead_letters().await?)
    }

    /// Takes dead letters out of the table and sends them again: messages
    /// through the outbox, timers as due now. Returns how many were replayed.
    pub async fn replay(&self, ids: &[u64]) -> Result<usize, Error> {
        let replayed = self.shared.store.replay(ids.to_vec(), self.now()).await?;
        let count = replayed.messages.len() + replayed.timers.len();
        let rows = replayed.messages.into_iter().map(Pending::from).collect();
        self.shared.relay(rows);
        self.shared.recover_timers(replayed.timers);
        Ok(count)
    }

    /// Deletes tombstones and inbox rows older than the retention now,
    /// instead of waiting for the periodic pass.
    pub async fn prune(&self) -> Result<Pruned, Error> {
        let Some(retention) = self.shared.config.retention else { return Ok(Pruned::default()) };
        Ok(self.shared.store.prune(self.now() - retention).await?)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            handled: get(&c.handled),
            ignored: get(&c.ignored),
            ignored_at_start: get(&c.ignored_at_start),
            after_completion: get(&c.after_completion),
            duplicates: get(&c.duplicates),
            timers_fired: get(&c.timers_fired),
            commands_delivered: get(&c.commands_delivered),
            retried: get(&c.retried),
            dead_lettered: get(&c.dead_lettered),
            conflicts: get(&c.conflicts),
            unrouted: get(&c.unrouted),
            timeouts: get(&c.timeouts),
            outages: self.shared.health.outages(),
            store_down_since: self.shared.health.down_since(),
            cached: get(&c.cached),
        }
    }

    /// The time by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }
}

impl EngineBuilder {
    /// Where instances, the inbox, the outbox, timers and dead letters are
    /// kept (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// What carries messages (default: a new [`InProcessBus`]). Pass clones
    /// of one bus to engines that should talk to each other.
    pub fn bus(mut self, bus: impl Bus) -> Self {
        self.bus = Some(Arc::new(bus));
        self
    }

    /// Where the engine reads the time (default: the [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs instances of `P`.
    pub fn process<P: Process>(mut self) -> Self {
        if !self.processes.iter().any(|p| p.type_id == TypeId::of::<P>()) {
            self.processes.push(worker::Starter::of::<P>());
        }
        self
    }

    /// Delivers every `C` to `handler`. The handler answers by publishing
    /// events through its [`CommandContext`]. A handler that fails is tried
    /// again by the retry policy, then its command goes to the dead letters.
    /// Delivery is at least once: the same command (with the same id) can
    /// arrive again after a crash, so handlers drop what they have seen.
    /// An attempt that runs past the engine's
    /// [`handler_timeout`](EngineBuilder::handler_timeout) is a failure.
    pub fn handle<C, F, Fut>(self, handler: F) -> Self
    where
        C: Command,
        F: Fn(C, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handle_with(HandlerOptions::default(), handler)
    }

    /// [`handle`](EngineBuilder::handle), with options of its own: a
    /// timeout other than the engine's, an inbox that keeps a redelivered
    /// command from reaching the handler again
    /// ([`HandlerOptions::idempotent`]).
    pub fn handle_with<C, F, Fut>(mut self, options: HandlerOptions, handler: F) -> Self
    where
        C: Command,
        F: Fn(C, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.retain(|h| !(h.kind == MessageKind::Command && h.name == C::NAME));
        self.handlers.push(Arc::new(Handler::new::<C, F, Fut>(
            MessageKind::Command,
            C::NAME,
            options,
            handler,
        )));
        self
    }

    /// Calls `subscriber` with every `E` published, beside the processes
    /// that take it: for projections and notifications. Failures are retried,
    /// then dead-lettered, as for command handlers.
    pub fn subscribe<E, F, Fut>(mut self, subscriber: F) -> Self
    where
        E: Event,
        F: Fn(E, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.push(Arc::new(Handler::new::<E, F, Fut>(
            MessageKind::Event,
            E::NAME,
            HandlerOptions::default(),
            subscriber,
        )));
        self
    }

    /// The number of workers each process's instances are sharded over
    /// (default: the number of CPUs).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers.max(1));
        self
    }

    /// The most messages a worker takes up at once, and so the most that
    /// share one commit (default 512).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.config.max_batch = max_batch.max(1);
        self
    }

    /// The most running instances each process keeps in memory, across its
    /// workers (default 1,000,000). Past it, a worker lets go of the
    /// instances it has not written since it last made room; a message for
    /// one of them loads it from the store again. The store keeps every
    /// instance whatever this is: with SQLite, this is what bounds the
    /// engine's memory.
    pub fn cache_capacity(mut self, instances: usize) -> Self {
        self.config.cache_capacity = instances.max(1);
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = RetryPolicy { attempts: policy.attempts.max(1), ..policy };
        self
    }

    /// How long one attempt of a command handler or subscriber may run
    /// before it counts as a failure (default: 30 seconds): a handler that
    /// hangs is given up, tried again by the retry policy, then
    /// dead-lettered, so that it holds back neither its instance's later
    /// commands nor [`Engine::idle`]. A handler's own
    /// [`HandlerOptions::timeout`] overrides it.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.config.handler_timeout = timeout;
        self
    }

    /// How long tombstones of completed instances and inbox rows are kept
    /// (default: 7 days); `None` keeps them forever. A message redelivered
    /// after its inbox row is gone is handled again, so keep it longer than
    /// any bus redelivers.
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.config.retention = retention;
        self
    }

    /// Starts the engine: recovers the outbox and timers of the store, then
    /// starts handling. Must be called inside a tokio runtime.
    pub fn build(self) -> Engine {
        let shards = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let own_bus = self.bus.is_none();
        let bus = self.bus.unwrap_or_else(|| Arc::new(InProcessBus::new()));
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));

        let mut processes = Vec::new();
        let mut spawners = Vec::new();
        let mut by_type = HashMap::new();
        let mut by_event: NameMap<&'static str, Vec<usize>> = NameMap::default();
        for (index, starter) in self.processes.into_iter().enumerate() {
            by_type.insert(starter.type_id, index);
            let (runner, spawn) = (starter.start)(index, shards);
            for event in runner.inputs() {
                by_event.entry(event).or_default().push(index);
            }
            processes.push(runner);
            spawners.push(spawn);
        }
        let mut subscribers: NameMap<&'static str, Vec<Arc<Handler>>> = NameMap::default();
        let mut commands = NameMap::default();
        for handler in self.handlers {
            match handler.kind {
                MessageKind::Event => subscribers.entry(handler.name).or_default().push(handler),
                MessageKind::Command => {
                    commands.insert(handler.name, handler);
                }
            }
        }
        let subscription = Subscription {
            events: by_event.keys().chain(subscribers.keys()).map(|e| e.to_string()).collect(),
            commands: commands.keys().map(|c| c.to_string()).collect(),
        };

        let (relay_sender, relay_receiver) = mpsc::unbounded_channel();
        let (ready, ready_receiver) = watch::channel(false);
        let (stop, stop_receiver) = watch::channel(());
        let number = NEXT_ENGINE.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            number,
            own_bus,
            store,
            bus,
            clock,
            config: self.config,
            processes,
            by_type,
            by_event,
            subscribers,
            commands,
            // The recovery below counts as work until it is done.
            in_flight: AtomicUsize::new(1),
            idle: Notify::new(),
            counters: Counters::default(),
            health: Health::default(),
            relay: relay_sender,
            timers: Mutex::new(TimerIndex::default()),
            timers_changed: Arc::new(Notify::new()),
            ready,
            stop,
        });
        let weak = Arc::downgrade(&shared);
        ENGINES.write().unwrap_or_else(|p| p.into_inner()).insert(number, weak.clone());
        for spawn in spawners {
            spawn(weak.clone(), ready_receiver.clone());
        }
        tokio::spawn(relay::run(weak.clone(), relay_receiver));
        tokio::spawn(timers::run(
            weak.clone(),
            shared.timers_changed.clone(),
            shared.clock.clone(),
            stop_receiver.clone(),
            ready_receiver.clone(),
        ));
        if let Some(lease) = shared.store.lease() {
            tokio::spawn(leases::run(
                weak.clone(),
                lease,
                stop_receiver.clone(),
                ready_receiver.clone(),
            ));
        }
        if let Some(retention) = shared.config.retention {
            tokio::spawn(timers::prune(
                weak.clone(),
                shared.clock.clone(),
                retention,
                stop_receiver,
            ));
        }
        tokio::spawn(recover(weak.clone()));
        shared.bus.subscribe(subscription, Arc::new(Inlet(weak)));
        Engine { shared }
    }
}

/// Loads what the last run left: outbox rows not yet sent go to the relay
/// before anything new, pending timers into the index. Then the workers start.
async fn recover(weak: Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let rows =
        shared.persist("read the outbox", Access::Read, || shared.store.pending_outbox()).await;
    if !rows.is_empty() {
        info!(rows = rows.len(), "sending the outbox rows left by the last run");
    }
    shared.relay(rows.into_iter().map(Pending::from).collect());
    let timers =
        shared.persist("read the timers", Access::Read, || shared.store.pending_timers()).await;
    shared.recover_timers(timers);
    shared.ready.send_replace(true);
    shared.finish(1);
}

/// The engines running in this program, by number. The outcome of a
/// message published from outside any process names its engine by number
/// rather than holding a counted reference: the message is published on one
/// thread and settled on another, and a reference count per message would
/// pass between them each time. The number is looked up only when something
/// went wrong.
static ENGINES: RwLock<BTreeMap<u64, Weak<Shared>>> = RwLock::new(BTreeMap::new());
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

fn engine(number: u64) -> Option<Arc<Shared>> {
    ENGINES.read().unwrap_or_else(|p| p.into_inner()).get(&number)?.upgrade()
}

impl Drop for Shared {
    fn drop(&mut self) {
        ENGINES.write().unwrap_or_else(|p| p.into_inner()).remove(&self.number);
    }
}

/// Where the outcomes of messages published from outside go: nobody waits
/// for them, so what no receiver handled goes to the dead letters of the
/// engine that published it.
struct Detached;

static DETACHED: Detached = Detached;

impl SettleSink for Detached {
    fn settled(&self, number: u64, message: Envelope, settled: Settled) {
        if settled.is_clean() {
            return;
        }
        if let Some(shared) = engine(number) {
            shared.detached_settled(message, settled, 0);
        }
    }
}

/// The engine as a bus receiver. Holds the engine weakly, so that a bus
/// outliving it does not keep it running.
struct Inlet(Weak<Shared>);

impl Receiver for Inlet {
    fn receive(&self, message: Envelope, ack: Ack) {
        // An engine that is gone drops the ack, which asks for a redelivery.
        let Some(shared) = self.0.upgrade() else { return };
        if shared.health.is_down() {
            // Back-pressure: while the store fails, what another publisher
            // waits for is given back, to be sent again once it answers.
            // What this engine published itself nobody would send again:
            // it is queued, and tried with the rest once the store answers.
            let Some(theirs) = ack.unless_only(shared.number) else {
                let ack = Ack::detached(message.id);
                shared.receive(message, ack);
                return;
            };
            drop(theirs);
            return;
        }
        shared.receive(message, ack);
    }
}

impl Shared {
    /// A new message from outside any process, stamped with the engine's clock.
    fn envelope(&self, name: &'static str, kind: MessageKind, body: Body) -> Envelope {
        Envelope::at(name, kind, body, self.clock.now())
    }

    /// Routes one delivered message: an event to every process and
    /// subscriber that takes it, a command to its handler.
    fn receive(self: &Arc<Self>, message: Envelope, ack: Ack) {
        match message.kind {
            MessageKind::Event => {
                let name = message.name.as_ref();
                let processes = self.by_event.get(name).map_or(&[][..], |p| p);
                let subscribers = self.subscribers.get(name).map_or(&[][..], |s| s);
                match (processes, subscribers) {
                    // The common case: one process takes the event.
                    ([index], []) => return self.processes[*index].route(self, message, ack),
                    ([], []) => return self.unrouted(message, ack),
                    _ => {}
                }
                let mut acks = ack.split(processes.len() + subscribers.len()).into_iter();
                for (&index, ack) in processes.iter().zip(acks.by_ref()) {
                    self.processes[index].route(self, message.clone(), ack);
                }
                for (subscriber, ack) in subscribers.iter().zip(acks) {
                    self.run_handler(subscriber.clone(), message.clone(), ack);
                }
            }
            MessageKind::Command => match self.commands.get(message.name.as_ref()) {
                Some(handler) => self.run_handler(handler.clone(), message, ack),
                None => {
                    let reason = format!("no handler is registered for command `{}`", message.name);
                    self.dead_letter(Letter::Message(message), None, reason, Some(ack));
                }
            },
        }
    }

    /// An event handed to this engine that none of its processes and
    /// subscribers takes: it was meant for this engine (a bus delivers only
    /// what an engine subscribed to), so a name nobody knows is a mistake
    /// to see, not a fact to drop. It goes to the dead letters.
    fn unrouted(self: &Arc<Self>, message: Envelope, ack: Ack) {
        self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
        let reason =
            format!("no process or subscriber of this engine takes event `{}`", message.name);
        self.dead_letter(Letter::Message(message), None, reason, Some(ack));
    }

    /// Publishes an event on the engine's own bus (see
    /// [`Shared::publish_detached`]) to the one process that takes it,
    /// typed: no body is made for it, and the worker has it as the input it
    /// is. `None`, and nothing published, where that does not apply: another
    /// bus, several receivers, or a process that cannot take it typed.
    fn publish_typed(
        self: &Arc<Self>,
        event: &dyn std::any::Any,
        name: &'static str,
    ) -> Option<MessageId> {
        if !self.own_bus || self.subscribers.contains_key(name) {
            return None;
        }
        let &[index] = self.by_event.get(name)?.as_slice() else { return None };
        let time = self.clock.now();
        let id = MessageId::at(time);
        self.processes[index].take(self, event, name, id, time).then_some(id)
    }

    /// Publishes a message nobody waits for; what no receiver handles goes
    /// to the dead letters.
    fn publish_detached(self: &Arc<Self>, envelope: Envelope) {
        if self.own_bus {
            // The bus would hand it straight back to this engine, and
            // nobody else can see it: the engine takes it as delivered.
            // Whatever its receivers here cannot handle, they dead-letter
            // themselves, as for any message nobody waits for.
            let ack = Ack::detached(envelope.id);
            self.receive(envelope, ack);
            return;
        }
        let (number, on_failure) = (self.number, envelope.clone());
        let settle = Settle::sink(&DETACHED, number, envelope.clone());
        self.hand_off(envelope, settle, move |error| {
            if let Some(shared) = engine(number) {
                let reason = format!("the bus did not take it: {error}");
                shared.dead_letter(Letter::Message(on_failure), None, reason, None);
            }
        });
    }

    /// Hands a message to the bus. The in-process bus takes it at once;
    /// another bus may need a task to finish, which is spawned then.
    fn hand_off(
        &self,
        message: Envelope,
        settle: Settle,
        failed: impl FnOnce(BusError) + Send + 'static,
    ) {
        let mut handoff = self.bus.publish_one(message, settle);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match handoff.as_mut().poll(&mut context) {
            std::task::Poll::Ready(Ok(())) => {}
            std::task::Poll::Ready(Err(error)) => failed(error),
            std::task::Poll::Pending => spawn(Box::pin(async move {
                if let Err(error) = handoff.await {
                    failed(error);
                }
            })),
        }
    }

    /// What became of a message published from outside any process, after
    /// `failures` publishes of it that were not acknowledged: one a receiver
    /// refused goes to the dead letters; one it did not acknowledge (it is
    /// busy, or its store is out) is published again after a wait, since
    /// nobody else would.
    fn detached_settled(self: &Arc<Self>, message: Envelope, settled: Settled, failures: u32) {
        if let Some(rejection) = settled.rejected.into_iter().next() {
            self.dead_letter(Letter::Message(message), None, rejection.reason, None);
        } else if !settled.unacknowledged.is_empty() {
            self.publish_again(message, failures + 1);
        }
    }

    /// Publishes a message from outside any process again, after the wait
    /// that follows its `failures`-th unacknowledged publish. It counts as
    /// work in flight until it is handed to the bus.
    fn publish_again(self: &Arc<Self>, message: Envelope, failures: u32) {
        self.counters.retried.fetch_add(1, Ordering::Relaxed);
        self.start(1);
        let (weak, wait) = (Arc::downgrade(self), self.config.retry.backoff(failures));
        spawn(Box::pin(async move {
            tokio::time::sleep(wait).await;
            let Some(shared) = weak.upgrade() else { return };
            let (number, on_failure) = (shared.number, message.clone());
            let resent = message.clone();
            let settle = Settle::new(move |settled| {
                if let Some(shared) = engine(number) {
                    shared.detached_settled(resent, settled, failures);
                }
            });
            shared.hand_off(message, settle, move |error| {
                if let Some(shared) = engine(number) {
                    let reason = format!("the bus did not take it: {error}");
                    shared.dead_letter(Letter::Message(on_failure), None, reason, None);
                }
            });
            shared.finish(1);
        }));
    }

    /// Records one dead letter, then settles its ack as dead-lettered: the
    /// message is not lost, and is not sent again, and whoever waits for it
    /// learns why it was not handled.
    fn dead_letter(
        self: &Arc<Self>,
        letter: Letter,
        process: Option<&str>,
        reason: String,
        ack: Option<Ack>,
    ) {
        warn!(letter = %letter, %reason, "dead-lettered");
        let letter = NewDeadLetter {
            letter,
            process: process.map(str::to_owned),
            reason,
            at: self.clock.now(),
        };
        self.start(1);
        let shared = self.clone();
        spawn(Box::pin(async move {
            let reason = letter.reason.clone();
            shared.record_dead_letters(vec![letter]).await;
            if let Some(ack) = ack {
                ack.dead_lettered(reason);
            }
            shared.finish(1);
        }));
    }

    async fn record_dead_letters(&self, letters: Vec<NewDeadLetter>) {
        let count = letters.len() as u64;
        self.persist("record dead letters", Access::Write, || {
            let mut batch = Batch { instances: Vec::new(), dead_letters: letters.clone() };
            Box::pin(async move { self.store.commit(&mut batch).await })
        })
        .await;
        self.counters.dead_lettered.fetch_add(count, Ordering::Relaxed);
    }

    /// Runs a store call until it succeeds, waiting longer after each
    /// failure. For calls that nothing can replace: reading what a crash
    /// left, marking rows sent, recording dead letters.
    async fn persist<'a, T>(
        &'a self,
        what: &str,
        access: Access,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> T {
        let mut failures = 0;
        loop {
            match call().await {
                Ok(value) => {
                    self.store_answered(access);
                    return value;
                }
                Err(error) => {
                    failures += 1;
                    self.store_failed(access, what, &error);
                    warn!(%error, failures, "could not {what}; trying again");
                    tokio::time::sleep(self.config.retry.backoff(failures)).await;
                }
            }
        }
    }

    /// Records a failed store call: counted as a retry, and the start of an
    /// outage unless one is on.
    fn store_failed(&self, access: Access, what: &str, error: &StoreError) {
        self.counters.retried.fetch_add(1, Ordering::Relaxed);
        self.health.failed(self.clock.now(), access, what, error);
    }

    /// Records a store call that succeeded: an outage on ends, and the
    /// timers it held back are looked at again.
    fn store_answered(&self, access: Access) {
        if self.health.answered(self.clock.now(), access) {
            self.timers_changed.notify_one();
            self.idle.notify_waiters();
        }
    }

    /// Queues committed outbox rows for the relay.
    fn relay(&self, rows: Vec<Pending>) {
        if rows.is_empty() {
            return;
        }
        let count = rows.len();
        self.start(count);
        if self.relay.send(rows).is_err() {
            // The relay stops only with the engine; the rows stay in the
            // store and are sent by the next run.
            self.finish(count);
        }
    }

    fn apply_timers(&self, process: usize, key: &Arc<str>, changes: &[TimerChange]) {
        if changes.is_empty() {
            return;
        }
        let earlier = lock(&self.timers).apply(process, key, changes);
        if earlier {
            self.timers_changed.notify_one();
        }
    }

    fn recover_timers(&self, rows: Vec<TimerRow>) {
        if rows.is_empty() {
            return;
        }
        let by_name: HashMap<&str, usize> =
            self.processes.iter().enumerate().map(|(i, p)| (p.name(), i)).collect();
        let mut index = lock(&self.timers);
        for row in rows {
            match by_name.get(row.process.as_str()) {
                Some(&process) => index.schedule(
                    process,
                    row.key.as_str().into(),
                    row.timer.as_str().into(),
                    row.at,
                    row.id,
                ),
                None => warn!(
                    process = %row.process, timer = %row.timer,
                    "a stored timer belongs to a process this engine does not run; it stays stored"
                ),
            }
        }
        drop(index);
        self.timers_changed.notify_one();
    }

    /// Hands every timer due by now to the worker of its instance. While
    /// the store fails, due timers stay in the index: they fire once it
    /// answers (which wakes the timer task).
    fn fire_due(self: &Arc<Self>) {
        if self.health.is_down() {
            return;
        }
        let now = self.clock.now();
        let due = lock(&self.timers).pop_due(now);
        for timer in due {
            let row = TimerRow {
                process: self.processes[timer.process].name().to_owned(),
                key: timer.key.to_string(),
                timer: timer.timer.to_string(),
                at: timer.at,
                id: timer.id,
            };
            self.processes[timer.process].fire(self, row);
        }
    }

    fn start(&self, count: usize) {
        self.in_flight.fetch_add(count, Ordering::AcqRel);
    }

    fn finish(&self, count: usize) {
        if count > 0 && self.in_flight.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_waiters();
        }
    }
}

/// Spawns on the current runtime. Without one (the runtime is shutting
/// down), the work is dropped: its acks ask for redelivery, and what is
/// stored stays for the next run.
fn spawn(future: BoxFuture<'static, ()>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(future)),
        Err(_) => warn!("no runtime left to finish the work on; it is left to the next run"),
    }
}

/// Locks a std mutex that is never held across an `.await` and whose
/// contents stay consistent if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
