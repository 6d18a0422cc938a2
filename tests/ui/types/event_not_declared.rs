// Feeding a process an event it neither handles nor ignores is a compile
// error that says so in words.
use serde::{Deserialize, Serialize};
use switchyard::{Event, Handles};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderCancelled {
    pub order_id: u64,
}

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        final state Shipped
    }
}

/// The key of the instance of `P` that `event` is for.
fn key_of<P: Handles<E>, E: Event>(event: &E) -> &P::Key {
    P::correlate(event)
}

fn main() {
    let cancelled = OrderCancelled { order_id: 7 };
    let _ = key_of::<Shipping, OrderCancelled>(&cancelled);
}
