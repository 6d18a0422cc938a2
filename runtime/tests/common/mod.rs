//! A small order process written by hand against the `Process` contract,
//! as generated code would be, with what the engine must get right:
//! instances created by the initial state, timers scheduled, moved and
//! cancelled, commands and events decided, final states, and a message that
//! makes `decide` panic.
//!
//! ```text
//! Idle   --Placed-->  Open (schedule Remind in 1h, Expire in 23h30)
//! Open   --Paid-->    Shipped (final), send Ship, cancel Remind
//! Open   --Remind-->  Open, send Nudge, schedule Remind in 1h again (moves it)
//! Open   --Expire-->  Expired (final), publish OrderExpired
//! any    --Poison-->  panics
//! ```

#![allow(dead_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_runtime::{
    Body, Command, Context, Decision, Description, Event, Handles, MessageKind, Outgoing, Process,
    Route, StateDescription, StateKind, TimerOp,
};

pub const HOUR: Duration = Duration::from_secs(3600);
/// When an unpaid order expires: between two reminders, so that the order
/// of timers due at the same moment never matters.
pub const EXPIRY: Duration = Duration::from_secs(23 * 3600 + 1800);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub order: u32,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paid {
    pub order: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Poison {
    pub order: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ship {
    pub order: u32,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nudge {
    pub order: u32,
    pub reminders: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub order: u32,
}

impl Event for Placed {
    const NAME: &'static str = "Placed";
}
impl Event for Paid {
    const NAME: &'static str = "Paid";
}
impl Event for Poison {
    const NAME: &'static str = "Poison";
}
impl Event for OrderExpired {
    const NAME: &'static str = "OrderExpired";
}
impl Command for Ship {
    const NAME: &'static str = "Ship";
}
impl Command for Nudge {
    const NAME: &'static str = "Nudge";
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Order;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderState {
    Idle,
    Open,
    Shipped,
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderData {
    pub amount: u64,
    pub reminders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderTimer {
    Remind,
    Expire,
}

#[derive(Clone, Debug)]
pub enum OrderInput {
    Placed(Placed),
    Paid(Paid),
    Poison(Poison),
    Timer(OrderTimer),
}

#[derive(Clone, Debug)]
pub enum OrderOutput {
    Ship(Ship),
    Nudge(Nudge),
    Expired(OrderExpired),
}

impl Outgoing for OrderOutput {
    fn name(&self) -> &'static str {
        match self {
            OrderOutput::Ship(_) => Ship::NAME,
            OrderOutput::Nudge(_) => Nudge::NAME,
            OrderOutput::Expired(_) => OrderExpired::NAME,
        }
    }

    fn kind(&self) -> MessageKind {
        match self {
            OrderOutput::Expired(_) => MessageKind::Event,
            _ => MessageKind::Command,
        }
    }

    fn into_body(self) -> Body {
        match self {
            OrderOutput::Ship(c) => Body::value(c),
            OrderOutput::Nudge(c) => Body::value(c),
            OrderOutput::Expired(e) => Body::value(e),
        }
    }
}

impl From<Placed> for OrderInput {
    fn from(event: Placed) -> Self {
        OrderInput::Placed(event)
    }
}
impl From<Paid> for OrderInput {
    fn from(event: Paid) -> Self {
        OrderInput::Paid(event)
    }
}
impl From<Poison> for OrderInput {
    fn from(event: Poison) -> Self {
        OrderInput::Poison(event)
    }
}

impl Handles<Placed> for Order {
    fn correlate(event: &Placed) -> &u32 {
        &event.order
    }
}
impl Handles<Paid> for Order {
    fn correlate(event: &Paid) -> &u32 {
        &event.order
    }
}
impl Handles<Poison> for Order {
    fn correlate(event: &Poison) -> &u32 {
        &event.order
    }
}

impl Process for Order {
    const NAME: &'static str = "Order";
    const INITIAL: OrderState = OrderState::Idle;

    type State = OrderState;
    type Data = OrderData;
    type Key = u32;
    type Input = OrderInput;
    type Output = OrderOutput;
    type Timer = OrderTimer;

    fn is_final(state: OrderState) -> bool {
        matches!(state, OrderState::Shipped | OrderState::Expired)
    }

    fn decide(
        state: OrderState,
        data: &OrderData,
        input: &OrderInput,
        ctx: &Context<'_, u32>,
    ) -> Decision<Self> {
        let order = *ctx.key;
        match (state, input) {
            (_, OrderInput::Poison(_)) => panic!("poisoned order {order}"),
            (OrderState::Idle, OrderInput::Placed(placed)) => Decision::handled(
                OrderState::Open,
                Some(OrderData { amount: placed.amount, reminders: 0 }),
                Vec::new(),
                vec![
                    TimerOp::Schedule { timer: OrderTimer::Remind, at: ctx.now + HOUR },
                    TimerOp::Schedule { timer: OrderTimer::Expire, at: ctx.now + EXPIRY },
                ],
            ),
            (OrderState::Open, OrderInput::Paid(_)) => Decision::handled(
                OrderState::Shipped,
                None,
                vec![OrderOutput::Ship(Ship { order, amount: data.amount })],
                vec![TimerOp::Cancel { timer: OrderTimer::Remind }],
            ),
            (OrderState::Open, OrderInput::Timer(OrderTimer::Remind)) => {
                let reminders = data.reminders + 1;
                Decision::handled(
                    OrderState::Open,
                    Some(OrderData { reminders, ..data.clone() }),
                    vec![OrderOutput::Nudge(Nudge { order, reminders })],
                    vec![TimerOp::Schedule { timer: OrderTimer::Remind, at: ctx.now + HOUR }],
                )
            }
            (OrderState::Open, OrderInput::Timer(OrderTimer::Expire)) => Decision::handled(
                OrderState::Expired,
                None,
                vec![OrderOutput::Expired(OrderExpired { order })],
                Vec::new(),
            ),
            _ => Decision::ignored(state),
        }
    }

    fn timer_input(timer: OrderTimer) -> OrderInput {
        OrderInput::Timer(timer)
    }

    fn input_message(input: &OrderInput) -> Option<(&'static str, Body)> {
        match input {
            OrderInput::Placed(event) => Some((Placed::NAME, Body::value(event.clone()))),
            OrderInput::Paid(event) => Some((Paid::NAME, Body::value(event.clone()))),
            OrderInput::Poison(event) => Some((Poison::NAME, Body::value(event.clone()))),
            OrderInput::Timer(_) => None,
        }
    }

    fn routes() -> &'static [Route<Self>] {
        const ROUTES: &[Route<Order>] = &[
            Route {
                event: Placed::NAME,
                decode: switchyard_runtime::__private::route::<Order, Placed>,
                take: switchyard_runtime::__private::take::<Order, Placed>,
            },
            Route {
                event: Paid::NAME,
                decode: switchyard_runtime::__private::route::<Order, Paid>,
                take: switchyard_runtime::__private::take::<Order, Paid>,
            },
            Route {
                event: Poison::NAME,
                decode: switchyard_runtime::__private::route::<Order, Poison>,
                take: switchyard_runtime::__private::take::<Order, Poison>,
            },
        ];
        ROUTES
    }

    fn description() -> &'static Description {
        const DESCRIPTION: Description = Description {
            name: "Order",
            docs: "",
            states: &[
                StateDescription { name: "Idle", kind: StateKind::Initial, docs: "" },
                StateDescription { name: "Open", kind: StateKind::Normal, docs: "" },
                StateDescription { name: "Shipped", kind: StateKind::Final, docs: "" },
                StateDescription { name: "Expired", kind: StateKind::Final, docs: "" },
            ],
            inputs: &["Placed", "Paid", "Poison"],
            timers: &["Remind", "Expire"],
            transitions: &[],
        };
        &DESCRIPTION
    }
}
