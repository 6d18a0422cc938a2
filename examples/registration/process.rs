//! The conference registration process of the CQRS Journey (`registration.yard`),
//! with its messages and four small in-process contexts that answer its
//! commands: Reservations holds a conference's seats, Orders keeps each
//! order's status, Payments takes payment, and the wait list records the
//! seats that could not be reserved. The process only routes messages
//! between them; every business rule (how many seats are left, whether an
//! order may still be confirmed) lives in a context. `main.rs` runs it; the
//! tests under `tests/` use it too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard::{Command, CommandContext, EngineBuilder, Event, HandlerError, Timestamp};

switchyard::process!("examples/registration/registration.yard");

/// How long an order holds its seats before it must be paid.
pub const RESERVATION_TIME: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub String);

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConferenceId(pub String);

/// A number of seats of one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatQuantity {
    pub seat_type: String,
    pub quantity: u32,
}

impl SeatQuantity {
    pub fn new(seat_type: &str, quantity: u32) -> SeatQuantity {
        SeatQuantity { seat_type: seat_type.to_owned(), quantity }
    }
}

// Events.

/// An order was placed; its seats are held until `reservation_expires`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub conference_id: ConferenceId,
    pub seats: Vec<SeatQuantity>,
    pub reservation_expires: Timestamp,
}

/// The registrant changed the seats of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct OrderUpdated {
    pub order_id: OrderId,
    pub seats: Vec<SeatQuantity>,
}

/// Every seat of reservation request `request` is reserved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct SeatsReserved {
    pub reservation_id: OrderId,
    pub conference_id: ConferenceId,
    pub request: u32,
    pub reserved: Vec<SeatQuantity>,
}

/// Only some seats of reservation request `request` could be reserved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct SeatsNotReserved {
    pub reservation_id: OrderId,
    pub conference_id: ConferenceId,
    pub request: u32,
    pub reserved: Vec<SeatQuantity>,
    pub missing: Vec<SeatQuantity>,
}

/// An order was paid; `payment_source_id` is the order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct PaymentCompleted {
    pub payment_source_id: OrderId,
    pub payment_id: String,
}

/// The order is confirmed: its registrants may attend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
}

// Commands.

/// Reserves seats for an order; a request for a reservation that exists
/// replaces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct MakeSeatReservation {
    pub conference_id: ConferenceId,
    pub reservation_id: OrderId,
    pub request: u32,
    pub seats: Vec<SeatQuantity>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct CancelSeatReservation {
    pub conference_id: ConferenceId,
    pub reservation_id: OrderId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct CommitSeatReservation {
    pub conference_id: ConferenceId,
    pub reservation_id: OrderId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct MarkSeatsAsReserved {
    pub order_id: OrderId,
    pub seats: Vec<SeatQuantity>,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct ConfirmOrder {
    pub order_id: OrderId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct RejectOrder {
    pub order_id: OrderId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct AddToWaitList {
    pub conference_id: ConferenceId,
    pub order_id: OrderId,
    pub seats: Vec<SeatQuantity>,
}

/// The registrant pays for an order (sent by the registration site, not by
/// the process).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Command)]
pub struct PayOrder {
    pub order_id: OrderId,
}

// The contexts.

/// What the Orders context knows of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Placed,
    Reserved { seats: Vec<SeatQuantity>, expires_at: Timestamp },
    Confirmed { seats: Vec<SeatQuantity> },
    Rejected,
}

#[derive(Clone, Debug)]
pub struct Order {
    pub seats: Vec<SeatQuantity>,
    pub status: OrderStatus,
}

/// One conference's seats, per seat type.
#[derive(Clone, Debug, Default)]
pub struct SeatsAvailability {
    pub capacity: BTreeMap<String, u32>,
    /// Seats held for an order until it is paid or expires.
    pub pending: BTreeMap<OrderId, Vec<SeatQuantity>>,
    /// Seats sold for good.
    pub committed: BTreeMap<OrderId, Vec<SeatQuantity>>,
}

impl SeatsAvailability {
    /// The seats of `seat_type` that nobody holds.
    pub fn available(&self, seat_type: &str) -> u32 {
        let taken: u32 = self
            .pending
            .values()
            .chain(self.committed.values())
            .flatten()
            .filter(|s| s.seat_type == seat_type)
            .map(|s| s.quantity)
            .sum();
        self.capacity.get(seat_type).copied().unwrap_or(0).saturating_sub(taken)
    }

    /// Holds what is available of `seats` for `reservation`, replacing what
    /// it held before; answers what was held and what was missing.
    fn reserve(
        &mut self,
        reservation: &OrderId,
        seats: &[SeatQuantity],
    ) -> (Vec<SeatQuantity>, Vec<SeatQuantity>) {
        self.pending.remove(reservation);
        let (mut reserved, mut missing) = (Vec::new(), Vec::new());
        for wanted in seats {
            let held = wanted.quantity.min(self.available(&wanted.seat_type));
            if held > 0 {
                reserved.push(SeatQuantity::new(&wanted.seat_type, held));
            }
            if held < wanted.quantity {
                missing.push(SeatQuantity::new(&wanted.seat_type, wanted.quantity - held));
            }
        }
        self.pending.insert(reservation.clone(), reserved.clone());
        (reserved, missing)
    }
}

/// Every context's state, shared with the handlers, so that a program or a
/// test can read it.
#[derive(Clone, Debug, Default)]
pub struct Contexts {
    pub conferences: Arc<Mutex<BTreeMap<ConferenceId, SeatsAvailability>>>,
    pub orders: Arc<Mutex<BTreeMap<OrderId, Order>>>,
    pub payments: Arc<Mutex<Vec<PaymentCompleted>>>,
    pub wait_list: Arc<Mutex<Vec<AddToWaitList>>>,
}

impl Contexts {
    /// Opens a conference with `capacity` seats per seat type.
    pub fn open_conference(&self, conference: &ConferenceId, capacity: &[(&str, u32)]) {
        let seats = SeatsAvailability {
            capacity: capacity.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
            ..SeatsAvailability::default()
        };
        self.conferences.lock().unwrap().insert(conference.clone(), seats);
    }

    /// The Orders context takes an order placed at `now`: its seats are held
    /// for [`RESERVATION_TIME`]. The caller publishes the event.
    pub fn place_order(
        &self,
        order_id: &OrderId,
        conference_id: &ConferenceId,
        seats: Vec<SeatQuantity>,
        now: Timestamp,
    ) -> OrderPlaced {
        let order = Order { seats: seats.clone(), status: OrderStatus::Placed };
        self.orders.lock().unwrap().insert(order_id.clone(), order);
        println!("  orders      order {:?} placed: {}", order_id.0, describe(&seats));
        OrderPlaced {
            order_id: order_id.clone(),
            conference_id: conference_id.clone(),
            seats,
            reservation_expires: now + RESERVATION_TIME,
        }
    }

    /// The registrant changes the seats of an order: it waits for a new
    /// reservation. The caller publishes the event.
    pub fn update_order(&self, order_id: &OrderId, seats: Vec<SeatQuantity>) -> OrderUpdated {
        if let Some(order) = self.orders.lock().unwrap().get_mut(order_id) {
            order.seats = seats.clone();
            order.status = OrderStatus::Placed;
        }
        println!("  orders      order {:?} updated: {}", order_id.0, describe(&seats));
        OrderUpdated { order_id: order_id.clone(), seats }
    }

    /// The status of an order by the Orders context.
    pub fn order_status(&self, order_id: &OrderId) -> Option<OrderStatus> {
        self.orders.lock().unwrap().get(order_id).map(|o| o.status.clone())
    }

    /// The seats of `seat_type` nobody holds at `conference`.
    pub fn available(&self, conference: &ConferenceId, seat_type: &str) -> u32 {
        self.conferences.lock().unwrap().get(conference).map_or(0, |c| c.available(seat_type))
    }
}

/// Seats as `2 x full, 1 x student`.
pub fn describe(seats: &[SeatQuantity]) -> String {
    let parts: Vec<String> =
        seats.iter().map(|s| format!("{} x {}", s.quantity, s.seat_type)).collect();
    if parts.is_empty() { "no seats".to_owned() } else { parts.join(", ") }
}

/// The Reservations context: holds what it can of the seats asked for, and
/// says which were missing.
async fn make_reservation(
    contexts: Contexts,
    command: MakeSeatReservation,
    ctx: CommandContext,
) -> Result<(), HandlerError> {
    let (reserved, missing) = {
        let mut conferences = contexts.conferences.lock().unwrap();
        let Some(conference) = conferences.get_mut(&command.conference_id) else {
            return Err(HandlerError::from(format!("no conference {:?}", command.conference_id.0)));
        };
        conference.reserve(&command.reservation_id, &command.seats)
    };
    println!(
        "  reservation <- MakeSeatReservation #{} for {:?}: {}",
        command.request,
        command.reservation_id.0,
        describe(&command.seats)
    );
    if missing.is_empty() {
        println!("  reservation -> SeatsReserved #{}: {}", command.request, describe(&reserved));
        ctx.publish(SeatsReserved {
            reservation_id: command.reservation_id,
            conference_id: command.conference_id,
            request: command.request,
            reserved,
        });
    } else {
        println!(
            "  reservation -> SeatsNotReserved #{}: held {}, missing {}",
            command.request,
            describe(&reserved),
            describe(&missing)
        );
        ctx.publish(SeatsNotReserved {
            reservation_id: command.reservation_id,
            conference_id: command.conference_id,
            request: command.request,
            reserved,
            missing,
        });
    }
    Ok(())
}

/// Adds the process and the contexts to an engine builder, the contexts
/// keeping their state in `contexts`: the example and the tests run the same
/// engine.
pub fn contexts(builder: EngineBuilder, contexts: &Contexts) -> EngineBuilder {
    let (reserve, cancel, commit) = (contexts.clone(), contexts.clone(), contexts.clone());
    let (mark, confirm, reject) = (contexts.clone(), contexts.clone(), contexts.clone());
    let (pay, wait) = (contexts.clone(), contexts.clone());
    builder
        .process::<Registration>()
        .handle(move |command: MakeSeatReservation, ctx| {
            make_reservation(reserve.clone(), command, ctx)
        })
        .handle(move |command: CancelSeatReservation, _| {
            let contexts = cancel.clone();
            async move {
                let mut conferences = contexts.conferences.lock().unwrap();
                let released = conferences
                    .get_mut(&command.conference_id)
                    .and_then(|c| c.pending.remove(&command.reservation_id))
                    .unwrap_or_default();
                println!(
                    "  reservation <- CancelSeatReservation {:?}: {} back on sale",
                    command.reservation_id.0,
                    describe(&released)
                );
                Ok(())
            }
        })
        .handle(move |command: CommitSeatReservation, _| {
            let contexts = commit.clone();
            async move {
                let mut conferences = contexts.conferences.lock().unwrap();
                if let Some(conference) = conferences.get_mut(&command.conference_id) {
                    let seats =
                        conference.pending.remove(&command.reservation_id).unwrap_or_default();
                    println!(
                        "  reservation <- CommitSeatReservation {:?}: {} sold",
                        command.reservation_id.0,
                        describe(&seats)
                    );
                    conference.committed.insert(command.reservation_id, seats);
                }
                Ok(())
            }
        })
        .handle(move |command: MarkSeatsAsReserved, _| {
            let contexts = mark.clone();
            async move {
                println!(
                    "  orders      <- MarkSeatsAsReserved {:?}: {}",
                    command.order_id.0,
                    describe(&command.seats)
                );
                if let Some(order) = contexts.orders.lock().unwrap().get_mut(&command.order_id) {
                    order.status = OrderStatus::Reserved {
                        seats: command.seats,
                        expires_at: command.expires_at,
                    };
                }
                Ok(())
            }
        })
        .handle(move |command: ConfirmOrder, ctx: CommandContext| {
            let contexts = confirm.clone();
            async move {
                // Only an order whose seats are held can be confirmed; a
                // rejected one stays rejected, and its payment is refunded
                // elsewhere.
                let confirmed = {
                    let mut orders = contexts.orders.lock().unwrap();
                    match orders.get_mut(&command.order_id) {
                        Some(order) => match &order.status {
                            OrderStatus::Reserved { seats, .. } => {
                                order.status = OrderStatus::Confirmed { seats: seats.clone() };
                                true
                            }
                            _ => false,
                        },
                        None => false,
                    }
                };
                println!("  orders      <- ConfirmOrder {:?}", command.order_id.0);
                if confirmed {
                    println!("  orders      -> OrderConfirmed {:?}", command.order_id.0);
                    ctx.publish(OrderConfirmed { order_id: command.order_id });
                }
                Ok(())
            }
        })
        .handle(move |command: RejectOrder, _| {
            let contexts = reject.clone();
            async move {
                println!("  orders      <- RejectOrder {:?}", command.order_id.0);
                if let Some(order) = contexts.orders.lock().unwrap().get_mut(&command.order_id) {
                    order.status = OrderStatus::Rejected;
                }
                Ok(())
            }
        })
        .handle(move |command: PayOrder, ctx: CommandContext| {
            let contexts = pay.clone();
            async move {
                let payment = PaymentCompleted {
                    payment_id: format!("pay-{}", command.order_id.0),
                    payment_source_id: command.order_id,
                };
                println!("  payments    <- PayOrder {:?}", payment.payment_source_id.0);
                println!("  payments    -> PaymentCompleted {:?}", payment.payment_id);
                contexts.payments.lock().unwrap().push(payment.clone());
                ctx.publish(payment);
                Ok(())
            }
        })
        .handle(move |command: AddToWaitList, _| {
            let contexts = wait.clone();
            async move {
                println!(
                    "  wait list   <- AddToWaitList {:?}: {}",
                    command.order_id.0,
                    describe(&command.seats)
                );
                contexts.wait_list.lock().unwrap().push(command);
                Ok(())
            }
        })
}
