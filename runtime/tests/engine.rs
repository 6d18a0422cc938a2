//! The engine end to end on the memory store and a manual clock: instances,
//! timers, redelivery, failures and dead letters, restarts.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use switchyard_runtime::testing::{FaultyStore, TestEngine};
use switchyard_runtime::{
    Body, BoxFuture, Bus, BusError, CommandContext, DeadLetter, Engine, EngineBuilder, Envelope,
    Error, HandlerError, InProcessBus, InstanceStatus, Letter, ManualClock, MemoryStore,
    MessageKind, RetryPolicy, Settle, Store, Subscription,
};

/// Runs `Order` with handlers that accept `Ship` and `Nudge`.
fn orders(builder: EngineBuilder) -> EngineBuilder {
    builder
        .process::<Order>()
        .handle(|_: Ship, _| async { Ok(()) })
        .handle(|_: Nudge, _| async { Ok(()) })
}

fn placed(order: u32) -> Placed {
    Placed { order, amount: 100 + u64::from(order) }
}

async fn status(test: &TestEngine, order: u32) -> Option<InstanceStatus<Order>> {
    test.engine.instance::<Order>(&order).await.unwrap()
}

#[tokio::test]
async fn a_placed_order_is_reminded_then_expires_and_its_timers_go() {
    let test = TestEngine::start(orders);
    let start = test.now();
    test.engine.publish(placed(1));
    test.engine.idle().await;
    assert_eq!(
        test.engine.timers::<Order>(&1).await.unwrap(),
        [(OrderTimer::Remind, start + HOUR), (OrderTimer::Expire, start + EXPIRY)]
    );

    test.advance(HOUR).await;
    assert_eq!(test.commands::<Nudge>(), [Nudge { order: 1, reminders: 1 }]);
    // The reminder moved an hour on.
    assert_eq!(
        test.engine.timers::<Order>(&1).await.unwrap()[0],
        (OrderTimer::Remind, start + 2 * HOUR)
    );

    test.advance(22 * HOUR + Duration::from_secs(1)).await;
    assert_eq!(test.commands::<Nudge>().len(), 23);
    test.advance(HOUR).await;
    assert_eq!(test.events::<OrderExpired>(), [OrderExpired { order: 1 }]);
    assert_eq!(
        status(&test, 1).await,
        Some(InstanceStatus::Completed { state: OrderState::Expired })
    );
    assert_eq!(test.engine.timers::<Order>(&1).await.unwrap(), []);
    let stats = test.engine.stats();
    assert_eq!((stats.timers_fired, stats.handled, stats.dead_lettered), (24, 25, 0));
}

#[tokio::test]
async fn paying_cancels_the_timers_and_later_events_do_not_restart_the_order() {
    let test = TestEngine::start(orders);
    test.engine.publish(placed(2));
    test.engine.publish(Paid { order: 2 });
    test.engine.idle().await;
    assert_eq!(test.commands::<Ship>(), [Ship { order: 2, amount: 102 }]);
    assert_eq!(test.engine.timers::<Order>(&2).await.unwrap(), []);

    test.advance(48 * HOUR).await;
    assert!(test.commands::<Nudge>().is_empty(), "a cancelled timer fired");
    test.engine.publish(placed(2));
    test.engine.idle().await;
    assert_eq!(
        status(&test, 2).await,
        Some(InstanceStatus::Completed { state: OrderState::Shipped })
    );
    assert_eq!(test.engine.stats().after_completion, 1);
}

#[tokio::test]
async fn an_event_the_initial_state_ignores_creates_nothing_and_is_counted() {
    let test = TestEngine::start(orders);
    test.engine.publish(Paid { order: 3 });
    test.engine.idle().await;
    assert_eq!(status(&test, 3).await, None);
    let stats = test.engine.stats();
    assert_eq!((stats.ignored_at_start, stats.handled), (1, 0));
}

#[tokio::test]
async fn a_redelivered_event_changes_its_instance_once_and_sends_the_same_ids() {
    let test = TestEngine::start(orders);
    test.engine.publish(placed(4));
    test.engine.idle().await;
    let paid = Envelope::event(Paid { order: 4 });
    test.engine.deliver(paid.clone());
    test.engine.deliver(paid.clone());
    test.engine.idle().await;
    test.engine.submit(paid.clone()).await.unwrap();
    test.engine.idle().await;

    let ships: Vec<_> = test.sent().into_iter().filter(|e| e.name == "Ship").collect();
    assert_eq!(ships.len(), 1, "a duplicate was handled again: {ships:?}");
    assert_eq!(ships[0].id, paid.id.derive_in("Order", 0));
    assert_eq!(ships[0].causation, Some(paid.id));
    let stats = test.engine.stats();
    // The second delivery met the first in the inbox or after completion.
    assert_eq!(stats.handled, 2);
    assert_eq!(stats.duplicates + stats.after_completion, 2);
}

#[tokio::test]
async fn an_undecodable_event_is_dead_lettered_with_its_reason_and_can_be_replayed() {
    let test = TestEngine::start(orders);
    let broken = Envelope {
        body: Body::Json(Arc::from(&br#"{"order": "five"}"#[..])),
        ..Envelope::new("Placed", MessageKind::Event, Body::value(()))
    };
    // The caller learns that its message was not handled, and why.
    let submitted = test.engine.submit(broken.clone()).await;
    assert!(
        matches!(&submitted, Err(Error::DeadLettered { id, reason })
            if *id == broken.id && reason.starts_with("process `Order` could not decode")),
        "{submitted:?}"
    );
    test.engine.idle().await;
    let letters = test.engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    let DeadLetter { id, letter: Letter::Message(message), process, reason, .. } = &letters[0]
    else {
        panic!("expected a message, got {:?}", letters[0]);
    };
    assert_eq!((message.id, process.as_deref()), (broken.id, Some("Order")));
    assert!(reason.starts_with("process `Order` could not decode `Placed`"), "{reason}");

    // Replayed as it is, it fails again, and is recorded again: not lost.
    assert_eq!(test.engine.replay(&[*id]).await.unwrap(), 1);
    test.engine.idle().await;
    let letters = test.engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_ne!(letters[0].id, *id);
    assert_eq!(test.engine.stats().dead_lettered, 2);
}

#[tokio::test]
async fn a_panicking_decide_dead_letters_its_message_and_the_instance_goes_on() {
    let test = TestEngine::start(orders);
    test.engine.publish(placed(6));
    test.engine.publish(Poison { order: 6 });
    test.engine.publish(Paid { order: 6 });
    test.engine.idle().await;
    let letters = test.engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "`decide` panicked: poisoned order 6");
    assert_eq!(
        status(&test, 6).await,
        Some(InstanceStatus::Completed { state: OrderState::Shipped })
    );
}

#[tokio::test]
async fn a_command_without_a_handler_is_dead_lettered() {
    let test = TestEngine::start(|b| b.process::<Order>());
    test.engine.publish(placed(7));
    test.engine.publish(Paid { order: 7 });
    test.engine.idle().await;
    let letters = test.engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].name(), "Ship");
    assert_eq!(letters[0].reason, "no handler is registered for command `Ship`");
    // The outbox row was settled: nothing is left to send.
    assert!(test.store.pending_outbox().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_then_dead_lettered() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let test = TestEngine::start(move |b| {
        b.process::<Order>().retry(RetryPolicy { attempts: 3, ..RetryPolicy::default() }).handle(
            move |ship: Ship, _| {
                let calls = seen.clone();
                async move {
                    let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    // Order 8 succeeds at the second try; order 9 never does.
                    if ship.order == 8 && call >= 2 {
                        Ok(())
                    } else {
                        Err(HandlerError::from(format!("the warehouse is closed (call {call})")))
                    }
                }
            },
        )
    });
    test.engine.publish(placed(8));
    test.engine.publish(Paid { order: 8 });
    test.engine.idle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(test.engine.stats().commands_delivered, 1);

    test.engine.publish(placed(9));
    test.engine.publish(Paid { order: 9 });
    test.engine.idle().await;
    let letters = test.engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].reason,
        "the handler of `Ship` failed 3 times; last: the warehouse is closed (call 5)"
    );
    assert_eq!(test.engine.stats().retried, 3);
}

#[tokio::test]
async fn handlers_answer_with_events_that_reach_processes() {
    // `Nudge` is answered with `Paid`: the reminder makes the order ship.
    let test = TestEngine::start(|b| {
        b.process::<Order>().handle(|_: Ship, _| async { Ok(()) }).handle(
            |nudge: Nudge, ctx: CommandContext| async move {
                ctx.publish(Paid { order: nudge.order });
                Ok(())
            },
        )
    });
    test.engine.publish(placed(10));
    test.advance(HOUR).await;
    assert_eq!(test.commands::<Ship>(), [Ship { order: 10, amount: 110 }]);
    let paid = test.sent().into_iter().find(|e| e.name == "Paid").unwrap();
    let nudge = test.sent().into_iter().find(|e| e.name == "Nudge").unwrap();
    assert_eq!(paid.id, nudge.id.derive(0));
}

#[tokio::test]
async fn subscribers_see_the_events_processes_publish() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let seen = expired.clone();
    let test = TestEngine::start(move |b| {
        orders(b).subscribe(move |event: OrderExpired, _| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(event.order);
                Ok(())
            }
        })
    });
    test.engine.publish(placed(11));
    test.advance(25 * HOUR).await;
    assert_eq!(*expired.lock().unwrap(), [11]);
}

#[tokio::test]
async fn timers_and_instances_survive_a_restart() {
    let first = TestEngine::start(orders);
    first.engine.publish(placed(12));
    first.engine.idle().await;
    let second = first.restart(orders);
    drop(first);
    second.advance(HOUR).await;
    assert_eq!(second.commands::<Nudge>(), [Nudge { order: 12, reminders: 1 }]);
    second.engine.publish(Paid { order: 12 });
    second.engine.idle().await;
    assert_eq!(second.commands::<Ship>(), [Ship { order: 12, amount: 112 }]);
}

/// A bus that takes nothing: what is decided stays in the outbox.
struct Down;

impl Bus for Down {
    fn publish(&self, _: Vec<Envelope>, _: Settle) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async { Err(BusError::Unavailable("the network is down".into())) })
    }

    fn subscribe(&self, _: Subscription, _: Arc<dyn switchyard_runtime::Receiver>) {}
}

/// A bus that is down; its token's count says whether anything still holds it.
struct HeldDown {
    _token: Arc<()>,
}

impl Bus for HeldDown {
    fn publish(&self, _: Vec<Envelope>, _: Settle) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async { Err(BusError::Unavailable("the network is down".into())) })
    }

    fn subscribe(&self, _: Subscription, _: Arc<dyn switchyard_runtime::Receiver>) {}
}

#[tokio::test(start_paused = true)]
async fn an_engine_dropped_while_its_bus_is_down_stops_and_lets_the_bus_go() {
    let held = Arc::new(());
    let engine = orders(Engine::builder()).bus(HeldDown { _token: held.clone() }).build();
    engine.deliver(Envelope::event(placed(16)));
    engine.deliver(Envelope::event(Paid { order: 16 }));
    // The relay is retrying the `Ship` against the bus that is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(engine.stats().retried > 0);
    drop(engine);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(Arc::strong_count(&held), 1, "the engine's tasks still hold its bus");
}

#[tokio::test(start_paused = true)]
async fn the_outbox_left_by_a_crash_is_sent_at_the_next_start_with_the_same_ids() {
    let store = MemoryStore::new();
    let clock = ManualClock::default();
    let first =
        orders(Engine::builder()).store(store.clone()).clock(clock.clone()).bus(Down).build();
    let paid = Envelope::event(Paid { order: 13 });
    first.deliver(Envelope::event(placed(13)));
    first.deliver(paid.clone());
    // Let the relay fail a few times against the bus that is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(first.stats().retried > 0);
    let pending = store.pending_outbox().await.unwrap();
    assert_eq!(pending.len(), 1);
    drop(first);

    let second = TestEngine::on_store(store.clone(), clock, orders);
    second.engine.idle().await;
    let ships: Vec<_> = second.sent().into_iter().filter(|e| e.name == "Ship").collect();
    assert_eq!(ships.len(), 1);
    assert_eq!(ships[0].id, paid.id.derive_in("Order", 0));
    assert!(store.pending_outbox().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn transient_store_errors_are_retried_and_nothing_is_lost() {
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_commits(3, true);
    let engine =
        orders(Engine::builder()).store(store.clone()).clock(ManualClock::default()).build();
    engine.publish(placed(14));
    engine.publish(Paid { order: 14 });
    engine.idle().await;
    assert_eq!(
        engine.instance::<Order>(&14).await.unwrap(),
        Some(InstanceStatus::Completed { state: OrderState::Shipped })
    );
    let stats = engine.stats();
    assert!(stats.retried >= 3, "{stats:?}");
    assert_eq!((stats.handled, stats.commands_delivered, stats.dead_lettered), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_store_that_keeps_failing_is_an_outage_and_dead_letters_nothing() {
    // Four times the retry policy's attempts, with an error that trying
    // again does not seem to cure: the store is out, the message is not at
    // fault. The engine holds it until the store takes it.
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_commits(20, false);
    let engine =
        orders(Engine::builder()).store(store.clone()).clock(ManualClock::default()).build();
    engine.publish(placed(15));
    engine.idle().await;
    assert!(engine.dead_letters().await.unwrap().is_empty());
    let status = engine.instance::<Order>(&15).await.unwrap();
    assert!(matches!(status, Some(InstanceStatus::Running { .. })), "{status:?}");
    let stats = engine.stats();
    assert_eq!((stats.handled, stats.dead_lettered, stats.outages), (1, 0, 1), "{stats:?}");
    assert!(stats.retried >= 20, "{stats:?}");
    assert_eq!(stats.store_down_since, None);
}

#[tokio::test]
async fn tombstones_are_pruned_after_the_retention() {
    let test = TestEngine::start(|b| orders(b).retention(Some(24 * HOUR)));
    test.engine.publish(placed(15));
    test.engine.publish(Paid { order: 15 });
    test.engine.idle().await;
    assert_eq!(test.engine.prune().await.unwrap().tombstones, 0);
    test.advance(25 * HOUR).await;
    test.engine.prune().await.unwrap();
    assert_eq!(status(&test, 15).await, None);
    // Nothing of the pruned order lingers in the engine: the key starts afresh.
    test.engine.publish(placed(15));
    test.engine.idle().await;
    assert!(matches!(status(&test, 15).await, Some(InstanceStatus::Running { .. })));
}

#[tokio::test]
async fn instances_are_spread_over_workers_and_all_commit() {
    let test = TestEngine::start(|b| orders(b).workers(4).max_batch(16));
    for order in 0..500 {
        test.engine.publish(placed(order));
    }
    for order in (0..500).step_by(2) {
        test.engine.publish(Paid { order });
    }
    test.engine.idle().await;
    assert_eq!(test.commands::<Ship>().len(), 250);
    let stats = test.engine.stats();
    assert_eq!((stats.handled, stats.commands_delivered), (750, 250));
    assert!(test.store.pending_outbox().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cache_keeps_its_capacity_and_let_go_instances_are_loaded_again() {
    let test = TestEngine::start(|b| orders(b).workers(1).max_batch(4).cache_capacity(8));
    let start = test.now();
    for order in 0..40 {
        test.engine.publish(placed(order));
    }
    test.engine.idle().await;
    let cached = test.engine.stats().cached;
    assert!((1..=8).contains(&cached), "{cached} instances cached, at most 8 wanted");

    // Every instance's timer fires, though most were let go: the worker
    // loads each again, with its pending timers, from the store.
    test.advance(HOUR).await;
    let mut nudged: Vec<u32> = test.commands::<Nudge>().iter().map(|n| n.order).collect();
    nudged.sort_unstable();
    assert_eq!(nudged, (0..40).collect::<Vec<_>>());
    for order in 0..40 {
        test.engine.publish(Paid { order });
    }
    test.engine.idle().await;
    assert_eq!(test.commands::<Ship>().len(), 40);
    for order in 0..40 {
        assert_eq!(
            status(&test, order).await,
            Some(InstanceStatus::Completed { state: OrderState::Shipped })
        );
        assert_eq!(test.engine.timers::<Order>(&order).await.unwrap(), []);
    }
    let stats = test.engine.stats();
    assert_eq!((stats.handled, stats.timers_fired, stats.cached), (120, 40, 0));
    assert!(test.now() >= start + HOUR);
}

/// Records the spans opened while it is the default subscriber, with their fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Span>>>);

/// A span's name and fields.
type Span = (String, Vec<Field>);

/// A field of a span: its name and its value as text.
type Field = (String, String);

struct Fields<'a>(&'a mut Vec<Field>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((span.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn each_message_is_handled_in_a_span_naming_process_key_state_and_id() {
    let spans = Spans::default();
    let _default = tracing::subscriber::set_default(spans.clone());
    let test = TestEngine::start(orders);
    // Delivered as a bus would: with its own id and the time it was sent.
    let placed = Envelope::event(placed(16)).with_time(test.now());
    test.engine.deliver(placed.clone());
    test.engine.idle().await;
    test.advance(HOUR).await;
    assert_eq!(test.commands::<Nudge>().len(), 1);

    let spans = spans.0.lock().unwrap();
    let messages: Vec<&Vec<Field>> =
        spans.iter().filter(|(name, _)| name == "message").map(|(_, fields)| fields).collect();
    let field = |fields: &[Field], name: &str| {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let first = messages.first().expect("no span for the message");
    assert_eq!(field(first, "process"), "Order");
    assert_eq!(field(first, "key"), "16");
    assert_eq!(field(first, "state"), "Idle");
    assert_eq!(field(first, "id"), placed.id.to_string());
    assert_eq!(field(first, "input"), "Placed");
    // The timer went through the same path, in the state it met.
    assert!(
        messages.iter().any(|f| field(f, "input") == "timer Remind" && field(f, "state") == "Open"),
        "{messages:?}"
    );
    assert!(spans.iter().any(|(name, _)| name == "handler"), "the Nudge handler ran in no span");
}

/// Takes `Nudge` commands, but asks for the first one again instead of
/// taking it, as a receiver that was briefly unavailable would.
#[derive(Default)]
struct RefusesTheFirstNudge {
    refused: AtomicU32,
    taken: Mutex<Vec<u32>>,
}

impl switchyard_runtime::Receiver for RefusesTheFirstNudge {
    fn receive(&self, message: Envelope, ack: switchyard_runtime::Ack) {
        let nudge: Nudge = message.body.decode().unwrap();
        if nudge.reminders == 1 && self.refused.fetch_add(1, Ordering::SeqCst) == 0 {
            // Dropped unsettled: the sender is asked to send it again.
            drop(ack);
            return;
        }
        self.taken.lock().unwrap().push(nudge.reminders);
        ack.done();
    }
}

/// Waits, in real time, until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("waited 5 s for {what}");
}

#[tokio::test]
async fn a_command_sent_again_is_not_overtaken_by_a_later_one_of_its_instance() {
    let clock = ManualClock::default();
    let bus = InProcessBus::new();
    let nudges = Arc::new(RefusesTheFirstNudge::default());
    let commands = Subscription { events: Vec::new(), commands: vec!["Nudge".into()] };
    bus.subscribe(commands, nudges.clone());
    // A long wait before sending again, so that the second reminder is
    // decided and committed while the first waits.
    let slow = RetryPolicy {
        attempts: 5,
        first_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_millis(300),
    };
    let engine =
        Engine::builder().clock(clock.clone()).bus(bus).retry(slow).process::<Order>().build();
    engine.publish(placed(1));
    engine.idle().await;

    clock.advance(HOUR);
    until("the first reminder to be refused", || nudges.refused.load(Ordering::SeqCst) == 1).await;
    clock.advance(HOUR);
    until("the second reminder to be decided", || engine.stats().timers_fired == 2).await;
    engine.idle().await;

    assert_eq!(*nudges.taken.lock().unwrap(), [1, 2], "the instance's commands kept their order");
    assert_eq!(engine.stats().retried, 1, "the first reminder was sent again once");
}

/// Refuses every message for good.
struct RefusesAll;

impl switchyard_runtime::Receiver for RefusesAll {
    fn receive(&self, _: Envelope, ack: switchyard_runtime::Ack) {
        ack.reject("closed for the day");
    }
}

#[tokio::test]
async fn what_the_bus_or_its_other_receivers_refuse_of_a_published_message_is_dead_lettered() {
    // A bus shared with a receiver that refuses `Nudge`: the engine's own
    // receivers never see the refusal, the bus tells the engine.
    let bus = InProcessBus::new();
    let commands = Subscription { events: Vec::new(), commands: vec!["Nudge".into()] };
    bus.subscribe(commands, Arc::new(RefusesAll));
    let engine = Engine::builder().bus(bus).process::<Order>().build();
    let refused = engine.send(Nudge { order: 4, reminders: 1 });
    engine.idle().await;
    let letters = engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(matches!(&letters[0].letter, Letter::Message(m) if m.id == refused));
    assert_eq!(letters[0].reason, "closed for the day");

    // A bus that takes nothing.
    let engine = Engine::builder().bus(Down).process::<Order>().build();
    let untaken = engine.publish(placed(5));
    engine.idle().await;
    let letters = engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(matches!(&letters[0].letter, Letter::Message(m) if m.id == untaken));
    assert!(letters[0].reason.starts_with("the bus did not take it"), "{}", letters[0].reason);
}

#[tokio::test]
async fn an_engine_on_its_own_bus_dead_letters_what_it_cannot_handle_of_what_it_publishes() {
    // No bus given: the engine takes what it publishes itself, without the
    // bus's acknowledgement, and must still account for every message.
    let engine = Engine::builder().process::<Order>().build();
    let unhandled = engine.send(Ship { order: 8, amount: 1 });
    engine.publish(placed(8));
    let poisoned = engine.publish(Poison { order: 8 });
    engine.idle().await;
    let mut letters = engine.dead_letters().await.unwrap();
    letters.sort_by_key(|letter| letter.reason.clone());
    let reasons: Vec<_> = letters.iter().map(|l| (l.reason.as_str(), l.name())).collect();
    assert_eq!(
        reasons,
        [
            ("`decide` panicked: poisoned order 8", "Poison"),
            ("no handler is registered for command `Ship`", "Ship")
        ]
    );
    let ids: Vec<_> = letters
        .iter()
        .map(|l| match &l.letter {
            Letter::Message(m) => m.id,
            other => panic!("expected a message, got {other:?}"),
        })
        .collect();
    assert_eq!(ids, [poisoned, unhandled]);
    // The event was taken typed, with no body: its dead letter has it again,
    // so that it can be replayed.
    let Letter::Message(poison) = &letters[0].letter else { unreachable!() };
    assert_eq!(poison.body.decode::<Poison>().unwrap(), Poison { order: 8 });
    assert_eq!(engine.stats().dead_lettered, 2);
}
