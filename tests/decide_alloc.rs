//! `decide` allocates nothing beyond the commands it builds: a counting
//! global allocator (`allocation-counter`) makes the claim a test that can fail. A decision that
//! builds no message and schedules no timer allocates nothing at all; one
//! that does allocates exactly one `Vec` per non-empty list (the data a
//! handler changes is its own value, and this process keeps no data on the
//! heap).

use serde::{Deserialize, Serialize};
use switchyard::{Command, Context, Event, MessageId, Process, Timestamp};

/// The allocations `f` makes on this thread (the counter is thread-local, so
/// the test harness's other threads do not disturb it).
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let mut value = None;
    let info = allocation_counter::measure(|| value = Some(f()));
    (info.count_total, value.expect("measure runs the closure"))
}

switchyard::process! {
    process Order {
        correlate by order_id: u64

        data {
            total: u64 = 0
            items: u32 = 0
        }

        timer Expiry

        initial state Open {
            on ItemAdded when event.price > 1000 {
                set total = data.total + event.price
                send Review { order_id: id, price: event.price }
            }
            on ItemAdded {
                set total = data.total + event.price
                set items = data.items + 1
            }
            on CheckedOut when data.items == 0 { -> Cancelled }
            on CheckedOut {
                send Charge { order_id: id, amount: data.total }
                send Review { order_id: id, price: data.total }
                schedule Expiry after 15m
                -> Paying
            }
            ignore Paid
        }

        state Paying {
            on Paid when event.note == "gift" { cancel Expiry -> Done }
            on Paid { cancel Expiry send Ship { order_id: id } -> Done }
            on Expiry { -> Cancelled }
            ignore ItemAdded, CheckedOut
        }

        final state Done
        final state Cancelled
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct ItemAdded {
    pub order_id: u64,
    pub price: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct CheckedOut {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct Paid {
    pub order_id: u64,
    pub note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Review {
    pub order_id: u64,
    pub price: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Charge {
    pub order_id: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Ship {
    pub order_id: u64,
}

/// The allocations of one `decide`, with the lengths of its two lists.
fn decide(state: OrderState, data: OrderData, input: OrderInput) -> (u64, usize, usize) {
    let key = 1u64;
    let ctx = Context { key: &key, now: Timestamp(0), message_id: MessageId::default() };
    let (count, decision) = allocations(|| Order::decide(state, &data, &input, &ctx));
    (count, decision.outputs.len(), decision.timers.len())
}

#[test]
fn decisions_that_build_nothing_allocate_nothing() {
    let data = OrderData { total: 10, items: 0 };
    let paid = || OrderInput::from(Paid { order_id: 1, note: "gift".to_owned() });
    let cases = [
        // A data update only.
        (OrderState::Open, OrderInput::from(ItemAdded { order_id: 1, price: 5 })),
        // A guarded transition.
        (OrderState::Open, OrderInput::from(CheckedOut { order_id: 1 })),
        // Ignored, in a normal and in a final state.
        (OrderState::Open, paid()),
        (OrderState::Done, paid()),
        // A timer input.
        (OrderState::Paying, OrderInput::Expiry),
    ];
    for (state, input) in cases {
        let described = format!("{state:?} {input:?}");
        assert_eq!(decide(state, data.clone(), input), (0, 0, 0), "{described}");
    }
}

#[test]
fn each_non_empty_list_is_one_allocation() {
    let data = OrderData { total: 10, items: 2 };
    let review = OrderInput::from(ItemAdded { order_id: 1, price: 5_000 });
    // One command.
    assert_eq!(decide(OrderState::Open, data.clone(), review), (1, 1, 0));
    // Two commands and a timer: two lists, whatever their lengths.
    let checkout = OrderInput::from(CheckedOut { order_id: 1 });
    assert_eq!(decide(OrderState::Open, data.clone(), checkout), (2, 2, 1));
    // A guard that compares with a string literal allocates nothing for it,
    // and a cancelled timer is one list.
    let gift = OrderInput::from(Paid { order_id: 1, note: "gift".to_owned() });
    assert_eq!(decide(OrderState::Paying, data.clone(), gift), (1, 0, 1));
    let paid = OrderInput::from(Paid { order_id: 1, note: String::new() });
    assert_eq!(decide(OrderState::Paying, data, paid), (2, 1, 1));
}
