//! The JetStream bus against a real server (`NATS_URL`): what it publishes
//! arrives whole, with the documented headers; a resend is stored once;
//! nothing is acknowledged to JetStream before the receiver settles, and
//! each outcome of an ack reaches JetStream as its counterpart; receivers
//! on two nodes share one consumer's messages.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, Inbox, next, nothing_for, until_consumer};
use futures_util::StreamExt;
use switchyard_nats::wire;
use switchyard_runtime::{
    Body, Bus, Envelope, MessageId, MessageKind, Settle, Settled, Subscription, Timestamp,
};

fn event(name: &'static str, body: serde_json::Value) -> Envelope {
    Envelope::new(name, MessageKind::Event, Body::value(body))
}

fn command(name: &'static str, body: serde_json::Value) -> Envelope {
    Envelope::new(name, MessageKind::Command, Body::value(body))
}

fn subscription(events: &[&str], commands: &[&str]) -> Subscription {
    Subscription {
        events: events.iter().map(|e| e.to_string()).collect(),
        commands: commands.iter().map(|c| c.to_string()).collect(),
    }
}

/// A settle that records its outcome.
fn recorded() -> (Settle, Arc<Mutex<Option<Settled>>>) {
    let slot = Arc::new(Mutex::new(None));
    let into = slot.clone();
    (Settle::new(move |settled| *into.lock().unwrap() = Some(settled)), slot)
}

#[tokio::test]
async fn published_messages_arrive_whole_with_the_documented_headers() {
    let Some(fixture) = Fixture::new().await else { return };
    let bus = fixture.bus().await;
    let (inbox, mut deliveries) = Inbox::new();
    bus.subscribe(subscription(&["orders.placed"], &["Ship"]), inbox);
    let mut wire_view = fixture.client.subscribe(fixture.subject(">")).await.unwrap();

    let cause = MessageId::new();
    let mut placed = event("orders.placed", serde_json::json!({ "order": 7, "amount": 120 }))
        .with_time(Timestamp(1_700_000_000_123));
    placed.causation = Some(cause);
    let ship = command("Ship", serde_json::json!({ "order": 7 }));
    let (settle, settled) = recorded();
    bus.publish(vec![placed.clone(), ship.clone()], settle).await.unwrap();
    // The stream holds both: the publisher has nothing left to wait for.
    assert_eq!(*settled.lock().unwrap(), Some(Settled::default()));

    // Two names, two consumers: they arrive in either order.
    let mut got = vec![next(&mut deliveries).await, next(&mut deliveries).await];
    got.sort_by_key(|(message, _)| message.kind == MessageKind::Command);
    for (sent, (got, ack)) in [&placed, &ship].into_iter().zip(got) {
        assert_eq!((got.id, got.kind, got.name.as_ref()), (sent.id, sent.kind, sent.name.as_ref()));
        assert_eq!(got.causation, sent.causation);
        assert_eq!(got.time, sent.time);
        assert_eq!(
            got.body.decode::<serde_json::Value>().unwrap(),
            sent.body.decode::<serde_json::Value>().unwrap()
        );
        ack.done();
    }

    // What another service sees on the wire.
    let raw = wire_view.next().await.unwrap();
    assert_eq!(raw.subject.as_str(), fixture.subject("event.orders.placed"));
    let headers = raw.headers.unwrap();
    let header = |name: &str| headers.get(name).unwrap().as_str().to_owned();
    assert_eq!(header("Nats-Msg-Id"), placed.id.to_string());
    assert_eq!(header("Switchyard-Type"), "orders.placed");
    assert_eq!(header("Switchyard-Kind"), "event");
    assert_eq!(header("Switchyard-Causation-Id"), cause.to_string());
    assert_eq!(header("Switchyard-Time"), "1700000000123");
    assert_eq!(header("Content-Type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(body, serde_json::json!({ "order": 7, "amount": 120 }));
    let raw = wire_view.next().await.unwrap();
    assert_eq!(raw.subject.as_str(), fixture.subject("command.Ship"));
    assert!(raw.headers.unwrap().get("Switchyard-Causation-Id").is_none());

    fixture.finish().await;
}

#[tokio::test]
async fn a_resend_under_the_same_id_is_stored_once() {
    let Some(fixture) = Fixture::new().await else { return };
    let bus = fixture.bus().await;
    let ship = command("Ship", serde_json::json!({ "order": 1 }));
    for _ in 0..3 {
        let (settle, settled) = recorded();
        bus.publish(vec![ship.clone()], settle).await.unwrap();
        assert_eq!(*settled.lock().unwrap(), Some(Settled::default()));
    }
    let other = command("Ship", serde_json::json!({ "order": 1 }));
    bus.publish(vec![other], Settle::ignore()).await.unwrap();
    let mut stream = fixture.stream().await;
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    fixture.finish().await;
}

#[tokio::test]
async fn a_dropped_ack_is_delivered_again_and_a_done_one_is_not() {
    let Some(fixture) = Fixture::new().await else { return };
    let bus = fixture.bus().await;
    let (inbox, mut deliveries) = Inbox::new();
    bus.subscribe(subscription(&["Paid"], &[]), inbox);
    let paid = event("Paid", serde_json::json!({ "order": 3 }));
    bus.publish(vec![paid.clone()], Settle::ignore()).await.unwrap();

    let (first, ack) = next(&mut deliveries).await;
    assert_eq!(first.id, paid.id);
    drop(ack);
    let (again, ack) = next(&mut deliveries).await;
    assert_eq!(again.id, paid.id);
    ack.done();

    let stream = fixture.stream().await;
    let durable = wire::consumer_name(&fixture.options.consumer, MessageKind::Event, "Paid");
    let info = until_consumer(&stream, &durable, |i| i.num_ack_pending == 0).await;
    assert_eq!((info.num_pending, info.ack_floor.stream_sequence), (0, 1));
    // Past the ack wait, a message still unacknowledged would come back.
    nothing_for(&mut deliveries, fixture.options.ack_wait + Duration::from_millis(500)).await;
    fixture.finish().await;
}

#[tokio::test]
async fn nothing_is_acknowledged_before_the_receiver_settles() {
    let Some(fixture) = Fixture::new().await else { return };
    let bus = fixture.bus().await;
    let (inbox, mut deliveries) = Inbox::new();
    bus.subscribe(subscription(&["Paid"], &[]), inbox);
    let paid = event("Paid", serde_json::json!({ "order": 4 }));
    bus.publish(vec![paid.clone()], Settle::ignore()).await.unwrap();

    let (_, ack) = next(&mut deliveries).await;
    let stream = fixture.stream().await;
    let durable = wire::consumer_name(&fixture.options.consumer, MessageKind::Event, "Paid");
    let info = until_consumer(&stream, &durable, |_| true).await;
    assert_eq!((info.num_ack_pending, info.ack_floor.stream_sequence), (1, 0));
    // Dead-lettered by the receiver, it is the receiver's now: acknowledged.
    ack.dead_lettered("recorded by the receiver");
    until_consumer(&stream, &durable, |i| i.ack_floor.stream_sequence == 1).await;
    nothing_for(&mut deliveries, fixture.options.ack_wait + Duration::from_millis(500)).await;
    fixture.finish().await;
}

#[tokio::test]
async fn a_rejected_message_is_terminated_and_not_delivered_again() {
    let Some(fixture) = Fixture::new().await else { return };
    let bus = fixture.bus().await;
    let durable = wire::consumer_name(&fixture.options.consumer, MessageKind::Command, "Ship");
    let advisory =
        format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.{durable}", fixture.options.stream);
    let mut terminated = fixture.client.subscribe(advisory).await.unwrap();
    let (inbox, mut deliveries) = Inbox::new();
    bus.subscribe(subscription(&[], &["Ship"]), inbox);
    let ship = command("Ship", serde_json::json!({ "order": 5 }));
    bus.publish(vec![ship.clone()], Settle::ignore()).await.unwrap();

    let (got, ack) = next(&mut deliveries).await;
    assert_eq!(got.id, ship.id);
    ack.reject("no such order");
    let advisory = tokio::time::timeout(Duration::from_secs(10), terminated.next()).await;
    let advisory: serde_json::Value =
        serde_json::from_slice(&advisory.unwrap().unwrap().payload).unwrap();
    assert_eq!(advisory["stream_seq"], 1);
    nothing_for(&mut deliveries, fixture.options.ack_wait + Duration::from_millis(500)).await;
    fixture.finish().await;
}

#[tokio::test]
async fn receivers_on_two_nodes_share_a_consumer_and_no_message_reaches_both() {
    let Some(fixture) = Fixture::new().await else { return };
    let (first, second) = (fixture.bus().await, fixture.bus().await);
    let (inbox, mut deliveries) = Inbox::new();
    let (other_inbox, mut other_deliveries) = Inbox::new();
    first.subscribe(subscription(&[], &["Work"]), inbox);
    second.subscribe(subscription(&[], &["Work"]), other_inbox);
    // Both nodes pull before anything is published, so both are offered work.
    let stream = fixture.stream().await;
    let durable = wire::consumer_name(&fixture.options.consumer, MessageKind::Command, "Work");
    until_consumer(&stream, &durable, |i| i.num_waiting >= 2).await;

    let sent: Vec<Envelope> =
        (0..40).map(|n| command("Work", serde_json::json!({ "n": n }))).collect();
    for message in &sent {
        first.publish(vec![message.clone()], Settle::ignore()).await.unwrap();
    }
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    while mine.len() + theirs.len() < sent.len() {
        tokio::select! {
            Some((message, ack)) = deliveries.recv() => { mine.push(message.id); ack.done(); }
            Some((message, ack)) = other_deliveries.recv() => { theirs.push(message.id); ack.done(); }
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("deliveries stopped"),
        }
    }
    let all: HashSet<MessageId> = mine.iter().chain(&theirs).copied().collect();
    assert_eq!(all, sent.iter().map(|m| m.id).collect::<HashSet<_>>());
    assert_eq!(all.len(), mine.len() + theirs.len(), "a message reached both nodes");
    assert!(!mine.is_empty() && !theirs.is_empty(), "one node took everything: {mine:?}");
    until_consumer(&stream, &durable, |i| i.num_ack_pending == 0).await;
    fixture.finish().await;
}
