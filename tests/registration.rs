//! The conference registration process of `examples/registration`: every
//! transition of `registration.yard` as a scenario (each handler, each guard
//! and its fallback, the stale replies, each expiry, and the ignores), then
//! the whole example with its contexts on the test engine and on SQLite:
//! the happy path, an expired order, a late order, the wait list and a
//! changed order.

mod common;
#[path = "../examples/registration/process.rs"]
mod registration;

use std::time::Duration;

use registration::*;
use switchyard::testing::{Scenario, TestEngine, command};
use switchyard::{Engine, InstanceStatus, ManualClock, SqliteStore, Timestamp};

const START: Timestamp = ManualClock::EPOCH;

fn id(order: &str) -> OrderId {
    OrderId(order.to_owned())
}

fn conference() -> ConferenceId {
    ConferenceId("rustconf".to_owned())
}

fn full(quantity: u32) -> Vec<SeatQuantity> {
    vec![SeatQuantity::new("full", quantity)]
}

fn expires() -> Timestamp {
    START + RESERVATION_TIME
}

fn placed(order: &str, seats: Vec<SeatQuantity>) -> OrderPlaced {
    OrderPlaced {
        order_id: id(order),
        conference_id: conference(),
        seats,
        reservation_expires: expires(),
    }
}

fn reserved(order: &str, request: u32, seats: Vec<SeatQuantity>) -> SeatsReserved {
    SeatsReserved {
        reservation_id: id(order),
        conference_id: conference(),
        request,
        reserved: seats,
    }
}

fn not_reserved(
    order: &str,
    request: u32,
    seats: Vec<SeatQuantity>,
    missing: Vec<SeatQuantity>,
) -> SeatsNotReserved {
    SeatsNotReserved {
        reservation_id: id(order),
        conference_id: conference(),
        request,
        reserved: seats,
        missing,
    }
}

fn updated(order: &str, seats: Vec<SeatQuantity>) -> OrderUpdated {
    OrderUpdated { order_id: id(order), seats }
}

fn paid(order: &str) -> PaymentCompleted {
    PaymentCompleted { payment_source_id: id(order), payment_id: format!("pay-{order}") }
}

fn confirmed(order: &str) -> OrderConfirmed {
    OrderConfirmed { order_id: id(order) }
}

fn reservation(order: &str, request: u32, seats: Vec<SeatQuantity>) -> MakeSeatReservation {
    MakeSeatReservation { conference_id: conference(), reservation_id: id(order), request, seats }
}

fn mark(order: &str, seats: Vec<SeatQuantity>) -> MarkSeatsAsReserved {
    MarkSeatsAsReserved { order_id: id(order), seats, expires_at: expires() }
}

fn cancel(order: &str) -> CancelSeatReservation {
    CancelSeatReservation { conference_id: conference(), reservation_id: id(order) }
}

fn commit(order: &str) -> CommitSeatReservation {
    CommitSeatReservation { conference_id: conference(), reservation_id: id(order) }
}

fn reject(order: &str) -> RejectOrder {
    RejectOrder { order_id: id(order) }
}

/// An order whose two seats are reserved and which awaits payment.
fn awaiting_payment(order: &str) -> Scenario<Registration> {
    Scenario::<Registration>::new(id(order)).given(placed(order, full(2))).given(reserved(
        order,
        1,
        full(2),
    ))
}

// Placing an order.

#[test]
fn a_placed_order_asks_for_its_seats_and_sets_its_expiry() {
    let then = Scenario::<Registration>::new(id("o-1"))
        .when(placed("o-1", full(2)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_sent(&[command(reservation("o-1", 1, full(2)))])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
    assert_eq!(then.data.request, 1);
    assert_eq!(then.data.expires_at, expires());
    assert_eq!(then.data.conference_id, conference());
}

#[test]
fn an_order_already_expired_when_placed_is_rejected_at_once() {
    Scenario::<Registration>::new(id("o-2"))
        .after(RESERVATION_TIME + Duration::from_secs(60))
        .when(placed("o-2", full(2)))
        .expect_state(RegistrationState::Rejected)
        .expect_completed()
        .expect_sent(&[command(reject("o-2"))])
        .expect_timers(&[]);
}

#[test]
fn an_order_placed_at_the_very_moment_it_expires_is_rejected() {
    Scenario::<Registration>::new(id("o-3"))
        .at(expires())
        .when(placed("o-3", full(2)))
        .expect_state(RegistrationState::Rejected)
        .expect_sent(&[command(reject("o-3"))]);
}

#[test]
fn an_order_placed_a_moment_before_it_expires_is_reserved() {
    Scenario::<Registration>::new(id("o-4"))
        .at(Timestamp(expires().millis() - 1))
        .when(placed("o-4", full(2)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_sent(&[command(reservation("o-4", 1, full(2)))]);
}

#[test]
fn messages_for_an_order_never_placed_start_nothing() {
    fn starts_nothing<E: switchyard::Event>(event: E)
    where
        Registration: switchyard::Handles<E>,
        RegistrationInput: From<E>,
    {
        let then = Scenario::<Registration>::new(id("o-5"))
            .when(event)
            .expect_ignored()
            .expect_nothing_sent()
            .expect_state(RegistrationState::NotStarted);
        assert!(!then.exists, "an ignored message created an instance");
    }
    starts_nothing(updated("o-5", full(1)));
    starts_nothing(reserved("o-5", 1, full(1)));
    starts_nothing(not_reserved("o-5", 1, full(1), full(1)));
    starts_nothing(paid("o-5"));
    starts_nothing(confirmed("o-5"));
}

// Awaiting the reservation.

#[test]
fn reserved_seats_are_marked_on_the_order() {
    Scenario::<Registration>::new(id("o-10"))
        .given(placed("o-10", full(2)))
        .when(reserved("o-10", 1, full(2)))
        .expect_state(RegistrationState::ReservationConfirmed)
        .expect_sent(&[command(mark("o-10", full(2)))])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
}

#[test]
fn seats_not_reserved_go_on_the_wait_list_and_the_rest_is_marked() {
    let seats = vec![SeatQuantity::new("full", 1), SeatQuantity::new("workshop", 2)];
    let held = vec![SeatQuantity::new("full", 1), SeatQuantity::new("workshop", 1)];
    let missing = vec![SeatQuantity::new("workshop", 1)];
    Scenario::<Registration>::new(id("o-11"))
        .given(placed("o-11", seats))
        .when(not_reserved("o-11", 1, held.clone(), missing.clone()))
        .expect_state(RegistrationState::ReservationConfirmed)
        .expect_sent(&[
            command(AddToWaitList {
                conference_id: conference(),
                order_id: id("o-11"),
                seats: missing,
            }),
            command(mark("o-11", held)),
        ])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
}

#[test]
fn an_order_updated_before_its_reservation_asks_again() {
    let then = Scenario::<Registration>::new(id("o-12"))
        .given(placed("o-12", full(1)))
        .when(updated("o-12", full(4)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_sent(&[command(reservation("o-12", 2, full(4)))])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
    assert_eq!(then.data.request, 2);
}

#[test]
fn a_stale_reservation_reply_is_ignored() {
    let then = Scenario::<Registration>::new(id("o-13"))
        .given(placed("o-13", full(1)))
        .given(updated("o-13", full(4)))
        .when(reserved("o-13", 1, full(1)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_nothing_sent()
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
    assert_eq!(then.data.request, 2, "a stale reply moved the request on");
}

#[test]
fn a_stale_not_reserved_reply_is_ignored() {
    Scenario::<Registration>::new(id("o-14"))
        .given(placed("o-14", full(1)))
        .given(updated("o-14", full(4)))
        .when(not_reserved("o-14", 1, vec![], full(1)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_nothing_sent();
}

#[test]
fn the_reply_to_the_latest_request_is_taken_after_a_stale_one() {
    Scenario::<Registration>::new(id("o-15"))
        .given(placed("o-15", full(1)))
        .given(updated("o-15", full(4)))
        .given(reserved("o-15", 1, full(1)))
        .when(reserved("o-15", 2, full(4)))
        .expect_state(RegistrationState::ReservationConfirmed)
        .expect_sent(&[command(mark("o-15", full(4)))]);
}

#[test]
fn an_order_expiring_before_its_reservation_gives_the_seats_back() {
    Scenario::<Registration>::new(id("o-16"))
        .given(placed("o-16", full(2)))
        .when_timer(RegistrationTimer::Expiry)
        .expect_state(RegistrationState::Expired)
        .expect_completed()
        .expect_sent(&[command(cancel("o-16")), command(reject("o-16"))])
        .expect_timers(&[]);
}

#[test]
fn payment_or_confirmation_before_the_reservation_is_ignored() {
    for then in [
        Scenario::<Registration>::new(id("o-17")).given(placed("o-17", full(2))).when(paid("o-17")),
        Scenario::<Registration>::new(id("o-17"))
            .given(placed("o-17", full(2)))
            .when(confirmed("o-17")),
    ] {
        then.expect_ignored()
            .expect_nothing_sent()
            .expect_state(RegistrationState::AwaitingReservation);
    }
}

// Awaiting payment, the reservation confirmed.

#[test]
fn an_order_updated_after_its_reservation_asks_again() {
    let then = awaiting_payment("o-20")
        .when(updated("o-20", full(3)))
        .expect_state(RegistrationState::AwaitingReservation)
        .expect_sent(&[command(reservation("o-20", 2, full(3)))])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
    assert_eq!(then.data.request, 2);
}

#[test]
fn a_paid_order_is_confirmed() {
    awaiting_payment("o-21")
        .when(paid("o-21"))
        .expect_state(RegistrationState::PaymentReceived)
        .expect_sent(&[command(ConfirmOrder { order_id: id("o-21") })])
        .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
}

#[test]
fn an_order_confirmed_before_payment_commits_its_seats() {
    awaiting_payment("o-22")
        .when(confirmed("o-22"))
        .expect_state(RegistrationState::Completed)
        .expect_completed()
        .expect_sent(&[command(commit("o-22"))])
        .expect_timers(&[]);
}

#[test]
fn an_unpaid_order_expires_and_gives_the_seats_back() {
    awaiting_payment("o-23")
        .when_timer(RegistrationTimer::Expiry)
        .expect_state(RegistrationState::Expired)
        .expect_completed()
        .expect_sent(&[command(cancel("o-23")), command(reject("o-23"))]);
}

#[test]
fn reservation_replies_after_the_reservation_is_confirmed_are_ignored() {
    for then in [
        awaiting_payment("o-24").when(reserved("o-24", 1, full(2))),
        awaiting_payment("o-24").when(not_reserved("o-24", 1, full(1), full(1))),
    ] {
        then.expect_ignored()
            .expect_nothing_sent()
            .expect_state(RegistrationState::ReservationConfirmed);
    }
}

// Paid, awaiting the order's confirmation.

#[test]
fn a_confirmed_order_commits_its_seats_and_completes() {
    awaiting_payment("o-30")
        .given(paid("o-30"))
        .when(confirmed("o-30"))
        .expect_state(RegistrationState::Completed)
        .expect_completed()
        .expect_sent(&[command(commit("o-30"))])
        .expect_timers(&[]);
}

#[test]
fn a_paid_order_not_confirmed_in_time_expires() {
    awaiting_payment("o-31")
        .given(paid("o-31"))
        .when_timer(RegistrationTimer::Expiry)
        .expect_state(RegistrationState::Expired)
        .expect_completed()
        .expect_sent(&[command(cancel("o-31")), command(reject("o-31"))]);
}

#[test]
fn a_paid_order_ignores_updates_replies_and_second_payments() {
    let paid_order = || awaiting_payment("o-32").given(paid("o-32"));
    for then in [
        paid_order().when(updated("o-32", full(5))),
        paid_order().when(reserved("o-32", 1, full(2))),
        paid_order().when(not_reserved("o-32", 1, full(1), full(1))),
        paid_order().when(paid("o-32")),
    ] {
        then.expect_ignored()
            .expect_nothing_sent()
            .expect_state(RegistrationState::PaymentReceived);
    }
}

// Any state.

#[test]
fn a_repeated_order_placed_changes_nothing_in_any_waiting_state() {
    let repeat = || placed("o-40", full(7));
    let cases = [
        (
            Scenario::<Registration>::new(id("o-40")).given(placed("o-40", full(2))),
            RegistrationState::AwaitingReservation,
        ),
        (awaiting_payment("o-40"), RegistrationState::ReservationConfirmed),
        (awaiting_payment("o-40").given(paid("o-40")), RegistrationState::PaymentReceived),
    ];
    for (scenario, state) in cases {
        let then = scenario
            .when(repeat())
            .expect_ignored()
            .expect_nothing_sent()
            .expect_state(state)
            .expect_timers(&[(RegistrationTimer::Expiry, expires())]);
        assert_eq!(then.data.request, 1);
    }
}

#[test]
fn a_completed_order_is_not_decided_again() {
    let then = awaiting_payment("o-41")
        .given(paid("o-41"))
        .given(confirmed("o-41"))
        .when(placed("o-41", full(2)))
        .expect_nothing_sent()
        .expect_state(RegistrationState::Completed);
    assert!(then.outcome.is_none(), "a completed instance decided a message");
}

// The whole example: the process and its contexts, on the test engine.

/// A test engine running the example's contexts, with a conference of ten
/// full seats and two workshop seats.
fn example() -> (TestEngine, Contexts) {
    let state = Contexts::default();
    state.open_conference(&conference(), &[("full", 10), ("workshop", 2)]);
    let test = TestEngine::start(|builder| contexts(builder, &state));
    (test, state)
}

async fn process_status(engine: &Engine, order: &str) -> Option<InstanceStatus<Registration>> {
    engine.instance::<Registration>(&id(order)).await.unwrap()
}

#[tokio::test]
async fn end_to_end_an_order_is_reserved_paid_confirmed_and_its_seats_sold() {
    let (test, state) = example();
    test.engine.publish(state.place_order(&id("o-1"), &conference(), full(2), test.now()));
    test.engine.idle().await;
    assert_eq!(
        state.order_status(&id("o-1")),
        Some(OrderStatus::Reserved { seats: full(2), expires_at: expires() })
    );

    test.engine.send(PayOrder { order_id: id("o-1") });
    test.engine.idle().await;

    assert_eq!(test.commands::<MakeSeatReservation>(), [reservation("o-1", 1, full(2))]);
    assert_eq!(test.commands::<MarkSeatsAsReserved>(), [mark("o-1", full(2))]);
    assert_eq!(test.commands::<ConfirmOrder>(), [ConfirmOrder { order_id: id("o-1") }]);
    assert_eq!(test.commands::<CommitSeatReservation>(), [commit("o-1")]);
    assert!(test.commands::<CancelSeatReservation>().is_empty());
    assert!(test.commands::<RejectOrder>().is_empty());
    assert!(matches!(
        process_status(&test.engine, "o-1").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Completed })
    ));
    assert_eq!(state.order_status(&id("o-1")), Some(OrderStatus::Confirmed { seats: full(2) }));
    assert_eq!(state.available(&conference(), "full"), 8);
    assert_eq!(test.engine.timers::<Registration>(&id("o-1")).await.unwrap(), []);
    assert!(test.engine.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn end_to_end_an_unpaid_order_expires_and_its_seats_go_back_on_sale() {
    let (test, state) = example();
    test.engine.publish(state.place_order(&id("o-2"), &conference(), full(3), test.now()));
    test.engine.idle().await;
    assert_eq!(state.available(&conference(), "full"), 7);

    // A moment before the expiry nothing happens; at the expiry it fires.
    test.advance(RESERVATION_TIME - Duration::from_secs(1)).await;
    assert!(test.commands::<CancelSeatReservation>().is_empty());
    test.advance(Duration::from_secs(1)).await;

    assert_eq!(test.commands::<CancelSeatReservation>(), [cancel("o-2")]);
    assert_eq!(test.commands::<RejectOrder>(), [reject("o-2")]);
    assert!(test.commands::<CommitSeatReservation>().is_empty());
    assert!(matches!(
        process_status(&test.engine, "o-2").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Expired })
    ));
    assert_eq!(state.order_status(&id("o-2")), Some(OrderStatus::Rejected));
    assert_eq!(state.available(&conference(), "full"), 10);

    // Paying after the expiry confirms nothing: the order is rejected.
    test.engine.send(PayOrder { order_id: id("o-2") });
    test.engine.idle().await;
    assert!(test.commands::<ConfirmOrder>().is_empty());
    assert_eq!(test.engine.stats().after_completion, 1);
}

#[tokio::test]
async fn end_to_end_an_order_placed_after_its_expiry_is_rejected_at_once() {
    let (test, state) = example();
    let placed = state.place_order(&id("o-3"), &conference(), full(1), test.now());
    test.clock.advance(RESERVATION_TIME + Duration::from_secs(60));
    test.engine.publish(placed);
    test.engine.idle().await;

    assert_eq!(test.commands::<RejectOrder>(), [reject("o-3")]);
    assert!(test.commands::<MakeSeatReservation>().is_empty());
    assert!(matches!(
        process_status(&test.engine, "o-3").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Rejected })
    ));
    assert_eq!(state.order_status(&id("o-3")), Some(OrderStatus::Rejected));
    assert_eq!(state.available(&conference(), "full"), 10);
}

#[tokio::test]
async fn end_to_end_seats_not_available_go_on_the_wait_list() {
    let (test, state) = example();
    let seats = vec![SeatQuantity::new("full", 1), SeatQuantity::new("workshop", 3)];
    let held = vec![SeatQuantity::new("full", 1), SeatQuantity::new("workshop", 2)];
    test.engine.publish(state.place_order(&id("o-4"), &conference(), seats, test.now()));
    test.engine.idle().await;
    test.engine.send(PayOrder { order_id: id("o-4") });
    test.engine.idle().await;

    let waiting = AddToWaitList {
        conference_id: conference(),
        order_id: id("o-4"),
        seats: vec![SeatQuantity::new("workshop", 1)],
    };
    assert_eq!(test.commands::<AddToWaitList>(), std::slice::from_ref(&waiting));
    assert_eq!(*state.wait_list.lock().unwrap(), [waiting]);
    assert_eq!(test.commands::<MarkSeatsAsReserved>(), [mark("o-4", held.clone())]);
    assert_eq!(test.commands::<CommitSeatReservation>(), [commit("o-4")]);
    assert!(matches!(
        process_status(&test.engine, "o-4").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Completed })
    ));
    assert_eq!(state.order_status(&id("o-4")), Some(OrderStatus::Confirmed { seats: held }));
    assert_eq!(state.available(&conference(), "workshop"), 0);
}

#[tokio::test]
async fn end_to_end_an_updated_order_takes_the_latest_reply_and_ignores_the_stale_one() {
    let (test, state) = example();
    // Published back to back, on the test's single thread: the update
    // reaches the process before the reply to the first request.
    test.engine.publish(state.place_order(&id("o-5"), &conference(), full(1), test.now()));
    test.engine.publish(state.update_order(&id("o-5"), full(4)));
    test.engine.idle().await;

    assert_eq!(
        test.commands::<MakeSeatReservation>(),
        [reservation("o-5", 1, full(1)), reservation("o-5", 2, full(4))]
    );
    let replies: Vec<u32> = test.events::<SeatsReserved>().iter().map(|e| e.request).collect();
    assert_eq!(replies, [1, 2]);
    assert_eq!(test.commands::<MarkSeatsAsReserved>(), [mark("o-5", full(4))]);
    assert_eq!(
        state.order_status(&id("o-5")),
        Some(OrderStatus::Reserved { seats: full(4), expires_at: expires() })
    );
    // The second request replaced the first: four seats are held, not five.
    assert_eq!(state.available(&conference(), "full"), 6);
}

#[tokio::test]
async fn end_to_end_on_sqlite_the_example_stories_end_as_they_should() {
    let path = std::env::temp_dir()
        .join(format!("switchyard-registration-test-{}.db", std::process::id()));
    // A leftover from an earlier run with the same id would skew the counts.
    common::remove_database(&path);
    let clock = ManualClock::default();
    let state = Contexts::default();
    state.open_conference(&conference(), &[("full", 10), ("workshop", 2)]);
    let engine = contexts(
        Engine::builder().store(SqliteStore::open(&path).unwrap()).clock(clock.clone()),
        &state,
    )
    .build();

    engine.publish(state.place_order(&id("paid"), &conference(), full(2), engine.now()));
    engine.publish(state.place_order(&id("unpaid"), &conference(), full(3), engine.now()));
    let seats = vec![SeatQuantity::new("workshop", 3)];
    engine.publish(state.place_order(&id("waiting"), &conference(), seats, engine.now()));
    engine.idle().await;
    engine.send(PayOrder { order_id: id("paid") });
    engine.idle().await;
    clock.advance(RESERVATION_TIME);
    engine.idle().await;

    let outcome = |order: &'static str| {
        let engine = &engine;
        async move { process_status(engine, order).await }
    };
    assert!(matches!(
        outcome("paid").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Completed })
    ));
    assert!(matches!(
        outcome("unpaid").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Expired })
    ));
    // The waiting order was not paid either: it expired too, and its
    // workshop seats went back on sale, but it stays on the wait list.
    assert!(matches!(
        outcome("waiting").await,
        Some(InstanceStatus::Completed { state: RegistrationState::Expired })
    ));
    assert_eq!(state.wait_list.lock().unwrap().len(), 1);
    assert_eq!(state.available(&conference(), "full"), 8);
    assert_eq!(state.available(&conference(), "workshop"), 2);
    assert!(engine.dead_letters().await.unwrap().is_empty());
    drop(engine);
    common::remove_database(&path);
}
