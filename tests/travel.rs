//! The travel-booking saga of `examples/travel`: a scenario for every
//! transition of its process (each handler in each state, each guard and its
//! fallback, each step timeout and the retried cancellations, and every
//! ignored message), then the saga end to end with the example's contexts,
//! on the test engine and on a SQLite file, where the order of the
//! compensations is checked.

mod common;
#[allow(dead_code)]
#[path = "../examples/travel/process.rs"]
mod travel;

use std::time::Duration;

use switchyard::testing::{Scenario, TestEngine, command, event};
use switchyard::{
    Engine, Event, InstanceStatus, ManualClock, Process as _, SqliteStore, Timestamp,
};
use travel::*;

/// What `travel.yard` gives each step to answer.
const STEP: Duration = Duration::from_secs(30);

fn trip() -> TripId {
    TripId::new("t-1")
}

/// The time `n` step timeouts after the start of a scenario.
fn steps(n: u32) -> Timestamp {
    ManualClock::EPOCH + n * STEP
}

fn requested(budget: u64) -> TripRequested {
    TripRequested {
        trip_id: trip(),
        budget,
        from: "paris".to_owned(),
        to: "lisbon".to_owned(),
        date: "2024-06-01".to_owned(),
    }
}

fn flight_booked(price: u64) -> FlightBooked {
    FlightBooked { trip_id: trip(), price }
}

fn flight_failed() -> FlightFailed {
    FlightFailed { trip_id: trip(), reason: "no seats".to_owned() }
}

fn flight_cancelled() -> FlightCancelled {
    FlightCancelled { trip_id: trip() }
}

fn hotel_booked(price: u64) -> HotelBooked {
    HotelBooked { trip_id: trip(), price }
}

fn hotel_failed() -> HotelFailed {
    HotelFailed { trip_id: trip(), reason: "no rooms".to_owned() }
}

fn hotel_cancelled() -> HotelCancelled {
    HotelCancelled { trip_id: trip() }
}

fn payment_charged() -> PaymentCharged {
    PaymentCharged { trip_id: trip() }
}

fn payment_declined() -> PaymentDeclined {
    PaymentDeclined { trip_id: trip(), reason: "card expired".to_owned() }
}

fn book_flight() -> BookFlight {
    BookFlight {
        trip_id: trip(),
        from: "paris".to_owned(),
        to: "lisbon".to_owned(),
        date: "2024-06-01".to_owned(),
    }
}

fn cancel_flight() -> CancelFlight {
    CancelFlight { trip_id: trip() }
}

fn cancel_hotel() -> CancelHotel {
    CancelHotel { trip_id: trip() }
}

/// The reason `travel.yard` publishes once a trip has been undone.
const UNDONE: &str = "a step failed; the trip was undone";

// The states of the saga, reached by their usual path: a budget of 1000, a
// flight at 400 and a hotel at 300, every message at the start time.

fn new_trip() -> Scenario<TripBooking> {
    Scenario::new(trip())
}

fn booking_flight() -> Scenario<TripBooking> {
    new_trip().given(requested(1_000))
}

fn booking_hotel() -> Scenario<TripBooking> {
    booking_flight().given(flight_booked(400))
}

fn charging() -> Scenario<TripBooking> {
    booking_hotel().given(hotel_booked(300))
}

fn cancelling_hotel() -> Scenario<TripBooking> {
    charging().given(payment_declined())
}

fn cancelling_flight() -> Scenario<TripBooking> {
    booking_hotel().given(hotel_failed())
}

/// `event` changes nothing in the state `story` leads to.
fn ignores<E: Event>(story: fn() -> Scenario<TripBooking>, state: TripBookingState, event: E)
where
    TripBooking: switchyard::Handles<E>,
    TripBookingInput: From<E>,
{
    story().when(event).expect_ignored().expect_state(state).expect_nothing_sent();
}

// Requested.

#[test]
fn a_trip_request_books_the_flight_and_starts_the_step_timeout() {
    let then = new_trip()
        .when(requested(1_000))
        .expect_state(TripBookingState::BookingFlight)
        .expect_sent(&[command(book_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
    assert_eq!(then.data.budget, 1_000);
}

#[test]
fn answers_for_a_trip_never_requested_create_nothing() {
    fn stray<E: Event>(event: E)
    where
        TripBooking: switchyard::Handles<E>,
        TripBookingInput: From<E>,
    {
        let then = new_trip().when(event).expect_ignored().expect_nothing_sent();
        assert!(!then.exists, "an ignored first message must not create the trip");
    }
    stray(flight_booked(400));
    stray(flight_failed());
    stray(hotel_booked(300));
    stray(hotel_failed());
    stray(payment_charged());
    stray(payment_declined());
    stray(flight_cancelled());
    stray(hotel_cancelled());
}

// BookingFlight.

#[test]
fn a_flight_within_budget_books_the_hotel() {
    let then = booking_flight()
        .when(flight_booked(400))
        .expect_state(TripBookingState::BookingHotel)
        .expect_sent(&[command(BookHotel { trip_id: trip(), nights: 3 })])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
    assert_eq!(then.data.flight_price, 400);
}

#[test]
fn a_flight_at_exactly_the_budget_is_within_it() {
    booking_flight().when(flight_booked(1_000)).expect_state(TripBookingState::BookingHotel);
}

#[test]
fn a_flight_over_budget_is_cancelled_at_once() {
    let then = booking_flight()
        .when(flight_booked(1_001))
        .expect_state(TripBookingState::CancellingFlight)
        .expect_sent(&[command(cancel_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
    assert_eq!(then.data.flight_price, 0, "a flight that is undone is not counted");
}

#[test]
fn a_failed_flight_fails_the_trip_with_its_reason() {
    booking_flight()
        .when(flight_failed())
        .expect_state(TripBookingState::Failed)
        .expect_completed()
        .expect_sent(&[event(TripFailed { trip_id: trip(), reason: "no seats".to_owned() })])
        .expect_timers(&[]);
}

#[test]
fn a_flight_that_does_not_answer_in_time_is_cancelled() {
    booking_flight()
        .when_timer(TripBookingTimer::StepTimeout)
        .expect_state(TripBookingState::CancellingFlight)
        .expect_sent(&[command(cancel_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(2))]);
}

#[test]
fn while_booking_the_flight_other_messages_change_nothing() {
    let state = TripBookingState::BookingFlight;
    ignores(booking_flight, state, hotel_booked(300));
    ignores(booking_flight, state, hotel_failed());
    ignores(booking_flight, state, payment_charged());
    ignores(booking_flight, state, payment_declined());
    ignores(booking_flight, state, flight_cancelled());
    ignores(booking_flight, state, hotel_cancelled());
    ignores(booking_flight, state, requested(5_000));
}

// BookingHotel.

#[test]
fn a_hotel_within_budget_charges_flight_and_hotel() {
    let then = booking_hotel()
        .when(hotel_booked(300))
        .expect_state(TripBookingState::Charging)
        .expect_sent(&[command(ChargePayment { trip_id: trip(), amount: 700 })])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
    assert_eq!((then.data.flight_price, then.data.hotel_price), (400, 300));
}

#[test]
fn a_hotel_that_fills_the_budget_exactly_is_within_it() {
    booking_hotel().when(hotel_booked(600)).expect_state(TripBookingState::Charging);
}

#[test]
fn a_hotel_that_takes_the_trip_over_budget_is_cancelled_then_the_flight() {
    booking_hotel()
        .when(hotel_booked(601))
        .expect_state(TripBookingState::CancellingHotel)
        .expect_sent(&[command(cancel_hotel())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
}

#[test]
fn a_failed_hotel_cancels_the_flight() {
    booking_hotel()
        .when(hotel_failed())
        .expect_state(TripBookingState::CancellingFlight)
        .expect_sent(&[command(cancel_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
}

#[test]
fn a_hotel_that_does_not_answer_in_time_is_cancelled() {
    booking_hotel()
        .when_timer(TripBookingTimer::StepTimeout)
        .expect_state(TripBookingState::CancellingHotel)
        .expect_sent(&[command(cancel_hotel())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(2))]);
}

#[test]
fn while_booking_the_hotel_other_messages_change_nothing() {
    let state = TripBookingState::BookingHotel;
    ignores(booking_hotel, state, flight_booked(400));
    ignores(booking_hotel, state, flight_failed());
    ignores(booking_hotel, state, payment_charged());
    ignores(booking_hotel, state, payment_declined());
    ignores(booking_hotel, state, flight_cancelled());
    ignores(booking_hotel, state, hotel_cancelled());
    ignores(booking_hotel, state, requested(5_000));
}

// Charging.

#[test]
fn a_charged_payment_books_the_trip_with_its_total() {
    charging()
        .when(payment_charged())
        .expect_state(TripBookingState::Booked)
        .expect_completed()
        .expect_sent(&[event(TripBooked { trip_id: trip(), total: 700 })])
        .expect_timers(&[]);
}

#[test]
fn a_declined_payment_cancels_the_hotel_first() {
    charging()
        .when(payment_declined())
        .expect_state(TripBookingState::CancellingHotel)
        .expect_sent(&[command(cancel_hotel())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
}

#[test]
fn a_payment_that_does_not_answer_in_time_is_treated_as_declined() {
    charging()
        .when_timer(TripBookingTimer::StepTimeout)
        .expect_state(TripBookingState::CancellingHotel)
        .expect_sent(&[command(cancel_hotel())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(2))]);
}

#[test]
fn while_charging_other_messages_change_nothing() {
    let state = TripBookingState::Charging;
    ignores(charging, state, flight_booked(400));
    ignores(charging, state, flight_failed());
    ignores(charging, state, hotel_booked(300));
    ignores(charging, state, hotel_failed());
    ignores(charging, state, flight_cancelled());
    ignores(charging, state, hotel_cancelled());
    ignores(charging, state, requested(5_000));
}

// CancellingHotel.

#[test]
fn a_cancelled_hotel_cancels_the_flight_next() {
    cancelling_hotel()
        .when(hotel_cancelled())
        .expect_state(TripBookingState::CancellingFlight)
        .expect_sent(&[command(cancel_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(1))]);
}

#[test]
fn an_unconfirmed_hotel_cancellation_is_asked_again_after_each_timeout() {
    cancelling_hotel()
        .given_timer(TripBookingTimer::StepTimeout)
        .when_timer(TripBookingTimer::StepTimeout)
        .expect_state(TripBookingState::CancellingHotel)
        .expect_sent(&[command(cancel_hotel())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(3))]);
}

#[test]
fn while_cancelling_the_hotel_other_messages_change_nothing() {
    let state = TripBookingState::CancellingHotel;
    ignores(cancelling_hotel, state, flight_booked(400));
    ignores(cancelling_hotel, state, flight_failed());
    ignores(cancelling_hotel, state, hotel_booked(300));
    ignores(cancelling_hotel, state, hotel_failed());
    ignores(cancelling_hotel, state, payment_charged());
    ignores(cancelling_hotel, state, payment_declined());
    ignores(cancelling_hotel, state, flight_cancelled());
    ignores(cancelling_hotel, state, requested(5_000));
}

// CancellingFlight.

#[test]
fn a_cancelled_flight_fails_the_trip() {
    cancelling_flight()
        .when(flight_cancelled())
        .expect_state(TripBookingState::Failed)
        .expect_completed()
        .expect_sent(&[event(TripFailed { trip_id: trip(), reason: UNDONE.to_owned() })])
        .expect_timers(&[]);
}

#[test]
fn an_unconfirmed_flight_cancellation_is_asked_again_after_each_timeout() {
    cancelling_flight()
        .given_timer(TripBookingTimer::StepTimeout)
        .when_timer(TripBookingTimer::StepTimeout)
        .expect_state(TripBookingState::CancellingFlight)
        .expect_sent(&[command(cancel_flight())])
        .expect_timers(&[(TripBookingTimer::StepTimeout, steps(3))]);
}

#[test]
fn while_cancelling_the_flight_other_messages_change_nothing() {
    let state = TripBookingState::CancellingFlight;
    ignores(cancelling_flight, state, flight_booked(400));
    ignores(cancelling_flight, state, flight_failed());
    ignores(cancelling_flight, state, hotel_booked(300));
    ignores(cancelling_flight, state, hotel_failed());
    ignores(cancelling_flight, state, payment_charged());
    ignores(cancelling_flight, state, payment_declined());
    ignores(cancelling_flight, state, hotel_cancelled());
    ignores(cancelling_flight, state, requested(5_000));
}

// After the end.

#[test]
fn a_late_payment_answer_after_the_trip_was_undone_is_not_decided() {
    let then = cancelling_hotel()
        .given(hotel_cancelled())
        .given(flight_cancelled())
        .when(payment_charged())
        .expect_state(TripBookingState::Failed)
        .expect_nothing_sent();
    assert!(then.skipped.is_some(), "a completed trip takes no more messages");
}

/// Every transition the process declares, as the tests above cover them:
/// a transition added to `travel.yard` fails here until it has its test.
#[test]
fn the_tests_above_cover_every_transition_of_the_process() {
    let description = TripBooking::description();
    let edges: Vec<_> = description
        .transitions
        .iter()
        .map(|t| (t.from, t.input, t.guarded, t.to, t.sends))
        .collect();
    assert_eq!(
        edges,
        [
            ("Requested", "TripRequested", false, "BookingFlight", &["BookFlight"][..]),
            ("BookingFlight", "FlightBooked", true, "CancellingFlight", &["CancelFlight"][..]),
            ("BookingFlight", "FlightBooked", false, "BookingHotel", &["BookHotel"][..]),
            ("BookingFlight", "FlightFailed", false, "Failed", &["TripFailed"][..]),
            ("BookingFlight", "StepTimeout", false, "CancellingFlight", &["CancelFlight"][..]),
            ("BookingHotel", "HotelBooked", true, "CancellingHotel", &["CancelHotel"][..]),
            ("BookingHotel", "HotelBooked", false, "Charging", &["ChargePayment"][..]),
            ("BookingHotel", "HotelFailed", false, "CancellingFlight", &["CancelFlight"][..]),
            ("BookingHotel", "StepTimeout", false, "CancellingHotel", &["CancelHotel"][..]),
            ("Charging", "PaymentCharged", false, "Booked", &["TripBooked"][..]),
            ("Charging", "PaymentDeclined", false, "CancellingHotel", &["CancelHotel"][..]),
            ("Charging", "StepTimeout", false, "CancellingHotel", &["CancelHotel"][..]),
            ("CancellingHotel", "HotelCancelled", false, "CancellingFlight", &["CancelFlight"][..]),
            ("CancellingHotel", "StepTimeout", false, "CancellingHotel", &["CancelHotel"][..]),
            ("CancellingFlight", "FlightCancelled", false, "Failed", &["TripFailed"][..]),
            ("CancellingFlight", "StepTimeout", false, "CancellingFlight", &["CancelFlight"][..]),
        ]
    );
}

// End to end, with the example's contexts.

/// The test engine running the saga and the contexts, with `plan` for the trip.
fn start(plan: Plan) -> (TestEngine, Agencies) {
    let agencies = Agencies::default();
    agencies.plan(&trip(), plan);
    let test = TestEngine::start(|builder| contexts(builder, &agencies));
    (test, agencies)
}

async fn status(engine: &Engine) -> Option<InstanceStatus<TripBooking>> {
    engine.instance::<TripBooking>(&trip()).await.unwrap()
}

/// The names of the commands that crossed the bus, in order.
fn commands_sent(test: &TestEngine) -> Vec<String> {
    test.sent()
        .iter()
        .filter(|e| e.kind == switchyard::MessageKind::Command)
        .map(|e| e.name.to_string())
        .collect()
}

#[tokio::test]
async fn end_to_end_a_trip_whose_every_step_succeeds_is_booked() {
    let (test, agencies) = start(Plan::default());

    test.engine.publish(requested(1_000));
    test.engine.idle().await;

    assert_eq!(agencies.calls_for(&trip()), ["BookFlight", "BookHotel", "ChargePayment"]);
    assert_eq!(
        agencies.outcomes_for(&trip()),
        [Outcome::Booked(TripBooked { trip_id: trip(), total: 700 })]
    );
    assert!(matches!(
        status(&test.engine).await,
        Some(InstanceStatus::Completed { state: TripBookingState::Booked })
    ));
    assert_eq!(test.engine.timers::<TripBooking>(&trip()).await.unwrap(), []);
    assert!(test.engine.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn end_to_end_a_declined_payment_undoes_the_hotel_then_the_flight() {
    let (test, agencies) =
        start(Plan { payment: Answer::No("card expired".to_owned()), ..Plan::default() });

    test.engine.publish(requested(1_000));
    test.engine.idle().await;

    assert_eq!(
        commands_sent(&test),
        ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"]
    );
    assert_eq!(
        agencies.calls_for(&trip()),
        ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"]
    );
    assert_eq!(
        test.events::<TripFailed>(),
        [TripFailed { trip_id: trip(), reason: UNDONE.to_owned() }]
    );
    assert_eq!(agencies.outcomes_for(&trip()).len(), 1);
    assert!(matches!(
        status(&test.engine).await,
        Some(InstanceStatus::Completed { state: TripBookingState::Failed })
    ));
    assert!(test.engine.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn end_to_end_a_failed_hotel_undoes_only_the_flight() {
    let (test, agencies) =
        start(Plan { hotel: Answer::No("no rooms left".to_owned()), ..Plan::default() });

    test.engine.publish(requested(1_000));
    test.engine.idle().await;

    assert_eq!(agencies.calls_for(&trip()), ["BookFlight", "BookHotel", "CancelFlight"]);
    assert!(test.events::<TripBooked>().is_empty());
    assert_eq!(test.events::<TripFailed>().len(), 1);
}

#[tokio::test]
async fn end_to_end_a_flight_over_budget_is_cancelled_before_any_hotel() {
    let (test, agencies) = start(Plan { flight_price: 900, ..Plan::default() });

    test.engine.publish(requested(600));
    test.engine.idle().await;

    assert_eq!(agencies.calls_for(&trip()), ["BookFlight", "CancelFlight"]);
    assert_eq!(test.events::<TripFailed>().len(), 1);
}

#[tokio::test]
async fn end_to_end_a_silent_payment_times_out_and_the_trip_is_undone() {
    let (test, agencies) = start(Plan { payment: Answer::Never, ..Plan::default() });

    test.engine.publish(requested(1_000));
    test.engine.idle().await;

    // Nothing happens until the step timeout is due.
    assert!(matches!(
        status(&test.engine).await,
        Some(InstanceStatus::Running { state: TripBookingState::Charging, .. })
    ));
    assert_eq!(
        test.engine.timers::<TripBooking>(&trip()).await.unwrap(),
        [(TripBookingTimer::StepTimeout, test.now() + STEP)]
    );
    test.advance(STEP - Duration::from_secs(1)).await;
    assert_eq!(agencies.calls_for(&trip()), ["BookFlight", "BookHotel", "ChargePayment"]);

    test.advance(Duration::from_secs(1)).await;
    assert_eq!(
        commands_sent(&test),
        ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"]
    );
    assert!(matches!(
        status(&test.engine).await,
        Some(InstanceStatus::Completed { state: TripBookingState::Failed })
    ));
    assert_eq!(test.engine.stats().timers_fired, 1);
    assert_eq!(test.engine.timers::<TripBooking>(&trip()).await.unwrap(), []);
}

#[tokio::test]
async fn end_to_end_a_silent_flight_times_out_and_is_cancelled_in_case_it_was_booked() {
    let (test, agencies) = start(Plan { flight: Answer::Never, ..Plan::default() });

    test.engine.publish(requested(1_000));
    test.engine.idle().await;
    test.advance(STEP).await;

    assert_eq!(agencies.calls_for(&trip()), ["BookFlight", "CancelFlight"]);
    assert_eq!(test.events::<TripFailed>().len(), 1);
}

#[tokio::test]
async fn end_to_end_lost_cancellations_are_asked_again_until_confirmed() {
    let (test, agencies) =
        start(Plan { payment: Answer::Never, lost_cancellations: 2, ..Plan::default() });

    test.engine.publish(requested(1_000));
    test.engine.idle().await;
    // The payment's timeout, then one per lost cancellation.
    for _ in 0..3 {
        test.advance(STEP).await;
    }

    assert_eq!(
        agencies.calls_for(&trip()),
        [
            "BookFlight",
            "BookHotel",
            "ChargePayment",
            "CancelHotel",
            "CancelHotel",
            "CancelHotel",
            "CancelFlight"
        ]
    );
    assert!(matches!(
        status(&test.engine).await,
        Some(InstanceStatus::Completed { state: TripBookingState::Failed })
    ));
    assert_eq!(test.engine.stats().timers_fired, 3);
}

#[tokio::test]
async fn end_to_end_on_sqlite_the_timeout_story_undoes_the_hotel_then_the_flight() {
    let path = std::env::temp_dir().join(format!("switchyard-travel-{}.db", std::process::id()));
    common::remove_database(&path);
    let agencies = Agencies::default();
    agencies.plan(&trip(), Plan { payment: Answer::Never, ..Plan::default() });
    let clock = ManualClock::default();
    let engine = contexts(
        Engine::builder().store(SqliteStore::open(&path).unwrap()).clock(clock.clone()),
        &agencies,
    )
    .build();

    engine.publish(requested(1_000));
    engine.idle().await;
    clock.advance(STEP);
    engine.idle().await;

    assert_eq!(
        agencies.calls_for(&trip()),
        ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"]
    );
    assert_eq!(
        agencies.outcomes_for(&trip()),
        [Outcome::Failed(TripFailed { trip_id: trip(), reason: UNDONE.to_owned() })]
    );
    assert!(matches!(
        status(&engine).await,
        Some(InstanceStatus::Completed { state: TripBookingState::Failed })
    ));
    assert!(engine.dead_letters().await.unwrap().is_empty());
    drop(engine);
    common::remove_database(&path);
}
