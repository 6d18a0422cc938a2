//! The pass cases of the code generator: the processes in
//! `processes/orders.yard` (two in one file, using every construct of the
//! language) and one inline definition compile, and their `decide`,
//! correlation, routes and description do what the definitions say.

use serde::{Deserialize, Serialize};
use switchyard::{
    Command, Context, Decision, Envelope, Event, Handles, MessageId, Outcome, Process, StateKind,
    TimerOp, Timestamp,
};

switchyard::process!("tests/processes/orders.yard");

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub cents: u64,
}

impl Money {
    pub fn cents(cents: u64) -> Money {
        Money { cents }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
#[switchyard(name = "orders.placed")]
pub struct OrderPlaced {
    pub order_id: u64,
    pub customer: String,
    pub seats: Vec<u32>,
    pub remind_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct SeatsReserved {
    pub reservation_id: u64,
    pub seats: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct PaymentReceived {
    pub order_id: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct OrderRejected {
    pub order_id: u64,
    pub reason: String,
    pub codes: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct MakeReservation {
    pub order_id: u64,
    pub seats: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct MarkReserved {
    pub order_id: u64,
    pub seats: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct RemindCustomer {
    pub order_id: u64,
    pub customer: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
#[switchyard(name = "payments.confirm")]
pub struct ConfirmOrder {
    pub order_id: u64,
    pub paid_at: Timestamp,
    pub total: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct RefundPayment {
    pub order_id: u64,
    pub amount: Money,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct PingRequested {
    pub customer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct Pong {
    pub customer: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct Ping;

switchyard::process! {
    /// Tracks a parcel: an inline definition, with a publish and an `any state`.
    process Parcel {
        correlate by parcel_id: u32

        data {
            hops: u32 = 0
        }

        initial state Created {
            on ParcelScanned {
                set hops = data.hops + 1
                -> InTransit
            }
        }

        state InTransit {
            on ParcelScanned when event.at_destination {
                publish ParcelDelivered { parcel_id: id, hops: data.hops + 1 }
                -> Delivered
            }
            on ParcelScanned { set hops = data.hops + 1 }
        }

        any state {
            ignore ParcelLost
        }

        final state Delivered
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct ParcelScanned {
    pub parcel_id: u32,
    pub at_destination: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct ParcelLost {
    pub parcel_id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct ParcelDelivered {
    pub parcel_id: u32,
    pub hops: u32,
}

const MINUTE: u64 = 60_000;

fn decide<P: Process>(
    state: P::State,
    data: &P::Data,
    input: impl Into<P::Input>,
    key: &P::Key,
    now: u64,
) -> Decision<P> {
    let ctx = Context { key, now: Timestamp(now), message_id: MessageId::new() };
    P::decide(state, data, &input.into(), &ctx)
}

fn placed() -> OrderPlaced {
    OrderPlaced {
        order_id: 7,
        customer: "ada".to_owned(),
        seats: vec![1, 2],
        remind_at: Timestamp(5 * MINUTE),
    }
}

fn reserved(seats: &[u32]) -> SeatsReserved {
    SeatsReserved { reservation_id: 7, seats: seats.to_vec() }
}

/// The data of an order for seats 1 and 2 by `ada`, after `attempts` retries.
fn order_data(attempts: u32) -> RegistrationData {
    RegistrationData { seats: vec![1, 2], attempts, customer: "ada".to_owned() }
}

#[test]
fn data_starts_from_its_initial_values() {
    let data = RegistrationData::default();
    assert_eq!((data.seats, data.attempts, data.customer.as_str()), (vec![], 0, "anonymous"));
    let data = PingerData::default();
    assert_eq!((data.pings, data.first, data.backoff), (0, None, 1.5));
}

#[test]
fn an_order_sets_data_then_sends_what_it_just_set_and_schedules_both_timers() {
    let decision = decide::<Registration>(
        RegistrationState::NotStarted,
        &RegistrationData::default(),
        placed(),
        &7,
        1_000,
    );
    assert_eq!(decision.outcome, Outcome::Handled);
    assert_eq!(decision.state, RegistrationState::AwaitingReservation);
    let data = decision.data.expect("the handler sets data");
    assert_eq!((data.seats.as_slice(), data.customer.as_str()), ([1, 2].as_slice(), "ada"));
    assert!(matches!(
        decision.outputs.as_slice(),
        [RegistrationOutput::MakeReservation(MakeReservation { order_id: 7, seats })] if seats == &[1, 2]
    ));
    assert_eq!(
        decision.timers,
        [
            TimerOp::Schedule {
                timer: RegistrationTimer::Expiry,
                at: Timestamp(1_000 + 15 * MINUTE)
            },
            TimerOp::Schedule { timer: RegistrationTimer::Reminder, at: Timestamp(5 * MINUTE) },
        ]
    );
}

#[test]
fn guards_are_tried_in_order_and_the_fallback_runs_when_none_holds() {
    let state = RegistrationState::AwaitingReservation;

    // The first guard: the reservation matches the order.
    let decision = decide::<Registration>(state, &order_data(0), reserved(&[1, 2]), &7, 0);
    assert_eq!(decision.state, RegistrationState::AwaitingPayment);
    assert!(decision.data.is_none());
    assert!(matches!(
        decision.outputs.as_slice(),
        [RegistrationOutput::MarkReserved(MarkReserved { order_id: 7, .. })]
    ));

    // The second: a partial reservation is retried, and the instance stays.
    let decision = decide::<Registration>(state, &order_data(1), reserved(&[1]), &7, 0);
    assert_eq!(decision.state, state);
    assert_eq!(decision.data.map(|d| d.attempts), Some(2));
    assert!(matches!(decision.outputs.as_slice(), [RegistrationOutput::MakeReservation(_)]));
    assert!(decision.timers.is_empty());

    // The fallback: out of attempts, the order is rejected and its timers cancelled.
    let decision = decide::<Registration>(state, &order_data(3), reserved(&[1]), &7, 0);
    assert_eq!(decision.state, RegistrationState::Rejected);
    assert!(Registration::is_final(decision.state));
    let [RegistrationOutput::OrderRejected(rejected)] = decision.outputs.as_slice() else {
        panic!("expected one `OrderRejected`, got {:?}", decision.outputs);
    };
    assert_eq!(
        rejected,
        &OrderRejected { order_id: 7, reason: "no seats".to_owned(), codes: vec![1, 6] }
    );
    assert_eq!(
        decision.timers,
        [
            TimerOp::Cancel { timer: RegistrationTimer::Expiry },
            TimerOp::Cancel { timer: RegistrationTimer::Reminder },
        ]
    );
}

#[test]
fn any_state_applies_where_a_state_says_nothing() {
    let data = order_data(0);
    let state = RegistrationState::AwaitingPayment;
    let decision = decide::<Registration>(state, &data, RegistrationInput::Reminder, &7, 0);
    assert_eq!((decision.outcome, decision.state), (Outcome::Handled, state));
    assert!(matches!(
        decision.outputs.as_slice(),
        [RegistrationOutput::RemindCustomer(RemindCustomer { order_id: 7, customer })] if customer == "ada"
    ));

    let decision = decide::<Registration>(state, &data, placed(), &7, 0);
    assert_eq!((decision.outcome, decision.state), (Outcome::Ignored, state));
}

#[test]
fn payment_reads_now_and_calls_rust_functions() {
    let state = RegistrationState::AwaitingPayment;
    let paid = PaymentReceived { order_id: 7, amount: 250 };
    let decision = decide::<Registration>(state, &order_data(0), paid, &7, 42);
    assert_eq!(decision.state, RegistrationState::Completed);
    let [RegistrationOutput::ConfirmOrder(confirm)] = decision.outputs.as_slice() else {
        panic!("expected one `ConfirmOrder`, got {:?}", decision.outputs);
    };
    assert_eq!((confirm.paid_at, &confirm.total), (Timestamp(42), &Money::cents(250)));

    let short = PaymentReceived { order_id: 7, amount: 150 };
    let decision = decide::<Registration>(state, &order_data(0), short, &7, 42);
    assert_eq!(decision.state, state);
    assert!(matches!(
        decision.outputs.as_slice(),
        [RegistrationOutput::RefundPayment(RefundPayment { amount: Money { cents: 150 }, .. })]
    ));
}

#[test]
fn a_final_state_takes_nothing() {
    for input in [RegistrationInput::from(placed()), RegistrationInput::Expiry] {
        let decision =
            decide::<Registration>(RegistrationState::Completed, &order_data(0), input, &7, 0);
        assert_eq!(decision.outcome, Outcome::Ignored);
        assert_eq!(decision.state, RegistrationState::Completed);
    }
}

#[test]
fn a_second_process_in_the_same_file_retries_until_its_guard_holds() {
    let key = "ada".to_owned();
    let decision = decide::<Pinger>(
        PingerState::Idle,
        &PingerData::default(),
        PingRequested { customer: key.clone() },
        &key,
        9,
    );
    assert_eq!(decision.state, PingerState::Waiting);
    assert_eq!(decision.data.as_ref().and_then(|d| d.first), Some(Timestamp(9)));
    assert!(matches!(decision.outputs.as_slice(), [PingerOutput::Ping(Ping)]));

    let mut data = PingerData::default();
    let retry = decide::<Pinger>(PingerState::Waiting, &data, PingerInput::Retry, &key, 10);
    assert_eq!(retry.state, PingerState::Waiting);
    assert_eq!(
        retry.timers,
        [TimerOp::Schedule { timer: PingerTimer::Retry, at: Timestamp(30_010) }]
    );
    data.pings = 3;
    let gave_up = decide::<Pinger>(PingerState::Waiting, &data, PingerInput::Retry, &key, 10);
    assert_eq!((gave_up.state, gave_up.outputs.len()), (PingerState::Done, 0));
}

#[test]
fn an_inline_process_publishes_its_own_events() {
    let scanned = |at_destination| ParcelScanned { parcel_id: 3, at_destination };
    let data = ParcelData { hops: 2 };
    let decision = decide::<Parcel>(ParcelState::InTransit, &data, scanned(true), &3, 0);
    assert_eq!(decision.state, ParcelState::Delivered);
    let [ParcelOutput::ParcelDelivered(delivered)] = decision.outputs.as_slice() else {
        panic!("expected one `ParcelDelivered`, got {:?}", decision.outputs);
    };
    assert_eq!(delivered, &ParcelDelivered { parcel_id: 3, hops: 3 });
    let body = decision.outputs[0].clone();
    assert_eq!(switchyard::Outgoing::kind(&body), switchyard::MessageKind::Event);
    assert_eq!(switchyard::Outgoing::name(&body), "ParcelDelivered");

    let lost = decide::<Parcel>(ParcelState::Created, &data, ParcelLost { parcel_id: 3 }, &3, 0);
    assert_eq!(lost.outcome, Outcome::Ignored);
}

#[test]
fn wire_names_default_to_the_type_name_unless_renamed() {
    assert_eq!(<OrderPlaced as Event>::NAME, "orders.placed");
    assert_eq!(<SeatsReserved as Event>::NAME, "SeatsReserved");
    assert_eq!(<ConfirmOrder as Command>::NAME, "payments.confirm");
    let confirm = RegistrationOutput::ConfirmOrder(ConfirmOrder {
        order_id: 1,
        paid_at: Timestamp(0),
        total: Money::cents(1),
    });
    assert_eq!(switchyard::Outgoing::name(&confirm), "payments.confirm");
    assert_eq!(switchyard::Outgoing::kind(&confirm), switchyard::MessageKind::Command);
}

#[test]
fn events_are_correlated_by_their_own_field_or_the_default_one() {
    let seats = SeatsReserved { reservation_id: 11, seats: vec![] };
    assert_eq!(<Registration as Handles<SeatsReserved>>::correlate(&seats), &11);
    assert_eq!(<Registration as Handles<OrderPlaced>>::correlate(&placed()), &7);

    // A route decodes an envelope by its wire name and takes the key.
    let route = Registration::routes().iter().find(|r| r.event == "orders.placed").unwrap();
    let (key, input) = (route.decode)(&Envelope::event(placed())).unwrap();
    assert_eq!(key, 7);
    assert!(matches!(input, RegistrationInput::OrderPlaced(OrderPlaced { order_id: 7, .. })));

    // It takes a typed event of its type, and nothing else; the input gives
    // the message back, as the dead letters need it.
    let (key, input) = (route.take)(&placed()).unwrap();
    assert_eq!(key, 7);
    assert!((route.take)(&seats).is_none());
    let (name, body) = Registration::input_message(&input).unwrap();
    assert_eq!(name, "orders.placed");
    assert_eq!(body.decode::<OrderPlaced>().unwrap().order_id, 7);
    assert!(
        Registration::input_message(&Registration::timer_input(RegistrationTimer::Expiry))
            .is_none()
    );
}

#[test]
fn the_description_lists_states_inputs_timers_and_transitions() {
    let description = Registration::description();
    assert_eq!(description.name, "Registration");
    assert!(description.docs.starts_with("Coordinates an order"));
    let states: Vec<_> = description.states.iter().map(|s| (s.name, s.kind)).collect();
    assert_eq!(
        states,
        [
            ("NotStarted", StateKind::Initial),
            ("AwaitingReservation", StateKind::Normal),
            ("AwaitingPayment", StateKind::Normal),
            ("Completed", StateKind::Final),
            ("Rejected", StateKind::Final),
        ]
    );
    assert_eq!(description.states[1].docs, "Seats are being reserved.");
    assert_eq!(description.inputs, ["orders.placed", "SeatsReserved", "PaymentReceived"]);
    assert_eq!(description.timers, ["Expiry", "Reminder"]);
    let from_reservation: Vec<_> = description
        .transitions
        .iter()
        .filter(|t| t.from == "AwaitingReservation")
        .map(|t| (t.input, t.guarded, t.to))
        .collect();
    assert_eq!(
        from_reservation,
        [
            ("SeatsReserved", true, "AwaitingPayment"),
            ("SeatsReserved", true, "AwaitingReservation"),
            ("SeatsReserved", false, "Rejected"),
            ("Expiry", false, "Rejected"),
            ("Reminder", false, "AwaitingReservation"),
        ]
    );
}

#[test]
fn states_are_listed_and_travel_as_json() {
    assert_eq!(PingerState::ALL, [PingerState::Idle, PingerState::Waiting, PingerState::Done]);
    assert_eq!(Registration::INITIAL, RegistrationState::NotStarted);
    let json = serde_json::to_string(&RegistrationState::AwaitingPayment).unwrap();
    assert_eq!(json, "\"AwaitingPayment\"");
    let data: RegistrationData =
        serde_json::from_str(&serde_json::to_string(&order_data(2)).unwrap()).unwrap();
    assert_eq!(data.attempts, 2);
}
