// A scenario fed an event that the process does not take: the error says so
// in words, naming the process and the event.
use serde::{Deserialize, Serialize};
use switchyard::Event;
use switchyard::testing::Scenario;

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderShipped {
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
            on OrderPaid { -> Shipping }
            ignore OrderShipped
        }
        state Shipping {
            on OrderShipped { -> Shipped }
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {
    let _ = Scenario::<Shipping>::new(1).when(OrderCancelled { order_id: 1 });
}
