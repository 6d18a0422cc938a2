//! Engines on the JetStream bus, with a service of another bounded context
//! played by a plain NATS client that knows only `docs/wire-format.md`: it
//! publishes an event with the documented headers and a JSON body, and
//! reads the command the process decides from its subject.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::Fixture;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchyard::{Engine, InstanceStatus, MemoryStore, MessageId, MessageKind};
use switchyard_nats::wire;

switchyard::process! {
    /// Ships an order once it is placed.
    process Fulfilment {
        correlate by order: u32

        initial state Waiting {
            on OrderPlaced {
                send ShipOrder { order: id, amount: event.amount }
                -> Shipped
            }
        }

        final state Shipped
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
#[switchyard(name = "orders.placed")]
pub struct OrderPlaced {
    pub order: u32,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, switchyard::Command)]
#[switchyard(name = "shipping.ship")]
pub struct ShipOrder {
    pub order: u32,
    pub amount: u64,
}

/// Publishes `orders.placed` as another service would: its own id, the
/// type, and the JSON, nothing else.
async fn place(fixture: &Fixture, id: &str, order: u32, amount: u64) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("Switchyard-Type", "orders.placed");
    let body =
        serde_json::to_vec(&serde_json::json!({ "order": order, "amount": amount })).unwrap();
    let ack = fixture
        .jetstream
        .publish_with_headers(fixture.subject("event.orders.placed"), headers, body.into())
        .await
        .unwrap();
    ack.await.expect("the stream stores the event");
}

fn engine(store: &MemoryStore, bus: switchyard_nats::JetStreamBus) -> Engine {
    Engine::builder().store(store.clone()).bus(bus).process::<Fulfilment>().build()
}

#[tokio::test]
async fn an_event_from_another_service_leads_to_a_command_it_can_read() {
    let Some(fixture) = Fixture::new().await else { return };
    let mut shipments =
        fixture.client.subscribe(fixture.subject("command.shipping.ship")).await.unwrap();
    let engine = engine(&MemoryStore::new(), fixture.bus().await);

    let placed = MessageId::new();
    place(&fixture, &placed.to_string(), 42, 990).await;

    let shipment = tokio::time::timeout(Duration::from_secs(10), shipments.next())
        .await
        .expect("the command within ten seconds")
        .unwrap();
    let headers = shipment.headers.unwrap();
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    // Derived from the event's id: a redelivery of the event sends it again under this id.
    assert_eq!(header("Nats-Msg-Id"), Some(placed.derive_in("Fulfilment", 0).to_string()));
    assert_eq!(header("Switchyard-Causation-Id"), Some(placed.to_string()));
    assert_eq!(header("Switchyard-Type").as_deref(), Some("shipping.ship"));
    assert_eq!(header("Switchyard-Kind").as_deref(), Some("command"));
    let ship: ShipOrder = serde_json::from_slice(&shipment.payload).unwrap();
    assert_eq!(ship, ShipOrder { order: 42, amount: 990 });
    assert!(matches!(
        engine.instance::<Fulfilment>(&42).await.unwrap(),
        Some(InstanceStatus::Completed { state: FulfilmentState::Shipped })
    ));
    fixture.finish().await;
}

#[tokio::test]
async fn two_engine_nodes_share_the_events_and_ship_every_order_once() {
    let Some(fixture) = Fixture::new().await else { return };
    let mut shipments =
        fixture.client.subscribe(fixture.subject("command.shipping.ship")).await.unwrap();
    let store = MemoryStore::new();
    let nodes = [engine(&store, fixture.bus().await), engine(&store, fixture.bus().await)];

    // Both nodes pull before anything is published, so both are offered work.
    let durable =
        wire::consumer_name(&fixture.options.consumer, MessageKind::Event, "orders.placed");
    common::until_consumer(&fixture.stream().await, &durable, |i| i.num_waiting >= 2).await;

    const ORDERS: u32 = 30;
    for order in 0..ORDERS {
        // Ids of the other service's own making, not UUIDs; each sent twice.
        for _ in 0..2 {
            place(&fixture, &format!("placed-{order}"), order, u64::from(order) * 10).await;
        }
    }

    let mut shipped = BTreeMap::new();
    let mut ids = HashSet::new();
    while shipped.len() < ORDERS as usize {
        let shipment = tokio::time::timeout(Duration::from_secs(10), shipments.next())
            .await
            .expect("every order shipped within ten seconds")
            .unwrap();
        let ship: ShipOrder = serde_json::from_slice(&shipment.payload).unwrap();
        assert_eq!(ship.amount, u64::from(ship.order) * 10);
        let id = shipment.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str().to_owned();
        ids.insert(id.clone());
        *shipped.entry(ship.order).or_insert(0) += 1;
    }
    for node in &nodes {
        node.idle().await;
    }
    // The stream stored each order's command once: a command decided again
    // (after a conflict, or a redelivery) carries the same id.
    let mut stream = fixture.stream().await;
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, u64::from(ORDERS) * 2, "{ORDERS} events and {ORDERS} commands");
    assert_eq!(ids.len(), ORDERS as usize);
    assert!(shipped.values().all(|&times| times == 1), "{shipped:?}");
    let handled: Vec<u64> = nodes.iter().map(|node| node.stats().handled).collect();
    assert_eq!(handled.iter().sum::<u64>(), u64::from(ORDERS), "handled per node: {handled:?}");
    assert!(handled.iter().all(|&n| n > 0), "one node took everything: {handled:?}");
    fixture.finish().await;
}
