// A `send` field given a value of the wrong type: the Rust compiler's error
// points at the DSL expression that has it.
use serde::{Deserialize, Serialize};
use switchyard::{Command, Event};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
    pub customer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct ChargeCard {
    pub order_id: u64,
    pub amount: u64,
}

switchyard::process! {
    process Billing {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid {
                send ChargeCard { order_id: id, amount: event.customer }
                -> Charged
            }
        }
        final state Charged
    }
}

fn main() {}
