// An event without the field the process correlates by: the error names the
// field and the event, at the `correlate` rule.
use serde::{Deserialize, Serialize};
use switchyard::{Event};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderCancelled {
    pub id: u64,
}

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Paid }
            ignore OrderCancelled
        }
        state Paid {
            on OrderCancelled { -> Cancelled }
            ignore OrderPaid
        }
        final state Cancelled
    }
}

fn main() {}
