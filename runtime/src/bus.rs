//! The [`Bus`] that carries messages between engines, command handlers and
//! other subscribers, and the [`InProcessBus`] that does it inside one
//! process.
//!
//! Delivery is at least once and acknowledged: a [`Receiver`] gets every
//! message with an [`Ack`], and settles it once the message is durably
//! handled ([`Ack::done`]), refused for good ([`Ack::reject`]), or not at
//! all (dropping the ack asks for a redelivery). Whoever published the
//! messages learns the outcome of all of them at once through its
//! [`Settle`]. The outbox relay marks its rows sent only then, so a message
//! is never lost between two engines: it is sent again until it is handled.
//!
//! A bus for several nodes (`JetStreamBus` in the `switchyard-nats` crate)
//! maps this directly: publishing resolves on the stream's acknowledgement,
//! [`Ack::done`] is an ack, [`Ack::reject`] a termination, and a dropped
//! ack a negative ack.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::BoxFuture;
use crate::message::{Envelope, MessageId, MessageKind, NameMap};

/// Carries messages to receivers.
pub trait Bus: Send + Sync + 'static {
    /// Hands `messages` to the bus in order. The future resolves once they
    /// are ordered after everything published before through this bus;
    /// `settle` is then called once, when every receiver has settled them,
    /// or, for a broker that keeps messages durably, once it has stored
    /// them: from then on redelivery is the broker's, and what a receiver
    /// refuses goes to that receiver's dead letters.
    /// If the future fails, `settle` is never called and nothing was sent.
    fn publish(
        &self,
        messages: Vec<Envelope>,
        settle: Settle,
    ) -> BoxFuture<'static, Result<(), BusError>>;

    /// Publishes one message: the same as [`Bus::publish`] with a list of
    /// one, which a bus may do without making the list.
    fn publish_one(
        &self,
        message: Envelope,
        settle: Settle,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        self.publish(vec![message], settle)
    }

    /// Delivers to `receiver` the events and commands named in `subscription`.
    /// Several receivers of one command share its messages.
    fn subscribe(&self, subscription: Subscription, receiver: Arc<dyn Receiver>);
}

/// Takes delivered messages. Must not block: it hands the message on and
/// settles the ack later.
pub trait Receiver: Send + Sync + 'static {
    fn receive(&self, message: Envelope, ack: Ack);
}

/// The wire names a receiver takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub events: Vec<String>,
    pub commands: Vec<String>,
}

/// Called once, when every delivery of a published batch has settled.
pub struct Settle(Then);

enum Then {
    Call(Box<dyn FnOnce(Settled) + Send>),
    /// Hands the outcome and the message to a sink shared by many
    /// publishes, with the token the publisher gave: no allocation and no
    /// reference count per message.
    Sink(&'static dyn SettleSink, u64, Envelope),
}

/// Takes the outcomes of many single-message publishes.
pub(crate) trait SettleSink: Send + Sync {
    fn settled(&self, token: u64, message: Envelope, settled: Settled);
}

/// How the deliveries of a published batch settled. Messages named in
/// neither list were handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Refused for good: sending them again would not help.
    pub rejected: Vec<Rejection>,
    /// Not acknowledged: they should be sent again.
    pub unacknowledged: Vec<MessageId>,
    /// Taken, but a receiver could not handle them and recorded them in its
    /// dead letters, with the reason: they are settled and are not sent
    /// again, but whoever waits for them should know that they were not
    /// handled.
    pub dead_lettered: Vec<Rejection>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub id: MessageId,
    pub reason: String,
}

/// The receipt of one delivered message. Settle it with [`Ack::done`] or
/// [`Ack::reject`]; dropping it unsettled asks for the message again.
pub struct Ack {
    target: Target,
    id: MessageId,
}

/// Where an ack's outcome goes.
enum Target {
    /// Nobody waits for it, or it has been settled.
    Nobody,
    /// The only delivery of its batch: settles the batch directly.
    Alone(Settle),
    /// One of several deliveries of its batch.
    Shared(Arc<Latch>),
}

/// Why the bus could not take messages.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the bus has shut down")]
    Closed,
}

/// A bus inside one process: events go to every subscriber, each command
/// to one of the receivers that handle it, synchronously and in order.
/// Clones share their subscribers, so several engines can talk through one.
#[derive(Clone, Default)]
pub struct InProcessBus {
    shared: Arc<BusShared>,
}

type Observer = Arc<dyn Fn(&Envelope) + Send + Sync>;

#[derive(Default)]
struct BusShared {
    routes: RwLock<Arc<Routes>>,
    /// Round-robin position per command, over its receivers.
    turn: AtomicUsize,
}

#[derive(Clone, Default)]
struct Routes {
    events: NameMap<String, Vec<Arc<dyn Receiver>>>,
    commands: NameMap<String, Vec<Arc<dyn Receiver>>>,
    observers: Vec<Observer>,
}

/// Counts the outstanding deliveries of one published batch.
struct Latch {
    remaining: AtomicUsize,
    settled: Mutex<Settled>,
    settle: Mutex<Option<Settle>>,
}

enum Outcome {
    Done,
    Rejected(String),
    Unacknowledged,
    DeadLettered(String),
}

impl Settle {
    pub fn new(settle: impl FnOnce(Settled) + Send + 'static) -> Settle {
        Settle(Then::Call(Box::new(settle)))
    }

    /// Settles the publish of `message` into `sink`.
    pub(crate) fn sink(sink: &'static dyn SettleSink, token: u64, message: Envelope) -> Settle {
        Settle(Then::Sink(sink, token, message))
    }

    /// For messages whose outcome nobody waits for.
    pub fn ignore() -> Settle {
        Settle::new(|_| {})
    }

    pub fn call(self, settled: Settled) {
        match self.0 {
            Then::Call(settle) => settle(settled),
            Then::Sink(sink, token, message) => sink.settled(token, message, settled),
        }
    }
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Settle")
    }
}

impl Settled {
    /// Whether every message was settled: handled, or recorded in a
    /// receiver's dead letters. Nothing is left for the publisher to do.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.unacknowledged.is_empty()
    }

    fn of(id: MessageId, outcome: Outcome) -> Settled {
        let mut settled = Settled::default();
        match outcome {
            Outcome::Done => {}
            Outcome::Rejected(reason) => settled.rejected.push(Rejection { id, reason }),
            Outcome::Unacknowledged => settled.unacknowledged.push(id),
            Outcome::DeadLettered(reason) => settled.dead_lettered.push(Rejection { id, reason }),
        }
        settled
    }
}

impl Ack {
    /// The receipt of one message whose outcome goes to `settle`.
    pub fn new(id: MessageId, settle: Settle) -> Ack {
        Ack { target: Target::Alone(settle), id }
    }

    /// A receipt nobody waits for.
    pub fn detached(id: MessageId) -> Ack {
        Ack { target: Target::Nobody, id }
    }

    fn shared(latch: &Arc<Latch>, id: MessageId) -> Ack {
        latch.add();
        Ack { target: Target::Shared(latch.clone()), id }
    }

    /// The id of the message this acknowledges.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The message is handled, and its effects are durable.
    pub fn done(mut self) {
        self.settle(Outcome::Done);
    }

    /// The message can never be handled here; sending it again will not help.
    pub fn reject(mut self, reason: impl Into<String>) {
        self.settle(Outcome::Rejected(reason.into()));
    }

    /// The message could not be handled, and the receiver has recorded it
    /// in its dead letters, durably: it must not be sent again, and whoever
    /// waits for it learns why.
    pub fn dead_lettered(mut self, reason: impl Into<String>) {
        self.settle(Outcome::DeadLettered(reason.into()));
    }

    fn settle(&mut self, outcome: Outcome) {
        match std::mem::replace(&mut self.target, Target::Nobody) {
            Target::Nobody => {}
            Target::Alone(settle) => settle.call(Settled::of(self.id, outcome)),
            Target::Shared(latch) => latch.settle_one(self.id, outcome),
        }
    }

    /// Gives the ack up unsettled when settling it would only tell the
    /// detached-publish sink under `token` that the message was handled:
    /// nobody waits for it, or only that sink does, and its owner (the
    /// engine with that number) handles failures of its own receivers
    /// itself. Returns the ack otherwise.
    pub(crate) fn unless_only(mut self, token: u64) -> Option<Ack> {
        let only = match &self.target {
            Target::Nobody => true,
            Target::Alone(Settle(Then::Sink(_, owner, _))) => *owner == token,
            _ => false,
        };
        if !only {
            return Some(self);
        }
        self.target = Target::Nobody;
        None
    }

    /// One receipt per part, for a message that several parts of a receiver
    /// handle: this one is done when all are, rejected if one is,
    /// unacknowledged if one is and none rejected it, and dead-lettered if
    /// one part dead-lettered it and every other settled it.
    pub fn split(self, parts: usize) -> Vec<Ack> {
        match parts {
            0 => {
                self.done();
                Vec::new()
            }
            1 => vec![self],
            _ => {
                let id = self.id;
                let parent = std::sync::Mutex::new(Some(self));
                let latch = Latch::new(Settle::new(move |settled: Settled| {
                    let parent = parent.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let Some(parent) = parent else { return };
                    if let Some(first) = settled.rejected.into_iter().next() {
                        parent.reject(first.reason);
                    } else if !settled.unacknowledged.is_empty() {
                        // Dropped unsettled: asks for the message again.
                        drop(parent);
                    } else if let Some(first) = settled.dead_lettered.into_iter().next() {
                        parent.dead_lettered(first.reason);
                    } else {
                        parent.done();
                    }
                }));
                let parts = (0..parts).map(|_| Ack::shared(&latch, id)).collect();
                latch.settle_one(id, Outcome::Done);
                parts
            }
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.settle(Outcome::Unacknowledged);
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waited_for = !matches!(self.target, Target::Nobody);
        f.debug_struct("Ack").field("id", &self.id).field("waited_for", &waited_for).finish()
    }
}

impl Latch {
    /// A latch with one count held by its creator, who settles it once
    /// every delivery has its ack, so that it cannot settle early.
    fn new(settle: Settle) -> Arc<Latch> {
        Arc::new(Latch {
            remaining: AtomicUsize::new(1),
            settled: Mutex::new(Settled::default()),
            settle: Mutex::new(Some(settle)),
        })
    }

    fn add(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    fn settle_one(&self, id: MessageId, outcome: Outcome) {
        if !matches!(outcome, Outcome::Done) {
            let mut settled = lock(&self.settled);
            let one = Settled::of(id, outcome);
            settled.rejected.extend(one.rejected);
            settled.unacknowledged.extend(one.unacknowledged);
            settled.dead_lettered.extend(one.dead_lettered);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let settled = std::mem::take(&mut *lock(&self.settled));
            if let Some(settle) = lock(&self.settle).take() {
                settle.call(settled);
            }
        }
    }
}

/// The hand-off of the in-process bus, done before `publish` returns. A unit
/// struct, so that boxing it allocates nothing.
struct Accepted;

impl std::future::Future for Accepted {
    type Output = Result<(), BusError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Locks a mutex whose contents stay consistent even if a holder panicked:
/// every critical section here is a single push or take.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl InProcessBus {
    pub fn new() -> InProcessBus {
        InProcessBus::default()
    }

    /// Calls `observer` with every message published from now on, before it
    /// is delivered: for tests and tools that want to see the traffic.
    pub fn observe(&self, observer: impl Fn(&Envelope) + Send + Sync + 'static) {
        self.update(|routes| routes.observers.push(Arc::new(observer)));
    }

    fn routes(&self) -> Arc<Routes> {
        self.shared.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Routes)) {
        let mut routes = self.shared.routes.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**routes).clone();
        change(&mut next);
        *routes = Arc::new(next);
    }
}

impl InProcessBus {
    /// The one receiver of a message, if it has exactly one.
    fn only_receiver<'r>(
        &self,
        routes: &'r Routes,
        message: &Envelope,
    ) -> Option<&'r Arc<dyn Receiver>> {
        match message.kind {
            MessageKind::Event => match routes.events.get(message.name.as_ref()).map(|r| &r[..]) {
                Some([only]) => Some(only),
                _ => None,
            },
            MessageKind::Command => self.handler(routes, message),
        }
    }

    /// The receiver a command goes to: its handlers take turns.
    fn handler<'r>(&self, routes: &'r Routes, message: &Envelope) -> Option<&'r Arc<dyn Receiver>> {
        let receivers = routes.commands.get(message.name.as_ref())?;
        if receivers.is_empty() {
            return None;
        }
        let turn = self.shared.turn.fetch_add(1, Ordering::Relaxed);
        Some(&receivers[turn % receivers.len()])
    }
}

impl fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.routes();
        let mut events: Vec<_> = routes.events.keys().collect();
        let mut commands: Vec<_> = routes.commands.keys().collect();
        events.sort();
        commands.sort();
        f.debug_struct("InProcessBus")
            .field("events", &events)
            .field("commands", &commands)
            .finish()
    }
}

impl Bus for InProcessBus {
    fn publish(
        &self,
        mut messages: Vec<Envelope>,
        settle: Settle,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        if messages.len() == 1
            && let Some(message) = messages.pop()
        {
            return self.publish_one(message, settle);
        }
        let routes = self.routes();
        for message in &messages {
            for observer in &routes.observers {
                observer(message);
            }
        }
        deliver(self, &routes, messages, settle);
        Box::pin(Accepted)
    }

    fn publish_one(
        &self,
        message: Envelope,
        settle: Settle,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        let routes = self.routes();
        for observer in &routes.observers {
            observer(&message);
        }
        // The common case, one message to one receiver, needs no latch.
        match self.only_receiver(&routes, &message) {
            Some(receiver) => {
                let id = message.id;
                receiver.receive(message, Ack::new(id, settle));
            }
            None => deliver(self, &routes, vec![message], settle),
        }
        Box::pin(Accepted)
    }

    fn subscribe(&self, subscription: Subscription, receiver: Arc<dyn Receiver>) {
        self.update(|routes| {
            for event in subscription.events {
                routes.events.entry(event).or_default().push(receiver.clone());
            }
            for command in subscription.commands {
                routes.commands.entry(command).or_default().push(receiver.clone());
            }
        });
    }
}

/// Delivers messages to every receiver of each, settling the publish once
/// all of them have settled.
fn deliver(bus: &InProcessBus, routes: &Routes, messages: Vec<Envelope>, settle: Settle) {
    let latch = Latch::new(settle);
    for message in messages {
        let id = message.id;
        match message.kind {
            MessageKind::Event => {
                let receivers = routes.events.get(message.name.as_ref()).map_or(&[][..], |r| r);
                // Events are facts: one nobody subscribes to is handled by
                // being published.
                if let Some((last, others)) = receivers.split_last() {
                    for receiver in others {
                        receiver.receive(message.clone(), Ack::shared(&latch, id));
                    }
                    last.receive(message, Ack::shared(&latch, id));
                }
            }
            MessageKind::Command => match bus.handler(routes, &message) {
                Some(receiver) => receiver.receive(message, Ack::shared(&latch, id)),
                None => {
                    let reason = format!("no handler is registered for command `{}`", message.name);
                    latch.add();
                    latch.settle_one(id, Outcome::Rejected(reason));
                }
            },
        }
    }
    latch.settle_one(MessageId::from_uuid(uuid::Uuid::nil()), Outcome::Done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Body, Envelope};

    struct Keep(Mutex<Vec<(Envelope, Ack)>>);

    impl Receiver for Keep {
        fn receive(&self, message: Envelope, ack: Ack) {
            self.0.lock().unwrap().push((message, ack));
        }
    }

    fn event(name: &'static str) -> Envelope {
        Envelope::new(name, MessageKind::Event, Body::value(1u32))
    }

    fn settled_into(slot: &Arc<Mutex<Option<Settled>>>) -> Settle {
        let slot = slot.clone();
        Settle::new(move |settled| *slot.lock().unwrap() = Some(settled))
    }

    #[test]
    fn a_batch_settles_when_every_delivery_has() {
        let bus = InProcessBus::new();
        let first = Arc::new(Keep(Mutex::new(Vec::new())));
        let second = Arc::new(Keep(Mutex::new(Vec::new())));
        let events = Subscription { events: vec!["A".into()], commands: vec![] };
        bus.subscribe(events.clone(), first.clone());
        bus.subscribe(events, second.clone());
        let slot = Arc::new(Mutex::new(None));
        drop(bus.publish(vec![event("A"), event("A"), event("Unheard")], settled_into(&slot)));

        let mut deliveries: Vec<_> = first.0.lock().unwrap().drain(..).collect();
        deliveries.extend(second.0.lock().unwrap().drain(..));
        assert_eq!(deliveries.len(), 4);
        let mut deliveries = deliveries.into_iter();
        let (_, last) = deliveries.next_back().unwrap();
        for (_, ack) in deliveries {
            ack.done();
        }
        assert_eq!(*slot.lock().unwrap(), None);
        let id = last.id();
        drop(last);
        assert_eq!(
            *slot.lock().unwrap(),
            Some(Settled { unacknowledged: vec![id], ..Settled::default() })
        );
    }

    #[test]
    fn a_command_without_a_handler_is_rejected_with_a_reason() {
        let bus = InProcessBus::new();
        let slot = Arc::new(Mutex::new(None));
        let command = Envelope::new("Ship", MessageKind::Command, Body::value(1u32));
        let id = command.id;
        drop(bus.publish(vec![command], settled_into(&slot)));
        let settled = slot.lock().unwrap().take().unwrap();
        assert_eq!(
            settled.rejected,
            vec![Rejection { id, reason: "no handler is registered for command `Ship`".into() }]
        );
    }

    #[test]
    fn a_split_ack_is_done_only_when_every_part_is() {
        let slot = Arc::new(Mutex::new(None));
        let id = MessageId::new();
        let mut parts = Ack::new(id, settled_into(&slot)).split(3);
        parts.pop().unwrap().done();
        parts.pop().unwrap().reject("bad");
        assert_eq!(*slot.lock().unwrap(), None);
        parts.pop().unwrap().done();
        let settled = slot.lock().unwrap().take().unwrap();
        assert_eq!(settled.rejected, vec![Rejection { id, reason: "bad".into() }]);
    }
}
