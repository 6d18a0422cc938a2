//! The travel-booking saga of `travel.yard`, with its messages and three
//! small in-process contexts that answer its commands: flights, hotels and
//! payments. Each context follows a per-trip [`Plan`], so that a story can
//! say which step fails, which one never answers, and how many cancellations
//! are lost before one is confirmed. A subscriber of the saga's published
//! `TripBooked` and `TripFailed` reports each outcome. `main.rs` runs it; the
//! tests under `tests/` use it too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard::{Command, CommandContext, EngineBuilder, Event, HandlerError};

switchyard::process!("examples/travel/travel.yard");

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TripId(pub String);

impl TripId {
    pub fn new(id: &str) -> TripId {
        TripId(id.to_owned())
    }
}

// The events the saga takes.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct TripRequested {
    pub trip_id: TripId,
    pub budget: u64,
    pub from: String,
    pub to: String,
    pub date: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct FlightBooked {
    pub trip_id: TripId,
    pub price: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct FlightFailed {
    pub trip_id: TripId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct FlightCancelled {
    pub trip_id: TripId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct HotelBooked {
    pub trip_id: TripId,
    pub price: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct HotelFailed {
    pub trip_id: TripId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct HotelCancelled {
    pub trip_id: TripId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct PaymentCharged {
    pub trip_id: TripId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct PaymentDeclined {
    pub trip_id: TripId,
    pub reason: String,
}

// The events the saga publishes.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct TripBooked {
    pub trip_id: TripId,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct TripFailed {
    pub trip_id: TripId,
    pub reason: String,
}

// The commands the saga sends.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct BookFlight {
    pub trip_id: TripId,
    pub from: String,
    pub to: String,
    pub date: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct CancelFlight {
    pub trip_id: TripId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct BookHotel {
    pub trip_id: TripId,
    pub nights: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct CancelHotel {
    pub trip_id: TripId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct ChargePayment {
    pub trip_id: TripId,
    pub amount: u64,
}

/// How a context answers one booking request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Books or charges.
    Yes,
    /// Refuses, with this reason.
    No(String),
    /// Never answers: the saga's `StepTimeout` has to notice.
    Never,
}

/// How the contexts treat one trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub flight: Answer,
    pub flight_price: u64,
    pub hotel: Answer,
    pub hotel_price: u64,
    pub payment: Answer,
    /// Cancellations (of either kind) that go unanswered before the
    /// contexts start confirming them, as if lost on the way.
    pub lost_cancellations: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            flight: Answer::Yes,
            flight_price: 400,
            hotel: Answer::Yes,
            hotel_price: 300,
            payment: Answer::Yes,
            lost_cancellations: 0,
        }
    }
}

/// The outcome the saga published for a trip.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Booked(TripBooked),
    Failed(TripFailed),
}

/// What the contexts share: the plan of each trip (a trip without one gets
/// [`Plan::default`]), every command they were given in order, and the
/// outcomes reported.
#[derive(Clone, Debug, Default)]
pub struct Agencies {
    pub plans: Arc<Mutex<HashMap<TripId, Plan>>>,
    pub calls: Arc<Mutex<Vec<(TripId, &'static str)>>>,
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Agencies {
    /// Sets how the contexts treat `trip`.
    pub fn plan(&self, trip: &TripId, plan: Plan) {
        self.plans.lock().unwrap().insert(trip.clone(), plan);
    }

    /// The commands the contexts were given for `trip`, in order.
    pub fn calls_for(&self, trip: &TripId) -> Vec<&'static str> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|(t, _)| t == trip).map(|(_, name)| *name).collect()
    }

    /// The outcomes reported for `trip`.
    pub fn outcomes_for(&self, trip: &TripId) -> Vec<Outcome> {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes
            .iter()
            .filter(|o| match o {
                Outcome::Booked(b) => &b.trip_id == trip,
                Outcome::Failed(f) => &f.trip_id == trip,
            })
            .cloned()
            .collect()
    }

    /// Records the call and returns the trip's plan.
    fn called(&self, trip: &TripId, name: &'static str) -> Plan {
        self.calls.lock().unwrap().push((trip.clone(), name));
        self.plans.lock().unwrap().get(trip).cloned().unwrap_or_default()
    }

    /// Whether this cancellation is one of the trip's lost ones: the plan's
    /// count goes down with each, so that a later one is confirmed.
    fn loses_cancellation(&self, trip: &TripId) -> bool {
        let mut plans = self.plans.lock().unwrap();
        match plans.get_mut(trip) {
            Some(plan) if plan.lost_cancellations > 0 => {
                plan.lost_cancellations -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The flights context: books at the plan's price, or refuses, or stays
/// silent; a cancellation is confirmed unless the plan loses it.
async fn book_flight(
    agencies: Agencies,
    command: BookFlight,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let trip = command.trip_id;
    let plan = agencies.called(&trip, "BookFlight");
    let asked = format!(
        "  flights     <- BookFlight {{ {:?}, {} -> {} }}",
        trip.0, command.from, command.to
    );
    match plan.flight {
        Answer::Yes => {
            println!("{asked} -> FlightBooked {{ price: {} }}", plan.flight_price);
            ctx.publish(FlightBooked { trip_id: trip, price: plan.flight_price });
        }
        Answer::No(reason) => {
            println!("{asked} -> FlightFailed {{ {reason:?} }}");
            ctx.publish(FlightFailed { trip_id: trip, reason });
        }
        Answer::Never => println!("{asked} -> (no answer)"),
    }
    Ok(())
}

async fn cancel_flight(
    agencies: Agencies,
    command: CancelFlight,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let trip = command.trip_id;
    agencies.called(&trip, "CancelFlight");
    if agencies.loses_cancellation(&trip) {
        println!("  flights     <- CancelFlight {{ {:?} }} -> (lost)", trip.0);
    } else {
        println!("  flights     <- CancelFlight {{ {:?} }} -> FlightCancelled", trip.0);
        ctx.publish(FlightCancelled { trip_id: trip });
    }
    Ok(())
}

/// The hotels context, like the flights one.
async fn book_hotel(
    agencies: Agencies,
    command: BookHotel,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let trip = command.trip_id;
    let plan = agencies.called(&trip, "BookHotel");
    let asked = format!("  hotels      <- BookHotel {{ {:?}, {} nights }}", trip.0, command.nights);
    match plan.hotel {
        Answer::Yes => {
            println!("{asked} -> HotelBooked {{ price: {} }}", plan.hotel_price);
            ctx.publish(HotelBooked { trip_id: trip, price: plan.hotel_price });
        }
        Answer::No(reason) => {
            println!("{asked} -> HotelFailed {{ {reason:?} }}");
            ctx.publish(HotelFailed { trip_id: trip, reason });
        }
        Answer::Never => println!("{asked} -> (no answer)"),
    }
    Ok(())
}

async fn cancel_hotel(
    agencies: Agencies,
    command: CancelHotel,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let trip = command.trip_id;
    agencies.called(&trip, "CancelHotel");
    if agencies.loses_cancellation(&trip) {
        println!("  hotels      <- CancelHotel {{ {:?} }} -> (lost)", trip.0);
    } else {
        println!("  hotels      <- CancelHotel {{ {:?} }} -> HotelCancelled", trip.0);
        ctx.publish(HotelCancelled { trip_id: trip });
    }
    Ok(())
}

/// The payments context: charges, declines or stays silent, by the plan.
async fn charge_payment(
    agencies: Agencies,
    command: ChargePayment,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let trip = command.trip_id;
    let plan = agencies.called(&trip, "ChargePayment");
    let asked = format!("  payments    <- ChargePayment {{ {:?}, {} }}", trip.0, command.amount);
    match plan.payment {
        Answer::Yes => {
            println!("{asked} -> PaymentCharged");
            ctx.publish(PaymentCharged { trip_id: trip });
        }
        Answer::No(reason) => {
            println!("{asked} -> PaymentDeclined {{ {reason:?} }}");
            ctx.publish(PaymentDeclined { trip_id: trip, reason });
        }
        Answer::Never => println!("{asked} -> (no answer)"),
    }
    Ok(())
}

/// Adds the saga, the three contexts and the outcome subscriber to an
/// engine builder: `main.rs` gives it a SQLite store and a manual clock,
/// tests a test engine.
pub fn contexts(builder: EngineBuilder, agencies: &Agencies) -> EngineBuilder {
    // Each handler owns a clone of the shared state; the clones share it.
    let (a, b, c, d, e) =
        (agencies.clone(), agencies.clone(), agencies.clone(), agencies.clone(), agencies.clone());
    let (booked, failed) = (agencies.outcomes.clone(), agencies.outcomes.clone());
    builder
        .process::<TripBooking>()
        .handle(move |command: BookFlight, ctx| book_flight(a.clone(), command, ctx))
        .handle(move |command: CancelFlight, ctx| cancel_flight(b.clone(), command, ctx))
        .handle(move |command: BookHotel, ctx| book_hotel(c.clone(), command, ctx))
        .handle(move |command: CancelHotel, ctx| cancel_hotel(d.clone(), command, ctx))
        .handle(move |command: ChargePayment, ctx| charge_payment(e.clone(), command, ctx))
        .subscribe(move |event: TripBooked, _| {
            let outcomes = booked.clone();
            async move {
                println!(
                    "  itinerary   <- TripBooked {{ {:?}, total: {} }}",
                    event.trip_id.0, event.total
                );
                outcomes.lock().unwrap().push(Outcome::Booked(event));
                Ok(())
            }
        })
        .subscribe(move |event: TripFailed, _| {
            let outcomes = failed.clone();
            async move {
                println!(
                    "  itinerary   <- TripFailed {{ {:?}, {:?} }}",
                    event.trip_id.0, event.reason
                );
                outcomes.lock().unwrap().push(Outcome::Failed(event));
                Ok(())
            }
        })
}
