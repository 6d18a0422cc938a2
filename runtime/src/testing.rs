//! Test support for users' processes: a [`Scenario`] that runs the pure
//! `decide` (given events, when an event or a timer, then commands, state
//! and timers), and a [`TestEngine`] that runs the whole engine in memory on
//! a [`ManualClock`], so that tests move time instead of sleeping, and a
//! [`FaultyStore`] that fails on demand, for tests of what the engine does
//! when its store misbehaves.
//!
//! The `expect_*` methods panic with a message that shows what was expected
//! and what happened, as assertions do; the `check_*` methods return the
//! same message as an error instead.

mod faulty;

pub use faulty::FaultyStore;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::bus::InProcessBus;
use crate::clock::{Clock, ManualClock};
use crate::engine::{Engine, EngineBuilder};
use crate::message::{Command, Envelope, Event, MessageId, MessageKind, Timestamp};
use crate::process::{Context, Handles, Outcome, Outgoing, Process, TimerOp};
use crate::store::MemoryStore;

/// A story told to one instance of `P`: what happened before (`given`),
/// the message under test (`when`), and what it should lead to (`then`).
/// Instances are created, ignored and completed as the engine does it.
pub struct Scenario<P: Process> {
    key: P::Key,
    now: Timestamp,
    instance: Instance<P>,
    step: u128,
}

/// What a message under test led to.
pub struct Then<P: Process> {
    /// What `decide` answered, or `None` when it was not asked: the instance
    /// had completed, or the timer was not pending.
    pub outcome: Option<Outcome>,
    /// Why `decide` was not asked, when it was not.
    pub skipped: Option<String>,
    /// Whether the instance exists (was created and not merely ignored).
    pub exists: bool,
    pub completed: bool,
    pub state: P::State,
    pub data: P::Data,
    /// The commands and events decided, in order, with their derived ids.
    pub sent: Vec<Envelope>,
    /// The pending timers after the message, soonest first.
    pub timers: Vec<(P::Timer, Timestamp)>,
}

/// A message a test expects to be sent: its name, kind and JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub name: String,
    pub kind: MessageKind,
    pub json: serde_json::Value,
}

/// An expectation that did not hold, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch(pub String);

struct Instance<P: Process> {
    exists: bool,
    completed: bool,
    state: P::State,
    data: P::Data,
    timers: Vec<(P::Timer, Timestamp)>,
}

/// Expects the command `command` to be sent.
pub fn command<C: Command>(command: C) -> Sent {
    sent(C::NAME, MessageKind::Command, &command)
}

/// Expects the event `event` to be published.
pub fn event<E: Event>(event: E) -> Sent {
    sent(E::NAME, MessageKind::Event, &event)
}

fn sent(name: &str, kind: MessageKind, value: &impl Serialize) -> Sent {
    let json = serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("<cannot be written as JSON: {e}>")));
    Sent { name: name.to_owned(), kind, json }
}

impl Sent {
    /// The expectation an envelope meets.
    pub fn of(envelope: &Envelope) -> Sent {
        let json = envelope
            .body
            .to_json()
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| serde_json::Value::String(format!("{:?}", envelope.body)));
        Sent { name: envelope.name.to_string(), kind: envelope.kind, json }
    }
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind.as_str(), self.name, self.json)
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

impl<P: Process> Scenario<P> {
    /// A story about the instance with key `key`, starting at
    /// [`ManualClock::EPOCH`].
    pub fn new(key: P::Key) -> Scenario<P> {
        Scenario {
            key,
            now: ManualClock::EPOCH,
            instance: Instance {
                exists: false,
                completed: false,
                state: P::INITIAL,
                data: P::Data::default(),
                timers: Vec::new(),
            },
            step: 0,
        }
    }

    /// Sets the time of the next messages.
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// Moves the time of the next messages forward.
    pub fn after(mut self, by: Duration) -> Self {
        self.now = self.now + by;
        self
    }

    /// An event that happened before the one under test.
    pub fn given<E: Event>(mut self, event: E) -> Self
    where
        // `Handles` first: for an event the process does not take, its
        // message says so in words.
        P: Handles<E>,
        P::Input: From<E>,
    {
        self.run(E::NAME, P::Input::from(event));
        self
    }

    /// A timer that fired before the message under test (at its time, if it is pending).
    pub fn given_timer(mut self, timer: P::Timer) -> Self {
        self.fire(timer);
        self
    }

    /// The event under test.
    pub fn when<E: Event>(mut self, event: E) -> Then<P>
    where
        // `Handles` first: for an event the process does not take, its
        // message says so in words.
        P: Handles<E>,
        P::Input: From<E>,
    {
        let (outcome, skipped, sent) = self.run(E::NAME, P::Input::from(event));
        self.then(outcome, skipped, sent)
    }

    /// The timer under test: it fires at its time, if it is pending.
    pub fn when_timer(mut self, timer: P::Timer) -> Then<P> {
        let (outcome, skipped, sent) = self.fire(timer);
        self.then(outcome, skipped, sent)
    }

    fn then(
        self,
        outcome: Option<Outcome>,
        skipped: Option<String>,
        sent: Vec<Envelope>,
    ) -> Then<P> {
        let mut timers = self.instance.timers;
        timers.sort_by_key(|(_, at)| *at);
        Then {
            outcome,
            skipped,
            exists: self.instance.exists,
            completed: self.instance.completed,
            state: self.instance.state,
            data: self.instance.data,
            sent,
            timers,
        }
    }

    fn fire(&mut self, timer: P::Timer) -> (Option<Outcome>, Option<String>, Vec<Envelope>) {
        let Some(&(_, at)) = self.instance.timers.iter().find(|(t, _)| *t == timer) else {
            return (None, Some(format!("timer {timer:?} is not pending")), Vec::new());
        };
        self.instance.timers.retain(|(t, _)| *t != timer);
        self.now = self.now.max(at);
        self.run(&format!("timer {timer:?}"), P::timer_input(timer))
    }

    /// Decides one input as the engine would.
    fn run(
        &mut self,
        name: &str,
        input: P::Input,
    ) -> (Option<Outcome>, Option<String>, Vec<Envelope>) {
        self.step += 1;
        let id = MessageId::from_uuid(uuid::Uuid::from_u128(self.step));
        if self.instance.completed {
            let note = format!("{name} arrived after the instance completed");
            return (None, Some(note), Vec::new());
        }
        let ctx = Context { key: &self.key, now: self.now, message_id: id };
        let decision = P::decide(self.instance.state, &self.instance.data, &input, &ctx);
        if decision.outcome == Outcome::Ignored {
            return (Some(Outcome::Ignored), None, Vec::new());
        }
        let instance = &mut self.instance;
        instance.exists = true;
        instance.state = decision.state;
        if let Some(data) = decision.data {
            instance.data = data;
        }
        for op in decision.timers {
            match op {
                TimerOp::Schedule { timer, at } => {
                    instance.timers.retain(|(t, _)| *t != timer);
                    instance.timers.push((timer, at));
                }
                TimerOp::Cancel { timer } => instance.timers.retain(|(t, _)| *t != timer),
            }
        }
        if P::is_final(instance.state) {
            instance.completed = true;
            instance.timers.clear();
        }
        let sent = decision
            .outputs
            .into_iter()
            .enumerate()
            .map(|(n, output)| Envelope {
                id: id.derive_in(P::NAME, n as u32),
                name: output.name().into(),
                kind: output.kind(),
                causation: Some(id),
                time: self.now,
                body: output.into_body(),
            })
            .collect();
        (Some(Outcome::Handled), None, sent)
    }
}

impl<P: Process> Then<P> {
    pub fn check_state(&self, state: P::State) -> Result<(), Mismatch> {
        if self.state == state {
            return Ok(());
        }
        Err(Mismatch(format!(
            "expected state {state:?}, but the instance is in {:?}{}",
            self.state,
            self.why()
        )))
    }

    /// Checks the commands and events sent, in order, by name, kind and JSON.
    pub fn check_sent(&self, expected: &[Sent]) -> Result<(), Mismatch> {
        let actual: Vec<Sent> = self.sent.iter().map(Sent::of).collect();
        if actual == expected {
            return Ok(());
        }
        let list = |sent: &[Sent]| {
            if sent.is_empty() {
                "  nothing\n".to_owned()
            } else {
                sent.iter().map(|s| format!("  {s}\n")).collect()
            }
        };
        Err(Mismatch(format!(
            "expected to send:\n{}but sent:\n{}{}",
            list(expected),
            list(&actual),
            self.why()
        )))
    }

    /// Checks the pending timers, in any order.
    pub fn check_timers(&self, expected: &[(P::Timer, Timestamp)]) -> Result<(), Mismatch> {
        let mut expected = expected.to_vec();
        expected.sort_by_key(|(_, at)| *at);
        if expected == self.timers {
            return Ok(());
        }
        Err(Mismatch(format!("expected timers {expected:?}, but pending are {:?}", self.timers)))
    }

    pub fn check_ignored(&self) -> Result<(), Mismatch> {
        match self.outcome {
            Some(Outcome::Ignored) => Ok(()),
            Some(Outcome::Handled) => Err(Mismatch(format!(
                "expected the message to be ignored, but it was handled (now in {:?})",
                self.state
            ))),
            None => Err(Mismatch(format!("expected the message to be ignored{}", self.why()))),
        }
    }

    pub fn check_completed(&self) -> Result<(), Mismatch> {
        if self.completed {
            return Ok(());
        }
        Err(Mismatch(format!("expected the instance to complete, but it is in {:?}", self.state)))
    }

    pub fn check_data(&self, data: &P::Data) -> Result<(), Mismatch>
    where
        P::Data: PartialEq,
    {
        if self.data == *data {
            return Ok(());
        }
        Err(Mismatch(format!("expected data {data:?}, but it is {:?}", self.data)))
    }

    pub fn expect_state(self, state: P::State) -> Self {
        self.or_panic(Then::check_state, state)
    }

    pub fn expect_sent(self, expected: &[Sent]) -> Self {
        self.or_panic(Then::check_sent, expected)
    }

    /// Expects that nothing was sent.
    pub fn expect_nothing_sent(self) -> Self {
        self.or_panic(Then::check_sent, &[][..])
    }

    pub fn expect_timers(self, expected: &[(P::Timer, Timestamp)]) -> Self {
        self.or_panic(Then::check_timers, expected)
    }

    pub fn expect_ignored(self) -> Self {
        self.or_panic(|then, ()| then.check_ignored(), ())
    }

    pub fn expect_completed(self) -> Self {
        self.or_panic(|then, ()| then.check_completed(), ())
    }

    pub fn expect_data(self, data: &P::Data) -> Self
    where
        P::Data: PartialEq,
    {
        self.or_panic(Then::check_data, data)
    }

    fn or_panic<A>(
        self,
        check: impl FnOnce(&Self, A) -> Result<(), Mismatch>,
        argument: A,
    ) -> Self {
        if let Err(mismatch) = check(&self, argument) {
            panic!("{}: {mismatch}", P::NAME);
        }
        self
    }

    fn why(&self) -> String {
        match &self.skipped {
            Some(reason) => format!(" ({reason})"),
            None => String::new(),
        }
    }
}

/// The engine in memory on a manual clock, with every message that crosses
/// its bus recorded. Must be started inside a tokio runtime.
pub struct TestEngine {
    pub engine: Engine,
    pub clock: ManualClock,
    pub store: MemoryStore,
    sent: Arc<Mutex<Vec<Envelope>>>,
}

impl TestEngine {
    /// An engine configured by `configure` (processes, handlers), on a
    /// fresh memory store and a clock at [`ManualClock::EPOCH`].
    pub fn start(configure: impl FnOnce(EngineBuilder) -> EngineBuilder) -> TestEngine {
        TestEngine::on_store(MemoryStore::new(), ManualClock::default(), configure)
    }

    /// A new engine on the store and clock of this one, as after a restart.
    /// Drop the old one first: it is the one that crashed.
    pub fn restart(&self, configure: impl FnOnce(EngineBuilder) -> EngineBuilder) -> TestEngine {
        TestEngine::on_store(self.store.clone(), self.clock.clone(), configure)
    }

    /// An engine on `store` and `clock`: for a store a test has filled.
    pub fn on_store(
        store: MemoryStore,
        clock: ManualClock,
        configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> TestEngine {
        let bus = InProcessBus::new();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let recorder = sent.clone();
        bus.observe(move |envelope| {
            recorder.lock().unwrap_or_else(|p| p.into_inner()).push(envelope.clone())
        });
        let builder = Engine::builder().store(store.clone()).clock(clock.clone()).bus(bus);
        let engine = configure(builder).build();
        TestEngine { engine, clock, store, sent }
    }

    /// Moves the clock forward, then waits until every timer due by then,
    /// and everything it led to, has been handled.
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.engine.idle().await;
    }

    /// The time by the test's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Every message published on the engine's bus so far, in order.
    pub fn sent(&self) -> Vec<Envelope> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The commands of type `C` sent so far, in order.
    pub fn commands<C: Command>(&self) -> Vec<C> {
        self.decoded(C::NAME, MessageKind::Command)
    }

    /// The events of type `E` published so far, in order.
    pub fn events<E: Event>(&self) -> Vec<E> {
        self.decoded(E::NAME, MessageKind::Event)
    }

    fn decoded<T: serde::de::DeserializeOwned + Clone + 'static>(
        &self,
        name: &str,
        kind: MessageKind,
    ) -> Vec<T> {
        self.sent()
            .iter()
            .filter(|e| e.kind == kind && e.name == name)
            .filter_map(|e| e.body.decode().ok())
            .collect()
    }
}

impl fmt::Debug for TestEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestEngine").field("clock", &self.clock).finish_non_exhaustive()
    }
}

impl<P: Process> fmt::Debug for Scenario<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("key", &self.key)
            .field("now", &self.now)
            .field("state", &self.instance.state)
            .finish_non_exhaustive()
    }
}

impl<P: Process> fmt::Debug for Then<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Then")
            .field("outcome", &self.outcome)
            .field("state", &self.state)
            .field("data", &self.data)
            .field("sent", &self.sent.iter().map(Sent::of).collect::<Vec<_>>())
            .field("timers", &self.timers)
            .finish()
    }
}
