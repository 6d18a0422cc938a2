//! The shipping process of `docs/getting-started.md`: a scenario for every
//! transition, and the example's engine end to end on a manual clock.

// The example's `main` is for `cargo run`; the tests use its types and its warehouse.
#[allow(dead_code)]
#[path = "../examples/shipping/main.rs"]
mod shipping;

use std::time::Duration;

use shipping::*;
use switchyard::testing::{Scenario, TestEngine, command};
use switchyard::{InstanceStatus, ManualClock};

const DAY: Duration = Duration::from_secs(86_400);

fn paid(order_id: u64) -> OrderPaid {
    OrderPaid { order_id, address: "1 Main Street".to_owned() }
}

#[test]
fn a_paid_order_is_shipped_with_a_deadline() {
    Scenario::<Shipping>::new(7)
        .when(paid(7))
        .expect_state(ShippingState::AwaitingShipment)
        .expect_sent(&[command(ShipOrder { order_id: 7, address: "1 Main Street".to_owned() })])
        .expect_timers(&[(ShippingTimer::Overdue, ManualClock::EPOCH + 2 * DAY)]);
}

#[test]
fn a_shipped_order_completes_and_drops_its_deadline() {
    Scenario::<Shipping>::new(7)
        .given(paid(7))
        .when(OrderShipped { order_id: 7 })
        .expect_state(ShippingState::Shipped)
        .expect_completed()
        .expect_nothing_sent()
        .expect_timers(&[]);
}

#[test]
fn a_late_parcel_chases_the_warehouse_every_day() {
    Scenario::<Shipping>::new(7)
        .given(paid(7))
        .after(2 * DAY)
        .when_timer(ShippingTimer::Overdue)
        .expect_state(ShippingState::AwaitingShipment)
        .expect_sent(&[command(ChaseWarehouse { order_id: 7 })])
        .expect_timers(&[(ShippingTimer::Overdue, ManualClock::EPOCH + 3 * DAY)]);
}

#[test]
fn what_a_state_ignores_changes_nothing() {
    // A shipment notice for an order never paid starts nothing.
    Scenario::<Shipping>::new(7).when(OrderShipped { order_id: 7 }).expect_ignored();
    // A second payment notice while shipping changes nothing.
    Scenario::<Shipping>::new(7).given(paid(7)).when(paid(7)).expect_ignored();
}

#[tokio::test]
async fn the_warehouse_ships_one_order_and_is_chased_for_the_other() {
    let test = TestEngine::start(|builder| {
        builder
            .process::<Shipping>()
            .handle(warehouse)
            .handle(|_: ChaseWarehouse, _| async { Ok(()) })
    });
    test.engine.publish(paid(1));
    test.engine.publish(paid(2));
    test.engine.idle().await;
    assert!(test.commands::<ChaseWarehouse>().is_empty());

    test.advance(2 * DAY).await;
    assert_eq!(
        test.commands::<ChaseWarehouse>().iter().map(|c| c.order_id).collect::<Vec<_>>(),
        [2]
    );
    assert!(matches!(
        test.engine.instance::<Shipping>(&1).await.unwrap(),
        Some(InstanceStatus::Completed { state: ShippingState::Shipped })
    ));
    assert!(matches!(
        test.engine.instance::<Shipping>(&2).await.unwrap(),
        Some(InstanceStatus::Running { state: ShippingState::AwaitingShipment, .. })
    ));
}
