//! The in-memory engine: routes published events to process instances by
//! type and correlation key, runs `decide` on one worker per shard (so one
//! instance is never handled twice at once), delivers the decided commands to
//! the command handlers registered with it, and completes instances that
//! reach a final state.
//!
//! The engine is a cloneable handle over `Arc<Shared>`. Workers hold only a
//! `Weak` reference, so they stop when the last handle is dropped.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, mpsc};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::message::{Command, Envelope, Event, MessageId, MessageKind};
use crate::process::{Context, Outcome, Outgoing, Process};

/// The error a command handler returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type ErasedHandler = Arc<dyn Fn(Envelope, CommandContext) -> HandlerFuture + Send + Sync>;
type Job = Box<dyn FnOnce(&Arc<Shared>) + Send>;

/// Runs processes and delivers their messages. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// Collects processes and command handlers, then starts the engine.
#[derive(Default)]
pub struct EngineBuilder {
    processes: Vec<Arc<dyn Runner>>,
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    handlers: HashMap<&'static str, ErasedHandler>,
    workers: Option<usize>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("processes", &self.processes.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("commands", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Given to a command handler: the id of the command, and a way to publish
/// the events that answer it.
#[derive(Clone, Debug)]
pub struct CommandContext {
    engine: Engine,
    message_id: MessageId,
    published: Arc<AtomicU64>,
}

/// A message that could not be handled, and why. Nothing is dropped silently.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub reason: String,
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
    /// Commands delivered to a handler that succeeded.
    pub commands_delivered: u64,
    /// Messages moved to the dead letters.
    pub dead_lettered: u64,
}

struct Shared {
    processes: Vec<Arc<dyn Runner>>,
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// Event wire name -> indices into `processes` of the processes that take it.
    subscriptions: HashMap<&'static str, Vec<usize>>,
    handlers: HashMap<&'static str, ErasedHandler>,
    workers: Vec<mpsc::UnboundedSender<Job>>,
    /// Deliveries not finished yet; zero means the engine is idle.
    in_flight: AtomicUsize,
    idle: Notify,
    dead_letters: Mutex<Vec<DeadLetter>>,
    stats: Mutex<Stats>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("processes", &self.processes.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Publishes an event from outside any process.
    pub fn publish<E: Event>(&self, event: E) -> MessageId {
        let envelope = Envelope::event(event);
        let id = envelope.id;
        self.shared.dispatch(envelope);
        id
    }

    /// Sends a command from outside any process to its registered handler.
    pub fn send<C: Command>(&self, command: C) -> MessageId {
        let envelope = Envelope::command(command);
        let id = envelope.id;
        self.shared.dispatch(envelope);
        id
    }

    /// Delivers an envelope as it came from a bus: by name, with a JSON or typed body.
    pub fn deliver(&self, envelope: Envelope) {
        self.shared.dispatch(envelope);
    }

    /// Waits until every message published so far, and everything decided in
    /// answer to it, has been handled.
    pub async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            if self.shared.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The status of the instance of `P` with key `key`, if it ever started.
    pub fn instance<P: Process>(&self, key: &P::Key) -> Option<InstanceStatus<P>> {
        let runner = self.shared.by_type.get(&TypeId::of::<P>())?;
        let runner = runner.downcast_ref::<ProcessRunner<P>>()?;
        runner.status(key)
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared.dead_letters.lock().unwrap().clone()
    }

    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap()
    }
}

impl EngineBuilder {
    /// Runs instances of `P`.
    pub fn process<P: Process>(mut self) -> Self {
        let runner = Arc::new(ProcessRunner::<P>::default());
        self.by_type.insert(TypeId::of::<P>(), runner.clone());
        self.processes.push(runner);
        self
    }

    /// Delivers every `C` to `handler`. The handler answers by publishing
    /// events through its [`CommandContext`]; an error moves the command to
    /// the dead letters with the error as reason.
    pub fn handle<C, F, Fut>(mut self, handler: F) -> Self
    where
        C: Command,
        F: Fn(C, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |envelope: Envelope, ctx| {
            let handler = handler.clone();
            Box::pin(async move {
                let command: C = envelope.body.decode()?;
                handler(command, ctx).await
            })
        });
        self.handlers.insert(C::NAME, erased);
        self
    }

    /// The number of workers instances are sharded over (default: the number of CPUs).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers.max(1));
        self
    }

    /// Starts the workers. Must be called inside a tokio runtime.
    pub fn build(self) -> Engine {
        let count = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut subscriptions: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for (index, process) in self.processes.iter().enumerate() {
            for event in process.inputs() {
                subscriptions.entry(event).or_default().push(index);
            }
        }
        let mut receivers = Vec::with_capacity(count);
        let mut workers = Vec::with_capacity(count);
        for _ in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            workers.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            processes: self.processes,
            by_type: self.by_type,
            subscriptions,
            handlers: self.handlers,
            workers,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            dead_letters: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
        });
        for rx in receivers {
            tokio::spawn(work(Arc::downgrade(&shared), rx));
        }
        Engine { shared }
    }
}

/// One worker: runs the jobs of its shard in order.
async fn work(shared: Weak<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        job(&shared);
        shared.finish();
    }
}

impl Shared {
    /// Routes one message: events to every process that takes them, commands
    /// to their handler. Counts the deliveries it starts.
    fn dispatch(self: &Arc<Self>, envelope: Envelope) {
        match envelope.kind {
            MessageKind::Event => {
                let Some(targets) = self.subscriptions.get(envelope.name.as_ref()) else {
                    debug!(event = %envelope.name, id = %envelope.id, "no process takes this event");
                    return;
                };
                for &index in targets {
                    let process = &self.processes[index];
                    match process.clone().route(&envelope) {
                        Ok((shard, job)) => {
                            self.start();
                            let worker =
                                &self.workers[(shard % self.workers.len() as u64) as usize];
                            if worker.send(job).is_err() {
                                // The workers are gone only while the engine is dropped.
                                self.finish();
                            }
                        }
                        Err(reason) => self.dead_letter(
                            envelope.clone(),
                            format!(
                                "process `{}` could not decode `{}`: {reason}",
                                process.name(),
                                envelope.name
                            ),
                        ),
                    }
                }
            }
            MessageKind::Command => {
                let Some(handler) = self.handlers.get(envelope.name.as_ref()).cloned() else {
                    let reason =
                        format!("no handler is registered for command `{}`", envelope.name);
                    self.dead_letter(envelope, reason);
                    return;
                };
                self.start();
                let ctx = CommandContext {
                    engine: Engine { shared: self.clone() },
                    message_id: envelope.id,
                    published: Arc::new(AtomicU64::new(0)),
                };
                let shared = self.clone();
                let span = info_span!("command", command = %envelope.name, id = %envelope.id);
                tokio::spawn(
                    async move {
                        match handler(envelope.clone(), ctx).await {
                            Ok(()) => shared.stats.lock().unwrap().commands_delivered += 1,
                            Err(error) => {
                                let reason =
                                    format!("handler of `{}` failed: {error}", envelope.name);
                                shared.dead_letter(envelope, reason);
                            }
                        }
                        shared.finish();
                    }
                    .instrument(span),
                );
            }
        }
    }

    fn dead_letter(&self, envelope: Envelope, reason: String) {
        warn!(message = %envelope.name, id = %envelope.id, %reason, "dead-lettered");
        self.stats.lock().unwrap().dead_lettered += 1;
        self.dead_letters.lock().unwrap().push(DeadLetter { envelope, reason });
    }

    fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl CommandContext {
    /// Publishes an event in answer to the command. Its id is derived from
    /// the command's id, so a redelivered command publishes the same ids.
    pub fn publish<E: Event>(&self, event: E) -> MessageId {
        let mut envelope = Envelope::event(event);
        let index = self.published.fetch_add(1, Ordering::Relaxed);
        envelope.id = self.message_id.derive(u32::try_from(index).unwrap_or(u32::MAX));
        envelope.causation = Some(self.message_id);
        let id = envelope.id;
        self.engine.shared.dispatch(envelope);
        id
    }

    /// The id of the command being handled.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }
}

/// A process with its type erased, as the engine holds it.
trait Runner: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn inputs(&self) -> Vec<&'static str>;
    /// Decodes and correlates the event: the shard it belongs to, and the job that handles it.
    fn route(
        self: Arc<Self>,
        envelope: &Envelope,
    ) -> Result<(u64, Job), crate::message::DecodeError>;
}

/// The instances of one process. One instance is only ever handled by the
/// worker its key hashes to, so the lock is held briefly and never across
/// an `.await`.
struct ProcessRunner<P: Process> {
    instances: Mutex<HashMap<P::Key, Instance<P>>>,
    /// Keys of completed instances and their final state.
    completed: Mutex<HashMap<P::Key, P::State>>,
}

struct Instance<P: Process> {
    state: P::State,
    data: P::Data,
    version: u64,
}

impl<P: Process> Default for ProcessRunner<P> {
    fn default() -> Self {
        ProcessRunner {
            instances: Mutex::new(HashMap::new()),
            completed: Mutex::new(HashMap::new()),
        }
    }
}

impl<P: Process> ProcessRunner<P> {
    fn status(&self, key: &P::Key) -> Option<InstanceStatus<P>> {
        if let Some(state) = self.completed.lock().unwrap().get(key) {
            return Some(InstanceStatus::Completed { state: *state });
        }
        let instances = self.instances.lock().unwrap();
        let instance = instances.get(key)?;
        Some(InstanceStatus::Running { state: instance.state, data: instance.data.clone() })
    }

    /// Loads the instance, decides, applies the decision and dispatches what it sends.
    fn handle(&self, shared: &Arc<Shared>, key: P::Key, input: P::Input, envelope: &Envelope) {
        let span = info_span!("handle", process = P::NAME, key = ?key, input = %envelope.name, id = %envelope.id);
        let _entered = span.enter();
        if let Some(state) = self.completed.lock().unwrap().get(&key) {
            info!(state = ?state, "{}[{key:?}] {} arrived after completion: recorded, not restarted", P::NAME, envelope.name);
            shared.stats.lock().unwrap().after_completion += 1;
            return;
        }
        let mut instances = self.instances.lock().unwrap();
        let existing = instances.get(&key);
        let (state, data) = match existing {
            Some(instance) => (instance.state, &instance.data),
            None => (P::INITIAL, &P::Data::default()),
        };
        let ctx = Context { key: &key, now: envelope.time, message_id: envelope.id };
        let decision = P::decide(state, data, &input, &ctx);
        if decision.outcome == Outcome::Ignored {
            let mut stats = shared.stats.lock().unwrap();
            if existing.is_none() {
                debug!(state = ?state, "{}[{key:?}] {} ignored by the initial state: no instance created", P::NAME, envelope.name);
                stats.ignored_at_start += 1;
            } else {
                debug!(state = ?state, "{}[{key:?}] {} ignored in {state:?}", P::NAME, envelope.name);
                stats.ignored += 1;
            }
            return;
        }
        let next = decision.state;
        let data = decision.data.unwrap_or_else(|| data.clone());
        let version = existing.map_or(1, |i| i.version + 1);
        let sends: Vec<&'static str> = decision.outputs.iter().map(Outgoing::name).collect();
        info!(
            from = ?state, to = ?next, sends = ?sends,
            "{}[{key:?}] {}: {state:?} -> {next:?}, sends {sends:?}", P::NAME, envelope.name
        );
        if P::is_final(next) {
            instances.remove(&key);
            info!(state = ?next, "{}[{key:?}] completed in {next:?}", P::NAME);
            self.completed.lock().unwrap().insert(key, next);
        } else {
            instances.insert(key, Instance { state: next, data, version });
        }
        drop(instances);
        shared.stats.lock().unwrap().handled += 1;
        for (index, output) in decision.outputs.into_iter().enumerate() {
            let outgoing = Envelope {
                id: envelope.id.derive(u32::try_from(index).unwrap_or(u32::MAX)),
                name: std::borrow::Cow::Borrowed(output.name()),
                kind: output.kind(),
                causation: Some(envelope.id),
                time: envelope.time,
                body: output.into_body(),
            };
            shared.dispatch(outgoing);
        }
    }
}

impl<P: Process> Runner for ProcessRunner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn inputs(&self) -> Vec<&'static str> {
        P::routes().iter().map(|r| r.event).collect()
    }

    fn route(
        self: Arc<Self>,
        envelope: &Envelope,
    ) -> Result<(u64, Job), crate::message::DecodeError> {
        let Some(route) = P::routes().iter().find(|r| r.event == envelope.name) else {
            unreachable!("the engine routes to a process only the events it subscribed to")
        };
        let (key, input) = (route.decode)(envelope)?;
        let mut hasher = DefaultHasher::new();
        P::NAME.hash(&mut hasher);
        key.hash(&mut hasher);
        let shard = hasher.finish();
        let envelope = envelope.clone();
        let job: Job = Box::new(move |shared| self.handle(shared, key, input, &envelope));
        Ok((shard, job))
    }
}
